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


def install_tiny_models(tiny_dir, project):
    """Copy the session's tiny models to ``project/assets/tiny`` with a completeness marker for the smoke plan's
    recipe, so the runner's ``ensure_tiny_models`` takes them as they are instead of building its own (a minute).
    They are trained for fewer steps than that recipe says: a shortcut for tests only."""
    import shutil

    from longctx.atomic_files import atomic_write_json
    from longctx.generated_assets import MARKER_SCHEMA, content_sha256
    from longctx.tiny import tiny_models_asset

    dest = project / "assets" / "tiny"
    shutil.copytree(tiny_dir, dest)
    asset = tiny_models_asset(dest)
    atomic_write_json(asset.marker, {"schema": MARKER_SCHEMA, "recipe": asset.recipe, "sha256": content_sha256(dest)})
    return dest


def slurm_unavailable_reason():
    """Why the Slurm tests cannot run here, or None when a node takes jobs and sacct works (submitit needs both)."""
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        return "no Slurm on PATH: run scripts/slurm-local.sh start (root, Debian/Ubuntu; .ci/run does)"
    try:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
        acct = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm does not answer ({exc}): run scripts/slurm-local.sh start"
    if nodes.returncode or not {"idle", "mix", "alloc"} & set(nodes.stdout.split()):
        said = (nodes.stdout.strip() or nodes.stderr.strip() or "nothing").splitlines()[-1]
        return f"no Slurm node takes jobs (sinfo: {said}): run scripts/slurm-local.sh start"
    if acct.returncode:
        said = (acct.stderr.strip() or "no output").splitlines()[-1]
        return f"sacct does not work, so submitit cannot watch jobs ({said}): run scripts/slurm-local.sh start"
    return None
