"""How a walker explores beyond NVT at a fixed cell: at constant pressure (``ensemble: npt``,
with its ``barostat``) or on a series of strained cells (``strain``), read strictly like the rest
of campaign.yaml (every value finite and in range; errors name the key).

```yaml
walkers:
  - name: bcc-npt
    ensemble: npt                 # nvt (default) | npt
    pressure: 0.0                 # GPa, npt only (default 0)
    barostat: {time_constant: 1000, coupling: isotropic}   # fs; isotropic | anisotropic | full
  - name: bcc-strain
    strain: {kind: isotropic, steps: [-0.04, -0.02, 0.0, 0.02, 0.04]}   # NVT at each cell
  - name: bcc-uniaxial
    strain: {kind: uniaxial, axis: z, steps: [-0.03, 0.0, 0.03]}
```

A strain step ε deforms the walker's *start* cell (atoms scaled with it): isotropic, every
length times (1 + ε); uniaxial, along the Cartesian ``axis`` only. The walker's ``total_steps``
are shared equally among the steps, in the order given: steps ``k·n`` to ``(k+1)·n`` of the
walker (n = total_steps / len(steps)) run at ``steps[k]``, MD segments end at those boundaries,
and a walker resuming after a trigger stays at the strain step it was in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lasp2_hpc.schema import Bound, FieldError, above, bounded

MAX_STRAIN = 0.2  # a linear strain beyond ±20 % is no longer a neighbourhood of the crystal
MAX_STRAIN_STEPS = 1000
PRESSURE_BOUND = Bound(-100.0, 1000.0)  # GPa: tension to deep-Earth pressures


@bounded(time_constant=above(0, 1e7), stress_trigger=above(0, 1000.0))
@dataclass
class BarostatSettings:
    """``barostat:`` of an NPT walker: the Martyna–Tobias–Klein barostat with a Nosé–Hoover
    chain (ASE's MTK integrators, LAMMPS ``fix npt``, the same equations of motion)."""

    time_constant: float = 1000.0  # fs, the barostat's period (pdamp; ~ 500 time steps of 2 fs)
    # isotropic: the volume only; anisotropic: the three cell lengths independently;
    # full: every cell degree of freedom (shape included)
    coupling: Literal["isotropic", "anisotropic", "full"] = "isotropic"
    # GPa: a frame on whose stress the members disagree by more than this (the largest standard
    # deviation of a stress component) is labelled like one over gamma.trigger; null: forces only
    stress_trigger: float | None = None

    def __post_init__(self) -> None:
        if not self.time_constant > 0:
            raise FieldError("time_constant", "time_constant must be > 0 fs")


@bounded(steps=Bound(-MAX_STRAIN, MAX_STRAIN))
@dataclass
class StrainSettings:
    """``strain:`` of a walker: NVT MD at each of ``steps`` (linear strains of its start cell)."""

    kind: Literal["isotropic", "uniaxial"]
    steps: list[float] = field(default_factory=list)
    axis: Literal["x", "y", "z"] = "z"  # uniaxial: the Cartesian direction strained

    def __post_init__(self) -> None:
        if not self.steps:
            raise FieldError("steps", "steps must list at least one strain, e.g. [-0.02, 0, 0.02]")
        if len(self.steps) > MAX_STRAIN_STEPS:
            raise FieldError("steps", f"steps lists more than {MAX_STRAIN_STEPS} strains")
        for index, value in enumerate(self.steps):
            if not -MAX_STRAIN <= value <= MAX_STRAIN:
                raise FieldError(
                    f"steps[{index}]",
                    f"a strain step must be between -{MAX_STRAIN} and {MAX_STRAIN}, got {value!r}",
                    "give linear strains such as -0.04 or 0.02 (fractions, not per cent)",
                )

    def to_policy(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": list(self.steps), "axis": self.axis}


def check_walker_mode(walker: Any) -> None:
    """The rules across a walker's keys for its exploration mode (``FieldError`` names the key):
    ``walker`` is a WalkerSettings with ensemble, pressure, barostat and strain."""
    name = walker.name
    if walker.ensemble == "nvt":
        for key in ("pressure", "barostat"):
            if getattr(walker, key) is not None:
                raise FieldError(
                    key, f"walker {name!r}: {key} applies to ensemble npt only",
                    f"set ensemble: npt, or remove {key}",
                )  # fmt: skip
    else:
        if walker.strain is not None:
            raise FieldError(
                "strain", f"walker {name!r}: a strain walker runs NVT at each strained cell; "
                "with ensemble npt the barostat would relax the strain away",
                "remove strain, or set ensemble: nvt",
            )  # fmt: skip
        if walker.thermostat.kind not in (None, "nose-hoover"):
            raise FieldError(
                "thermostat.kind", f"walker {name!r}: ensemble npt integrates with the "
                "Nosé–Hoover chain of its MTK barostat (ASE MTKNPT, LAMMPS fix npt), not "
                f"{walker.thermostat.kind}", "set thermostat.kind: nose-hoover or leave it out",
            )  # fmt: skip
    if walker.strain is not None:
        _check_strain_schedule(walker)


def _check_strain_schedule(walker: Any) -> None:
    count = len(walker.strain.steps)
    per_step, left = divmod(walker.total_steps, count)
    checks = per_step // walker.check_interval
    if left or per_step % walker.check_interval:
        raise FieldError(
            "total_steps",
            f"walker {walker.name!r}: total_steps ({walker.total_steps}) is shared equally among "
            f"the {count} strain steps, so it must be a multiple of {count} × check_interval "
            f"({count * walker.check_interval})",
            f"give e.g. total_steps: {count * walker.check_interval * max(1, checks)}",
        )
