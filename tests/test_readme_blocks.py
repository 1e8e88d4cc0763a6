"""README's generated blocks are current (departures, claims): the README cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from longctx.cli import main
from longctx.readme_blocks import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_blocks_are_current():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(text) == text, "README.md is stale: run `longctx docs`"


def test_docs_command_rewrites_a_stale_block_and_check_fails_on_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    fresh = (ROOT / "README.md").read_text(encoding="utf-8")
    readme.write_text(fresh.replace("<!-- end departures -->", "stale row\n<!-- end departures -->"))
    assert main(["docs", "--readme", str(readme), "--check"]) == 1
    assert main(["docs", "--readme", str(readme)]) == 0 and readme.read_text() == fresh
    readme.write_text("no blocks here")
    assert main(["docs", "--readme", str(readme)]) == 2
    with pytest.raises(ValueError):
        render("no blocks here")
