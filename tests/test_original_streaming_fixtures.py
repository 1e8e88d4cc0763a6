"""The original wrapper's fixtures (scripts/make_original_streaming_fixtures.py) load and are self-consistent.

They pin what the original code (pruning wrapper and decode loop at 3cb8e4b) scores on a tiny GPT-NeoX, for
the ``reference`` protocol to be compared against. Here: the files load, the weights rebuild the model in this
project's transformers, and the recorded prune lengths follow the original's σ/δ rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "original_streaming"


@pytest.fixture(scope="module")
def fixture():
    return json.loads((FIXTURES / "original_streaming.json").read_text())


@pytest.fixture(scope="module")
def runs(fixture):
    return {run["id"]: run for run in fixture["runs"]}


def original_target(run: dict, length: int) -> int:
    """The 3cb8e4b wrapper's length after ``update`` for a cache of ``length`` entries."""
    soft, hard, R = run["cap_soft"], run["cap_total"], run["compress_every"]
    if length - soft < max(R, 1):
        return length
    if run["max_drop"] > 0:
        return min(max(length - run["max_drop"], soft), hard)
    return soft


def test_every_run_scores_each_token_once_and_its_ppl_is_the_mean(fixture, runs):
    n = len(fixture["token_ids"])
    assert set(runs) == {"recompute", "strict", "lazy_R8", "lazy_R8_delta4", "lazy_R8_sigma8",
                         "lazy_R8_sigma8_delta4", "lazy_R4_sigma8"}
    for run in runs.values():
        assert len(run["nll"]) == n - 1
        assert run["decode_tokens"] == n - run["cap_total"]  # x_{P-1} is fed again by the first decode step
        assert math.isclose(math.exp(sum(run["nll"]) / (n - 1)), run["ppl"], rel_tol=1e-5)


def test_prune_lengths_follow_the_original_rule(runs):
    for run in runs.values():
        if run["method"] == "recompute":
            assert run["updates"] is None
            continue
        updates = run["updates"]
        assert updates[0]["len_before"] == run["cap_total"]  # prefill fills C_total, pruned right away if σ >= R
        for before, after in zip(updates, updates[1:], strict=False):
            assert after["len_before"] == before["len_after"] + 1
        for update in updates:
            assert update["len_after"] == original_target(run, update["len_before"])
            assert (update["prune"] is None) == (update["len_after"] == update["len_before"])


def test_max_drop_is_a_no_op_without_slack(runs):
    assert runs["lazy_R8_delta4"]["nll"] == runs["lazy_R8"]["nll"]
    assert runs["lazy_R8_sigma8_delta4"]["nll"] != runs["lazy_R8_sigma8"]["nll"]


def test_weights_rebuild_the_model_here_and_match_the_prefill_nll(fixture, runs):
    from safetensors.torch import load_file
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model_info = fixture["model"]
    weights = FIXTURES / model_info["weights"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == model_info["weights_sha256"]
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**model_info["config"])).eval()
    renames = model_info["renames_for_config"]
    state = {renames.get(name, name): tensor for name, tensor in load_file(weights).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("inv_freq" in name for name in missing)
    assert model.gpt_neox.layers[0].attention.rotary_ndims == 4
    run = runs["recompute"]
    ids = torch.tensor(fixture["token_ids"][: run["cap_total"]])
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
    assert torch.allclose(nll, torch.tensor(run["nll"][: run["cap_total"] - 1]), atol=1e-4)
