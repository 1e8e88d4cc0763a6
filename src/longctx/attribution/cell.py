"""One attribution time cell (method × prompt length P × output length G): config, inputs, measurement, result.

The measurement itself runs in a fresh worker process (``longctx.attribution.worker``): a fatal CUDA error
or an OOM kill cannot spoil the next cell, and the CPU RSS high-water mark belongs to the cell alone. The
time-curve CLI and the plan runner share ``measure_cell``; ``run_cell`` is the plan's entry point
(``docs/INTERFACES.md``: CONFIG_CLASS, describe_inputs, run_cell).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from longctx.attribution.base import DEFAULT_TARGET_TEXT, METHOD_NAMES, AttributionConfig, exact_length_text
from longctx.errors import UsageError

STATUS_OK = "ok"
SKIPPED_NONPOSITIVE = "skipped_nonpositive_input"
MAX_MESSAGE = 500


@dataclass(frozen=True)
class AttributionTimeConfig:
    """Every knob of one time cell (recorded as the result's ``config``)."""

    method: str
    prompt_len: int  # P_target: user-prompt tokens
    output_len: int  # G_target: output tokens before the EOS
    model: str
    tokenizer: str | None = None  # needed for random:<arch> models
    mlm_model: str | None = None
    dtype: str = "bfloat16"
    device: str = "auto"
    cuda: str | None = None  # "0,1": balanced device map over these GPUs
    warmup: int = 1
    repeats: int = 3
    chunk_tokens: int = 128
    sink_chunk_tokens: int = 32
    n_steps: int = 20
    ig_method: str = "gausslegendre"
    ig_batch_size: int | None = None
    attnlrp_form: str = "span"
    n_hops: int = 1
    mlm_overflow: str = "error"
    target_text: str = DEFAULT_TARGET_TEXT
    ruler_file: str | None = None
    ruler_seed: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHOD_NAMES:
            raise UsageError(f"unknown attribution method {self.method!r}; choose from {', '.join(METHOD_NAMES)}")
        if self.output_len <= 0 or self.repeats <= 0 or self.warmup < 0:
            raise UsageError("output length and repeats must be positive and warmup non-negative")
        if self.chunk_tokens <= 0 or self.sink_chunk_tokens <= 0:
            raise UsageError("--chunk-tokens and --sink-chunk-tokens must be positive")

    def attribution_config(self) -> AttributionConfig:
        return AttributionConfig(
            method=self.method,
            n_steps=self.n_steps,
            ig_method=self.ig_method,
            ig_batch_size=self.ig_batch_size,
            attnlrp_form=self.attnlrp_form,
            chunk_tokens=self.chunk_tokens,
            sink_chunk_tokens=self.sink_chunk_tokens,
            n_hops=self.n_hops,
            mlm_model=self.mlm_model,
            mlm_overflow=self.mlm_overflow,
            seed=self.seed,
        )


CONFIG_CLASS = AttributionTimeConfig


def base_row(cfg: AttributionTimeConfig, repeat: int) -> dict:
    """The identifying fields of one run row (targets, repeat) before anything is measured."""
    return {
        "attr_func": cfg.method,
        "input_len": cfg.prompt_len,
        "output_len": cfg.output_len,
        "total_len": cfg.prompt_len + cfg.output_len,
        "repeat": repeat,
    }


def status_row(cfg: AttributionTimeConfig, repeat: int, status: str, error: str | None = None) -> dict:
    """A row for a run that measured nothing (skipped, failed to start, crashed)."""
    row = {**base_row(cfg, repeat), "status": one_line(status), "time_sec": None}
    if error:
        row["error"] = error
    return row


def one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _model_revision(spec: str, seed: int) -> str:
    from longctx.models import RANDOM_PREFIX, resolve_model_dir

    return f"random-init:seed={seed}" if spec.startswith(RANDOM_PREFIX) else resolve_model_dir(spec)[1]


@functools.cache
def _tokenizer(spec: str):
    """Tokenizer by model spec, loaded once per process (a plan describes many cells of one model)."""
    from longctx.models import RANDOM_PREFIX, load_tokenizer, resolve_model_dir

    if spec.startswith(RANDOM_PREFIX):
        raise UsageError(f"--model {spec} has random weights; pass --tokenizer")
    return load_tokenizer(resolve_model_dir(spec)[0])


def load_sample_tokenizer(cfg: AttributionTimeConfig):
    """The tokenizer the cell uses (its own for random-weight models) and the RULER sample."""
    from longctx.data.ruler import load_ruler_sample

    return _tokenizer(cfg.tokenizer or cfg.model), load_ruler_sample(cfg.ruler_file, cfg.ruler_seed)


def describe_inputs(cfg: AttributionTimeConfig) -> dict:
    """Cheap description of what the cell runs on (no weights loaded): revisions and the data's token hash."""
    tokenizer, sample = load_sample_tokenizer(cfg)
    model = {
        "model_id": cfg.model,
        "model_revision": _model_revision(cfg.model, cfg.seed),
        "tokenizer": cfg.tokenizer or cfg.model,
        "tokenizer_revision": _model_revision(cfg.tokenizer or cfg.model, cfg.seed),
        "dtype": cfg.dtype,
        "device_map": "balanced" if cfg.cuda and "," in cfg.cuda else cfg.device,
    }
    if cfg.mlm_model and cfg.method == "perturbation_REAGENT":
        model["mlm_model"] = {"id": cfg.mlm_model, "revision": _model_revision(cfg.mlm_model, cfg.seed)}
    data = {"source": sample.source, "sample_id": sample.sample_id, "sha256_text": sample.sha256}
    if cfg.prompt_len > 0:
        ids = exact_length_text(tokenizer, sample.text, cfg.prompt_len)[1]
        data["n_tokens"] = len(ids)
        data["token_ids_sha256"] = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
    return {"model": model, "data": data}


def measure_cell(cfg: AttributionTimeConfig, repeats: list[int], log_path: str | Path | None = None) -> list[dict]:
    """Rows for the given repeat indices, measured in a fresh worker process (warm-up included).

    Nonpositive prompts are skipped without a worker; a worker that dies leaves runtime_error rows for
    the repeats it did not report. The worker's stderr is appended to ``log_path`` when given.
    """
    if not repeats:
        return []
    if cfg.prompt_len <= 0:
        return [status_row(cfg, r, SKIPPED_NONPOSITIVE) for r in repeats]
    with tempfile.TemporaryDirectory(prefix="longctx-cell-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "rows.jsonl"
        job.write_text(json.dumps({"config": dataclasses.asdict(cfg), "repeats": repeats}))
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
            rows += [status_row(cfg, r, f"runtime_error: {why}", why) for r in repeats if r not in done]
    return sorted(rows, key=lambda row: row["repeat"])


def _crash_message(returncode: int, log: Path) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    signal = f" (killed by signal {-returncode}; possibly out of memory)" if returncode < 0 else ""
    return f"worker exited with code {returncode}{signal}: {lines[-1] if lines else 'no output'}"


def overall_status(rows: list[dict]) -> str:
    """ok if every run is ok, else the first other status (oom, skipped_..., runtime_error: ...)."""
    return next((row["status"] for row in rows if row["status"] != STATUS_OK), STATUS_OK)


def cell_metrics(rows: list[dict]) -> dict:
    """Summaries over the ok runs and the actual token counts."""
    from longctx.stats import summarize

    ok = [row for row in rows if row["status"] == STATUS_OK]
    lengths = next((row["lengths"] for row in rows if row.get("lengths")), None)
    return {
        "time_sec": summarize([row["time_sec"] for row in ok]),
        "peak_mem_allocated_bytes": summarize([row["peak_mem_allocated_bytes"] for row in ok]),
        "peak_mem_reserved_bytes": summarize([row["peak_mem_reserved_bytes"] for row in ok]),
        "peak_mem_source": next((row["peak_mem_source"] for row in ok), None),
        "lengths": lengths,
        "statuses": [row["status"] for row in rows],
    }


def run_cell(cfg: AttributionTimeConfig, inputs: dict, out_path: str | Path) -> dict:
    """Measure every repeat of the cell, write its result JSON atomically and return it."""
    from longctx.provenance import observed_now, utc_now
    from longctx.results import atomic_write_json, build_result

    started, before = utc_now(), observed_now()
    rows = measure_cell(cfg, list(range(cfg.repeats)), log_path=Path(out_path).with_suffix(".worker.log"))
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
