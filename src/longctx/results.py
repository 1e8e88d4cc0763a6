"""Result JSON: building, hashing, atomic writing, reading (validated), and the reuse/staleness policy.

A result is valid for reuse only if its ``config_hash`` equals the hash the current code would
compute for the same cell: sha256 over canonical JSON of ``config`` + ``inputs`` + code version.
Every file is read through one schema (``StoredResult``, with the study's typed ``metrics``): a file that
does not parse or does not match is reported once and treated as missing, never read as numbers.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from longctx import knobs
from longctx.atomic_files import atomic_write_json as atomic_write_json  # re-exported: one atomic writer
from longctx.provenance import code_version, fingerprint, provenance, sha256_json, utc_now

SCHEMA_VERSION = 2


class Fingerprint(BaseModel):
    model_config = ConfigDict(extra="allow")

    identity: dict
    identity_hash: str
    observed: dict | None = None


class StoredResult(BaseModel):
    """The envelope every result file has; ``metrics`` is the study's typed model when the study is known."""

    model_config = ConfigDict(extra="allow")

    schema_version: int
    study: str
    kind: str
    status: str
    config: dict
    inputs: dict
    fingerprint: Fingerprint
    provenance: dict
    config_hash: str
    metrics: Any
    runs: list
    stale: dict | None = None

    @property
    def identity_hash(self) -> str:
        return self.fingerprint.identity_hash

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


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


def parse_result(data: Any) -> StoredResult:
    """Validate a loaded result against the envelope and its study's metrics model (ValidationError if not)."""
    from longctx.studies import STUDIES

    result = StoredResult.model_validate(data)
    if result.schema_version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {result.schema_version}, this code reads {SCHEMA_VERSION}")
    if result.study in STUDIES:
        result.metrics = STUDIES[result.study].read_metrics(result.kind, result.metrics)
    return result


def read_result(path: str | os.PathLike, *, warn=None) -> StoredResult | None:
    """Load and validate a result file; a malformed, truncated or non-conforming one is reported and is None."""
    warn = warn or _warn
    path = Path(path)
    if not path.exists():
        return None
    try:
        return parse_result(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warn(f"malformed result {path} ({type(exc).__name__}: {exc}); treating it as missing")
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()
        why = first[0] if len(first) < 3 else f"{first[1]}: {first[2].strip()}"
        warn(f"malformed result {path} ({why}); treating it as missing")
    return None


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
    """FORCE reruns everything; ALLOW_STALE reuses stale results (loudly); RETRY_OOM reruns out-of-memory results.
    Read from the environment."""

    force: bool = False
    allow_stale: bool = False
    retry_oom: bool = False

    @classmethod
    def from_env(cls, env=None) -> ReusePolicy:
        return cls(
            force=knobs.flag("FORCE", False, env),
            allow_stale=knobs.flag("ALLOW_STALE", False, env),
            retry_oom=knobs.flag("RETRY_OOM", False, env),
        )


OOM_STATUSES = ("oom", "predicted_oom")


def is_oom(status: str) -> bool:
    """An out-of-memory outcome (measured or predicted): a result, kept unless RETRY_OOM=1."""
    return status.startswith(OOM_STATUSES)


def is_error(status: str) -> bool:
    """A status that is neither a measurement, nor a documented skip, nor out of memory: retried on the next run."""
    return not (status == "ok" or status.startswith("skipped") or is_oom(status))


def cell_state(existing: StoredResult | None, expected_hash: str) -> CellState:
    """Valid: same hash and a kept status (ok, skipped_*, oom); an error result is stale, so the next run retries it."""
    if existing is None:
        return CellState.MISSING
    if existing.config_hash == expected_hash and not is_error(existing.status):
        return CellState.VALID
    return CellState.STALE


def decide(existing: StoredResult | None, expected_hash: str, policy: ReusePolicy) -> Action:
    """The staleness policy of the spec, in one function."""
    if policy.force:
        return Action.RUN
    state = cell_state(existing, expected_hash)
    if state is CellState.VALID and policy.retry_oom and is_oom(existing.status):
        return Action.RUN
    if state is CellState.VALID:
        return Action.SKIP
    if state is CellState.STALE and policy.allow_stale and existing.status == "ok":
        return Action.REUSE_STALE
    return Action.RUN


def mark_stale(result: StoredResult, reason: str) -> dict:
    """Annotate a reused stale result so tables can flag the numbers that came from it."""
    return {**result.to_json(), "stale": {"reason": reason, "reused_utc": utc_now()}}


def _warn(message: str) -> None:
    print(f"longctx: warning: {message}", file=sys.stderr)
