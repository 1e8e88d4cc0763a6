"""Plans: a profile's experiment matrix (``plans/<profile>.json``) expanded into cells by each study.

A cell is one result file. Its id is derived from its config by the study, so two table rows that need
the same measurement (the main table's Lazy row and the R sweep's R=64 point) share one cell and one run.
The environment knobs ``STUDIES``, ``WARMUP`` and ``REPEATS`` apply here; each study reads its own
(``RUN_SWEEPS``, ``ATTR_FUNCS``, ...) in its ``expand``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from longctx import knobs
from longctx.errors import UsageError
from longctx.study import Cell

PROFILES = ("smoke", "timing", "full")
FULL_MODELS = ("EleutherAI/pythia-2.8b", "Qwen/Qwen3-8B")


@dataclass
class Plan:
    profile: str
    description: str
    assets: dict
    cells: list[Cell]
    negative_results: list[dict] = field(default_factory=list)
    est_seconds: dict = field(default_factory=dict)  # study -> rough seconds per cell on the target machine

    def unique_cells(self) -> list[Cell]:
        """One cell per id, in plan order (the runner runs each measurement once)."""
        seen: dict[str, Cell] = {}
        for cell in self.cells:
            seen.setdefault(cell.id, cell)
        return list(seen.values())

    def groups(self) -> dict[str, list[Cell]]:
        out: dict[str, list[Cell]] = {}
        for cell in self.cells:
            out.setdefault(cell.group, []).append(cell)
        return out


def plan_data(name: str) -> Any:
    """A JSON file of the ``longctx.plans`` data package."""
    return json.loads(resources.files("longctx.plans").joinpath(name).read_text(encoding="utf-8"))


def shared_settings(spec: dict, env: Mapping[str, str], *keys: str) -> dict:
    """The settings every cell of a study shares: model, dtype, device, WARMUP/REPEATS, plus ``keys``."""
    base = {
        "model": spec["model"],
        "dtype": spec["dtype"],
        "device": spec["device"],
        "warmup": knobs.integer("WARMUP", spec["warmup"], env),
        "repeats": knobs.integer("REPEATS", spec["repeats"], env, minimum=1),
        **{key: spec[key] for key in keys},
    }
    if spec.get("tokenizer"):
        base["tokenizer"] = spec["tokenizer"]
    return base


def load_plan(profile: str, env: Mapping[str, str] | None = None) -> Plan:
    """Expand ``<profile>.json`` (with the environment knobs applied) into the plan's cells."""
    from longctx.studies import STUDIES

    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    env = os.environ if env is None else env
    data = plan_data(f"{profile}.json")
    cells: list[Cell] = []
    for name in knobs.names("STUDIES", tuple(STUDIES), env):
        cells += STUDIES[name].expand(data[name], env)
    return Plan(
        profile=profile,
        description=data["description"],
        assets=data.get("assets", {}),
        cells=cells,
        negative_results=plan_data("negative_results.json"),
        est_seconds={name: data[name].get("est_seconds_per_cell", 0) for name in STUDIES},
    )


def _gpu_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _full_assets_present() -> tuple[bool, str]:
    from huggingface_hub import try_to_load_from_cache

    missing = [m for m in FULL_MODELS if not isinstance(try_to_load_from_cache(m, "config.json"), str)]
    if missing:
        return False, f"pinned checkpoints not in the offline cache ({', '.join(missing)})"
    return True, "pinned checkpoints found in the offline cache"


def select_profile(requested: str | None = None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Pick the profile: explicit (argument or PROFILE) wins; else full with assets + GPU, else smoke."""
    env = os.environ if env is None else env
    requested = requested or knobs.text("PROFILE", None, env)
    if requested:
        if requested not in PROFILES:
            raise UsageError(f"unknown profile {requested!r}; choose one of {', '.join(PROFILES)}")
        return requested, "requested explicitly"
    gpu = _gpu_visible()
    assets_ok, why = _full_assets_present()
    if gpu and assets_ok:
        return "full", f"a GPU is visible and {why}"
    reasons = [] if gpu else ["no GPU is visible"]
    if not assets_ok:
        reasons.append(why)
    return "smoke", "; ".join(reasons) + " -> smoke profile (tiny models, CPU)"
