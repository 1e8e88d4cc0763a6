"""`longctx streaming eval`: one decode-loop evaluation of a bounded KV cache, written as a result JSON.

A thin layer over ``longctx.streaming.cell``: the flags fill ``StreamingEvalConfig`` (knobs documented in
``longctx.streaming.config``); every check runs before the model loads, so bad usage exits 2 and writes
nothing. ``--compress-every 0`` means never prune (refused beyond the model's context).
"""

from __future__ import annotations

from pathlib import Path

from longctx.streaming.config import IMPLS, METHODS, REFRESH_POLICIES, StreamingEvalConfig, resolve_budget


def register(sub) -> None:
    """Add ``streaming eval`` to the top-level subparsers."""
    streaming = sub.add_parser("streaming", help="bounded KV-cache streaming study")
    actions = streaming.add_subparsers(dest="streaming_command", required=True, parser_class=type(streaming))
    p = actions.add_parser("eval", help="decode-loop PPL and speed of one cache method")
    p.add_argument("--model", required=True, help="local HF dir, hub id in the offline cache, or random:<arch>")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (needed with random:<arch>)")
    p.add_argument("--text-file", required=True, help="plain UTF-8 text or JSON with a 'text' field")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--n-sink", type=int, default=0, help="S: sink tokens kept at positions 0..S-1")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--window", type=int, default=None, help="W: recent window (C_total = S+W+σ+O+B)")
    budget.add_argument("--cap-total", type=int, default=None, help="C_total: auto-cap W = C_total-S-σ-O-B")
    p.add_argument("--compress-every", type=int, default=1, help="R (lazy): prune when len - C_soft >= R; 0 = never")
    p.add_argument("--cache-slack", type=int, default=0, help="σ (lazy): C_soft = C_total - σ")
    p.add_argument("--max-drop", type=int, default=0, help="δ (lazy): drop at most δ per prune; 0 = no limit")
    p.add_argument("--overlap", type=int, default=0, help="O: widens the recent block to W + O")
    p.add_argument("--refresh-budget", type=int, default=0, help="B: re-insert B dropped tokens per prune")
    p.add_argument("--refresh-policy", default="none", choices=REFRESH_POLICIES)
    p.add_argument("--max-eval-tokens", type=int, required=True, help="N: tokens of the text evaluated")
    p.add_argument("--impl", default="fast", choices=IMPLS, help="cache implementation (same definition)")
    p.add_argument("--compile", action="store_true", help="one torch.compile'd fixed-shape graph per decode step")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of random:<arch> weights")
    p.add_argument("--save-nll", action="store_true", help="store per-token NLL of x_1..x_{N-1} in metrics.nll")
    p.add_argument("--profile-maintenance", action="store_true", help="time cache maintenance vs forward (syncs)")
    p.add_argument("--out", required=True, help="result JSON path")
    p.set_defaults(func=run_eval)


def config_from_args(args) -> StreamingEvalConfig:
    """The cell config from parsed flags (flag names match the dataclass fields)."""
    fields = StreamingEvalConfig.__dataclass_fields__
    return StreamingEvalConfig(**{name: getattr(args, name) for name in fields})


def run_eval(args) -> int:
    """Validate, describe inputs, run the cell, print a one-line summary; exit code 0."""
    from longctx.models import parse_dtype
    from longctx.streaming.cell import describe_inputs, run_cell

    cfg = config_from_args(args)
    budget = resolve_budget(cfg)
    parse_dtype(cfg.dtype)
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
