"""The time curve: isolated worker cells, statuses, resumable jsonl, valid summary CSV, plan cell, CLI errors."""

from __future__ import annotations

import csv
import json
import subprocess

import pandas as pd
import pytest

from longctx.attribution import cell as cell_module
from longctx.attribution import time_curve
from longctx.attribution.cell import AttributionTimeConfig, describe_inputs, measure_cell, run_cell
from longctx.attribution.time_curve import TimeCurveConfig, length_grid, run_time_curve, summarize_rows, write_summary
from longctx.cli import main
from longctx.errors import UsageError
from longctx.results import read_result


def _template(tiny_dir, **kw) -> AttributionTimeConfig:
    base = dict(method="ifr_all_positions", prompt_len=12, output_len=6, model=str(tiny_dir / "tiny-qwen3"),
                dtype="float32", device="cpu", warmup=1, repeats=2, chunk_tokens=8, sink_chunk_tokens=4)  # fmt: skip
    return AttributionTimeConfig(**{**base, **kw})


def test_length_grid():
    assert length_grid([10, 20], [5], None) == ((10, 5), (20, 5))
    assert length_grid(None, [5, 30], [20]) == ((15, 5), (-10, 30))


def test_time_curve_rows_summary_and_resume(tiny_dir, tmp_path, monkeypatch):
    """Two methods on a tiny model, one cell beyond the model's context (2048): valid rows, skipped cell,
    summary CSV; a second run measures nothing."""
    cfg = TimeCurveConfig(
        template=_template(tiny_dir),
        methods=("ifr_all_positions", "ifr_multi_hop_both"),
        grid=((12, 6), (12, 2100)),
        output_dir=str(tmp_path),
    )
    rows = run_time_curve(cfg, progress=False)
    lines = (tmp_path / "time_curve_runs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows and len(rows) == 2 * 2 * 2
    by_len = {(r["attr_func"], r["output_len"], r["repeat"]): r for r in rows}
    for method in cfg.methods:
        for repeat in (0, 1):
            ok = by_len[(method, 6, repeat)]
            assert ok["status"] == "ok" and ok["time_sec"] > 0 and ok["peak_mem_allocated_bytes"] >= 0
            assert (ok["actual_user_prompt"], ok["actual_generation"]) == (12, 7)
            assert ok["actual_total"] == ok["actual_formatted_prompt"] + 7
            skipped = by_len[(method, 2100, repeat)]
            assert skipped["status"] == "skipped_model_ctx" and skipped["actual_total"] > 2048
    summary = pd.read_csv(tmp_path / "time_curve_summary.csv")
    assert len(summary) == 4 and set(summary["statuses"]) == {"ok x2", "skipped_model_ctx x2"}
    ok = summary[summary["output_len"] == 6]
    assert (ok["n_ok"] == 2).all() and ok["time_mean"].gt(0).all() and ok["time_std"].notna().all()
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert {"fingerprint", "provenance", "config"} <= set(prov) and prov["config"]["grid"] == [[12, 6], [12, 2100]]

    calls = []
    monkeypatch.setattr(time_curve, "measure_cell", lambda c, repeats, **kw: calls.append(repeats) or [])
    assert run_time_curve(cfg, progress=False) == rows
    assert calls == [[]] * 4
    wider = TimeCurveConfig(**{**cfg.__dict__, "template": _template(tiny_dir, repeats=3)})
    run_time_curve(wider, progress=False)
    assert calls[4:] == [[2]] * 4  # only the new repeat of each cell


def test_truncated_last_row_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "time_curve_runs.jsonl"
    path.write_text('{"repeat": 0}\n{"repeat": 1}\n{"repe')
    assert time_curve.read_rows(path) == [{"repeat": 0}, {"repeat": 1}]
    assert path.read_text() == '{"repeat": 0}\n{"repeat": 1}\n'
    path.write_text('{"repeat": 0}\nnot json\n{"repeat": 1}\n')
    with pytest.raises(UsageError, match="line 2"):
        time_curve.read_rows(path)


def test_resume_refuses_other_settings(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(time_curve, "measure_cell", lambda c, repeats, **kw: [])
    cfg = TimeCurveConfig(template=_template(tiny_dir), methods=("ifr_multi_hop",), grid=((5, 5),),
                          output_dir=str(tmp_path))  # fmt: skip
    run_time_curve(cfg, progress=False)
    other = TimeCurveConfig(**{**cfg.__dict__, "template": _template(tiny_dir, chunk_tokens=16)})
    with pytest.raises(UsageError, match="chunk_tokens"):
        run_time_curve(other, progress=False)


def test_nonpositive_prompt_and_init_error_rows(tiny_dir, tmp_path):
    cfg = _template(tiny_dir, prompt_len=-3)
    assert [r["status"] for r in measure_cell(cfg, [0, 1])] == ["skipped_nonpositive_input"] * 2
    broken = _template(tiny_dir, model=str(tmp_path / "missing-model"), repeats=1)
    (row,) = measure_cell(broken, [0])
    assert row["status"].startswith("init_error: UsageError") and row["time_sec"] is None


def test_crashed_worker_gives_runtime_error_rows(tiny_dir, monkeypatch):
    def crash(cmd, stderr, check):
        stderr.write("Fatal: unspecified launch failure\n")
        stderr.flush()
        return subprocess.CompletedProcess(cmd, -9)

    monkeypatch.setattr(cell_module.subprocess, "run", crash)
    rows = measure_cell(_template(tiny_dir), [0, 1])
    assert [r["repeat"] for r in rows] == [0, 1]
    for row in rows:
        assert row["status"].startswith("runtime_error: worker exited with code -9 (killed by signal 9")
        assert "unspecified launch failure" in row["status"]


def test_summary_csv_stays_valid_with_hostile_messages(tmp_path):
    message = 'runtime_error: RuntimeError: bad, "quoted"\nsecond line, more'
    rows = [
        {"attr_func": "IG", "input_len": 1, "output_len": 2, "total_len": 3, "repeat": 0, "status": message},
        {"attr_func": "IG", "input_len": 1, "output_len": 2, "total_len": 3, "repeat": 1, "status": "ok",
         "time_sec": 2.0, "peak_mem_allocated_bytes": 10, "peak_mem_reserved_bytes": 20, "actual_total": 9},
        {"attr_func": "IG", "input_len": 1, "output_len": 2, "total_len": 3, "repeat": 2, "status": "ok",
         "time_sec": 4.0, "peak_mem_allocated_bytes": 30, "peak_mem_reserved_bytes": 40, "actual_total": 9},
    ]  # fmt: skip
    path = write_summary(tmp_path, rows)
    with path.open(newline="") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 1
    (rec,) = records
    assert rec["statuses"] == f"ok x2; {message} x1"
    assert float(rec["time_mean"]) == 3.0 and float(rec["time_std"]) == pytest.approx(2**0.5)
    assert (rec["n_ok"], rec["n_runs"], rec["actual_total"]) == ("2", "3", "9")
    assert len(summarize_rows([])) == 0


def test_plan_cell_writes_result(tiny_dir, tmp_path):
    cfg = _template(tiny_dir, method="ifr_multi_hop", repeats=2, warmup=0)
    inputs = describe_inputs(cfg)
    assert inputs["data"]["n_tokens"] == 12 and inputs["model"]["model_revision"].startswith("sha256:")
    out = tmp_path / "attribution" / "ifr_multi_hop" / "P12-G6.json"
    result = run_cell(cfg, inputs, out)
    assert read_result(out) == json.loads(json.dumps(result, default=str))
    assert result["kind"] == "attribution_time" and result["status"] == "ok"
    assert result["metrics"]["time_sec"]["n"] == 2 and result["metrics"]["lengths"]["user_prompt"] == 12
    assert [r["repeat"] for r in result["runs"]] == [0, 1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--attr-funcs", "nope", "--input-lengths", "5", "--output-lengths", "5"],
        ["--attr-funcs", "IG", "--input-lengths", "5,x", "--output-lengths", "5"],
        ["--attr-funcs", "IG", "--input-lengths", "0", "--output-lengths", "5"],
        ["--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5", "--dtype", "float8"],
        ["--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5", "--cuda", "a,b"],
        ["--attr-funcs", "IG", "--output-lengths", "5"],
    ],
)
def test_time_curve_cli_bad_input_exit_2(tiny_dir, tmp_path, capsys, argv):
    out = tmp_path / "out"
    code = main(["attribution", "time-curve", "--model", str(tiny_dir / "tiny-qwen3"), "--output-dir", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("longctx: error:")
    assert not out.exists()


def test_cli_bad_model_ruler_and_prompt_exit_2(tiny_dir, tmp_path, capsys):
    bad_ruler = tmp_path / "bad.jsonl"
    bad_ruler.write_text('{"text": 1}\n')
    model = str(tiny_dir / "tiny-qwen3")
    cases = [
        ["time-curve", "--model", str(tmp_path / "none"), "--attr-funcs", "IG", "--input-lengths", "5",
         "--output-lengths", "5", "--output-dir", str(tmp_path / "o1")],
        ["time-curve", "--model", model, "--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5",
         "--output-dir", str(tmp_path / "o2"), "--ruler-file", str(bad_ruler)],
        ["explain", "--model", model, "--method", "ifr_multi_hop", "--prompt-file", str(tmp_path / "none.txt"),
         "--out", str(tmp_path / "o3.json")],
        ["explain", "--model", model, "--method", "bogus", "--prompt-file", str(bad_ruler),
         "--out", str(tmp_path / "o4.json")],
    ]  # fmt: skip
    for argv in cases:
        code = main(["attribution", *argv])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_explain_cli_writes_matrix(tiny_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("VAR ABCDE = 12345. Question: which variables hold 12345?")
    out = tmp_path / "a.json"
    argv = ["attribution", "explain", "--model", str(tiny_dir / "tiny-gpt-neox"), "--dtype", "float32",
            "--device", "cpu", "--method", "ifr_all_positions", "--prompt-file", str(prompt),
            "--target-text", " ABCDE.", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = read_result(out)
    n_user, n_gen = data["user_prompt_span"][1] - data["user_prompt_span"][0], len(data["generation_ids"])
    assert len(data["matrix"]) == n_gen and all(len(row) == n_user + n_gen for row in data["matrix"])
    assert len(data["prompt_tokens"]) == n_user and len(data["generation_tokens"]) == n_gen
    for g, row in enumerate(data["matrix"]):
        assert all(v is None for v in row[n_user + g :]) and all(v is not None for v in row[: n_user + g])
    assert data["config"]["method"] == "ifr_all_positions" and "provenance" in data and data["eos_counts"]
