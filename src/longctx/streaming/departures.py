"""The streaming study's departures from the original (3cb8e4b / 254e749); see ``longctx.departures``."""

from __future__ import annotations

from longctx.departures import Departure

DEPARTURES: list[Departure] = [
    Departure(
        study="streaming",
        item="software stack",
        original="transformers 4.57.3, torch 2.9.1, DynamicCache, one A800 80GB",
        efficient="transformers 5.x Cache subclasses, torch 2.13 (the pinned lock)",
        why="the artifact pins a current stack; the original's is recorded in its result files",
        effect="not measured (needs a GPU)",
        protocol="both",
    ),
]
