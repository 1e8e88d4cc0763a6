"""Shared fixtures: tiny models built once per session from config with a fixed seed (CPU, no network)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Directory with tiny-gpt-neox, tiny-qwen3 and tiny-mlm (short training: smoke-like weights)."""
    from longctx.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny")
    make_tiny(out, seed=0, train_steps=20)
    return out
