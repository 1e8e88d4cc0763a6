"""The streaming study's texts, materialized once as ``assets/samples/<name>.json``.

Each file is ``{"text", "source", "revision", "sha256_text"}`` (real samples add how they were prepared).
Real samples come from the offline Hub cache at the locked revision (``longctx assets fetch``); the smoke
texts are generated. The evaluator tokenizes the text with the model's tokenizer and keeps the first
``max_eval_tokens`` (20,000 / 4,096); this module fixes the text the way the original study built it, with
the Pythia tokenizer of the asset lock:

* ``pg19`` (``scripts/prepare_pg19_samples.py`` @ 3cb8e4b, for the pinned book): the book stripped of leading
  and trailing whitespace, tokenized without special tokens, and the first 50,000 tokens decoded back to
  text (``long_context_50000.json``). The evaluator's re-tokenization of that text is the original's stream.
* ``wikitext`` (``scripts/prepare_wikitext_samples.py`` @ 254e749): the rows of ``wikitext-103-v1`` (the
  non-raw variant with ``<unk>`` and `` @-@ ``), test split, in order; each row stripped, empty rows skipped
  (they still count towards the 500-row limit); the kept rows joined with ``"\\n\\n"`` until the join
  tokenizes to at least 4,096 tokens, whose first 4,096 are decoded back to text (``long_context_4096.json``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from longctx.errors import UsageError

SAMPLES_DIR = Path("assets/samples")
JOIN = "\n\n"
PG19_TOKENS = 50_000  # the original's --lengths 50000 (data/pg19/long_context_50000.json)
WIKITEXT_TOKENS = 4_096  # --lengths 4096 (data/wikitext/long_context_4096.json)
WIKITEXT_MAX_ROWS = 500  # --max-articles: rows inspected, blank ones included
TOKENIZER_ASSET = "pythia"  # the tokenizer the original counted tokens with (EleutherAI/pythia-2.8b)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pg19_sample_text(book: str, tokenizer, tokens: int = PG19_TOKENS) -> tuple[str, dict]:
    """The original's PG19 sample of one book: ``decode(tokenize(strip(book))[:tokens])`` and its counts."""
    ids = _ids(tokenizer, book.strip())
    if len(ids) < tokens:
        raise UsageError(f"the PG19 book has {len(ids)} tokens after stripping; the sample needs {tokens}")
    text = tokenizer.decode(ids[:tokens], skip_special_tokens=False)
    return text, {"target_tokens": tokens, "available_tokens": len(ids)}


def wikitext_sample_text(
    rows: Iterable[str], tokenizer, tokens: int = WIKITEXT_TOKENS, max_rows: int = WIKITEXT_MAX_ROWS
) -> tuple[str, dict]:
    """The original's WikiText sample: stripped non-empty rows joined until ``tokens`` tokens, cut and decoded."""
    kept: list[str] = []
    for row_number, row in enumerate(rows, start=1):
        if row_number > max_rows:
            break
        text = row.strip()
        if not text:
            continue
        kept.append(text)
        ids = _ids(tokenizer, JOIN.join(kept))
        if len(ids) >= tokens:
            text = tokenizer.decode(ids[:tokens], skip_special_tokens=False)
            return text, {"target_tokens": tokens, "available_tokens": len(ids), "source_idx": row_number}
    raise UsageError(f"WikiText: the first {max_rows} rows give fewer than {tokens} tokens")


def _read_book(path: Path, tokenizer) -> tuple[str, dict]:
    return pg19_sample_text(path.read_bytes().decode("utf-8"), tokenizer)


def _read_parquet_rows(path: Path, tokenizer) -> tuple[str, dict]:
    import pyarrow.parquet as pq

    return wikitext_sample_text(pq.read_table(path, columns=["text"]).column("text").to_pylist(), tokenizer)


@dataclass(frozen=True)
class SampleSource:
    """Where a real sample comes from (an asset of the lock and one of its files) and how it is prepared."""

    asset: str
    path: str
    prepare: Callable[[Path, object], tuple[str, dict]]  # (cached file, tokenizer) -> (text, preparation facts)
    recipe: str  # the original script whose rules ``prepare`` follows


SAMPLE_SOURCES = {
    "pg19": SampleSource(
        "pg19", "test/10321.txt", _read_book, f"prepare_pg19_samples.py@3cb8e4b --lengths {PG19_TOKENS}"
    ),
    "wikitext": SampleSource(
        "wikitext",
        "wikitext-103-v1/test-00000-of-00001.parquet",
        _read_parquet_rows,
        f"prepare_wikitext_samples.py@254e749 --dataset-config wikitext-103-v1 --lengths {WIKITEXT_TOKENS}",
    ),
}


def sample_record(text: str, source: str, revision: str, **preparation) -> dict:
    return {
        "text": text,
        "source": source,
        "revision": revision,
        "sha256_text": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        **preparation,
    }


def sample_tokenizer(cache_dir: str | Path | None = None, lock: Path | None = None):
    """The locked Pythia tokenizer (verified files of the offline cache) the samples are prepared with."""
    from longctx.assets import locked_file
    from longctx.models import load_tokenizer

    paths = [locked_file(TOKENIZER_ASSET, name, cache_dir, lock) for name in TOKENIZER_FILES]
    return load_tokenizer(paths[0].parent)


def _cached_sample_record(name: str, cache_dir: str | Path | None, lock: Path | None) -> dict:
    """The sample prepared from the verified cached file; UsageError naming the fetch when an input is absent."""
    from longctx.assets import load_lock, locked_file

    src = _source(name)
    local = locked_file(src.asset, src.path, cache_dir, lock)
    tokenizer = sample_tokenizer(cache_dir, lock)
    assets = load_lock(lock)
    asset, tok = assets[src.asset], assets[TOKENIZER_ASSET]
    text, facts = src.prepare(local, tokenizer)
    return sample_record(
        text,
        f"{asset.repo}:{src.path}",
        str(asset.revision),
        preparation=src.recipe,
        tokenizer=f"{tok.repo}@{tok.revision}",
        **facts,
    )


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
    tokenizer = load_lock(lock).get(TOKENIZER_ASSET)
    recipe = {
        "kind": "sample",
        "name": name,
        "revision": asset.revision if asset else None,
        "source": src.path,
        "source_sha256": locked.sha256 if locked else None,
        "preparation": src.recipe,
        "tokenizer_revision": tokenizer.revision if tokenizer else None,
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
