"""The RULER variable-tracking sample: deterministic generation, correct chains, strict JSONL reading."""

from __future__ import annotations

import json
import re

import pytest

from longctx.data.ruler import load_ruler_sample, read_ruler_jsonl, variable_tracking_sample
from longctx.errors import UsageError


def _resolve(text: str, value: str) -> list[str]:
    """Slow reference: follow the assignments in text order and list the variables holding ``value``."""
    env: dict[str, str] = {}
    for name, rhs in re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d{5})", text):
        env[name] = env.get(rhs[4:]) if rhs.startswith("VAR ") else rhs
    return [name for name, val in env.items() if val == value]


@pytest.mark.parametrize("seed,chains,hops", [(0, 1, 4), (3, 2, 2), (7, 3, 5)])
def test_generated_sample_chains_resolve_to_the_answer(seed, chains, hops):
    sample = variable_tracking_sample(seed, n_chains=chains, n_hops=hops, n_filler=30)
    value = re.search(r"assigned the value (\d{5})", sample.text).group(1)
    assert sorted(_resolve(sample.text, value)) == sorted(sample.answer)
    assert len(sample.answer) == hops + 1
    assert len(re.findall(r"VAR [A-Z]{5} =", sample.text)) == chains * (hops + 1)
    assert sample.text.startswith("Memorize and track the chain(s) of variable assignment")
    assert "The grass is green." in sample.text


def test_generation_is_deterministic_and_seed_dependent():
    assert variable_tracking_sample(1) == variable_tracking_sample(1)
    assert variable_tracking_sample(1).text != variable_tracking_sample(2).text
    assert load_ruler_sample(None, seed=1) == variable_tracking_sample(1)


def test_reads_real_jsonl(tmp_path):
    path = tmp_path / "validation.jsonl"
    rows = [{"index": 5, "input": "VAR AAAAA = 11111. Question?", "outputs": ["AAAAA"]}, {"input": "second"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sample = read_ruler_jsonl(path)
    assert (sample.text, sample.answer, sample.sample_id, sample.source) == (
        rows[0]["input"],
        ["AAAAA"],
        "5",
        str(path),
    )
    assert read_ruler_jsonl(path, index=1).text == "second"
    assert load_ruler_sample(path).text == rows[0]["input"]


@pytest.mark.parametrize(
    "content,message",
    [("", "has 0 samples"), ("not json\n", "not JSON"), ('{"text": "x"}\n', "'input'"), ("[1, 2]\n", "'input'")],
)
def test_malformed_jsonl_is_a_usage_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        read_ruler_jsonl(path)
    with pytest.raises(UsageError, match="does not exist"):
        read_ruler_jsonl(tmp_path / "missing.jsonl")
