"""``longctx attribution time-curve``: the time curve as a plan run through the result store, plus its views.

The grid (methods × prompt lengths × output lengths) becomes cells of ``longctx.attribution.study``, run by
``longctx.runner`` into ``<output-dir>/results/`` with the same skip/stale/resume rules as ``longctx run``.
``time_curve_runs.jsonl`` (one row per run, with its cell's config hash) and ``time_curve_summary.csv`` are
views written from those result files afterwards; the CSV keeps the original script's columns
(``attr_func, target_input_tokens, target_output_tokens, target_total_tokens, time_mean, time_std,
peak_mem_mean, peak_mem_std, statuses``; memory in GB = 1e9 bytes of reserved memory summed over devices, as
the original) and adds this artifact's (sample std, allocated memory, n, actual token counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from longctx.attribution.study import time_cell
from longctx.errors import RunFailure, UsageError
from longctx.options import declared_fields
from longctx.plan import Plan
from longctx.results import StoredResult, read_result
from longctx.study import Cell

RUNS_FILE = "time_curve_runs.jsonl"
SUMMARY_FILE = "time_curve_summary.csv"
RESULTS_DIR = "results"
GB = 1e9
ORIGINAL_COLUMNS = [
    "attr_func",
    "target_input_tokens",
    "target_output_tokens",
    "target_total_tokens",
    "time_mean",
    "time_std",
    "peak_mem_mean",
    "peak_mem_std",
    "statuses",
]
EXTRA_COLUMNS = [
    "protocol",
    "dtype",
    "attn_implementation",
    "time_std_sample",
    "peak_mem_allocated_mean",
    "n_ok",
    "n_runs",
    "actual_user_prompt",
    "actual_formatted_prompt",
    "actual_generation",
    "actual_total",
    "peak_mem_source",
    "config_hash",
]


@dataclass(frozen=True)
class TimeCurve:
    """The grid and the settings every cell shares (``settings``: TimeCellConfig fields but method/lengths)."""

    settings: dict
    methods: tuple[str, ...]
    grid: tuple[tuple[int, int], ...]  # (prompt_len, output_len); prompt <= 0 only from a total-length grid
    options: dict  # option values by name, given to every method that declares them
    output_dir: Path

    @classmethod
    def from_flags(cls, args, methods: tuple[str, ...], grid, output_dir: Path) -> TimeCurve:
        """The curve of parsed CLI flags: the shared cell settings and every declared method option."""
        from longctx.attribution.config import TimeCellConfig
        from longctx.attribution.method import option_classes

        settings = {name: getattr(args, name) for name in declared_fields(TimeCellConfig)}
        options = {name: getattr(args, name) for name in declared_fields(*option_classes())}
        return cls(settings, methods, grid, options, output_dir)

    def check(self) -> None:
        """Every cell's config and inputs, before anything is written (bad input: UsageError, exit 2)."""
        from longctx.studies import STUDIES

        study = STUDIES["attribution"]
        for cell in self.plan().unique_cells():
            study.describe_inputs(study.config(cell.config))

    def plan(self) -> Plan:
        cells = [
            time_cell(self.settings, "time_curve", m, p, g, self.options) for m in self.methods for p, g in self.grid
        ]
        return Plan(profile="time-curve", description=f"time curve in {self.output_dir}", assets={}, cells=cells)

    @property
    def results_dir(self) -> Path:
        return self.output_dir / RESULTS_DIR


def length_grid(
    input_lengths: list[int] | None, output_lengths: list[int], total_lengths: list[int] | None
) -> tuple[tuple[int, int], ...]:
    """Prompt × output lengths; with the deprecated total lengths the prompt is total - output."""
    if input_lengths and total_lengths:
        raise UsageError("give --input-lengths or the deprecated --total-lengths, not both")
    if total_lengths:
        return tuple((t - g, g) for t in total_lengths for g in output_lengths)
    if not input_lengths:
        raise UsageError("give --input-lengths (or the deprecated --total-lengths)")
    return tuple((p, g) for p in input_lengths for g in output_lengths)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _population_std(values: list[float]) -> float | None:
    """numpy's default std (ddof=0), which the original summary reports."""
    if not values:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def summary_row(result: StoredResult) -> dict:
    """One CSV row of a cell's result (the original's columns first)."""
    config, metrics = result.config, result.metrics
    ok = [run for run in result.runs if run["status"] == "ok"]
    reserved = [run["peak_mem"]["reserved_bytes"] / GB for run in ok]
    lengths = metrics.lengths or {}
    return {
        "attr_func": config["method"],
        "target_input_tokens": config["prompt_len"],
        "target_output_tokens": config["output_len"],
        "target_total_tokens": config["prompt_len"] + config["output_len"],
        "time_mean": metrics.time_sec.mean,
        "time_std": _population_std([run["time_sec"] for run in ok]),
        "peak_mem_mean": _mean(reserved),
        "peak_mem_std": _population_std(reserved),
        "statuses": "|".join(metrics.statuses),
        "protocol": config.get("protocol", "efficient"),
        "dtype": config.get("dtype"),
        "attn_implementation": next(
            (run["attn_implementation"] for run in result.runs if run.get("attn_implementation")),
            config.get("attn_implementation"),
        ),
        "time_std_sample": metrics.time_sec.std,
        "peak_mem_allocated_mean": _mean([run["peak_mem"]["allocated_bytes"] / GB for run in ok]),
        "n_ok": len(ok),
        "n_runs": len(result.runs),
        "actual_user_prompt": lengths.get("user_prompt"),
        "actual_formatted_prompt": lengths.get("formatted_prompt"),
        "actual_generation": lengths.get("generation"),
        "actual_total": lengths.get("total"),
        "peak_mem_source": metrics.peak_mem.source,
        "config_hash": result.config_hash,
    }


def stored_results(results_dir: Path, cells: list[Cell]) -> list[StoredResult]:
    """The results of ``cells`` that exist (in plan order)."""
    found = [read_result(Path(results_dir) / f"{cell.id}.json") for cell in cells]
    return [r for r in found if r is not None]


def write_views(out_dir: Path, results: list[StoredResult]) -> tuple[Path, Path]:
    """``time_curve_runs.jsonl`` and ``time_curve_summary.csv`` from the results (atomic renames)."""
    import pandas as pd

    runs_path, summary_path = out_dir / RUNS_FILE, out_dir / SUMMARY_FILE
    tmp = runs_path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for result in results:
            for run in result.runs:
                fh.write(json.dumps({**run, "config_hash": result.config_hash}, default=str) + "\n")
    tmp.replace(runs_path)
    frame = pd.DataFrame([summary_row(r) for r in results], columns=ORIGINAL_COLUMNS + EXTRA_COLUMNS)
    tmp = summary_path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(summary_path)
    return runs_path, summary_path


def run_time_curve(curve: TimeCurve, *, catch_oom: bool = True, env=None) -> list[StoredResult]:
    """Run (or resume) the curve's cells, then write the views; RunFailure at the first OOM unless ``catch_oom``."""
    from longctx.runner import run_plan

    plan = curve.plan()
    curve.output_dir.mkdir(parents=True, exist_ok=True)
    stop = None if catch_oom else (lambda r: "out of memory (--no-catch-oom)" if r["status"] == "oom" else None)
    try:
        report = run_plan(plan, curve.results_dir, env=env, stop_after=stop)
    finally:
        results = stored_results(curve.results_dir, plan.unique_cells())
        write_views(curve.output_dir, results)
    if report.failures:
        raise RunFailure(f"{len(report.failures)} cell(s) failed: {', '.join(sorted(report.failures))}")
    return results
