"""`longctx docs [--check]`: regenerate the README's generated blocks (departures, claims) from the code."""

from __future__ import annotations

from pathlib import Path

from longctx.errors import RunFailure, UsageError


def register(sub) -> None:
    p = sub.add_parser("docs", help="regenerate README.md's generated blocks (departures, claims)")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--check", action="store_true", help="only check that the blocks are current (exit 1 if not)")
    p.set_defaults(func=run)


def run(args) -> int:
    from longctx.readme_blocks import sync

    path = Path(args.readme)
    if not path.is_file():
        raise UsageError(f"{path} not found (run from the repository root or pass --readme)")
    try:
        current = sync(path, check=args.check)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if args.check and not current:
        raise RunFailure(f"{path} is out of date: run `longctx docs`")
    print(f"{path}: generated blocks {'current' if current else 'rewritten'}")
    return 0
