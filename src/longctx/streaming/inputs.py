"""The streaming cell's text: read, tokenized and hashed without loading weights.

``--text-file`` is plain UTF-8 text or a JSON object with a ``text`` field (the sample files of
``longctx.data.samples``). The text is tokenized with the tokenizer's defaults (no BOS/EOS unless it adds
them itself) and truncated to ``max_eval_tokens``; the ids are hashed by ``longctx.data.tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path

from longctx.data.tokens import token_ids_sha256
from longctx.errors import UsageError
from longctx.models import tokenizer_for
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


def tokenize_stream(cfg: StreamingEvalConfig) -> tuple[list[int], dict]:
    """The evaluated token ids (``x_0 … x_{N-1}``) and the ``inputs.data`` block describing them."""
    text, meta = read_text(cfg.text_file)
    ids = tokenizer_for(cfg.model, cfg.tokenizer)(text, verbose=False)["input_ids"][: cfg.max_eval_tokens]
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
