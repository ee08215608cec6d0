"""A block that ended (a node's worker pool killed, its job cancelled, preempted or failed) loses
its tasks at once, and the executor carries on.

Parsl's own handler marks the whole executor failed when all its blocks have failed, which for a
single block is every lost pool: every task of the executor fails and the head starts a new Parsl
session (a new interchange, new blocks). Its interchange otherwise notices a lost pool only when
its heartbeats stop (``heartbeat_threshold``, 30 s by default). Here, instead, the managers of an
ended block are put on hold, which our interchange (``interchange_guard``) takes as "gone": their
tasks come back as ``ManagerLost`` at the next status poll, and the strategy, which runs right
after this handler, starts a new block. Only blocks that keep failing before a single worker
connected (a broken ``worker_init``, a wrong account), with no block of the executor alive, still
mark the executor failed: submissions refused for a while (a QOS limit, a busy slurmctld) beside
running blocks never stop their work.

A block the scheduler wrongly calls ended (``squeue`` leaving a running job out) costs no paid
work twice: its tasks run again, and their second run waits on the task's lock and returns the
first one's stored result.
"""

from __future__ import annotations

import logging
from typing import Any

LOGGER = logging.getLogger(__name__)

ENDED_BLOCKS = "_lasp2_ended_blocks"  # on the executor: blocks whose managers were dropped
# this many of the newest blocks failing, none of them ever connected: a broken configuration
BROKEN_AFTER = 3


def lost_block_handler(executor: Any, status: dict[str, Any]) -> None:
    """Parsl's ``block_error_handler``: called after every status poll with every block's status."""
    ended: set[str] = getattr(executor, ENDED_BLOCKS, set())
    setattr(executor, ENDED_BLOCKS, ended)
    for block_id, job_status in status.items():
        if block_id in ended or not job_status.terminal:
            continue
        ended.add(block_id)
        try:
            executor._hold_block(block_id)
        except Exception as error:  # the heartbeat threshold still catches its managers
            LOGGER.warning("could not drop the workers of ended block %s: %s", block_id, error)
        else:
            LOGGER.info("block %s ended (%s): its tasks run again", block_id, job_status.state.name)
    if executor.bad_state_is_set:
        return  # said once: failing its futures again would raise in Parsl's poller
    broken = _broken_blocks(executor, status)
    if broken:
        executor.set_bad_state_and_fail_all(_broken_error(broken, status))


def _broken_blocks(executor: Any, status: dict[str, Any]) -> list[str]:
    """The newest BROKEN_AFTER blocks, if all failed without any worker ever connecting while
    no block of the executor is alive."""
    from parsl.jobs.states import JobState

    newest = sorted(status, key=_block_order)[-BROKEN_AFTER:]
    failed = (JobState.FAILED, JobState.MISSING)
    if len(newest) < BROKEN_AFTER or any(status[b].state not in failed for b in newest):
        return []
    if any(not job.terminal for job in status.values()):
        return []
    try:
        connected = {str(block) for block in executor.connected_blocks()}
    except Exception as error:  # no word from the interchange: no verdict either
        LOGGER.warning("could not ask which blocks connected: %s", error)
        return []
    return [] if connected & set(newest) else newest


def _block_order(block_id: str) -> tuple[int, str]:
    return (int(block_id), "") if block_id.isdigit() else (-1, block_id)


def _broken_error(blocks: list[str], status: dict[str, Any]) -> Exception:
    from parsl.jobs.errors import TooManyJobFailuresError

    lines = [f"blocks {', '.join(blocks)} failed before any worker connected:"]
    for block in blocks:
        job = status[block]
        detail = job.message or job.stderr_summary or f"exit code {job.exit_code}"
        lines.append(f"  block {block}: {detail}")
    return TooManyJobFailuresError("\n".join(lines))
