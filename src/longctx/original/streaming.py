"""The streaming study's published measurements (``streaming_results.json``), as typed records.

One record per number set the original paper compares against (main table, framework check, ablations,
R/σ/δ sweeps): the knobs it ran with, PPL, TPOT and the other recorded metrics, and the original result
file it comes from (path in the original repository at commit 254e749; the commit recorded inside the
file, ``env.git_commit``, is 3cb8e4b). Regenerate the JSON with ``scripts/extract_original_streaming_results.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from longctx.errors import UsageError

RESULTS_PATH = Path(__file__).with_name("streaming_results.json")


@dataclass(frozen=True)
class PublishedKnobs:
    """The cache budget a published run used (recompute: a plain window of ``cap_total`` tokens, no sinks)."""

    n_sink: int
    window: int
    cap_total: int  # C_total: the original's max_cache_size (prefill length, recompute window, hard cap)
    cap_soft: int  # S + W + O + B: the length a prune cuts back to
    compress_every: int  # R (0 for recompute)
    cache_slack: int  # σ
    max_drop: int  # δ
    overlap: int
    refresh_budget: int
    refresh_policy: str
    cache_backend: str | None  # StreamingKVCache | StartRecentKVCache (None for recompute)


@dataclass(frozen=True)
class PublishedMetrics:
    """What one original decode-loop run recorded (seconds, milliseconds, MiB as in the original files)."""

    ppl: float
    tpot_ms: float
    prefill_sec: float
    first_token_latency_sec: float
    decode_tokens: int
    decode_time_sec: float
    runtime_sec: float
    peak_memory_mb: float


@dataclass(frozen=True)
class PublishedSource:
    """Where the numbers are: the original result file, its block, and the commits."""

    path: str
    block: str  # "streaming" or "baseline"
    commit: str  # commit of the repository the file is read from
    env_git_commit: str  # commit recorded inside the file
    run_paths: tuple[str, ...]
    config_hash: str | None
    baseline_source: str | None


@dataclass(frozen=True)
class PublishedStreamingResult:
    """One published measurement with its knobs and provenance."""

    id: str
    table: str  # main | framework_check | ablation | sweep_R | sweep_sigma | sweep_delta
    dataset: str  # pg19 | wikitext
    method: str  # recompute | start_recent | lazy
    knobs: PublishedKnobs
    metrics: PublishedMetrics
    max_eval_tokens: int
    total_tokens: int
    source: PublishedSource
    compared_baseline: PublishedMetrics | None  # the baseline block stored in the same file (speedup's reference)
    recorded_metrics: dict  # the run file's derived metrics (speedup, ppl_increase_percent, ...)
    recorded_config: dict  # the file's streaming_llm block, verbatim
    sigma_delta_rule: str | None  # for σ>0 and δ>0: which wrapper rule the PPL is consistent with
    note: str | None

    @property
    def ppl(self) -> float:
        return self.metrics.ppl

    @property
    def tpot_ms(self) -> float:
        return self.metrics.tpot_ms


def _build(cls, values: dict, where: str):
    names = [f.name for f in fields(cls)]
    missing = [name for name in names if name not in values]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}")
    return cls(**{name: values[name] for name in names})


def _record(raw: dict, where: str) -> PublishedStreamingResult:
    source = dict(raw.get("source", {}))
    source["run_paths"] = tuple(source.get("run_paths", ()))
    baseline = raw.get("compared_baseline")
    return PublishedStreamingResult(
        id=raw["id"],
        table=raw["table"],
        dataset=raw["dataset"],
        method=raw["method"],
        knobs=_build(PublishedKnobs, raw.get("knobs", {}), f"{where}.knobs"),
        metrics=_build(PublishedMetrics, raw, where),
        max_eval_tokens=raw["max_eval_tokens"],
        total_tokens=raw["total_tokens"],
        source=_build(PublishedSource, source, f"{where}.source"),
        compared_baseline=baseline and _build(PublishedMetrics, baseline, f"{where}.compared_baseline"),
        recorded_metrics=raw.get("recorded_metrics", {}),
        recorded_config=raw.get("recorded_config", {}),
        sigma_delta_rule=raw.get("sigma_delta_rule"),
        note=raw.get("note"),
    )


def load_streaming_results(path: str | Path = RESULTS_PATH) -> list[PublishedStreamingResult]:
    """All published streaming measurements, in paper order; UsageError when the file is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    raw_records = data.get("measurements") if isinstance(data, dict) else None
    if not isinstance(raw_records, list):
        raise UsageError(f"{path} has no 'measurements' list")
    records = []
    for i, raw in enumerate(raw_records):
        where = f"{path}: measurements[{i}]"
        missing = [k for k in ("id", "table", "dataset", "method", "max_eval_tokens", "total_tokens") if k not in raw]
        if missing:
            raise UsageError(f"{where} lacks {', '.join(missing)}")
        records.append(_record(raw, where))
    return records


def published_result(result_id: str, path: str | Path = RESULTS_PATH) -> PublishedStreamingResult:
    """The published measurement ``result_id`` (e.g. ``pg19_ours``); UsageError naming the known ids otherwise."""
    records = load_streaming_results(path)
    for record in records:
        if record.id == result_id:
            return record
    raise UsageError(f"no published streaming result {result_id!r}; known: {', '.join(r.id for r in records)}")
