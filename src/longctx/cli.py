"""The `longctx` command line: a thin dispatcher over subcommand modules.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (taking the parsed namespace, returning an exit code). Errors map to exit codes here,
in one place: UsageError -> 2, RunFailure -> 1, argparse errors -> 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from longctx.errors import RunFailure, UsageError

# Subcommand modules, imported lazily so `longctx fingerprint` does not pay for torch model code.
SUBCOMMAND_MODULES = (
    "longctx.commands.fingerprint",
    "longctx.commands.models",
    "longctx.commands.streaming",
    "longctx.commands.attribution",
    "longctx.commands.run",
    "longctx.commands.paper",
    "longctx.commands.assets",
    "longctx.commands.bench",
    "longctx.commands.docs",
    "longctx.commands.predict",
    "longctx.commands.claims",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        raise UsageError(message if self.prog == "longctx" else f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="longctx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"longctx: error: {exc}", file=sys.stderr)
        return 2
    except RunFailure as exc:
        print(f"longctx: run failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("longctx: interrupted; results already written are kept", file=sys.stderr)
        return 130
