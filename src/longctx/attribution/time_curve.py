"""The attribution time curve: every method × prompt length × output length, repeated, resumable.

Rows go to ``time_curve_runs.jsonl`` (one per run, appended as each cell finishes; rows already there are
not rerun), the aggregate to ``time_curve_summary.csv`` (pandas: quoting keeps it valid whatever an error
message contains) and the machine/code/config record to ``provenance.json``. Each cell is measured by
``longctx.attribution.cell.measure_cell`` in its own worker process — the same code the plan's cells use.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path

from longctx.attribution.cell import AttributionTimeConfig, measure_cell
from longctx.errors import RunFailure, UsageError

RUNS_FILE = "time_curve_runs.jsonl"
SUMMARY_FILE = "time_curve_summary.csv"
PROVENANCE_FILE = "provenance.json"
GROUP_KEYS = ["attr_func", "input_len", "output_len", "total_len"]
ROW_KEY = ("attr_func", "input_len", "output_len", "repeat")
ACTUAL_COLUMNS = ["actual_user_prompt", "actual_formatted_prompt", "actual_generation", "actual_total"]


@dataclass(frozen=True)
class TimeCurveConfig:
    """The grid and the shared cell settings (``template`` holds every per-cell knob but method and lengths)."""

    template: AttributionTimeConfig
    methods: tuple[str, ...]
    grid: tuple[tuple[int, int], ...]  # (prompt_len, output_len); prompt <= 0 only from a total-length grid
    output_dir: str
    catch_oom: bool = True

    def cells(self) -> list[AttributionTimeConfig]:
        return [
            replace(self.template, method=m, prompt_len=p, output_len=g) for m in self.methods for p, g in self.grid
        ]


def length_grid(
    input_lengths: list[int] | None, output_lengths: list[int], total_lengths: list[int] | None
) -> tuple[tuple[int, int], ...]:
    """Prompt × output lengths; with the deprecated total lengths the prompt is total - output."""
    if total_lengths:
        return tuple((t - g, g) for t in total_lengths for g in output_lengths)
    if not input_lengths:
        raise UsageError("give --input-lengths (or the deprecated --total-lengths)")
    return tuple((p, g) for p in input_lengths for g in output_lengths)


def read_rows(path: Path) -> list[dict]:
    """Rows already recorded. A truncated last line (killed mid-write) is dropped and the file rewritten
    without it so appends stay line-aligned; a bad line elsewhere is an error."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for k, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if k != len(lines) - 1:
                raise UsageError(f"{path} line {k + 1} is not JSON; fix or move the file") from None
            path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows), encoding="utf-8")
    return rows


def _identity(cfg: TimeCurveConfig) -> dict:
    """What rows of one output directory must share to be comparable (everything but the grid)."""
    fields = dataclasses.asdict(cfg.template)
    for key in ("method", "prompt_len", "output_len", "repeats", "warmup"):
        fields.pop(key)
    return fields


def _check_resumable(out: Path, cfg: TimeCurveConfig) -> None:
    prov = out / PROVENANCE_FILE
    if not prov.exists():
        return
    previous = json.loads(prov.read_text(encoding="utf-8")).get("config", {}).get("cell_settings")
    if previous is not None and previous != _identity(cfg):
        changed = sorted(k for k in _identity(cfg) if previous.get(k) != _identity(cfg)[k])
        raise UsageError(f"{out} holds runs with other settings ({', '.join(changed)}); use another --output-dir")


def write_provenance(out: Path, cfg: TimeCurveConfig, started: str) -> None:
    from longctx.provenance import fingerprint, provenance
    from longctx.results import atomic_write_json

    config = {
        "cell_settings": _identity(cfg),
        "methods": list(cfg.methods),
        "grid": [list(pg) for pg in cfg.grid],
        "repeats": cfg.template.repeats,
        "warmup": cfg.template.warmup,
        "catch_oom": cfg.catch_oom,
    }
    atomic_write_json(
        out / PROVENANCE_FILE, {"fingerprint": fingerprint(), "provenance": provenance(started), "config": config}
    )


def summarize_rows(rows: list[dict]):
    """Per method × lengths: mean and sample std of time and peak memory over ok runs, n, statuses."""
    import pandas as pd

    measured = ["time_mean", "time_std", "n_ok", "n_runs", "peak_mem_allocated_mean", "peak_mem_reserved_mean"]
    columns = GROUP_KEYS + measured + ACTUAL_COLUMNS + ["statuses"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    for col in ["time_sec", "peak_mem_allocated_bytes", "peak_mem_reserved_bytes", *ACTUAL_COLUMNS]:
        if col not in frame:
            frame[col] = None
    records = []
    for key, group in frame.groupby(GROUP_KEYS, sort=True):
        ok = group[group["status"] == "ok"]
        counts = group["status"].value_counts()
        records.append(
            {
                **dict(zip(GROUP_KEYS, key, strict=True)),
                "time_mean": ok["time_sec"].astype(float).mean() if len(ok) else None,
                "time_std": ok["time_sec"].astype(float).std(ddof=1) if len(ok) > 1 else None,
                "n_ok": len(ok),
                "n_runs": len(group),
                "peak_mem_allocated_mean": ok["peak_mem_allocated_bytes"].astype(float).mean() if len(ok) else None,
                "peak_mem_reserved_mean": ok["peak_mem_reserved_bytes"].astype(float).mean() if len(ok) else None,
                **{c: group[c].dropna().iloc[0] if group[c].notna().any() else None for c in ACTUAL_COLUMNS},
                "statuses": "; ".join(f"{status} x{n}" for status, n in sorted(counts.items())),
            }
        )
    summary = pd.DataFrame(records, columns=columns)
    return summary.astype({c: "Int64" for c in ["n_ok", "n_runs", *ACTUAL_COLUMNS]})


def write_summary(out: Path, rows: list[dict]) -> Path:
    path = out / SUMMARY_FILE
    tmp = path.with_suffix(".csv.tmp")
    summarize_rows(rows).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def run_time_curve(cfg: TimeCurveConfig, progress: bool = True) -> list[dict]:
    """Measure every missing run of the grid, appending rows; returns all rows. RunFailure on OOM when
    ``catch_oom`` is off (after recording the row and the summary)."""
    from tqdm import tqdm

    from longctx.provenance import utc_now

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, cfg)
    write_provenance(out, cfg, utc_now())
    runs_path = out / RUNS_FILE
    rows = read_rows(runs_path)
    done = {tuple(row[k] for k in ROW_KEY) for row in rows}
    cells = cfg.cells()
    bar = tqdm(cells, unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(f"{cell.method} P={cell.prompt_len} G={cell.output_len}")
        missing = [r for r in range(cell.repeats) if (cell.method, cell.prompt_len, cell.output_len, r) not in done]
        new = measure_cell(cell, missing, log_path=out / "worker.log")
        with runs_path.open("a", encoding="utf-8") as fh:
            for row in new:
                fh.write(json.dumps(row, default=str) + "\n")
        rows += new
        if not cfg.catch_oom and any(row["status"] == "oom" for row in new):
            write_summary(out, rows)
            raise RunFailure(f"{cell.method} P={cell.prompt_len} G={cell.output_len}: out of memory (--no-catch-oom)")
    write_summary(out, rows)
    return rows
