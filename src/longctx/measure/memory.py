"""The one peak-memory probe of every measurement, with one key schema.

``with PeakMemory() as mem: ...; mem.record()`` gives ``{"source", "allocated_bytes", "reserved_bytes",
"live_before_bytes", "devices": {name: {"allocated_bytes", "reserved_bytes", "live_before_bytes"}}}`` where
the totals are sums over devices. On CUDA the source is the caching allocator's peaks (reset on entry, after
freeing what the previous run left). On CPU it is the process RSS high-water mark above the RSS at entry
(Linux ``clear_refs`` resets the mark; elsewhere ``ru_maxrss``), labelled as such.
"""

from __future__ import annotations

import gc
import re
import resource
import sys
from pathlib import Path

import torch

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
CUDA_SOURCE = "cuda caching allocator: max_memory_allocated / max_memory_reserved"
RSS_SOURCE = "cpu process RSS high-water mark above the RSS at entry (clear_refs)"
MAXRSS_SOURCE = "cpu process ru_maxrss above the RSS at entry (not reset per run)"


def synchronize() -> None:
    """Wait for every visible CUDA device (no-op on CPU)."""
    if torch.cuda.is_available():
        for d in range(torch.cuda.device_count()):
            torch.cuda.synchronize(d)


def _proc_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class PeakMemory:
    """Peak memory of the code run inside ``with``: CUDA allocator peaks per device, or the CPU RSS mark."""

    def __init__(self, *, cuda: bool | None = None):
        self.cuda = torch.cuda.is_available() if cuda is None else cuda

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.cuda:
            self.devices = list(range(torch.cuda.device_count()))
            for d in self.devices:
                with torch.cuda.device(d):
                    torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(d)
            self.before = {f"cuda:{d}": torch.cuda.memory_allocated(d) for d in self.devices}
            self.source = CUDA_SOURCE
            return self
        self.rss_before = (_proc_kib("VmRSS") or 0) * 1024
        try:
            CLEAR_REFS.write_text("5")
            self.source = RSS_SOURCE
        except OSError:
            self.source = MAXRSS_SOURCE
        self.before = {"cpu": self.rss_before}
        return self

    def __exit__(self, *exc) -> None:
        synchronize()

    def _per_device(self) -> dict[str, dict[str, int]]:
        if self.cuda:
            return {
                f"cuda:{d}": {
                    "allocated_bytes": torch.cuda.max_memory_allocated(d),
                    "reserved_bytes": torch.cuda.max_memory_reserved(d),
                    "live_before_bytes": self.before[f"cuda:{d}"],
                }
                for d in self.devices
            }
        hwm = _proc_kib("VmHWM") if self.source == RSS_SOURCE else None
        peak = hwm * 1024 if hwm is not None else _maxrss_bytes()
        return {"cpu": {"allocated_bytes": peak, "reserved_bytes": peak, "live_before_bytes": self.rss_before}}

    def record(self) -> dict:
        """Totals over devices plus the per-device peaks; bytes live at entry are reported, not subtracted."""
        devices = self._per_device()
        return {
            "source": self.source,
            "allocated_bytes": sum(d["allocated_bytes"] for d in devices.values()),
            "reserved_bytes": sum(d["reserved_bytes"] for d in devices.values()),
            "live_before_bytes": sum(d["live_before_bytes"] for d in devices.values()),
            "devices": devices,
        }
