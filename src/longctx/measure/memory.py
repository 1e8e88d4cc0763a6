"""The one peak-memory probe of every measurement, with one key schema.

``record()`` gives ``{"source", "allocated_bytes", "reserved_bytes", "live_before_bytes", "devices": {name:
{"allocated_bytes", "reserved_bytes", "live_before_bytes"}}}`` where the totals are sums over devices and
bytes live at entry (the weights) are included. On CUDA the figures are the caching allocator's peaks (reset
on entry, after freeing what the previous run left). On CPU they are exact live tensor-storage bytes
(``TensorMemoryTracker``): deterministic, unlike the RSS, which moves only when the allocator asks the OS.

The tracker intercepts every aten op and slows eager code about 2x, so a timed CPU run must not run under it.
Timed loops therefore use the probe in two steps (both callers: the streaming cell, the attribution worker)::

    memory = PeakMemory(cuda=..., baseline=model)
    memory.exact_pass(run)          # CPU: one extra untimed run under the tracker; CUDA: nothing
    for ...:
        with memory.timed():        # CUDA: this run's allocator peaks; CPU: nothing (no slowdown)
            run()
        memory.record()             # CUDA: this run's peaks; CPU: the exact pass's, for every timed run

``with PeakMemory(...) as memory: ...`` measures the code inside directly (on CPU under the tracker).
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Callable, Iterable, Iterator

import torch

from longctx.measure.tensor_memory import TensorMemoryTracker

CUDA_SOURCE = "cuda caching allocator: max_memory_allocated / max_memory_reserved"
TENSOR_SOURCE = "cpu: exact peak of live tensor bytes (TorchDispatchMode tracker; reserved = allocated)"
SEPARATE_PASS = ", counted in one extra untimed run after the warm-up (compiled code runs eagerly in it)"


def synchronize() -> None:
    """Wait for every visible CUDA device (no-op on CPU)."""
    if torch.cuda.is_available():
        for d in range(torch.cuda.device_count()):
            torch.cuda.synchronize(d)


class PeakMemory:
    """Peak memory of the code run inside ``with``: CUDA allocator peaks per device, or exact CPU tensor bytes.

    ``baseline``: the model (or tensors) to count as live at entry on CPU even if the code does not read
    them, as CUDA's allocated figure does.
    """

    def __init__(self, *, cuda: bool | None = None, baseline: torch.nn.Module | Iterable[torch.Tensor] | None = None):
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.baseline = baseline
        self._record: dict | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.cuda:
            self.devices = list(range(torch.cuda.device_count()))
            for d in self.devices:
                with torch.cuda.device(d):
                    torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(d)
            self.before = {f"cuda:{d}": torch.cuda.memory_allocated(d) for d in self.devices}
            return self
        self._cpu = contextlib.ExitStack()
        # dynamo refuses to run compiled frames under a dispatch mode: run them eagerly while tracked
        self._cpu.enter_context(torch.compiler.set_stance("force_eager"))
        self._tracker = self._cpu.enter_context(TensorMemoryTracker(baseline=self.baseline))
        return self

    def __exit__(self, *exc) -> None:
        synchronize()
        if not self.cuda:
            self._cpu.close()
        self._record = self._read()

    def exact_pass(self, run: Callable[[], object]) -> None:
        """Before timed runs: on CPU, run ``run`` once, untimed, under the tracker (its peak stands for them)."""
        if self.cuda:
            return
        with self:
            run()
        self._record["source"] += SEPARATE_PASS

    @contextlib.contextmanager
    def timed(self) -> Iterator[PeakMemory]:
        """Around a timed run: measures it on CUDA (free); on CPU leaves it alone (see ``exact_pass``)."""
        if not self.cuda:
            yield self
            return
        with self:
            yield self

    def _read(self) -> dict:
        if self.cuda:
            devices = {
                f"cuda:{d}": {
                    "allocated_bytes": torch.cuda.max_memory_allocated(d),
                    "reserved_bytes": torch.cuda.max_memory_reserved(d),
                    "live_before_bytes": self.before[f"cuda:{d}"],
                }
                for d in self.devices
            }
            source = CUDA_SOURCE
        else:
            devices = {
                name: {
                    "allocated_bytes": lv.peak_bytes,
                    "reserved_bytes": lv.peak_bytes,
                    "live_before_bytes": lv.entry_bytes,
                }
                for name, lv in self._tracker.stats().devices.items()
            }
            source = TENSOR_SOURCE
        return {
            "source": source,
            "allocated_bytes": sum(d["allocated_bytes"] for d in devices.values()),
            "reserved_bytes": sum(d["reserved_bytes"] for d in devices.values()),
            "live_before_bytes": sum(d["live_before_bytes"] for d in devices.values()),
            "devices": devices,
        }

    def record(self) -> dict:
        """The last measurement: totals over devices plus the per-device peaks (bytes live at entry included)."""
        if self._record is None:
            raise RuntimeError("PeakMemory.record() before any measurement (on CPU, call exact_pass first)")
        return copy.deepcopy(self._record)
