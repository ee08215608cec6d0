"""CP2K single points of a gold cell at several lattice constants, with the cheap settings of the
real-stack campaign test (tests/test_cp2k_oracle.py: CHEAP, Γ only, 200 Ry): where its energy
minimum lies, and the time of each point.

    python benchmarks/cp2k_gamma_eos.py [--cell cubic|primitive] [--phase fcc] A1 A2 ...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ase.build import bulk

from tests.test_cp2k_oracle import CHEAP, cp2k_executable, oracle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lattice_constants", nargs="+", type=float)
    parser.add_argument("--cell", choices=("cubic", "primitive"), default="cubic")
    parser.add_argument("--phase", default="fcc")
    arguments = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    reference = oracle({"command": cp2k_executable(), "threads": 1}, **CHEAP)
    print("| a (Å) | atoms | energy (eV) | seconds |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for a in arguments.lattice_constants:
            atoms = bulk("Au", arguments.phase, a=a, cubic=arguments.cell == "cubic")
            started = time.monotonic()
            energy = reference.label(atoms, Path(scratch) / f"a-{a}").get_potential_energy()
            seconds = time.monotonic() - started
            print(f"| {a:.3f} | {len(atoms)} | {energy:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
