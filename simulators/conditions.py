"""Conditions a simulated meter can be put in so that the head-end's exception rules have something to
find: a stopped register (current flows, energy stays), reversed wiring (the load counts as export),
a lost phase (its voltage and current near zero), current imbalance between phases, and a bypass (a
share of the load drawn around the meter: its registers count the rest, which raises the loss of the
meter's transformer area).

A condition is named by a spec string, per meter index on a bus (``BusSpec.conditions``, ``headend sim
dlt645 --condition 0:stopped``): ``stopped``, ``reversed``, ``lost_phase=b``, ``imbalance=0.6``
(phase a carries 1 + x times its share, phase c 1 - x), ``bypass=0.3`` (that share not registered);
several joined with ``+``. They apply from the
moment they are set (a meter's history stays as it was).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MeterCondition:
    """What is wrong with a simulated meter (nothing by default)."""

    stopped: bool = False
    reversed: bool = False
    lost_phase: str = ""
    imbalance: float = 0.0
    bypass: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> MeterCondition:
        """A condition from its spec string (see the module docstring); ValueError names what is wrong."""
        fields: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in spec.split("+"))):
            name, _, value = part.partition("=")
            if name in ("stopped", "reversed") and not value:
                fields[name] = True
            elif name == "lost_phase" and value in ("a", "b", "c"):
                fields["lost_phase"] = value
            elif name in ("imbalance", "bypass") and _fraction(value) is not None:
                fields[name] = _fraction(value)
            else:
                raise ValueError(
                    f"unknown meter condition {part!r}: stopped, reversed, lost_phase=a|b|c, imbalance=0..1"
                    " or bypass=0..1"
                )
        return cls(**fields)  # type: ignore[arg-type]

    def shape(self, values: dict[str, float]) -> dict[str, float]:
        """Instantaneous ``values`` (per-phase voltage ``voltage_X_v`` and current ``current_X_a``) as
        the meter in this condition measures them."""
        if self.imbalance:
            for phase, share in (("a", 1 + self.imbalance), ("c", 1 - self.imbalance)):
                key = f"current_{phase}_a"
                if key in values:
                    values[key] = round(values[key] * share, 3)
        if self.lost_phase:
            for key, residue in (
                (f"voltage_{self.lost_phase}_v", 0.3),
                (f"current_{self.lost_phase}_a", 0.0),
            ):
                if key in values:
                    values[key] = residue
        return values


def _fraction(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0 < number < 1 else None
