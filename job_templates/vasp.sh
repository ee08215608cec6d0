#!/bin/bash
# One VASP single point (a label task). Rendered by lasp2_hpc from job_templates/vasp.sh and kept
# in the task's work directory: `bash vasp.sh` there repeats the call exactly.
set -o pipefail  # no -u: site lines (conda activate) may read unset variables
{{> walltime-guard.sh }}
cd {{ work_dir }} || exit 2
# the site's environment for VASP (its launch profile: variables, threads, module loads)
{{ environment|raw }}
lasp2_until_deadline {{ command|argv }} > vasp.out 2>&1
