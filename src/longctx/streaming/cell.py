"""The streaming cell: describe inputs cheaply, run warm-up + repeats of the decode loop, write the result.

``CONFIG_CLASS``, ``describe_inputs(cfg)`` and ``run_cell(cfg, inputs, out_path)`` are the contract of
docs/INTERFACES.md; ``longctx streaming eval`` is a thin layer over the same three.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys

import torch

from longctx.errors import RunFailure
from longctx.models import load_causal_lm
from longctx.provenance import utc_now
from longctx.results import atomic_write_json, build_result
from longctx.stats import summarize
from longctx.streaming.compiled import make_evaluator
from longctx.streaming.config import StreamingEvalConfig, check_context, resolve_budget
from longctx.streaming.evaluator import StreamRun
from longctx.streaming.inputs import describe_model, model_max_positions, tokenize_stream

CONFIG_CLASS = StreamingEvalConfig
TRACE_POINTS = 512
TIMINGS = ("tpot_ms", "prefill_ms", "decode_ms", "tokens_per_s", "first_token_ms", "total_ms")


def describe_inputs(cfg: StreamingEvalConfig) -> dict:
    """``inputs`` of the result: model revision and tokenizer (no weights loaded), token ids and their hash."""
    budget = resolve_budget(cfg)
    _, data = tokenize_stream(cfg)
    check_context(budget, data["n_tokens"], model_max_positions(cfg))
    return {"model": describe_model(cfg), "data": data}


def _subsample(trace: list[tuple[int, int]], points: int = TRACE_POINTS) -> list[list[int]]:
    """At most ``points`` evenly spaced (step, kv_len) pairs, always keeping the first and last."""
    if len(trace) <= points:
        return [list(p) for p in trace]
    idx = sorted({round(i * (len(trace) - 1) / (points - 1)) for i in range(points)})
    return [list(trace[i]) for i in idx]


class MemoryProbe:
    """Peak memory of the measured runs: CUDA allocator peaks, or (CPU) the process RSS high-water mark."""

    def __init__(self, model, device: torch.device):
        self.cuda = device.type == "cuda"
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        self.weights = torch.cuda.memory_allocated(device) if self.cuda else params
        self.device = device

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict:
        if self.cuda:
            allocated = torch.cuda.max_memory_allocated(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device)
            source = "cuda max_memory_allocated / max_memory_reserved (weights = memory allocated before the run)"
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
            allocated = reserved = rss
            source = (
                "cpu: process RSS high-water mark (ru_maxrss, whole process, not reset per run); "
                "weights = parameter bytes"
            )
        return {
            "allocated_bytes": allocated,
            "reserved_bytes": reserved,
            "weights_bytes": self.weights,
            "allocated_minus_weights_bytes": allocated - self.weights,
            "reserved_minus_weights_bytes": reserved - self.weights,
            "source": source,
        }


def _raw_run(index: int, run: StreamRun, peak: dict) -> dict:
    return {
        "repeat": index,
        **{name: getattr(run, name) for name in TIMINGS},
        "maintenance_ms": run.maintenance_ms,
        "forward_ms": run.forward_ms,
        "decode_steps": run.decode_steps,
        "peak_mem": peak,
    }


def _metrics(cfg: StreamingEvalConfig, budget, runs: list[StreamRun], raw: list[dict], n_tokens: int) -> dict:
    first = runs[0]
    nll_mean = float(first.nll.double().mean())
    stats = first.stats
    profiled = cfg.profile_maintenance

    def summary(name: str):
        values = [r[name] for r in raw if r[name] is not None]
        return summarize(values) if values else None

    metrics = {
        "ppl": math.exp(nll_mean),
        "nll_mean": nll_mean,
        "scored_tokens": int(first.nll.numel()),
        **{name: summary(name) for name in TIMINGS},
        "peak_mem": max((r["peak_mem"] for r in raw), key=lambda p: p["allocated_bytes"]),
        "cache": {
            "decode_steps": first.decode_steps,
            "prune_events": stats.prune_events,
            "rebase_events": stats.rebase_events,
            "bytes_moved": stats.bytes_moved,
            "bytes_moved_per_step": stats.bytes_moved / first.decode_steps if first.decode_steps else 0.0,
            "max_attention_len": stats.max_attention_len,
            "max_query_position": stats.max_query_position,
            "maintenance_ms": summary("maintenance_ms") if profiled else None,
            "forward_ms": summary("forward_ms") if profiled else None,
            "kv_len_trace": _subsample(stats.kv_len_trace),
        },
        "budget": {
            "window": budget.window,
            "cap_total": budget.cap_total,
            "cap_soft": budget.cap_soft,
            "capacity": budget.capacity,
            "recent": budget.recent,
            "prefill_len": budget.prefill_len(n_tokens),
            "max_attention_bound": budget.max_attention_len(n_tokens),
        },
    }
    if cfg.compile:
        metrics["compile"] = runs[-1].compile  # recompilations counted through the last repeat
    if cfg.save_nll:
        metrics["nll"] = first.nll.tolist()
    return metrics


def run_cell(cfg: StreamingEvalConfig, inputs: dict, out_path) -> dict:
    """Load the model, run ``warmup`` + ``repeats`` passes over the stream, write the result atomically."""
    started = utc_now()
    budget = resolve_budget(cfg)
    ids, data = tokenize_stream(cfg)
    if data["token_ids_sha256"] != inputs["data"]["token_ids_sha256"]:
        raise RunFailure(f"{cfg.text_file} changed since its inputs were described (token hash differs)")
    check_context(budget, len(ids), model_max_positions(cfg))
    loaded = load_causal_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, tokenizer=cfg.tokenizer, seed=cfg.seed)
    model = loaded.model
    device = next(model.parameters()).device
    token_ids = torch.tensor(ids, dtype=torch.long, device=device)
    probe = MemoryProbe(model, device)
    runs, raw = [], []
    try:
        evaluate = make_evaluator(model, token_ids, budget, cfg.impl, cfg.compile, cfg.profile_maintenance, True)
        for index in range(cfg.warmup + cfg.repeats):
            probe.reset()
            run = evaluate()
            if index >= cfg.warmup:
                runs.append(run)
                raw.append(_raw_run(index - cfg.warmup, run, probe.peak()))
    except torch.OutOfMemoryError as exc:
        raise RunFailure(f"out of memory: {str(exc).splitlines()[0]}") from None
    result = build_result(
        study="streaming",
        kind="streaming_eval",
        config=dataclasses.asdict(cfg),
        inputs=inputs,
        metrics=_metrics(cfg, budget, runs, raw, len(ids)),
        runs=raw,
        started_utc=started,
    )
    atomic_write_json(out_path, result)
    return result
