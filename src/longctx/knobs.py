"""Environment knobs (``FORCE=1``, ``RUN_SWEEPS=0``, ``SWEEP_R_VALUES="1 16 64"``, ...): one parser for all.

Booleans: ``1/true/yes/on`` are true, ``0/false/no/off`` and the empty string are false, anything else is
a UsageError naming the knob (exit 2). Every command and the plan expansion read knobs through here, so
``DRY_RUN=false`` means no everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from longctx.errors import UsageError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def flag(name: str, default: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """A boolean knob; unset means ``default``."""
    value = _env(env).get(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise UsageError(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def integer(name: str, default: int, env: Mapping[str, str] | None = None, *, minimum: int = 0) -> int:
    """An integer knob of at least ``minimum``; unset or empty means ``default``."""
    value = _env(env).get(name)
    if value is None or not value.strip():
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r}: expected an integer") from None
    if parsed < minimum:
        raise UsageError(f"{name}={value!r}: must be >= {minimum}")
    return parsed


def integers(name: str, default: list[int], env: Mapping[str, str] | None = None) -> list[int]:
    """Whitespace- or comma-separated integers; unset or empty means ``default``."""
    value = _env(env).get(name)
    if value is None or not value.strip():
        return list(default)
    try:
        return [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"{name}={value!r}: expected whitespace-separated integers") from None


def names(name: str, choices: list[str] | tuple[str, ...], env: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated subset of ``choices`` (unset or empty: all of them, in their order)."""
    value = _env(env).get(name)
    if value is None or not value.strip():
        return list(choices)
    picked = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in picked if v not in choices]
    if unknown:
        raise UsageError(f"{name}: unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
    return picked


def text(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """A free-text knob (unset or empty: ``default``)."""
    value = _env(env).get(name)
    return default if value is None or not value.strip() else value.strip()
