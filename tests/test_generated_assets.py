"""Generated assets survive interruption: built aside, renamed into place, marked complete with their hash.

The fault-injection tests kill a real tiny-model build (SIGINT and SIGKILL to its own process group) after its
first model is written, then show that the next ``ensure`` call rebuilds it and succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from longctx.data.samples import ensure_smoke_text
from longctx.errors import UsageError
from longctx.generated_assets import GeneratedAsset, ensure_generated, why_rebuild
from longctx.tiny import TINY_MODEL_NAMES, ensure_tiny_models, tiny_models_asset

SRC = Path(__file__).resolve().parents[1] / "src"

# The child builds the tiny models, says when the first one is on disk, then stalls until it is killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import longctx.tiny as tiny

    save, flag = tiny._save, Path(sys.argv[2])

    def save_then_stall(*args, **kwargs):
        path = save(*args, **kwargs)
        flag.touch()
        time.sleep(600)
        return path

    tiny._save = save_then_stall
    tiny.ensure_tiny_models(sys.argv[1], train_steps=0)
    """
)


def _marker(path: Path) -> Path:
    return path.parent / f".{path.name}.complete"


def _mtimes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def _kill_build_midway(target: Path, sig: signal.Signals, tmp_path: Path) -> None:
    flag = tmp_path / "first-model-written"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), str(flag)],
        env=env,
        start_new_session=True,  # its own process group: the signal reaches the build and nothing else
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not flag.exists():
            assert child.poll() is None, "the build exited before it was interrupted"
            assert time.monotonic() < deadline, "the build never wrote its first model"
            time.sleep(0.1)
        os.killpg(child.pid, sig)
        assert child.wait(timeout=60) != 0
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _assert_complete(target: Path) -> None:
    assert why_rebuild(tiny_models_asset(target, train_steps=0)) is None
    for name in TINY_MODEL_NAMES:
        assert json.loads((target / name / "config.json").read_text())["model_type"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_tiny_build_leaves_nothing_half_built_and_the_next_call_rebuilds(tmp_path, capsys, sig):
    target = tmp_path / "assets" / "tiny"
    _kill_build_midway(target, sig, tmp_path)
    assert not target.exists() and not _marker(target).exists()  # the first model was written aside, not here
    leftovers = list(target.parent.glob(".tiny.building-*"))
    # SIGINT runs the build's cleanup; SIGKILL cannot, and the next build removes what it left.
    assert (leftovers == []) if sig == signal.SIGINT else (len(leftovers) == 1)
    ensure_tiny_models(target, train_steps=0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "tiny models" in lines[0] and "not built yet" in lines[0]
    _assert_complete(target)
    assert not list(target.parent.glob(".tiny.building-*"))


@pytest.fixture(scope="module")
def built_once(tmp_path_factory) -> Path:
    """A complete tiny build to copy from (building costs seconds; copying does not)."""
    target = tmp_path_factory.mktemp("built") / "tiny"
    ensure_tiny_models(target, train_steps=0)
    return target


def _copy_build(built: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(built, dest)
    shutil.copy2(_marker(built), _marker(dest))
    return dest


def test_a_complete_build_is_not_rebuilt(built_once, tmp_path, capsys):
    target = _copy_build(built_once, tmp_path / "tiny")
    before = _mtimes(target)
    ensure_tiny_models(target, train_steps=0)
    assert capsys.readouterr().out == ""
    assert _mtimes(target) == before


def test_a_zero_byte_config_without_marker_is_rebuilt(tmp_path, capsys):
    """The layout an interrupted build of the old code left behind: the runner used to trust it forever."""
    target = tmp_path / "tiny"
    (target / "tiny-qwen3").mkdir(parents=True)
    (target / "tiny-qwen3" / "config.json").write_bytes(b"")
    ensure_tiny_models(target, train_steps=0)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "incomplete (no completeness marker" in out[0]
    _assert_complete(target)


@pytest.mark.parametrize("damage", ["truncate-config", "wrong-marker-hash", "unreadable-marker", "other-recipe"])
def test_damaged_or_mismatching_build_is_rebuilt(built_once, tmp_path, capsys, damage):
    target = _copy_build(built_once, tmp_path / "tiny")
    marker = _marker(target)
    expected = {
        "truncate-config": "content does not match its marker",
        "wrong-marker-hash": "content does not match its marker",
        "unreadable-marker": "marker .tiny.complete is unreadable",
        "other-recipe": "built with other parameters (train_steps)",
    }[damage]
    if damage == "truncate-config":
        (target / "tiny-qwen3" / "config.json").write_bytes(b"")
    elif damage == "wrong-marker-hash":
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "sha256": "0" * 64}))
    elif damage == "unreadable-marker":
        marker.write_text("{")
    else:
        recipe = {"kind": "tiny-models", "seed": 0, "train_steps": 5}
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "recipe": recipe}))
    ensure_tiny_models(target, train_steps=0)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and expected in out[0], out
    _assert_complete(target)


def test_a_directory_holding_other_files_is_never_replaced(tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"refusing to replace .*notes\.txt"):
        ensure_tiny_models(target, train_steps=0)
    assert (target / "notes.txt").read_text() == "keep me" and capsys.readouterr().out == ""


def test_an_empty_directory_is_simply_built_into(tmp_path, capsys):
    target = tmp_path / "tiny"
    target.mkdir()
    ensure_tiny_models(target, train_steps=0)
    assert "not built yet" in capsys.readouterr().out
    _assert_complete(target)


def test_a_failed_build_leaves_no_marker_and_no_staging(tmp_path):
    def failing_build(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    asset = GeneratedAsset(tmp_path / "x.json", "thing", {"v": 1}, build=failing_build)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_generated(asset)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.json.lock"]


def test_concurrent_ensures_build_once(tmp_path):
    """Two runs starting together: the second waits on the build lock, then finds the asset complete."""
    import threading

    builds = []

    def slow_build(path: Path) -> None:
        builds.append(path)
        time.sleep(0.5)
        path.write_text("done")

    asset = GeneratedAsset(tmp_path / "x.txt", "thing", {"v": 1}, build=slow_build)
    threads = [threading.Thread(target=ensure_generated, args=(asset,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and (tmp_path / "x.txt").read_text() == "done" and why_rebuild(asset) is None


def test_smoke_text_is_built_once_and_rebuilt_when_truncated_or_reseeded(tmp_path, capsys):
    path = tmp_path / "samples" / "smoke-pg19.json"
    ensure_smoke_text(path, 200, seed=1)
    text = json.loads(path.read_text())["text"]
    assert "not built yet" in capsys.readouterr().out
    before = path.stat().st_mtime_ns
    ensure_smoke_text(path, 200, seed=1)
    assert capsys.readouterr().out == "" and path.stat().st_mtime_ns == before
    path.write_text(path.read_text()[:50])
    ensure_smoke_text(path, 200, seed=1)
    assert "content does not match its marker" in capsys.readouterr().out
    assert json.loads(path.read_text())["text"] == text
    ensure_smoke_text(path, 200, seed=2)
    assert "built with other parameters (seed)" in capsys.readouterr().out
    assert json.loads(path.read_text())["text"] != text
    with pytest.raises(UsageError, match="n_words > 0"):
        ensure_smoke_text(tmp_path / "bad.json", 0, seed=1)
