"""What a job needs, below every engine: scripts rendered from ``job_templates/``, the block's
deadline and job id, how a program is launched on a site, and what it needs to be found."""
