"""``python -m longctx.attribution.worker JOB OUT``: one attribution cell's warm-up and repeats, in a fresh process.

JOB is ``{"config": AttributionTimeConfig kwargs, "repeats": [indices]}``; one JSON row per repeat is appended
to OUT (flushed) as soon as it is measured, so a crash keeps the rows already done. Timing is wall clock
around the method call only, devices synchronized; peak memory is reset after freeing the previous run.
"""

from __future__ import annotations

import gc
import json
import re
import resource
import sys
import time
from pathlib import Path

import torch

from longctx.attribution.base import AttributionInputs, build_length_controlled_inputs, get_method
from longctx.attribution.cell import STATUS_OK, AttributionTimeConfig, base_row, one_line, status_row

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of one method call: per CUDA device (allocated, reserved) or, on CPU, the RSS high-water
    mark above the RSS before the call (Linux clear_refs resets the mark per run; without it, ru_maxrss)."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        for d in self.devices:
            with torch.cuda.device(d):
                torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(d)
        self.before = {d: torch.cuda.memory_allocated(d) for d in self.devices}
        self.rss_before = _proc_kib("VmRSS")
        try:
            CLEAR_REFS.write_text("5")
            self.source = "cpu_rss_high_water_mark"
        except OSError:
            self.source, self.rss_before = "cpu_ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc) -> None:
        sync()

    def record(self) -> dict:
        if self.devices:
            per = {
                f"cuda:{d}": {
                    "allocated": torch.cuda.max_memory_allocated(d),
                    "reserved": torch.cuda.max_memory_reserved(d),
                    "allocated_before": self.before[d],
                }
                for d in self.devices
            }
            return {
                "peak_mem_allocated_bytes": sum(v["allocated"] for v in per.values()),
                "peak_mem_reserved_bytes": sum(v["reserved"] for v in per.values()),
                "mem_before_allocated_bytes": sum(self.before.values()),
                "peak_mem_devices": per,
                "peak_mem_source": "torch.cuda.max_memory_allocated/reserved",
            }
        peak = _proc_kib("VmHWM") if self.source == "cpu_rss_high_water_mark" else None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if peak is None else peak
        above = max(0, peak - self.rss_before) * 1024
        return {
            "peak_mem_allocated_bytes": above,
            "peak_mem_reserved_bytes": above,
            "mem_before_allocated_bytes": self.rss_before * 1024,
            "peak_mem_devices": {"cpu": {"allocated": above, "reserved": above}},
            "peak_mem_source": self.source,
        }


def sync() -> None:
    if torch.cuda.is_available():
        for d in range(torch.cuda.device_count()):
            torch.cuda.synchronize(d)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def failure_status(exc: BaseException) -> str:
    return "oom" if is_oom(exc) else f"runtime_error: {type(exc).__name__}: {one_line(str(exc))}"


def max_positions(model_spec: str) -> int | None:
    """The model's context limit from its config (no weights loaded)."""
    from transformers import AutoConfig

    from longctx.architectures import make_config
    from longctx.models import RANDOM_PREFIX, resolve_model_dir

    if model_spec.startswith(RANDOM_PREFIX):
        config = make_config(model_spec[len(RANDOM_PREFIX) :])
    else:
        config = AutoConfig.from_pretrained(resolve_model_dir(model_spec)[0], local_files_only=True)
    return getattr(config, "max_position_embeddings", None)


def prepare(cfg: AttributionTimeConfig):
    """Inputs, method and model for the cell; returns (inputs, None) when the cell exceeds the context."""
    from longctx.attribution.cell import load_sample_tokenizer
    from longctx.models import load_causal_lm

    tokenizer, sample = load_sample_tokenizer(cfg)
    inputs = build_length_controlled_inputs(tokenizer, sample.text, cfg.prompt_len, cfg.target_text, cfg.output_len)
    limit = max_positions(cfg.model)
    if limit is not None and inputs.total > limit:
        return inputs, None
    method = get_method(cfg.method)
    lm = load_causal_lm(
        cfg.model, dtype=cfg.dtype, device=cfg.device, cuda=cfg.cuda, tokenizer=cfg.tokenizer, seed=cfg.seed
    )
    return inputs, (method, lm)


def measure_once(method, lm, inputs: AttributionInputs, cfg: AttributionTimeConfig) -> dict:
    """Time and peak memory of one method call."""
    with PeakMemory() as mem:
        sync()
        start = time.perf_counter()
        result = method(lm.model, lm.tokenizer, inputs, cfg.attribution_config())
        sync()
        elapsed = time.perf_counter() - start
    row = {"status": STATUS_OK, "time_sec": elapsed, **mem.record(), "method_details": result.details}
    del result
    return row


def _lengths(inputs: AttributionInputs) -> dict:
    counts = inputs.describe()
    return {
        "lengths": counts,
        "actual_user_prompt": counts["user_prompt"],
        "actual_formatted_prompt": counts["formatted_prompt"],
        "actual_generation": counts["generation"],
        "actual_total": counts["total"],
        "chat_template_used": counts["chat_template_used"],
    }


def run_job(cfg: AttributionTimeConfig, repeats: list[int], emit) -> None:
    """Warm-up, then each repeat; ``emit(row)`` is called once per repeat index."""
    try:
        inputs, ready = prepare(cfg)
    except Exception as exc:  # noqa: BLE001 - whatever stops the cell from starting is its init_error
        for r in repeats:
            emit(status_row(cfg, r, f"init_error: {type(exc).__name__}: {exc}", str(exc)))
        return
    extra = {**_lengths(inputs), "model": cfg.model, "dtype": cfg.dtype}
    if ready is None:
        for r in repeats:
            emit({**status_row(cfg, r, "skipped_model_ctx"), **extra})
        return
    method, lm = ready
    warm_failure = None
    for _ in range(cfg.warmup):
        try:
            measure_once(method, lm, inputs, cfg)
        except Exception as exc:  # noqa: BLE001 - any failure of the method is a measured status
            warm_failure = exc
            break
    for r in repeats:
        row = {**base_row(cfg, r), **extra}
        try:
            if warm_failure is not None:
                raise warm_failure
            row.update(measure_once(method, lm, inputs, cfg))
        except Exception as exc:  # noqa: BLE001 - any failure of the method is a measured status
            row.update(status=failure_status(exc), time_sec=None, error=f"{type(exc).__name__}: {exc}")
        gc.collect()
        emit(row)


def main(argv: list[str] | None = None) -> int:
    job_path, out_path = argv if argv is not None else sys.argv[1:]
    job = json.loads(Path(job_path).read_text())
    cfg = AttributionTimeConfig(**job["config"])
    with Path(out_path).open("a", encoding="utf-8") as out:

        def emit(row: dict) -> None:
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()

        run_job(cfg, job["repeats"], emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
