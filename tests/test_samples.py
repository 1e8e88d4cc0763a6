"""Materializing the streaming samples from a fake offline Hub cache, and the synthetic smoke text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from longctx import assets as A
from longctx.data.samples import SAMPLE_SOURCES, ensure_sample, materialize_sample, write_smoke_text
from longctx.data.synthetic import synthetic_text
from longctx.errors import UsageError

REV_PG19 = "1" * 40
REV_WIKI = "2" * 40
BOOK = "THE DRAGON'S BLOOD\n\nChapter I — “quoted” text.\n".encode()
WIKI_ROWS = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n", ""]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path):
    """A Hub cache holding the two sample files at their locked paths, and the lock describing them."""
    hub = tmp_path / "hub"
    parquet = tmp_path / "test.parquet"
    pd.DataFrame({"text": WIKI_ROWS}).to_parquet(parquet)
    files = {
        ("pg19", "deepmind/pg19", REV_PG19): ("test/10321.txt", BOOK),
        ("wikitext", "Salesforce/wikitext", REV_WIKI): (SAMPLE_SOURCES["wikitext"].path, parquet.read_bytes()),
    }
    lock = {"assets": {}}
    for (name, repo, rev), (path, data) in files.items():
        target = A.repo_cache_dir(hub, repo, "dataset") / "snapshots" / rev / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        lock["assets"][name] = {
            "repo": repo,
            "repo_type": "dataset",
            "revision": rev,
            "files": [{"path": path, "sha256": _sha(data), "size": len(data)}],
        }
    lock_path = tmp_path / "assets.lock.json"
    lock_path.write_text(json.dumps(lock))
    return hub, lock_path


def test_pg19_sample_is_the_book_verbatim(cache, tmp_path):
    hub, lock = cache
    out = materialize_sample("pg19", cache_dir=hub, out_dir=tmp_path / "samples", lock=lock)
    record = json.loads(out.read_text(encoding="utf-8"))
    assert out == tmp_path / "samples" / "pg19.json"
    assert record["text"] == BOOK.decode("utf-8")
    assert record["sha256_text"] == _sha(BOOK)
    assert record["source"] == "deepmind/pg19:test/10321.txt" and record["revision"] == REV_PG19


def test_wikitext_sample_joins_rows_with_blank_lines(cache, tmp_path):
    hub, lock = cache
    record = json.loads(materialize_sample("wikitext", cache_dir=hub, out_dir=tmp_path, lock=lock).read_text())
    expected = "\n\n".join(WIKI_ROWS)
    assert record["text"] == expected
    assert record["sha256_text"] == hashlib.sha256(expected.encode()).hexdigest()
    assert record["revision"] == REV_WIKI


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
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == BOOK.decode("utf-8")
    before = out.stat().st_mtime_ns
    assert ensure_sample("pg19", cache_dir=hub, out_dir=tmp_path / "s", lock=lock) == out
    assert capsys.readouterr().out == "" and out.stat().st_mtime_ns == before
    out.write_bytes(out.read_bytes()[:20])
    ensure_sample("pg19", cache_dir=hub, out_dir=tmp_path / "s", lock=lock)
    assert "content does not match its marker" in capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == BOOK.decode("utf-8")


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
