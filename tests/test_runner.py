"""The plan runner: skip valid, rerun stale, ALLOW_STALE marks, FORCE, resume, fingerprint and baseline checks."""

import json
from dataclasses import asdict, dataclass

import pytest

from longctx import runner
from longctx.errors import UsageError
from longctx.plan import Plan
from longctx.provenance import utc_now
from longctx.results import ReusePolicy, atomic_write_json, build_result, config_hash
from longctx.studies import STUDIES
from longctx.study import Cell


@dataclass
class FakeConfig:
    method: str
    value: int


class FakeStudy:
    """A study whose cells record their value; ``fail_on`` values raise."""

    name = "fake"

    def __init__(self, calls: list, fail_on=()):
        self.calls, self.fail_on = calls, set(fail_on)

    def config(self, values: dict) -> FakeConfig:
        return FakeConfig(**values)

    def is_baseline(self, cfg: FakeConfig) -> bool:
        return cfg.method == "recompute"

    def describe_inputs(self, cfg: FakeConfig) -> dict:
        return {"model": {"model_id": "fake", "model_revision": "r"}, "data": {"token_ids_sha256": "d"}}

    def run(self, cfg: FakeConfig, inputs: dict, out_path):
        self.calls.append(cfg.value)
        if cfg.value in self.fail_on:
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

    def read_metrics(self, kind: str, metrics: dict):
        if set(metrics) != {"v"}:
            raise ValueError("fake metrics have one key, v")
        return metrics


def _install_fake_study(monkeypatch, calls, fail_on=()):
    monkeypatch.setitem(STUDIES, "fake", FakeStudy(calls, fail_on))
    monkeypatch.setattr(runner, "prepare_assets", lambda plan: None)


def _plan(values, method="lazy"):
    cells = [
        Cell(id=f"fake/x/{v}", study="fake", group="main", labels={}, config={"method": method, "value": v})
        for v in values
    ]
    return Plan(profile="smoke", description="test", assets={}, cells=cells)


def test_second_run_skips_everything_and_force_reruns(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    report = runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 2] and report.counts()["run"] == 2
    report = runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 2] and report.counts()["skip"] == 2
    runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(force=True), env={})
    assert calls == [1, 2, 1, 2]


def test_stale_result_reruns_by_default_and_is_marked_under_allow_stale(tmp_path, monkeypatch, capsys):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    path = tmp_path / "fake" / "x" / "1.json"
    data = json.loads(path.read_text())
    data["config_hash"] = "0" * 64  # as if code or config changed since
    path.write_text(json.dumps(data))
    report = runner.run_plan(_plan([1]), tmp_path, ReusePolicy(allow_stale=True), env={})
    assert report.counts()["reuse_stale"] == 1 and calls == [1]
    assert "stale" in json.loads(path.read_text())
    assert "ALLOW_STALE" in capsys.readouterr().err
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 1] and "stale" not in json.loads(path.read_text())


def test_failed_cell_does_not_stop_the_others_and_resume_reruns_only_it(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls, fail_on={2})
    report = runner.run_plan(_plan([1, 2, 3]), tmp_path, ReusePolicy(), env={})
    assert report.failures.keys() == {"fake/x/2"} and calls == [1, 2, 3]
    calls.clear()
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1, 2, 3]), tmp_path, ReusePolicy(), env={})
    assert calls == [2]


def test_truncated_result_is_rerun(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    path = tmp_path / "fake" / "x" / "1.json"
    path.write_text(path.read_text()[:50])
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 1] and json.loads(path.read_text())["metrics"] == {"v": 1}


def _rewrite_identity(path, identity_hash):
    data = json.loads(path.read_text())
    data["fingerprint"]["identity_hash"] = identity_hash
    path.write_text(json.dumps(data))


def test_result_from_another_machine_is_rerun(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    _rewrite_identity(tmp_path / "fake" / "x" / "1.json", "f" * 64)
    runner.run_plan(_plan([1]), tmp_path, ReusePolicy(), env={})
    assert calls == [1, 1]


def test_strict_baseline_refuses_a_foreign_baseline(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    plan = _plan([1], method="recompute")
    runner.run_plan(plan, tmp_path, ReusePolicy(), env={})
    _rewrite_identity(tmp_path / "fake" / "x" / "1.json", "f" * 64)
    with pytest.raises(UsageError, match="STRICT_BASELINE"):
        runner.run_plan(plan, tmp_path, ReusePolicy(), env={"STRICT_BASELINE": "1"})
    assert calls == [1]


def test_dry_run_runs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    calls = []
    _install_fake_study(monkeypatch, calls)
    report = runner.run_plan(_plan([1, 2]), tmp_path, ReusePolicy(), dry_run=True, env={})
    assert calls == [] and not (tmp_path / "fake").exists()
    assert report.counts()["run"] == 2 and "nothing was run" in capsys.readouterr().out


def test_config_hash_of_a_cell_matches_its_result(tmp_path, monkeypatch):
    calls = []
    _install_fake_study(monkeypatch, calls)
    runner.run_plan(_plan([7]), tmp_path, ReusePolicy(), env={})
    data = json.loads((tmp_path / "fake" / "x" / "7.json").read_text())
    assert data["config_hash"] == config_hash(data["config"], data["inputs"])
