"""`longctx assets lock|fetch|verify` against a fake Hub cache built in tmp_path (no network)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from longctx import assets as A
from longctx.cli import main
from longctx.errors import RunFailure, UsageError

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


# ------------------------------------------------------------------------------- fetch without a prior lock


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_listing(repo: str) -> list[A.RemoteFile]:
    """The Hub's file metadata at the pinned commit: weights are LFS (sha256), the rest git blobs (sha1)."""
    files = [A.RemoteFile("README.md", 10, None, "f" * 40)]
    for (r, path), data in CONTENT.items():
        if r == repo:
            lfs = path.endswith(".safetensors")
            files.append(
                A.RemoteFile(path, len(data), sha(data) if lfs else None, None if lfs else git_blob_sha1(data))
            )
    return files


class HubMetadata:
    """A resolver that answers like the Hub at the pinned commits; fetch must never ask it to hash a file."""

    revisions = {"org/tiny": REV_MODEL, "org/text": REV_DATA}

    def files(self, repo, repo_type, revision):
        assert revision == self.revisions[repo]
        return revision, hub_listing(repo)

    def sha256_of(self, *args):
        raise AssertionError("fetch takes hashes from the Hub's metadata, it does not download to hash")


MANIFEST = {
    "assets": {
        "tiny": {**SPEC, "description": "a tiny model"},
        "book": {
            "repo": "org/text",
            "repo_type": "dataset",
            "revision": REV_DATA,
            "files": ["data/list.txt"],
            "urls": {"test/1.txt": BOOK_URL},
            "sha256": {"test/1.txt": sha(URL_CONTENT[BOOK_URL])},
        },
    }
}


@pytest.fixture
def unlocked(tmp_path, monkeypatch):
    """A manifest pinning commits and the lock as committed before anyone ran `assets lock` (no file hashes)."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    fake = FakeDownloader()
    monkeypatch.setattr(A, "HubDownloader", lambda: fake)
    monkeypatch.setattr(A, "HubResolver", HubMetadata)
    manifest = tmp_path / "assets.json"
    manifest.write_text(json.dumps(MANIFEST))
    assets = {name: A.unlocked_asset(name, spec) for name, spec in MANIFEST["assets"].items()}
    lock = tmp_path / "assets.lock.json"
    A.write_lock(lock, assets, "initial pins")
    return cache, lock, manifest, fake


def test_fetch_without_a_lock_checks_the_hub_hashes_and_writes_the_lock(unlocked, monkeypatch, capsys):
    cache, lock, manifest, fake = unlocked
    assert main(["assets", "verify", "--lock", str(lock)]) == 2
    assert "get it with `longctx assets fetch --only tiny`" in capsys.readouterr().out  # no `lock` step needed
    assert main(["assets", "fetch", "--lock", str(lock), "--manifest", str(manifest)]) == 0
    assert ("snapshot", "tiny", ("config.json", "model.safetensors")) in fake.calls and ("url", BOOK_URL) in fake.calls
    written = json.loads(lock.read_text())
    assert written["generated_by"].startswith("longctx assets fetch")
    for name, repo in (("tiny", "org/tiny"), ("book", "org/text")):
        entry = written["assets"][name]
        assert "lock_required" not in entry and entry["revision"] == MANIFEST["assets"][name]["revision"]
        for f in entry["files"]:
            data = CONTENT.get((repo, f["path"])) or URL_CONTENT[f["url"]]
            assert (f["sha256"], f["size"]) == (sha(data), len(data))
    assert [f["path"] for f in written["assets"]["tiny"]["files"]] == ["config.json", "model.safetensors"]
    # `verify` now works offline, from the written lock alone.
    monkeypatch.setattr(A, "HubDownloader", lambda: pytest.fail("verify must not download"))
    monkeypatch.setattr(A, "HubResolver", lambda: pytest.fail("verify must not ask the Hub"))
    assert main(["assets", "verify", "--lock", str(lock)]) == 0
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache("org/tiny", "config.json", cache_dir=cache)  # refs/main points at the pin


@pytest.mark.parametrize(
    ("path", "why"), [("config.json", "git blob sha1 differs"), ("model.safetensors", "sha256 differs")]
)
def test_fetch_without_a_lock_refuses_a_download_that_differs_from_the_hub(unlocked, capsys, path, why):
    cache, lock, manifest, fake = unlocked
    before = lock.read_text()
    good = fake.content[("org/tiny", path)]
    fake.content[("org/tiny", path)] = bytes([good[0] ^ 1]) + good[1:]  # same size, other content
    assert main(["assets", "fetch", "--lock", str(lock), "--manifest", str(manifest), "--only", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "do not match the Hub's metadata" in err and f"{path} ({why}" in err
    assert lock.read_text() == before  # nothing unverified enters the lock
    assert not (cache / "models--org--tiny" / "snapshots" / REV_MODEL / path).exists()


def test_fetch_locks_asset_by_asset(unlocked, capsys):
    """An interrupted fetch keeps what it verified: the lock is written after each asset."""
    _, lock, manifest, fake = unlocked
    fake.url_content[BOOK_URL] = b"another book"
    assert main(["assets", "fetch", "--lock", str(lock), "--manifest", str(manifest)]) == 1
    written = json.loads(lock.read_text())["assets"]
    assert written["tiny"]["files"] and "lock_required" not in written["tiny"]
    assert written["book"]["lock_required"] is True and written["book"]["files"] == []


def test_fetch_without_a_lock_needs_pins_and_url_hashes(unlocked, tmp_path, capsys):
    _, lock, manifest, _ = unlocked
    spec = MANIFEST["assets"]["book"]
    no_hash = {k: v for k, v in spec.items() if k != "sha256"}
    manifest.write_text(json.dumps({"assets": {**MANIFEST["assets"], "book": no_hash}}))
    assert main(["assets", "fetch", "--lock", str(lock), "--manifest", str(manifest), "--only", "book"]) == 2
    assert "gives no sha256 for https://example.invalid/test/1.txt" in capsys.readouterr().err
    manifest.write_text(json.dumps({"assets": {**MANIFEST["assets"], "book": {**spec, "revision": "c" * 40}}}))
    assert main(["assets", "fetch", "--lock", str(lock), "--manifest", str(manifest), "--only", "book"]) == 2
    assert "the lock pins " + REV_DATA in capsys.readouterr().err


def test_git_blob_sha1_is_gits(tmp_path):
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    # `git hash-object` of these two files
    assert A.git_blob_sha1_and_sha256(empty)[0] == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert A.git_blob_sha1_and_sha256(hello) == ("ce013625030ba8dba906f756967f9e9ca394464a", sha(b"hello\n"))


def test_hub_resolver_reads_lfs_sha256_and_blob_ids_from_huggingface_hub(monkeypatch):
    """The real resolver against huggingface_hub's own metadata classes (no network: repo_info is stubbed)."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants
    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

    siblings = [
        RepoSibling("config.json", size=26, blob_id="1" * 40),
        RepoSibling("model.safetensors", size=7000, blob_id="2" * 40, lfs=BlobLfsInfo(7000, "3" * 64, 134)),
    ]
    calls = []

    def repo_info(self, repo, **kwargs):
        calls.append((repo, kwargs))
        return SimpleNamespace(sha=REV_MODEL, siblings=siblings)

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    sha_, files = A.HubResolver().files("org/tiny", "model", REV_MODEL)
    assert sha_ == REV_MODEL and calls[0][1]["files_metadata"] is True and calls[0][1]["revision"] == REV_MODEL
    assert files == [
        A.RemoteFile("config.json", 26, None, "1" * 40),
        A.RemoteFile("model.safetensors", 7000, "3" * 64, "2" * 40),
    ]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match="need the network"):
        A.HubResolver().files("org/tiny", "model", REV_MODEL)


def test_default_paths_come_from_the_checkout_not_the_installed_package(tmp_path, monkeypatch):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "assets.lock.json").write_text(json.dumps({"assets": {}}))
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "results" / "smoke")
    assert A.default_path(A.LOCK_NAME) == tmp_path / "docker" / "assets.lock.json"
    monkeypatch.chdir(tmp_path)
    assert A.default_path(A.LOCK_NAME) == Path("docker/assets.lock.json")
    with pytest.raises(UsageError, match=r"docker/assets.json not found in .* or pass --manifest PATH"):
        A.load_manifest()
