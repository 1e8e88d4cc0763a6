"""Config hash, atomic writes, malformed files and the reuse/staleness policy of the result store."""

import json
import os

import pytest

from longctx.errors import UsageError
from longctx.results import (
    Action,
    ReusePolicy,
    atomic_write_json,
    build_result,
    config_hash,
    decide,
    parse_result,
    read_result,
)

CODE = {"source_sha256": "a" * 64}
CONFIG = {"method": "lazy", "n_sink": 32, "compress_every": 64, "cache_slack": 0, "max_drop": 0}
INPUTS = {"model": {"model_id": "m", "model_revision": "r1"}, "data": {"token_ids_sha256": "d1"}}


def test_same_config_same_hash_and_order_does_not_matter():
    reordered = dict(reversed(list(CONFIG.items())))
    assert config_hash(CONFIG, INPUTS, CODE) == config_hash(reordered, INPUTS, CODE)


@pytest.mark.parametrize("knob", sorted(CONFIG))
def test_any_changed_knob_changes_the_hash(knob):
    changed = {**CONFIG, knob: 999}
    assert config_hash(changed, INPUTS, CODE) != config_hash(CONFIG, INPUTS, CODE)


def test_code_version_and_inputs_enter_the_hash():
    base = config_hash(CONFIG, INPUTS, CODE)
    assert config_hash(CONFIG, INPUTS, {"source_sha256": "b" * 64}) != base
    other_model = {**INPUTS, "model": {"model_id": "m", "model_revision": "r2"}}
    assert config_hash(CONFIG, other_model, CODE) != base
    other_data = {**INPUTS, "data": {"token_ids_sha256": "d2"}}
    assert config_hash(CONFIG, other_data, CODE) != base


def test_source_hash_covers_uncommitted_edits(tmp_path, monkeypatch):
    """Two results with one hash and different code are impossible: the hash reads the source itself."""
    from longctx import provenance

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", pkg)
    provenance.source_sha256.cache_clear()
    first = provenance.source_sha256()
    (pkg / "a.py").write_text("x = 2\n")
    provenance.source_sha256.cache_clear()
    assert provenance.source_sha256() != first
    (pkg / "paper").mkdir()
    (pkg / "paper" / "t.py").write_text("y = 1\n")
    provenance.source_sha256.cache_clear()
    second = provenance.source_sha256()
    (pkg / "paper" / "t.py").write_text("y = 2\n")
    provenance.source_sha256.cache_clear()
    assert provenance.source_sha256() == second, "presentation-only code must not invalidate measurements"
    provenance.source_sha256.cache_clear()


def test_atomic_write_leaves_old_file_intact_on_failure(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})

    class Unserializable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_json(path, {"a": Unserializable()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"], "no temp file may be left behind"


def test_malformed_and_truncated_results_are_reported_and_missing(tmp_path):
    warnings = []
    truncated = tmp_path / "t.json"
    truncated.write_text('{"schema_version": 1, "study": "stre')
    assert read_result(truncated, warn=warnings.append) is None
    incomplete = tmp_path / "i.json"
    incomplete.write_text('{"schema_version": 1}')
    assert read_result(incomplete, warn=warnings.append) is None
    assert len(warnings) == 2 and all("malformed" in w for w in warnings)
    assert read_result(tmp_path / "absent.json", warn=warnings.append) is None
    assert len(warnings) == 2


def _result(hash_, status="ok"):
    from longctx.provenance import utc_now

    data = build_result(
        study="bench", kind="k", config=CONFIG, inputs=INPUTS, metrics={}, runs=[], started_utc=utc_now(), status=status
    )
    return parse_result({**data, "config_hash": hash_})


def test_staleness_policy():
    default, allow, force = ReusePolicy(), ReusePolicy(allow_stale=True), ReusePolicy(force=True)
    assert decide(None, "h", default) is Action.RUN
    assert decide(_result("h"), "h", default) is Action.SKIP
    assert decide(_result("old"), "h", default) is Action.RUN
    assert decide(_result("old"), "h", allow) is Action.REUSE_STALE
    assert decide(_result("h"), "h", force) is Action.RUN
    assert decide(_result("h", status="runtime_error: x"), "h", default) is Action.RUN
    assert decide(_result("h", status="oom"), "h", default) is Action.SKIP


def test_policy_from_env():
    assert ReusePolicy.from_env({"FORCE": "1"}) == ReusePolicy(force=True)
    assert ReusePolicy.from_env({"ALLOW_STALE": "1", "FORCE": "0"}) == ReusePolicy(allow_stale=True)
    assert ReusePolicy.from_env({"ALLOW_STALE": "no", "FORCE": "false"}) == ReusePolicy()
    for bad in ({"FORCE": "2"}, {"FORCE": "y"}, {"ALLOW_STALE": "bogus"}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            ReusePolicy.from_env(bad)


def test_a_valid_json_result_with_a_wrong_field_is_reported_and_missing(tmp_path):
    """Issue 16.3: ``"fingerprint": null`` or missing metrics do not crash readers: reported, treated as missing."""
    from longctx.provenance import utc_now

    good = build_result(
        study="bench", kind="k", config=CONFIG, inputs=INPUTS, metrics={}, runs=[], started_utc=utc_now()
    )
    warnings = []
    for name, broken in (
        ("null_fp", {**good, "fingerprint": None}),
        ("no_metrics", {k: v for k, v in good.items() if k != "metrics"}),
        ("old_schema", {**good, "schema_version": 1}),
        ("bad_streaming_metrics", {**good, "study": "streaming", "metrics": {"ppl": "high"}}),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(broken))
        assert read_result(path, warn=warnings.append) is None, name
    assert len(warnings) == 4 and all("malformed" in w for w in warnings)
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good))
    assert read_result(path).config_hash == good["config_hash"]


def test_build_result_has_every_spec_field():
    from longctx.provenance import utc_now

    result = build_result(
        study="streaming", kind="k", config=CONFIG, inputs=INPUTS, metrics={}, runs=[], started_utc=utc_now()
    )
    for field in (
        "schema_version",
        "study",
        "kind",
        "status",
        "config",
        "inputs",
        "fingerprint",
        "provenance",
        "config_hash",
        "metrics",
        "runs",
    ):
        assert field in result
    assert set(result["fingerprint"]) >= {"identity", "identity_hash", "observed"}
    assert set(result["provenance"]) >= {"code_version", "container_image", "command_line", "start_utc", "end_utc"}
    assert result["provenance"]["code_version"]["source_sha256"]
