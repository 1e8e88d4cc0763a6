"""Measured memory bandwidth: the denominator of the weight-streaming floor of batch-1 decoding.

A device-to-device copy reads and writes every byte once, so bandwidth = 2 * bytes / time. Measured in
the same process as the decode benchmark so the floor and the TPOT share one machine state.
"""

from __future__ import annotations

import time

import torch

from longctx.stats import summarize


def _timed_copy_ms(dst: torch.Tensor, src: torch.Tensor) -> float:
    if src.device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        stop.record()
        stop.synchronize()
        return float(start.elapsed_time(stop))
    begin = time.perf_counter()
    dst.copy_(src)
    return 1000.0 * (time.perf_counter() - begin)


def copy_bandwidth(device: torch.device, n_bytes: int, repeats: int = 10) -> dict:
    """Bytes per second moved by ``copy_`` on ``device`` (read + write), with the raw repeats."""
    src = torch.empty(n_bytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    _timed_copy_ms(dst, src)  # warm-up: page faults, clocks
    times = [_timed_copy_ms(dst, src) for _ in range(repeats)]
    best = min(times)
    return {
        "buffer_bytes": src.numel() * src.element_size(),
        "copy_ms": summarize(times),
        "bytes_per_s": 2 * src.numel() * src.element_size() / (best / 1000.0),
        "rule": "2 * buffer_bytes / fastest copy (read + write)",
    }
