"""The routing methods' two protocols: ``reference`` equals the original's outputs (fixtures made by running
the original code, fp32), and ``efficient`` equals ``reference`` on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from longctx.attribution.method import method_spec
from longctx.attribution.reference_inputs import reference_inputs, reference_inputs_to_length
from longctx.errors import UsageError
from longctx.models import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "original_attribution"
ROUTING = ("ifr_all_positions", "ifr_multi_hop", "ifr_multi_hop_both")
SPAN_METHODS = ("ifr_multi_hop", "ifr_multi_hop_both")
TOLERANCE = 1e-4  # relative to the largest magnitude of the compared tensor


def _close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = TOLERANCE) -> None:
    assert actual.shape == expected.shape
    assert torch.equal(torch.isnan(actual), torch.isnan(expected))
    scale = float(expected.nan_to_num().abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance * scale, equal_nan=True)


@pytest.fixture(scope="module")
def case() -> dict:
    return json.loads((FIXTURES / "case.json").read_text())


@pytest.fixture(scope="module")
def original() -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return load_file(FIXTURES / "outputs.safetensors"), json.loads((FIXTURES / "outputs.json").read_text())


@pytest.fixture(scope="module")
def fixture_run(case):
    """The fixture model (fp32, eager), its tokenizer and the cell's inputs built the reference way."""
    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / "model", dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    tok = load_tokenizer(FIXTURES / "tokenizer")
    inputs = reference_inputs_to_length(
        tok, case["base_text"], case["prompt_tokens_target"], case["target_base_text"], case["output_tokens_target"]
    )
    assert inputs.input_ids[0].tolist() == case["input_ids"]
    return model.eval().requires_grad_(False), tok, inputs


def _run(name: str, protocol: str, model, tok, inputs, **options):
    spec = method_spec(name)
    return spec.runner(protocol)(model, tok, inputs, spec.make_options(options or None))


@pytest.mark.parametrize("name", ROUTING)
def test_reference_equals_the_original(fixture_run, original, name):
    outputs, info = original
    result = _run(name, "reference", *fixture_run)
    _close(result.as_matrix(fixture_run[2]), outputs[f"{name}.attribution_matrix"], 1e-5)
    if name in SPAN_METHODS:
        for hop, vector in enumerate(result.span.hops):
            _close(vector, outputs[f"{name}.raw.hop{hop}.token_importance_total"], 1e-5)
        _close(result.span.scores, outputs[f"{name}.raw.observation.sum"], 1e-5)
        assert result.details["thinking_ratios"] == pytest.approx(info[name]["thinking_ratios"], rel=1e-5)
        assert result.details["sink_span_absolute"] == info[name]["sink_span_absolute"]
    else:
        assert result.details["sink_positions"] == [info[name]["sink_indices"][0], info[name]["sink_indices"][-1]]


@pytest.mark.parametrize("name", ROUTING)
def test_efficient_equals_the_original(fixture_run, original, name):
    outputs, info = original
    result = _run(name, "efficient", *fixture_run)
    _close(result.as_matrix(fixture_run[2]), outputs[f"{name}.attribution_matrix"])
    if name in SPAN_METHODS:
        assert result.matrix is None  # one vector over the sequence, not a [G, T] matrix
        assert result.details["thinking_ratios"] == pytest.approx(info[name]["thinking_ratios"], rel=TOLERANCE)


@pytest.mark.parametrize("name", ROUTING)
@pytest.mark.parametrize("options", [{}, {"chunk_tokens": 5, "sink_chunk_tokens": 3, "n_hops": 2}])
def test_efficient_equals_reference_on_other_inputs(tiny_dir, name, options):
    """A trained tiny Qwen3, a free-text prompt with stop tokens, other chunk sizes and two hops."""
    model = AutoModelForCausalLM.from_pretrained(
        tiny_dir / "tiny-qwen3", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tok = load_tokenizer(tiny_dir / "tiny-qwen3")
    inputs = reference_inputs(tok, "VAR QWERT = 31337. The sky, the sea. VAR ASDFG = VAR QWERT.", " So, ASDFG. Yes.")
    if name == "ifr_all_positions":
        options = {k: v for k, v in options.items() if k != "n_hops"}
    reference = _run(name, "reference", model, tok, inputs, **options)
    efficient = _run(name, "efficient", model, tok, inputs, **options)
    _close(efficient.as_matrix(inputs), reference.as_matrix(inputs))
    if name in SPAN_METHODS:
        assert len(efficient.span.hops) == len(reference.span.hops) == 1 + options.get("n_hops", 1)
        for eff, ref in zip(efficient.span.hops, reference.span.hops, strict=True):
            _close(eff, ref)


def test_reference_needs_the_eager_kernel(fixture_run, tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "tiny-qwen3", attn_implementation="sdpa").eval()
    _, tok, inputs = fixture_run
    with pytest.raises(UsageError, match="eager"):
        _run("ifr_multi_hop", "reference", model, tok, inputs)


def test_both_with_only_an_eos_is_all_nan(fixture_run):
    model, tok, _ = fixture_run
    inputs = reference_inputs(tok, "The sky.", "")
    assert inputs.n_gen == 1
    for protocol in ("reference", "efficient"):
        matrix = _run("ifr_multi_hop_both", protocol, model, tok, inputs).as_matrix(inputs)
        assert matrix.shape == (1, inputs.n_user + 1) and torch.isnan(matrix).all()


def test_reference_runs_in_fp16_close_to_fp32(fixture_run):
    """The reference keeps the original's fp16 steps; on the fixture model they move scores by well under 1%."""
    model, tok, inputs = fixture_run
    half = AutoModelForCausalLM.from_pretrained(
        FIXTURES / "model", dtype=torch.float16, attn_implementation="eager", local_files_only=True
    ).eval()
    for name in ROUTING:
        full = _run(name, "reference", model, tok, inputs).as_matrix(inputs)
        _close(_run(name, "reference", half, tok, inputs).as_matrix(inputs), full, 1e-2)
