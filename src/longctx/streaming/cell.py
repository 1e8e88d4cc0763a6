"""The streaming cell: run warm-up + repeats of the decode loop on one model and text, write the result.

The protocol picks the decode loop: ``reference`` (``longctx.streaming.reference_loop``) or ``efficient``
(``longctx.streaming.evaluator``, or the compiled loop). ``longctx streaming eval`` and the plan runner
(``longctx.streaming.study``) both call ``describe_inputs`` and ``run_cell``.
"""

from __future__ import annotations

import dataclasses

import torch

from longctx.errors import RunFailure
from longctx.measure.memory import PeakMemory
from longctx.models import context_limit, describe_model, load_causal_lm, resolve_device
from longctx.provenance import utc_now
from longctx.results import atomic_write_json, build_result
from longctx.streaming.compiled import make_evaluator
from longctx.streaming.config import StreamingEvalConfig, check_context, resolve_budget
from longctx.streaming.inputs import tokenize_stream
from longctx.streaming.metrics import build_metrics, raw_run
from longctx.streaming.reference_loop import Quirks, evaluate_reference


def describe_inputs(cfg: StreamingEvalConfig) -> dict:
    """``inputs`` of the result: model revision and tokenizer (no weights loaded), token ids and their hash."""
    budget = resolve_budget(cfg)
    _, data = tokenize_stream(cfg)
    check_context(budget, data["n_tokens"], context_limit(cfg.model))
    model = describe_model(
        cfg.model, tokenizer=cfg.tokenizer, dtype=cfg.dtype, device_map=resolve_device(cfg.device), seed=cfg.seed
    )
    return {"model": model, "data": data}


def _evaluator(cfg: StreamingEvalConfig, model, token_ids: torch.Tensor, budget):
    """One pass over the stream per call: the original's code path (reference) or the definition (efficient)."""
    if cfg.protocol == "reference":
        quirks = Quirks(loss=cfg.reference_loss)
        return lambda: evaluate_reference(model, token_ids, budget, quirks, progress=True)
    return make_evaluator(model, token_ids, budget, cfg.impl, cfg.compile, cfg.profile_maintenance, True)


def run_cell(cfg: StreamingEvalConfig, inputs: dict, out_path) -> dict:
    """Load the model, run ``warmup`` + ``repeats`` passes over the stream, write the result atomically."""
    started = utc_now()
    budget = resolve_budget(cfg)
    ids, data = tokenize_stream(cfg)
    if data["token_ids_sha256"] != inputs["data"]["token_ids_sha256"]:
        raise RunFailure(f"{cfg.text_file} changed since its inputs were described (token hash differs)")
    check_context(budget, len(ids), context_limit(cfg.model))
    model = load_causal_lm(
        cfg.model, dtype=cfg.dtype, device=cfg.device, tokenizer=cfg.tokenizer, seed=cfg.seed
    ).model
    device = next(model.parameters()).device
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    token_ids = torch.tensor(ids, dtype=torch.long, device=device)
    runs, raw = [], []
    try:
        evaluate = _evaluator(cfg, model, token_ids, budget)
        for index in range(cfg.warmup + cfg.repeats):
            with PeakMemory(cuda=device.type == "cuda") as memory:
                run = evaluate()
            if index >= cfg.warmup:
                runs.append(run)
                raw.append(raw_run(index - cfg.warmup, run, memory.record()))
    except torch.OutOfMemoryError as exc:
        raise RunFailure(f"out of memory: {str(exc).splitlines()[0]}") from None
    metrics = build_metrics(
        budget,
        runs,
        raw,
        len(ids),
        weights_bytes=weights_bytes,
        profiled=cfg.profile_maintenance,
        save_nll=cfg.save_nll,
        compile_info=runs[-1].compile if cfg.compile else None,
    )
    result = build_result(
        study="streaming",
        kind="streaming_eval",
        config=dataclasses.asdict(cfg),
        inputs=inputs,
        metrics=metrics,
        runs=raw,
        started_utc=started,
    )
    atomic_write_json(out_path, result)
    return result
