"""Compiled decoding (static ring cache, one graph per step) against the eager fast cache and the slow reference.

Most tests compile with dynamo's ``aot_eager`` backend: graph breaks and recompilations are decided by
dynamo's tracing and guards, whatever the backend, and ``aot_eager`` also functionalizes the in-place
cache writes as inductor would, in a second instead of a minute of C++ compilation on CPU. The inductor
run (the CLI's default) is the ``slow`` test.
"""

from __future__ import annotations

import json

import pytest
import torch

from longctx.cli import main
from longctx.data.samples import write_smoke_text
from longctx.errors import UsageError
from longctx.streaming import compiled
from longctx.streaming.compiled import CompiledStream
from longctx.streaming.config import StreamingEvalConfig, resolve_budget
from longctx.streaming.evaluator import evaluate_stream
from longctx.streaming.schedule import plan_schedule
from test_streaming_equivalence import _reference
from test_streaming_helpers import tiny_model, token_stream

ARCHS = ("gpt-neox", "qwen3", "llama")
TOL = 1e-5
CASES = [
    dict(method="start_recent", n_sink=4, cap_total=16),
    dict(method="lazy", n_sink=4, cap_total=18, compress_every=7, cache_slack=2, max_drop=3),
    dict(method="lazy", n_sink=0, cap_total=16, compress_every=3, overlap=4),
]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def budget_for(n: int, method: str, **knobs):
    return resolve_budget(StreamingEvalConfig(model="m", text_file="t", method=method, max_eval_tokens=n, **knobs))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_compiled_equals_eager_fast_and_reference(model, case):
    """Streams over 4x C decode steps with prunes and rebases: no graph break, no recompilation, same NLL."""
    ids = token_stream(110)
    budget = budget_for(110, **case)
    assert 110 - 1 - budget.prefill_len(110) >= 4 * budget.cap_total
    stream = CompiledStream(model, ids, budget, backend="aot_eager")
    first, second = stream.run(), stream.run()
    eager = evaluate_stream(model, ids, budget, "fast")
    expected, lengths = _reference(model, ids, case)
    assert second.compile["graph_breaks"] == 0 and second.compile["recompiles"] == 0
    assert first.stats.prune_events > 4 and first.stats.rebase_events >= 2
    assert torch.equal(first.nll, second.nll)
    assert (first.nll - eager.nll).abs().max().item() < TOL
    # Llama (no q/k norm, sharp init) amplifies transformers' fp32 RoPE angles against the reference's float64
    # ones: the eager fast cache is 1.02e-5 off on the S = 0 case too (test_streaming_equivalence says the same)
    ref_tol = 2 * TOL if model.config.model_type == "llama" else TOL
    assert (first.nll.double() - expected).abs().max().item() < ref_tol
    assert first.stats.kv_len_trace == eager.stats.kv_len_trace and [n for _, n in eager.stats.kv_len_trace] == lengths
    assert first.stats.max_attention_len == eager.stats.max_attention_len == max(lengths)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_schedule_keeps_positions_bounded(case):
    """Every fed position stays in [-A, A) and rebases are at least A steps apart (each key rebased once)."""
    budget = budget_for(400, **case)
    plan = plan_schedule(budget, 400)
    A, S, P = plan.max_attention, plan.n_sink, plan.prefill_len
    assert plan.max_query_position <= A and len(plan.rebase_steps) >= 5
    for k, (lo, shift) in enumerate(zip(plan.lo, plan.shift, strict=True)):
        assert lo - S + shift >= -A and P + k + shift < A  # sink 0 and the query
    assert min(b - a for a, b in zip(plan.rebase_steps[:-1], plan.rebase_steps[1:], strict=True)) >= A


def test_a_recompilation_is_counted():
    """The counter is not vacuous: a Python constant the step reads changes, dynamo's guard fails, one recompile."""
    model = tiny_model("gpt-neox")
    budget = budget_for(60, "start_recent", n_sink=2, cap_total=16)
    stream = CompiledStream(model, token_stream(60), budget, backend="aot_eager")
    assert stream.compile_report().recompiles == 0
    stream.prefill_len -= 1
    with torch.no_grad():
        stream.step()
    assert stream.compile_report().recompiles == 1


def test_streams_built_back_to_back_stay_under_the_recompile_limit():
    """A plan runs many compiled cells in one process: each stream compiles from a clean slate."""
    model, ids = tiny_model("gpt-neox"), token_stream(40)
    with torch._dynamo.config.patch(recompile_limit=2):
        for cap in (12, 14, 16):  # three shapes: without the reset the third would hit the limit
            stream = CompiledStream(model, ids, budget_for(40, "start_recent", n_sink=2, cap_total=cap), "eager")
            assert stream.run().compile["recompiles"] == 0


def test_no_decode_steps_compiles_nothing(model):
    ids = token_stream(12)
    stream = CompiledStream(model, ids, budget_for(12, "start_recent", n_sink=2, cap_total=16), backend="aot_eager")
    run = stream.run()
    assert run.decode_steps == 0 and run.compile["compile_time_s"] < 1.0
    assert torch.allclose(run.nll, evaluate_stream(model, ids, stream.budget, "fast").nll, atol=TOL)


@pytest.mark.slow
@pytest.mark.parametrize("method,knobs", [("start_recent", {}), ("lazy", {"compress_every": 6, "max_drop": 4})])
def test_inductor_equals_eager(method, knobs):
    model, ids = tiny_model("gpt-neox"), token_stream(90)
    budget = budget_for(90, method, n_sink=2, cap_total=16, **knobs)
    stream = CompiledStream(model, ids, budget)
    run = stream.run()
    assert run.compile.items() >= {"graph_breaks": 0, "recompiles": 0, "backend": "inductor", "mode": "default"}.items()
    assert (run.nll - evaluate_stream(model, ids, budget, "fast").nll).abs().max().item() < TOL


def test_unsupported_attention_is_refused(model):
    other = tiny_model(model.config.model_type.replace("_", "-"))
    other.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UsageError, match="eager or sdpa"):
        CompiledStream(other, token_stream(40), budget_for(40, "start_recent", n_sink=2, cap_total=16))


@pytest.fixture(scope="module")
def cli_inputs(tiny_dir, tmp_path_factory):
    text = write_smoke_text(tmp_path_factory.mktemp("text") / "smoke.json", n_words=1500, seed=5)
    return str(tiny_dir / "tiny-gpt-neox"), str(text)


def _cli(cli_inputs, out, *extra):
    model_dir, text = cli_inputs
    return main(["streaming", "eval", "--model", model_dir, "--text-file", text, "--max-eval-tokens", "200",
                 "--device", "cpu", "--method", "lazy", "--n-sink", "4", "--cap-total", "40", "--compress-every", "6",
                 "--max-drop", "4", "--save-nll", "--out", str(out), *extra])  # fmt: skip


def test_cli_compile_reports_the_graphs_and_matches_eager(cli_inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "aot_eager")  # the inductor run is the slow test above
    assert _cli(cli_inputs, tmp_path / "eager.json") == 0
    assert _cli(cli_inputs, tmp_path / "compiled.json", "--compile", "--warmup", "1", "--repeats", "2") == 0
    assert "graph breaks 0, recompiles 0" in capsys.readouterr().out
    eager, result = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("eager", "compiled"))
    assert result["config"]["compile"] is True and eager["config"]["compile"] is False
    assert result["config_hash"] != eager["config_hash"]
    m = result["metrics"]
    held = {"graph_breaks": 0, "recompiles": 0, "backend": "aot_eager", "mode": "default"}
    assert m["compile"].items() >= held.items()
    assert m["compile"]["compile_time_s"] > 0 and m["tpot_ms"]["n"] == 2
    assert m["ppl"] == pytest.approx(eager["metrics"]["ppl"], rel=1e-6)
    assert max(abs(a - b) for a, b in zip(m["nll"], eager["metrics"]["nll"], strict=True)) < TOL
    assert m["cache"] == {**eager["metrics"]["cache"], "bytes_moved": m["cache"]["bytes_moved"],
                          "bytes_moved_per_step": m["cache"]["bytes_moved_per_step"]}  # fmt: skip
    assert eager["metrics"]["compile"] is None


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "recompute"], "start_recent and lazy"),
        (["--impl", "plain"], "leave --impl at fast"),
        (["--refresh-budget", "2", "--refresh-policy", "middle"], "--refresh-budget"),
        (["--profile-maintenance"], "--profile-maintenance"),
    ],
)
def test_cli_refuses_what_compile_does_not_support(cli_inputs, tmp_path, capsys, extra, message):
    out = tmp_path / "r.json"
    argv = ["--compile", *extra]
    if extra[:2] == ["--method", "recompute"]:
        argv += ["--compress-every", "1", "--max-drop", "0"]  # recompute takes no lazy knobs
    assert _cli(cli_inputs, out, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
