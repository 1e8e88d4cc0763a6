"""The fixtures produced by the original FlashTrace code (scripts/make_original_attribution_fixtures.py) load
with the project's transformers and are self-consistent: token ids, shapes, NaN layout, multi-hop formula."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "original_attribution"
METHODS = (
    "IG",
    "attention_I_G",
    "attnlrp",
    "perturbation_all",
    "perturbation_CLP",
    "perturbation_REAGENT",
    "ifr_all_positions",
    "ifr_multi_hop",
    "ifr_multi_hop_both",
)
STOP_STRINGS = {",", "."}  # ft_ifr_improve.STOP_TOKENS; whitespace-only tokens are stop tokens too


@pytest.fixture(scope="module")
def case() -> dict:
    return json.loads((FIXTURES / "case.json").read_text())


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(FIXTURES / "outputs.safetensors")


def _causal_nan(n_gen: int, n_user: int) -> torch.Tensor:
    """[G, n_user + G]: True at output columns j >= g (what the per-row methods leave NaN)."""
    g = torch.arange(n_gen)
    return torch.cat([torch.zeros(n_gen, n_user, dtype=torch.bool), g[None, :] >= g[:, None]], dim=1)


def _is_stop(token: str) -> bool:
    return token.strip() in STOP_STRINGS or not token.strip()


def test_fixture_files_are_small_and_complete():
    names = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()}
    for needed in ("case.json", "outputs.json", "outputs.safetensors", "model/config.json", "model/model.safetensors"):
        assert needed in names
    for needed in ("tokenizer/tokenizer.json", "mlm/tokenizer.json", "mlm/model.safetensors"):
        assert needed in names
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 3 * 1024 * 1024


def test_token_ids_are_consistent(case):
    prompt, gen, user = case["prompt_ids"], case["generation_ids"], case["user_prompt_ids"]
    assert case["input_ids"] == prompt + gen
    assert gen[-1] == case["eos_token_id"]
    assert len(gen) == case["n_gen"] == case["output_tokens_target"] + 1
    assert len(user) == case["n_user"] == len(case["user_prompt_tokens"])
    assert [prompt[i] for i in case["user_prompt_indices"]] == user
    assert sorted(case["user_prompt_indices"] + case["chat_prompt_indices"]) == list(range(len(prompt)))
    assert case["model_lengths"]["total_tokens"] == len(prompt) + len(gen)
    assert case["user_prompt"] == " " + case["prompt"]
    assert "".join(case["generation_tokens"]) == case["target"] + case["eos_token"]


def test_sentence_masks_partition_the_tokens(case):
    for key, n_tokens in (("user_prompt_sentence_masks", case["n_user"]), ("generation_sentence_masks", case["n_gen"])):
        masks = torch.tensor(case[key])
        assert masks.shape[1] == n_tokens
        assert torch.equal(masks.sum(0), torch.ones(n_tokens))
    assert case["generation_sentences"][-1] == case["eos_token"]


def test_tokenizer_reproduces_the_original_ids(case):
    from longctx.models import load_tokenizer

    tok = load_tokenizer(FIXTURES / "tokenizer")
    assert tok(case["formatted_prompt"], add_special_tokens=False)["input_ids"] == case["prompt_ids"]
    assert tok(case["user_prompt"], add_special_tokens=False)["input_ids"] == case["user_prompt_ids"]
    content = "Context:" + case["user_prompt"] + "\n\n\nQuery: "
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert rendered == case["formatted_prompt"]


def test_model_reproduces_the_original_forward(case, outputs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / "model", dtype=torch.float32, attn_implementation="eager", local_files_only=True
    ).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([case["input_ids"]])).logits[0]
    torch.testing.assert_close(logits, outputs["forward.logits"], rtol=1e-5, atol=1e-5)


def test_masked_lm_loads():
    from transformers import AutoTokenizer, LongformerForMaskedLM

    tok = AutoTokenizer.from_pretrained(FIXTURES / "mlm", local_files_only=True)
    mlm = LongformerForMaskedLM.from_pretrained(FIXTURES / "mlm", local_files_only=True)
    ids = tok("a <mask> b")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.mask_token_id in ids
    assert mlm.config.vocab_size == len(tok)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matrix_has_the_result_shape(case, outputs, method):
    matrix = outputs[f"{method}.attribution_matrix"]
    assert matrix.dtype == torch.float32
    assert matrix.shape == (case["n_gen"], case["n_user"] + case["n_gen"])


@pytest.mark.parametrize("method", ["IG", "attention_I_G", "attnlrp", "extra.attention_only", "extra.attnlrp_batched"])
def test_per_row_methods_are_nan_exactly_where_not_causal(case, outputs, method):
    matrix = outputs[f"{method}.attribution_matrix"]
    assert torch.equal(torch.isnan(matrix), _causal_nan(case["n_gen"], case["n_user"]))


def test_attention_ig_is_the_product_of_its_factors(outputs):
    product = outputs["extra.attention_only.attribution_matrix"] * outputs["IG.attribution_matrix"]
    torch.testing.assert_close(outputs["attention_I_G.attribution_matrix"], product, equal_nan=True)


@pytest.mark.parametrize("method", ["perturbation_all", "perturbation_CLP", "perturbation_REAGENT"])
def test_perturbation_is_constant_per_sentence_and_nan_inside_the_current_one(case, outputs, method):
    matrix = outputs[f"{method}.attribution_matrix"]
    nan = torch.isnan(matrix)
    assert (nan | ~_causal_nan(case["n_gen"], case["n_user"])).all()  # causal NaNs at least
    assert not nan[:, : case["n_user"]].any()
    for mask in torch.tensor(case["user_prompt_sentence_masks"]).bool():
        block = matrix[:, : case["n_user"]][:, mask]
        assert torch.equal(block, block[:, :1].expand_as(block))


def test_ifr_all_positions_rows_are_full_and_causal(case, outputs):
    matrix = outputs["ifr_all_positions.attribution_matrix"]
    assert not torch.isnan(matrix).any()
    g = torch.arange(case["n_gen"])
    future = matrix[:, case["n_user"] :][g[None, :] > g[:, None]]  # the sink itself (j == g) is a source
    assert (future == 0).all()
    assert (matrix.diagonal(offset=case["n_user"]) > 0).all()


def test_ifr_multi_hop_is_base_plus_ratio_times_hop(case, outputs):
    prefix = "ifr_multi_hop.raw"
    mask = outputs[f"{prefix}.observation.mask"]
    e0, e1 = outputs[f"{prefix}.hop0.token_importance_total"], outputs[f"{prefix}.hop1.token_importance_total"]
    ratio0 = json.loads((FIXTURES / "outputs.json").read_text())["ifr_multi_hop"]["thinking_ratios"][0]
    torch.testing.assert_close(outputs[f"{prefix}.observation.sum"], e0 * mask + ratio0 * e1 * mask)
    n_prompt = len(case["prompt_ids"])
    assert torch.equal(mask, (torch.arange(mask.numel()) < n_prompt).float())
    matrix = outputs["ifr_multi_hop.attribution_matrix"]
    expected_row = torch.cat(
        [outputs[f"{prefix}.observation.sum"][case["user_prompt_indices"]], torch.zeros(case["n_gen"])]
    )
    torch.testing.assert_close(matrix, expected_row.expand_as(matrix))


def test_ifr_multi_hop_both_skips_stop_tokens_and_eos(case, outputs):
    matrix = outputs["ifr_multi_hop_both.attribution_matrix"]
    nan_rows = torch.isnan(matrix).all(dim=1)
    tokens = case["generation_tokens"]
    expected = torch.tensor([_is_stop(t) for t in tokens[:-1]] + [True])
    assert torch.equal(nan_rows, expected)
    row = matrix[~nan_rows][0]
    assert torch.equal(matrix[~nan_rows], row.expand(int((~nan_rows).sum()), -1))
    user_stops = torch.tensor([_is_stop(t) for t in case["user_prompt_tokens"]])
    assert (row[: case["n_user"]][user_stops] == 0).all()
    assert (row[case["n_user"] :] == 0).all()
