"""The plan runner: skip valid, rerun stale, ALLOW_STALE marks, FORCE, resume, fingerprint and baseline checks."""

import json
import sys
import types
from dataclasses import asdict, dataclass

import pytest

from longctx import runner
from longctx.errors import UsageError
from longctx.plans import Cell, Plan
from longctx.provenance import utc_now
from longctx.results import ReusePolicy, atomic_write_json, build_result, config_hash


@dataclass
class FakeConfig:
    method: str
    value: int


def _install_fake_study(monkeypatch, calls, fail_on=()):
    module = types.ModuleType("fake_cells")
    module.CONFIG_CLASS = FakeConfig

    def describe_inputs(cfg):
        return {"model": {"model_id": "fake", "model_revision": "r"}, "data": {"token_ids_sha256": "d"}}

    def run_cell(cfg, inputs, out_path):
        calls.append(cfg.value)
        if cfg.value in fail_on:
            raise RuntimeError("boom")
        result = build_result(
            study="fake",
            kind="fake",
            config=asdict(cfg),
            inputs=inputs,
            metrics={"v": cfg.value},
            runs=[],
            started_utc=utc_now(),
        )
        atomic_write_json(out_path, result)
        return result

    module.describe_inputs, module.run_cell = describe_inputs, run_cell
    monkeypatch.setitem(sys.modules, "fake_cells", module)
    monkeypatch.setitem(runner.CELL_MODULES, "streaming", "fake_cells")
    monkeypatch.setattr(runner, "prepare_assets", lambda plan: None)


def _plan(values, method="lazy"):
    cells = [
        Cell(id=f"streaming/x/{v}", study="streaming", group="main", labels={}, config={"method": method, "value": v})
        for v in values
    ]
    return Plan(profile="smoke", description="test", assets={}, cells=cells)


def test_second_run_skips_everything_and_force_reruns(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    report = runner.run_plan(_plan([1, 2]), ReusePolicy(), tmp_path, env={})
    assert calls == [1, 2] and report.counts()["run"] == 2
    report = runner.run_plan(_plan([1, 2]), ReusePolicy(), tmp_path, env={})
    assert calls == [1, 2] and report.counts()["skip"] == 2
    runner.run_plan(_plan([1, 2]), ReusePolicy(force=True), tmp_path, env={})
    assert calls == [1, 2, 1, 2]


def test_stale_result_reruns_by_default_and_is_marked_under_allow_stale(tmp_path, monkeypatch, capsys):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), ReusePolicy(), tmp_path, env={})
    path = tmp_path / "smoke" / "streaming" / "x" / "1.json"
    data = json.loads(path.read_text())
    data["config_hash"] = "0" * 64  # as if code or config changed since
    path.write_text(json.dumps(data))
    report = runner.run_plan(_plan([1]), ReusePolicy(allow_stale=True), tmp_path, env={})
    assert report.counts()["reuse_stale"] == 1 and calls == [1]
    assert "stale" in json.loads(path.read_text())
    assert "ALLOW_STALE" in capsys.readouterr().err
    runner.run_plan(_plan([1]), ReusePolicy(), tmp_path, env={})
    assert calls == [1, 1] and "stale" not in json.loads(path.read_text())


def test_failed_cell_does_not_stop_the_others_and_resume_reruns_only_it(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls, fail_on={2})
    report = runner.run_plan(_plan([1, 2, 3]), ReusePolicy(), tmp_path, env={})
    assert report.failures.keys() == {"streaming/x/2"} and calls == [1, 2, 3]
    calls.clear()
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1, 2, 3]), ReusePolicy(), tmp_path, env={})
    assert calls == [2]


def test_truncated_result_is_rerun(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), ReusePolicy(), tmp_path, env={})
    path = tmp_path / "smoke" / "streaming" / "x" / "1.json"
    path.write_text(path.read_text()[:50])
    runner.run_plan(_plan([1]), ReusePolicy(), tmp_path, env={})
    assert calls == [1, 1] and json.loads(path.read_text())["metrics"] == {"v": 1}


def _rewrite_identity(path, identity_hash):
    data = json.loads(path.read_text())
    data["fingerprint"]["identity_hash"] = identity_hash
    path.write_text(json.dumps(data))


def test_result_from_another_machine_is_rerun(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), ReusePolicy(), tmp_path, env={})
    _rewrite_identity(tmp_path / "smoke" / "streaming" / "x" / "1.json", "f" * 64)
    runner.run_plan(_plan([1]), ReusePolicy(), tmp_path, env={})
    assert calls == [1, 1]


def test_strict_baseline_refuses_a_foreign_baseline(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    plan = _plan([1], method="recompute")
    runner.run_plan(plan, ReusePolicy(), tmp_path, env={})
    _rewrite_identity(tmp_path / "smoke" / "streaming" / "x" / "1.json", "f" * 64)
    with pytest.raises(UsageError, match="STRICT_BASELINE"):
        runner.run_plan(plan, ReusePolicy(), tmp_path, env={"STRICT_BASELINE": "1"})
    assert calls == [1]


def test_dry_run_runs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    calls = []
    _install_fake_study(monkeypatch, calls)
    report = runner.run_plan(_plan([1, 2]), ReusePolicy(), tmp_path, dry_run=True, env={})
    assert calls == [] and not (tmp_path / "smoke").exists()
    assert report.counts()["run"] == 2 and "nothing was run" in capsys.readouterr().out


def test_config_hash_of_a_cell_matches_its_result(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([7]), ReusePolicy(), tmp_path, env={})
    data = json.loads((tmp_path / "smoke" / "streaming" / "x" / "7.json").read_text())
    assert data["config_hash"] == config_hash(data["config"], data["inputs"])
