"""Core CLI: exit codes, one-line errors, fingerprint JSON, make-tiny, model loading offline."""

import json

import pytest

from longctx.cli import main
from longctx.errors import UsageError
from longctx.models import load_causal_lm, local_revision, resolve_model_dir


def test_fingerprint_prints_json(capsys):
    assert main(["fingerprint"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"identity", "identity_hash", "observed"}


def test_bad_usage_is_exit_2_with_one_line(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longctx: error:")


def test_make_tiny_writes_loadable_models(tmp_path, capsys):
    assert main(["models", "make-tiny", str(tmp_path / "m"), "--train-steps", "0"]) == 0
    for name in ("tiny-gpt-neox", "tiny-qwen3", "tiny-mlm"):
        assert (tmp_path / "m" / name / "config.json").exists()
    loaded = load_causal_lm(str(tmp_path / "m" / "tiny-qwen3"), device="cpu")
    assert loaded.info["model_revision"].startswith("sha256:")
    assert loaded.tokenizer.chat_template
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_make_tiny_is_deterministic(tmp_path):
    from longctx.tiny import make_tiny

    a = make_tiny(tmp_path / "a", seed=3, train_steps=2)
    b = make_tiny(tmp_path / "b", seed=3, train_steps=2)
    for name in a:
        assert local_revision(a[name]) == local_revision(b[name])


def test_missing_model_is_a_usage_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UsageError, match="EleutherAI/pythia-2.8b"):
        resolve_model_dir("EleutherAI/pythia-2.8b")
    with pytest.raises(UsageError, match="not a model directory"):
        resolve_model_dir(str(tmp_path / "nope"))


def test_hub_cache_snapshot_revision_is_the_commit(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--org--name" / "snapshots" / sha
    snap.mkdir(parents=True)
    assert local_revision(snap) == sha


def test_random_architecture_needs_a_tokenizer(tiny_dir):
    with pytest.raises(UsageError, match="tokenizer"):
        load_causal_lm("random:tiny-qwen3", device="cpu")
    loaded = load_causal_lm("random:tiny-qwen3", device="cpu", tokenizer=str(tiny_dir / "tiny-qwen3"))
    assert loaded.info["model_revision"] == "random-init:seed=0"
