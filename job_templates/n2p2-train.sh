#!/bin/bash
# Training of one committee member with n2p2: nnp-scaling, then nnp-train. Rendered by lasp2_hpc
# from job_templates/n2p2-train.sh and kept in the member's work directory.
set -o pipefail  # no -u: site lines (conda activate) may read unset variables
{{> walltime-guard.sh }}
cd {{ work_dir }} || exit 2
# the site's environment for n2p2 (launch.n2p2: variables, threads, module loads)
{{ environment|raw }}
lasp2_until_deadline {{ scaling_command|argv }} {{ scaling_bins|int }} > nnp-scaling.log 2>&1 || exit $?
lasp2_until_deadline {{ training_command|argv }} > nnp-train.log 2>&1
