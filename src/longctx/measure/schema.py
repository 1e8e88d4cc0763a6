"""Typed forms of the measurement layer's records, shared by the writers and the readers of result files."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from longctx.stats import Summary


class DevicePeak(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allocated_bytes: int
    reserved_bytes: int
    live_before_bytes: int


class PeakRecord(BaseModel):
    """One run's ``PeakMemory.record()`` (totals are sums over devices; weights are included)."""

    model_config = ConfigDict(extra="allow")

    source: str
    allocated_bytes: int
    reserved_bytes: int
    live_before_bytes: int
    devices: dict[str, DevicePeak]


class PeakSummary(BaseModel):
    """Peak memory over the measured repeats of a cell, as its ``metrics.peak_mem``."""

    model_config = ConfigDict(extra="allow")

    source: str | None
    allocated_bytes: Summary
    reserved_bytes: Summary
    weights_bytes: int | None = None


def summarize_peaks(records: list[dict], weights_bytes: int | None = None) -> dict:
    """``metrics.peak_mem`` from the runs' peak records (summaries of the totals, one source)."""
    from longctx.stats import summarize

    sources = sorted({r["source"] for r in records})
    return PeakSummary(
        source="; ".join(sources) or None,
        allocated_bytes=summarize([r["allocated_bytes"] for r in records]),
        reserved_bytes=summarize([r["reserved_bytes"] for r in records]),
        weights_bytes=weights_bytes,
    ).model_dump()
