"""`longctx attribution explain|time-curve`: explain one output token by token, or time the methods over lengths.

Every flag except the grid and the output paths is derived from the declared settings
(``longctx.attribution.config``) and the methods' options (``longctx.attribution.method``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from longctx.errors import UsageError
from longctx.options import add_flags, build


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one length")
    return values


def _name_list(text: str) -> list[str]:
    from longctx.attribution.method import method_names

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in method_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(unknown)!r}; choose from {', '.join(method_names())}"
        )
    return names


def register(sub) -> None:
    from longctx.attribution.config import ExplainConfig, TimeCellConfig
    from longctx.attribution.method import method_names, option_classes

    p = sub.add_parser("attribution", help="token-level attribution: explain an output, or time the methods")
    inner = p.add_subparsers(dest="attribution_command", required=True, parser_class=type(p))

    ex = inner.add_parser("explain", help="attribution matrix of one prompt and target text")
    add_flags(ex, ExplainConfig, *option_classes())
    names = method_names()
    ex.add_argument("--method", required=True, choices=names, metavar="NAME", help=", ".join(names))
    ex.add_argument("--out", required=True, help="result JSON path")
    ex.set_defaults(func=explain)

    tc = inner.add_parser("time-curve", help="time and peak memory of methods over prompt × output lengths")
    add_flags(tc, TimeCellConfig, *option_classes())
    tc.add_argument("--attr-funcs", type=_name_list, required=True, help="comma-separated method names")
    tc.add_argument("--input-lengths", type=_int_list, default=None, help="user-prompt token counts")
    tc.add_argument("--output-lengths", type=_int_list, required=True, help="output token counts (EOS extra)")
    tc.add_argument("--total-lengths", "--lengths", dest="total_lengths", type=_int_list, default=None,
                    help="deprecated: prompt + output totals; prompt = total - output")  # fmt: skip
    tc.add_argument("--output-dir", required=True)
    tc.add_argument("--catch-oom", action=argparse.BooleanOptionalAction, default=True,
                    help="record OOM as a status and go on (default) or stop at the first one")  # fmt: skip
    tc.set_defaults(func=time_curve)


def _method_options(args, method: str):
    """The method's options from the flags of its declared fields."""
    from longctx.attribution.method import method_spec

    return build(method_spec(method).options, args)


def _check_model_args(args) -> None:
    """Fail fast (exit 2) on a bad dtype, device, GPU list, model directory or RULER file, before anything is loaded."""
    from longctx.commands.checks import check_device, check_model
    from longctx.models import parse_dtype
    from longctx.validate import validate_text_file

    parse_dtype(args.dtype)
    check_device(getattr(args, "device", None))
    if args.cuda and not re.fullmatch(r"\d+(,\d+)*", args.cuda):
        raise UsageError(f"--cuda must be a comma-separated list of GPU indices, got {args.cuda!r}")
    check_model(args.model)
    check_model(args.tokenizer, weights=False)
    check_model(getattr(args, "mlm_model", None))
    if getattr(args, "ruler_file", None):
        validate_text_file(args.ruler_file, "--ruler-file")


def explain(args) -> int:
    """Write the attribution matrix of one prompt/target pair with its provenance block."""
    from longctx.attribution.config import ExplainConfig
    from longctx.attribution.explain import explain as run_explain
    from longctx.validate import validate_output_file, validate_text_file

    cfg = build(ExplainConfig, args, options=_method_options(args, args.method))
    validate_text_file(cfg.prompt_file, "--prompt-file")
    _check_model_args(args)
    validate_output_file(args.out, inputs=[cfg.prompt_file])
    record = run_explain(cfg, Path(args.out))
    shape = (len(record["matrix"]), len(record["matrix"][0]) if record["matrix"] else 0)
    print(f"wrote {args.out}: {cfg.method} matrix {shape} in {record['metrics']['time_sec']:.2f}s")
    return 0


def time_curve(args) -> int:
    """Run (or resume) the time curve into --output-dir, then print its summary."""
    from longctx.attribution.time_curve import SUMMARY_FILE, TimeCurve, length_grid, run_time_curve, summary_row
    from longctx.validate import validate_results_dir

    _check_model_args(args)
    validate_results_dir(args.output_dir, "--output-dir")
    if any(p <= 0 for p in args.input_lengths or []) or any(g <= 0 for g in args.output_lengths):
        raise UsageError("--input-lengths and --output-lengths must be positive")
    grid = length_grid(args.input_lengths, args.output_lengths, args.total_lengths)
    curve = TimeCurve.from_flags(args, tuple(args.attr_funcs), grid, Path(args.output_dir))
    curve.check()
    results = run_time_curve(curve, catch_oom=args.catch_oom)
    for result in results:
        row = summary_row(result)
        time_text = "-" if row["time_mean"] is None else f"{row['time_mean']:.4g}s"
        print(
            f"{row['attr_func']:22s} P={row['target_input_tokens']:<6} G={row['target_output_tokens']:<6} "
            f"{time_text:>10} {row['statuses']}"
        )
    print(f"wrote {curve.output_dir / SUMMARY_FILE} and time_curve_runs.jsonl ({len(results)} cells)")
    return 0
