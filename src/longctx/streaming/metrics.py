"""The streaming result's ``metrics``: built here from the measured runs, and read back through the same model.

``StreamingMetrics`` is the schema of ``metrics`` in a ``streaming_eval`` result (the model below lists the
fields); the paper and the claims check read results through it, so a writer change that a reader would
not understand fails validation instead of printing a wrong number.
"""

from __future__ import annotations

import hashlib
import json
import math

from pydantic import BaseModel, ConfigDict

from longctx.measure.schema import PeakSummary, summarize_peaks
from longctx.stats import Summary, summarize
from longctx.streaming.config import Budget

TRACE_POINTS = 512
TIMINGS = ("tpot_ms", "prefill_ms", "decode_ms", "tokens_per_s", "first_token_ms", "total_ms")


class CacheMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    decode_steps: int
    prune_events: int
    rebase_events: int
    bytes_moved: int
    bytes_moved_per_step: float
    max_attention_len: int
    max_query_position: int
    maintenance_ms: Summary | None
    forward_ms: Summary | None
    kv_len_trace: list[list[int]]
    prune_schedule_sha256: str | None = None  # sha256 of the full (step, kv length) trace: equal = same prunes


class BudgetMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int
    cap_total: int
    cap_soft: int
    capacity: int
    recent: int
    prefill_len: int
    max_attention_bound: int


class StreamingMetrics(BaseModel):
    """``metrics`` of a streaming result: quality (PPL), speed summaries, peak memory, cache statistics."""

    model_config = ConfigDict(extra="allow")

    ppl: float
    nll_mean: float
    scored_tokens: int
    tpot_ms: Summary | None
    prefill_ms: Summary | None
    decode_ms: Summary | None
    tokens_per_s: Summary | None
    first_token_ms: Summary | None
    total_ms: Summary | None
    peak_mem: PeakSummary
    cache: CacheMetrics
    budget: BudgetMetrics
    nll: list[float] | None = None
    compile: dict | None = None  # graph breaks, recompiles, compile time (``--compile`` only)


def subsample(trace: list[tuple[int, int]], points: int = TRACE_POINTS) -> list[list[int]]:
    """At most ``points`` evenly spaced (step, kv_len) pairs, always keeping the first and last."""
    if len(trace) <= points:
        return [list(p) for p in trace]
    idx = sorted({round(i * (len(trace) - 1) / (points - 1)) for i in range(points)})
    return [list(trace[i]) for i in idx]


def schedule_sha256(trace: list[tuple[int, int]]) -> str:
    """A fingerprint of the prune schedule: the cache length after every forward, in order (not subsampled)."""
    return hashlib.sha256(json.dumps([list(p) for p in trace]).encode()).hexdigest()


def raw_run(index: int, run, peak: dict) -> dict:
    """One measured repeat as stored in the result's ``runs``."""
    return {
        "repeat": index,
        **{name: getattr(run, name) for name in TIMINGS},
        "maintenance_ms": run.maintenance_ms,
        "forward_ms": run.forward_ms,
        "decode_steps": run.decode_steps,
        "peak_mem": peak,
    }


def build_metrics(
    budget: Budget,
    runs: list,
    raw: list[dict],
    n_tokens: int,
    *,
    weights_bytes: int,
    profiled: bool,
    save_nll: bool,
    compile_info: dict | None = None,
) -> dict:
    """``metrics`` from the measured runs (``StreamRun``) and their raw records."""
    first = runs[0]
    nll_mean = float(first.nll.double().mean()) if first.nll_mean is None else first.nll_mean
    stats = first.stats
    prefill_len = budget.prefill_len(n_tokens) if first.prefill_len is None else first.prefill_len

    def summary(name: str):
        values = [r[name] for r in raw if r[name] is not None]
        return summarize(values) if values else None

    metrics = StreamingMetrics(
        ppl=math.exp(nll_mean) if first.ppl is None else first.ppl,
        nll_mean=nll_mean,
        scored_tokens=int(first.nll.numel()),
        **{name: summary(name) for name in TIMINGS},
        peak_mem=summarize_peaks([r["peak_mem"] for r in raw], weights_bytes),
        cache=CacheMetrics(
            decode_steps=first.decode_steps,
            prune_events=stats.prune_events,
            rebase_events=stats.rebase_events,
            bytes_moved=stats.bytes_moved,
            bytes_moved_per_step=stats.bytes_moved / first.decode_steps if first.decode_steps else 0.0,
            max_attention_len=stats.max_attention_len,
            max_query_position=stats.max_query_position,
            maintenance_ms=summary("maintenance_ms") if profiled else None,
            forward_ms=summary("forward_ms") if profiled else None,
            kv_len_trace=subsample(stats.kv_len_trace),
            prune_schedule_sha256=schedule_sha256(stats.kv_len_trace),
        ),
        budget=BudgetMetrics(
            window=budget.window,
            cap_total=budget.cap_total,
            cap_soft=budget.cap_soft,
            capacity=budget.capacity,
            recent=budget.recent,
            prefill_len=prefill_len,
            max_attention_bound=first.attention_bound or budget.max_attention_len(n_tokens),
        ),
        nll=first.nll.tolist() if save_nll else None,
        compile=compile_info,  # recompilations counted through the last repeat
    )
    return metrics.model_dump()
