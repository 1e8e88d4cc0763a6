"""End to end: the smoke pipeline (plan -> results -> tables -> figures -> PDF), then a rerun that reuses all.

Runs a reduced smoke plan (fewer sweep points and methods, via the same knobs users have) through the
real CLI in a scratch copy of the working directory layout, so it exercises exactly what `make paper` does.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import install_tiny_models
from longctx.claims import CLAIMS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

REDUCED = {
    "PROFILE": "smoke",
    "SWEEP_R_VALUES": "1 8",
    "SWEEP_SIGMA_VALUES": "0 4",
    "SWEEP_DELTA_VALUES": "0 4",
    "ATTR_FUNCS": "IG,attention_I_G,attnlrp,perturbation_all,perturbation_CLP,perturbation_REAGENT,"
    "ifr_all_positions,ifr_multi_hop,ifr_multi_hop_both",
}


def _longctx(args, cwd, env):
    return subprocess.run(
        [sys.executable, "-m", "longctx", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_dir):
    """A scratch project directory: NeurIPS sources copied, tiny models reused from the session fixture."""
    work = tmp_path_factory.mktemp("e2e")
    shutil.copytree(ROOT / "NeurIPS", work / "NeurIPS", ignore=shutil.ignore_patterns("*.pdf", "generated", "figures"))
    (work / "NeurIPS" / "generated").mkdir()
    (work / "NeurIPS" / "figures").mkdir()
    install_tiny_models(tiny_dir, work)
    return work


def test_smoke_paper_end_to_end_then_full_reuse(workdir):
    env = {**os.environ, **REDUCED}
    first = _longctx(["paper", "all"], workdir, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = sorted((workdir / "results" / "smoke").rglob("*.json"))
    assert results, "no result JSON written"
    for path in results:
        data = json.loads(path.read_text())
        assert data["config_hash"] and data["fingerprint"]["identity"] and data["provenance"]["code_version"]
    main_table = (workdir / "NeurIPS" / "generated").glob("*.tex")
    assert any(main_table)
    if shutil.which("latexmk"):
        pdf = workdir / "NeurIPS" / "main.pdf"
        assert pdf.exists()
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
        assert "INSERT DATA" not in text
        assert "smoke profile" in text.lower()
        streaming = json.loads(next((workdir / "results" / "smoke" / "streaming" / "pg19").glob("lazy-*")).read_text())
        assert f"{streaming['metrics']['ppl']:.2f}" in text or f"{streaming['metrics']['ppl']:.1f}" in text
    main_tex = (workdir / "NeurIPS" / "generated" / "main_table.tex").read_text()
    assert "& reference & Lazy" in main_tex and "& efficient & Lazy" in main_tex  # both protocols measured
    assert r"\missing" not in main_tex
    claims = _longctx(["claims", "check", "--profile", "smoke"], workdir, env)
    assert claims.returncode == 0, claims.stdout[-3000:] + claims.stderr[-3000:]
    assert all(f" {c.id}: " in claims.stdout for c in CLAIMS)
    assert re.search(r"pass +streaming\.pg19\.delta_noop_without_slack\.reference", claims.stdout)
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    second = _longctx(["paper", "all"], workdir, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()), "second run must reuse every result"
    summary = [line for line in second.stdout.splitlines() if re.match(r"\d+ cells: ", line)]
    assert summary and re.fullmatch(r"\d+ cells: \d+ skip", summary[-1]), summary
