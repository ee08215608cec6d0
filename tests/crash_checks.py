"""Crash tests' tools: `lasp2` as a real subprocess (with crash injection through the environment,
lasp2_hpc/crash_points.py), the invariants a campaign must keep after any crash, an independent
audit of the oracle's calls, and the campaign's processes seen from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lasp2_hpc.apps.oracle_journal import ORACLE_JOURNAL_FILE
from lasp2_hpc.apps.tasks import RESULT_FILE
from lasp2_hpc.atomic import _TEMPORARY
from lasp2_hpc.database.store import StructureDatabase
from lasp2_hpc.ledger.state import CampaignState
from lasp2_hpc.ledger.store import JOURNAL_FILE, read_journal, read_ledger
from lasp2_hpc.site.processes import campaign_marker, marked_processes

from .campaigns import oracle_calls, oracle_calls_counted

REPOSITORY = Path(__file__).resolve().parents[1]
CRASH_VARIABLES = ("LASP2_CRASH_AT", "LASP2_CRASH_LOG", "LASP2_CRASH_ONLY")
KILLED = 137  # the exit status of a crash point, as of a SIGKILL


def lasp2_environment(**variables: str) -> dict[str, str]:
    """The environment of a `lasp2` subprocess: no crash injection unless given, and this
    repository on the path of every process it starts (the workers import tests.campaigns)."""
    environment = {k: v for k, v in os.environ.items() if k not in CRASH_VARIABLES}
    path = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), path]))
    environment.update(variables)
    return environment


def lasp2_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "lasp2_hpc.cli.main", *arguments]


def start_lasp2(*arguments: str, **variables: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        lasp2_command(*arguments),
        cwd=REPOSITORY,
        env=lasp2_environment(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_lasp2(
    *arguments: str, timeout: float = 300, **variables: str
) -> subprocess.CompletedProcess:
    """`lasp2 ARGUMENTS` to its end (a generous deadline: a hung head fails the test)."""
    process = start_lasp2(*arguments, **variables)
    try:
        output, error = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, error = process.communicate()
        message = f"lasp2 {' '.join(arguments)} still ran after {timeout} s: {error}"
        raise AssertionError(message) from None
    return subprocess.CompletedProcess(process.args, process.returncode, output, error)


@dataclass(frozen=True)
class Write:
    number: int
    kind: str  # file | journal | database
    path: str  # relative to the campaign where it is inside

    def describe(self) -> str:
        return f"{self.number} {self.kind} {self.path}"


def read_crash_log(log: Path, root: Path) -> list[Write]:
    writes = []
    for line in log.read_text().splitlines():
        number, kind, path = line.split(" ", 2)
        with contextlib.suppress(ValueError):
            path = str(Path(path).relative_to(root))
        writes.append(Write(int(number), kind, path))
    return writes


# -- the invariants ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a finished campaign computed: compared between a crashed run and an uncrashed one."""

    finish_reason: str
    labels: list[str]  # content hashes of the labelled structures, in the database's order
    committees: int

    @classmethod
    def of(cls, directory: Path) -> Outcome:
        state = campaign_state(directory)
        return cls(
            state.finish_reason or "", [e.hash for e in state.labels()], len(state.committees)
        )


def campaign_state(directory: Path) -> CampaignState:
    state, _, _ = read_ledger(directory)
    return state


@dataclass
class OracleAudit:
    """The oracle's calls as :class:`tests.campaigns.CountingEMT` counted them: never again for
    a structure once its label's result was stored, and (``once_per_run``: heads whose tasks
    die only with them) at most once per run of the head; a run killed between the call and
    the stored result leaves it to the next."""

    count_file: Path
    directory: Path
    runs: list[Counter[str]] = field(default_factory=list)
    stored_before_run: list[set[str]] = field(default_factory=list)

    def stored(self) -> dict[str, float]:
        """Structures whose label result is stored in its task's folder, and when."""
        found = {}
        for result in (self.directory / "tasks").glob(f"label-*/{RESULT_FILE}"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                found[json.loads(result.read_text())["hash"]] = result.stat().st_mtime
        return found

    def before_run(self) -> None:
        self.stored_before_run.append(set(self.stored()))

    def after_run(self) -> None:
        self.runs.append(oracle_calls_counted(self.count_file) - sum(self.runs, Counter()))

    def check(self, labels: list[str], once_per_run: bool = True) -> None:
        calls = oracle_calls(self.count_file)
        total = Counter(structure for structure, _ in calls)
        unlabelled = set(total) - set(labels)
        assert not unlabelled, f"the oracle computed structures never labelled: {unlabelled}"
        for structure in labels:
            assert total[structure] >= 1, f"{structure[:12]} labelled without an oracle call"
        stored = self.stored()
        late = [s[:12] for s, moment in calls if s in stored and moment > stored[s]]
        assert not late, f"the oracle computed {late} again after the result was stored"
        if not once_per_run:
            return
        for number, (run, before) in enumerate(zip(self.runs, self.stored_before_run, strict=True)):
            twice = [s[:12] for s, n in run.items() if n > 1]
            assert not twice, f"run {number} computed {twice} more than once"
            again = [s[:12] for s in run if s in before]
            assert not again, f"run {number} computed {again} again: its result was stored"


def temporaries(directory: Path) -> list[Path]:
    """Temporary files of atomic writes (``.NAME.XXXXXXXX``) in the campaign's own folders."""
    found = []
    for folder in (directory, directory / "database"):
        found += [p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file()]
    return found


def _holds_files_in(pid: int, directory: Path) -> bool:
    with contextlib.suppress(OSError):
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(descriptor).startswith(f"{directory}/"):
                    return True
    return False


def campaign_processes(directory: Path) -> list[str]:
    """Processes still alive that belong to the campaign: worker pools (their command line names
    the campaign's folder), anything carrying its marker (workers) or holding a file of it open
    (the interchange, whose process title hides its environment)."""
    found = set(marked_processes(campaign_marker(directory)))
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            text = (entry / "cmdline").read_bytes().decode(errors="replace")
            if ("process_worker_pool" in text and str(directory) in text) or _holds_files_in(
                pid, directory
            ):
                found.add(pid)
    described = []
    for pid in sorted(found):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            described.append(f"{pid}: {command[:120].decode(errors='replace')}")
    return described


def wait_for_no_processes(directory: Path, timeout: float = 30.0) -> list[str]:
    """The campaign's processes once the head is gone: none within ``timeout`` (the watchdog of
    a local pool stops it within seconds of its head's death), else those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = campaign_processes(directory)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def check_invariants(
    directory: Path, expected: Outcome | None = None, same_labels: bool = True
) -> Outcome:
    """A finished campaign after any number of crashes: nothing lost, nothing done twice; as
    ``expected`` ended (the same labels, unless ``same_labels`` is False: async walkers share
    the label budget in the order their triggers come)."""
    state = campaign_state(directory)
    assert state.finished, f"not finished: {state.finish_reason}"
    outcome = Outcome.of(directory)
    if expected is not None:
        assert outcome.finish_reason == expected.finish_reason, "ended otherwise than uncrashed"
        assert len(outcome.labels) == len(expected.labels)
        if same_labels:
            assert outcome.labels == expected.labels, "other labels than the uncrashed run's"
            assert outcome.committees == expected.committees
    hashes = StructureDatabase(directory / "database" / "database.extxyz").hashes()
    assert len(hashes) == len(set(hashes)), "duplicate structure in the database"
    assert hashes == [e.hash for e in state.database], "database file and ledger disagree"
    labelled = {c.id for c in state.candidates if c.status == "labelled"}
    assert labelled == set(outcome.labels), "a labelled candidate is missing in the database"
    calls = Counter(
        (r["task_id"], r["structure_hash"]) for r in read_journal(directory / ORACLE_JOURNAL_FILE)
    )
    repeated = {key: n for key, n in calls.items() if n != 1}
    assert not repeated, f"oracle calls journaled more than once: {repeated}"
    journaled = {s for (task, s) in calls if task.startswith("label-")}
    rejected = {c.id for c in state.candidates if c.status == "rejected"}
    assert journaled - rejected == set(outcome.labels), "an oracle call is not journaled"
    assert all(t.status == "done" for t in state.tasks.values()), "a task is not done"
    events = read_journal(directory / JOURNAL_FILE)
    sequences = [r["sequence"] for r in events if "sequence" in r]
    assert sequences == list(range(1, len(sequences) + 1)), "journal sequence broken"
    finished = [r for r in events if r.get("kind") == "campaign_finished"]
    assert len(finished) == 1, f"{len(finished)} campaign_finished events"
    results = Counter(
        r["task_id"]
        for r in events
        if r.get("kind") in ("member_trained", "segment_finished", "label_finished")
    )
    assert all(n == 1 for n in results.values()), "a task's result was recorded twice"
    assert temporaries(directory) == [], "temporary files left in the campaign"
    left = wait_for_no_processes(directory, timeout=15)
    assert left == [], f"processes of the campaign left: {left}"
    return outcome


# -- worker pools ------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def processes_naming(directory: Path, *words: str) -> list[int]:
    """Processes whose command line names ``directory`` and every one of ``words``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes().decode(errors="replace")
            if str(directory) in text and all(word in text for word in words):
                found.append(int(cmdline.parent.name))
    return found


def worker_pools(directory: Path) -> list[int]:
    """The process_worker_pool processes of the campaign (their --logdir is in it)."""
    return processes_naming(directory, "process_worker_pool")


def pool_workers(pool: int) -> list[int]:
    """A pool's worker processes: its children that write a worker log (not the resource
    tracker nor the multiprocessing manager it starts too)."""
    workers = []
    for child in _children(pool):
        with contextlib.suppress(OSError):
            for descriptor in Path(f"/proc/{child}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(descriptor)).name.startswith("worker_"):
                        workers.append(child)
                        break
    return workers


def kill_pool(pool: int) -> list[int]:
    """SIGKILL a worker pool and every process it started."""
    victims = [pool, *_children(pool)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def busy_workers(directory: Path) -> dict[int, tuple[int, str]]:
    """Workers of the campaign's pools running a task now (each holds its task's lock open):
    their pool and the task."""
    busy = {}
    for pool in worker_pools(directory):
        for worker in pool_workers(pool):
            with contextlib.suppress(OSError):
                for descriptor in Path(f"/proc/{worker}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = Path(os.readlink(descriptor))
                        if target.name == "task.lock" and str(directory) in str(target):
                            busy[worker] = (pool, target.parent.name)
                            break
    return busy


def head_reached(directory: Path, head: subprocess.Popen[str], stage: str) -> bool:
    """The head's stage by run.json: "started" (past its imports, holding the campaign) or
    "working" (its Parsl session started: resubmissions and the loop)."""
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((directory / "run.json").read_text())
        return info.get("pid") == head.pid and (stage == "started" or "interchange_pids" in info)
    return False
