"""One attribution time cell (method × prompt length P × output length G): inputs, measurement, result.

The measurement runs in a fresh worker process (``longctx.attribution.worker``): a fatal CUDA error or an
OOM kill cannot spoil the next cell, and peak memory belongs to the cell alone. ``describe_inputs`` and
``run_cell`` are what the study (``longctx.attribution.study``) gives the plan runner.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
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
    the repeats it did not report. The worker's stderr is appended to ``log_path`` when given.
    """
    repeats = list(range(cfg.repeats))
    identities = {r: base_row(cfg.method, cfg.prompt_len, cfg.output_len, r) for r in repeats}
    if cfg.prompt_len <= 0:
        return [status_row(identities[r], SKIPPED_NONPOSITIVE) for r in repeats]
    with tempfile.TemporaryDirectory(prefix="longctx-cell-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "rows.jsonl"
        job.write_text(json.dumps(dataclasses.asdict(cfg)))
        log = Path(log_path) if log_path else Path(tmp) / "worker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as err:
            proc = subprocess.run(
                [sys.executable, "-m", "longctx.attribution.worker", str(job), str(out)], stderr=err, check=False
            )
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
        done = {row["repeat"] for row in rows}
        if len(done) < len(repeats):
            why = _crash_message(proc.returncode, log)
            rows += [status_row(identities[r], f"runtime_error: {why}", why) for r in repeats if r not in done]
    return sorted(rows, key=lambda row: row["repeat"])


def _crash_message(returncode: int, log: Path) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    signal = f" (killed by signal {-returncode}; possibly out of memory)" if returncode < 0 else ""
    return f"worker exited with code {returncode}{signal}: {lines[-1] if lines else 'no output'}"


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
