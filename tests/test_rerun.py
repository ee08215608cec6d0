"""`lasp2 rerun` without a scheduler: failed tasks handed back to the head and repaired.

The job-array path (`--array`) runs on the real local SLURM in tests/test_slurm.py.
"""

from __future__ import annotations

from pathlib import Path

from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.cli.main import main
from lasp2_hpc.ledger.store import read_ledger_file

from .campaigns import check_finished_campaign, with_thread_site, write_tiny_campaign


def outage_campaign(directory: Path, outage: Path, site: str = "site.yaml") -> Path:
    outage.write_text("")
    return write_tiny_campaign(
        directory,
        site=site,
        oracle={
            "calculator": "python:tests.campaigns:OutageEMT",
            "parameters": {"outage_file": str(outage)},
        },
        max_attempts=1,  # a failed label fails for good at once: what rerun is for
        labelling={"max_labels": 4},
    )


def test_failed_labels_handed_back_to_the_head_are_repaired(tmp_path: Path, capsys) -> None:
    outage = tmp_path / "outage"
    directory = outage_campaign(tmp_path / "c", outage)
    with_thread_site(directory)
    Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    failed = {t.id for t in state.tasks.values() if t.kind == "label" and t.status == "failed"}
    assert failed, "the outage made no label fail"
    assert state.finished and state.labels(), "no label succeeded between the failures"
    outage.unlink()

    # no scheduler behind a threads executor: an array is refused with the reason, nothing changes
    assert main(["rerun", str(directory), "--array"]) == 2
    assert "job arrays need a scheduler" in capsys.readouterr().err
    assert read_ledger_file(directory / "ledger.json") == state

    assert main(["rerun", str(directory), "--kind", "dft"]) == 0
    assert f"{len(failed)} tasks handed back" in capsys.readouterr().out
    handed_back = read_ledger_file(directory / "ledger.json")
    assert not handed_back.finished
    assert {handed_back.tasks[t].status for t in failed} == {"pending"}

    Runner(open_campaign(directory)).run()
    repaired = read_ledger_file(directory / "ledger.json")
    assert {repaired.tasks[t].status for t in failed} == {"done"}
    check_finished_campaign(directory)
    # the repaired labels were learnt: the last committee trained on the whole database
    assert repaired.committees[-1].training_set_size == len(repaired.database)
    assert main(["rerun", str(directory)]) == 0
    assert "nothing to rerun" in capsys.readouterr().out
