"""The original streaming study's published numbers load, typed, with their knobs and sources."""

from __future__ import annotations

import json

import pytest

from longctx.errors import UsageError
from longctx.original.streaming import load_streaming_results, published_result

# The spec's reference numbers (paper main table), with the rounding the paper prints.
MAIN_TABLE = {
    "pg19_baseline": ("recompute", 19.761, 97.91),
    "pg19_start_recent": ("start_recent", 20.181, 19.57),
    "pg19_ours": ("lazy", 20.318, 14.37),
    "wikitext_baseline": ("recompute", 9.359, None),
    "wikitext_start_recent": ("start_recent", 9.496, None),
    "wikitext_ours": ("lazy", 9.519, None),
}


def test_every_record_loads_with_knobs_metrics_and_source():
    records = load_streaming_results()
    assert len(records) == 28
    assert len({r.id for r in records}) == len(records)
    for r in records:
        assert r.source.path.startswith("results/paper_experiments/")
        assert r.source.commit == "254e749"
        assert r.source.env_git_commit == "3cb8e4bdd8b3fe6acbefc81a808510c829dcb4a8"
        assert r.knobs.cap_total == 2048 and r.max_eval_tokens == r.total_tokens
        assert r.metrics.decode_tokens == r.total_tokens - 2048  # the original's decode loop: N - P steps
        assert (r.compared_baseline is None) == (r.method == "recompute")


@pytest.mark.parametrize("result_id", sorted(MAIN_TABLE))
def test_main_table_numbers_as_published(result_id):
    method, ppl, tpot = MAIN_TABLE[result_id]
    record = published_result(result_id)
    assert record.table == "main" and record.method == method
    assert round(record.ppl, 3) == ppl
    if tpot is not None:
        assert round(record.tpot_ms, 2) == tpot


def test_sweeps_and_ablations_are_all_there():
    by_table: dict[str, list] = {}
    for r in load_streaming_results():
        by_table.setdefault(r.table, []).append(r)
    assert sorted(r.knobs.compress_every for r in by_table["sweep_R"]) == [1, 4, 16, 32, 64, 128]
    assert sorted(r.knobs.cache_slack for r in by_table["sweep_sigma"]) == [0, 8, 16, 32, 64]
    assert sorted(r.knobs.max_drop for r in by_table["sweep_delta"]) == [0, 8, 16, 32, 64]
    assert {r.id for r in by_table["ablation"]} == {"pg19_Aneg_lazy_strict", "pg19_A1_lazy", "pg19_A2_lazy_slack",
                                                    "pg19_A3_full"}
    for r in by_table["sweep_sigma"]:  # auto-cap: the window shrinks by σ inside the fixed total
        assert r.knobs.n_sink + r.knobs.window + r.knobs.cache_slack == 2048


def test_delta_without_slack_is_a_no_op_in_the_published_files():
    lazy = published_result("pg19_ours")
    for result_id in ("pg19_delta16", "pg19_delta32", "pg19_delta64", "pg19_sigma0"):
        record = published_result(result_id)
        assert record.knobs.cache_slack == 0 and record.knobs.max_drop > 0
        assert record.ppl == lazy.ppl


def test_unknown_id_and_bad_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no published streaming result 'nope'"):
        published_result("nope")
    with pytest.raises(UsageError, match="no such file"):
        load_streaming_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_streaming_results(bad)
    bad.write_text(json.dumps({"measurements": [{"id": "x", "table": "main", "dataset": "pg19", "method": "lazy",
                                                 "max_eval_tokens": 1, "total_tokens": 1, "knobs": {}}]}))
    with pytest.raises(UsageError, match=r"measurements\[0\].knobs lacks n_sink"):
        load_streaming_results(bad)
