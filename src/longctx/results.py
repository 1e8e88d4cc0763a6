"""Result JSON: building, hashing, atomic writing, reading, and the reuse/staleness policy.

A result is valid for reuse only if its ``config_hash`` equals the hash the current code would
compute for the same cell: sha256 over canonical JSON of ``config`` + ``inputs`` + code version.
Files that do not parse, or lack the required fields, are reported and treated as missing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from longctx.provenance import code_version, fingerprint, provenance, sha256_json, utc_now

SCHEMA_VERSION = 1
REQUIRED_FIELDS = ("schema_version", "study", "kind", "status", "config", "inputs", "config_hash")


def config_hash(config: dict, inputs: dict, code: dict | None = None) -> str:
    """The cell's identity: what was asked (config), on what (inputs), by which code."""
    code = code_version() if code is None else code
    return sha256_json({"config": config, "inputs": inputs, "code": code["source_sha256"]})


def build_result(
    *,
    study: str,
    kind: str,
    config: dict,
    inputs: dict,
    metrics: dict,
    runs: list,
    started_utc: str,
    status: str = "ok",
    fp: dict | None = None,
    observed_before: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Assemble the spec's result JSON (fingerprint, provenance, config hash, metrics, raw runs)."""
    fp = fingerprint() if fp is None else fp
    observed = {"before": observed_before, "after": fp["observed"]}
    result = {
        "schema_version": SCHEMA_VERSION,
        "study": study,
        "kind": kind,
        "status": status,
        "config": config,
        "inputs": inputs,
        "fingerprint": {
            "identity": fp["identity"],
            "identity_hash": fp["identity_hash"],
            "observed": observed,
        },
        "provenance": provenance(started_utc),
        "config_hash": config_hash(config, inputs),
        "metrics": metrics,
        "runs": runs,
    }
    if extra:
        result.update(extra)
    return result


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON via a temp file in the same directory and an atomic rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, sort_keys=False, ensure_ascii=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(path: str | os.PathLike, *, warn=None) -> dict | None:
    """Load a result file; a malformed or truncated one is reported (via ``warn``) and returns None."""
    warn = warn or _warn
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warn(f"malformed result {path} ({type(exc).__name__}: {exc}); treating it as missing")
        return None
    missing = [f for f in REQUIRED_FIELDS if not isinstance(data, dict) or f not in data]
    if missing:
        warn(f"malformed result {path} (missing {', '.join(missing)}); treating it as missing")
        return None
    return data


class CellState(str, Enum):
    MISSING = "missing"
    VALID = "valid"
    STALE = "stale"


class Action(str, Enum):
    RUN = "run"
    SKIP = "skip"
    REUSE_STALE = "reuse_stale"


@dataclass(frozen=True)
class ReusePolicy:
    """FORCE reruns everything; ALLOW_STALE reuses stale results (loudly). Read from the environment."""

    force: bool = False
    allow_stale: bool = False

    @classmethod
    def from_env(cls, env=None) -> ReusePolicy:
        env = os.environ if env is None else env
        return cls(force=_truthy(env.get("FORCE")), allow_stale=_truthy(env.get("ALLOW_STALE")))


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in {"1", "true", "yes", "on"}


def cell_state(existing: dict | None, expected_hash: str) -> CellState:
    if existing is None:
        return CellState.MISSING
    ok = existing.get("status") == "ok" or str(existing.get("status", "")).startswith(("oom", "skipped"))
    if existing.get("config_hash") == expected_hash and ok:
        return CellState.VALID
    return CellState.STALE


def decide(existing: dict | None, expected_hash: str, policy: ReusePolicy) -> Action:
    """The staleness policy of the spec, in one function."""
    if policy.force:
        return Action.RUN
    state = cell_state(existing, expected_hash)
    if state is CellState.VALID:
        return Action.SKIP
    if state is CellState.STALE and policy.allow_stale and existing.get("status") == "ok":
        return Action.REUSE_STALE
    return Action.RUN


def mark_stale(result: dict, reason: str) -> dict:
    """Annotate a reused stale result so tables can flag the numbers that came from it."""
    return {**result, "stale": {"reason": reason, "reused_utc": utc_now()}}


def _warn(message: str) -> None:
    print(f"longctx: warning: {message}", file=sys.stderr)
