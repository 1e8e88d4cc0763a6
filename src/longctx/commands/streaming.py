"""`longctx streaming eval`: one decode-loop evaluation of a bounded KV cache, written as a result JSON.

A thin layer over ``longctx.streaming.cell``: the flags fill ``StreamingEvalConfig`` (knobs documented in
``longctx.streaming.config``); every check runs before the model loads, so bad usage exits 2 and writes
nothing. ``--compress-every 0`` means never prune (refused beyond the model's context).
"""

from __future__ import annotations

from pathlib import Path

from longctx.options import add_flags, build
from longctx.streaming.config import StreamingEvalConfig, resolve_budget


def register(sub) -> None:
    """Add ``streaming eval`` to the top-level subparsers (flags derived from ``StreamingEvalConfig``)."""
    streaming = sub.add_parser("streaming", help="bounded KV-cache streaming study")
    actions = streaming.add_subparsers(dest="streaming_command", required=True, parser_class=type(streaming))
    p = actions.add_parser("eval", help="decode-loop PPL and speed of one cache method")
    add_flags(p, StreamingEvalConfig)
    p.add_argument("--out", required=True, help="result JSON path")
    p.set_defaults(func=run_eval)


def check_eval_inputs(cfg: StreamingEvalConfig, out: str) -> None:
    """Device, model directory, text file and --out (not a directory, writable, not the input), before any work."""
    from longctx.commands.checks import check_device, check_model
    from longctx.validate import validate_output_file, validate_text_file

    check_device(cfg.device)
    check_model(cfg.model)
    check_model(cfg.tokenizer, weights=False)
    validate_text_file(cfg.text_file, "--text-file")
    validate_output_file(out, inputs=[cfg.text_file])


def run_eval(args) -> int:
    """Validate, describe inputs, run the cell, print a one-line summary; exit code 0."""
    from longctx.models import parse_dtype
    from longctx.streaming.cell import describe_inputs, run_cell

    cfg = build(StreamingEvalConfig, args)
    budget = resolve_budget(cfg)
    parse_dtype(cfg.dtype)
    check_eval_inputs(cfg, args.out)
    inputs = describe_inputs(cfg)
    impl = "compiled" if cfg.compile else cfg.impl
    print(
        f"streaming eval: {cfg.method} ({impl}) S={budget.n_sink} W={budget.window} C_total={budget.cap_total} "
        f"on {inputs['data']['n_tokens']} tokens of {cfg.text_file}"
    )
    result = run_cell(cfg, inputs, Path(args.out))
    m = result["metrics"]
    tpot = m["tpot_ms"]["mean"] if m["tpot_ms"] else None
    tpot_text = f"{tpot:.3f} ms" if tpot is not None else "n/a (no decode steps)"
    print(
        f"ppl {m['ppl']:.4f} over {m['scored_tokens']} tokens; TPOT {tpot_text}; "
        f"prunes {m['cache']['prune_events']}; max attention {m['cache']['max_attention_len']}; wrote {args.out}"
    )
    if m.get("compile"):
        c = m["compile"]
        print(f"compile: {c['compile_time_s']:.1f} s ({c['backend']}, {c['mode']}); graph breaks {c['graph_breaks']}, "
              f"recompiles {c['recompiles']}")  # fmt: skip
    return 0
