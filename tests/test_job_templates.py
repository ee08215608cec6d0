"""job_templates/: rendered with every value quoted, kept in the work dir, stopped before the
walltime; the scheduler directives and command lines lasp2 builds, exactly (PBS included)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lasp2_hpc.engines.n2p2 import N2p2Trainer
from lasp2_hpc.jobs.environment import (
    DEADLINE_VARIABLE,
    WalltimeReached,
    scheduler_job_id,
    walltime_guard,
)
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.jobs.templates import (
    JobScriptFailed,
    TemplateError,
    builtin_job_templates,
    render,
    render_into,
    run_job_script,
)
from lasp2_hpc.schema import SettingsError, from_mapping
from lasp2_hpc.site.config import ExecutorSettings, SiteConfig, parsl_config
from lasp2_hpc.site.scheduler import PbsPro, SchedulerError, Slurm

HOSTILE_DIRECTORY = "run $(touch PWNED); it's `touch PWNED2`"


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in for an engine's executable: records its arguments and directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "engine-stand-in"
    program.write_text('#!/bin/bash\nprintf "%s\\n" "$PWD" "$@" > called.txt\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv(DEADLINE_VARIABLE, raising=False)
    return program


ENGINE_VALUES = {
    "vasp.sh": {},
    "cp2k.sh": {"input_file": "in put.inp", "output_file": "out;put.out"},
    "lammps.sh": {"input_script": "md $(x).in", "log_file": "log.lammps"},
    "program.sh": {"arguments": "'in put' 'out;put'", "output_file": "program $(x).out"},
    "n2p2-train.sh": {
        "scaling_command": "engine-stand-in scaling",
        "scaling_bins": 500,
        "training_command": "engine-stand-in 'train me'",
    },
}


@pytest.mark.parametrize("template", sorted(ENGINE_VALUES))
def test_engine_scripts_quote_every_value_and_run_in_their_work_dir(
    template: str, tmp_path: Path, stand_in: Path
) -> None:
    work_dir = tmp_path / HOSTILE_DIRECTORY
    values = {"command": "engine-stand-in --flag 'two words'", **ENGINE_VALUES[template]}
    values["environment"] = "export FROM_SITE=1"
    script = render_into(work_dir, template, values)
    assert script == work_dir / template and script.stat().st_mode & 0o777 == 0o700
    run_job_script(script)
    called = (work_dir / "called.txt").read_text().splitlines()
    assert called[0] == str(work_dir)
    expected = {
        "vasp.sh": ["--flag", "two words"],
        "cp2k.sh": ["--flag", "two words", "-i", "in put.inp", "-o", "out;put.out"],
        "lammps.sh": [
            "--flag",
            "two words",
            "-in",
            "md $(x).in",
            "-log",
            "log.lammps",
            "-screen",
            "none",
        ],
        "n2p2-train.sh": ["train me"],  # the second command: nnp-train after nnp-scaling
        "program.sh": ["--flag", "two words", "in put", "out;put"],
    }[template]
    assert called[1:] == expected
    assert not list(tmp_path.rglob("PWNED*")), "a value was executed by the shell"


def test_rendered_lines_exactly() -> None:
    text = render(
        "vasp.sh",
        {
            "work_dir": "/scratch/a b",
            "command": "srun -n 4 vasp_std",
            "environment": "module load vasp/6.4",
        },
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "cd '/scratch/a b' || exit 2" in lines
    assert "module load vasp/6.4" in lines
    assert lines[-1] == "lasp2_until_deadline srun -n 4 vasp_std > vasp.out 2>&1"
    assert 'timeout --signal=TERM --kill-after=30 "$remaining" "$@"' in text
    profile = LaunchProfile(launcher="mpirun", ranks=8).over(N2p2Trainer.default_launch)
    n2p2 = render(
        "n2p2-train.sh",
        {
            "work_dir": "/w",
            "scaling_command": profile.command_line("scaling"),
            "scaling_bins": 500,
            "training_command": profile.command_line("training"),
        },
    )
    assert n2p2.splitlines()[-2:] == [
        "lasp2_until_deadline mpirun -np 8 nnp-scaling 500 > nnp-scaling.log 2>&1 || exit $?",
        "lasp2_until_deadline mpirun -np 8 nnp-train > nnp-train.log 2>&1",
    ]


def test_command_lines_expand_variables_and_nothing_else(tmp_path: Path) -> None:
    """`mpirun -np $SLURM_NTASKS` is what users write; `$(...)`, backquotes and globs stay text."""
    command = "printf '<%s>' $GREETING ${GREETING}x '$(touch made)' '`touch made`' * a$b'!'"
    script = render_into(tmp_path / "w", "vasp.sh", {"command": command, "environment": ""})
    completed = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={**os.environ, "GREETING": "hello world", "b": "B"},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    output = (tmp_path / "w" / "vasp.out").read_text()
    assert output == "<hello world><hello worldx><$(touch made)><`touch made`><*><a$b!>"
    assert not list(tmp_path.rglob("made"))


def test_a_script_past_its_deadline_stops_as_timeout(
    tmp_path: Path, stand_in: Path, monkeypatch
) -> None:
    script = render_into(tmp_path / "w", "vasp.sh", {"command": "sleep 120"})
    monkeypatch.setenv(DEADLINE_VARIABLE, str(int(time.time()) + 2))
    started = time.time()
    with pytest.raises(WalltimeReached, match="walltime margin"):
        run_job_script(script)
    assert time.time() - started < 60, "the guard did not stop the program"
    monkeypatch.setenv(DEADLINE_VARIABLE, str(int(time.time()) - 5))
    with pytest.raises(WalltimeReached):
        run_job_script(script)
    assert "not starting sleep" in (tmp_path / "w" / "vasp.out").read_text()


def test_a_failing_script_names_its_status_and_log(tmp_path: Path, stand_in: Path) -> None:
    script = render_into(tmp_path / "w", "vasp.sh", {"command": "bash -c 'echo SCF broke; exit 3'"})
    with pytest.raises(JobScriptFailed, match="status 3") as failure:
        run_job_script(script)
    assert "vasp.log" in str(failure.value)


def test_template_errors_name_the_template_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"vasp\.sh: no value for \{\{ command\|argv \}\}"):
        render("vasp.sh", {"work_dir": "/w"})
    (tmp_path / "bad.sh").write_text("{{ x|shout }}\n")
    with pytest.raises(TemplateError, match="unknown filter 'shout'"):
        render("bad.sh", {"x": 1}, tmp_path)
    with pytest.raises(TemplateError, match=r"available: .*vasp\.sh"):
        render("nope.sh", {})
    with pytest.raises(TemplateError, match="kill_after must be an integer"):
        render("vasp.sh", {"work_dir": "/w", "command": "x", "kill_after": "30; rm -rf /"})
    assert {
        "vasp.sh",
        "cp2k.sh",
        "lammps.sh",
        "n2p2-train.sh",
        "array-rerun.slurm.sh",
        "array-rerun.pbs.sh",
    } <= {p.name for p in builtin_job_templates().glob("*.sh")}


def test_python_tasks_stop_at_the_deadline() -> None:
    started = time.time()
    with pytest.raises(WalltimeReached, match="walltime margin"), walltime_guard(time.time() + 1):
        time.sleep(30)
    assert time.time() - started < 20
    with pytest.raises(WalltimeReached, match="not started"), walltime_guard(time.time() - 1):
        pytest.fail("a task past its deadline must not start")
    with walltime_guard(None):
        pass
    # off the main thread (Parsl's thread executor): only checked on entry, never an alarm
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            with walltime_guard(time.time() + 2):
                time.sleep(3)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert errors == []
    import pickle

    copy = pickle.loads(pickle.dumps(WalltimeReached("stopped", "12_3")))
    assert (copy.message, copy.job_id, str(copy)) == ("stopped", "12_3", "stopped")


def test_nested_guards_keep_the_outer_deadline() -> None:
    started = time.time()
    with pytest.raises(WalltimeReached), walltime_guard(time.time() + 1):
        with walltime_guard(time.time() + 20):
            pass  # the inner guard ends at once: the outer one's alarm must still fire
        time.sleep(10)
    assert time.time() - started < 5


def test_a_script_stopped_at_the_deadline_has_finished_writing(
    tmp_path: Path, stand_in: Path, monkeypatch
) -> None:
    """Under the task's Python guard, the script's own `timeout` stops the program and lets it
    end cleanly; only then is the task a timeout (no program left writing in its directory)."""
    program = "bash -c 'trap \"sleep 1; echo clean > stopped.txt; exit 143\" TERM; sleep 60 & wait'"
    script = render_into(tmp_path / "w", "vasp.sh", {"command": program})
    deadline = time.time() + 5  # bash starts and sets its trap well before
    monkeypatch.setenv(DEADLINE_VARIABLE, str(int(deadline)))
    with pytest.raises(WalltimeReached), walltime_guard(deadline):
        run_job_script(script)
    assert (tmp_path / "w" / "stopped.txt").read_text() == "clean\n"


def test_scheduler_job_id() -> None:
    assert scheduler_job_id({"SLURM_JOB_ID": "42"}) == "42"
    array = {"SLURM_JOB_ID": "44", "SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "2"}
    assert scheduler_job_id(array) == "42_2"
    assert scheduler_job_id({"PBS_JOBID": "7[1].pbs01"}) == "7[1].pbs01"
    assert scheduler_job_id({}) is None


def executor(**overrides) -> ExecutorSettings:
    values = {
        "label": "dft",
        "provider": "slurm",
        "partition": "cpu",
        "account": "proj-17",
        "qos": "normal",
        "walltime": "02:00:00",
        "walltime_margin": 600,
        "max_workers_per_node": 1,
        "nodes_per_block": 2,
        "cores_per_node": 64,
        "exclusive": True,
        "scheduler_options": "#SBATCH --constraint=milan",
        "worker_init": "module load vasp",
    }
    values.update(overrides)
    return ExecutorSettings(**values)


def test_slurm_array_directives_and_commands_exactly() -> None:
    slurm = Slurm()
    assert slurm.array_directives(executor(), "lasp2-rerun-demo", 5, 2) == [
        "#SBATCH --job-name=lasp2-rerun-demo",
        "#SBATCH --array=0-4%2",
        "#SBATCH --time=02:00:00",
        "#SBATCH --nodes=2",
        "#SBATCH --partition=cpu",
        "#SBATCH --account=proj-17",
        "#SBATCH --qos=normal",
        "#SBATCH --exclusive",
        "#SBATCH --ntasks-per-node=64",
        "#SBATCH --constraint=milan",
    ]
    # several workers per node: an element is one worker's share of a node
    shared = executor(
        max_workers_per_node=4,
        exclusive=False,
        account=None,
        qos=None,
        gpus_per_node=4,
        mem_per_node=256,
        scheduler_options="",
    )
    assert slurm.array_directives(shared, "x", 3, None) == [
        "#SBATCH --job-name=x",
        "#SBATCH --array=0-2",
        "#SBATCH --time=02:00:00",
        "#SBATCH --nodes=1",
        "#SBATCH --partition=cpu",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=64g",
    ]
    assert slurm.submit_argv(Path("/c d/s.sh"), Path("/c d/r")) == [
        "sbatch",
        "--parsable",
        "--output=/c d/r/element-%a.log",
        "/c d/s.sh",
    ]
    assert (
        slurm.submit_argv(Path("/a%b/s.sh"), Path("/a%b/r"))[2] == "--output=/a%%b/r/element-%a.log"
    )
    assert slurm.lookup_argv("lasp2-c-x") == [
        "squeue",
        "--noheader",
        "--name",
        "lasp2-c-x",
        "--format=%F",
    ]
    assert slurm.parse_job_id("1234;cluster\n") == "1234"
    with pytest.raises(SchedulerError, match="not a job id"):
        slurm.parse_job_id("sbatch: error: Batch job submission failed")
    assert slurm.state_argv("12") == [
        "squeue",
        "--noheader",
        "--array",
        "--jobs",
        "12",
        "--format=%i|%T",
    ]
    assert slurm.parse_states("12_0|RUNNING\n12_1|PENDING\n", "12") == {
        "12_0": "RUNNING",
        "12_1": "PENDING",
    }
    assert slurm.parse_states("12_0|COMPLETED|0:0\n12_1|CANCELLED by 0|0:15\n", "12") == {
        "12_0": "COMPLETED",
        "12_1": "CANCELLED",
    }
    assert slurm.parse_states("123_0|RUNNING\n12_0|RUNNING\n", "12") == {"12_0": "RUNNING"}
    assert slurm.cancel_argv(["5", "6"]) == ["scancel", "5", "6"]
    assert slurm.element_job_id("12", 3) == "12_3"


def test_pbspro_array_directives_and_commands_exactly() -> None:
    """No PBS server runs here: what is checked is exactly what would be submitted."""
    pbs = PbsPro()
    settings = executor(provider="pbspro", qos=None, scheduler_options="#PBS -l place=scatter")
    assert pbs.array_directives(settings, "lasp2-rerun-demo", 5, 2) == [
        "#PBS -N lasp2-rerun-demo",
        "#PBS -J 0-4%2",
        "#PBS -l select=2:ncpus=64",
        "#PBS -l walltime=02:00:00",
        "#PBS -l place=excl",
        "#PBS -q cpu",
        "#PBS -A proj-17",
        "#PBS -j oe",
        "#PBS -l place=scatter",
    ]
    single = pbs.array_directives(settings, "x", 1, None)
    assert not any(line.startswith("#PBS -J") for line in single)  # PBS refuses 1-subjob arrays
    assert pbs.submit_argv(Path("/c/s.sh"), Path("/c/r")) == ["qsub", "-o", "/c/r/", "/c/s.sh"]
    assert pbs.parse_job_id("1234[].pbs01\n") == "1234[].pbs01"
    assert pbs.state_argv("1234[].pbs01") == [
        "qstat",
        "-f",
        "-F",
        "json",
        "-t",
        "-x",
        "1234[].pbs01",
    ]
    with pytest.raises(SchedulerError, match="not JSON"):  # never taken for "no job left"
        pbs.parse_states("qstat: conflicting options", "1234[].pbs01")
    assert pbs.lookup_argv("lasp2-c-x") == ["qselect", "-N", "lasp2-c-x"]
    answer = '{"Jobs": {"1234[0].pbs01": {"job_state": "X"}, "1234[1].pbs01": {"job_state": "R"}}}'
    assert pbs.parse_states(answer, "1234[].pbs01") == {"1234[0].pbs01": "X", "1234[1].pbs01": "R"}
    assert pbs.cancel_argv(["1234[].pbs01"]) == ["qdel", "1234[].pbs01"]
    assert pbs.element_job_id("1234[].pbs01", 3) == "1234[3].pbs01"


def test_directive_values_cannot_inject_lines() -> None:
    # refused where the site config is read (tests/test_hostile_site_config.py), and again
    # where the array script is written, should a value reach it some other way
    with pytest.raises(ValueError, match="batch script directive"):
        executor(partition="cpu\n#SBATCH --uid=0")
    settings = executor()
    settings.partition = "cpu\n#SBATCH --uid=0"
    with pytest.raises(SchedulerError, match=r"partition='cpu\\n#SBATCH --uid=0'.*site config"):
        Slurm().array_directives(settings, "x", 2, None)
    with pytest.raises(SchedulerError, match="job name"):
        PbsPro().array_directives(executor(provider="pbspro"), "a b", 2, None)


def test_array_scripts_rendered_exactly() -> None:
    values = {
        "directives": "#SBATCH --array=0-1",
        "worker_init": "module load x",
        "campaign_dir": "/c d",
        "python": "/venv/bin/python",
        "manifest": "/c d/reruns/1/manifest.json",
    }
    lines = render("array-rerun.slurm.sh", values).splitlines()
    assert lines[:2] == ["#!/bin/bash", "#SBATCH --array=0-1"]
    assert lines[-2:] == [
        "cd '/c d' || exit 2",
        "exec /venv/bin/python -m lasp2_hpc.apps.array_element '/c d/reruns/1/manifest.json' "
        '"${SLURM_ARRAY_TASK_ID:-0}"',
    ]
    pbs = render("array-rerun.pbs.sh", values).splitlines()
    assert pbs[-1].endswith('"${PBS_ARRAY_INDEX:-0}"')


def test_block_status_comes_from_squeue_not_sacct() -> None:
    """sacct lists a job only once slurmdbd recorded it: a block polled before would be lost."""
    from lasp2_hpc.site.providers import scheduler_provider

    provider = scheduler_provider(executor())
    assert provider._cmd.format("12,13") == "squeue --noheader --format='%i %t' --job '12,13'"


def test_walltime_margin_drains_blocks_and_sets_the_task_deadline(tmp_path: Path) -> None:
    settings = executor(
        walltime="01:00:00", walltime_margin=300, max_workers_per_node=2, address="10.0.0.1"
    )
    lines = settings.block_worker_init().splitlines()
    assert lines == [f"export {DEADLINE_VARIABLE}=$(( $(date +%s) + 3300 ))", "module load vasp"]
    site = SiteConfig("s", [settings, ExecutorSettings(label="here", provider="local")])
    config = parsl_config(site, tmp_path)
    drains = {e.label: e.drain_period for e in config.executors}
    assert drains == {"dft": 3300 - 60, "here": None}  # drained before the deadline
    assert DEADLINE_VARIABLE in config.executors[0].provider.worker_init
    assert executor(walltime="00:01:00", walltime_margin=30).drain_seconds() == 24
    with pytest.raises(SettingsError, match=r"walltime_margin.*shorter than the walltime"):
        from_mapping(
            SiteConfig,
            {
                "name": "s",
                "executors": [{"label": "a", "provider": "slurm", "walltime": "00:05:00"}],
            },
            tmp_path / "site.yaml",
        )


def test_the_interchange_address_can_be_given_by_interface(tmp_path: Path) -> None:
    config = parsl_config(SiteConfig("s", [executor(interface="lo")]), tmp_path)
    assert config.executors[0].address == "127.0.0.1"
    with pytest.raises(ValueError, match=r"interface 'nope0' has no address.*ip -brief address"):
        parsl_config(SiteConfig("s", [executor(interface="nope0")]), tmp_path)
    with pytest.raises(SettingsError, match="address or interface, not both"):
        from_mapping(
            SiteConfig,
            {"name": "s", "executors": [{"label": "a", "address": "10.0.0.1", "interface": "ib0"}]},
            tmp_path / "site.yaml",
        )


def test_a_task_held_by_another_run_waits_only_until_the_deadline(
    tmp_path: Path, monkeypatch
) -> None:
    """A `lasp2 rerun` array element may hold a task for hours: a Parsl worker waiting for it
    stops at its own deadline (a timeout), not when the scheduler kills its block."""
    import subprocess
    import sys

    from lasp2_hpc.apps.tasks import run_idempotent

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; "
            f"lock = FileLock({str(tmp_path / 'task.lock')!r}); lock.acquire(); print('held', "
            "flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv(DEADLINE_VARIABLE, str(time.time() + 1.5))
        started = time.time()
        with pytest.raises(WalltimeReached, match="another run of the same task"):
            run_idempotent(tmp_path, lambda: pytest.fail("computed while another run holds it"))
        assert time.time() - started < 30
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.delenv(DEADLINE_VARIABLE)
    assert run_idempotent(tmp_path, lambda: {"value": 1})["value"] == 1  # free again: computed
