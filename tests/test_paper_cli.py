"""`longctx paper all|build`: DRY_RUN runs and writes nothing; missing TeX exits 2 with a hint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import longctx.runner
from longctx.cli import main as cli_main


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "NeurIPS").mkdir()
    (tmp_path / "NeurIPS" / "main.tex").write_text("% stub\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_paper_all_dry_run_prints_the_plan_and_runs_nothing(project, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(longctx.runner, "run_plan", lambda plan, where, **kw: calls.append((plan.profile, where, kw)))
    monkeypatch.setenv("DRY_RUN", "1")
    assert cli_main(["paper", "all", "--profile", "smoke"]) == 0
    assert calls == [("smoke", Path("results/smoke"), {"dry_run": True, "executor": "local", "jobs": 1})]
    assert "profile: smoke (requested explicitly)" in capsys.readouterr().out
    assert not (project / "NeurIPS" / "generated").exists() and not (project / "results").exists()


def test_paper_all_runs_the_plan_then_generates_and_lists_missing(project, monkeypatch, capsys):
    monkeypatch.delenv("DRY_RUN", raising=False)
    monkeypatch.setattr(longctx.runner, "run_plan", lambda plan, where, **kw: longctx.runner.RunReport())
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no TeX here: warn, keep tables and figures
    assert cli_main(["paper", "all", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "no PDF; install TeX Live" in out
    assert "missing cells" in out and "attribution/efficient/IG/P10-G8" in out
    assert (project / "NeurIPS" / "generated" / "macros.tex").exists()
    assert (project / "NeurIPS" / "figures" / "kv_trace.pdf").exists()


def test_paper_build_without_latexmk_exits_2_naming_what_to_install(project, monkeypatch, capsys):
    assert cli_main(["tables", "--profile", "smoke"]) == 0
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli_main(["paper", "build"]) == 2
    err = capsys.readouterr().err
    assert "latexmk" in err and "apt-get install latexmk" in err and len(err.strip().splitlines()) == 1


def test_paper_build_refuses_tables_of_another_profile(project, capsys):
    assert cli_main(["tables", "--profile", "smoke"]) == 0
    assert cli_main(["paper", "build", "--profile", "full"]) == 2
    assert "profile 'smoke'" in capsys.readouterr().err


def test_source_date_epoch_is_the_commit_time_or_zero(tmp_path):
    from longctx.paper.build import source_date_epoch

    repo = Path(__file__).resolve().parents[1]
    expected = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=repo, capture_output=True, text=True)
    assert source_date_epoch(repo) == (expected.stdout.strip() or "0")
    assert source_date_epoch(tmp_path) == "0"
