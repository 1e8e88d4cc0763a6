"""Predictions in the paper, always marked as predictions (no GPU measured them).

* ``compare_original_table``: the original attribution time curve, measured on its GPUs vs predicted by
  this artifact on meta tensors (``longctx predict --compare-original`` writes ``results/predict/
  compare_original.json``): status, allocated peak, measured time beside the roofline bound.
* ``roofline_points`` / ``draw_roofline``: each attribution cell's roofline time bound (``longctx predict``
  writes ``results/predict/<profile>_<gpu>.json``), drawn as a thin dash-dot line in the time figures.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from longctx.paper.attribution_tables import method_label
from longctx.paper.latex import escape
from longctx.paper.render import Table

PREDICT_DIR = Path("results/predict")
COMPARE_FILE = PREDICT_DIR / "compare_original.json"
ROOFLINE_LABEL = "roofline bound (predicted)"
ROOFLINE_STYLE = {"linestyle": "-.", "linewidth": 0.6, "alpha": 0.8, "marker": None}  # dotted is the original


def _read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _num(value, fmt: str) -> str:
    return "--" if value is None else format(value, fmt)


def _status(status: str) -> str:
    return r"\statuscell{OOM}" if status == "oom" else escape(status)


def compare_original_table(path: str | Path = COMPARE_FILE) -> Table:
    """Measured by the original vs predicted, one block per method (omitted when nothing was predicted)."""
    data = _read(Path(path))
    blocks: list[list[list[str]]] = []
    if data is not None:
        by_method: dict[str, list[list[str]]] = {}
        for row in data["cells"]:
            by_method.setdefault(row["method"], []).append([
                escape(method_label(row["method"])), str(row["prompt_len"]), str(row["output_len"]),
                _status(row["measured_status"]), _status(row["predicted_status"]),
                _num(row["measured_peak_gb"], ".1f"), _num(row["predicted_peak_gb"], ".1f"),
                _num(row["measured_time_s"], ".3g"), _num(row["roofline_s"], ".3g"),
            ])  # fmt: skip
        blocks = list(by_method.values())
    agreement = "" if data is None else (
        f" Status agreement {_num(data['status_agreement'], '.0%')}, median relative peak error over the ok "
        f"cells {_num(data['median_peak_rel_error'], '.1%')}."
    )  # fmt: skip
    return Table(
        name="predicted_vs_original",
        caption="Prediction (no GPU): the original attribution time curve (Qwen3-8B fp16, eager attention, "
        "six or eight 80\\,GB GPUs) as measured by its authors and as predicted by this artifact's reference "
        "protocol on meta tensors with the original's device map and process state. Peak = sum over GPUs of "
        "the allocated peak (GB); the original's published figure is the reserved peak. Roofline: a lower "
        f"bound on the time on one A800 (FLOPs at peak and weights at full bandwidth).{agreement}".replace(
            "%", r"\%"
        ),
        label="tab:predicted-original",
        header=["Method", "$P$", "$G$", "measured", "predicted", "meas.\\ GB", "pred.\\ GB", "meas.\\ s",
                "roofline s"],
        align="l" + "r" * 8,
        blocks=blocks,
        source="results/predict/compare_original.json (longctx predict --compare-original)",
    )  # fmt: skip


def prediction_file(profile: str, gpu: str | None = None, root: str | Path = PREDICT_DIR) -> Path | None:
    """The plan prediction of ``profile`` for ``gpu`` (any GPU when None), if one was written."""
    found = sorted(Path(root).glob(f"{profile}_{gpu or '*'}.json"))
    return found[0] if found else None


def roofline_points(profile: str, varies: str, gpu: str | None = None, root: str | Path = PREDICT_DIR) -> dict:
    """{(method, protocol): ([lengths], [roofline seconds])} of one time curve (``varies``: ``output_len`` or
    ``prompt_len``; the other length fixed at the curve's own value), from the plan prediction; {} without one."""
    path = prediction_file(profile, gpu, root)
    data = _read(path) if path else None
    if data is None:
        return {}
    fixed_key = "prompt_len" if varies == "output_len" else "output_len"
    group = "time_curve_output" if varies == "output_len" else "time_curve_prompt"
    cells = [c for c in data["cells"] if c["study"] == "attribution" and c["roofline_s"] is not None]
    fixed = Counter(c["labels"][fixed_key] for c in cells if c.get("group") == group).most_common(1)
    points: dict[tuple[str, str], set[tuple[int, float]]] = {}
    for cell in cells:
        labels = cell["labels"]
        if fixed and labels[fixed_key] == fixed[0][0]:
            key = (labels["method"], labels.get("protocol", "efficient"))
            points.setdefault(key, set()).add((labels[varies], cell["roofline_s"]))
    return {key: tuple(map(list, zip(*sorted(values), strict=True))) for key, values in points.items()}


def draw_roofline(ax, points: dict, method: str, protocol: str, color) -> bool:
    """Draw one method's roofline bound on a time axis (dash-dot, same colour); whether anything was drawn."""
    series = points.get((method, protocol))
    if not series:
        return False
    ax.plot(*series, color=color, **ROOFLINE_STYLE)
    return True
