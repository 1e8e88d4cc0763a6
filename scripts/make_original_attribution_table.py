#!/usr/bin/env python3
"""Regenerate src/longctx/original/attribution_time_curve.csv from the original time-curve measurements.

Source: FlashTrace at commit 02ef4d3 (MIT licence), kept read-only at /work/shared/reference/flashtrace-02ef4d3;
its path is the first argument. Read: ``exp/exp1/out*/time_curve_summary.csv`` (one row per method x target
lengths, as written by run_time_curve.py's ``write_summary_csv``) and ``exp/exp1/out*/time_curve_runs.jsonl``
(one row per run). Standard library only; run with any Python 3.10+:

    python3 scripts/make_original_attribution_table.py /work/shared/reference/flashtrace-02ef4d3

One output row per summary row and source directory (duplicates across out* are kept, each with its source);
the ``preferred`` column marks the one row per (method, P, G) that a comparison should use. The rule and every
column are documented in ``longctx.original.attribution``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COMMIT = "02ef4d3"
OUT = Path(__file__).resolve().parents[1] / "src" / "longctx" / "original" / "attribution_time_curve.csv"
FATAL = "unspecified launch failure"  # a sticky CUDA error: every later call of the process fails with it
COLUMNS = [
    "method",
    "target_input_tokens",
    "target_output_tokens",
    "target_total_tokens",
    "time_mean_s",
    "time_std_s",
    "peak_mem_mean_gb",
    "peak_mem_std_gb",
    "peak_alloc_mean_gb",
    "ok_peak_mem_mean_gb",
    "ok_peak_alloc_mean_gb",
    "status",
    "n_runs",
    "n_ok",
    "n_oom",
    "n_after_fatal",
    "actual_user_prompt_tokens",
    "actual_formatted_prompt_tokens",
    "actual_generation_tokens",
    "actual_total_tokens",
    "source",
    "preferred",
]


def first_line(status: str) -> str:
    return status.strip().splitlines()[0].strip() if status.strip() else ""


def read_summary(path: Path) -> list[dict]:
    """Summary rows; the statuses cell may hold raw multi-line CUDA messages (the original did not quote it)."""
    lines = path.read_text().splitlines()
    header, body = lines[0].split(","), lines[1:]
    rows, current = [], None
    for line in body:
        parts = line.split(",", len(header) - 1)
        if len(parts) == len(header) and parts[1].isdigit() and parts[2].isdigit():
            current = dict(zip(header, parts, strict=True))
            rows.append(current)
        elif current is not None:  # continuation of a multi-line status message
            current["statuses"] += "\n" + line
    return rows


def runs_by_key(path: Path) -> dict[tuple, list[dict]]:
    """Runs per (method, P, G), each tagged with whether the process had already hit a fatal CUDA error."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    poisoned = False
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        run = json.loads(line)
        run["after_fatal"] = poisoned
        poisoned = poisoned or FATAL in (run["status"] or "")
        grouped[(run["attr_func"], run["target_input_tokens"], run["target_output_tokens"])].append(run)
    return grouped


def mean_gb(runs: list[dict], field: str) -> str:
    """Mean over ``runs`` of the per-run sum over devices of ``field`` (GB, 4 decimals as the original); '' if none."""
    if not runs:
        return ""
    return f"{statistics.fmean(sum(d[field] for d in r['peak_mem_by_device_gb'].values()) for r in runs):.4f}"


def cell_row(key: tuple, group: list[dict], summary: dict | None, source: str) -> dict:
    """One output row: the summary's numbers (runs-only keys: none) plus what the runs file adds."""
    statuses = [first_line(r["status"]) for r in group]
    if summary is not None and [first_line(s) for s in summary["statuses"].split("|") if s.strip()] != statuses:
        sys.exit(f"{source} {key}: summary statuses disagree with the runs file")
    measured = [r for r in group if r.get("peak_mem_by_device_gb")]
    ok = [r for r in measured if r["status"] == "ok"]
    summary = summary or {}
    first = group[0]
    return {
        "method": key[0],
        "target_input_tokens": key[1],
        "target_output_tokens": key[2],
        "target_total_tokens": first["target_total_tokens"],
        "time_mean_s": summary.get("time_mean", ""),
        "time_std_s": summary.get("time_std", ""),
        "peak_mem_mean_gb": summary.get("peak_mem_mean", ""),
        "peak_mem_std_gb": summary.get("peak_mem_std", ""),
        "peak_alloc_mean_gb": mean_gb(measured, "allocated_gb"),
        "ok_peak_mem_mean_gb": mean_gb(ok, "reserved_gb"),
        "ok_peak_alloc_mean_gb": mean_gb(ok, "allocated_gb"),
        "status": "|".join(statuses),
        "n_runs": len(group),
        "n_ok": sum(r["status"] == "ok" for r in group),
        "n_oom": sum(r["status"] == "oom" for r in group),
        "n_after_fatal": sum(r["after_fatal"] for r in group),
        "actual_user_prompt_tokens": first["actual_user_prompt_tokens"],
        "actual_formatted_prompt_tokens": first["actual_formatted_prompt_tokens"],
        "actual_generation_tokens": first["actual_generation_tokens"],
        "actual_total_tokens": first["actual_total_tokens"],
        "source": source,
        "preferred": 0,
    }


def table_rows(root: Path) -> list[dict]:
    """Summary rows in file order, then the keys only the runs file has (runs that recorded neither a time nor
    a memory reading, e.g. init errors: the original's aggregate_results drops them from the summary)."""
    exp = root / "exp" / "exp1"
    rows = []
    for directory in sorted(exp.glob("out*"), key=source_order):
        runs = runs_by_key(directory / "time_curve_runs.jsonl")
        prefix = f"flashtrace@{COMMIT}:exp/exp1/{directory.name}/"
        seen = set()
        for summary in read_summary(directory / "time_curve_summary.csv"):
            key = (summary["attr_func"], int(summary["target_input_tokens"]), int(summary["target_output_tokens"]))
            seen.add(key)
            rows.append(cell_row(key, runs[key], summary, prefix + "time_curve_summary.csv"))
        rows += [cell_row(k, g, None, prefix + "time_curve_runs.jsonl") for k, g in runs.items() if k not in seen]
    mark_preferred(rows)
    return rows


def source_order(directory: Path) -> int:
    """out-0 ... out-5, then out (the default output directory, the last re-run of the 10k-token cells)."""
    suffix = directory.name.removeprefix("out").removeprefix("-")
    return int(suffix) if suffix else 99


def mark_preferred(rows: list[dict]) -> None:
    """Per (method, P, G): most ok runs; then fewest runs spoiled by an earlier fatal error; then more OOMs
    (a definite outcome); then the later source directory."""
    best: dict[tuple, tuple[tuple, dict]] = {}
    for row in rows:  # rows are in source order, so ">=" keeps the later source on a tie
        key = (row["method"], row["target_input_tokens"], row["target_output_tokens"])
        rank = (row["n_ok"], -row["n_after_fatal"], row["n_oom"])
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, row)
    for _, row in best.values():
        row["preferred"] = 1


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    if not (root / "exp" / "exp1" / "run_time_curve.py").exists():
        sys.exit(f"{root} is not the FlashTrace checkout (exp/exp1/run_time_curve.py missing)")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows(root))
    OUT.write_text(buffer.getvalue())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
