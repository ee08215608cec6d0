import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="module")
def slurm() -> None:
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here: start one with scripts/start-local-slurm.sh (root, Debian)")
    answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if answer.returncode != 0 or not answer.stdout.strip():
        pytest.skip(f"SLURM does not answer ({answer.stderr.strip()}): run the start script")
