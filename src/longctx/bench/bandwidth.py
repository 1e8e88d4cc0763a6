"""Measured memory bandwidth: the denominator of the weight-streaming floor of batch-1 decoding.

Batch-1 decoding is read-bound: each step reads every weight once and writes almost nothing. So the floor
divides by a *read* bandwidth: a GEMV (``matrix @ vector``, the decode step's own kernel) over a matrix far
larger than the last-level cache, in the weights' dtype, bandwidth = matrix bytes / fastest GEMV. A copy
(read + write every byte, 2 * bytes / time) is kept beside it: on a CPU it moves less than a read does
(25 vs 43 GB/s here), so dividing by it gave a floor above the measured TPOT. Both are measured in the same
process as the decode benchmark so the floor and the TPOT share one machine state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from longctx.stats import summarize

READ_RULE = (
    "buffer_bytes / fastest GEMV over a (rows x 4096) matrix in the weights' dtype (read once; vectors negligible)"
)
COPY_RULE = "2 * buffer_bytes / fastest copy (read + write)"
GEMV_COLUMNS = 4096


def _timed_ms(op: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        op()
        stop.record()
        stop.synchronize()
        return float(start.elapsed_time(stop))
    begin = time.perf_counter()
    op()
    return 1000.0 * (time.perf_counter() - begin)


def _fastest(op: Callable[[], object], device: torch.device, repeats: int) -> tuple[list[float], float]:
    _timed_ms(op, device)  # warm-up: page faults, clocks, kernel selection
    times = [_timed_ms(op, device) for _ in range(repeats)]
    return times, min(times)


def copy_bandwidth(device: torch.device, n_bytes: int, repeats: int = 10) -> dict:
    """Bytes per second moved by ``copy_`` on ``device`` (read + write), with the raw repeats."""
    src = torch.empty(n_bytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    times, best = _fastest(lambda: dst.copy_(src), device, repeats)
    return {
        "buffer_bytes": src.nbytes,
        "copy_ms": summarize(times),
        "bytes_per_s": 2 * src.nbytes / (best / 1000.0),
        "rule": COPY_RULE,
    }


def read_bandwidth(device: torch.device, dtype: torch.dtype, n_bytes: int, repeats: int = 10) -> dict:
    """Bytes per second a GEMV reads from a ``n_bytes`` matrix of ``dtype`` on ``device``, with the raw repeats."""
    rows = max(1, n_bytes // (GEMV_COLUMNS * torch.finfo(dtype).bits // 8))
    matrix = torch.empty(rows, GEMV_COLUMNS, dtype=dtype, device=device).normal_()
    vector = torch.ones(GEMV_COLUMNS, dtype=dtype, device=device)
    out = torch.empty(rows, dtype=dtype, device=device)
    times, best = _fastest(lambda: torch.mv(matrix, vector, out=out), device, repeats)
    return {
        "buffer_bytes": matrix.nbytes,
        "dtype": str(dtype).removeprefix("torch."),
        "gemv_ms": summarize(times),
        "bytes_per_s": matrix.nbytes / (best / 1000.0),
        "rule": READ_RULE,
    }
