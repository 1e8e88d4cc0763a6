"""Exact live tensor-storage bytes (current and peak, per device) of the code run inside a context manager.

The count is taken at aten-op boundaries by a ``TorchDispatchMode``: every storage an op returns that the
tracker has not seen is a new allocation, and a weak reference to its (preserved) Python storage object
tells when it is released. So it is deterministic, needs no allocator, and counts the same bytes on CPU and
``meta`` tensors (the basis of the meta-tensor scale prediction). Storages are keyed by ``tensor.device``
unless ``device_of`` says otherwise: a meta run maps its tensors onto logical devices that way (FakeTensors
report their fake device, but fake CUDA tensors on a CPU-only torch build fail in autograd and in indexing).

Counted: outputs of every aten op run while active, on this thread and in autograd's backward (gradients,
saved activations, intermediates freed inside the pass), factory functions, ``.to()`` copies, and tensors
built from Python data or numpy (they reach the dispatcher through ``aten.lift_fresh``) or loaded with
``torch.load`` (through ``aten.set_``); a view or an in-place result shares its input's storage and is not
counted again; ``Tensor.resize_`` growth is counted. Not counted: workspaces a kernel allocates and frees
inside one op, allocator rounding and caching (a CUDA ``max_memory_allocated`` adds both), and
``UntypedStorage.resize_`` called directly. A tensor that gets its storage with no op at all
(``torch.frombuffer``) is seen only when an op first reads it, and is then taken to have been live at entry.

Storages live at entry are the ones passed as ``baseline`` plus those an op reads before any op made them;
they make ``entry_bytes``. The peak is tracked as "bytes above entry" (a released entry storage lowers it),
so ``peak_above_entry_bytes`` never depends on what was known at entry, and ``peak_bytes`` adds the entry.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

SOURCE = "tensor_storage_bytes (TorchDispatchMode: live storages at aten-op boundaries, exact nbytes)"
TOTAL = "total"

# Ops whose input is a tensor made outside the dispatcher a moment ago (torch.tensor, torch.from_numpy):
# their storage is a new allocation of the tracked code, not something live at entry.
_FRESH_INPUT_OPS = {torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default}


def tensor_device(tensor: torch.Tensor) -> str:
    """The default device key: the tensor's own device (a FakeTensor reports its fake device, e.g. cuda:1)."""
    return str(tensor.device)


@dataclass(frozen=True)
class MemoryLevels:
    """Bytes on one device (or all devices together, where the peak is that of the sum, not a sum of peaks)."""

    entry_bytes: int
    peak_above_entry_bytes: int
    current_above_entry_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Peak including what was live at entry (e.g. the weights)."""
        return self.entry_bytes + self.peak_above_entry_bytes


@dataclass(frozen=True)
class TensorMemoryStats:
    """One reading of a tracker: per-device levels, the all-device levels, and the label of the method."""

    devices: dict[str, MemoryLevels]
    total: MemoryLevels
    source: str = SOURCE

    def as_row(self) -> dict:
        """A flat JSON-ready dict for result rows (bytes; the per-device levels nested by device key)."""
        return {
            "peak_bytes": self.total.peak_bytes,
            "peak_above_entry_bytes": self.total.peak_above_entry_bytes,
            "entry_bytes": self.total.entry_bytes,
            "current_above_entry_bytes": self.total.current_above_entry_bytes,
            "devices": {key: {**asdict(lv), "peak_bytes": lv.peak_bytes} for key, lv in self.devices.items()},
            "source": self.source,
        }


@dataclass
class _Storage:
    nbytes: int
    device: str
    ref: weakref.ref


class TensorMemoryTracker(TorchDispatchMode):
    """``with TensorMemoryTracker(baseline=model) as mem: ...; mem.stats()``: exact live tensor bytes.

    ``baseline``: a module (its parameters and buffers) or tensors to count as live at entry even if no op
    reads them. ``device_of(tensor) -> str`` keys a storage when first seen (default: ``str(tensor.device)``);
    pass another to map meta tensors onto logical devices. Each ``with`` starts a fresh count; ``stats()``
    can be read inside or after it (after exit it stays frozen at the exit values).
    """

    def __init__(
        self,
        baseline: torch.nn.Module | Iterable[torch.Tensor] | None = None,
        device_of: Callable[[torch.Tensor], str] = tensor_device,
    ):
        super().__init__()
        self._baseline = baseline
        self._device_of = device_of
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self._live: dict[int, _Storage] = {}
        self._entry: dict[str, int] = {}
        self._current: dict[str, int] = {TOTAL: 0}
        self._peak: dict[str, int] = {TOTAL: 0}

    def __enter__(self) -> TensorMemoryTracker:
        self._clear()
        baseline = self._baseline
        if isinstance(baseline, torch.nn.Module):
            baseline = [*baseline.parameters(), *baseline.buffers()]
        for tensor in baseline or ():
            self._see(tensor, at_entry=True)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        with self._lock:
            self._live = {}  # drops the weak references: later releases no longer move the counts

    def reset_peak(self) -> None:
        """Start a new peak from the current level (like ``torch.cuda.reset_peak_memory_stats``)."""
        with self._lock:
            self._peak = dict(self._current)

    def stats(self) -> TensorMemoryStats:
        with self._lock:
            keys = sorted((set(self._entry) | set(self._current)) - {TOTAL})
            levels = {key: self._levels(key) for key in keys}
            total = MemoryLevels(sum(self._entry.values()), self._peak[TOTAL], self._current[TOTAL])
        return TensorMemoryStats(devices=levels, total=total)

    def _levels(self, key: str) -> MemoryLevels:
        return MemoryLevels(self._entry.get(key, 0), self._peak.get(key, 0), self._current.get(key, 0))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs_were_live = func not in _FRESH_INPUT_OPS
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor):
                self._see(leaf, at_entry=inputs_were_live)
        out = func(*args, **kwargs)
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._see(leaf, at_entry=False)
        return out

    def _see(self, tensor: torch.Tensor, at_entry: bool) -> None:
        """Register the tensor's storage if new (as live at entry or as an allocation), or note a resize."""
        storage = tensor.untyped_storage()
        key, nbytes = storage._cdata, storage.nbytes()
        with self._lock:
            known = self._live.get(key)
            if known is None:
                device = self._device_of(tensor)
                ref = weakref.ref(storage, lambda _ref, key=key: self._release(key))
                self._live[key] = _Storage(nbytes, device, ref)
                if at_entry:
                    self._entry[device] = self._entry.get(device, 0) + nbytes
                else:
                    self._add(device, nbytes)
            elif known.nbytes != nbytes:
                self._add(known.device, nbytes - known.nbytes)
                known.nbytes = nbytes

    def _release(self, key: int) -> None:
        with self._lock:
            gone = self._live.pop(key, None)
            if gone is not None:
                self._add(gone.device, -gone.nbytes)

    def _add(self, device: str, delta: int) -> None:
        for name in (device, TOTAL):
            level = self._current.get(name, 0) + delta
            self._current[name] = level
            if level > self._peak.get(name, 0):
                self._peak[name] = level
