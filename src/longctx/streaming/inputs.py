"""The streaming cell's inputs, described without loading weights: model revision, tokenizer, token ids.

``--text-file`` is plain UTF-8 text or a JSON object with a ``text`` field (the sample files of
``longctx.data.samples``). The text is tokenized with the tokenizer's defaults (no BOS/EOS unless it adds
them itself) and truncated to ``max_eval_tokens``; the token ids are hashed as int64 little-endian bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from longctx.errors import UsageError
from longctx.models import RANDOM_PREFIX, load_tokenizer, resolve_device, resolve_model_dir
from longctx.streaming.config import StreamingEvalConfig


def read_text(path: str | Path) -> tuple[str, dict]:
    """The text and any metadata of a text file (plain UTF-8, or JSON with a ``text`` field)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--text-file {path}: no such file")
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--text-file {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if raw.lstrip().startswith("{") or path.suffix == ".json":
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            if path.suffix == ".json":
                raise UsageError(f"--text-file {path} is not valid JSON") from None
            return raw, {}
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f"--text-file {path} is JSON without a string 'text' field")
        return record["text"], {k: v for k, v in record.items() if k != "text"}
    return raw, {}


def token_ids_sha256(ids: list[int]) -> str:
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


def _tokenizer_source(cfg: StreamingEvalConfig) -> tuple[str, Path, str]:
    spec = cfg.tokenizer or cfg.model
    if spec.startswith(RANDOM_PREFIX):
        raise UsageError(f"--model {cfg.model} has random weights and no tokenizer; pass --tokenizer DIR")
    path, revision = resolve_model_dir(spec)
    return spec, path, revision


def tokenize_stream(cfg: StreamingEvalConfig) -> tuple[list[int], dict]:
    """The evaluated token ids (``x_0 … x_{N-1}``) and the ``inputs.data`` block describing them."""
    text, meta = read_text(cfg.text_file)
    _, tok_path, _ = _tokenizer_source(cfg)
    ids = load_tokenizer(tok_path)(text, verbose=False)["input_ids"][: cfg.max_eval_tokens]
    if len(ids) < 2:
        raise UsageError(f"--text-file {cfg.text_file} gives {len(ids)} tokens; at least 2 are needed")
    data = {
        "source": str(cfg.text_file),
        "sample_id": str(meta.get("source") or Path(cfg.text_file).name),
        "sample_revision": meta.get("revision"),
        "n_tokens": len(ids),
        "token_ids_sha256": token_ids_sha256(ids),
    }
    return ids, data


def describe_model(cfg: StreamingEvalConfig) -> dict:
    """The ``inputs.model`` block: id and revision (commit sha, content hash or random-init marker), no weights."""
    tok_spec, _, tok_revision = _tokenizer_source(cfg)
    if cfg.model.startswith(RANDOM_PREFIX):
        revision = f"random-init:seed={cfg.seed}"
    else:
        revision = resolve_model_dir(cfg.model)[1]
    return {
        "model_id": cfg.model,
        "model_revision": revision,
        "tokenizer": tok_spec,
        "tokenizer_revision": tok_revision,
        "dtype": cfg.dtype,
        "device_map": resolve_device(cfg.device),
    }


def model_max_positions(cfg: StreamingEvalConfig) -> int | None:
    """``max_position_embeddings`` from the config alone (no weights)."""
    if cfg.model.startswith(RANDOM_PREFIX):
        from longctx.architectures import RANDOM_ARCHS, make_config

        arch = cfg.model[len(RANDOM_PREFIX) :]
        if arch not in RANDOM_ARCHS:
            raise UsageError(f"unknown random architecture {arch!r}; known: {', '.join(RANDOM_ARCHS)}")
        return make_config(arch).max_position_embeddings
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(resolve_model_dir(cfg.model)[0]), "max_position_embeddings", None)
