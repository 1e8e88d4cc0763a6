"""`longctx streaming eval` end to end on the smoke models, and exit 2 with one line for every bad knob."""

from __future__ import annotations

import json
import math

import pytest
import torch

from longctx.cli import main
from longctx.data.samples import write_smoke_text
from longctx.data.tokens import token_ids_sha256
from longctx.models import load_causal_lm
from longctx.streaming.cell import describe_inputs
from longctx.streaming.config import StreamingEvalConfig, resolve_budget
from longctx.streaming.evaluator import evaluate_stream


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_smoke_text(tmp_path_factory.mktemp("text") / "smoke.json", n_words=1500, seed=5)


@pytest.fixture(scope="module")
def model_dir(tiny_dir):
    return str(tiny_dir / "tiny-gpt-neox")


def _args(model_dir, text_file, out, *extra):
    return ["streaming", "eval", "--model", model_dir, "--text-file", str(text_file), "--max-eval-tokens", "160",
            "--device", "cpu", "--out", str(out), *extra]  # fmt: skip


def test_cli_end_to_end_writes_a_full_result(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "lazy.json"
    knobs = ["--method", "lazy", "--n-sink", "4", "--cap-total", "48", "--compress-every", "8", "--cache-slack", "2"]
    assert main(_args(model_dir, text_file, out, *knobs, "--save-nll", "--warmup", "1", "--repeats", "2")) == 0
    assert "ppl" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["study"] == "streaming" and result["kind"] == "streaming_eval" and result["status"] == "ok"
    assert result["config"]["compress_every"] == 8 and result["config"]["impl"] == "fast"
    assert set(result["provenance"]) >= {"code_version", "command_line", "start_utc", "end_utc"}
    assert result["config_hash"] and result["fingerprint"]["identity"]
    inputs = result["inputs"]
    assert inputs["model"]["model_revision"].startswith("sha256:")
    assert inputs["data"]["n_tokens"] == 160
    metrics = result["metrics"]
    assert len(metrics["nll"]) == 159 and metrics["scored_tokens"] == 159
    assert math.isclose(metrics["ppl"], math.exp(sum(metrics["nll"]) / 159), rel_tol=1e-9)
    assert metrics["tpot_ms"]["n"] == 2 and len(result["runs"]) == 2
    cache = metrics["cache"]
    assert cache["decode_steps"] == 159 - 46 and cache["prune_events"] > 0 and cache["max_attention_len"] == 54
    assert cache["maintenance_ms"] is None and cache["kv_len_trace"][0] == [0, 46]
    assert metrics["peak_mem"]["source"].startswith("cpu")

    # the same numbers straight from the library, and from the plain implementation through the CLI
    loaded = load_causal_lm(model_dir, device="cpu")
    ids = loaded.tokenizer(json.loads(text_file.read_text())["text"])["input_ids"][:160]
    assert token_ids_sha256(ids) == inputs["data"]["token_ids_sha256"]
    cfg = StreamingEvalConfig(**result["config"])
    direct = evaluate_stream(loaded.model, torch.tensor(ids), resolve_budget(cfg))
    assert torch.allclose(direct.nll, torch.tensor(metrics["nll"]), atol=1e-6)
    plain_out = tmp_path / "plain.json"
    assert main(_args(model_dir, text_file, plain_out, *knobs, "--save-nll", "--impl", "plain")) == 0
    plain = json.loads(plain_out.read_text())["metrics"]["nll"]
    assert max(abs(a - b) for a, b in zip(plain, metrics["nll"], strict=True)) < 1e-5
    assert describe_inputs(cfg) == inputs


def test_cli_reference_protocol_records_it_and_scores_the_original_way(model_dir, text_file, tmp_path):
    knobs = ["--method", "lazy", "--n-sink", "4", "--cap-total", "48", "--compress-every", "8", "--cache-slack", "2"]
    outputs = {}
    for protocol in ("efficient", "reference"):
        outputs[protocol] = tmp_path / f"{protocol}.json"
        assert main(_args(model_dir, text_file, outputs[protocol], *knobs, "--protocol", protocol, "--save-nll")) == 0
    efficient, reference = (json.loads(outputs[p].read_text()) for p in ("efficient", "reference"))
    assert reference["config"]["protocol"] == "reference" and efficient["config"]["protocol"] == "efficient"
    assert reference["config"]["reference_loss"] == "fp32_except_baseline_prefill"
    assert reference["config_hash"] != efficient["config_hash"]
    m = reference["metrics"]
    assert m["budget"]["prefill_len"] == 48 and m["cache"]["decode_steps"] == 160 - 48  # C_total, x_{P-1} twice
    assert m["scored_tokens"] == 159 and m["cache"]["kv_len_trace"][0] == [0, 48]
    assert math.isclose(m["ppl"], math.exp(sum(m["nll"]) / 159), rel_tol=1e-6)
    assert m["ppl"] != efficient["metrics"]["ppl"]


def test_cli_profiles_maintenance(model_dir, text_file, tmp_path):
    out = tmp_path / "prof.json"
    assert main(_args(model_dir, text_file, out, "--method", "start_recent", "--n-sink", "2", "--window", "30",
                      "--profile-maintenance")) == 0  # fmt: skip
    cache = json.loads(out.read_text())["metrics"]["cache"]
    assert cache["maintenance_ms"]["mean"] > 0 and cache["forward_ms"]["mean"] > cache["maintenance_ms"]["mean"]


BAD = [
    (["--method", "lazy", "--n-sink", "4", "--cap-total", "16", "--cache-slack", "8", "--overlap", "4"], "W = C_total"),
    (["--method", "lazy", "--n-sink", "16", "--cap-total", "16"], "smaller than --cap-total"),
    (["--method", "lazy", "--n-sink", "-1", "--cap-total", "16"], "--n-sink must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--compress-every", "-3"], "--compress-every must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--cache-slack", "-1"], "--cache-slack must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--max-drop", "-1"], "--max-drop must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--overlap", "-1"], "--overlap must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--refresh-budget", "-1"], "--refresh-budget must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--refresh-budget", "2"], "--refresh-policy"),
    (["--method", "lazy", "--cap-total", "16", "--refresh-budget", "2", "--refresh-policy", "bogus"], "invalid choice"),
    (["--method", "start_recent", "--cap-total", "16", "--compress-every", "4"], "does not apply"),
    (["--method", "recompute", "--cap-total", "16", "--overlap", "2"], "does not apply"),
    (["--method", "lazy", "--n-sink", "4"], "exactly one of --window"),
    (["--method", "lazy", "--window", "8", "--cap-total", "16"], "exactly one of --window"),
    (["--method", "lazy", "--window", "0"], "--window must be at least 1"),
    (["--method", "sliding", "--cap-total", "16"], "invalid choice"),
    (["--method", "lazy", "--cap-total", "16", "--repeats", "0"], "--repeats must be at least 1"),
    (["--method", "lazy", "--cap-total", "16", "--warmup", "-1"], "--warmup must be a non-negative"),
    (["--method", "lazy", "--cap-total", "16", "--dtype", "float8"], "unknown --dtype"),
    (["--method", "lazy", "--cap-total", "16", "--impl", "turbo"], "invalid choice"),
    (["--method", "lazy", "--cap-total", "16", "--protocol", "original"], "invalid choice"),
    (["--method", "lazy", "--cap-total", "16", "--protocol", "reference", "--compile"], "--compile is the efficient"),
    (["--method", "lazy", "--cap-total", "16", "--protocol", "reference", "--impl", "plain"], "--impl picks"),
    (["--method", "lazy", "--cap-total", "16", "--protocol", "reference", "--profile-maintenance"], "never timed"),
    (["--method", "lazy", "--cap-total", "16", "--protocol", "reference", "--refresh-budget", "2",
      "--refresh-policy", "middle"], "none of which refreshed"),
    (["--method", "recompute", "--n-sink", "4", "--cap-total", "16", "--protocol", "reference"], "keeps no sinks"),
    (["--method", "lazy", "--cap-total", "16", "--reference-loss", "model_dtype"], "--protocol reference only"),
]  # fmt: skip


@pytest.mark.parametrize("extra,message", BAD, ids=[m for _, m in BAD])
def test_bad_knobs_exit_2_with_one_line_and_no_output(model_dir, text_file, tmp_path, capsys, extra, message):
    out = tmp_path / "r.json"
    assert main(_args(model_dir, text_file, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longctx: error:") and message in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_inputs_exit_2(model_dir, text_file, tmp_path, capsys):
    no_text = tmp_path / "missing.txt"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"content": "no text field"}))
    long_text = write_smoke_text(tmp_path / "long.json", n_words=6000, seed=2)
    knobs = ["--method", "lazy", "--cap-total", "16"]
    cases = [
        (_args(model_dir, no_text, tmp_path / "o1.json", *knobs), "not found"),
        (_args(model_dir, bad_json, tmp_path / "o2.json", *knobs), "without a string 'text' field"),
        (_args(str(tmp_path / "nomodel"), text_file, tmp_path / "o3.json", *knobs), "not a model directory"),
        (_args(model_dir, text_file, tmp_path / "o4.json", *knobs, "--max-eval-tokens", "1"), "at least 2"),
        (
            [
                *_args(model_dir, long_text, tmp_path / "o5.json", *knobs, "--compress-every", "0"),
                "--max-eval-tokens",
                "2100",
            ],
            "max_position_embeddings 2048",
        ),  # fmt: skip
    ]
    for argv, message in cases:
        assert main(argv) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.glob("o*.json"))


def test_plain_text_file_and_R_0_within_context(model_dir, tmp_path):
    text = tmp_path / "plain.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    out = tmp_path / "r.json"
    assert main(_args(model_dir, text, out, "--method", "lazy", "--n-sink", "2", "--cap-total", "32",
                      "--compress-every", "0", "--max-eval-tokens", "120")) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["metrics"]["cache"]["prune_events"] == 0
    assert result["metrics"]["cache"]["max_attention_len"] == result["inputs"]["data"]["n_tokens"] - 1


def test_describe_inputs_of_a_random_model_needs_no_weights(tiny_dir, text_file):
    cfg = StreamingEvalConfig(
        model="random:tiny-qwen3",
        tokenizer=str(tiny_dir / "tiny-qwen3"),
        text_file=str(text_file),
        method="start_recent",
        n_sink=2,
        cap_total=32,
        max_eval_tokens=64,
        seed=3,
    )
    inputs = describe_inputs(cfg)
    assert inputs["model"]["model_revision"] == "random-init:seed=3"
    assert inputs["model"]["tokenizer_revision"].startswith("sha256:")
    assert inputs["data"]["n_tokens"] == 64 and len(inputs["data"]["token_ids_sha256"]) == 64


def test_kv_len_trace_is_subsampled_to_512_points_keeping_both_ends():
    from longctx.streaming.metrics import subsample as _subsample

    trace = [(i, 100 + i % 7) for i in range(5000)]
    points = _subsample(trace)
    assert len(points) <= 512 and points[0] == [0, 100] and points[-1] == list(trace[-1])
    assert [p[0] for p in points] == sorted({p[0] for p in points})
    assert _subsample(trace[:10]) == [list(p) for p in trace[:10]]
