"""The time curve: cells through the plan runner and result store, statuses, views (JSONL, CSV), CLI errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from longctx.attribution import cell as cell_module
from longctx.attribution.cell import describe_inputs, measure_cell, run_cell
from longctx.attribution.config import TimeCellConfig
from longctx.attribution.metrics import base_row, cell_metrics, overall_status
from longctx.attribution.time_curve import (
    ORIGINAL_COLUMNS,
    RUNS_FILE,
    SUMMARY_FILE,
    TimeCurve,
    length_grid,
    run_time_curve,
    write_views,
)
from longctx.cli import main
from longctx.errors import UsageError
from longctx.provenance import utc_now
from longctx.results import build_result, parse_result, read_result

OPTIONS = {"chunk_tokens": 8, "sink_chunk_tokens": 4}


def _settings(tiny_dir, **kw) -> dict:
    base = dict(model=str(tiny_dir / "tiny-qwen3"), dtype="float32", device="cpu", warmup=1, repeats=2)
    return {**base, **kw}


def _cell(tiny_dir, method="ifr_all_positions", prompt_len=12, output_len=6, **kw) -> TimeCellConfig:
    return TimeCellConfig(
        **_settings(tiny_dir, **kw), method=method, prompt_len=prompt_len, output_len=output_len, options=OPTIONS
    )


def test_length_grid():
    assert length_grid([10, 20], [5], None) == ((10, 5), (20, 5))
    assert length_grid(None, [5, 30], [20]) == ((15, 5), (-10, 30))
    with pytest.raises(UsageError, match="not both"):
        length_grid([10], [5], [20])


def test_time_curve_runs_through_the_store_and_writes_views(tiny_dir, tmp_path, monkeypatch):
    """Two methods on a tiny model, one cell beyond the model's context (2048): result files, valid rows, a
    skipped cell, the JSONL and CSV views; a second run measures nothing; a changed option reruns (stale)."""
    curve = TimeCurve(
        _settings(tiny_dir), ("ifr_all_positions", "ifr_multi_hop_both"), ((12, 6), (12, 2100)), OPTIONS, tmp_path
    )
    results = run_time_curve(curve, env={})
    assert len(results) == 4 and all((tmp_path / "results" / "attribution").rglob("*.json"))
    rows = [json.loads(line) for line in (tmp_path / RUNS_FILE).read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 and all(len(row["config_hash"]) == 64 for row in rows)
    by_key = {(r["attr_func"], r["output_len"], r["repeat"]): r for r in rows}
    for method in curve.methods:
        for repeat in (0, 1):
            ok = by_key[(method, 6, repeat)]
            assert ok["status"] == "ok" and ok["time_sec"] > 0 and ok["peak_mem"]["allocated_bytes"] > 0
            assert (ok["actual_user_prompt"], ok["actual_generation"]) == (12, 7)
            assert ok["actual_total"] == ok["actual_formatted_prompt"] + 7
            skipped = by_key[(method, 2100, repeat)]
            assert skipped["status"] == "skipped_model_ctx" and skipped["actual_total"] > 2048
    with (tmp_path / SUMMARY_FILE).open(newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert list(summary[0])[: len(ORIGINAL_COLUMNS)] == ORIGINAL_COLUMNS and len(summary) == 4
    assert {r["statuses"] for r in summary} == {"ok|ok", "skipped_model_ctx|skipped_model_ctx"}
    ok = [r for r in summary if r["target_output_tokens"] == "6"]
    assert all(r["n_ok"] == "2" and float(r["time_mean"]) > 0 and r["time_std"] for r in ok)

    calls = []
    real = cell_module.measure_cell
    monkeypatch.setattr(cell_module, "measure_cell", lambda cfg, **kw: calls.append(cfg) or real(cfg, **kw))
    run_time_curve(curve, env={})
    assert calls == []
    changed = TimeCurve(curve.settings, curve.methods, ((12, 6),), {**OPTIONS, "chunk_tokens": 16}, tmp_path)
    run_time_curve(changed, env={})
    assert [c.options.chunk_tokens for c in calls] == [16, 16]
    hashes = {json.loads(line)["config_hash"] for line in (tmp_path / RUNS_FILE).read_text().splitlines()}
    assert hashes == {r.config_hash for r in changed_results(tmp_path, changed)}


def changed_results(root: Path, curve: TimeCurve):
    return [read_result(root / "results" / f"{cell.id}.json") for cell in curve.plan().cells]


def test_nonpositive_prompt_and_init_error_rows(tiny_dir, tmp_path):
    assert [r["status"] for r in measure_cell(_cell(tiny_dir, prompt_len=-3))] == ["skipped_nonpositive_input"] * 2
    (row,) = measure_cell(_cell(tiny_dir, model=str(tmp_path / "missing-model"), repeats=1))
    assert row["status"].startswith("init_error: UsageError") and row["time_sec"] is None


def test_reference_cell_uses_the_originals_inputs_and_records_protocol_and_kernel(tiny_dir):
    """A reference cell (in process): the original's construction (" " + prompt re-tokenized, wrapper), the
    actual lengths, protocol and kernel in every row; a non-eager kernel is a recorded runtime error."""
    from longctx.attribution.worker import run_job

    rows = []
    cfg = _cell(tiny_dir, method="ifr_multi_hop", protocol="reference", attn_implementation="eager", repeats=1)
    run_job(cfg, rows.append)
    (row,) = rows
    assert row["status"] == "ok" and row["protocol"] == "reference" and row["attn_implementation"] == "eager"
    assert row["input_construction"].startswith("reference:")
    assert row["actual_generation"] == cfg.output_len + 1
    assert describe_inputs(cfg)["data"]["n_tokens"] == row["actual_user_prompt"]
    rows.clear()
    run_job(_cell(tiny_dir, method="ifr_multi_hop", protocol="reference", attn_implementation="sdpa", repeats=1),
            rows.append)  # fmt: skip
    assert rows[0]["status"].startswith("runtime_error: UsageError") and "eager" in rows[0]["status"]


def test_crashed_worker_gives_runtime_error_rows(tiny_dir, monkeypatch):
    import longctx.executors.process as process

    crash = "import os, signal, sys; sys.stderr.write('Fatal: unspecified launch failure\\n'); sys.stderr.flush(); " \
        "os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(process, "python_module", lambda *args: [sys.executable, "-c", crash])
    rows = measure_cell(_cell(tiny_dir))
    assert [r["repeat"] for r in rows] == [0, 1]
    for row in rows:
        assert row["status"].startswith("runtime_error: worker exited with code -9 (killed by signal 9")
        assert "unspecified launch failure" in row["status"]


def _peak(allocated: int, reserved: int) -> dict:
    return {
        "source": "test",
        "allocated_bytes": allocated,
        "reserved_bytes": reserved,
        "live_before_bytes": 0,
        "devices": {"cpu": {"allocated_bytes": allocated, "reserved_bytes": reserved, "live_before_bytes": 0}},
    }


def test_summary_csv_stays_valid_with_hostile_messages(tmp_path):
    message = 'runtime_error: RuntimeError: bad, "quoted" second line, more'
    identity = base_row("IG", 1, 2, 0)
    rows = [
        {**identity, "status": message, "time_sec": None},
        {**identity, "repeat": 1, "status": "ok", "time_sec": 2.0, "peak_mem": _peak(10**9, 2 * 10**9)},
        {**identity, "repeat": 2, "status": "ok", "time_sec": 4.0, "peak_mem": _peak(3 * 10**9, 4 * 10**9)},
    ]
    rows[1]["attn_implementation"] = "eager"  # the kernel the worker loaded (recorded per run)
    config = {"method": "IG", "prompt_len": 1, "output_len": 2, "protocol": "reference", "dtype": "float16"}
    stored = parse_result(
        build_result(
            study="attribution",
            kind="attribution_time",
            config=config,
            inputs={},
            metrics=cell_metrics(rows),
            runs=rows,
            started_utc=utc_now(),
            status=overall_status(rows),
        )
    )
    _, path = write_views(tmp_path, [stored])
    with path.open(newline="") as fh:
        (rec,) = list(csv.DictReader(fh))
    assert rec["statuses"] == f"{message}|ok|ok"
    assert float(rec["time_mean"]) == 3.0 and float(rec["time_std"]) == pytest.approx(1.0)  # numpy's ddof=0
    assert float(rec["time_std_sample"]) == pytest.approx(2**0.5)
    assert float(rec["peak_mem_mean"]) == 3.0 and float(rec["peak_mem_allocated_mean"]) == 2.0  # GB, reserved
    assert (rec["n_ok"], rec["n_runs"]) == ("2", "3")
    assert (rec["protocol"], rec["dtype"], rec["attn_implementation"]) == ("reference", "float16", "eager")


def test_plan_cell_writes_result(tiny_dir, tmp_path):
    cfg = _cell(tiny_dir, method="ifr_multi_hop", warmup=0)
    inputs = describe_inputs(cfg)
    assert inputs["data"]["n_tokens"] == 12 and inputs["model"]["model_revision"].startswith("sha256:")
    out = tmp_path / "attribution" / "ifr_multi_hop" / "P12-G6.json"
    result = run_cell(cfg, inputs, out)
    stored = read_result(out)
    assert stored.to_json()["metrics"] == json.loads(json.dumps(result["metrics"]))
    assert result["kind"] == "attribution_time" and result["status"] == "ok"
    assert stored.metrics.time_sec.n == 2 and stored.metrics.lengths["user_prompt"] == 12
    assert result["config"]["options"] == {"chunk_tokens": 8, "sink_chunk_tokens": 4, "n_hops": 1}
    assert [r["repeat"] for r in result["runs"]] == [0, 1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--attr-funcs", "nope", "--input-lengths", "5", "--output-lengths", "5"],
        ["--attr-funcs", "IG", "--input-lengths", "5,x", "--output-lengths", "5"],
        ["--attr-funcs", "IG", "--input-lengths", "0", "--output-lengths", "5"],
        ["--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5", "--dtype", "float8"],
        ["--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5", "--cuda", "a,b"],
        ["--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5", "--n-steps", "1"],
        ["--attr-funcs", "IG", "--input-lengths", "5", "--output-lengths", "5", "--repeats", "0"],
        ["--attr-funcs", "IG", "--output-lengths", "5"],
    ],
)
def test_time_curve_cli_bad_input_exit_2(tiny_dir, tmp_path, capsys, argv):
    out = tmp_path / "out"
    code = main(["attribution", "time-curve", "--model", str(tiny_dir / "tiny-qwen3"), "--output-dir", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("longctx: error:"), err
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
            "--target-text", " ABCDE.", "--sink-chunk-tokens", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert read_result(out).kind == "attribution_explain"
    n_user, n_gen = data["user_prompt_span"][1] - data["user_prompt_span"][0], len(data["generation_ids"])
    assert len(data["matrix"]) == n_gen and all(len(row) == n_user + n_gen for row in data["matrix"])
    assert len(data["prompt_tokens"]) == n_user and len(data["generation_tokens"]) == n_gen
    for g, row in enumerate(data["matrix"]):  # row g: sink = the output token's own position, 0 beyond it
        assert all(v == 0 for v in row[n_user + g + 1 :]) and all(v is not None for v in row)
    assert data["config"]["method"] == "ifr_all_positions" and "provenance" in data and data["eos_counts"]
    assert data["config"]["options"] == {"chunk_tokens": 128, "sink_chunk_tokens": 3}
    assert data["input_ids"] == data["prompt_ids"] + data["generation_ids"]
    u0, u1 = data["user_prompt_span"]
    assert data["column_positions"] == list(range(u0, u1)) + data["row_positions"]
    assert data["row_positions"] == list(range(data["prompt_len"], len(data["input_ids"])))


def test_explain_reference_protocol_records_the_span_vectors(tiny_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("VAR ABCDE = 12345. Question: which variables hold 12345?")
    out = tmp_path / "a.json"
    argv = ["attribution", "explain", "--model", str(tiny_dir / "tiny-qwen3"), "--protocol", "reference",
            "--attn-implementation", "eager", "--method", "ifr_multi_hop", "--prompt-file", str(prompt),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["protocol"] == "reference" and data["config"]["dtype"] == "float32"
    assert data["input_construction"]["construction"].startswith("reference:")
    scores = data["span"]["scores_by_position"]
    assert len(scores) == len(data["input_ids"]) and len(data["span"]["hops_by_position"]) == 2
    for row in data["matrix"]:
        assert row == pytest.approx([scores[p] for p in data["column_positions"]])
    assert data["method_details"]["sink_span_absolute"] == [data["prompt_len"], len(data["input_ids"]) - 1]
