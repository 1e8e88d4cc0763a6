"""`longctx assets lock|fetch|verify` against a fake Hub cache built in tmp_path (no network)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from longctx import assets as A
from longctx.cli import main
from longctx.errors import RunFailure

REV_MODEL = "a" * 40
REV_DATA = "b" * 40
BOOK_URL = "https://example.invalid/test/1.txt"
CONTENT = {
    ("org/tiny", "config.json"): b'{"model_type": "gpt_neox"}',
    ("org/tiny", "model.safetensors"): b"weights" * 1000,
    ("org/text", "data/list.txt"): b"test/1.txt\n",
}
URL_CONTENT = {BOOK_URL: b"Chapter One.\nIt was a dark night.\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def locked(path: str, data: bytes, url: str | None = None) -> dict:
    entry = {"path": path, "sha256": sha(data), "size": len(data)}
    return {**entry, "url": url} if url else entry


def write_lock(tmp_path: Path) -> Path:
    lock = {
        "schema_version": 1,
        "assets": {
            "tiny": {
                "repo": "org/tiny",
                "repo_type": "model",
                "revision": REV_MODEL,
                "files": [locked(p, CONTENT[("org/tiny", p)]) for p in ("config.json", "model.safetensors")],
            },
            "book": {
                "repo": "org/text",
                "repo_type": "dataset",
                "revision": REV_DATA,
                "files": [
                    locked("data/list.txt", CONTENT[("org/text", "data/list.txt")]),
                    locked("test/1.txt", URL_CONTENT[BOOK_URL], BOOK_URL),
                ],
            },
            "later": {"repo": "org/later", "repo_type": "model", "revision": None, "files": [], "optional": True},
        },
    }
    path = tmp_path / "assets.lock.json"
    path.write_text(json.dumps(lock))
    return path


class FakeDownloader:
    """Writes files the way huggingface_hub does: content-addressed blobs, snapshot symlinks, and (like it) skips
    a file whose snapshot entry already exists."""

    def __init__(self, content=None, url_content=None):
        self.content = dict(CONTENT if content is None else content)
        self.url_content = dict(URL_CONTENT if url_content is None else url_content)
        self.calls: list[tuple] = []

    def snapshot(self, asset, paths, cache_dir):
        self.calls.append(("snapshot", asset.name, tuple(paths)))
        repo_dir = A.repo_cache_dir(cache_dir, asset.repo, asset.repo_type)
        for path in paths:
            data = self.content[(asset.repo, path)]
            blob = repo_dir / "blobs" / sha(data)
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo_dir / "snapshots" / asset.revision / path
            if link.exists():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))

    def url(self, url, dest):
        self.calls.append(("url", url))
        Path(dest).write_bytes(self.url_content[url])


@pytest.fixture
def env(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    fake = FakeDownloader()
    monkeypatch.setattr(A, "HubDownloader", lambda: fake)
    return cache, write_lock(tmp_path), fake


def test_verify_empty_cache_names_every_missing_asset(env, capsys):
    cache, lock, _ = env
    assert main(["assets", "verify", "--lock", str(lock)]) == 2
    out, err = capsys.readouterr()
    assert "tiny (org/tiny: missing)" in err and "book (org/text: missing)" in err
    assert "later" not in err  # optional assets are checked only when named
    assert "longctx assets fetch --only tiny" in out
    assert len(err.strip().splitlines()) == 1
    assert not cache.exists()  # verify writes nothing


def test_verify_the_committed_lock_on_an_empty_cache_names_the_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert main(["assets", "verify"]) == 2
    err = capsys.readouterr().err
    for repo in ("EleutherAI/pythia-2.8b", "Qwen/Qwen3-8B", "allenai/longformer-base-4096"):
        assert repo in err


def test_fetch_then_verify_and_offline_lookup_by_repo_id(env, capsys):
    cache, lock, fake = env
    assert main(["assets", "fetch", "--lock", str(lock)]) == 0
    assert ("snapshot", "tiny", ("config.json", "model.safetensors")) in fake.calls
    assert ("url", BOOK_URL) in fake.calls
    snap = cache / "datasets--org--text" / "snapshots" / REV_DATA
    assert (snap / "test/1.txt").read_bytes() == URL_CONTENT[BOOK_URL]
    assert main(["assets", "verify", "--lock", str(lock)]) == 0
    assert "all 2 assets present and verified" in capsys.readouterr().out
    # huggingface_hub itself resolves the pinned snapshot offline from the repo id (refs/main -> pin).
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    found = try_to_load_from_cache("org/tiny", "config.json", cache_dir=cache)
    assert found == str(cache / "models--org--tiny" / "snapshots" / REV_MODEL / "config.json")
    offline = snapshot_download("org/text", repo_type="dataset", cache_dir=cache, local_files_only=True)
    assert Path(offline) == snap


def test_fetch_is_idempotent(env):
    _, lock, fake = env
    assert main(["assets", "fetch", "--lock", str(lock)]) == 0
    n_calls = len(fake.calls)
    assert main(["assets", "fetch", "--lock", str(lock)]) == 0
    assert len(fake.calls) == n_calls  # nothing downloaded twice


def test_corrupt_file_is_reported_and_refetched(env, capsys):
    cache, lock, fake = env
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "tiny"]) == 0
    weights = cache / "models--org--tiny" / "snapshots" / REV_MODEL / "model.safetensors"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[10] ^= 1  # same size, different content
    blob.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["assets", "verify", "--lock", str(lock), "--only", "tiny", "--quick"]) == 0
    assert main(["assets", "verify", "--lock", str(lock), "--only", "tiny"]) == 2
    captured = capsys.readouterr()
    assert "tiny (org/tiny: corrupt)" in captured.err and "model.safetensors (sha256 mismatch)" in captured.out
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "tiny"]) == 0
    assert fake.calls[-1] == ("snapshot", "tiny", ("model.safetensors",))  # only the bad file again
    assert main(["assets", "verify", "--lock", str(lock), "--only", "tiny"]) == 0


def test_download_that_does_not_match_the_lock_is_a_run_failure(env, capsys):
    _, lock, fake = env
    fake.content[("org/tiny", "model.safetensors")] = b"tampered" * 10
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "tiny"]) == 1
    assert "tiny corrupt after download" in capsys.readouterr().err


def test_url_file_with_wrong_hash_never_enters_the_snapshot(env):
    cache, lock, fake = env
    fake.url_content[BOOK_URL] = b"another book"
    asset = A.load_lock(lock)["book"]
    with pytest.raises(RunFailure, match="sha256"):
        A.fetch_asset(asset, cache, fake)
    snap = asset.snapshot_dir(cache)
    assert not (snap / "test/1.txt").exists()
    assert not any(p.name.endswith(".part") for p in snap.rglob("*"))


def test_fetch_refuses_unlocked_and_unknown_assets(env, capsys):
    _, lock, _ = env
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "later"]) == 2
    assert "longctx assets lock --only later" in capsys.readouterr().err
    assert main(["assets", "verify", "--lock", str(lock), "--only", "nope"]) == 2
    assert "unknown asset(s) nope" in capsys.readouterr().err


class FakeResolver:
    def __init__(self, sha, files):
        self.sha, self.remote, self.hashed = sha, files, []

    def files(self, repo, repo_type, revision):
        return self.sha, self.remote

    def sha256_of(self, repo, repo_type, revision, path, cache_dir):
        self.hashed.append(path)
        return sha(CONTENT[(repo, path)])


def tiny_remote(with_bin=True):
    files = [
        A.RemoteFile("config.json", len(CONTENT[("org/tiny", "config.json")]), None),
        A.RemoteFile("model.safetensors", 7000, sha(CONTENT[("org/tiny", "model.safetensors")])),
        A.RemoteFile("README.md", 10, None),
    ]
    return files + ([A.RemoteFile("pytorch_model.bin", 9000, "c" * 64)] if with_bin else [])


SPEC = {
    "repo": "org/tiny",
    "repo_type": "model",
    "revision": REV_MODEL,
    "files": ["config.json"],
    "weights": ["*.safetensors", "pytorch_model*.bin"],
}


def test_lock_prefers_safetensors_and_hashes_small_files(tmp_path):
    resolver = FakeResolver(REV_MODEL, tiny_remote())
    asset = A.lock_asset("tiny", SPEC, resolver, FakeDownloader(), tmp_path)
    assert [f.path for f in asset.files] == ["config.json", "model.safetensors"]
    assert resolver.hashed == ["config.json"]  # LFS files come with their sha256, git files are hashed
    assert asset.files[0].sha256 == sha(CONTENT[("org/tiny", "config.json")])
    only_bin = [f for f in tiny_remote() if f.path != "model.safetensors"]
    fallback = A.lock_asset("tiny", SPEC, FakeResolver(REV_MODEL, only_bin), FakeDownloader(), tmp_path)
    assert [f.path for f in fallback.files] == ["config.json", "pytorch_model.bin"]


@pytest.mark.parametrize(
    ("spec", "sha_", "message"),
    [
        ({**SPEC, "files": ["tokenizer.json"]}, REV_MODEL, "matches 'tokenizer.json'"),
        ({**SPEC, "weights": ["*.gguf"]}, REV_MODEL, "no weights"),
        (SPEC, "d" * 40, "pinned"),
        ({**SPEC, "revision": None}, "main", "no commit sha"),
    ],
)
def test_lock_refuses_what_it_cannot_pin(tmp_path, spec, sha_, message):
    with pytest.raises(RunFailure, match=message):
        A.lock_asset("tiny", spec, FakeResolver(sha_, tiny_remote()), FakeDownloader(), tmp_path)


def test_lock_url_file_checks_the_manifest_hash(tmp_path):
    spec = {
        "repo": "org/text",
        "repo_type": "dataset",
        "revision": REV_DATA,
        "files": ["data/list.txt"],
        "urls": {"test/1.txt": BOOK_URL},
        "sha256": {"test/1.txt": sha(URL_CONTENT[BOOK_URL])},
    }
    remote = [A.RemoteFile("data/list.txt", len(CONTENT[("org/text", "data/list.txt")]), None)]
    asset = A.lock_asset("book", spec, FakeResolver(REV_DATA, remote), FakeDownloader(), tmp_path)
    assert asset.files[-1] == A.LockedFile(
        "test/1.txt", sha(URL_CONTENT[BOOK_URL]), len(URL_CONTENT[BOOK_URL]), BOOK_URL
    )
    bad = {**spec, "sha256": {"test/1.txt": "0" * 64}}
    with pytest.raises(RunFailure, match="manifest expects"):
        A.lock_asset("book", bad, FakeResolver(REV_DATA, remote), FakeDownloader(), tmp_path)


def test_lock_command_writes_a_lock_that_fetch_and_verify_accept(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fake = FakeDownloader()
    monkeypatch.setattr(A, "HubDownloader", lambda: fake)
    monkeypatch.setattr(A, "HubResolver", lambda: FakeResolver(REV_MODEL, tiny_remote()))
    manifest = tmp_path / "assets.json"
    manifest.write_text(json.dumps({"assets": {"tiny": SPEC, "other": {**SPEC, "repo": "org/other"}}}))
    lock = tmp_path / "out.lock.json"
    assert main(["assets", "lock", "--manifest", str(manifest), "--lock", str(lock), "--only", "tiny"]) == 0
    written = json.loads(lock.read_text())["assets"]
    assert written["tiny"]["revision"] == REV_MODEL and "lock_required" not in written["tiny"]
    assert written["other"]["lock_required"] is True and written["other"]["files"] == []
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "tiny"]) == 0
    assert main(["assets", "verify", "--lock", str(lock), "--only", "tiny"]) == 0


def test_hub_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert A.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert A.hub_cache_dir() == tmp_path / "c"
    assert A.hub_cache_dir("/x") == Path("/x")


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 KB"), (5_700_000_000, "5.7 GB")])
def test_human_size(n, text):
    assert A.human_size(n) == text


def test_corrupt_url_file_is_downloaded_again(env):
    cache, lock, fake = env
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "book"]) == 0
    book = cache / "datasets--org--text" / "snapshots" / REV_DATA / "test/1.txt"
    book.write_bytes(b"x" * len(URL_CONTENT[BOOK_URL]))
    assert main(["assets", "fetch", "--lock", str(lock), "--only", "book"]) == 0
    assert fake.calls[-1] == ("url", BOOK_URL) and book.read_bytes() == URL_CONTENT[BOOK_URL]
