"""Fake result JSON for the paper tests (tables, figures, build), and a check that the fakes match the store.

The fakes are shaped like real result files (streaming_eval, attribution_time: the typed metrics models) so
the paper code is exercised on the same fields it reads from real results.
"""

from __future__ import annotations

import json
from pathlib import Path

from longctx.plan import Plan, load_plan
from longctx.results import SCHEMA_VERSION, read_result
from longctx.stats import summarize
from longctx.study import Cell

IDENTITY = {
    "gpu": {"available": False, "reason": "test machine", "count": 0, "devices": []},
    "torch_stack": {"torch": "2.13.0", "cuda": None, "cudnn": None},
    "python": "3.11.0",
    "platform": "Linux-test",
    "cpu_model": "Test CPU",
    "packages": {"transformers": "5.23.0"},
}
# Per-method TPOT (ms) and PPL of the fake streaming results.
STREAMING = {"recompute": (12.5, 19.7614), "start_recent": (5.0, 20.1812), "lazy": (4.0, 20.3187)}
ATTR_SECONDS = {"ifr_all_positions": 0.5, "ifr_multi_hop": 0.01}


def peak_summary(allocated: int | None) -> dict:
    values = [] if allocated is None else [allocated]
    return {"source": "test allocator", "allocated_bytes": summarize(values), "reserved_bytes": summarize(values)}


def fake_result(config: dict, study: str, kind: str, metrics: dict, **extra) -> dict:
    """A result dict with every required field; ``extra`` overrides (status, stale, identity_hash, ...)."""
    identity_hash = extra.pop("identity_hash", "fp-A")
    result = {
        "schema_version": SCHEMA_VERSION,
        "study": study,
        "kind": kind,
        "status": "ok",
        "config": config,
        "inputs": {"model": {"model_id": config.get("model")}, "data": {}},
        "fingerprint": {"identity": IDENTITY, "identity_hash": identity_hash, "observed": {}},
        "provenance": {"code_version": {"git_commit": "0123456789abcdef", "git_dirty": False}},
        "config_hash": "hash-" + json.dumps(config, sort_keys=True)[:20],
        "metrics": metrics,
        "runs": [],
    }
    result.update(extra)
    return result


def streaming_result(cell: Cell, tpot_values: list[float] | None = None, ppl: float | None = None, **extra):
    method = cell.config["method"]
    base_tpot, base_ppl = STREAMING[method]
    tpot_values = tpot_values or [base_tpot]
    cap = cell.config["cap_total"]
    trace = [[0, cap], [5, cap + 3], [8, cap]] if method == "lazy" else [[0, cap], [8, cap]]
    metrics = {
        "ppl": base_ppl if ppl is None else ppl,
        "nll_mean": 3.0,
        "scored_tokens": 199,
        "tpot_ms": summarize(tpot_values),
        **{name: summarize([1.0]) for name in ("prefill_ms", "decode_ms", "tokens_per_s", "first_token_ms")},
        "total_ms": summarize([1.0]),
        "peak_mem": peak_summary(3 * 2**29),
        "cache": {
            "decode_steps": 100,
            "prune_events": 7,
            "rebase_events": 0,
            "bytes_moved": 204800,
            "bytes_moved_per_step": 2048.0,
            "max_attention_len": cap + 1,
            "max_query_position": cap,
            "maintenance_ms": summarize([1.5]),
            "forward_ms": summarize([13.5]),
            "kv_len_trace": trace,
        },
        "budget": {
            "window": cap - cell.config["n_sink"],
            "cap_total": cap,
            "cap_soft": cap,
            "capacity": cap,
            "recent": cap - cell.config["n_sink"],
            "prefill_len": cap,
            "max_attention_bound": cap + 1,
        },
    }
    return fake_result(cell.config, "streaming", "streaming_eval", metrics, **extra)


def attribution_result(cell: Cell, status: str = "ok", seconds: float | None = None, **extra) -> dict:
    length = cell.config["output_len"] + cell.config["prompt_len"]
    seconds = ATTR_SECONDS.get(cell.config["method"], 0.1) * length if seconds is None else seconds
    ok = status == "ok"
    metrics = {
        "time_sec": summarize([seconds] if ok else []),
        "peak_mem": peak_summary(length * 2**20 if ok else None),
        "lengths": None,
        "statuses": [status],
    }
    return fake_result(cell.config, "attribution", "attribution_time", metrics, status=status, **extra)


def result_for(cell: Cell) -> dict:
    if cell.study == "streaming":
        return streaming_result(cell)
    status = "skipped_model_ctx" if cell.config["prompt_len"] > 1000 else "ok"
    return attribution_result(cell, status)


def write(root: Path, plan: Plan, cell: Cell, result: dict | str) -> Path:
    """Store ``result`` (a dict, or raw text for malformed files) where the runner would."""
    path = Path(root) / plan.profile / f"{cell.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result if isinstance(result, str) else json.dumps(result), encoding="utf-8")
    return path


def smoke_plan() -> Plan:
    """The real smoke plan, independent of the caller's environment knobs."""
    return load_plan("smoke", env={})


def write_all(root: Path, plan: Plan) -> None:
    for cell in plan.unique_cells():
        write(root, plan, cell, result_for(cell))


def test_fakes_are_valid_results(tmp_path):
    plan = smoke_plan()
    write_all(tmp_path, plan)
    for cell in plan.unique_cells():
        result = read_result(tmp_path / plan.profile / f"{cell.id}.json", warn=pytest_fail)
        assert result is not None and result.config == cell.config


def pytest_fail(message: str) -> None:
    raise AssertionError(message)
