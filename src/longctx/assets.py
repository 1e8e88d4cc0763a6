"""The pinned assets of the full profile: manifest, lock, offline verification, fetch and lock resolution.

``docker/assets.json`` says what the paper needs (repo, commit sha, file patterns, direct URLs with sha256 for
files a dataset's loader reads from outside the Hub). ``docker/assets.lock.json`` holds, per asset, the commit
sha and every file with its size and sha256. ``fetch`` downloads exactly the locked files into the Hugging Face
cache and checks their sha256; for an asset the lock does not list yet, the pinned commit already fixes every
file's content, so ``fetch`` takes the expected hashes from the Hub's file metadata at that commit (sha256 for
LFS files, the git blob sha1 for the others), checks every download against them and writes the lock as it goes.
``verify`` checks the cache offline. ``lock`` resolves the manifest without downloading the weights. The network
sits behind two small injectable classes (``HubDownloader``, ``HubResolver``) so tests use fakes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from longctx.atomic_files import atomic_write_json
from longctx.errors import RunFailure, UsageError

SHA1_RE = re.compile(r"[0-9a-f]{40}")
MANIFEST_NAME = "assets.json"
LOCK_NAME = "assets.lock.json"
SCHEMA_VERSION = 1
_BLOCK = 1 << 20


# ----------------------------------------------------------------------------------------------- data model


@dataclass
class LockedFile:
    """One file of an asset: its path inside the repo snapshot, size, sha256 and, if off-Hub, its URL."""

    path: str
    sha256: str
    size: int
    url: str | None = None


@dataclass
class Asset:
    """One pinned asset. ``files`` is empty until the asset is locked (``lock_required``)."""

    name: str
    repo: str
    repo_type: str
    revision: str | None
    description: str = ""
    optional: bool = False
    files: list[LockedFile] = field(default_factory=list)

    @property
    def pinned(self) -> bool:
        """The revision is a commit sha: every file's content is fixed, even before the lock lists the files."""
        return bool(self.revision and SHA1_RE.fullmatch(self.revision))

    @property
    def locked(self) -> bool:
        return self.pinned and bool(self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def snapshot_dir(self, cache_dir: Path) -> Path:
        """``<cache>/<type>s--<org>--<name>/snapshots/<sha>``: where the Hub cache keeps this revision."""
        return repo_cache_dir(cache_dir, self.repo, self.repo_type) / "snapshots" / str(self.revision)

    def fetch_command(self) -> str:
        return f"longctx assets fetch --only {self.name}"


def repo_cache_dir(cache_dir: Path, repo: str, repo_type: str) -> Path:
    return Path(cache_dir) / f"{repo_type}s--{repo.replace('/', '--')}"


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hub cache the same way huggingface_hub resolves it, read now (tests and the image set it by env)."""
    if cache_dir is not None:
        return Path(cache_dir)
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def default_path(name: str) -> Path:
    """``docker/<name>`` of the project checkout: the working directory's, or that of its nearest parent with one."""
    cwd = Path.cwd()
    for root in (cwd, *cwd.parents):
        if (root / "docker" / name).is_file():
            return Path("docker") / name if root == cwd else root / "docker" / name
    flag = "--manifest" if name == MANIFEST_NAME else "--lock"
    raise UsageError(
        f"docker/{name} not found in {cwd} or its parents: run longctx from the project checkout "
        f"(in the image: /opt/longctx) or pass {flag} PATH"
    )


def load_manifest(path: Path | None = None) -> dict:
    """The hand-written manifest: {"assets": {name: {repo, repo_type, revision, files, urls, sha256, ...}}}."""
    return _read_json(path or default_path(MANIFEST_NAME), "asset manifest")


def load_lock(path: Path | None = None) -> dict[str, Asset]:
    """The lock as ``{name: Asset}``; assets not yet locked have no files."""
    data = _read_json(path or default_path(LOCK_NAME), "asset lock")
    assets = {}
    for name, entry in data.get("assets", {}).items():
        files = [LockedFile(**f) for f in entry.get("files") or []]
        assets[name] = replace(unlocked_asset(name, entry), files=files)
    return assets


def lock_document(assets: dict[str, Asset], hub_version: str, generated_by: str) -> dict:
    """The JSON written to ``assets.lock.json`` (assets that could not be locked keep ``lock_required``)."""
    body = {}
    for name, asset in assets.items():
        entry = asdict(asset)
        entry.pop("name")
        entry["files"] = [{k: v for k, v in asdict(f).items() if v is not None} for f in asset.files]
        if not asset.locked:
            entry["lock_required"] = True
        body[name] = entry
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_by": generated_by,
        "locked_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "huggingface_hub": hub_version,
        "assets": body,
    }


def write_lock(path: Path, assets: dict[str, Asset], generated_by: str) -> Path:
    """Write the lock atomically: an interrupted fetch or lock never leaves half a lock file."""
    import huggingface_hub

    return atomic_write_json(path, lock_document(assets, huggingface_hub.__version__, generated_by))


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} not found") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from None


def select(assets: dict[str, Asset], only: str | Iterable[str] | None) -> list[Asset]:
    """The assets named by ``--only`` (comma list); all non-optional assets when ``only`` is empty."""
    if not only:
        return [a for a in assets.values() if not a.optional]
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = [n for n in names if n not in assets]
    if unknown:
        raise UsageError(f"unknown asset(s) {', '.join(unknown)}; known: {', '.join(assets)}")
    return [assets[n] for n in dict.fromkeys(names)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1_and_sha256(path: Path) -> tuple[str, str]:
    """In one read: the file's git blob id (sha1 of ``blob <size>\\0`` + content, what the Hub lists for files not
    in LFS) and its sha256 (what the lock records)."""
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            blob.update(block)
            digest.update(block)
    return blob.hexdigest(), digest.hexdigest()


# ----------------------------------------------------------------------------------------------- verify


@dataclass
class AssetStatus:
    """The verdict on one asset in the local cache. ``ok`` is True only when every locked file checks out."""

    asset: Asset
    state: str  # ok | missing | corrupt | not locked
    problems: list[str] = field(default_factory=list)
    bad_paths: list[str] = field(default_factory=list)  # locked files that are absent or do not match

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def fix_command(self) -> str:
        """What gets the asset: fetch (it takes file hashes from the Hub at a pinned commit); lock first if unpinned."""
        fetch = self.asset.fetch_command()
        return fetch if self.asset.pinned else f"longctx assets lock --only {self.asset.name} && {fetch}"


def verify_asset(asset: Asset, cache_dir: Path, quick: bool = False) -> AssetStatus:
    """Check one asset's locked files in the cache: present, right size and (unless ``quick``) right sha256."""
    if not asset.locked:
        present = asset.revision and asset.snapshot_dir(cache_dir).is_dir()
        return AssetStatus(
            asset,
            "not locked" if present else "missing",
            [f"snapshot {str(asset.revision)[:12]} {'present' if present else 'absent'}; file sha256 not locked yet"],
        )
    snap = asset.snapshot_dir(cache_dir)
    missing, corrupt, bad = [], [], []
    for f in asset.files:
        path = snap / f.path
        if not path.is_file():
            missing.append(f"{f.path} (missing)")
        elif path.stat().st_size != f.size:
            corrupt.append(f"{f.path} (size {path.stat().st_size} != {f.size})")
        elif not quick and sha256_file(path) != f.sha256:
            corrupt.append(f"{f.path} (sha256 mismatch)")
        else:
            continue
        bad.append(f.path)
    if corrupt:
        return AssetStatus(asset, "corrupt", corrupt + missing, bad)
    if missing:
        return AssetStatus(asset, "missing", missing, bad)
    return AssetStatus(asset, "ok")


def verify(assets: list[Asset], cache_dir: Path, quick: bool = False) -> list[AssetStatus]:
    return [verify_asset(a, cache_dir, quick) for a in assets]


def locked_file(name: str, path: str, cache_dir: str | os.PathLike | None = None, lock: Path | None = None) -> Path:
    """The verified local copy of one locked file; UsageError naming the fetch command when absent or bad."""
    assets = load_lock(lock)
    if name not in assets:
        raise UsageError(f"asset {name!r} is not in the asset lock")
    asset = assets[name]
    entry = next((f for f in asset.files if f.path == path), None)
    if entry is None and asset.locked:
        raise UsageError(f"asset {name!r} locks no file {path!r}: docker/assets.json and the lock disagree")
    single = Asset(asset.name, asset.repo, asset.repo_type, asset.revision, files=[entry] if entry else [])
    status = verify_asset(single, hub_cache_dir(cache_dir))
    if not status.ok:
        raise UsageError(
            f"asset {name} ({asset.repo}@{str(asset.revision)[:12]}) {status.state}: {'; '.join(status.problems)}; "
            f"get it with `{status.fix_command}`"
        )
    return single.snapshot_dir(hub_cache_dir(cache_dir)) / path


# ----------------------------------------------------------------------------------------------- fetch


def _require_network() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise UsageError("`longctx assets fetch` and `lock` need the network: run them with HF_HUB_OFFLINE=0")


class HubDownloader:
    """The network side of ``fetch``: the Hub (pinned commit, exact files) and direct URLs."""

    def snapshot(self, asset: Asset, paths: list[str], cache_dir: Path) -> None:
        from huggingface_hub import snapshot_download

        _require_network()
        snapshot_download(
            asset.repo, repo_type=asset.repo_type, revision=asset.revision, allow_patterns=paths, cache_dir=cache_dir
        )

    def url(self, url: str, dest: Path) -> None:
        with urllib.request.urlopen(url, timeout=120) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, _BLOCK)


def fetch_asset(asset: Asset, cache_dir: Path, downloader: HubDownloader) -> AssetStatus:
    """Download what is missing or bad of one locked asset, point ``refs/main`` at the pin, verify everything."""
    if not asset.locked:
        raise UsageError(f"asset {asset.name} is not locked yet: run `longctx assets lock --only {asset.name}`")
    status = verify_asset(asset, cache_dir)
    if status.ok:
        _write_ref(asset, cache_dir)
        return status
    snap = asset.snapshot_dir(cache_dir)
    for path in status.bad_paths:
        _discard(snap / path)
    bad = set(status.bad_paths)
    hub_paths = [f.path for f in asset.files if f.url is None and f.path in bad]
    if hub_paths:
        downloader.snapshot(asset, hub_paths, cache_dir)
    for f in asset.files:
        if f.url is not None and f.path in bad:
            _fetch_url_file(f, snap / f.path, downloader)
    _write_ref(asset, cache_dir)
    status = verify_asset(asset, cache_dir)
    if not status.ok:
        raise RunFailure(f"asset {asset.name} {status.state} after download: {'; '.join(status.problems)}")
    return status


def fetch_unlocked_asset(
    name: str, spec: dict, cache_dir: Path, resolver: HubResolver, downloader: HubDownloader
) -> AssetStatus:
    """Fetch an asset the lock does not list yet, checking every download against the Hub's file metadata at the
    manifest's pinned commit (URL files against the manifest's sha256). The status holds the asset, now locked."""
    if not SHA1_RE.fullmatch(spec.get("revision") or ""):
        raise UsageError(
            f"asset {name} is not pinned to a commit in the manifest: run `longctx assets lock --only {name}`"
        )
    urls: dict[str, str] = spec.get("urls", {})
    unhashed = [url for path, url in urls.items() if path not in spec.get("sha256", {})]
    if unhashed:
        raise UsageError(f"asset {name}: the manifest gives no sha256 for {', '.join(unhashed)} to check it against")
    sha, remote = _pinned_remote_files(name, spec, resolver)
    asset = replace(unlocked_asset(name, spec), revision=sha)
    digests = _fetch_checked_against_hub(asset, remote, cache_dir, downloader)
    files = [LockedFile(path=f.path, sha256=digests[f.path], size=f.size) for f in remote]
    snap = asset.snapshot_dir(cache_dir)
    for path, url in urls.items():
        entry = LockedFile(path=path, sha256=spec["sha256"][path], size=0, url=url)
        if not ((snap / path).is_file() and sha256_file(snap / path) == entry.sha256):
            _discard(snap / path)
            _fetch_url_file(entry, snap / path, downloader)
        files.append(replace(entry, size=(snap / path).stat().st_size))
    _write_ref(asset, cache_dir)
    return AssetStatus(replace(asset, files=files), "ok")


def _fetch_checked_against_hub(
    asset: Asset, remote: list[RemoteFile], cache_dir: Path, downloader: HubDownloader
) -> dict[str, str]:
    """Download the files not already matching the Hub's metadata, check them all; every file's sha256 by path."""
    snap = asset.snapshot_dir(cache_dir)
    checked = {f.path: _check_against_hub(snap / f.path, f) for f in remote}
    todo = [f.path for f in remote if checked[f.path][1]]
    if todo:
        for path in todo:
            _discard(snap / path)
        downloader.snapshot(asset, todo, cache_dir)
        checked.update({f.path: _check_against_hub(snap / f.path, f) for f in remote if f.path in todo})
    bad = {path: why for path, (_, why) in checked.items() if why}
    if bad:
        for path in bad:
            _discard(snap / path)
        named = "; ".join(f"{path} ({why})" for path, why in bad.items())
        raise RunFailure(f"asset {asset.name}: downloads do not match the Hub's metadata at {asset.revision}: {named}")
    return {path: str(digest) for path, (digest, _) in checked.items()}


def _check_against_hub(path: Path, f: RemoteFile) -> tuple[str | None, str | None]:
    """(sha256, None) when the file matches the Hub's metadata (LFS sha256, else git blob sha1); (None, why) if not."""
    if not path.is_file():
        return None, "missing"
    size = path.stat().st_size
    if size != f.size:
        return None, f"size {size} != {f.size}"
    if f.lfs_sha256:
        digest = sha256_file(path)
        return (digest, None) if digest == f.lfs_sha256 else (None, "sha256 differs from the Hub's LFS metadata")
    if f.git_sha1:
        blob, digest = git_blob_sha1_and_sha256(path)
        return (digest, None) if blob == f.git_sha1 else (None, "git blob sha1 differs from the Hub's")
    return None, "the Hub lists no hash for it"


def _discard(path: Path) -> None:
    """Drop a bad snapshot entry and the blob it links to: the Hub client skips files whose entry exists."""
    if path.is_symlink():
        path.resolve().unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _fetch_url_file(f: LockedFile, dest: Path, downloader: HubDownloader) -> None:
    """A file the dataset's loader reads from outside the Hub: downloaded, checked, then moved into the snapshot."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        downloader.url(str(f.url), Path(tmp))
        got = sha256_file(Path(tmp))
        if got != f.sha256:
            raise RunFailure(f"{f.url}: sha256 {got} != locked {f.sha256}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_ref(asset: Asset, cache_dir: Path) -> None:
    """Offline lookups by repo id (``from_pretrained("org/name")``) resolve ``refs/main``: make it the pin."""
    ref = repo_cache_dir(cache_dir, asset.repo, asset.repo_type) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(str(asset.revision))


# ----------------------------------------------------------------------------------------------- lock


@dataclass
class RemoteFile:
    """A file as the Hub lists it at one commit: LFS files carry their sha256, the others their git blob sha1."""

    path: str
    size: int
    lfs_sha256: str | None
    git_sha1: str | None = None


class HubResolver:
    """The network side of ``lock``: a commit's file list with LFS metadata, and hashing of small files."""

    def __init__(self):
        from huggingface_hub import HfApi

        self.api = HfApi()

    def files(self, repo: str, repo_type: str, revision: str) -> tuple[str, list[RemoteFile]]:
        _require_network()
        info = self.api.repo_info(repo, repo_type=repo_type, revision=revision, files_metadata=True)
        files = [
            RemoteFile(
                s.rfilename, int(s.lfs.size if s.lfs else s.size or 0), s.lfs.sha256 if s.lfs else None, s.blob_id
            )
            for s in info.siblings or []
        ]
        return info.sha, files

    def sha256_of(self, repo: str, repo_type: str, revision: str, path: str, cache_dir: Path) -> str:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo, path, repo_type=repo_type, revision=revision, cache_dir=cache_dir)
        return sha256_file(Path(local))


def match_files(name: str, spec: dict, names: list[str]) -> list[str]:
    """The repo files a manifest entry asks for: every ``files`` pattern must match, ``optional_files`` may not,
    and ``weights`` lists alternatives in preference order (the first that matches wins: safetensors over .bin).
    """

    def matching(pattern: str) -> set[str]:
        return {n for n in names if fnmatch.fnmatchcase(n, pattern)}

    chosen: set[str] = set()
    for pattern in spec.get("files", []):
        found = matching(pattern)
        if not found:
            raise RunFailure(f"asset {name}: no file of {spec['repo']} matches {pattern!r}")
        chosen |= found
    for pattern in spec.get("optional_files", []):
        chosen |= matching(pattern)
    alternatives = spec.get("weights", [])
    if alternatives:
        weights = next((found for found in map(matching, alternatives) if found), None)
        if weights is None:
            raise RunFailure(f"asset {name}: no weights in {spec['repo']} match any of {alternatives}")
        chosen |= weights
    return sorted(chosen)


def _pinned_remote_files(name: str, spec: dict, resolver: HubResolver) -> tuple[str, list[RemoteFile]]:
    """The commit the manifest entry resolves to (checked against its pin) and the Hub's metadata of its files."""
    revision = spec.get("revision") or "main"
    sha, remote = resolver.files(spec["repo"], spec["repo_type"], revision)
    if not SHA1_RE.fullmatch(sha or ""):
        raise RunFailure(f"asset {name}: the Hub returned no commit sha for {spec['repo']}@{revision}")
    if spec.get("revision") and sha != spec["revision"]:
        raise RunFailure(f"asset {name}: pinned {spec['revision']} but the Hub resolved {sha}")
    by_path = {f.path: f for f in remote}
    return sha, [by_path[path] for path in match_files(name, spec, list(by_path))]


def lock_asset(name: str, spec: dict, resolver: HubResolver, downloader: HubDownloader, cache_dir: Path) -> Asset:
    """Resolve one manifest entry to a locked asset: commit sha, every file's size and sha256."""
    sha, remote = _pinned_remote_files(name, spec, resolver)
    urls: dict[str, str] = spec.get("urls", {})
    expected: dict[str, str] = spec.get("sha256", {})
    files = []
    for f in remote:
        digest = f.lfs_sha256 or resolver.sha256_of(spec["repo"], spec["repo_type"], sha, f.path, cache_dir)
        files.append(LockedFile(path=f.path, sha256=digest, size=f.size))
    for path, url in urls.items():
        files.append(_lock_url_file(name, path, url, expected.get(path), downloader))
    for f in files:
        if f.path in expected and expected[f.path] != f.sha256:
            raise RunFailure(f"asset {name}: {f.path} has sha256 {f.sha256}, the manifest expects {expected[f.path]}")
    return Asset(
        name=name,
        repo=spec["repo"],
        repo_type=spec["repo_type"],
        revision=sha,
        description=spec.get("description", ""),
        optional=bool(spec.get("optional", False)),
        files=files,
    )


def _lock_url_file(name: str, path: str, url: str, expected: str | None, downloader: HubDownloader) -> LockedFile:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "download"
        downloader.url(url, local)
        digest, size = sha256_file(local), local.stat().st_size
    if expected and digest != expected:
        raise RunFailure(f"asset {name}: {url} has sha256 {digest}, the manifest expects {expected}")
    return LockedFile(path=path, sha256=digest, size=size, url=url)


def unlocked_asset(name: str, spec: dict) -> Asset:
    """A manifest entry as a lock entry that still needs ``longctx assets lock`` (no files yet)."""
    return Asset(
        name=name,
        repo=spec["repo"],
        repo_type=spec["repo_type"],
        revision=spec.get("revision"),
        description=spec.get("description", ""),
        optional=bool(spec.get("optional", False)),
    )


def human_size(n: int) -> str:
    """Decimal units, as disk sizes are quoted (1 GB = 1e9 bytes)."""
    scaled, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB"):
        if scaled < 1000 or unit == "GB":
            break
        scaled /= 1000
    return f"{scaled:.0f} {unit}" if unit == "B" else f"{scaled:.1f} {unit}"
