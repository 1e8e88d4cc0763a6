"""``predict_cell(cell, gpu)``: one plan cell's peak memory, FLOPs, minimum bytes and roofline time, on meta.

The cell's own code path runs (the runner's method implementation for its protocol, its inputs, its loops
and chunk sizes) on a meta model placed on logical GPUs as the real run would place it, inside a
``Simulation`` (exact live bytes per device, FLOPs), with model calls counted and repeated ones replayed
(``calls``) and the stationary loops of ``loops.SAMPLED_LOOPS`` sampled. ``peak_bytes`` is the sum over
GPUs of each GPU's peak of live tensor bytes (the original's definition: a sum of per-device peaks; a CUDA
``max_memory_allocated`` adds allocator rounding, ``max_memory_reserved`` also the cache); a cell fits when
every GPU's peak stays below its usable memory. ``min_bytes`` counts what must move at the least: the
weights once per forward pass and once per backward pass (twice when the weights are trainable: their
gradients are written), plus, for decoding, the K/V cache read at every step. ``roofline_s`` =
max(FLOPs / peak fp16 FLOP/s, min_bytes / HBM bandwidth) on one GPU (the layers of a device map run one
GPU at a time): a lower bound on the time of any implementation of the same work on that GPU.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from unittest import mock

import torch

from longctx.errors import RunFailure, UsageError
from longctx.predict.calls import ModelCalls
from longctx.predict.gpu_paths import gpu_code_paths
from longctx.predict.gpus import GpuSpec
from longctx.predict.loops import LoopSampler, sampled_loops
from longctx.predict.placement import Placement, device_map, meta_causal_lm
from longctx.predict.simulate import SOURCE, Simulation, SimulationError, peak_row
from longctx.study import Cell

STATUSES = ("ok", "oom", "error", "skipped_context")
CALL_FAMILIES: dict[tuple, dict] = {}  # measured model calls, shared by the cells of one placed model


@dataclass(frozen=True)
class OriginalProcess:
    """State an earlier method left in the original's one process, added at entry (compare-original only)."""

    stale_grads: bool = False  # parameter .grad buffers of an earlier backward (15.2 GB for Qwen3-8B, fp16)
    mlm_bytes: int = 0  # the masked LM the perturbation runners construct inside the measured window
    trainable: bool = False  # parameters require grad (the original never froze them)


@dataclass
class Prediction:
    """What ``longctx predict`` reports for one cell (bytes, FLOPs, seconds; see the module docstring)."""

    cell_id: str
    study: str
    labels: dict
    gpu: dict
    n_gpus: int
    status: str
    group: str = ""
    fits: bool | None = None
    peak_bytes: int | None = None
    peak_bytes_by_device: dict[str, int] = field(default_factory=dict)
    host_peak_bytes: int = 0
    flops: float = 0.0
    min_bytes: float = 0.0
    roofline_s: float | None = None
    passes: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    predict_seconds: float = 0.0
    source: str = SOURCE

    def as_dict(self) -> dict:
        return asdict(self)


def roofline_seconds(flops: float, min_bytes: float, gpu: GpuSpec) -> float:
    """Lower bound on one GPU: the slower of computing at peak and moving the minimum bytes at full bandwidth."""
    return max(flops / gpu.fp16_flops, min_bytes / gpu.hbm_bytes_per_s)


def predict_cell(
    cell: Cell,
    gpu: GpuSpec,
    *,
    n_gpus: int | None = None,
    device_map_rule: str = "transformers",
    original: OriginalProcess | None = None,
) -> Prediction:
    """Predict one plan cell on ``gpu`` (``n_gpus``: override the cell's own placement; see the module docstring)."""
    started = time.perf_counter()
    if cell.study == "attribution":
        from longctx.predict.attribution import predict_attribution

        prediction = predict_attribution(cell, gpu, n_gpus, device_map_rule, original or OriginalProcess())
    elif cell.study == "streaming":
        from longctx.predict.streaming import predict_streaming

        prediction = predict_streaming(cell, gpu)
    else:
        raise UsageError(f"no predictor for study {cell.study!r}")
    prediction.group = cell.group
    prediction.predict_seconds = round(time.perf_counter() - started, 3)
    return prediction


@dataclass
class MetaRun:
    """One simulated run: the placed meta model, the simulation and its call/loop instrumentation."""

    model: torch.nn.Module
    placement: Placement
    sim: Simulation
    calls: ModelCalls
    loops: LoopSampler
    gpu: GpuSpec
    notes: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self, *patches):
        """Enter the simulation with every instrument; ``patches`` are extra context managers (stand-ins)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.sim)
            self.sim.release_baseline()
            stack.enter_context(self.calls)
            stack.enter_context(sampled_loops(self.loops))
            stack.enter_context(gpu_code_paths(self.sim, self.gpu))
            for patch in patches:
                stack.enter_context(patch)
            yield self

    def finish(self, prediction: Prediction) -> Prediction:
        """Fill the measured fields of ``prediction`` and detach the model."""
        self.placement.remove()
        for param in self.model.parameters():
            param.grad = None
        peaks = peak_row(self.sim)
        counts = self.sim.totals()
        prediction.peak_bytes = peaks["total"]
        prediction.peak_bytes_by_device = peaks["devices"]
        prediction.host_peak_bytes = peaks["host"]
        prediction.flops = float(counts["flops"])
        prediction.min_bytes = prediction.min_bytes + float(counts["weight_bytes"])
        prediction.passes = {"forwards": counts["forwards"], "backwards": counts["backwards"]}
        prediction.fits = all(peak <= self.gpu.usable_bytes for peak in peaks["devices"].values())
        if prediction.status == "ok" and not prediction.fits:
            prediction.status = "oom"
        prediction.roofline_s = roofline_seconds(prediction.flops, prediction.min_bytes, self.gpu)
        prediction.notes += self.notes + self._instrument_notes()
        return prediction

    def _instrument_notes(self) -> list[str]:
        notes = [f"sampled loop {entry['site']} ran {entry['ran']} of {entry['iterations']} iterations "
                 "(the rest extrapolated)" for entry in _merged_loops(self.loops.log)]  # fmt: skip
        if self.calls.replayed:
            notes.append(f"{self.calls.replayed} model calls replayed from {self.calls.measured} measured")
        if self.calls.backward_assumed:
            notes.append(f"{self.calls.backward_assumed} replayed backward passes assumed (none measured)")
        if self.sim.assumed_values:
            notes.append(f"{self.sim.assumed_values} tensor values read on the host were assumed to be 1")
        return notes


def _merged_loops(log: list[dict]) -> list[dict]:
    merged: dict[str, dict] = {}
    for entry in log:
        if entry["ran"] < entry["iterations"]:
            seen = merged.setdefault(entry["site"], {"site": entry["site"], "ran": 0, "iterations": 0})
            seen["ran"] += entry["ran"]
            seen["iterations"] += entry["iterations"]
    return list(merged.values())


def prepare_run(
    spec: str,
    dtype: str,
    attn_implementation: str | None,
    gpu: GpuSpec,
    n_gpus: int,
    *,
    rule: str = "transformers",
    trainable: bool = False,
    entry_state: OriginalProcess | None = None,
) -> MetaRun:
    """A placed meta model inside a fresh simulation (entry state: stale gradients, an extra blob)."""
    model = meta_causal_lm(spec, dtype, attn_implementation, trainable=trainable)
    placement = Placement(model, device_map(model, n_gpus, gpu.usable_bytes, rule))
    baseline = [*model.parameters(), *model.buffers()]
    sim = Simulation(baseline=baseline)
    placement.attach(sim)
    notes = []
    if entry_state is not None and entry_state.stale_grads:
        embedding = model.get_input_embeddings().weight
        for name, param in model.named_parameters():
            if param is embedding:
                continue  # every backward of the original starts at input embeddings: no embedding gradient
            device = placement.device_of_parameter(name)
            with sim.forced_device(device):
                param.grad = torch.empty_like(param, device="meta")
            sim.pin([param.grad], device)
            baseline.append(param.grad)
        notes.append("original process state: stale parameter gradients of an earlier method live at entry")
    if entry_state is not None and entry_state.mlm_bytes:
        blob = torch.empty(entry_state.mlm_bytes, dtype=torch.uint8, device="meta")
        sim.pin([blob], placement.main_device)
        baseline.append(blob)
        notes.append("original process state: the masked LM the perturbation runner builds, on the main GPU")
    key = (spec, dtype, attn_implementation, tuple(sorted(placement.device_map.items())), trainable)
    calls = ModelCalls(sim, model, families=CALL_FAMILIES.setdefault(key, {}))
    return MetaRun(model, placement, sim, calls, LoopSampler(sim, placement.layer_devices()), gpu, notes)


def failed(prediction: Prediction, exc: Exception) -> Prediction:
    prediction.status = "error"
    prediction.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return prediction


# What a cell's code path may raise: the cell would fail on the GPU too (RunFailure, UsageError: e.g. ReAGent's
# masked-LM length limit, a kernel the method refuses), or the meta run cannot follow it (SimulationError).
PREDICTION_ERRORS = (SimulationError, RunFailure, UsageError, NotImplementedError, RuntimeError, ValueError,
                     TypeError, IndexError)  # fmt: skip


def patched(target, name: str, value):
    """A context manager replacing ``target.name`` (a module attribute) for the run."""
    return mock.patch.object(target, name, value)
