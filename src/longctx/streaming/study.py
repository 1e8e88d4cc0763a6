"""The streaming study as the plan runner sees it: its cells (main table, ablations, sweeps, profiling),
their ids, the recompute baseline, and how a cell is described, run and read back.

Every cell runs the ``efficient`` protocol; the groups the plan data lists in ``reference_groups`` also run the
``reference`` protocol (the original's code path), each row once per protocol. The ablations use the
published knobs (``ablation_sigma``, ``ablation_delta``: A2 and A3 of the original), and the δ sweep runs
twice: at σ = 0 as published (where δ is a no-op) and at the ablations' σ (``sweep_delta_slack``).

Cell ids: ``streaming/<dataset>/<method>-S<S>-C<C>[-R<R>-sig<σ>-del<δ>][-<impl>][-prof][-ref[-<loss>]]`` (the
fast cache and the efficient protocol are the unnamed defaults). Knobs: ``RUN_ABLATIONS``, ``RUN_SWEEPS``,
``RUN_QUALITY_HEURISTICS`` and the sweep grids ``SWEEP_R_VALUES``, ``SWEEP_SIGMA_VALUES``, ``SWEEP_DELTA_VALUES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from longctx import knobs
from longctx.plan import shared_settings
from longctx.streaming.config import REFERENCE_LOSSES, StreamingEvalConfig
from longctx.study import Cell

BASELINE_METHOD = "recompute"
PROTOCOLS = ("efficient", "reference")  # table order


def cell_id(dataset: str, config: dict) -> str:
    """The id of a streaming cell: the dataset and every knob that tells two cells apart."""
    method = config["method"]
    parts = [method, f"S{config['n_sink']}", f"C{config['cap_total']}"]
    if method == "lazy":
        sigma, delta = config.get("cache_slack", 0), config.get("max_drop", 0)
        parts += [f"R{config['compress_every']}", f"sig{sigma}", f"del{delta}"]
    if config.get("impl", "fast") != "fast":
        parts.append(config["impl"])
    if config.get("profile_maintenance"):
        parts.append("prof")
    if config.get("protocol", "efficient") == "reference":
        parts.append("ref")
        if config.get("reference_loss", REFERENCE_LOSSES[0]) != REFERENCE_LOSSES[0]:
            parts.append(config["reference_loss"].replace("_", ""))
    return f"streaming/{dataset}/{'-'.join(parts)}"


class _Rows:
    """Builds the cells of one study spec: shared settings + a dataset + one row's knobs."""

    def __init__(self, spec: dict, env: Mapping[str, str]):
        self.base = shared_settings(spec, env, "cap_total")
        self.datasets = spec["datasets"]
        self.reference_groups = set(spec.get("reference_groups", ()))

    def __call__(self, dataset: str, group: str, row: str, **knobs_) -> list[Cell]:
        """The row's cell under each protocol its group runs (efficient first)."""
        protocols = PROTOCOLS if group in self.reference_groups else PROTOCOLS[:1]
        return [self._cell(dataset, group, row, protocol=protocol, **knobs_) for protocol in protocols]

    def _cell(self, dataset: str, group: str, row: str, **knobs_) -> Cell:
        data = self.datasets[dataset]
        config = {**self.base, "text_file": data["text_file"], "max_eval_tokens": data["max_eval_tokens"], **knobs_}
        labels = {"dataset": dataset, "row": row, **{k: v for k, v in knobs_.items() if k != "profile_maintenance"}}
        return Cell(id=cell_id(dataset, config), study="streaming", group=group, labels=labels, config=config)


class StreamingStudy:
    """Study 1: bounded KV caches for streaming decoding."""

    name = "streaming"

    def expand(self, spec: dict, env: Mapping[str, str]) -> list[Cell]:
        """Main table (both datasets), ablations, R/σ/δ sweeps and profiling (PG19)."""
        row = _Rows(spec, env)
        S, R, C = spec["sink"], spec["lazy_R"], spec["cap_total"]
        quality = knobs.flag("RUN_QUALITY_HEURISTICS", True, env)
        recompute = {"method": BASELINE_METHOD, "n_sink": spec["baseline_sink"]}
        strict = {"method": "start_recent", "n_sink": S}
        lazy = {"method": "lazy", "n_sink": S, "compress_every": R, "cache_slack": 0, "max_drop": 0}
        cells: list[Cell] = []
        for dataset in spec["datasets"]:
            cells += [
                *row(dataset, "main", "Baseline (recompute)", **recompute),
                *row(dataset, "main", "Start+Recent (strict)", **strict),
                *row(dataset, "main", f"Lazy (R={R})", **lazy),
            ]
        sigma, delta = spec["ablation_sigma"], spec["ablation_delta"]
        if knobs.flag("RUN_ABLATIONS", True, env):
            cells += [
                *row("pg19", "ablations", f"Strict, S={S}", **strict),
                *row("pg19", "ablations", f"Lazy R={R}, S={S}", **lazy),
            ]
            if quality:
                cells += [
                    *row("pg19", "ablations", f"Lazy + slack σ={sigma}", **{**lazy, "cache_slack": sigma}),
                    *row("pg19", "ablations", f"Lazy + max drop δ={delta}", **{**lazy, "max_drop": delta}),
                    *row("pg19", "ablations", f"Lazy + σ={sigma}, δ={delta}",
                         **{**lazy, "cache_slack": sigma, "max_drop": delta}),
                ]  # fmt: skip
            for sinks in spec["ablation_sinks"]:
                if sinks != S and sinks < C:
                    cells += [
                        *row("pg19", "ablations", f"Strict, S={sinks}", **{**strict, "n_sink": sinks}),
                        *row("pg19", "ablations", f"Lazy R={R}, S={sinks}", **{**lazy, "n_sink": sinks}),
                    ]
        if knobs.flag("RUN_SWEEPS", True, env):
            sweeps = [("sweep_R", "SWEEP_R_VALUES", "sweep_R", "compress_every", "R", {})]
            if quality:
                sweeps += [
                    ("sweep_sigma", "SWEEP_SIGMA_VALUES", "sweep_sigma", "cache_slack", "σ", {}),
                    ("sweep_delta", "SWEEP_DELTA_VALUES", "sweep_delta", "max_drop", "δ", {}),
                    ("sweep_delta_slack", "SWEEP_DELTA_VALUES", "sweep_delta", "max_drop", "δ", {"cache_slack": sigma}),
                ]
            for group, knob, grid, field, symbol, fixed in sweeps:
                for value in knobs.integers(knob, spec[grid], env):
                    cells += row("pg19", group, f"{symbol}={value}", **{**lazy, **fixed, field: value})
        for impl in ("fast", "plain"):
            for name, method_knobs in (("Start+Recent", strict), (f"Lazy (R={R})", lazy)):
                extra = {"impl": impl, "profile_maintenance": True}
                cells += row("pg19", "profiling", f"{name}, {impl} cache", **method_knobs, **extra)
        return cells

    def config(self, values: dict) -> StreamingEvalConfig:
        return StreamingEvalConfig(**values)

    def is_baseline(self, config: StreamingEvalConfig) -> bool:
        return config.method == BASELINE_METHOD

    def timing_group(self, cell: Cell) -> str:
        """A dataset's cells: every table computes speedups against that dataset's recompute baseline."""
        return f"streaming/{cell.labels['dataset']}"

    def describe_inputs(self, config: StreamingEvalConfig) -> dict:
        from longctx.streaming.cell import describe_inputs

        return describe_inputs(config)

    def run(self, config: StreamingEvalConfig, inputs: dict, out_path: Path) -> dict:
        from longctx.streaming.cell import run_cell

        return run_cell(config, inputs, out_path)

    def read_metrics(self, kind: str, metrics: dict):
        from longctx.streaming.metrics import StreamingMetrics

        return StreamingMetrics.model_validate(metrics)


STUDY = StreamingStudy()
