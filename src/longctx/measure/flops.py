"""FLOPs of the aten ops run inside a context manager, with torch.utils.flop_counter's formulas; works on meta.

The counting rule is ``FlopCounterMode``'s: an op with a registered formula (mm, bmm, addmm, baddbmm, conv,
the SDPA kernels) counts by it, an op without one is first decomposed (CompositeImplicitAutograd) so that
its parts count, everything else counts zero. Unlike ``FlopCounterMode`` it tracks no modules: its module
hooks break ``torch.autograd.grad`` on leaf tensors (IG's and AttnLRP's backward).
"""

from __future__ import annotations

import functools
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _pop_mode, _push_mode
from torch.utils.flop_counter import flop_registry

_NOT_DECOMPOSED = {torch.ops.prim.device.default}


@functools.cache
def decomposes(func) -> bool:
    """Whether the counting rule decomposes ``func``: no FLOP formula and a CompositeImplicitAutograd kernel."""
    if func._overloadpacket in flop_registry or func in _NOT_DECOMPOSED:
        return False
    key = torch._C.DispatchKey.CompositeImplicitAutograd
    return key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)


def op_flops(func, args, kwargs, out) -> int:
    """FLOPs of one executed aten op by its registered formula (0 without one)."""
    formula = flop_registry.get(func._overloadpacket)
    return int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0


def decompose_within(mode: TorchDispatchMode, func, args, kwargs):
    """Run ``func``'s decomposition with ``mode`` active again (its parts are dispatched to it)."""
    _push_mode(mode)
    try:
        return func.decompose(*args, **kwargs)
    finally:
        _pop_mode()


class FlopCounter(TorchDispatchMode):
    """``with FlopCounter() as flops: ...; flops.total``: matmul/conv/attention FLOPs (forward and backward)."""

    def __enter__(self) -> FlopCounter:
        self._counts: Counter = Counter()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if decomposes(func):
            out = decompose_within(self, func, args, kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        flops = op_flops(func, args, kwargs, out)
        if flops:
            self._counts[str(func._overloadpacket)] += flops
        return out

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def by_operator(self) -> dict[str, int]:
        """FLOPs per aten op name (e.g. ``aten.mm``), whole run."""
        return dict(self._counts)
