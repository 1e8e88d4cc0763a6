"""Scale prediction (issue #14): meta runs account the same bytes and FLOPs as real CPU runs of the same code.

Tiny models from config (fp32, eager attention), CPU only. Each code path runs twice: on real CPU tensors
under the exact tensor-memory tracker and the FLOP counter, and through the predictor's meta simulation
(logical device cuda:0, host tensors apart). On CPU a ``.cpu()`` is free while a GPU run copies to the host,
so the CPU run's total is compared with the simulation's total over the device and the host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx.architectures import make_config
from longctx.measure.flops import FlopCounter
from longctx.measure.tensor_memory import TensorMemoryTracker
from longctx.predict import loops
from longctx.predict.cells import Prediction, prepare_run
from longctx.predict.gpus import gpu_spec

FIXTURES = Path(__file__).parent / "fixtures" / "original_attribution"
GPU = gpu_spec("H100-80GB")
TEXT = "VAR ABCDE = 12345. The grass is green. The sky is blue.\nVAR FGHIJ = VAR ABCDE. Here we go, said the man. "


@pytest.fixture(autouse=True)
def cpu_batch_sizes(monkeypatch):
    """Both runs size batches by the CPU rule: a meta run otherwise sizes them from the simulated GPU's memory."""
    from longctx.predict import gpu_paths

    monkeypatch.setattr(gpu_paths, "BATCH_SIZING_MODULES", ())


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(FIXTURES / "tokenizer")


def _cpu_model(name: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(make_config(name, attn_implementation="eager")).eval().requires_grad_(False)


def _cpu_run(model, fn):
    with TensorMemoryTracker(baseline=model) as mem, FlopCounter() as flops:
        fn(model)
    return mem.stats().total.peak_bytes, flops.total


def _meta_run(name: str, fn, *, sampled: bool):
    run = prepare_run(f"random:{name}", "float32", "eager", GPU, 1)
    if not sampled:
        run.calls.replay = False
    with run.running() if sampled else _unsampled(run):
        fn(run.model)
    total = run.sim.stats().total.peak_bytes
    prediction = run.finish(Prediction("test", "test", {}, GPU.as_dict(), 1, "ok"))
    return total, prediction


def _unsampled(run):
    original = loops.SAMPLE_ABOVE
    loops.SAMPLE_ABOVE = 10**9

    class Restore:
        def __enter__(self):
            self.inner = run.running()
            return self.inner.__enter__()

        def __exit__(self, *exc):
            loops.SAMPLE_ABOVE = original
            return self.inner.__exit__(*exc)

    return Restore()


def test_streaming_decode_loop_peak_on_meta_equals_cpu():
    from longctx.streaming.config import cache_budget
    from longctx.streaming.evaluator import evaluate_stream

    budget = cache_budget("lazy", n_sink=4, cap_total=48, compress_every=4)

    def decode(model):
        device = next(model.parameters()).device
        evaluate_stream(model, torch.arange(64, device=device) % 1000, budget, "fast", False)

    cpu_peak, cpu_flops = _cpu_run(_cpu_model("tiny-gpt-neox"), decode)
    meta_peak, prediction = _meta_run("tiny-gpt-neox", decode, sampled=False)
    assert abs(meta_peak - cpu_peak) <= 0.05 * cpu_peak
    assert prediction.flops == cpu_flops
    assert prediction.passes["forwards"] == 1 + (64 - 1 - 48)


@pytest.mark.parametrize("method", ["lazy", "recompute"])
def test_reference_stream_on_meta_equals_cpu_and_follows_the_predicted_schedule(method):
    """The original's loop (reference protocol): the same bytes and FLOPs on meta as on CPU, and the schedule the
    predictor derives from the prune rule is the one its cache records."""
    from longctx.predict.streaming import reference_schedule
    from longctx.streaming.config import cache_budget
    from longctx.streaming.reference_loop import Quirks, evaluate_reference

    budget = cache_budget(method, n_sink=0 if method == "recompute" else 4, cap_total=48, compress_every=4)
    runs = []

    def decode(model):
        device = next(model.parameters()).device
        runs.append(evaluate_reference(model, torch.arange(64, device=device) % 1000, budget, Quirks()))

    cpu_peak, cpu_flops = _cpu_run(_cpu_model("tiny-gpt-neox"), decode)
    meta_peak, prediction = _meta_run("tiny-gpt-neox", decode, sampled=False)
    assert abs(meta_peak - cpu_peak) <= 0.05 * cpu_peak
    assert prediction.flops == cpu_flops
    prefill, lengths, _ = reference_schedule(budget, 64, Quirks())
    assert (prefill, len(lengths)) == (runs[0].prefill_len, runs[0].decode_steps)
    if method == "lazy":
        assert lengths == [length for call, length in runs[0].stats.kv_len_trace if call > 0]


def test_reference_stream_cell_reaches_the_steady_state_peak():
    """A reference lazy cell run to the step after its second prune has the device peak of the whole stream."""
    from longctx.predict.cells import predict_cell, prepare_run
    from longctx.streaming.config import cache_budget
    from longctx.streaming.reference_loop import Quirks, evaluate_reference
    from longctx.study import Cell

    config = {"model": "random:tiny-gpt-neox", "text_file": "missing.txt", "method": "lazy", "max_eval_tokens": 200,
              "n_sink": 4, "cap_total": 64, "compress_every": 8, "dtype": "float32",
              "protocol": "reference"}  # fmt: skip
    prediction = predict_cell(Cell("streaming/x", "streaming", "main", {}, config), GPU)
    assert prediction.status == "ok" and prediction.details["decode_steps_run"] < prediction.details["decode_steps"]
    run = prepare_run("random:tiny-gpt-neox", "float32", None, GPU, 1)
    run.calls.replay = False
    with run.running():
        ids = torch.zeros(200, dtype=torch.long, device="meta")
        evaluate_reference(run.model, ids, cache_budget("lazy", n_sink=4, cap_total=64, compress_every=8), Quirks())
    assert prediction.peak_bytes_by_device == {"cuda:0": run.sim.stats().devices["cuda:0"].peak_bytes}


def _attribution_inputs(tokenizer, protocol: str, prompt_len: int = 40, output_len: int = 12):
    from longctx.attribution.cell import cell_inputs
    from longctx.attribution.config import TimeCellConfig

    cfg = TimeCellConfig(model="random:tiny-qwen3", method="IG", prompt_len=prompt_len, output_len=output_len,
                         protocol=protocol)  # fmt: skip
    return cell_inputs(cfg, tokenizer, TEXT)


METHODS = [
    ("efficient", "IG"),
    ("efficient", "ifr_all_positions"),
    ("efficient", "ifr_multi_hop"),
    ("efficient", "attnlrp"),
    ("efficient", "perturbation_all"),
    ("reference", "IG"),
    ("reference", "attention_I_G"),
    ("reference", "attnlrp"),
    ("reference", "perturbation_CLP"),
    ("reference", "ifr_all_positions"),
    ("reference", "ifr_multi_hop_both"),
]


@pytest.mark.parametrize(("protocol", "method"), METHODS)
def test_attribution_peak_and_flops_on_meta_equal_cpu(tokenizer, protocol, method):
    """The method's own code, unsampled: same bytes (within 5%) and exactly the same FLOPs."""
    from longctx.attribution.method import method_spec

    spec = method_spec(method)
    inputs = _attribution_inputs(tokenizer, protocol)
    options = spec.make_options(None)

    def attribute(model):
        spec.runner(protocol)(model, tokenizer, inputs, options)

    cpu_peak, cpu_flops = _cpu_run(_cpu_model("tiny-qwen3"), attribute)
    meta_peak, prediction = _meta_run("tiny-qwen3", attribute, sampled=False)
    assert prediction.error is None and prediction.status == "ok"
    assert abs(meta_peak - cpu_peak) <= 0.05 * cpu_peak, (meta_peak, cpu_peak)
    assert prediction.flops == cpu_flops


SAMPLED = [("reference", "IG", None), ("efficient", "attnlrp", {"attnlrp_form": "per_token"}),
           ("reference", "ifr_all_positions", None), ("reference", "perturbation_all", None)]  # fmt: skip


@pytest.mark.parametrize(("protocol", "method", "options"), SAMPLED)
def test_sampled_loops_and_replayed_calls_keep_peak_and_flops(tokenizer, protocol, method, options):
    """Sampling the listed loops and replaying model calls: peak within 5%, FLOPs within 2% of the full run."""
    from longctx.attribution.method import method_spec

    spec = method_spec(method)
    inputs = _attribution_inputs(tokenizer, protocol, prompt_len=400 if "perturbation" in method else 40, output_len=40)
    options = spec.make_options(options)

    def attribute(model):
        spec.runner(protocol)(model, tokenizer, inputs, options)

    full_peak, full = _meta_run("tiny-qwen3", attribute, sampled=False)
    sampled_peak, sampled = _meta_run("tiny-qwen3", attribute, sampled=True)
    assert any("sampled loop" in note for note in sampled.notes)
    assert abs(sampled_peak - full_peak) <= 0.05 * full_peak
    assert abs(sampled.flops - full.flops) <= 0.02 * full.flops
    assert sampled.passes == pytest.approx(full.passes, rel=0.02)


def test_sample_indices_and_interpolated_totals():
    assert loops.sample_indices(5) == [0, 1, 2, 3, 4]
    assert loops.sample_indices(100) == [0, 1, 2, 25, 50, 75, 98, 99]
    linear = {i: 3.0 * i + 1 for i in loops.sample_indices(100)}
    assert loops.interpolated_total(linear, 100) == pytest.approx(sum(3.0 * i + 1 for i in range(100)))


def test_work_edges_bisect_between_idle_and_working_iterations():
    """Iterations 0..29 do no work, 30..99 do: the sampler keeps halving the gap that holds the edge."""
    work = {i: float(i >= 30) for i in loops.sample_indices(100)}
    while edges := loops.work_edges(work):
        work.update({i: float(i >= 30) for i in edges})
    assert {29, 30} <= set(work)
    assert loops.interpolated_total(work, 100) == 70


def test_placement_puts_activations_and_gradients_on_each_layers_device():
    """Two logical GPUs: each half of the layers keeps its own activations and weight gradients."""
    run = prepare_run("random:tiny-qwen3", "float32", "eager", GPU, 2, trainable=True)
    assert run.placement.devices == ["cuda:0", "cuda:1"]
    with run.running():
        ids = torch.arange(64, device="meta").unsqueeze(0)
        run.model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    devices = run.sim.stats().devices
    for device in ("cuda:0", "cuda:1"):
        weights = sum(p.numel() * 4 for n, p in run.model.named_parameters()
                      if run.placement.device_of_parameter(n) == device)  # fmt: skip
        assert devices[device].peak_bytes > 2 * weights  # weights, their gradients and activations
    run.finish(Prediction("t", "t", {}, GPU.as_dict(), 2, "ok"))


def test_accelerate_rule_reproduces_the_original_six_gpu_layout():
    from longctx.predict.placement import device_map, meta_causal_lm

    model = meta_causal_lm("random:qwen3-8b", "float16", "eager")
    placed = device_map(model, 6, gpu_spec("A800").usable_bytes, "accelerate")
    layers = [placed[f"model.layers.{i}"] for i in range(36)]
    assert [layers.count(f"cuda:{d}") for d in range(6)] == [1, 8, 8, 8, 8, 3]
    assert placed["model.embed_tokens"] == "cuda:0" and placed["lm_head"] == "cuda:5"


def test_compare_original_json_has_the_issues_shape():
    from longctx.original.attribution import original_cell
    from longctx.predict import compare

    ok, oom = original_cell("IG", 10, 10), original_cell("IG", 2000, 10)
    fake = Prediction("x", "attribution", {}, GPU.as_dict(), 6, "ok", peak_bytes=40 * 10**9, roofline_s=1.0)
    rows = [compare.compare_row(ok, fake), compare.compare_row(oom, fake)]
    summary = json.loads(json.dumps(compare.summary(rows)))
    assert set(summary) == {"cells", "status_agreement", "median_peak_rel_error"}
    assert [set(row) for row in summary["cells"]] == [{
        "method", "prompt_len", "output_len", "measured_status", "predicted_status", "measured_peak_gb",
        "predicted_peak_gb", "measured_time_s", "roofline_s"}] * 2  # fmt: skip
    assert summary["cells"][1]["measured_status"] == "oom" and summary["status_agreement"] == 0.5
    assert summary["median_peak_rel_error"] == pytest.approx(
        abs(40 - ok.ok_peak_alloc_mean_gb) / ok.ok_peak_alloc_mean_gb
    )


def test_original_process_state_follows_the_run_order():
    from longctx.original.attribution import original_cell
    from longctx.predict import compare

    first = compare.process_state(original_cell("IG", 10, 10), 1)  # the very first run of out-0
    later = compare.process_state(original_cell("perturbation_all", 10, 10), 7)
    out4 = compare.process_state(original_cell("ifr_multi_hop", 10, 2000), 7)  # no IG in out-4 before it
    assert not first.stale_grads and later.stale_grads and later.mlm_bytes == 7 and not out4.stale_grads
    assert compare.RUN_DIRECTORIES["out-0"].n_gpus == 8


@pytest.mark.parametrize("argv", [["predict", "--gpu", "TPU-v9"], ["predict", "--gpus", "0"], ["predict", "--json"]])
def test_bad_usage_exits_2_with_one_line(argv, capsys):
    from longctx.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longctx: error:") and "\n" not in err


def test_streaming_cell_prediction_extrapolates_the_decode_loop():
    """A short stream predicted through the plan-cell path: the decode loop's FLOPs over all steps, a TPOT bound."""
    from longctx.predict.cells import predict_cell
    from longctx.study import Cell

    config = {"model": "random:tiny-gpt-neox", "text_file": "missing.txt", "method": "lazy", "max_eval_tokens": 200,
              "n_sink": 4, "cap_total": 64, "compress_every": 8, "dtype": "float32"}  # fmt: skip
    prediction = predict_cell(Cell("streaming/x", "streaming", "main", {}, config), GPU)
    details = prediction.details
    assert prediction.status == "ok" and prediction.fits
    assert details["decode_steps"] == 200 - 1 - 64 and details["n_tokens_source"].startswith("text not on this")
    assert prediction.passes["forwards"] == 1 + details["decode_steps"]
    assert details["tpot_lower_bound_ms"] > 0 and prediction.roofline_s > 0


def test_plan_shares_keep_groups_whole_and_spread_heavy_ones():
    from longctx.predict.plan import shares
    from longctx.study import Cell

    def cell(method, p, g):
        return Cell(f"attribution/{method}/P{p}-G{g}", "attribution", "g", {},
                    {"model": "m", "method": method, "prompt_len": p, "output_len": g})  # fmt: skip

    cells = [cell(m, 10, g) for m in ("perturbation_all", "perturbation_CLP", "IG") for g in (10, 1000)]
    first, second = shares(cells, 2)
    methods = [{cells[i].config["method"] for i in share} for share in (first, second)]
    assert methods[0].isdisjoint(methods[1]) and {"perturbation_all", "perturbation_CLP"} not in methods
    assert all(cells[share[0]].config["output_len"] == 1000 for share in (first, second))  # longest first


def test_runner_hooks_skip_a_cell_predicted_not_to_fit(monkeypatch):
    from longctx.predict import runner_hooks

    fake = Prediction("c", "attribution", {}, GPU.as_dict(), 1, "oom", fits=False, peak_bytes=10**12,
                      peak_bytes_by_device={"cuda:0": 10**12}, roofline_s=3.0)  # fmt: skip
    monkeypatch.setattr(runner_hooks, "predict_cell", lambda cell, gpu: fake)
    assert runner_hooks.skip_prediction(None, GPU, {}) is fake
    assert runner_hooks.skip_prediction(None, GPU, {"RUN_PREDICTED_OOM": "1"}) is None
    block = runner_hooks.prediction_block(fake, "oom", 5 * 10**11)
    assert block["oom_predicted"] and block["peak_ratio_measured_to_predicted"] == 0.5
    assert runner_hooks.target_gpu({"PREDICT_GPU": "A800"}).name == "A800-80GB"


def test_a_measured_oom_result_carries_the_prediction(monkeypatch, tmp_path):
    from longctx.predict import runner_hooks

    fake = Prediction("c", "attribution", {}, GPU.as_dict(), 1, "oom", fits=False, peak_bytes=10**12,
                      peak_bytes_by_device={"cuda:0": 10**12}, roofline_s=3.0)  # fmt: skip
    monkeypatch.setattr(runner_hooks, "predict_cell", lambda cell, gpu: fake)
    path = tmp_path / "r.json"
    runner_hooks.annotate_oom(None, {"status": "oom"}, path, {})  # no target GPU on a CPU: nothing written
    assert not path.exists()
    runner_hooks.annotate_oom(None, {"status": "oom"}, path, {"PREDICT_GPU": "H100-80GB"})
    stored = json.loads(path.read_text())
    assert stored["prediction"]["oom_predicted"] is True and stored["prediction"]["measured_status"] == "oom"


def test_paper_prediction_table_and_roofline_points(tmp_path):
    from longctx.paper.prediction_tables import compare_original_table, roofline_points

    absent = compare_original_table(tmp_path / "none.json")  # not predicted yet: a one-line note, no table
    assert absent.blocks == [] and "not part of this run" in absent.to_latex() and "tabular" not in absent.to_latex()
    row = {"method": "IG", "prompt_len": 10, "output_len": 10, "measured_status": "ok", "predicted_status": "oom",
           "measured_peak_gb": 39.3, "predicted_peak_gb": 40.0, "measured_time_s": 7.8, "roofline_s": 1.1}  # fmt: skip
    path = tmp_path / "compare.json"
    path.write_text(json.dumps({"cells": [row], "status_agreement": 0.0, "median_peak_rel_error": 0.02}))
    latex = compare_original_table(path).to_latex()
    assert "OOM" in latex and "39.3" in latex and "Prediction" in latex
    cells = [{"study": "attribution", "group": "time_curve_output", "roofline_s": float(g),
              "labels": {"method": "IG", "protocol": "efficient", "prompt_len": 10, "output_len": g}}
             for g in (10, 100, 1000)]  # fmt: skip
    (tmp_path / "full_H100-SXM-80GB.json").write_text(json.dumps({"cells": cells}))
    points = roofline_points("full", "output_len", root=tmp_path)
    assert points == {("IG", "efficient"): ([10, 100, 1000], [10.0, 100.0, 1000.0])}


def test_published_streaming_runs_become_reference_cells_with_their_budget():
    """--compare-original predicts each published streaming run with the cache budget and N that run had."""
    from longctx.original.streaming import load_streaming_results
    from longctx.predict.compare_streaming import published_cell, published_row, streaming_summary
    from longctx.streaming.config import StreamingEvalConfig, resolve_budget

    records = load_streaming_results()
    for record in records:
        cfg = StreamingEvalConfig(**published_cell(record).config)
        budget, knobs = resolve_budget(cfg), record.knobs
        assert cfg.protocol == "reference" and cfg.max_eval_tokens == record.total_tokens
        assert (budget.n_sink, budget.window, budget.cap_total) == (knobs.n_sink, knobs.window, knobs.cap_total)
        if record.method == "lazy":
            assert (budget.cap_soft, budget.compress_every, budget.max_drop) == (
                knobs.cap_soft, knobs.compress_every, knobs.max_drop)  # fmt: skip
    record = records[0]
    prediction = Prediction("x", "streaming", {}, GPU.as_dict(), 1, "ok", peak_bytes=int(1.1 * 5722.51171875 * 2**20),
                            details={"tpot_lower_bound_ms": record.tpot_ms / 4})  # fmt: skip
    summary = streaming_summary([published_row(record, prediction)])
    assert summary["median_peak_rel_error"] == pytest.approx(0.1, abs=1e-6)
    assert summary["cells"][0]["bound_share"] == pytest.approx(0.25)


def test_runner_holds_back_a_cell_predicted_not_to_fit_and_dry_run_shows_predictions(tmp_path, monkeypatch, capsys):
    """With a target GPU (PREDICT_GPU), a dry run prints each cell's prediction and a run launches no cell
    predicted to run out of memory unless RUN_PREDICTED_OOM=1."""
    from longctx import runner
    from longctx.predict import runner_hooks
    from longctx.results import ReusePolicy
    from test_runner import _install_fake_study, _plan

    def fake_prediction(cell, gpu):
        oom = cell.config["value"] == 2
        peak = int(9e10 if oom else 1e9)
        return Prediction(cell.id, cell.study, {}, gpu.as_dict(), 1, "oom" if oom else "ok", fits=not oom,
                          peak_bytes=peak, peak_bytes_by_device={"cuda:0": peak}, roofline_s=1.0)  # fmt: skip

    monkeypatch.setattr(runner_hooks, "predict_cell", fake_prediction)
    calls = []
    _install_fake_study(monkeypatch, calls)
    env = {"PREDICT_GPU": "A800"}
    runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), dry_run=True, env=env)
    out = capsys.readouterr().out
    assert "predicted peak 1.0 GB" in out and "does NOT fit on A800-80GB" in out
    report = runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), env=env)
    assert calls == [1] and report.actions["fake/x/2"] == "predicted_oom"
    runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), env={**env, "RUN_PREDICTED_OOM": "1"})
    assert calls == [1, 2]
