"""What one cell is expected to need: wall time, GPUs and host memory.

``estimate`` is the one place the executors ask (Slurm sizes each job from it, claims take their time limit from
it). It reads the plan's rough ``est_seconds_per_cell``: ``longctx predict`` gives a roofline lower bound, which
would make time limits too short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from longctx.plan import Plan
from longctx.study import Cell

DEFAULT_SECONDS = 600.0
CPU_MEM_GB = 4.0
GPU_MEM_GB = 32.0  # host memory to load an 8B model in bf16 and hold its tokenizer and inputs
SAFETY = 4.0  # a time limit is this many estimates (plus the fixed allowance below): estimates are rough
ALLOWANCE_S = 600.0  # interpreter start, model load, warm-up


@dataclass(frozen=True)
class Estimate:
    seconds: float
    gpus: int
    mem_gb: float


def gpus_of(config: dict) -> int:
    """GPUs a cell's config asks for: its ``cuda`` list, else one for a CUDA device (``auto``: one if visible)."""
    if config.get("cuda"):
        return len(str(config["cuda"]).split(","))
    device = str(config.get("device", "cpu"))
    if device == "auto":
        import torch

        return 1 if torch.cuda.is_available() else 0
    return 1 if device.startswith("cuda") else 0


def estimate(plan: Plan, cell: Cell) -> Estimate:
    """The expected wall time, GPU count and host memory of ``cell``."""
    gpus = gpus_of(cell.config)
    seconds = float(plan.est_seconds.get(cell.study) or DEFAULT_SECONDS)
    return Estimate(seconds=seconds, gpus=gpus, mem_gb=GPU_MEM_GB if gpus else CPU_MEM_GB)


def time_limit_s(seconds: float) -> float:
    """A generous limit for work expected to take ``seconds``: after it, a claim is stale and a Slurm job ends."""
    return math.ceil(seconds * SAFETY + ALLOWANCE_S)
