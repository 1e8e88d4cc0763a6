"""`longctx models make-tiny DIR`: write the smoke profile's tiny models and tokenizer (skipped when complete)."""

from __future__ import annotations

from pathlib import Path

from longctx.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("models", help="model utilities")
    msub = p.add_subparsers(dest="models_command", required=True)
    tiny = msub.add_parser("make-tiny", help="write tiny GPT-NeoX, Qwen3 and masked-LM models (seeded)")
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--train-steps", type=int, default=200, help="seeded CPU training steps (0: random init)")
    tiny.set_defaults(func=make_tiny)


def make_tiny(args) -> int:
    from longctx.tiny import TINY_MODEL_NAMES, ensure_tiny_models

    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
    if args.train_steps < 0:
        raise UsageError("--train-steps must be >= 0")
    ensure_tiny_models(out, seed=args.seed, train_steps=args.train_steps)
    for name in TINY_MODEL_NAMES:
        print(f"{name}: {out / name}")
    return 0
