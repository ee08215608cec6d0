"""`lasp2 site check` looks engines up in a real shell, after the executor's worker_init."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from lasp2_hpc.engines import registry
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.jobs.requirements import check_engine, command_programs
from lasp2_hpc.site.check import check_engines
from lasp2_hpc.site.config import SiteConfig
from tests.campaigns import write_tiny_campaign


def needs_of(role: str, name: str, parameters: dict | None = None, **launch):
    """What an engine needs with these parameters and this site launch profile."""
    return registry.create(role, name, parameters or {}, LaunchProfile(**launch)).requirements()


def site_with(worker_init: str) -> SiteConfig:
    from lasp2_hpc.schema import from_mapping

    executor = {"label": "cpu", "provider": "local", "worker_init": worker_init}
    return from_mapping(SiteConfig, {"name": "here", "executors": [executor]})


def programs_in(directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("#!/bin/sh\nexit 0\n")
        (directory / name).chmod(0o755)
    return directory


def test_the_programs_of_a_command_line_skip_launcher_options() -> None:
    def words(command: str) -> list[str]:
        return [program for program, _ in command_programs(command, "x")]

    assert words("mpirun -np 64 vasp_std") == ["mpirun", "vasp_std"]
    assert words("srun --mpi=pmi2 vasp_std") == ["srun", "vasp_std"]
    assert words("nnp-train") == ["nnp-train"]
    # not a launcher: its arguments are not programs
    assert words("lmp -sf omp -pk omp 4") == ["lmp"]
    # after a launcher, the program is the first word that is one (looked up in order)
    assert words("mpirun -np 4 lmp_mpi -k on g 1 -sf kk") == ["mpirun", "lmp_mpi|on|g|kk"]


def test_the_program_after_a_launchers_options_is_found(tmp_path: Path) -> None:
    bin_dir = programs_in(tmp_path / "bin", "mpirun", "lmp_mpi")
    needs = needs_of("md", "lammps", command="lmp_mpi", launcher="mpirun --map-by core")
    report = check_engine(needs, "cpu", f'export PATH="{bin_dir}:$PATH"')
    assert report.usable, report.describe()
    assert f"lmp_mpi: {bin_dir / 'lmp_mpi'}" in report.describe()
    needs = needs_of("md", "lammps", command="lmp_kokkos -sf kk", launcher="mpirun", ranks=4)
    report = check_engine(needs, "cpu", f'export PATH="{bin_dir}:$PATH"')
    assert "MISSING program lmp_kokkos (fix: launch.lammps.command)" in report.describe()


def test_a_worker_init_that_stops_the_shell_is_not_reported_usable() -> None:
    needs = needs_of("trainer", "n2p2")
    report = check_engine(needs, "cpu", "echo 'module: n2p2/2.2 not found' >&2; exit 3")
    assert not report.usable
    assert "exit status 3" in report.describe() and "n2p2/2.2 not found" in report.describe()


def test_odd_program_names_are_looked_up_never_run(tmp_path: Path) -> None:
    odd = 'x";touch INJECTED;echo "'
    needs = needs_of("oracle", "vasp", command=f"'{odd}'", launcher="srun")
    report = check_engine(needs, "cpu", f"cd {tmp_path}")
    assert not (tmp_path / "INJECTED").exists()
    assert not report.usable


def test_programs_are_found_only_after_the_executors_worker_init(tmp_path: Path) -> None:
    bin_dir = programs_in(tmp_path / "n2p2" / "bin", "nnp-scaling", "nnp-train")
    needs = needs_of("trainer", "n2p2")
    without = check_engine(needs, "cpu", "")
    assert not without.usable
    assert "nnp-train" in without.describe()
    assert "launch.n2p2.programs.training" in without.describe()
    with_module = check_engine(needs, "cpu", f'export PATH="{bin_dir}:$PATH"')
    assert with_module.usable, with_module.describe()
    assert str(bin_dir / "nnp-train") in with_module.describe()


def test_the_engines_own_environment_lines_count_too(tmp_path: Path) -> None:
    bin_dir = programs_in(tmp_path / "vasp", "vasp_std")
    (tmp_path / "pp" / "potpaw_PBE").mkdir(parents=True)
    launch = {
        "environment": f'export PATH="{bin_dir}:$PATH"',
        "variables": {"VASP_PP_PATH": str(tmp_path / "pp")},
    }
    report = check_engine(needs_of("oracle", "vasp", **launch), "cpu", "")
    assert report.usable, report.describe()
    missing_set = {"potentials": "potpaw_LDA"}
    report = check_engine(needs_of("oracle", "vasp", missing_set, **launch), "cpu", "")
    assert not report.usable
    assert "potpaw_LDA" in report.describe() and "oracle.parameters.potentials" in report.describe()


def test_embedded_engines_need_nothing_outside_python() -> None:
    reports = check_engines(site_with(""), [("trainer", "embedded", {}), ("md", "ase", {})])
    assert all(r.usable for r in reports)


def test_site_check_with_a_campaign_fails_when_its_engine_is_missing(tmp_path: Path) -> None:
    campaign = write_tiny_campaign(tmp_path / "campaign")
    settings = yaml.safe_load((campaign / "campaign.yaml").read_text())
    settings["committee"]["trainer"] = {"engine": "n2p2", "parameters": {}}
    (campaign / "campaign.yaml").write_text(yaml.safe_dump(settings))
    site = tmp_path / "site.yaml"
    launch = {"n2p2": {"programs": {"training": "nnp-train-2.2"}, "threads": 4}}
    site.write_text(
        yaml.safe_dump({"name": "here", "executors": [{"label": "cpu"}], "launch": launch})
    )
    command = [sys.executable, "-m", "lasp2_hpc.cli.main", "site", "check", str(site)]
    checked = subprocess.run(
        [*command, "--campaign", str(campaign)], capture_output=True, text=True
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "trainer n2p2 (executor cpu): MISSING program nnp-scaling" in checked.stdout
    assert "nnp-train-2.2 (fix: launch.n2p2.programs.training)" in checked.stdout
    # the command lines as the site's launch profile resolves them
    assert "training: nnp-train-2.2" in checked.stdout
    assert "export OMP_NUM_THREADS=4" in checked.stdout
    assert "oracle ase (executor cpu): usable" in checked.stdout
    everything = subprocess.run(command, capture_output=True, text=True)
    assert everything.returncode == 0, everything.stderr
    assert "oracle vasp (executor cpu)" in everything.stdout
