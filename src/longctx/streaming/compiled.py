"""Compiled decoding: one fixed-shape graph per decode step (torch.compile, CUDA graphs on a GPU).

An eager decode step launches hundreds of small kernels from Python; with shapes that never change the
whole step can be captured once. Everything the step needs is a device tensor of fixed shape: the token
stream, the step counter (incremented inside the graph), the host-planned schedule tables (first kept
token ``lo`` and position ``shift`` per step, see ``schedule``), the ring cache's buffers and slot map
(see ``static_cache``) and the NLL buffer the step writes into. So the host loop only calls
``step()`` and, on the planned steps, ``rebase()`` (a second fixed-shape graph): no host sync, no
Python value that changes between calls, hence no recompilation. The prefill runs eagerly (one
variable-length causal forward, as every method's) into a DynamicCache that the ring cache copies.

``torch.compile(fullgraph=True, dynamic=False)`` with inductor; mode ``reduce-overhead`` (CUDA graphs) on
a GPU, ``default`` elsewhere. Compilation happens in a warm-up before any timed run; dynamo's counters
give the graph breaks and recompilations, reported with the compile time (``CompileReport``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm
from transformers.cache_utils import DynamicCache

from longctx.errors import UsageError
from longctx.streaming.base import CacheStats
from longctx.streaming.config import Budget
from longctx.streaming.evaluator import Clock, StreamRun, evaluate_stream, token_nll
from longctx.streaming.rope import Rotator
from longctx.streaming.schedule import plan_schedule
from longctx.streaming.static_cache import RingCache, static_address

DEFAULT_BACKEND = "inductor"
WARMUP_CALLS = 3  # CUDA graph trees run a function eagerly, then record it, then replay it
ATTENTION_IMPLS = ("eager", "sdpa")  # the ones that take an arbitrary additive 4-D mask


@dataclass
class CompileReport:
    """What compiling cost and whether the graphs held: counts from ``torch._dynamo.utils.counters``."""

    graph_breaks: int
    recompiles: int  # graphs compiled beyond the first of each compiled function (step, rebase)
    cudagraph_skips: int  # graphs inductor ran without CUDA graphs (reduce-overhead only; 0 is the goal)
    compile_time_s: float  # wall time of the warm-up: one eager prefill, then tracing, inductor, CUDA graph recording
    mode: str
    backend: str


def check_compilable(model) -> None:
    """Refuse models the fixed-shape path does not handle (one-line UsageError; the knobs are checked in config)."""
    attention = model.config._attn_implementation
    if attention not in ATTENTION_IMPLS:
        raise UsageError(f"--compile needs eager or sdpa attention (a 4-D additive mask), model uses {attention!r}")
    layer_types = getattr(model.config, "layer_types", None) or ["full_attention"]
    if set(layer_types) != {"full_attention"}:
        raise UsageError("--compile supports full-attention models only (this one has sliding-window layers)")


@dataclass(frozen=True)
class _DynamoCounts:
    """A snapshot of ``torch._dynamo.utils.counters``: graphs compiled, graph breaks, CUDA graph skips."""

    graphs: int  # every graph dynamo compiled: with fullgraph=True one per compilation, recompilations included
    graph_breaks: int
    cudagraph_skips: int

    @classmethod
    def now(cls) -> _DynamoCounts:
        from torch._dynamo.utils import counters  # imported on use: torch._dynamo takes a second to import

        graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
        return cls(graphs, breaks, counters["inductor"]["cudagraph_skips"])


class CompiledStream:
    """The compiled decode loop over one token stream; build once, ``run()`` per repeat.

    Building one resets dynamo (``torch._dynamo.reset()``): one compiled stream is in use at a time (cells run
    back to back in one process), so cache entries of earlier streams never pile up against dynamo's
    recompile limit (8 per function; hitting it with ``fullgraph=True`` is an error), and every stream
    compiles, and counts graphs, from a clean slate.
    """

    def __init__(
        self, model, ids: torch.Tensor, budget: Budget, backend: str = DEFAULT_BACKEND, mode: str | None = None
    ):
        check_compilable(model)
        device = ids.device
        self.model, self.budget, self.device = model, budget, device
        self.plan = plan_schedule(budget, ids.numel())
        self.prefill_len, self.steps = self.plan.prefill_len, self.plan.decode_steps
        self.dtype = next(model.parameters()).dtype
        self.cache = RingCache(
            Rotator(model),
            model.config.num_hidden_layers,
            n_slots=self.plan.max_attention,
            n_sink=budget.n_sink,
            first_shift=self.plan.first_shift,
            device=device,
        )
        self.ids = static_address(ids.clone())
        self.lo = _device_table(self.plan.lo, device)
        self.shift = _device_table(self.plan.shift, device)
        self.rebase_delta = _device_table(self.plan.rebase_delta, device)
        self.step_index = _device_table([0], device)  # shape [1]: index_select, not a data-dependent int
        self.nll = static_address(torch.zeros(ids.numel() - 1, device=device))
        self.mode = mode or ("reduce-overhead" if device.type == "cuda" else "default")
        self.backend = backend
        torch._dynamo.reset()
        options = dict(fullgraph=True, dynamic=False, backend=backend, mode=self.mode)
        self.step = torch.compile(self._decode_step, **options)
        self.rebase = torch.compile(self._rebase, **options)
        self._before = _DynamoCounts.now()
        start = time.perf_counter()
        self._functions = self._warm_up()
        self.compile_time_s = time.perf_counter() - start

    def _decode_step(self) -> None:
        """Feed ``x_t`` (t = P + step), score ``x_{t+1}`` into ``nll[t]``, advance the step counter."""
        k = self.step_index
        t = k + self.prefill_len
        shift = self.shift.index_select(0, k)
        mask = self.cache.begin_step(t, self.lo.index_select(0, k), shift, self.dtype)
        out = self.model(
            input_ids=self.ids.index_select(0, t).view(1, 1),
            position_ids=(t + shift).view(1, 1),
            attention_mask=mask,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.nll.index_copy_(0, t, token_nll(out.logits[0, -1:], self.ids.index_select(0, t + 1)))
        self.step_index.add_(1)

    def _rebase(self) -> None:
        self.cache.rotate_ring(self.rebase_delta.index_select(0, self.step_index))

    def _prefill(self) -> None:
        """The eager causal forward over ``x_0 … x_{P-1}``; scores ``x_1 … x_P``; loads the ring cache."""
        P, first = self.prefill_len, self.plan.first_shift
        prefill = DynamicCache()
        positions = torch.arange(first, first + P, device=self.device)[None]
        logits = self.model(input_ids=self.ids[None, :P], position_ids=positions, past_key_values=prefill).logits[0]
        scored = min(P, self.nll.numel())
        self.nll[:scored] = token_nll(logits[:scored], self.ids[1 : scored + 1])
        self.cache.load_prefill(prefill, P)
        self.step_index.zero_()

    def _call(self, fn) -> None:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        fn()

    @torch.no_grad()
    def _warm_up(self) -> int:
        """Compile (and on a GPU record) each function the stream uses before any timed run; returns how many.

        run() resets the state the warm-up calls changed."""
        if not self.steps:
            return 0
        functions = (self.step, self.rebase) if self.plan.rebase_steps else (self.step,)
        self._prefill()
        for fn in functions:
            for _ in range(WARMUP_CALLS):
                self.step_index.zero_()  # stay at step 0: every table index is valid
                self._call(fn)
        Clock(self.device).sync()
        return len(functions)

    def compile_report(self) -> CompileReport:
        """Counts since compiling began; every graph compiled beyond one per function is a recompilation."""
        now = _DynamoCounts.now()
        return CompileReport(
            graph_breaks=now.graph_breaks - self._before.graph_breaks,
            recompiles=now.graphs - self._before.graphs - self._functions,
            cudagraph_skips=now.cudagraph_skips - self._before.cudagraph_skips,
            compile_time_s=self.compile_time_s,
            mode=self.mode,
            backend=self.backend,
        )

    @torch.no_grad()
    def run(self, progress: bool = False) -> StreamRun:
        """One timed pass: eager prefill, then the compiled steps (and rebases) the schedule lists."""
        clock = Clock(self.device)
        rebase_at = set(self.plan.rebase_steps)
        t0 = clock.mark()
        self._prefill()
        t1 = clock.mark()
        first = None
        loop = tqdm(range(self.steps), desc="compiled", unit="tok", disable=not progress, mininterval=1.0, leave=False)
        for k in loop:
            if k in rebase_at:
                self._call(self.rebase)
            self._call(self.step)
            if first is None:
                first = clock.mark()
        t2 = clock.mark()
        return StreamRun(
            nll=self.nll.cpu().clone(),
            prefill_ms=clock.elapsed_ms(t0, t1),
            decode_ms=clock.elapsed_ms(t1, t2),
            first_token_ms=clock.elapsed_ms(t1, first) if first is not None else None,
            decode_steps=self.steps,
            stats=self._stats(),
            compile=asdict(self.compile_report()),
        )

    def _stats(self) -> CacheStats:
        """Cache statistics from the schedule: sink keys rewritten every step, the ring at every rebase."""
        plan, layers = self.plan, self.cache.layers
        key_bytes = sum(layer.keys[:, :, :1].numel() * layer.keys.element_size() for layer in layers)
        rewritten = plan.n_sink * plan.decode_steps + (plan.max_attention - plan.n_sink) * len(plan.rebase_steps)
        return CacheStats(
            prune_events=plan.prune_events,
            bytes_moved=rewritten * key_bytes,
            max_attention_len=plan.max_attention_len,
            max_query_position=plan.max_query_position,
            rebase_events=len(plan.rebase_steps),
            kv_len_trace=list(plan.kv_len_trace),
        )


def make_evaluator(
    model,
    ids: torch.Tensor,
    budget: Budget,
    impl: str = "fast",
    compile: bool = False,
    profile_maintenance: bool = False,
    progress: bool = False,
    backend: str | None = None,
) -> Callable[[], StreamRun]:
    """A callable doing one pass over ``ids`` per call: compiled once up front (``compile``), else eager."""
    if not compile:
        return lambda: evaluate_stream(model, ids, budget, impl, profile_maintenance, progress)
    if profile_maintenance:
        raise ValueError("compiled decoding runs cache maintenance inside the step graph: it cannot be profiled")
    stream = CompiledStream(model, ids, budget, backend=backend or DEFAULT_BACKEND)
    return lambda: stream.run(progress)


def _device_table(values, device) -> torch.Tensor:
    """A long tensor with a fixed address (a graph input CUDA graphs read in place)."""
    return static_address(torch.tensor(values, dtype=torch.long, device=device))
