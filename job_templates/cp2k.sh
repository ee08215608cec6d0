#!/bin/bash
# One CP2K single point (a label task). Rendered by lasp2_hpc from job_templates/cp2k.sh and kept
# in the task's work directory: `bash cp2k.sh` there repeats the call exactly.
set -o pipefail  # no -u: site lines (conda activate) may read unset variables
{{> walltime-guard.sh }}
cd {{ work_dir }} || exit 2
# the site's environment for CP2K (its launch profile: variables, threads, module loads)
{{ environment|raw }}
lasp2_until_deadline {{ command|argv }} -i {{ input_file }} -o {{ output_file }}
