"""Run real code on ``meta`` tensors as if on GPUs: exact live bytes per logical device, FLOPs, known values.

``Simulation`` extends the exact tensor-memory tracker (``longctx.measure.tensor_memory``) with what a meta
run of a GPU code path needs:

* **Logical devices.** A meta tensor is keyed to the GPU it would live on: weights by their place in the
  device map (``pin``), an op's outputs by its inputs' device, a tensor made from nothing by the device of
  the placed module running (``context``) or the default device; ``forced`` pins a copy to a device (what
  accelerate's hooks do at device boundaries). Real CPU tensors stay host memory, keyed ``cpu``.
* **Known values.** Small integer/bool tensors moved from the host keep their values as a "shadow", and ops
  on shadowed inputs compute shadows too, so index bookkeeping (``int(rows.max())``, ``nonzero``, masks)
  behaves as on the GPU. A meta value read on the host without a shadow (``.item()``, ``.cpu()``,
  ``.tolist()``) is assumed to be 1 and counted in ``assumed_values``.
* **FLOPs**, with torch's ``flop_counter`` formulas and its decomposition rule, so they equal
  ``FlopCounter`` on real tensors.
* **Window peaks** (the peak of a stretch of the run, per device) and **replayed peaks** (a transient
  known from an earlier identical stretch), used to extrapolate stationary loops (``longctx.predict.loops``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_leaves, tree_map

from longctx.errors import UsageError
from longctx.measure.flops import decompose_within, decomposes, op_flops
from longctx.measure.tensor_memory import _FRESH_INPUT_OPS, TOTAL, TensorMemoryTracker
from longctx.predict import meta_cache

HOST = "cpu"
SOURCE = "predicted: exact live tensor bytes of the code path run on meta tensors (longctx.predict)"
SHADOW_BYTES = 64 << 20  # larger tensors never carry known values (masks up to 8192^2 bools do)
HOST_LIMIT = 256 << 20  # bytes: a larger meta tensor read on the host stays a meta tensor keyed "cpu"
COUNTERS = ("flops", "weight_bytes", "forwards", "backwards")  # extensive counts a sampled loop extrapolates
_SHAPE_ONLY = {  # ops whose values do not depend on their tensor input's values
    torch.ops.aten.zeros_like, torch.ops.aten.ones_like, torch.ops.aten.full_like, torch.ops.aten.new_zeros,
    torch.ops.aten.new_ones, torch.ops.aten.new_full,
}  # fmt: skip
_SCALAR_READ = torch.ops.aten._local_scalar_dense.default
_COPY = torch.ops.aten._to_copy.default
_SIZE_QUERIES = {
    torch.ops.aten.sym_size.default, torch.ops.aten.sym_stride.default, torch.ops.aten.sym_numel.default,
    torch.ops.aten.sym_storage_offset.default, torch.ops.aten.is_contiguous.default,
    torch.ops.aten.is_contiguous.memory_format, torch.ops.prim.layout.default,
}  # fmt: skip


def _tensors(args, kwargs) -> list[torch.Tensor]:
    """The tensors among an aten op's arguments (tensors, lists of tensors)."""
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(item for item in value if isinstance(item, torch.Tensor))
    return found


class SimulationError(UsageError):
    """The code path needs something a meta run cannot give (a value it has no way to know)."""


def _shadow(t: torch.Tensor) -> torch.Tensor | None:
    return getattr(t, "_longctx_shadow", None)


def _set_shadow(t: torch.Tensor, value: torch.Tensor) -> None:
    with contextlib.suppress(AttributeError, RuntimeError):
        t._longctx_shadow = value


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _is_meta(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_meta


def _target_device(kwargs: dict) -> torch.device | None:
    device = kwargs.get("device")
    return torch.device(device) if device is not None else None


@dataclass
class Window:
    """Peak bytes per device (and total) of a stretch of the run, above the level at its start."""

    start: dict[str, int]
    peak: dict[str, int] = field(default_factory=dict)

    def transient(self) -> dict[str, int]:
        return {key: max(0, self.peak.get(key, 0) - level) for key, level in self.start.items()} | {
            key: level for key, level in self.peak.items() if key not in self.start
        }


class Simulation(TensorMemoryTracker):
    """``with Simulation(baseline=model) as sim: run()``; ``sim.stats()`` (per logical device), ``sim.flops``."""

    def __init__(self, baseline=None, *, default_device: str = "cuda:0"):
        super().__init__(baseline=baseline, device_of=self._device_for)
        self.default_device = default_device
        self.pinned: dict[int, str] = {}
        self.context: list[str] = []
        self.forced: str | None = None
        self._op_device: str | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.assumed_values = 0
        self._windows: list[Window] = []

    # ----------------------------------------------------------------- counters
    @property
    def flops(self) -> int:
        return self.counters["flops"]

    def totals(self) -> dict[str, float]:
        return dict(self.counters)

    def add(self, deltas: dict[str, float]) -> None:
        """Add extrapolated counts (a sampled loop's skipped iterations, a replayed model call)."""
        for key, value in deltas.items():
            self.counters[key] += value

    # ----------------------------------------------------------------- devices
    def pin(self, tensors, device: str) -> None:
        """Key these tensors' storages (weights placed by a device map) to ``device``."""
        for tensor in tensors:
            self.pinned[tensor.untyped_storage()._cdata] = device

    def device_of_tensor(self, tensor: torch.Tensor) -> str:
        """The logical device a tensor lives on (its tracked key, else where it would be put now)."""
        if not tensor.is_meta:
            return str(tensor.device)
        known = self._live.get(tensor.untyped_storage()._cdata)
        return known.device if known is not None else self._device_for(tensor)

    def _device_for(self, tensor: torch.Tensor) -> str:
        if not tensor.is_meta:
            return str(tensor.device)
        pinned = self.pinned.get(tensor.untyped_storage()._cdata)
        if pinned is not None:
            return pinned
        if self.forced is not None:
            return self.forced
        if self._op_device is not None:
            return self._op_device
        return self.context[-1] if self.context else self.default_device

    @contextlib.contextmanager
    def forced_device(self, device: str):
        """Outputs of the ops run inside live on ``device`` (a copy made by a device-boundary hook)."""
        before, self.forced = self.forced, device
        try:
            yield
        finally:
            self.forced = before

    def _inputs_device(self, metas: list[torch.Tensor]) -> str | None:
        for tensor in metas:
            known = self._live.get(tensor.untyped_storage()._cdata)
            if known is not None:
                return known.device
            pinned = self.pinned.get(tensor.untyped_storage()._cdata)
            if pinned is not None:
                return pinned
        return None

    # ----------------------------------------------------------------- windows and replays
    def open_window(self) -> Window:
        with self._lock:
            window = Window(start=dict(self._current), peak=dict(self._current))
            self._windows.append(window)
        return window

    def close_window(self, window: Window) -> dict[str, int]:
        with self._lock:
            self._windows.remove(window)
        return window.transient()

    def replay_peak(self, transient: dict[str, int]) -> None:
        """Raise peaks as if a stretch with these per-device (and ``total``) transients ran now."""
        with self._lock:
            for key, extra in transient.items():
                level = self._current.get(key, 0) + extra
                if level > self._peak.get(key, 0):
                    self._peak[key] = level
                for window in self._windows:
                    if level > window.peak.get(key, 0):
                        window.peak[key] = level

    @contextlib.contextmanager
    def sandbox(self):
        """Work done inside leaves no trace: peaks, window peaks and counters are restored on exit (what it
        allocates must be freed by then)."""
        with self._lock:
            peaks = dict(self._peak)
            windows = [dict(w.peak) for w in self._windows]
        counters = dict(self.counters)
        try:
            yield
        finally:
            with self._lock:
                self._peak = peaks
                for window, peak in zip(self._windows, windows, strict=False):
                    window.peak = peak
            self.counters = counters

    def live_bytes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._current)

    def _add(self, device: str, delta: int) -> None:
        super()._add(device, delta)
        for window in self._windows:
            for name in (device, TOTAL):
                level = self._current.get(name, 0)
                if level > window.peak.get(name, 0):
                    window.peak[name] = level

    def _release(self, key: int) -> None:
        with self._lock:
            self.pinned.pop(key, None)  # a freed storage's address may be reused by an unrelated one
        super()._release(key)

    def release_baseline(self) -> None:
        """Drop the references to the entry tensors (counted already), so freeing one (``grad = None``) is seen."""
        self._baseline = None

    def track_new(self, tensor: torch.Tensor) -> None:
        """Count a tensor made inside the dispatcher (where this mode does not see it) as a new allocation."""
        self._see(tensor, at_entry=False)

    # ----------------------------------------------------------------- dispatch
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SIZE_QUERIES:
            return func(*args, **kwargs)
        if decomposes(func):
            out = decompose_within(self, func, args, kwargs)
            if out is not NotImplemented:
                return out
        leaves = _tensors(args, kwargs)
        metas = [x for x in leaves if x.is_meta]
        target = _target_device(kwargs)
        if metas or (target is not None and target.type == "meta"):
            special = self._host_boundary(func, args, kwargs, metas, target)
            if special is not NotImplemented:
                return special
            args, kwargs = self._hosts_to_meta(func, args, kwargs, metas, leaves)
        previous, self._op_device = self._op_device, self._inputs_device(metas)
        try:
            out = self._run(func, args, kwargs, metas, leaves)
        finally:
            self._op_device = previous
        self.counters["flops"] += op_flops(func, args, kwargs, out)
        return out

    def _run(self, func, args, kwargs, metas, leaves):
        shadows = self._shadow_inputs(metas)
        try:
            out = self._tracked(func, args, kwargs, leaves)
        except (NotImplementedError, RuntimeError) as exc:
            if shadows is None:
                raise SimulationError(
                    f"{func} needs tensor values a meta run does not have ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:120]})"
                ) from exc
            out = None
        made = func._overloadpacket in _SHAPE_ONLY or (not metas and _target_device(kwargs) == torch.device("meta"))
        if shadows is None and metas and func._schema.is_mutable and _shadow(args[0]) is not None:
            _set_shadow(args[0], None)  # written with unknown values: its known values are stale
        if shadows is not None or made:
            out = self._with_shadow(func, args, kwargs, out, leaves)
        return out

    def _tracked(self, func, args, kwargs, leaves):
        """The tracker's bookkeeping (inputs seen, op run, outputs seen) without its generic tree walks."""
        live_inputs = func not in _FRESH_INPUT_OPS
        all_meta = True
        for leaf in leaves:
            self._see(leaf, at_entry=live_inputs)
            all_meta = all_meta and leaf.is_meta
        if all_meta and leaves and meta_cache.cacheable(func):
            out = meta_cache.run(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            self._see(out, at_entry=False)
        elif isinstance(out, (tuple, list)):
            for leaf in out:
                if isinstance(leaf, torch.Tensor):
                    self._see(leaf, at_entry=False)
                elif isinstance(leaf, (tuple, list)):
                    for inner in leaf:
                        if isinstance(inner, torch.Tensor):
                            self._see(inner, at_entry=False)
        return out

    def _shadow_inputs(self, metas) -> list | None:
        """Shadows of every meta input (None unless all have one)."""
        if not metas:
            return None
        shadows = [_shadow(t) for t in metas]
        return None if any(s is None for s in shadows) else shadows

    def _with_shadow(self, func, args, kwargs, out, leaves):
        """Compute the op on the known values too; build the meta output from them when meta cannot."""

        def real(x):
            if _is_meta(x):
                shadow = _shadow(x)
                if shadow is None and func._overloadpacket in _SHAPE_ONLY:  # only its shape and dtype matter
                    return torch.empty(x.shape, dtype=x.dtype)
                return shadow
            if isinstance(x, torch.device) and x.type == "meta":
                return torch.device(HOST)
            return x

        real_kwargs = {k: real(v) for k, v in kwargs.items()}
        if "device" in real_kwargs and real_kwargs["device"] is not None:
            real_kwargs["device"] = torch.device(HOST)
        if out is not None and sum(_nbytes(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor)) > SHADOW_BYTES:
            return out
        try:
            values = func(*tree_map(real, args), **real_kwargs)
        except Exception:  # noqa: BLE001 - no known values for this op; the meta result stands alone
            values = None
        if out is None:
            if values is None:
                raise SimulationError(f"{func} needs tensor values a meta run does not have")
            out = tree_map(lambda v: torch.empty_like(v, device="meta") if isinstance(v, torch.Tensor) else v, values)
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    self.track_new(tensor)
        if values is not None:
            for meta, value in zip(tree_leaves(out), tree_leaves(values), strict=False):
                if _is_meta(meta) and isinstance(value, torch.Tensor) and _nbytes(value) <= SHADOW_BYTES:
                    _set_shadow(meta, value)
        return out

    def _host_boundary(self, func, args, kwargs, metas, target):
        """Values crossing between meta and the host: scalar reads, copies to/from the CPU."""
        if func is _SCALAR_READ:
            shadow = _shadow(args[0])
            if shadow is not None:
                return shadow.item()
            self.assumed_values += 1
            return True if args[0].dtype == torch.bool else 1
        if func is _COPY and target is not None and target.type != "meta" and _is_meta(args[0]):
            return self._to_host(args[0], kwargs.get("dtype") or args[0].dtype)
        if func is _COPY and target is not None and target.type == "meta" and not _is_meta(args[0]):
            out = self._tracked(func, args, kwargs, [args[0]])
            if _nbytes(args[0]) <= SHADOW_BYTES:
                _set_shadow(out, args[0].to(kwargs.get("dtype") or args[0].dtype).clone())
            return out
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and not first.is_meta and func._schema.is_mutable:
            self._fill_host(first, args[1] if len(args) > 1 else None)
            return first
        return NotImplemented

    def _to_host(self, tensor: torch.Tensor, dtype: torch.dtype):
        shadow = _shadow(tensor)
        if shadow is not None:
            host = shadow.to(dtype).clone()
        elif tensor.numel() * tensor.element_size() <= HOST_LIMIT:
            self.assumed_values += 1
            host = torch.ones(tensor.shape, dtype=dtype)
        else:
            with self.forced_device(HOST):
                host = torch.empty(tensor.shape, dtype=dtype, device="meta")
        self.track_new(host)
        return host

    def _fill_host(self, dest: torch.Tensor, source) -> None:
        """An in-place op on a host tensor reading meta values: take the source's known values or 1."""
        if _is_meta(source):
            shadow = _shadow(source)
            if shadow is not None and shadow.shape == dest.shape:
                dest.copy_(shadow)
            else:
                self.assumed_values += 1
                dest.fill_(1)

    def _hosts_to_meta(self, func, args, kwargs, metas, leaves):
        """Host tensors (not 0-dim) mixed into a meta op are copied to the op's device, values kept."""
        if len(metas) == len(leaves) or not any(not t.is_meta and t.dim() > 0 for t in leaves):
            return args, kwargs
        device = self._inputs_device(metas) or self.default_device

        def move(x):
            if isinstance(x, torch.Tensor) and not x.is_meta and x.dim() > 0:
                with self.forced_device(device):
                    moved = x.to("meta")
                self.track_new(moved)
                if _nbytes(x) <= SHADOW_BYTES:
                    _set_shadow(moved, x)
                return moved
            return x

        return tree_map(move, args), tree_map(move, kwargs)


_torch_tensor = torch.tensor


def tensor_with_values(data, *args, device=None, **kwargs):
    """``torch.tensor`` for a simulation: data bound for ``meta`` goes through the host, so it keeps its values
    (``torch.tensor(data, device="meta")`` would drop them)."""
    if device is not None and torch.device(device).type == "meta":
        return _torch_tensor(data, *args, **kwargs).to("meta")
    return _torch_tensor(data, *args, device=device, **kwargs)


def peak_row(sim: Simulation) -> dict:
    """Peak bytes per GPU, their sum (the original's definition: a sum of per-device peaks) and the host's."""
    devices = {key: lv.peak_bytes for key, lv in sim.stats().devices.items()}
    gpus = {key: value for key, value in sorted(devices.items()) if key != HOST}
    return {"total": sum(gpus.values()), "devices": gpus, "host": devices.get(HOST, 0)}
