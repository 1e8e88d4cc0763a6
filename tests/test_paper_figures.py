"""Figures from fake results: every PDF written, reproducible bytes, placeholders and missing ids."""

from __future__ import annotations

from longctx.paper.figures import generate_figures
from test_paper_fakes import smoke_plan, write_all

FIGURES = ("sweep_R.pdf", "attr_output.pdf", "attr_prompt.pdf", "kv_trace.pdf")


def test_figures_written_and_byte_identical_across_runs(tmp_path):
    plan = smoke_plan()
    write_all(tmp_path / "results", plan)
    first = generate_figures(plan, tmp_path / "results" / plan.profile, tmp_path / "a")
    generate_figures(plan, tmp_path / "results" / plan.profile, tmp_path / "b")
    assert first.missing == []
    for name in FIGURES:
        data = (tmp_path / "a" / name).read_bytes()
        assert data.startswith(b"%PDF") and len(data) > 1000
        assert data == (tmp_path / "b" / name).read_bytes(), f"{name} is not reproducible"
        assert b"/CreationDate" not in data


def test_figures_without_results_report_every_cell_they_needed(tmp_path):
    plan = smoke_plan()
    report = generate_figures(plan, tmp_path / "results" / plan.profile, tmp_path / "figs")
    assert all((tmp_path / "figs" / name).exists() for name in FIGURES)
    needed = {c.id for g in ("sweep_R", "time_curve_output", "time_curve_prompt") for c in plan.groups()[g]}
    needed |= {
        c.id
        for c in plan.groups()["main"]
        if c.labels["dataset"] == "pg19" and c.config["method"] != "recompute"
    }
    assert set(report.missing) == needed


def test_attribution_figures_draw_both_protocols_and_the_original_on_full(tmp_path):
    from longctx.paper.attribution_tables import CURVES, ORIGINAL, curve_grid
    from longctx.paper.figures import series_points
    from longctx.paper.store import ResultView
    from longctx.plan import load_plan

    plan = load_plan("full", env={"STUDIES": "attribution", "ATTR_FUNCS": "IG"})
    write_all(tmp_path / "results", plan)
    report = generate_figures(plan, tmp_path / "results" / plan.profile, tmp_path / "figs")
    assert report.missing == [] and (tmp_path / "figs" / "attr_output.pdf").read_bytes().startswith(b"%PDF")
    view = ResultView(plan, tmp_path / "results" / plan.profile)
    grid = curve_grid(view, CURVES[0])
    assert grid.series("IG") == ["efficient", "reference"]
    xs, times, _, _ = series_points(view, CURVES[0], grid, "IG", ORIGINAL)
    assert xs == [10, 100, 500, 1000] and times[0] == 7.7784  # the original's ok points only
