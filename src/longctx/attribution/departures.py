"""The attribution study's departures from the original (flashtrace 02ef4d3); see ``longctx.departures``."""

from __future__ import annotations

from longctx.departures import Departure

DEPARTURES: list[Departure] = [
    Departure(
        study="attribution",
        item="process model",
        original="one process for the whole grid, no warm-up; a fatal CUDA error fails every later run (rtc)",
        efficient="a fresh worker process per cell, configurable warm-up",
        why="a sticky CUDA error or an OOM kill must not spoil the next cell",
        effect="removes the cascaded failures of the original's out-2/out-3 grids; no effect on values",
        protocol="both",
    ),
]
