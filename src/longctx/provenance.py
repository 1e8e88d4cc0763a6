"""Where a number came from: the machine fingerprint (NVML) and the code version.

``fingerprint()`` returns ``{"identity": ..., "observed": ...}``. ``identity`` is stable for a
machine + software stack and is what baselines are keyed on; ``observed`` is per-run telemetry
(clocks, temperature, power, throttle reasons) and is never hashed. Every NVML call is guarded:
a field that cannot be read holds ``{"unavailable": "<why>"}`` instead of crashing the run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

# Packages whose versions can change a number in the paper.
KEY_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "tokenizers",
    "huggingface_hub",
    "captum",
    "numpy",
    "nvidia-ml-py",
)

PACKAGE_ROOT = Path(__file__).resolve().parent
# Code that only renders results (package-relative paths); editing it must not invalidate measured results.
PRESENTATION_ONLY = ("paper", "commands/paper.py")


def _unavailable(exc: BaseException | str) -> dict[str, str]:
    return {"unavailable": exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"}


def _guard(fn, *args):
    """Call one NVML function; on any failure return a record of why instead of raising."""
    try:
        value = fn(*args)
    except Exception as exc:  # noqa: BLE001 - every NVML failure mode must be survivable
        return _unavailable(exc)
    return value.decode() if isinstance(value, bytes) else value


def _load_nvml():
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError as exc:
        return None, f"nvidia-ml-py not importable: {exc}"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable (no NVIDIA GPU or driver): {type(exc).__name__}: {exc}"
    return pynvml, None


def _gpu_identity(nvml, handle) -> dict[str, Any]:
    mem = _guard(nvml.nvmlDeviceGetMemoryInfo, handle)
    cc = _guard(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    return {
        "name": _guard(nvml.nvmlDeviceGetName, handle),
        "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, tuple) else cc,
        "memory_total_bytes": getattr(mem, "total", mem),
    }


def _gpu_observed(nvml, handle) -> dict[str, Any]:
    power = _guard(nvml.nvmlDeviceGetPowerUsage, handle)
    limit = _guard(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    return {
        "sm_clock_mhz": _guard(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
        "mem_clock_mhz": _guard(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM),
        "temperature_c": _guard(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
        "power_draw_w": power / 1000.0 if isinstance(power, (int, float)) else power,
        "power_limit_w": limit / 1000.0 if isinstance(limit, (int, float)) else limit,
        "clock_event_reasons": _guard(_clock_event_reasons, nvml, handle),
    }


def _clock_event_reasons(nvml, handle) -> int:
    fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return fn(handle)


def nvml_snapshot(nvml=None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return (gpu identity block, per-GPU observed telemetry). ``nvml`` may be a fake for tests."""
    reason = None
    if nvml is None:
        nvml, reason = _load_nvml()
    if nvml is None:
        return {"available": False, "reason": reason, "count": 0, "devices": []}, []
    count = _guard(nvml.nvmlDeviceGetCount)
    if not isinstance(count, int):
        return {"available": False, "reason": str(count), "count": 0, "devices": []}, []
    devices, observed = [], []
    for index in range(count):
        handle = _guard(nvml.nvmlDeviceGetHandleByIndex, index)
        if isinstance(handle, dict) and "unavailable" in handle:
            devices.append({"index": index, **handle})
            observed.append({"index": index, **handle})
            continue
        devices.append({"index": index, **_gpu_identity(nvml, handle)})
        observed.append({"index": index, **_gpu_observed(nvml, handle)})
    identity = {
        "available": count > 0,
        "count": count,
        "driver_version": _guard(nvml.nvmlSystemGetDriverVersion),
        "cuda_driver_version": _guard(nvml.nvmlSystemGetCudaDriverVersion),
        "devices": devices,
    }
    if count == 0:
        identity["reason"] = "NVML reports no GPU"
    return identity, observed


@cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _torch_stack() -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return _unavailable(exc)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": torch.cuda.is_available(),
    }


def fingerprint(nvml=None) -> dict[str, Any]:
    """The machine fingerprint of the spec: a hashed ``identity`` and unhashed ``observed`` telemetry."""
    gpu, observed = nvml_snapshot(nvml)
    identity = {
        "gpu": gpu,
        "torch_stack": _torch_stack(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": _package_versions(),
    }
    return {
        "identity": identity,
        "identity_hash": sha256_json(identity),
        "observed": {"time_utc": utc_now(), "gpus": observed},
    }


def observed_now(nvml=None) -> dict[str, Any]:
    """Telemetry only (cheap), for the before/after snapshot around a run."""
    return {"time_utc": utc_now(), "gpus": nvml_snapshot(nvml)[1]}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@cache
def source_sha256() -> str:
    """sha256 over the package's measuring code (every .py outside the presentation-only subpackages).

    This, not the git commit alone, enters the config hash: it also covers uncommitted edits and
    installs without a git checkout, so two results with one hash cannot come from different code.
    """
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        rel = path.relative_to(PACKAGE_ROOT)
        if rel.parts[0] in PRESENTATION_ONLY or rel.as_posix() in PRESENTATION_ONLY:
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def code_version() -> dict[str, Any]:
    from longctx import __version__

    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=all", "--", ".")
        dirty = None if status is None else any(_changes_measuring_code(line) for line in status.splitlines())
    return {
        "package_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "source_sha256": source_sha256(),
    }


def _changes_measuring_code(status_line: str) -> bool:
    """A ``git status --porcelain`` line that changes the package: any tracked change, or an untracked ``.py``."""
    return not status_line.startswith("??") or status_line.rstrip().endswith(".py")


def provenance(started_utc: str, argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance block of a result: code version, container image, command line, times."""
    return {
        "code_version": code_version(),
        "container_image": os.environ.get("LONGCTX_IMAGE_ID"),
        "command_line": list(sys.argv if argv is None else argv),
        "start_utc": started_utc,
        "end_utc": utc_now(),
        "hostname": platform.node(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
