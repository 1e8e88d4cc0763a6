"""Settings declared once, as dataclass fields: their CLI flags, defaults, help and checks all come from there.

A field made with ``option(...)`` carries its help text and constraints (``choices``, ``minimum``). ``add_flags``
turns the fields of one or more dataclasses into argparse flags (``--n-steps`` for ``n_steps``), ``build``
creates the dataclass from parsed arguments, and ``check_fields`` (called by each dataclass's
``__post_init__``) validates any construction, from flags, plan data or JSON alike, with a one-line
UsageError naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from longctx.errors import UsageError


def option(default: Any = dataclasses.MISSING, *, help: str, choices=None, minimum: int | None = None, cli=True):
    """A dataclass field with its help text and constraints (``cli=False``: recorded but not a flag)."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum, "cli": cli}
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_fields(obj) -> None:
    """Validate every declared constraint of a dataclass instance (None passes: it means "automatic")."""
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if value is None:
            continue
        if meta.get("choices") and value not in meta["choices"]:
            allowed = ", ".join(map(str, meta["choices"]))
            raise UsageError(f"{flag_name(f.name)} must be one of {allowed}, got {value!r}")
        if meta.get("minimum") is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"{flag_name(f.name)} must be an integer, got {value!r}")
            if value < meta["minimum"]:
                raise UsageError(f"{flag_name(f.name)} must be >= {meta['minimum']}, got {value}")


def _base_type(hint) -> type:
    """``int`` for ``int | None`` (the flag parses the value; None stays the default)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def declared_fields(*classes: type) -> dict[str, tuple[dataclasses.Field, type]]:
    """Flag-bearing fields of ``classes`` by name; a name declared twice must agree on its default."""
    out: dict[str, tuple[dataclasses.Field, type]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", False):
                continue
            if f.name in out and out[f.name][0].default != f.default:
                raise TypeError(f"option {f.name} is declared twice with different defaults ({cls.__name__})")
            out.setdefault(f.name, (f, _base_type(hints[f.name])))
    return out


def add_flags(parser: argparse.ArgumentParser, *classes: type, skip: tuple[str, ...] = (), **overrides) -> None:
    """One flag per declared field of ``classes`` (shared names once); ``overrides`` replace argparse kwargs."""
    for name, (f, kind) in declared_fields(*classes).items():
        if name in skip:
            continue
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": name, "help": meta["help"]}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if f.default is True else "store_true"
            kwargs["default"] = bool(f.default)
        else:
            kwargs["type"] = kind
            if f.default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        kwargs.update(overrides.get(name, {}))
        parser.add_argument(flag_name(name), **kwargs)


def build(cls: type, args: argparse.Namespace, **values):
    """``cls`` from the parsed flags of its declared fields, with ``values`` taking precedence."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **values})
