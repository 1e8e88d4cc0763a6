"""Every model call of a meta run counted, and calls like ones already measured replayed instead of rerun.

``ModelCalls`` wraps a model's ``forward``. Each call adds one forward pass and the weights' bytes to the
simulation's counters; a backward through it adds one backward pass (and the weights again, twice when the
weights are trainable: read for the input gradient, gradient written). Calls of one *family* (same
arguments except the sequence length and the batch size, same grad mode, no foreign hooks, no cache
object) are measured on real meta tensors at a few lengths, per sequence of the batch (bytes and FLOPs grow
linearly with the batch; the gradients of the weights do not and are counted apart): the peak above the
call's start per device, what it leaves allocated (outputs, saved activations), its counters and, when a
backward runs through it, the backward's peak and counters. Any other length is *replayed*: outputs of the
right shapes are made on their devices, the saved activations are one blob per device held by the autograd
graph (freed with it, like the real ones), and peaks and counters are interpolated (quadratic in the
length through three measured lengths: exact for FLOPs, which are quadratic in the length; see
``fit_bytes`` for bytes). A length is measured unless it is within ``NEAR_END`` of a measured one or inside
the range of at least three measured ones; a length equal to a dimension of the model's config (32 heads
at length 32) makes the family's shapes ambiguous: never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate.utils.operations import recursively_apply

from longctx.measure.tensor_memory import TOTAL
from longctx.predict.simulate import Simulation

BATCH = "batch"
PER_CALL = ("forwards", "weight_bytes", "backwards")  # counters that do not grow with the batch
NEAR_END = 4  # lengths this close to a measured one replay it (shapes rescaled)
MIN_RECORDS = 3  # measured lengths before any interpolation
_SIMPLE = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class TensorSpec:
    """An output tensor as recorded: shape (``None`` marks the sequence-length dims, ``BATCH`` the batch dim),
    dtype, device, grad."""

    shape: tuple
    dtype: torch.dtype
    device: str
    requires_grad: bool

    def shape_at(self, length: int, batch: int) -> tuple:
        return tuple(length if d is None else batch if d == BATCH else d for d in self.shape)

    def bytes_at(self, length: int, batch: int) -> int:
        numel = 1
        for dim in self.shape_at(length, batch):
            numel *= dim
        return numel * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class BackwardRecord:
    """A measured backward through a call, per sequence of the batch: its peak above the level when the
    gradient reached the outputs, less the input/parameter gradients it created, and its counters."""

    transient: dict[str, float]
    counters: dict[str, float]


@dataclass
class CallRecord:
    """A measured call, per sequence of its batch (bytes and FLOPs grow with the batch, passes do not)."""

    length: int
    batch: int
    template: object  # the output structure with TensorSpec leaves
    transient: dict[str, float]
    graph: dict[str, float]  # bytes left allocated beyond the outputs (saved for backward), per device
    counters: dict[str, float]
    backward: BackwardRecord | None = None


@dataclass
class Family:
    records: dict[int, CallRecord] = field(default_factory=dict)
    length_dims_ambiguous: bool = False


def _is_spec(x) -> bool:
    return isinstance(x, TensorSpec)


def fit(points: list[tuple[int, float]], x: int) -> float:
    """Lagrange interpolation through the (up to) three points nearest to ``x``, never below zero: exact for a
    quadratic in the length (FLOPs of a forward at a fixed batch)."""
    nearest = sorted(points, key=lambda p: abs(p[0] - x))[:3]
    total = 0.0
    for i, (xi, yi) in enumerate(nearest):
        term = float(yi)
        for j, (xj, _) in enumerate(nearest):
            if i != j:
                term *= (x - xj) / (xi - xj)
        total += term
    return max(0.0, total)


def fit_bytes(points: list[tuple[int, float]], x: int) -> float:
    """Bytes at length ``x``: inside the measured lengths, the quadratic through the nearest measured length
    below, the nearest above and the next nearest (sizes are quadratic in the length: attention maps);
    outside, the line through the shortest and longest (no curve is extrapolated: peaks are maxima of such
    terms, not one polynomial)."""
    points = sorted(points)
    if len(points) == 1:
        return float(points[0][1])
    below = [p for p in points if p[0] <= x]
    above = [p for p in points if p[0] >= x]
    if not below or not above:
        (x0, y0), (x1, y1) = points[0], points[-1]
        return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    chosen = {below[-1], above[0]}
    rest = sorted((p for p in points if p not in chosen), key=lambda p: abs(p[0] - x))
    return fit([*chosen, *rest[:1]], x)


def per_sequence(values: dict, batch: int) -> dict:
    return {k: v if k in PER_CALL else v / batch for k, v in values.items()}


def for_batch(values: dict, batch: int) -> dict:
    return {k: v if k in PER_CALL else v * batch for k, v in values.items()}


def _fit_dicts(records: list, x: int, get, exact: bool = False) -> dict:
    """Per key: counters (``exact``: quadratic in the length, Lagrange) or bytes (``fit_bytes``)."""
    keys = set().union(*(get(r).keys() for r in records))
    method = fit if exact else fit_bytes
    return {key: method([(r.length, get(r).get(key, 0)) for r in records], x) for key in keys}


class ModelCalls:
    """``with ModelCalls(sim, model, families=shared): run()`` (see the module docstring); ``families`` may be
    shared by the cells of one placed model, so a call measured for one cell is replayed in the next."""

    def __init__(self, sim: Simulation, model, *, replay: bool = True, families: dict | None = None):
        self.sim, self.model, self.replay = sim, model, replay
        self.longest: int | None = None  # the longest call length the cell can make (its total tokens)
        self.modules = list(model.modules())
        self._first_param = next(model.parameters())
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.families: dict[tuple, Family] = {} if families is None else families
        self.measured = 0
        self.replayed = 0
        self.history: list[dict[str, float]] = []  # counters of every measured call, in order
        config = model.config.to_dict()
        self._model_dims = {v for v in config.values() if isinstance(v, int) and not isinstance(v, bool)}
        self.backward_assumed = 0

    # ----------------------------------------------------------------- install
    def __enter__(self) -> ModelCalls:
        self._real = self.model.forward
        self._hooks = self._hook_count()
        self.model.forward = self._call
        return self

    def __exit__(self, *exc) -> None:
        del self.model.forward

    def _hook_count(self) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.modules)

    @property
    def trainable(self) -> bool:
        return self._first_param.requires_grad  # methods make all of them trainable or none

    # ----------------------------------------------------------------- one call
    def _call(self, *args, **kwargs):
        key, length, batch = self._family_key(args, kwargs)
        if key is None or not self.replay:
            return self._measure(None, None, None, args, kwargs)
        family = self.families.setdefault(key, Family())
        if self._should_look_ahead(family, length):
            self._measure_ahead(family, batch, args, kwargs)
        if self._should_measure(family, length):
            return self._measure(family, length, batch, args, kwargs)
        self.replayed += 1
        return self._replay(family, length, batch, args, kwargs)

    def _family_key(self, args, kwargs) -> tuple[tuple | None, int, int]:
        """Everything but the sequence length and the batch size; (None, 0, 0) when the call must run for real."""
        if self._hook_count() != self._hooks or torch.nn.modules.module._global_forward_hooks:
            return None, 0, 0
        named = {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        anchor = named.get("input_ids", named.get("inputs_embeds", named.get("arg0")))
        if not isinstance(anchor, torch.Tensor) or anchor.dim() < 2:
            return None, 0, 0
        batch, length = anchor.shape[0], anchor.shape[1]
        parts = []
        for name, value in sorted(named.items()):
            if isinstance(value, torch.Tensor):
                shape = _symbolic(value.shape, length, batch)
                parts.append((name, shape, value.dtype, value.requires_grad, self.sim.device_of_tensor(value)))
            elif isinstance(value, _SIMPLE):
                parts.append((name, value))
            else:
                return None, 0, 0  # a cache or another object the call may change
        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), self.model.training, self.trainable)
        patches = tuple(sorted({id(type(m).forward) for m in self.modules}))
        instance = tuple(
            id(m.__dict__["forward"]) for m in self.modules if "forward" in m.__dict__ and m is not self.model
        )  # methods patched on modules (AttnLRP's rules); the model's own is this wrapper
        return (tuple(parts), modes, patches, instance), length, batch

    def _should_measure(self, family: Family, length: int) -> bool:
        """Replay a length within ``NEAR_END`` of a measured one, or inside the measured range once three
        lengths are measured; measure anything else (cells run longest first, so later cells mostly replay)."""
        records = family.records
        if length in records:
            return False
        if not records or family.length_dims_ambiguous:
            return True
        if min(abs(n - length) for n in records) <= NEAR_END:
            return False
        return len(records) < MIN_RECORDS or not min(records) <= length <= max(records)

    def _should_look_ahead(self, family: Family, length: int) -> bool:
        """Calls of growing length (one per output sentence, per output token): measure the cell's longest
        length first, so that the others interpolate instead of each being measured as a new longest."""
        if self.longest is None or length >= self.longest - NEAR_END or family.length_dims_ambiguous:
            return False
        return not family.records or max(family.records) < self.longest - NEAR_END

    def _measure_ahead(self, family: Family, batch: int, args, kwargs) -> None:
        """Measure the call at ``self.longest`` on stand-in inputs, in a sandbox: peaks and counters untouched."""
        length = args[0].shape[1] if args and isinstance(args[0], torch.Tensor) else None
        anchor = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        length = anchor.shape[1] if anchor is not None else length

        def longer(value):
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] == length:
                shape = (value.shape[0], self.longest, *value.shape[2:])
                with self.sim.forced_device(self.sim.device_of_tensor(value)):
                    stand_in = torch.zeros(shape, dtype=value.dtype, device="meta")
                return stand_in.requires_grad_(value.requires_grad) if value.is_leaf else stand_in
            return value

        with self.sim.sandbox():
            out = self._measure(family, self.longest, batch, [longer(a) for a in args],
                                {k: longer(v) for k, v in kwargs.items()}, probe=False)  # fmt: skip
            del out
        self.history.pop()
        self.measured -= 1
        self.ahead = getattr(self, "ahead", 0) + 1

    # ----------------------------------------------------------------- measured calls
    def _measure(self, family: Family | None, length: int | None, batch: int | None, args, kwargs, probe=True):
        sim = self.sim
        self.measured += 1
        before_live, before_counts = sim.live_bytes(), sim.totals()
        window = sim.open_window()
        try:
            sim.add({"forwards": 1, "weight_bytes": self.weight_bytes})
            out = self._real(*args, **kwargs)
        finally:
            transient = sim.close_window(window)
        counters = {k: v - before_counts.get(k, 0) for k, v in sim.totals().items()}
        self.history.append(counters)
        if family is None:
            return self._probe(None, out)
        after = sim.live_bytes()
        specs = _without_caches(recursively_apply(lambda t: self._spec(t, length, batch), out))
        outputs: dict[str, int] = {}
        for spec in _leaves(specs):
            outputs[spec.device] = outputs.get(spec.device, 0) + spec.bytes_at(length, batch)
        devices = (set(after) | set(before_live)) - {TOTAL}
        graph = {d: max(0, after.get(d, 0) - before_live.get(d, 0) - outputs.get(d, 0)) for d in devices}
        record = CallRecord(length, batch, specs, per_sequence(transient, batch), per_sequence(graph, batch),
                            per_sequence(counters, batch))  # fmt: skip
        family.length_dims_ambiguous |= length in self._model_dims
        self._note_ambiguity(family, specs, length)
        family.records[length] = record
        return self._probe(record, out) if probe else out

    def _spec(self, tensor: torch.Tensor, length: int, batch: int) -> TensorSpec:
        shape = _symbolic(tensor.shape, length, batch, every_length_dim=True)
        return TensorSpec(shape, tensor.dtype, self.sim.device_of_tensor(tensor), tensor.requires_grad)

    def _note_ambiguity(self, family: Family, specs, length: int) -> None:
        """A dim that only happens to equal the length (32 heads at length 32) shows as a pattern that differs
        between two lengths: such a family is always measured, never replayed."""
        other = next((r for r in family.records.values() if r.length != length), None)
        if other is not None:
            pattern = [s.shape for s in _leaves(specs)]
            family.length_dims_ambiguous |= pattern != [s.shape for s in _leaves(other.template)]

    def _probe(self, record: CallRecord | None, out):
        """Outputs that require grad pass through an identity whose backward measures the model's backward."""
        if not torch.is_grad_enabled():
            return out
        return recursively_apply(lambda t: _Probe.apply(self, record, t) if t.requires_grad else t, out)

    def _grad_bytes_pending(self, inputs=()) -> dict[str, int]:
        pending: dict[str, int] = {}
        tensors = [p for p in self.model.parameters() if p.requires_grad and p.grad is None]
        tensors += [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        for tensor in tensors:
            device = self.sim.device_of_tensor(tensor)
            pending[device] = pending.get(device, 0) + tensor.numel() * tensor.element_size()
        return pending

    def _backward_pass_counts(self) -> dict[str, float]:
        return {"backwards": 1, "weight_bytes": self.weight_bytes * (2 if self.trainable else 1)}

    # ----------------------------------------------------------------- replayed calls
    def _replay(self, family: Family, length: int, batch: int, args, kwargs):
        records = list(family.records.values())
        exact = family.records.get(length)

        def pick(get, counters=False):
            values = dict(get(exact)) if exact else _fit_dicts(records, length, get, counters)
            return for_batch(values, batch)

        transient = {k: int(v) for k, v in pick(lambda r: r.transient).items()}
        graph = {k: int(v) for k, v in pick(lambda r: r.graph).items()}
        self.sim.replay_peak(transient)
        self.sim.add(pick(lambda r: r.counters, True))
        template = (exact or records[0]).template
        grad_inputs = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor) and a.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and any(s.requires_grad for s in _leaves(template))
        make = self._maker(length, batch)
        if not needs_graph:
            return recursively_apply(make, template, test_type=_is_spec)
        backward = [_Sized(r.length, r.backward) for r in records if r.backward is not None]
        state = _ReplayState(self, template, length, batch, graph, grad_inputs, params, backward)
        outputs = _Replay.apply(state, *grad_inputs, *params)
        produced = iter(outputs)
        return recursively_apply(lambda s: next(produced) if s.requires_grad else make(s), template, test_type=_is_spec)

    def _maker(self, length: int, batch: int):
        def make(spec: TensorSpec) -> torch.Tensor:
            with self.sim.forced_device(spec.device):
                return torch.empty(spec.shape_at(length, batch), dtype=spec.dtype, device="meta")

        return make


def _symbolic(shape, length: int, batch: int, every_length_dim: bool = False) -> tuple:
    """A shape with the batch (dim 0) as ``BATCH`` and the sequence length (dim 1, or every dim equal to it
    when ``every_length_dim``: attention maps) as None."""
    out = []
    for i, d in enumerate(shape):
        if i == 0 and d == batch:
            out.append(BATCH)
        elif d == length and (every_length_dim or i == 1):
            out.append(None)
        else:
            out.append(d)
    return tuple(out)


def _without_caches(template):
    """A returned KV cache (``use_cache`` default) becomes None in the template: a record must not keep the
    measured call's tensors (and their autograd graph) alive; its bytes are in the call's saved blob."""
    from transformers.cache_utils import Cache

    if isinstance(template, dict):
        for key, value in list(template.items()):
            if isinstance(value, Cache):
                template[key] = None
    return template


def _leaves(tree) -> list[TensorSpec]:
    found: list[TensorSpec] = []
    recursively_apply(lambda s: found.append(s), tree, test_type=_is_spec)
    return found


class _Probe(torch.autograd.Function):
    """Identity; its backward marks where the model's own backward starts, a queued callback where it ends."""

    @staticmethod
    def forward(ctx, calls: ModelCalls, record: CallRecord, tensor: torch.Tensor):
        ctx.calls, ctx.record = calls, record
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        calls, record = ctx.calls, ctx.record
        if record is not None and record.backward is None and not getattr(record, "_pending", False):
            sim = calls.sim
            record._pending = True
            window, before = sim.open_window(), sim.totals()
            new_grads = calls._grad_bytes_pending()
            sim.add(calls._backward_pass_counts())

            def finish():
                transient = sim.close_window(window)
                activations = {d: max(0, v - new_grads.get(d, 0)) for d, v in transient.items() if d != TOTAL}
                activations[TOTAL] = max(0, transient.get(TOTAL, 0) - sum(new_grads.values()))
                counters = {k: v - before.get(k, 0) for k, v in sim.totals().items()}
                record.backward = BackwardRecord(
                    per_sequence(activations, record.batch), per_sequence(counters, record.batch)
                )
                record._pending = False

            torch.autograd.Variable._execution_engine.queue_callback(finish)
        else:
            ctx.calls.sim.add(ctx.calls._backward_pass_counts())
        return None, None, grad


@dataclass
class _ReplayState:
    calls: ModelCalls
    template: object
    length: int
    batch: int
    graph: dict[str, int]
    inputs: list
    params: list
    backward: list[_Sized]
    blobs: list = field(default_factory=list)


class _Replay(torch.autograd.Function):
    """A replayed call: outputs that require grad, saved activations as blobs, a backward from the records."""

    @staticmethod
    def forward(ctx, state: _ReplayState, *tensors):
        calls = state.calls
        for device, size in state.graph.items():
            if size > 0:
                with calls.sim.forced_device(device):
                    state.blobs.append(torch.empty(size, dtype=torch.uint8, device="meta"))
        ctx.state = state
        make = calls._maker(state.length, state.batch)
        return tuple(make(s) for s in _leaves(state.template) if s.requires_grad)

    @staticmethod
    def backward(ctx, *grads):
        state = ctx.state
        calls, sim = state.calls, state.calls.sim
        pending = calls._grad_bytes_pending(state.inputs)
        if state.backward:
            records = state.backward
            transient = for_batch(_fit_dicts(records, state.length, lambda r: r.transient), state.batch)
            counters = for_batch(_fit_dicts(records, state.length, lambda r: r.counters, True), state.batch)
        else:  # no backward was measured in this family: the graph's size, the passes' weights (FLOPs unknown)
            calls.backward_assumed += 1
            transient = dict(state.graph)
            counters = {**calls._backward_pass_counts()}
        extra = {d: int(transient.get(d, 0)) + pending.get(d, 0) for d in (set(transient) | set(pending)) - {TOTAL}}
        extra[TOTAL] = int(transient.get(TOTAL, sum(state.graph.values()))) + sum(pending.values())
        sim.replay_peak(extra)
        sim.add(counters)
        state.blobs.clear()
        grads_in = []
        for tensor in state.inputs:
            with sim.forced_device(sim.device_of_tensor(tensor)):
                grads_in.append(torch.empty_like(tensor, device="meta"))
        for param in state.params:
            if param.grad is None:
                with sim.forced_device(sim.device_of_tensor(param)):
                    grads_in.append(torch.empty_like(param, device="meta"))
            else:
                grads_in.append(None)
        return (None, *grads_in)


@dataclass
class _Sized:
    length: int
    record: BackwardRecord

    @property
    def transient(self):
        return self.record.transient

    @property
    def counters(self):
        return self.record.counters
