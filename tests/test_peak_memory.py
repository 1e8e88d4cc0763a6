"""The one peak-memory probe on CPU: exact tensor bytes, an untimed exact pass for timed loops, determinism."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from longctx.measure.memory import SEPARATE_PASS, TENSOR_SOURCE, PeakMemory
from longctx.measure.schema import PeakRecord
from longctx.streaming.compiled import make_evaluator
from longctx.streaming.config import cache_budget
from test_streaming_helpers import tiny_model, token_stream

F32 = 4


def _two_intermediates(w: torch.Tensor, x: torch.Tensor) -> None:
    a = x @ w
    b = a @ w  # a and b live together: 2 * (8, 256) float32
    del a, b


def test_cpu_record_is_exact_tensor_bytes_with_the_baseline_live_at_entry():
    w, x, unused = torch.ones(256, 256), torch.ones(8, 256), torch.ones(100)
    with PeakMemory(cuda=False, baseline=[unused]) as memory:
        _two_intermediates(w, x)
    entry = w.nbytes + x.nbytes + unused.nbytes
    record = memory.record()
    assert record == {
        "source": TENSOR_SOURCE,
        "allocated_bytes": entry + 2 * 8 * 256 * F32,
        "reserved_bytes": entry + 2 * 8 * 256 * F32,
        "live_before_bytes": entry,
        "devices": {"cpu": {k: record[k] for k in ("allocated_bytes", "reserved_bytes", "live_before_bytes")}},
    }
    PeakRecord.model_validate(record)
    assert record["source"].startswith("cpu")


def test_timed_runs_on_cpu_are_not_tracked_and_carry_the_exact_pass_record():
    w, x = torch.ones(256, 256), torch.ones(8, 256)
    memory = PeakMemory(cuda=False)
    with pytest.raises(RuntimeError, match="exact_pass"):
        memory.record()
    memory.exact_pass(lambda: _two_intermediates(w, x))
    exact = memory.record()
    assert exact["source"] == TENSOR_SOURCE + SEPARATE_PASS
    for _ in range(2):
        with memory.timed():
            assert _get_current_dispatch_mode() is None  # no tracker slows the timed code
            big = torch.ones(1 << 20)
        assert memory.record() == exact
    del big


def test_exact_pass_runs_compiled_code_eagerly():
    """Dynamo refuses compiled frames under a dispatch mode; the pass runs them eagerly, counting no new graph."""
    from torch._dynamo.utils import counters

    w, x = torch.ones(256, 256), torch.ones(8, 256)
    compiled = torch.compile(_two_intermediates, fullgraph=True, dynamic=False, backend="eager")
    compiled(w, x)
    graphs = counters["stats"]["unique_graphs"]
    memory = PeakMemory(cuda=False)
    memory.exact_pass(lambda: compiled(w, x))
    assert memory.record()["allocated_bytes"] == w.nbytes + x.nbytes + 2 * 8 * 256 * F32
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


@pytest.mark.parametrize("impl", ["fast", "plain"])
def test_decode_loop_peak_is_deterministic_and_above_the_weights(impl):
    model = tiny_model("gpt-neox")
    ids = token_stream(60)
    evaluate = make_evaluator(model, ids, cache_budget("lazy", n_sink=2, cap_total=16, compress_every=4), impl)
    weights = sum(p.nbytes for p in model.parameters())
    records = []
    for _ in range(2):
        memory = PeakMemory(cuda=False, baseline=model)
        memory.exact_pass(evaluate)
        records.append(memory.record())
    assert records[0] == records[1]
    assert records[0]["live_before_bytes"] >= weights + ids.nbytes
    assert records[0]["allocated_bytes"] > records[0]["live_before_bytes"]
