"""Environment knobs: one parser, one meaning of true and false, a one-line exit 2 for anything else."""

from __future__ import annotations

import pytest

from longctx import knobs
from longctx.cli import main
from longctx.errors import UsageError


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " On "])
def test_true_values(value):
    assert knobs.flag("DRY_RUN", False, {"DRY_RUN": value}) is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "", "  "])
def test_false_values(value):
    assert knobs.flag("DRY_RUN", True, {"DRY_RUN": value}) is False


def test_unset_is_the_default():
    assert knobs.flag("FORCE", True, {}) is True and knobs.flag("FORCE", False, {}) is False


@pytest.mark.parametrize("value", ["2", "y", "bogus", "maybe"])
def test_anything_else_names_the_knob(value):
    with pytest.raises(UsageError, match=rf"^ALLOW_STALE={value!r}"):
        knobs.flag("ALLOW_STALE", False, {"ALLOW_STALE": value})


def test_integers_and_lists():
    assert knobs.integer("REPEATS", 3, {}) == 3 and knobs.integer("REPEATS", 3, {"REPEATS": "5"}) == 5
    with pytest.raises(UsageError, match="REPEATS='0': must be >= 1"):
        knobs.integer("REPEATS", 3, {"REPEATS": "0"}, minimum=1)
    assert knobs.integers("SWEEP_R_VALUES", [1], {"SWEEP_R_VALUES": "1, 4 16"}) == [1, 4, 16]
    assert knobs.names("ATTR_FUNCS", ("IG", "attnlrp"), {"ATTR_FUNCS": " attnlrp "}) == ["attnlrp"]
    with pytest.raises(UsageError, match="ATTR_FUNCS: unknown nope"):
        knobs.names("ATTR_FUNCS", ("IG",), {"ATTR_FUNCS": "IG,nope"})


def test_dry_run_false_runs_for_real_and_bogus_exits_2(monkeypatch, capsys, tmp_path):
    """``DRY_RUN=false`` must not start a dry run (it used to: any non-empty value but 0 did)."""
    import longctx.runner

    seen = []
    def fake_run_plan(plan, where, **kw):
        seen.append(kw)
        return longctx.runner.RunReport()

    monkeypatch.setattr(longctx.runner, "run_plan", fake_run_plan)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRY_RUN", "false")
    assert main(["run", "main", "--profile", "smoke"]) == 0
    assert [kw["dry_run"] for kw in seen] == [False]
    monkeypatch.setenv("DRY_RUN", "sometimes")
    assert main(["run", "main", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DRY_RUN='sometimes'" in err[0]
