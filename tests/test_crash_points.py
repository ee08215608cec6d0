"""A campaign killed at each of its durable writes, and resumed: nothing lost, nothing twice.

An uncrashed run of a small campaign (instant trainer and MD, seeded; a real oracle that counts
its calls outside the campaign) records every durable write (``LASP2_CRASH_LOG``). A fresh copy
is then killed right after write k, or in the middle of it (``LASP2_CRASH_AT=k[:during]``, exit
status 137 as after a SIGKILL: lasp2_hpc/crash_points.py), and `lasp2 run` resumes it without
injection. The resumed campaign must end as the uncrashed one did, with the invariants of
tests/crash_checks.py. The quick suite takes a sample of k, the slow one every k; a few run on a
real worker pool (HTEX), where the pool's workers can be the ones that die.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lasp2_hpc.database.store import StructureDatabase

from .campaigns import htex_site, write_instant_campaign
from .crash_checks import (
    KILLED,
    OracleAudit,
    Outcome,
    Write,
    campaign_state,
    check_invariants,
    read_crash_log,
    run_lasp2,
    start_lasp2,
    wait_for_no_processes,
)


@dataclass
class Reference:
    """The uncrashed run: what it computed, and its durable writes in order."""

    outcome: Outcome
    writes: list[Write]

    def points(self) -> list[str]:
        return [f"{w.number}{stage}" for w in self.writes for stage in ("", ":during")]

    def first(self, predicate: Callable[[Write], bool], after: int = 0) -> Write:
        return next(w for w in self.writes if w.number > after and predicate(w))


def reference_run(base: Path, site: dict[str, Any] | None = None, **settings: Any) -> Reference:
    directory = write_instant_campaign(
        base / "reference", base / "reference.count", site=site, **settings
    )
    log = base / "reference.writes"
    finished = run_lasp2("run", str(directory), "-q", LASP2_CRASH_LOG=str(log))
    assert finished.returncode == 0, finished.stderr
    return Reference(check_invariants(directory), read_crash_log(log, directory))


@dataclass
class CrashRun:
    point: str
    reached: bool  # False: the run made fewer writes than k (or a racing write took k)
    last_write: str  # the last durable write the crashed run completed
    seconds: float


def crash_and_resume(
    base: Path,
    point: str,
    expected: Outcome,
    site: dict[str, Any] | None = None,
    check: Callable[[Path], None] | None = None,
    only: str = "",
    check_resumed: Callable[[Path], None] | None = None,
    **settings: Any,
) -> CrashRun:
    """A fresh campaign killed at ``point`` (counting only the writes to paths ending in
    ``only``, when given), resumed by a plain `lasp2 run`, checked (``check`` sees it crashed,
    ``check_resumed`` finished)."""
    started = time.monotonic()
    name = "k" + point.replace(":", "-")
    directory = write_instant_campaign(base / name, base / f"{name}.count", site=site, **settings)
    audit = OracleAudit(base / f"{name}.count", directory)
    log = base / f"{name}.writes"
    audit.before_run()
    injection = {"LASP2_CRASH_AT": point, "LASP2_CRASH_LOG": str(log)}
    if only:
        injection["LASP2_CRASH_ONLY"] = only
    crashed = run_lasp2("run", str(directory), "-q", **injection)
    audit.after_run()
    writes = read_crash_log(log, directory) if log.exists() else []
    last = writes[-1].describe() if writes else "none"
    assert crashed.returncode in (KILLED, 0), (
        f"{point}: exit {crashed.returncode}: {crashed.stderr}"
    )
    reached = crashed.returncode == KILLED
    left = wait_for_no_processes(directory)
    assert left == [], f"{point}: processes outlived the crashed head: {left}"
    if check is not None and reached:
        check(directory)
    audit.before_run()
    resumed = run_lasp2("run", str(directory), "-q")
    audit.after_run()
    assert resumed.returncode == 0, f"{point} (after {last}): {resumed.stderr}"
    outcome = check_invariants(directory, expected)
    audit.check(outcome.labels)
    if check_resumed is not None and reached:
        check_resumed(directory)
    shutil.rmtree(directory)
    return CrashRun(point, reached, last, time.monotonic() - started)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(tmp_path_factory.mktemp("reference"))


def _sample(reference: Reference) -> dict[str, tuple[str, str]]:
    """Crash points of the quick suite, where a kill is the most likely to lose or repeat: (K,
    the end of the paths whose writes K counts), so that each lands on the write it is named
    for, whatever the task threads write meanwhile."""

    def among(path_end: str, write: Write) -> int:
        counted = (w for w in reference.writes if w.path.endswith(path_end))
        return sum(1 for w in counted if w.number <= write.number)

    label = reference.first(
        lambda w: w.path.startswith("tasks/label-") and w.path.endswith("result.json")
    )
    journal_line = reference.first(lambda w: w.path == "oracle-calls.jsonl")
    database = reference.first(lambda w: w.kind == "database", after=journal_line.number)
    second_training = reference.first(
        lambda w: w.path.endswith("training_set.json"), after=database.number
    )
    submitted = reference.first(lambda w: w.path == "events.jsonl", after=second_training.number)
    return {
        "label result half written": (f"{among('result.json', label)}:during", "result.json"),
        "oracle journaled, not marked": ("1", "oracle-calls.jsonl"),
        "label's frame half appended": (
            f"{among('database.extxyz', database)}:during",
            "database.extxyz",
        ),
        # how many journal batches come before it depends on how the members' results arrive
        # (together or one by one): counted among all writes, it lands on a write near it
        "committee v1 submitted": (f"{submitted.number}", ""),
        "ledger being created": ("1:during", "ledger.json"),
    }


SAMPLE = [
    "label result half written",
    "oracle journaled, not marked",
    "label's frame half appended",
    "committee v1 submitted",
    "ledger being created",
]


@pytest.mark.parametrize("moment", SAMPLE)
def test_crash_at_a_durable_write_then_resume(
    moment: str, reference: Reference, tmp_path: Path
) -> None:
    point, only = _sample(reference)[moment]
    run = crash_and_resume(tmp_path, point, reference.outcome, only=only)
    assert run.reached, f"{moment} ({point}) was never reached: last write {run.last_write}"


@pytest.mark.slow
def test_crash_at_every_durable_write_then_resume(tmp_path: Path) -> None:
    reference = reference_run(tmp_path)
    points = reference.points()
    failures: list[str] = []
    runs: list[CrashRun] = []
    started = time.monotonic()
    # two campaigns at once: each run waits on its tasks' threads and on fsyncs a good part
    # of the time
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            pool.submit(crash_and_resume, tmp_path, point, reference.outcome): point
            for point in points
        }
        for future in concurrent.futures.as_completed(futures):
            try:
                runs.append(future.result())
            except AssertionError as error:
                failures.append(f"{futures[future]}: {error}")
    reached = [r for r in runs if r.reached]
    print(
        f"{len(points)} crash points ({len(reference.writes)} durable writes), "
        f"{len(reached)} reached, {time.monotonic() - started:.0f} s"
    )
    assert not failures, "\n".join(sorted(failures))
    # a run may write less than the reference (run.json is timed) or a concurrent write may
    # take the number of a ":during": a few points are not reached
    assert len(reached) >= 0.9 * len(points)


def test_a_label_appended_but_not_journaled_is_cut_then_added_again(
    reference: Reference, tmp_path: Path
) -> None:
    """Killed right after a label's frame was appended, before its journal line: the resumed
    head cuts the frame (other labels may come in first: the file must keep the ledger's
    order) and the label's task, still in flight, adds it again from its stored result."""

    def orphaned(directory: Path) -> None:
        listed = [entry.hash for entry in campaign_state(directory).database]
        in_file = StructureDatabase(directory / "database" / "database.extxyz").hashes()
        assert in_file[:-1] == listed and len(in_file) == len(listed) + 1, "no frame left over"

    def cut(directory: Path) -> None:
        log = (directory / "logs" / "lasp2.log").read_text()
        assert "1 frames a stopped head had not recorded were cut" in log

    # the initial database is the first write to the file, the first label the second
    run = crash_and_resume(
        tmp_path,
        "2",
        reference.outcome,
        check=orphaned,
        only="database.extxyz",
        check_resumed=cut,
    )
    assert run.reached, f"the first label was never appended: last write {run.last_write}"


# -- a real worker pool ----------------------------------------------------------------------


def _one_shot_crash(flag: Path, point: str) -> str:
    """worker_init of a pool whose processes die at their ``point``-th durable write; only the
    first pool: those the head starts after it run normally."""
    return f'if [ ! -e {flag} ]; then touch {flag}; export LASP2_CRASH_AT="{point}"; fi'


def _worker_write(write: Write) -> bool:
    """Written by a worker (each process numbers its own writes in the log): a task's files
    and the oracle's journal; the head writes the rest, and the training sets."""
    return (
        write.path.startswith("tasks/") and not write.path.endswith("training_set.json")
    ) or write.path == "oracle-calls.jsonl"


def _htex_points(reference: Reference) -> dict[str, tuple[str, str]]:
    """(who dies, at which of its writes) by moment: the head, or the pool's only worker."""
    head = [w for w in reference.writes if not _worker_write(w)]
    worker = [w for w in reference.writes if _worker_write(w)]
    database = next(w for w in head if w.kind == "database" and w.number > 4)
    recorded = next(w for w in head if w.path == "events.jsonl" and w.number > database.number)
    result = next(w for w in worker if w.path.startswith("tasks/label-") and "result" in w.path)
    line = next(w for w in worker if w.path == "oracle-calls.jsonl")
    marker = next(w for w in worker if ".oracle-journal" in w.path)
    return {
        "head: label's frame half appended": ("head", f"{database.number}:during"),
        "head: label recorded": ("head", f"{recorded.number}"),
        "worker: label result half written": ("worker", f"{result.number}:during"),
        "worker: oracle journaled, not marked": ("worker", f"{line.number}"),
        "worker: marker half written": ("worker", f"{marker.number}:during"),
    }


@pytest.fixture(scope="module")
def htex_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(tmp_path_factory.mktemp("htex"), site=htex_site())


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment",
    [
        "head: label's frame half appended",
        "head: label recorded",
        "worker: label result half written",
        "worker: oracle journaled, not marked",
        "worker: marker half written",
    ],
)
def test_crash_points_with_a_worker_pool(
    moment: str, htex_reference: Reference, tmp_path: Path
) -> None:
    """The head killed at a write while a real pool runs the tasks (its watchdog must stop the
    pool), or the pool's worker killed at one of its own writes: a lost task, run again."""
    who, point = _htex_points(htex_reference)[moment]
    site = htex_site()
    if who == "head":
        run = crash_and_resume(tmp_path, point, htex_reference.outcome, site=site)
        assert run.reached, f"{moment} ({point}) was never reached: last write {run.last_write}"
        return
    site["executors"][0]["worker_init"] = _one_shot_crash(tmp_path / "crashed", point)
    directory = write_instant_campaign(tmp_path / "c", tmp_path / "c.count", site=site)
    audit = OracleAudit(tmp_path / "c.count", directory)
    audit.before_run()
    finished = run_lasp2("run", str(directory), "-q")
    audit.after_run()
    assert finished.returncode == 0, finished.stderr
    outcome = check_invariants(directory, htex_reference.outcome)
    # a worker killed after its oracle call, before the result was stored: called again
    audit.check(outcome.labels, once_per_run=False)
    tasks = campaign_state(directory).tasks.values()
    assert sum(t.infrastructure_failures for t in tasks) >= 1, "the worker's death went unseen"
    assert all(t.failures == 0 for t in tasks), "a worker's death was counted as a failure"


# -- a committee half submitted --------------------------------------------------------------

COMMITTEE_OF_FOUR = {"size": 4, "trainer": {"engine": "instant"}}


def _members_submitted(directory: Path, version: int) -> int:
    state = campaign_state(directory)
    return sum(
        1
        for task in state.tasks.values()
        if task.kind == "train" and f"committees/v{version:03d}/" in json.dumps(task.inputs)
    )


def test_half_submitted_committee_is_completed_on_restart(tmp_path: Path) -> None:
    """Killed while the journal takes the four members of committee v0: between two writes the
    ledger holds none or all four (one batch); cut in the middle of the write, it can hold some,
    and `lasp2 run` then submits the missing ones (same ids) and ends as without the crash."""
    reference = reference_run(tmp_path / "r", committee=COMMITTEE_OF_FOUR)
    last_set = [w for w in reference.writes if w.path.endswith("training_set.json")][3]
    journal = [w for w in reference.writes if w.path == "events.jsonl"]
    # the batch: the journal's next write; counted among the journal's writes only, since the
    # tasks it submits write their own files meanwhile, in an order no two runs share
    batch = next(i for i, w in enumerate(journal, start=1) if w.number > last_set.number)
    seen: dict[str, int] = {}
    for point in (f"{batch}:during", f"{batch - 1}", f"{batch}"):

        def count(directory: Path, point: str = point) -> None:
            seen[point] = _members_submitted(directory, 0)

        run = crash_and_resume(
            tmp_path,
            point,
            reference.outcome,
            check=count,
            only="events.jsonl",
            committee=COMMITTEE_OF_FOUR,
        )
        assert run.reached, point
    assert 1 <= seen[f"{batch}:during"] <= 3, f"the crash left no part of the committee: {seen}"
    assert seen[f"{batch - 1}"] == 0 and seen[f"{batch}"] == 4, (
        f"the members' submissions are not one batch: {seen}"
    )


# -- lasp2 init ------------------------------------------------------------------------------


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def _init(directory: Path, **variables: str) -> subprocess.CompletedProcess:
    return run_lasp2("init", str(directory), "--example", "au-surface", timeout=120, **variables)


def _whole_or_absent(directory: Path, complete: dict[str, bytes]) -> bool:
    """A campaign directory after a killed init: absent (False), or complete (True)."""
    if not directory.exists():
        return False
    assert _files(directory) == complete, "a half-made campaign"
    return True


def test_init_killed_at_each_write_leaves_nothing_half_made(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    log = tmp_path / "init.writes"
    assert _init(reference, LASP2_CRASH_LOG=str(log)).returncode == 0
    complete = _files(reference)
    writes = len(log.read_text().splitlines())
    assert writes >= 3
    for point in [f"{k}{stage}" for k in range(1, writes + 1) for stage in ("", ":during")]:
        directory = tmp_path / f"c{point.replace(':', '-')}"
        crashed = _init(directory, LASP2_CRASH_AT=point)
        assert crashed.returncode == KILLED, (point, crashed.stderr)
        assert not _whole_or_absent(directory, complete), f"{point}: renamed before its end"
        again = _init(directory)
        assert again.returncode == 0, (point, again.stderr)
        assert _files(directory) == complete
        assert list(tmp_path.glob(f".{directory.name}.init-*")) == [], "a killed init's folder"


@pytest.mark.slow
def test_init_killed_at_random_moments(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert _init(reference).returncode == 0
    complete = _files(reference)
    rng = random.Random(5)
    for attempt in range(12):
        directory = tmp_path / f"c{attempt}"
        init = start_lasp2("init", str(directory), "--example", "au-surface")
        time.sleep(rng.uniform(0.3, 3.0))
        init.send_signal(signal.SIGKILL)
        init.wait()
        if _whole_or_absent(directory, complete):
            continue  # it had finished
        again = _init(directory)
        assert again.returncode == 0, again.stderr
        assert _files(directory) == complete
        assert list(tmp_path.glob(f".{directory.name}.init-*")) == []
