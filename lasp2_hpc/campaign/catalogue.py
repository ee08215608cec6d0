"""The names of the ready-made campaigns of `lasp2 init --example NAME` (built by
:mod:`lasp2_hpc.campaign.examples`, which imports ASE: the command line lists them without it)."""

EXAMPLE_NAMES: tuple[str, ...] = (
    "au-surface",
    "experiment-1",
    "experiment-2",
    "experiment-3",
    "experiment-3-larger",
    "complete-database",
    "experiment-3-npt",
    "experiment-3-strain",
    "experiment-3-learn",
)
