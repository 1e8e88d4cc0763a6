"""The streaming study's texts, materialized once as ``assets/samples/<name>.json``.

Each file is ``{"text", "source", "revision", "sha256_text"}``. Real samples come from the offline Hub
cache at the locked revision (``longctx assets fetch``); the smoke texts are generated. The token-level
truncation (first 20,000 / 4,096 tokens) and the token-id hash belong to the streaming evaluator
(``max_eval_tokens``): this module fixes the text, not the tokens.

Joining rules, so the stream is reproducible from the pinned files alone:
* ``pg19``: the book file exactly as published (UTF-8, no normalization).
* ``wikitext``: the parquet's ``text`` column in row order joined with ``"\\n\\n"`` — the convention of the
  Hugging Face perplexity guide for WikiText (each row is one raw line, blank rows included).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from longctx.errors import UsageError

SAMPLES_DIR = Path("assets/samples")
WIKITEXT_JOIN = "\n\n"


def _read_book(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _read_parquet_text(path: Path) -> str:
    import pyarrow.parquet as pq

    return WIKITEXT_JOIN.join(pq.read_table(path, columns=["text"]).column("text").to_pylist())


@dataclass(frozen=True)
class SampleSource:
    """Where a real sample comes from: an asset of the lock, one of its files, and how to read it to text."""

    asset: str
    path: str
    read: Callable[[Path], str]


SAMPLE_SOURCES = {
    "pg19": SampleSource("pg19", "test/10321.txt", _read_book),
    "wikitext": SampleSource("wikitext", "wikitext-103-raw-v1/test-00000-of-00001.parquet", _read_parquet_text),
}


def sample_record(text: str, source: str, revision: str) -> dict:
    return {
        "text": text,
        "source": source,
        "revision": revision,
        "sha256_text": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def _cached_sample_record(name: str, cache_dir: str | Path | None, lock: Path | None) -> dict:
    """The sample record read from the verified cached file; UsageError naming the fetch when it is absent."""
    from longctx.assets import load_lock, locked_file

    src = _source(name)
    local = locked_file(src.asset, src.path, cache_dir, lock)
    asset = load_lock(lock)[src.asset]
    text = src.read(local)
    if not text.strip():
        raise UsageError(f"sample {name}: {local} holds no text")
    return sample_record(text, f"{asset.repo}:{src.path}", str(asset.revision))


def _source(name: str) -> SampleSource:
    if name not in SAMPLE_SOURCES:
        raise UsageError(f"unknown sample {name!r}; known: {', '.join(SAMPLE_SOURCES)}")
    return SAMPLE_SOURCES[name]


def materialize_sample(
    name: str, cache_dir: str | Path | None = None, out_dir: Path = SAMPLES_DIR, lock: Path | None = None
) -> Path:
    """Write ``<out_dir>/<name>.json`` from the verified cached file (always; ``ensure_sample`` checks first)."""
    from longctx.results import atomic_write_json

    return atomic_write_json(Path(out_dir) / f"{name}.json", _cached_sample_record(name, cache_dir, lock))


def ensure_sample(
    name: str, cache_dir: str | Path | None = None, out_dir: Path = SAMPLES_DIR, lock: Path | None = None
) -> Path:
    """``<out_dir>/<name>.json``, (re)built when incomplete, edited, or made from another locked source file."""
    from longctx.assets import load_lock
    from longctx.generated_assets import GeneratedAsset, ensure_generated
    from longctx.results import atomic_write_json

    src = _source(name)
    asset = load_lock(lock).get(src.asset)
    locked = next((f for f in asset.files if f.path == src.path), None) if asset else None
    path = Path(out_dir) / f"{name}.json"
    recipe = {
        "kind": "sample",
        "name": name,
        "revision": asset.revision if asset else None,
        "source": src.path,
        "source_sha256": locked.sha256 if locked else None,
    }
    ensure_generated(
        GeneratedAsset(
            path=path,
            label=f"sample {name}",
            recipe=recipe,
            build=lambda out: atomic_write_json(out, _cached_sample_record(name, cache_dir, lock)),
        )
    )
    return path


def _check_n_words(n_words: int) -> None:
    if n_words <= 0:
        raise UsageError(f"smoke text needs n_words > 0, got {n_words}")


def write_smoke_text(path: str | Path, n_words: int, seed: int) -> Path:
    """The smoke profile's synthetic text in the same JSON format as the real samples."""
    from longctx.data.synthetic import synthetic_text
    from longctx.results import atomic_write_json

    _check_n_words(n_words)
    record = sample_record(
        synthetic_text(n_words, seed=seed), "longctx.data.synthetic.synthetic_text", f"n_words={n_words},seed={seed}"
    )
    return atomic_write_json(path, record)


def ensure_smoke_text(path: str | Path, n_words: int, seed: int) -> Path:
    """The smoke text at ``path``, (re)built when incomplete, edited, or made with other ``n_words``/``seed``."""
    from longctx.generated_assets import GeneratedAsset, ensure_generated

    _check_n_words(n_words)
    ensure_generated(
        GeneratedAsset(
            path=Path(path),
            label="smoke text",
            recipe={"kind": "smoke-text", "n_words": n_words, "seed": seed},
            build=lambda out: write_smoke_text(out, n_words, seed),
        )
    )
    return Path(path)
