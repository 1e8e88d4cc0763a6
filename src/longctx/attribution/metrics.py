"""A time cell's rows and ``metrics``: built here from the measured runs, read back through the same model.

One row per repeat (``runs`` of the result): status, ``time_sec``, the ``peak_mem`` record of
``longctx.measure.memory`` and the actual token counts. ``cell_metrics`` is the one summarizer: the result's
metrics, the time-curve CSV and the bench curves all come from it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from longctx.measure.schema import PeakSummary, summarize_peaks
from longctx.stats import Summary, summarize

STATUS_OK = "ok"
SKIPPED_NONPOSITIVE = "skipped_nonpositive_input"
SKIPPED_CONTEXT = "skipped_model_ctx"
MAX_MESSAGE = 500


class AttributionMetrics(BaseModel):
    """``metrics`` of an ``attribution_time`` result."""

    model_config = ConfigDict(extra="allow")

    time_sec: Summary
    peak_mem: PeakSummary
    lengths: dict | None
    statuses: list[str]


def one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def base_row(method: str, prompt_len: int, output_len: int, repeat: int) -> dict:
    """The identifying fields of one run row (the original experiment's names), before anything is measured."""
    return {
        "attr_func": method,
        "input_len": prompt_len,
        "output_len": output_len,
        "total_len": prompt_len + output_len,
        "repeat": repeat,
    }


def status_row(identity: dict, status: str, error: str | None = None) -> dict:
    """A row for a run that measured nothing (skipped, failed to start, crashed)."""
    row = {**identity, "status": one_line(status), "time_sec": None}
    if error:
        row["error"] = error
    return row


def overall_status(rows: list[dict]) -> str:
    """ok if every run is ok, else the first other status (oom, skipped_..., runtime_error: ...)."""
    return next((row["status"] for row in rows if row["status"] != STATUS_OK), STATUS_OK)


def cell_metrics(rows: list[dict]) -> dict:
    """Summaries over the ok runs, the actual token counts and every run's status."""
    ok = [row for row in rows if row["status"] == STATUS_OK]
    return AttributionMetrics(
        time_sec=summarize([row["time_sec"] for row in ok]),
        peak_mem=summarize_peaks([row["peak_mem"] for row in ok]),
        lengths=next((row["lengths"] for row in rows if row.get("lengths")), None),
        statuses=[row["status"] for row in rows],
    ).model_dump()
