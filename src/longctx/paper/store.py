"""Read-only view of a profile's results for tables and figures: loads each cell once, records gaps.

Tables never run anything: a cell without a usable result file (absent, malformed, truncated) is recorded
in ``missing`` so ``longctx paper all`` can list it; a stale result reused under ALLOW_STALE=1 is usable but
flagged, and fingerprint mismatches between a method and its baseline are collected as ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from longctx.plan import Plan
from longctx.results import StoredResult, read_result
from longctx.studies import STUDIES
from longctx.study import Cell


@dataclass
class Report:
    """What a generator could not fill: missing cell ids (first-seen order) and human-readable notes."""

    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_missing(self, cell_id: str) -> None:
        if cell_id not in self.missing:
            self.missing.append(cell_id)

    def add_note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def merge(self, other: Report) -> Report:
        for cell_id in other.missing:
            self.add_missing(cell_id)
        for note in other.notes:
            self.add_note(note)
        return self


class ResultView:
    """Results of one plan under ``<results_dir>/<cell id>.json``; every lookup is cached."""

    def __init__(self, plan: Plan, results_dir: str | Path, report: Report | None = None):
        self.plan = plan
        self.root = Path(results_dir)
        self.report = Report() if report is None else report
        self._cache: dict[str, StoredResult | None] = {}

    def get(self, cell: Cell) -> StoredResult | None:
        """The cell's result, or None (and the id recorded as missing) when there is no usable file."""
        if cell.id not in self._cache:
            self._cache[cell.id] = read_result(self.root / f"{cell.id}.json", warn=self.report.add_note)
        result = self._cache[cell.id]
        if result is None:
            self.report.add_missing(cell.id)
        return result

    def group(self, name: str) -> list[Cell]:
        return self.plan.groups().get(name, [])

    def baseline_cell(self, dataset: str, **labels) -> Cell | None:
        """The baseline of a dataset (and ``labels``, e.g. the protocol), as its study defines it (the first such cell
        of the plan)."""
        for cell in self.plan.cells:
            study = STUDIES[cell.study]
            if cell.labels.get("dataset") != dataset or any(cell.labels.get(k) != v for k, v in labels.items()):
                continue
            if study.is_baseline(study.config(cell.config)):
                return cell
        return None

    def results(self) -> list[StoredResult]:
        """Every usable result of the plan (each file once), for the environment table."""
        found = [self.get(cell) for cell in self.plan.unique_cells()]
        return [r for r in found if r is not None]
