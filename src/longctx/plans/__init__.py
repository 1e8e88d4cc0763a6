"""The experiment matrices as data: ``<profile>.json`` holds the facts, this module expands them into cells.

A cell is one result file. Its id is derived from its config, so two table rows that need the same
measurement (the main table's Lazy row and the R sweep's R=64 point) share one cell and one run.
Environment knobs of the original scripts (``WARMUP``, ``REPEATS``, ``RUN_SWEEPS``, ``RUN_ABLATIONS``,
``SWEEP_R_VALUES``/``SWEEP_SIGMA_VALUES``/``SWEEP_DELTA_VALUES``, ``RUN_QUALITY_HEURISTICS``,
``STUDIES``, ``ATTR_FUNCS``) reshape the matrix here, before anything runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from longctx.errors import UsageError

PROFILES = ("smoke", "timing", "full")
STUDIES = ("streaming", "attribution")
FULL_MODELS = ("EleutherAI/pythia-2.8b", "Qwen/Qwen3-8B")


@dataclass(frozen=True)
class Cell:
    """One row of one table: which result (``id``) it shows, under which labels."""

    id: str
    study: str
    group: str
    labels: dict
    config: dict


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


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise UsageError(f"{name}={value!r}: expected 0 or 1")


def _int_list(env: Mapping[str, str], name: str, default: list[int]) -> list[int]:
    value = env.get(name)
    if not value:
        return list(default)
    try:
        return [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"{name}={value!r}: expected whitespace-separated integers") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r}: expected an integer") from None
    if parsed < 0:
        raise UsageError(f"{name}={value!r}: must be >= 0")
    return parsed


def _read_json(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


def load_plan(profile: str, env: Mapping[str, str] | None = None) -> Plan:
    """Expand ``<profile>.json`` (with the environment knobs applied) into the plan's cells."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    env = os.environ if env is None else env
    data = _read_json(f"{profile}.json")
    studies = [s.strip() for s in env.get("STUDIES", ",".join(STUDIES)).split(",") if s.strip()]
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown:
        raise UsageError(f"STUDIES: unknown study {', '.join(unknown)}; choose from {', '.join(STUDIES)}")
    cells: list[Cell] = []
    if "streaming" in studies:
        cells += streaming_cells(data["streaming"], env)
    if "attribution" in studies:
        cells += attribution_cells(data["attribution"], env)
    return Plan(
        profile=profile,
        description=data["description"],
        assets=data.get("assets", {}),
        cells=cells,
        negative_results=_read_json("negative_results.json"),
        est_seconds={s: data[s].get("est_seconds_per_cell", 0) for s in STUDIES},
    )


# ---------------------------------------------------------------- streaming


def _study_base(spec: dict, env: Mapping[str, str], *keys: str) -> dict:
    """The knobs every cell of a study shares: model, dtype, device, WARMUP/REPEATS, plus ``keys``."""
    base = {
        "model": spec["model"],
        "dtype": spec["dtype"],
        "device": spec["device"],
        "warmup": _int(env, "WARMUP", spec["warmup"]),
        "repeats": max(1, _int(env, "REPEATS", spec["repeats"])),
        **{key: spec[key] for key in keys},
    }
    if spec.get("tokenizer"):
        base["tokenizer"] = spec["tokenizer"]
    return base


def _streaming_cell(base: dict, dataset: dict, ds_name: str, group: str, row: str, **knobs) -> Cell:
    config = {**base, "text_file": dataset["text_file"], "max_eval_tokens": dataset["max_eval_tokens"], **knobs}
    method = config["method"]
    parts = [method, f"S{config['n_sink']}", f"C{config['cap_total']}"]
    if method == "lazy":
        parts += [
            f"R{config['compress_every']}",
            f"sig{config.get('cache_slack', 0)}",
            f"del{config.get('max_drop', 0)}",
        ]
    if config.get("impl", "fast") != "fast":
        parts.append(config["impl"])
    if config.get("profile_maintenance"):
        parts.append("prof")
    cell_id = f"streaming/{ds_name}/{'-'.join(parts)}"
    labels = {"dataset": ds_name, "row": row, **{k: v for k, v in knobs.items() if k != "profile_maintenance"}}
    return Cell(id=cell_id, study="streaming", group=group, labels=labels, config=config)


def streaming_cells(spec: dict, env: Mapping[str, str]) -> list[Cell]:
    """Main table (both datasets), ablations, R/σ/δ sweeps and profiling (PG19)."""
    base = _study_base(spec, env, "cap_total")
    S, R, C = spec["sink"], spec["lazy_R"], spec["cap_total"]
    quality = _flag(env, "RUN_QUALITY_HEURISTICS", True)
    cells: list[Cell] = []
    recompute = {"method": "recompute", "n_sink": spec["baseline_sink"]}
    strict = {"method": "start_recent", "n_sink": S}
    lazy = {"method": "lazy", "n_sink": S, "compress_every": R, "cache_slack": 0, "max_drop": 0}
    for ds_name, dataset in spec["datasets"].items():
        cells += [
            _streaming_cell(base, dataset, ds_name, "main", "Baseline (recompute)", **recompute),
            _streaming_cell(base, dataset, ds_name, "main", "Start+Recent (strict)", **strict),
            _streaming_cell(base, dataset, ds_name, "main", f"Lazy (R={R})", **lazy),
        ]
    pg19 = spec["datasets"]["pg19"]
    if _flag(env, "RUN_ABLATIONS", True):
        cells += [
            _streaming_cell(base, pg19, "pg19", "ablations", f"Strict, S={S}", **strict),
            _streaming_cell(base, pg19, "pg19", "ablations", f"Lazy R={R}, S={S}", **lazy),
        ]
        if quality:
            cells += [
                _streaming_cell(
                    base, pg19, "pg19", "ablations", f"Lazy + slack σ={R - 1}", **{**lazy, "cache_slack": R - 1}
                ),
                _streaming_cell(
                    base, pg19, "pg19", "ablations", f"Lazy + max drop δ={R // 4}", **{**lazy, "max_drop": R // 4}
                ),
                _streaming_cell(
                    base,
                    pg19,
                    "pg19",
                    "ablations",
                    f"Lazy + σ={R - 1}, δ={R // 4}",
                    **{**lazy, "cache_slack": R - 1, "max_drop": R // 4},
                ),
            ]
        for sinks in spec["ablation_sinks"]:
            if sinks != S and sinks < C:
                cells += [
                    _streaming_cell(
                        base, pg19, "pg19", "ablations", f"Strict, S={sinks}", **{**strict, "n_sink": sinks}
                    ),
                    _streaming_cell(
                        base, pg19, "pg19", "ablations", f"Lazy R={R}, S={sinks}", **{**lazy, "n_sink": sinks}
                    ),
                ]
    if _flag(env, "RUN_SWEEPS", True):
        for value in _int_list(env, "SWEEP_R_VALUES", spec["sweep_R"]):
            cells.append(
                _streaming_cell(base, pg19, "pg19", "sweep_R", f"R={value}", **{**lazy, "compress_every": value})
            )
        if quality:
            for value in _int_list(env, "SWEEP_SIGMA_VALUES", spec["sweep_sigma"]):
                cells.append(
                    _streaming_cell(base, pg19, "pg19", "sweep_sigma", f"σ={value}", **{**lazy, "cache_slack": value})
                )
            for value in _int_list(env, "SWEEP_DELTA_VALUES", spec["sweep_delta"]):
                cells.append(
                    _streaming_cell(base, pg19, "pg19", "sweep_delta", f"δ={value}", **{**lazy, "max_drop": value})
                )
    for impl in ("fast", "plain"):
        for name, knobs in (("Start+Recent", strict), (f"Lazy (R={R})", lazy)):
            cells.append(
                _streaming_cell(
                    base,
                    pg19,
                    "pg19",
                    "profiling",
                    f"{name}, {impl} cache",
                    **{**knobs, "impl": impl, "profile_maintenance": True},
                )
            )
    return cells


# ---------------------------------------------------------------- attribution


def attribution_cells(spec: dict, env: Mapping[str, str]) -> list[Cell]:
    """The time curve: outputs grow at a fixed prompt, prompts grow at a fixed output, per method."""
    base = _study_base(spec, env, "chunk_tokens", "sink_chunk_tokens", "mlm_model")
    grids = [("time_curve_output", spec["fixed_prompt"], g) for g in spec["output_lengths"]]
    grids += [("time_curve_prompt", p, spec["fixed_output"]) for p in spec["prompt_lengths"]]
    methods = [m.strip() for m in env.get("ATTR_FUNCS", ",".join(spec["methods"])).split(",") if m.strip()]
    unknown = sorted(set(methods) - set(spec["methods"]))
    if unknown:
        raise UsageError(f"ATTR_FUNCS: unknown method {', '.join(unknown)}; choose from {', '.join(spec['methods'])}")
    cells = []
    for method in methods:
        for group, prompt_len, output_len in grids:
            config = {**base, "method": method, "prompt_len": prompt_len, "output_len": output_len}
            cells.append(
                Cell(
                    id=f"attribution/{method}/P{prompt_len}-G{output_len}",
                    study="attribution",
                    group=group,
                    labels={"method": method, "prompt_len": prompt_len, "output_len": output_len},
                    config=config,
                )
            )
    return cells


# ---------------------------------------------------------------- profile selection


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
    requested = requested or env.get("PROFILE") or None
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
