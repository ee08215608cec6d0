#!/bin/bash
# One MD segment with LAMMPS. Rendered by lasp2_hpc from job_templates/lammps.sh and kept in the
# segment's work directory: `bash lammps.sh` there repeats the run exactly.
set -o pipefail  # no -u: site lines (conda activate) may read unset variables
{{> walltime-guard.sh }}
cd {{ work_dir }} || exit 2
# the site's environment for LAMMPS (its launch profile: variables, threads, module loads)
{{ environment|raw }}
lasp2_until_deadline {{ command|argv }} -in {{ input_script }} -log {{ log_file }} -screen none
