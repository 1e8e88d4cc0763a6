"""The study interface: what the plan runner, the result store and the paper need from a study.

A study is an object registered in ``longctx.studies``; it turns its part of a profile's plan data into
cells, names each cell from its config, says which cells are baselines and which are timed together (one node),
describes a cell's inputs without loading weights, runs a cell into a result file, and reads the metrics of its
results back through their typed model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Cell:
    """One table row: which result (``id``) it shows, under which ``labels``; ``config`` is the study's config."""

    id: str
    study: str
    group: str
    labels: dict
    config: dict


class Study(Protocol):
    """What every study provides (``longctx.streaming.study``, ``longctx.attribution.study``)."""

    name: str

    def expand(self, spec: dict, env: Mapping[str, str]) -> list[Cell]:
        """The cells of this study's plan data ``spec`` under the environment knobs."""

    def config(self, values: dict) -> Any:
        """The typed, validated config of a cell (UsageError on bad values)."""

    def is_baseline(self, config: Any) -> bool:
        """Whether the cell is a baseline other cells are compared against (computed once per machine)."""

    def timing_group(self, cell: Cell) -> str:
        """The cells whose times a table compares (a baseline and the methods against it; one time curve): the
        executors measure one group on one node, so its speedups never mix machines."""

    def describe_inputs(self, config: Any) -> dict:
        """The result's ``inputs`` block, cheaply: model revisions and the data's token hash, no weights."""

    def run(self, config: Any, inputs: dict, out_path: Path) -> dict:
        """Measure the cell, write its result JSON atomically to ``out_path`` and return it."""

    def read_metrics(self, kind: str, metrics: dict) -> Any:
        """The typed ``metrics`` of a result of this study (pydantic ValidationError when they do not match)."""
