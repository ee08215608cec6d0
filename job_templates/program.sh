#!/bin/bash
# One run of an engine's program, for engines that need no template of their own (a plugin's
# oracle, say): the command from its launch profile, then its arguments. Rendered by lasp2_hpc
# from job_templates/program.sh and kept in the task's work directory: `bash program.sh` there
# repeats the call exactly.
set -o pipefail  # no -u: site lines (conda activate) may read unset variables
{{> walltime-guard.sh }}
cd {{ work_dir }} || exit 2
# the site's environment for the program (its launch profile: variables, threads, module loads)
{{ environment|raw }}
lasp2_until_deadline {{ command|argv }} {{ arguments|argv }} > {{ output_file }} 2>&1
