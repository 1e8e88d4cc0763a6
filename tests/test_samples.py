"""The streaming samples: the original's preparation rules on fabricated rows, materializing them from a fake
offline Hub cache (with a stand-in for the Pythia tokenizer), and the synthetic smoke text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from longctx import assets as A
from longctx.data.samples import (
    PG19_TOKENS,
    SAMPLE_SOURCES,
    TOKENIZER_FILES,
    WIKITEXT_TOKENS,
    ensure_sample,
    materialize_sample,
    pg19_sample_text,
    wikitext_sample_text,
    write_smoke_text,
)
from longctx.data.synthetic import synthetic_text
from longctx.errors import UsageError

REV_PG19 = "1" * 40
REV_WIKI = "2" * 40
REV_PYTHIA = "3" * 40
BOOK = ("\n\n  THE DRAGON'S BLOOD\n\nChapter I — “quoted” text.\n" + synthetic_text(40_000, seed=3) + "\n\n").encode()
WIKI_ROWS = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n", " \n", "\t\n"]
WIKI_ROWS += [f" {para} \n" if i % 2 else "" for i, para in enumerate(synthetic_text(8_000, seed=4).split("\n\n"))]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE standing in for Pythia's (same family: no special tokens added, exact round trips)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(synthetic_text(3_000, seed=9).split("\n\n"), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def original_wikitext(rows, tok, target, max_articles=500):
    """prepare_wikitext_samples.py @ 254e749 restated for one target and one sample: (text, row number)."""
    buffer, processed = [], 0
    for row in rows:
        processed += 1
        if processed > max_articles:
            break
        text = row.strip()
        if not text:
            continue
        buffer.append(text)
        ids = tok("\n\n".join(buffer), add_special_tokens=False)["input_ids"]
        if len(ids) >= target:
            return tok.decode(ids[:target], skip_special_tokens=False), processed
    return None, processed


def test_wikitext_rule_on_fabricated_rows(tokenizer):
    rows = [" = A = \n", "", " foo bar \n", " \n", "baz\n"]
    joined = "= A =\n\nfoo bar\n\nbaz"  # stripped, blank and whitespace-only rows skipped
    n = len(tokenizer(joined, add_special_tokens=False)["input_ids"])
    text, facts = wikitext_sample_text(rows, tokenizer, tokens=n)
    assert text == joined and facts == {"target_tokens": n, "available_tokens": n, "source_idx": 5}
    short, facts = wikitext_sample_text(rows, tokenizer, tokens=3)
    assert facts["source_idx"] == 1 and short == original_wikitext(rows, tokenizer, 3)[0]
    with pytest.raises(UsageError, match="first 4 rows"):
        wikitext_sample_text(rows, tokenizer, tokens=n, max_rows=4)  # blank rows count towards the limit
    for target in (7, 50, 333):
        text, facts = wikitext_sample_text(WIKI_ROWS, tokenizer, tokens=target)
        assert (text, facts["source_idx"]) == original_wikitext(WIKI_ROWS, tokenizer, target)


def test_pg19_rule_strips_and_cuts_at_a_token_count(tokenizer):
    book = BOOK.decode()
    text, facts = pg19_sample_text(book, tokenizer, tokens=120)
    ids = tokenizer(book.strip(), add_special_tokens=False)["input_ids"]
    assert text == tokenizer.decode(ids[:120]) and book.strip().startswith(text) and not text[0].isspace()
    assert facts == {"target_tokens": 120, "available_tokens": len(ids)}
    with pytest.raises(UsageError, match="needs"):
        pg19_sample_text("  a short book \n", tokenizer, tokens=120)


@pytest.fixture
def cache(tmp_path, tokenizer):
    """A Hub cache holding the two sample files and the tokenizer at their locked paths, and the lock."""
    hub = tmp_path / "hub"
    parquet = tmp_path / "test.parquet"
    pd.DataFrame({"text": WIKI_ROWS}).to_parquet(parquet)
    saved = tmp_path / "tok"
    tokenizer.save_pretrained(saved)
    extra = {"config.json": b'{"model_type": "gpt_neox"}', "special_tokens_map.json": b"{}"}
    tok_files = {name: (saved / name).read_bytes() if (saved / name).exists() else extra[name]
                 for name in TOKENIZER_FILES}  # fmt: skip
    files = {
        ("pg19", "deepmind/pg19", REV_PG19): {"test/10321.txt": BOOK},
        ("wikitext", "Salesforce/wikitext", REV_WIKI): {SAMPLE_SOURCES["wikitext"].path: parquet.read_bytes()},
        ("pythia", "EleutherAI/pythia-2.8b", REV_PYTHIA): tok_files,
    }
    lock = {"assets": {}}
    for (name, repo, rev), contents in files.items():
        kind = "model" if name == "pythia" else "dataset"
        entries = []
        for path, data in contents.items():
            target = A.repo_cache_dir(hub, repo, kind) / "snapshots" / rev / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            entries.append({"path": path, "sha256": _sha(data), "size": len(data)})
        lock["assets"][name] = {"repo": repo, "repo_type": kind, "revision": rev, "files": entries}
    lock_path = tmp_path / "assets.lock.json"
    lock_path.write_text(json.dumps(lock))
    return hub, lock_path


def test_pg19_sample_is_the_original_preparation_of_the_book(cache, tmp_path, tokenizer):
    hub, lock = cache
    out = materialize_sample("pg19", cache_dir=hub, out_dir=tmp_path / "samples", lock=lock)
    record = json.loads(out.read_text(encoding="utf-8"))
    assert out == tmp_path / "samples" / "pg19.json"
    ids = tokenizer(BOOK.decode().strip(), add_special_tokens=False)["input_ids"]
    assert record["text"] == tokenizer.decode(ids[:PG19_TOKENS])
    assert record["sha256_text"] == _sha(record["text"].encode())
    assert record["source"] == "deepmind/pg19:test/10321.txt" and record["revision"] == REV_PG19
    assert record["tokenizer"] == f"EleutherAI/pythia-2.8b@{REV_PYTHIA}" and "3cb8e4b" in record["preparation"]
    assert record["available_tokens"] == len(ids) and record["target_tokens"] == PG19_TOKENS


def test_wikitext_sample_is_the_original_preparation_of_the_non_raw_rows(cache, tmp_path, tokenizer):
    hub, lock = cache
    record = json.loads(materialize_sample("wikitext", cache_dir=hub, out_dir=tmp_path, lock=lock).read_text())
    expected, row = original_wikitext(WIKI_ROWS, tokenizer, WIKITEXT_TOKENS)
    assert record["text"] == expected and record["source_idx"] == row
    assert record["revision"] == REV_WIKI and record["source"].endswith("wikitext-103-v1/test-00000-of-00001.parquet")


def test_samples_need_the_locked_tokenizer(cache, tmp_path):
    hub, lock = cache
    data = json.loads(lock.read_text())
    data["assets"]["pythia"]["files"][0]["sha256"] = "0" * 64
    lock.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=r"longctx assets fetch --only pythia"):
        materialize_sample("wikitext", cache_dir=hub, out_dir=tmp_path / "s", lock=lock)


def test_missing_sample_names_the_fetch_command(tmp_path, cache):
    _, lock = cache
    with pytest.raises(UsageError, match=r"longctx assets fetch --only pg19"):
        materialize_sample("pg19", cache_dir=tmp_path / "empty", out_dir=tmp_path / "s", lock=lock)
    assert not (tmp_path / "s").exists()


def test_unlocked_sample_names_the_fetch(tmp_path):
    """The committed lock before any file hashes are in it: fetch (which takes them from the Hub) gets the sample."""
    with pytest.raises(UsageError, match=r"longctx assets fetch --only pg19"):
        materialize_sample("pg19", cache_dir=tmp_path / "empty", out_dir=tmp_path / "s")


def test_corrupt_source_is_refused(cache, tmp_path):
    hub, lock = cache
    book = A.repo_cache_dir(hub, "deepmind/pg19", "dataset") / "snapshots" / REV_PG19 / "test/10321.txt"
    book.write_bytes(BOOK.replace(b"I", b"J"))
    with pytest.raises(UsageError, match="corrupt"):
        materialize_sample("pg19", cache_dir=hub, out_dir=tmp_path / "s", lock=lock)


def test_ensure_sample_builds_once_and_rebuilds_a_truncated_file(cache, tmp_path, capsys):
    hub, lock = cache
    out = ensure_sample("pg19", cache_dir=hub, out_dir=tmp_path / "s", lock=lock)
    assert "sample pg19" in capsys.readouterr().out
    text = json.loads(out.read_text(encoding="utf-8"))["text"]
    before = out.stat().st_mtime_ns
    assert ensure_sample("pg19", cache_dir=hub, out_dir=tmp_path / "s", lock=lock) == out
    assert capsys.readouterr().out == "" and out.stat().st_mtime_ns == before
    out.write_bytes(out.read_bytes()[:20])
    ensure_sample("pg19", cache_dir=hub, out_dir=tmp_path / "s", lock=lock)
    assert "content does not match its marker" in capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == text


def test_ensure_sample_without_the_cached_source_names_the_fetch(cache, tmp_path):
    _, lock = cache
    with pytest.raises(UsageError, match=r"longctx assets fetch --only wikitext"):
        ensure_sample("wikitext", cache_dir=tmp_path / "empty", out_dir=tmp_path / "s", lock=lock)
    assert not (tmp_path / "s" / "wikitext.json").exists()


def test_unknown_sample(tmp_path):
    with pytest.raises(UsageError, match="unknown sample"):
        materialize_sample("c4", out_dir=tmp_path)


def test_sample_sources_are_in_the_committed_manifest():
    manifest = A.load_manifest()["assets"]
    for src in SAMPLE_SOURCES.values():
        spec = manifest[src.asset]
        assert src.path in spec.get("files", []) or src.path in spec.get("urls", {})


def test_smoke_text_is_seeded_and_in_the_sample_format(tmp_path):
    a = json.loads(write_smoke_text(tmp_path / "a.json", 300, seed=7).read_text())
    b = json.loads(write_smoke_text(tmp_path / "sub" / "b.json", 300, seed=7).read_text())
    c = json.loads(write_smoke_text(tmp_path / "c.json", 300, seed=8).read_text())
    assert set(a) == {"text", "source", "revision", "sha256_text"}
    assert a == b and a["text"] != c["text"]
    assert a["text"] == synthetic_text(300, seed=7)
    assert a["sha256_text"] == hashlib.sha256(a["text"].encode()).hexdigest()
    with pytest.raises(UsageError):
        write_smoke_text(tmp_path / "d.json", 0, seed=1)
    assert not Path(tmp_path / "d.json").exists()
