"""Summary statistics of repeated measurements: n, mean, sample std (n-1), Student-t 95% CI, raw values."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict
from scipy import stats as _scipy_stats


def summarize(values: Sequence[float]) -> dict:
    """Aggregate repeats; the raw values are kept so nothing is lost to the summary."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "values": []}
    mean = math.fsum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "values": xs}
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half], "values": xs}


class Summary(BaseModel):
    """The typed form of ``summarize``'s output, for readers of result files."""

    model_config = ConfigDict(extra="forbid")

    n: int
    mean: float | None
    std: float | None
    ci95: list[float] | None
    values: list[float]
