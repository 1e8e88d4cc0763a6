"""Every difference between this artifact and the original code, in one table (data, not prose).

Each study lists its departures in ``<study>/departures.py`` as ``Departure`` rows; the README's departures
section (``longctx docs``) and the paper's departures table are both generated from ``all_departures()``, so
they cannot drift. ``protocol`` says where the difference lives: ``efficient`` (the reference protocol follows
the original there), ``both`` (neither protocol can follow it, e.g. hardware), ``reference`` (a documented
residue the reference protocol cannot remove), ``none`` (no difference remains: an earlier version of this
artifact differed, and the row keeps what that changed, measured).
"""

from __future__ import annotations

from dataclasses import dataclass

WHERE = {
    "efficient": "the reference protocol follows the original here",
    "both": "neither protocol can follow the original here",
    "reference": "the reference protocol keeps this difference too",
    "none": "both protocols now follow the original (an earlier version of this artifact differed)",
}


@dataclass(frozen=True)
class Departure:
    study: str  # streaming | attribution
    item: str  # method or stage, e.g. "IFR (all positions)", "decode loop"
    original: str  # what the original does (file:function where useful)
    efficient: str  # what this artifact's efficient protocol does
    why: str
    effect: str  # measured effect on values / time, with where it was measured
    protocol: str = "efficient"  # a key of WHERE

    def __post_init__(self):
        if self.protocol not in WHERE:
            raise ValueError(f"departure {self.item!r}: protocol {self.protocol!r} is not one of {', '.join(WHERE)}")


def all_departures() -> list[Departure]:
    """Every departure, streaming first (the order of the README and the paper)."""
    from longctx.attribution.departures import DEPARTURES as ATTRIBUTION
    from longctx.streaming.departures import DEPARTURES as STREAMING

    return [*STREAMING, *ATTRIBUTION]


def markdown_table(departures: list[Departure]) -> str:
    """The README's departures table."""
    rows = ["| study | item | original | this artifact (efficient) | why | effect |", "|---|---|---|---|---|---|"]
    for d in departures:
        cells = [d.study, d.item, d.original, d.efficient, d.why, d.effect]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows) + "\n"
