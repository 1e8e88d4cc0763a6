"""NeurIPS/main.tex builds with latexmk from generated files; the PDF shows fake numbers, the profile mark,
[INSERT DATA] for a missing cell, and is byte-identical across two builds (SOURCE_DATE_EPOCH)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from longctx.paper.build import build_pdf
from longctx.paper.figures import generate_figures
from longctx.paper.tables import generate_tables
from test_paper_fakes import STREAMING, smoke_plan, write_all

ROOT = Path(__file__).resolve().parents[1]
PAPER_SOURCES = ("main.tex", "references.bib", "longctx.sty", "longctx_neurips.sty")
pytestmark = pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed")


def paper_copy(dest: Path, plan, results: Path) -> Path:
    """The paper sources in ``dest`` with tables and figures generated from ``results``."""
    dest.mkdir(parents=True)
    for name in PAPER_SOURCES:
        shutil.copy(ROOT / "NeurIPS" / name, dest / name)
    report = generate_tables(plan, results / plan.profile, dest / "generated")
    generate_figures(plan, results / plan.profile, dest / "figures")
    return report


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_pdf_builds_reproducibly_with_numbers_and_smoke_mark(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    plan = smoke_plan()
    write_all(tmp_path / "results", plan)
    pdfs = []
    for name in ("a", "b"):
        paper_copy(tmp_path / name, plan, tmp_path / "results")
        pdfs.append(build_pdf(tmp_path / name))
    assert pdfs[0].read_bytes() == pdfs[1].read_bytes(), "two builds of the same sources differ"
    text = pdf_text(pdfs[0])
    assert f"{STREAMING['lazy'][1]:.2f}" in text  # the fake Lazy PPL, through the generated table
    pages = text.count("\f")  # pdftotext ends every page with a form feed
    assert text.count("smoke profile — not paper numbers") == pages + 1  # banner on each page + title
    assert "INSERT DATA" not in text


def test_missing_cell_shows_insert_data_in_the_pdf(tmp_path):
    plan = smoke_plan()
    write_all(tmp_path / "results", plan)
    lazy = next(c for c in plan.groups()["main"] if c.config["method"] == "lazy")
    (tmp_path / "results" / plan.profile / f"{lazy.id}.json").unlink()
    report = paper_copy(tmp_path / "paper", plan, tmp_path / "results")
    assert lazy.id in report.missing
    assert "[INSERT DATA]" in pdf_text(build_pdf(tmp_path / "paper"))


def test_plan_without_the_streaming_study_still_builds(tmp_path):
    from longctx.plan import load_plan

    env = {"STUDIES": "attribution", "ATTR_FUNCS": "ifr_all_positions,ifr_multi_hop"}
    plan = load_plan("smoke", env=env)
    write_all(tmp_path / "results", plan)
    report = paper_copy(tmp_path / "paper", plan, tmp_path / "results")
    assert report.missing == []
    text = pdf_text(build_pdf(tmp_path / "paper"))
    assert "not in this plan" in text and "INSERT DATA" not in text


def test_tex_error_is_a_run_failure_naming_the_error(tmp_path):
    from longctx.errors import RunFailure

    plan = smoke_plan()
    paper_copy(tmp_path / "paper", plan, tmp_path / "results")
    main = tmp_path / "paper" / "main.tex"
    main.write_text(main.read_text().replace(r"\maketitle", r"\maketitle\UndefinedMacroForTheTest"))
    with pytest.raises(RunFailure, match="Undefined control sequence"):
        build_pdf(tmp_path / "paper")
