#!/bin/bash
{{ directives|raw }}
# Failed lasp2 tasks rerun as one PBS Pro job array (`lasp2 rerun --array`), rendered by lasp2_hpc
# from job_templates/array-rerun.pbs.sh. Subjob i runs task i of the manifest; a task whose
# result exists already is not computed again.
set -o pipefail  # no -u: site lines (conda activate) may read unset variables
# the executor's worker_init from the site config (environment), after the task deadline
{{ worker_init|raw }}
cd {{ campaign_dir }} || exit 2
exec {{ python }} -m lasp2_hpc.apps.array_element {{ manifest }} "${PBS_ARRAY_INDEX:-0}"
