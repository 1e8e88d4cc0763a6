"""One attribution time cell (method × prompt length P × output length G): inputs, measurement, result.

The measurement runs in a fresh worker process (``longctx.attribution.worker``): a fatal CUDA error or an
OOM kill cannot spoil the next cell, and peak memory belongs to the cell alone. ``describe_inputs`` and
``run_cell`` are what the study (``longctx.attribution.study``) gives the plan runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path

from longctx.attribution.config import TimeCellConfig
from longctx.attribution.inputs import AttributionInputs, build_length_controlled_inputs
from longctx.attribution.metrics import SKIPPED_NONPOSITIVE, base_row, cell_metrics, overall_status, status_row
from longctx.data.tokens import token_ids_sha256


def load_sample(cfg: TimeCellConfig):
    """The RULER sample the prompt is cut from (generated from a seed, or a real JSONL)."""
    from longctx.data.ruler import load_ruler_sample

    return load_ruler_sample(cfg.ruler_file, cfg.ruler_seed)


def cell_inputs(cfg: TimeCellConfig, tokenizer, text: str) -> AttributionInputs:
    """The cell's inputs as its protocol builds them: the original's construction (reference: P tiled ids
    decoded, " " + prompt in the wrapper, P-1 user tokens with Qwen3) or exactly P user ids (efficient)."""
    from longctx.attribution.reference_inputs import reference_inputs_to_length

    build = reference_inputs_to_length if cfg.protocol == "reference" else build_length_controlled_inputs
    return build(tokenizer, text, cfg.prompt_len, cfg.target_text, cfg.output_len)


def describe_inputs(cfg: TimeCellConfig) -> dict:
    """Cheap description of what the cell runs on (no weights loaded): revisions and the data's token hash."""
    from longctx.models import describe_model, revision_of, tokenizer_for

    model = describe_model(
        cfg.model, tokenizer=cfg.tokenizer, dtype=cfg.dtype, device_map=cfg.device_map, seed=cfg.seed
    )
    mlm = getattr(cfg.options, "mlm_model", None)
    if mlm:
        model["mlm_model"] = {"id": mlm, "revision": revision_of(mlm, cfg.seed)}
    sample = load_sample(cfg)
    data = {"source": sample.source, "sample_id": sample.sample_id, "sha256_text": sample.sha256}
    if cfg.prompt_len > 0:
        inputs = cell_inputs(cfg, tokenizer_for(cfg.model, cfg.tokenizer), sample.text)
        data.update(n_tokens=inputs.n_user, token_ids_sha256=token_ids_sha256(inputs.user_ids))
    return {"model": model, "data": data}


def measure_cell(cfg: TimeCellConfig, log_path: str | Path | None = None) -> list[dict]:
    """One row per repeat, measured in a fresh worker process (warm-up included).

    Nonpositive prompts are skipped without a worker; a worker that dies leaves runtime_error rows for
    the repeats it did not report. The worker's stderr is appended to ``log_path`` when given. The job goes to
    the worker through its stdin and the rows come back through a pipe, so nothing is left on disk if either
    side is killed; the worker dies with this process (``longctx.executors.process``).
    """
    repeats = list(range(cfg.repeats))
    identities = {r: base_row(cfg.method, cfg.prompt_len, cfg.output_len, r) for r in repeats}
    if cfg.prompt_len <= 0:
        return [status_row(identities[r], SKIPPED_NONPOSITIVE) for r in repeats]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a+", encoding="utf-8") if log_path else tempfile.TemporaryFile("w+") as err:
        returncode, rows = _run_worker(cfg, err)
        done = {row["repeat"] for row in rows}
        if len(done) < len(repeats):
            err.seek(0)
            why = _crash_message(returncode, err.read())
            rows += [status_row(identities[r], f"runtime_error: {why}", why) for r in repeats if r not in done]
    return sorted(rows, key=lambda row: row["repeat"])


def _run_worker(cfg: TimeCellConfig, err) -> tuple[int | None, list[dict]]:
    """Run the worker on ``cfg``; its exit code and the rows it reported (a half-written last row is dropped)."""
    from longctx.executors.process import python_module, spawn, stop

    rows_read, rows_write = os.pipe()
    try:
        worker = python_module("longctx.attribution.worker", "/dev/stdin", f"/dev/fd/{rows_write}")
        proc = spawn(worker, stdin=subprocess.PIPE, stderr=err, pass_fds=(rows_write,), text=True)
    finally:
        os.close(rows_write)
    rows = []
    try:
        with os.fdopen(rows_read, encoding="utf-8") as pipe:
            with contextlib.suppress(BrokenPipeError):  # a worker that died at start: its exit code says why
                proc.stdin.write(json.dumps(dataclasses.asdict(cfg)))
                proc.stdin.close()
            for line in pipe:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return proc.wait(), rows
    finally:
        stop(proc)


def _crash_message(returncode: int | None, log_text: str) -> str:
    lines = [line for line in log_text.splitlines() if line.strip()]
    killed = f" (killed by signal {-returncode}; possibly out of memory)" if returncode and returncode < 0 else ""
    return f"worker exited with code {returncode}{killed}: {lines[-1] if lines else 'no output'}"


def run_cell(cfg: TimeCellConfig, inputs: dict, out_path: str | Path) -> dict:
    """Measure every repeat of the cell, write its result JSON atomically and return it."""
    from longctx.provenance import observed_now, utc_now
    from longctx.results import atomic_write_json, build_result

    started, before = utc_now(), observed_now()
    rows = measure_cell(cfg, log_path=Path(out_path).with_suffix(".worker.log"))
    result = build_result(
        study="attribution",
        kind="attribution_time",
        config=dataclasses.asdict(cfg),
        inputs=inputs,
        metrics=cell_metrics(rows),
        runs=rows,
        started_utc=started,
        status=overall_status(rows),
        observed_before=before,
    )
    atomic_write_json(out_path, result)
    return result
