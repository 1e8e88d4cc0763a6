"""Stationary loops run for a few iterations and extrapolated: what makes a full-scale meta run affordable.

A meta run costs Python time per op, so a loop of thousands of identical-shape iterations (one per output
token, per sentence ablation, per sink chunk) cannot run in full. The loops listed in ``SAMPLED_LOOPS`` are
ones whose iterations are independent of each other (rows of a result, ablations restored after use,
chunks accumulated in place): skipping some changes no later iteration. While ``sampled_loops`` is active,
such a loop runs only the iterations at indices 0, 1, 2, n/4, n/2, 3n/4, n-2, n-1 (more for a site that
asks for more), the last, the first and a middle one first (``run_order``: iterations are independent, and
model calls measured at those three lengths let every other one be replayed, ``calls``); the counters of
the skipped ones (FLOPs, bytes, passes) are interpolated linearly in the index from the ones that ran, and
the peak is that of the iterations that ran, which include the largest (last) ones. Where a loop has
iterations that do no work (empty mask rows), the edges between those and working ones are found by
bisection (``work_edges``) rather than interpolated across.

A loop is recognised by the ``for`` statement that iterates a ``range``/``enumerate`` made in a listed
module: the statement's source line must match the site's pattern (``list(range(n))`` and comprehensions
are never sampled). A site whose line changed is simply not sampled any more: slower, never wrong.
"""

from __future__ import annotations

import builtins
import contextlib
import dis
import importlib
import linecache
import sys
from collections.abc import Iterator
from dataclasses import dataclass

SAMPLE_ABOVE = 0  # loops up to this many iterations (and up to a site's samples + 2) run in full
_GET_ITER, _FOR_ITER, _EXTENDED_ARG = dis.opmap["GET_ITER"], dis.opmap["FOR_ITER"], dis.opmap["EXTENDED_ARG"]


@dataclass(frozen=True)
class LoopSite:
    """A ``for`` statement whose iterations are independent, by module, function and source-line prefix."""

    module: str
    function: str
    line: str
    why: str
    in_order: bool = False  # the sampled iterations run in index order (else the last ones first)
    samples: int = 8  # iterations run of a longer loop (more where iterations differ: some do no work)
    layers: bool = False  # one iteration per decoder layer: run the first and last layer of every device


SAMPLED_LOOPS = (
    LoopSite("longctx.attribution.methods.gradient_reference", "original_ig_scores",
             "for g, target in enumerate(", "IG rows are independent (one per output token)"),
    LoopSite("longctx.attribution.methods.gradient_reference", "original_attention_scores",
             "for g in range(", "rows are independent; the previous row's outputs stay alive during a "
             "forward, so the sampled rows run in order and include the last two", in_order=True),
    LoopSite("longctx.attribution.methods.ig", "ig_position_scores", "for g in tqdm(range(",
             "IG rows are independent (one per output token)"),
    LoopSite("longctx.attribution.methods.attnlrp", "attnlrp_position_scores", "for g in tqdm(range(",
             "one backward per row through the same retained graph (freed by the last: in order)", in_order=True),
    LoopSite("longctx.attribution.methods.attnlrp", "attnlrp_reference", "for g, target in enumerate(",
             "one backward per row through the same retained graph (freed by the last: in order)", in_order=True),
    LoopSite("longctx.attribution.methods.perturbation_reference", "original_sentence_ablation",
             "for feature in range(", "each ablation is restored after its forward: same length every time; "
             "mask rows of template tokens are empty (no forward), so the loop is sampled densely", samples=16),
    LoopSite("longctx.attribution.methods.perturbation", "perturbation_position_scores",
             "for k, (a, b) in enumerate(tqdm(out_spans", "each output sentence's row block is scored on its own "
             "prefix (the inputs are not changed); its work grows with the sentence index"),
    LoopSite("longctx.attribution.methods.routing_reference", "all_positions_scores",
             "for index in range(len(store.attn_in))", "identical layers, scores added over layers", layers=True),
    LoopSite("longctx.attribution.methods.routing_reference", "span_scores",
             "for index in range(len(store.attn_in))", "identical layers, scores added over layers", layers=True),
    LoopSite("longctx.attribution.methods.routing_reference", "all_positions_scores", "for i0 in range(",
             "sink chunks write their own rows", samples=3),
    LoopSite("longctx.attribution.methods.routing_reference", "all_positions_scores", "for j0 in range(",
             "source chunks accumulate in place", samples=3),
    LoopSite("longctx.attribution.methods.routing_reference", "span_scores", "for j0 in range(",
             "source chunks accumulate in place", samples=3),
    LoopSite("longctx.attribution.tracing", "chunk_ranges", "for start in range(",
             "chunks of sinks or sources of one layer: rows written or accumulated in place", samples=3),
    LoopSite("longctx.attribution.routes", "head_proximity_sum", "for h0 in range(",
             "groups of heads accumulate in place", samples=3),
)  # fmt: skip


def sample_indices(n: int, samples: int = 8) -> list[int]:
    """The iterations that run of a loop of ``n``: all of them up to ``max(SAMPLE_ABOVE, samples + 2)``, else the
    first three, the last two and ``samples - 5`` spread evenly (0, 1, 2, n/4, n/2, 3n/4, n-2, n-1 for 8);
    nested loops of one layer's chunks take 3 (first, middle, last): their costs are linear in the index."""
    if n <= max(SAMPLE_ABOVE, samples + 2):
        return list(range(n))
    if samples <= 3:
        return [0, n // 2, n - 1]
    spread = samples - 5
    return sorted({0, 1, 2, n - 2, n - 1, *(k * n // (spread + 1) for k in range(1, spread + 1))})


def run_order(indices: list[int]) -> list[int]:
    """Independent iterations run longest, shortest and middle first: a model call measured at those three
    lengths lets ``calls`` replay every other one by interpolation."""
    if len(indices) < 3:
        return indices
    first = [indices[-1], indices[0], indices[len(indices) // 2]]
    return first + [i for i in reversed(indices) if i not in first]


def interpolated_total(samples: dict[int, float], n: int) -> float:
    """Sum over indices 0..n-1 of a per-iteration quantity known at ``samples``, linear in between."""
    points = sorted(samples.items())
    total = sum(value for _, value in points)
    for (i0, v0), (i1, v1) in zip(points, points[1:], strict=False):
        gap = i1 - i0 - 1
        if gap > 0:
            total += gap * (v0 + v1) / 2  # the mean of a linear run equals the mean of its end points
    return total


def work_edges(work: dict[int, float]) -> list[int]:
    """Midpoints of the gaps between a sampled iteration that did no work and one that did (e.g. empty mask rows
    before a block of sentences): running them halves the gap, so an edge of the working block is found by
    bisection instead of being interpolated linearly across the gap."""
    points = sorted(work)
    return [(i0 + i1) // 2 for i0, i1 in zip(points, points[1:], strict=False)
            if i1 - i0 > 1 and (work[i0] == 0) != (work[i1] == 0)]  # fmt: skip


def layer_indices(layer_devices: list[str]) -> list[int]:
    """The layers that run of a per-layer loop: the first and last on every device, and the middle one."""
    n = len(layer_devices)
    keep = {0, n // 2, n - 1}
    for i, device in enumerate(layer_devices):
        if i == 0 or layer_devices[i - 1] != device:
            keep.add(i)
        if i == n - 1 or layer_devices[i + 1] != device:
            keep.add(i)
    return sorted(keep)


class LoopSampler:
    """Runs the sampled iterations of listed loops and adds the skipped ones' counters to ``counters``.

    ``layer_devices``: the device of each decoder layer (per-layer loops keep one layer at each device's ends).
    """

    def __init__(self, counters, layer_devices: list[str] | None = None):
        self.counters = counters  # an object with a ``totals() -> dict`` and ``add(dict)`` (the Simulation)
        self.layer_devices = layer_devices or []
        self.active_layers: set[int] | None = None  # layers whose capture is built (a sampled trace is running)
        self.log: list[dict] = []

    def iterate(self, items: list, site: LoopSite) -> Iterator:
        n = len(items)
        if site.layers:
            keep = layer_indices(self.layer_devices) if len(self.layer_devices) == n else list(range(n))
        else:
            keep = sample_indices(n, site.samples)
        if not site.in_order:
            keep = run_order(keep)
        per_iteration: dict[str, dict[int, float]] = {}
        ran = 0
        try:
            while keep:
                for index in keep:
                    before = self.counters.totals()
                    yield items[index]
                    ran += 1
                    after = self.counters.totals()
                    for key, value in after.items():
                        per_iteration.setdefault(key, {})[index] = value - before.get(key, 0)
                keep = [] if site.in_order or site.layers else work_edges(per_iteration.get("flops", {}))
        finally:
            self.extrapolate(per_iteration, n, ran, site)

    def extrapolate(self, per_iteration: dict[str, dict[int, float]], n: int, ran: int, site: LoopSite) -> None:
        """Add the counters of the iterations that did not run (linear in the index between those that did)."""
        if ran < n and per_iteration:
            done = {key: sum(values.values()) for key, values in per_iteration.items()}
            full = {key: interpolated_total(values, n) if len(values) == ran else done[key]
                    for key, values in per_iteration.items()}  # fmt: skip
            self.counters.add({key: full[key] - done[key] for key in full})
        self.log.append({"site": f"{site.module.rsplit('.', 1)[-1]}.{site.function}: {site.line}...",
                         "iterations": n, "ran": ran})  # fmt: skip


def _loop_frame():
    """The frame whose ``for`` statement is asking for the iterator (None when it is not a for statement)."""
    frame = sys._getframe(2)
    if frame.f_code.co_name == "__iter__" and "tqdm" in frame.f_code.co_filename:
        frame = frame.f_back  # tqdm's generator runs when the caller's FOR_ITER first asks for an item
        return frame if frame.f_code.co_code[frame.f_lasti] in (_FOR_ITER, _EXTENDED_ARG) else None
    code, at = frame.f_code.co_code, frame.f_lasti
    if code[at] != _GET_ITER:
        return None
    after = at + 2
    while code[after] == _EXTENDED_ARG:  # a long loop body's jump offset
        after += 2
    return frame if code[after] == _FOR_ITER else None


def _site_of(frame, sites: dict) -> LoopSite | None:
    for site in sites.get(frame.f_code.co_name, ()):
        if linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip().startswith(site.line):
            return site
    return None


def _sampling_types(sampler: LoopSampler, sites: dict):
    class SampledRange:
        """``range`` that a listed ``for`` statement iterates sparsely (everything else sees a plain range)."""

        def __init__(self, *args):
            self._range = builtins.range(*args)

        def __iter__(self):
            frame = _loop_frame()
            site = _site_of(frame, sites) if frame is not None else None
            if site is None or (not site.layers and len(self._range) <= max(SAMPLE_ABOVE, site.samples + 2)):
                return iter(self._range)
            return sampler.iterate(self._range, site)

        def __len__(self):
            return len(self._range)

        def __getitem__(self, key):
            return self._range[key]

        def __reversed__(self):
            return reversed(self._range)

        def __contains__(self, value):
            return value in self._range

    class SampledEnumerate:
        """``enumerate`` that a listed ``for`` statement iterates sparsely."""

        def __init__(self, iterable, start: int = 0):
            self._items = iterable
            self._start = start

        def __iter__(self):
            frame = _loop_frame()
            site = _site_of(frame, sites) if frame is not None else None
            if (
                site is None
                or not hasattr(self._items, "__len__")
                or len(self._items) <= max(SAMPLE_ABOVE, site.samples + 2)
            ):
                return builtins.enumerate(self._items, self._start)
            pairs = [(self._start + i, item) for i, item in builtins.enumerate(self._items)]
            return sampler.iterate(pairs, site)

    return SampledRange, SampledEnumerate


LAYER_TRACING_MODULES = ("longctx.attribution.methods.ifr", "longctx.attribution.methods.flashtrace")
TRACE_SITE = LoopSite("longctx.attribution.tracing", "trace_layers", "on_layer(index, capture)",
                      "identical layers: each layer's scores are computed and added on their own", layers=True,
                      in_order=True)  # fmt: skip


def _layer_sampled(trace, sampler: LoopSampler):
    """``trace_layers`` whose per-layer callback runs only for the sampled layers (IFR, FlashTrace): the forward
    itself runs every layer; the skipped callbacks' counters are extrapolated like a sampled loop's."""

    def trace_sampled(model, input_ids, on_layer):
        n = len(sampler.layer_devices)
        sampler.active_layers = set(layer_indices(sampler.layer_devices)) if n else None
        per_layer: dict[str, dict[int, float]] = {}

        def callback(index, capture):
            before = sampler.counters.totals()
            on_layer(index, capture)
            for key, value in sampler.counters.totals().items():
                per_layer.setdefault(key, {})[index] = value - before.get(key, 0)

        try:
            trace(model, input_ids, callback)
        finally:
            sampler.active_layers = None
        ran = len(next(iter(per_layer.values()), {}))
        sampler.extrapolate(per_layer, n or ran, ran, TRACE_SITE)

    return trace_sampled


def _capture_sampled(capture, sampler: LoopSampler):
    """The tracing hook that builds a layer's capture, skipped (saved tensors dropped) for unsampled layers."""

    def attn_output(hooks, module, args, output):
        if sampler.active_layers is not None and hooks.index not in sampler.active_layers:
            hooks.saved.clear()
            return None
        return capture(hooks, module, args, output)

    return attn_output


@contextlib.contextmanager
def sampled_loops(sampler: LoopSampler, sites=SAMPLED_LOOPS):
    """Inside, the listed loops run sparsely (module globals ``range``/``enumerate`` shadowed, then restored)."""
    by_function: dict[str, list[LoopSite]] = {}
    for site in sites:
        by_function.setdefault(site.function, []).append(site)
    sampled_range, sampled_enumerate = _sampling_types(sampler, by_function)
    patched = []
    for name in dict.fromkeys(site.module for site in sites):
        module = importlib.import_module(name)
        for builtin, replacement in (("range", sampled_range), ("enumerate", sampled_enumerate)):
            if builtin not in vars(module):
                setattr(module, builtin, replacement)
                patched.append((module, builtin))  # no original: the builtin shows through again
    for name in LAYER_TRACING_MODULES:
        module = importlib.import_module(name)
        original = module.trace_layers
        module.trace_layers = _layer_sampled(original, sampler)
        patched.append((module, "trace_layers", original))
    hooks = importlib.import_module("longctx.attribution.tracing")._LayerHooks
    original_capture = hooks._attn_output
    hooks._attn_output = _capture_sampled(original_capture, sampler)
    patched.append((hooks, "_attn_output", original_capture))
    try:
        yield sampler
    finally:
        for module, name, *original in patched:
            if original:
                setattr(module, name, original[0])
            else:
                delattr(module, name)
