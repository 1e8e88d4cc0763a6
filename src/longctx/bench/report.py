"""Writing a benchmark's result: the same result JSON as every cell, named after the machine it ran on."""

from __future__ import annotations

import re
from pathlib import Path

from longctx.provenance import fingerprint
from longctx.results import atomic_write_json, build_result


def machine_slug(fp: dict) -> str:
    """``nvidia-h100-80gb-hbm3`` for the first GPU, ``cpu`` without one: the suffix of bench result files."""
    devices = fp["identity"]["gpu"].get("devices") or []
    name = devices[0].get("name") if devices else None
    if not isinstance(name, str):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_bench(name: str, config: dict, metrics: dict, started_utc: str, out_dir: str | Path) -> Path:
    fp = fingerprint()
    result = build_result(
        study="bench",
        kind=f"bench_{name}",
        config=config,
        inputs={"model": {"model_id": config.get("arch")}},
        metrics=metrics,
        runs=[],
        started_utc=started_utc,
        fp=fp,
    )
    path = Path(out_dir) / f"{name}_{machine_slug(fp)}.json"
    atomic_write_json(path, result)
    return path
