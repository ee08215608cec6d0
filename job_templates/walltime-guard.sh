# Stop before the block's walltime. The block exports LASP2_TASK_DEADLINE (its start + walltime -
# walltime_margin); a program still running then gets SIGTERM, and exit code 124 tells lasp2 the
# task timed out (it runs again on a new block, from its checkpoint where the engine has one)
# instead of failing, or of being killed with the job and silently lost.
lasp2_until_deadline() {
  if [ -z "${LASP2_TASK_DEADLINE:-}" ]; then
    "$@"
    return $?
  fi
  local remaining=$(( LASP2_TASK_DEADLINE - $(date +%s) ))
  if [ "$remaining" -le 0 ]; then
    echo "lasp2: the block's walltime margin is reached; not starting $1" >&2
    return 124
  fi
  timeout --signal=TERM --kill-after={{ kill_after|int }} "$remaining" "$@"
}
