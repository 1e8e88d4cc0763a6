"""Build generated assets (tiny models, smoke texts, samples) so that an interrupted build never looks finished.

A build writes into a temporary sibling and is renamed into place; only then is the completeness marker
``.<name>.complete`` written next to it, holding the recipe (the parameters that define the content) and the
sha256 of what was written. ``ensure_generated`` rebuilds whatever has no marker, was built from another
recipe, or no longer matches the marker's hash (a truncated or edited file), and prints one line saying why.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from longctx.assets import sha256_file
from longctx.atomic_files import atomic_write_json
from longctx.errors import RunFailure, UsageError

MARKER_SCHEMA = 1


@dataclass(frozen=True)
class GeneratedAsset:
    """One generated file or directory: where it lives, the recipe that defines it, and the function that builds it.

    ``build(path)`` writes the asset at ``path`` (a temporary location; it need not be atomic). ``owned_names``
    are the top-level entries a directory build writes: an existing directory holding anything else is never
    replaced, so pointing a build at a directory of one's own cannot delete one's files.
    """

    path: Path
    label: str
    recipe: dict
    build: Callable[[Path], object]
    owned_names: frozenset[str] = field(default_factory=frozenset)
    hint: str = ""

    @property
    def marker(self) -> Path:
        return self.path.parent / f".{self.path.name}.complete"


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (sorted relative paths and their sha256): what a marker holds."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def why_rebuild(asset: GeneratedAsset) -> str | None:
    """Why ``asset`` must be (re)built, or None when its marker says it is complete and its content matches."""
    if not asset.marker.is_file():
        if asset.path.exists() and not (asset.path.is_dir() and not any(asset.path.iterdir())):
            return f"incomplete (no completeness marker {asset.marker.name}: an interrupted or older build)"
        return "not built yet"
    try:
        marker = json.loads(asset.marker.read_text(encoding="utf-8"))
        recipe, expected = marker["recipe"], marker["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its completeness marker {asset.marker.name} is unreadable"
    if not asset.path.exists():
        return "missing (its marker is there, the content is not)"
    if recipe != asset.recipe:
        changed = sorted(k for k in {*recipe, *asset.recipe} if recipe.get(k) != asset.recipe.get(k))
        return f"built with other parameters ({', '.join(changed)})"
    actual = content_sha256(asset.path)
    if actual != expected:
        return f"content does not match its marker (sha256 {actual[:12]} != {str(expected)[:12]}: truncated or edited)"
    return None


def ensure_generated(asset: GeneratedAsset) -> bool:
    """Build ``asset`` unless it is complete; True when it was (re)built. One process builds at a time."""
    if why_rebuild(asset) is None:
        return False
    with _build_lock(asset.path):
        reason = why_rebuild(asset)  # another process may have finished it while we waited
        if reason is None:
            return False
        _refuse_foreign_content(asset)
        print(f"{asset.label} {asset.path}: {reason}; building it{asset.hint}", flush=True)
        _remove_leftovers(asset.path)
        asset.marker.unlink(missing_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{asset.path.name}.building-", dir=asset.path.parent))
        try:
            built = staging / asset.path.name
            asset.build(built)
            if not built.exists():
                raise RunFailure(f"building {asset.label} {asset.path} wrote nothing")
            digest = content_sha256(built)
            if asset.path.exists() or asset.path.is_symlink():
                asset.path.rename(staging / "previous")  # removed with the staging directory
            built.rename(asset.path)
            _write_marker(asset, digest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``.<name>.lock`` beside the asset: concurrent runs build it once, not twice at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(path: Path) -> None:
    """Staging directories of builds that were killed (SIGKILL, power loss): safe to drop under the build lock."""
    for stale in path.parent.glob(f".{path.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _refuse_foreign_content(asset: GeneratedAsset) -> None:
    if not asset.path.is_dir():
        return
    foreign = sorted(p.name for p in asset.path.iterdir() if p.name not in asset.owned_names)
    if foreign:
        raise UsageError(
            f"refusing to replace {asset.path}: it holds {', '.join(foreign[:5])}, which the {asset.label} build "
            "does not write; move them away or choose another directory"
        )


def _write_marker(asset: GeneratedAsset, digest: str) -> None:
    atomic_write_json(asset.marker, {"schema": MARKER_SCHEMA, "recipe": asset.recipe, "sha256": digest})
