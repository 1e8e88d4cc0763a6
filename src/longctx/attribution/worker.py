"""``python -m longctx.attribution.worker JOB OUT``: one attribution cell's warm-up and repeats, in a fresh process.

JOB is a ``TimeCellConfig`` as JSON; one JSON row per repeat is appended to OUT (flushed) as soon as it is
measured, so a crash keeps the rows already done. Timing is wall clock around the method call only,
devices synchronized; peak memory comes from ``longctx.measure.memory.PeakMemory`` (on CPU: one extra
untimed call under the exact tensor tracker, after the warm-up).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import torch

from longctx.attribution.cell import cell_inputs, load_sample
from longctx.attribution.config import TimeCellConfig
from longctx.attribution.inputs import AttributionInputs
from longctx.attribution.metrics import SKIPPED_CONTEXT, STATUS_OK, base_row, one_line, status_row
from longctx.measure.memory import PeakMemory, synchronize


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def failure_status(exc: BaseException) -> str:
    return "oom" if is_oom(exc) else f"runtime_error: {type(exc).__name__}: {one_line(str(exc))}"


def prepare(cfg: TimeCellConfig):
    """Inputs and model for the cell; returns (inputs, None) when the cell exceeds the model's context."""
    from longctx.models import context_limit, tokenizer_for

    tokenizer = tokenizer_for(cfg.model, cfg.tokenizer)
    text = load_sample(cfg).text
    inputs = cell_inputs(cfg, tokenizer, text)
    limit = context_limit(cfg.model)
    if limit is not None and inputs.total > limit:
        return inputs, None
    lm = cfg.load_model()
    return inputs, lm


def call_method(lm, inputs: AttributionInputs, cfg: TimeCellConfig):
    """The cell's method on its inputs: what the warm-up, the exact memory pass and each timed repeat call."""
    return cfg.spec.runner(cfg.protocol)(lm.model, lm.tokenizer, inputs, cfg.options)


def measure_once(lm, inputs: AttributionInputs, cfg: TimeCellConfig, memory: PeakMemory) -> dict:
    """Time and peak memory of one method call (on CPU the peak of ``memory``'s exact pass)."""
    with memory.timed():
        synchronize()
        start = time.perf_counter()
        result = call_method(lm, inputs, cfg)
        synchronize()
        elapsed = time.perf_counter() - start
    row = {"status": STATUS_OK, "time_sec": elapsed, "peak_mem": memory.record(), "method_details": result.details}
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
        "input_construction": inputs.details.get("construction"),
    }


def run_job(cfg: TimeCellConfig, emit) -> None:
    """Warm-up, then each repeat; ``emit(row)`` is called once per repeat index."""
    identities = [base_row(cfg.method, cfg.prompt_len, cfg.output_len, r) for r in range(cfg.repeats)]
    try:
        inputs, lm = prepare(cfg)
    except Exception as exc:  # noqa: BLE001 - whatever stops the cell from starting is its init_error
        for identity in identities:
            emit(status_row(identity, f"init_error: {type(exc).__name__}: {exc}", str(exc)))
        return
    extra = {**_lengths(inputs), "model": cfg.model, "dtype": cfg.dtype, "protocol": cfg.protocol}
    extra["attn_implementation"] = getattr(lm.model.config, "_attn_implementation", None) if lm else None
    if lm is None:
        for identity in identities:
            emit({**status_row(identity, SKIPPED_CONTEXT), **extra})
        return
    warm_failure = None
    if cfg.protocol == "reference" and cfg.spec.reference_setup is not None:
        cfg.spec.reference_setup(lm.model, cfg.options)
    memory = PeakMemory(cuda=next(lm.model.parameters()).is_cuda, baseline=lm.model)
    try:
        for _ in range(cfg.warmup):
            call_method(lm, inputs, cfg)
        memory.exact_pass(lambda: call_method(lm, inputs, cfg))  # CPU only: untimed, after the warm-up
    except Exception as exc:  # noqa: BLE001 - any failure of the method is a measured status
        warm_failure = exc
    for identity in identities:
        row = {**identity, **extra}
        try:
            if warm_failure is not None:
                raise warm_failure
            row.update(measure_once(lm, inputs, cfg, memory))
        except Exception as exc:  # noqa: BLE001 - any failure of the method is a measured status
            row.update(status=failure_status(exc), time_sec=None, error=f"{type(exc).__name__}: {exc}")
        gc.collect()
        emit(row)


def main(argv: list[str] | None = None) -> int:
    job_path, out_path = argv if argv is not None else sys.argv[1:]
    cfg = TimeCellConfig(**json.loads(Path(job_path).read_text()))
    with Path(out_path).open("a", encoding="utf-8") as out:

        def emit(row: dict) -> None:
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()

        run_job(cfg, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
