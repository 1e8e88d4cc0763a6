"""`longctx attribution explain|time-curve`: explain one output token by token, or time the methods over lengths."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

from longctx.attribution.base import DEFAULT_TARGET_TEXT, METHOD_NAMES
from longctx.errors import UsageError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one length")
    return values


def _method_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(unknown)!r}; choose from {', '.join(METHOD_NAMES)}"
        )
    return names


def _add_common(p) -> None:
    """Options shared by both subcommands: the model and every method knob."""
    p.add_argument("--model", required=True, help="local HF directory, offline-cached hub id, or random:<arch>")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (required for random:<arch>)")
    p.add_argument("--dtype", default="bfloat16", help="float32 | float16 | bfloat16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--cuda", default=None, help="GPU indices, e.g. 0,1: shards the model (balanced device map)")
    p.add_argument("--target-text", default=DEFAULT_TARGET_TEXT)
    p.add_argument("--n-steps", type=_positive, default=20, help="IG interpolation steps")
    p.add_argument("--ig-method", default="gausslegendre", help="IG quadrature (Captum's names)")
    p.add_argument("--ig-batch-size", type=_positive, default=None, help="IG points per batch (default: automatic)")
    p.add_argument("--attnlrp-form", choices=("span", "per_token"), default="span")
    p.add_argument("--chunk-tokens", type=_positive, default=128, help="FlashTrace/IFR source chunk")
    p.add_argument("--sink-chunk-tokens", type=_positive, default=32, help="FlashTrace/IFR sink chunk")
    p.add_argument("--n-hops", type=int, default=1, help="FlashTrace hops")
    p.add_argument("--mlm-model", default=None, help="ReAGent masked LM (directory or cached hub id)")
    p.add_argument("--mlm-overflow", choices=("error", "truncate"), default="error",
                   help="ReAGent input beyond the masked LM's limit: fail, or truncate and record it")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)


def register(sub) -> None:
    p = sub.add_parser("attribution", help="token-level attribution: explain an output, or time the methods")
    inner = p.add_subparsers(dest="attribution_command", required=True, parser_class=type(p))

    ex = inner.add_parser("explain", help="attribution matrix of one prompt and target text")
    _add_common(ex)
    ex.add_argument("--method", required=True, choices=METHOD_NAMES, metavar="NAME", help=", ".join(METHOD_NAMES))
    ex.add_argument("--prompt-file", required=True, help="UTF-8 text file with the user prompt")
    ex.add_argument("--no-eos", action="store_true", help="do not append (and score) the EOS token")
    ex.add_argument("--out", required=True, help="result JSON path")
    ex.set_defaults(func=explain)

    tc = inner.add_parser("time-curve", help="time and peak memory of methods over prompt × output lengths")
    _add_common(tc)
    tc.add_argument("--attr-funcs", type=_method_list, required=True, help="comma-separated method names")
    tc.add_argument("--input-lengths", type=_int_list, default=None, help="user-prompt token counts")
    tc.add_argument("--output-lengths", type=_int_list, required=True, help="output token counts (EOS extra)")
    tc.add_argument("--total-lengths", "--lengths", dest="total_lengths", type=_int_list, default=None,
                    help="deprecated: prompt + output totals; prompt = total - output")  # fmt: skip
    tc.add_argument("--repeats", type=_positive, default=3)
    tc.add_argument("--warmup", type=int, default=1)
    tc.add_argument("--output-dir", required=True)
    tc.add_argument("--catch-oom", action=argparse.BooleanOptionalAction, default=True,
                    help="record OOM as a status and go on (default) or stop at the first one")  # fmt: skip
    tc.add_argument("--ruler-file", default=None, help="a real RULER JSONL (field 'input'); default: generated")
    tc.add_argument("--ruler-seed", type=int, default=0, help="seed of the generated variable-tracking sample")
    tc.set_defaults(func=time_curve)


def _check_model_args(args) -> None:
    """Fail fast (exit 2) on a bad dtype, GPU list or model path, before any worker starts."""
    import re

    from longctx.models import RANDOM_PREFIX, parse_dtype, resolve_model_dir

    parse_dtype(args.dtype)
    if args.cuda and not re.fullmatch(r"\d+(,\d+)*", args.cuda):
        raise UsageError(f"--cuda must be a comma-separated list of GPU indices, got {args.cuda!r}")
    if args.n_hops < 0:
        raise UsageError("--n-hops must be >= 0")
    for spec in (args.model, args.tokenizer, args.mlm_model):
        if spec and not spec.startswith(RANDOM_PREFIX):
            resolve_model_dir(spec)


def _method_config(args, method: str):
    from longctx.attribution.base import AttributionConfig

    return AttributionConfig(
        method=method,
        n_steps=args.n_steps,
        ig_method=args.ig_method,
        ig_batch_size=args.ig_batch_size,
        attnlrp_form=args.attnlrp_form,
        chunk_tokens=args.chunk_tokens,
        sink_chunk_tokens=args.sink_chunk_tokens,
        n_hops=args.n_hops,
        mlm_model=args.mlm_model,
        mlm_overflow=args.mlm_overflow,
        seed=args.seed,
    )


def _nan_to_none(matrix) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]


def explain(args) -> int:
    """Write the attribution matrix of one prompt/target pair with its provenance block."""
    from longctx.attribution.base import build_inputs, get_method
    from longctx.models import load_causal_lm
    from longctx.provenance import observed_now, utc_now
    from longctx.results import atomic_write_json, build_result

    path = Path(args.prompt_file)
    if not path.is_file():
        raise UsageError(f"--prompt-file {path} does not exist")
    prompt = path.read_text(encoding="utf-8")
    _check_model_args(args)
    method = get_method(args.method)
    config = _method_config(args, args.method)
    started, before = utc_now(), observed_now()
    lm = load_causal_lm(args.model, dtype=args.dtype, device=args.device, cuda=args.cuda, tokenizer=args.tokenizer)
    inputs = build_inputs(lm.tokenizer, prompt, args.target_text, append_eos=not args.no_eos)
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit is not None and inputs.total > limit:
        raise UsageError(f"prompt + output is {inputs.total} tokens; the model's context is {limit}")
    start = time.perf_counter()
    result = method(lm.model, lm.tokenizer, inputs, config)
    elapsed = time.perf_counter() - start
    prompt_tokens, generation_tokens = inputs.token_strings(lm.tokenizer)
    user_ids = inputs.user_ids
    data = {
        "source": str(path),
        "sha256_text": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "n_tokens": len(user_ids),
        "token_ids_sha256": hashlib.sha256(json.dumps(user_ids).encode()).hexdigest(),
    }
    out = build_result(
        study="attribution",
        kind="attribution_explain",
        config={**dataclasses.asdict(config), "target_text": args.target_text, "append_eos": not args.no_eos},
        inputs={"model": lm.info, "data": data},
        metrics={"time_sec": elapsed},
        runs=[],
        started_utc=started,
        observed_before=before,
        extra={
            "matrix": _nan_to_none(result.matrix),
            "input_ids": inputs.prompt_ids,
            "user_prompt_span": list(inputs.user_span),
            "generation_ids": inputs.generation_ids,
            "prompt_tokens": prompt_tokens,
            "generation_tokens": generation_tokens,
            "eos_counts": inputs.eos_counts,
            "chat_template_used": inputs.chat_template_used,
            "method_details": result.details,
        },
    )
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}: {args.method} matrix {tuple(result.matrix.shape)} in {elapsed:.2f}s")
    return 0


def time_curve(args) -> int:
    """Run (or resume) the time curve into --output-dir."""
    from longctx.attribution.cell import AttributionTimeConfig
    from longctx.attribution.time_curve import TimeCurveConfig, length_grid, run_time_curve, summarize_rows
    from longctx.data.ruler import load_ruler_sample

    _check_model_args(args)
    if args.warmup < 0:
        raise UsageError("--warmup must be >= 0")
    if args.input_lengths and args.total_lengths:
        raise UsageError("give --input-lengths or the deprecated --total-lengths, not both")
    if any(p <= 0 for p in args.input_lengths or []) or any(g <= 0 for g in args.output_lengths):
        raise UsageError("--input-lengths and --output-lengths must be positive")
    load_ruler_sample(args.ruler_file, args.ruler_seed)  # a malformed file fails here, before any worker
    template = AttributionTimeConfig(
        method=args.attr_funcs[0],
        prompt_len=1,
        output_len=1,
        model=args.model,
        tokenizer=args.tokenizer,
        mlm_model=args.mlm_model,
        mlm_overflow=args.mlm_overflow,
        dtype=args.dtype,
        device=args.device,
        cuda=args.cuda,
        warmup=args.warmup,
        repeats=args.repeats,
        chunk_tokens=args.chunk_tokens,
        sink_chunk_tokens=args.sink_chunk_tokens,
        n_steps=args.n_steps,
        ig_method=args.ig_method,
        ig_batch_size=args.ig_batch_size,
        attnlrp_form=args.attnlrp_form,
        n_hops=args.n_hops,
        target_text=args.target_text,
        ruler_file=args.ruler_file,
        ruler_seed=args.ruler_seed,
        seed=args.seed,
    )
    cfg = TimeCurveConfig(
        template=template,
        methods=tuple(args.attr_funcs),
        grid=length_grid(args.input_lengths, args.output_lengths, args.total_lengths),
        output_dir=args.output_dir,
        catch_oom=args.catch_oom,
    )
    rows = run_time_curve(cfg)
    summary = summarize_rows(rows)
    print(summary[["attr_func", "input_len", "output_len", "time_mean", "statuses"]].to_string(index=False))
    print(f"wrote {Path(args.output_dir) / 'time_curve_runs.jsonl'} and time_curve_summary.csv")
    return 0
