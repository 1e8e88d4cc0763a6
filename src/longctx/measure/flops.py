"""FLOPs of the aten ops run inside a context manager: torch's FlopCounterMode, silent; works on meta tensors."""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode


class FlopCounter:
    """``with FlopCounter() as flops: ...; flops.total``: matmul/conv/attention FLOPs (forward and backward).

    Only the ops with a registered formula count (mm, bmm, addmm, baddbmm, conv, SDPA kernels); elementwise ops
    count as zero, as in torch.utils.flop_counter.
    """

    def __enter__(self) -> FlopCounter:
        self._mode = FlopCounterMode(display=False)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return self._mode.get_total_flops()

    def by_operator(self) -> dict[str, int]:
        """FLOPs per aten op name (e.g. ``aten.mm``), whole run."""
        return {str(op): int(n) for op, n in self._mode.get_flop_counts()["Global"].items()}
