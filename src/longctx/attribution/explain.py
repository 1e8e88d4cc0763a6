"""``longctx attribution explain``: the attribution matrix of one prompt and target, with token strings."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path

from longctx.attribution.config import ExplainConfig
from longctx.errors import UsageError


def _nan_to_none(matrix) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]


def read_prompt(path: Path) -> str:
    if not path.is_file():
        raise UsageError(f"--prompt-file {path} does not exist")
    return path.read_text(encoding="utf-8")


def build_explain_inputs(cfg: ExplainConfig, tokenizer, prompt: str):
    """The protocol's inputs: the original's construction (reference) or the user ids placed verbatim (efficient)."""
    from longctx.attribution.inputs import build_inputs
    from longctx.attribution.reference_inputs import reference_inputs

    if cfg.protocol == "reference":
        if cfg.no_eos:
            raise UsageError("--no-eos has no reference form: the original always scores the EOS")
        return reference_inputs(tokenizer, prompt, cfg.target_text)
    return build_inputs(tokenizer, prompt, cfg.target_text, append_eos=not cfg.no_eos)


def positions_record(inputs, result) -> dict:
    """What makes the matrix unambiguous: the whole sequence, which position each row and column stands for,
    and, for span methods, the result vectors over every position (the original's ``token_importance_total``
    per hop and the combined ``observation['sum']``)."""
    record = {
        "input_ids": inputs.input_ids[0].tolist(),
        "prompt_ids": inputs.prompt_ids,
        "prompt_len": inputs.prompt_len,
        "column_positions": inputs.column_positions().tolist(),
        "row_positions": inputs.generation_positions().tolist(),
    }
    if result.span is not None:
        record["span"] = {
            "scores_by_position": result.span.scores.tolist(),
            "hops_by_position": [hop.tolist() for hop in result.span.hops],
            "rows": result.span.rows.tolist(),
        }
    return record


def explain(cfg: ExplainConfig, out: Path) -> dict:
    """Load the model, explain the target given the prompt, write the result JSON atomically; return it."""
    from longctx.attribution.method import method_spec
    from longctx.data.tokens import token_ids_sha256
    from longctx.models import context_limit
    from longctx.provenance import observed_now, utc_now
    from longctx.results import atomic_write_json, build_result

    prompt = read_prompt(Path(cfg.prompt_file))
    started, before = utc_now(), observed_now()
    lm = cfg.load_model()
    inputs = build_explain_inputs(cfg, lm.tokenizer, prompt)
    limit = context_limit(cfg.model)
    if limit is not None and inputs.total > limit:
        raise UsageError(f"prompt + output is {inputs.total} tokens; the model's context is {limit}")
    start = time.perf_counter()
    result = method_spec(cfg.method).runner(cfg.protocol)(lm.model, lm.tokenizer, inputs, cfg.options)
    elapsed = time.perf_counter() - start
    prompt_tokens, generation_tokens = inputs.token_strings(lm.tokenizer)
    data = {
        "source": cfg.prompt_file,
        "sha256_text": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "n_tokens": inputs.n_user,
        "token_ids_sha256": token_ids_sha256(inputs.user_ids),
    }
    record = build_result(
        study="attribution",
        kind="attribution_explain",
        config=dataclasses.asdict(cfg),
        inputs={"model": lm.info, "data": data},
        metrics={"time_sec": elapsed},
        runs=[],
        started_utc=started,
        observed_before=before,
        extra={
            "matrix": _nan_to_none(result.as_matrix(inputs)),
            **positions_record(inputs, result),
            "user_prompt_span": list(inputs.user_span),
            "generation_ids": inputs.generation_ids,
            "prompt_tokens": prompt_tokens,
            "generation_tokens": generation_tokens,
            "eos_counts": inputs.eos_counts,
            "chat_template_used": inputs.chat_template_used,
            "method_details": result.details,
            "input_construction": inputs.details,
        },
    )
    atomic_write_json(out, record)
    return record
