"""The original attribution time curve as data: the table loads, known published values, preferred rows."""

from __future__ import annotations

from collections import Counter

import pytest

from longctx.errors import UsageError
from longctx.original.attribution import (
    CSV_PATH,
    ORIGINAL_COMMIT,
    load_original_time_curve,
    original_cell,
    preferred_cells,
)

METHODS = {
    "IG",
    "attention_I_G",
    "attnlrp",
    "perturbation_all",
    "perturbation_CLP",
    "perturbation_REAGENT",
    "ifr_all_positions",
    "ifr_multi_hop",
    "ifr_multi_hop_both",
}


@pytest.fixture(scope="module")
def cells():
    return load_original_time_curve()


def test_table_loads_every_source_row(cells):
    assert len(cells) == 161
    assert {c.method for c in cells} == METHODS
    assert all(f"@{ORIGINAL_COMMIT}:exp/exp1/out" in c.source for c in cells)
    assert len(CSV_PATH.read_text().splitlines()) == len(cells) + 1  # one line per row: no multi-line cells


def test_one_preferred_row_per_cell(cells):
    counts = Counter(c.key for c in cells if c.preferred)
    assert set(counts) == {c.key for c in cells}
    assert set(counts.values()) == {1}
    assert len(preferred_cells(cells)) == 112


@pytest.mark.parametrize(
    ("method", "prompt", "output", "seconds"),
    [
        ("ifr_all_positions", 10, 5000, 2294.80),
        ("ifr_multi_hop_both", 10, 5000, 17.31),
        ("attnlrp", 10, 5000, 9832.78),
        ("IG", 10, 1000, 4334.20),
        ("ifr_all_positions", 10, 1000, 111.18),
        ("ifr_multi_hop_both", 10, 1000, 1.24),
        ("attnlrp", 10, 1000, 292.33),
        ("IG", 10, 10, 7.78),  # out-0: three ok runs, preferred over out-1's single run (8.29)
        ("ifr_all_positions", 10, 10, 0.61),
        ("ifr_multi_hop_both", 10, 10, 0.29),
        ("attnlrp", 10, 10, 2.53),
    ],
)
def test_known_published_times(method, prompt, output, seconds):
    cell = original_cell(method, prompt, output)
    assert cell.outcome == "ok"
    assert cell.time_mean_s == pytest.approx(seconds, abs=0.005)


def test_ten_thousand_token_cells_all_failed():
    big = [c for key, c in preferred_cells().items() if 10000 in key[1:]]
    assert {c.method for c in big} == METHODS
    assert all(c.n_ok == 0 and c.time_mean_s is None for c in big)
    assert {c.outcome for c in big} <= {"oom", "error"}


def test_statuses_are_one_line_and_counted(cells):
    for cell in cells:
        assert "\n" not in cell.status
        assert len(cell.status.split("|")) == cell.n_runs
        assert cell.status.split("|").count("ok") == cell.n_ok


def test_mixed_row_keeps_summary_memory_and_ok_memory_apart():
    cell = original_cell("IG", 10, 1000)
    assert cell.source.endswith("out-3/time_curve_summary.csv")
    assert (cell.n_runs, cell.n_ok, cell.n_after_fatal) == (2, 1, 1)
    assert cell.peak_mem_mean_gb == pytest.approx(401.6088)  # the summary's mean over both runs (reserved)
    assert cell.ok_peak_mem_mean_gb == pytest.approx(407.4116)
    assert cell.ok_peak_alloc_mean_gb == pytest.approx(377.1026)
    assert (cell.actual_user_prompt_tokens, cell.actual_formatted_prompt_tokens) == (9, 27)
    assert (cell.actual_generation_tokens, cell.actual_total_tokens) == (1001, 1028)


def test_cells_never_really_run_are_flagged():
    ig = original_cell("IG", 10, 5000)
    assert ig.only_after_fatal and ig.outcome == "error"
    runs_only = original_cell("perturbation_all", 10, 5000)
    assert runs_only.source.endswith("time_curve_runs.jsonl") and runs_only.peak_mem_mean_gb is None
    assert not original_cell("IG", 2000, 10).only_after_fatal  # a genuine OOM


def test_unmeasured_lengths_and_unknown_methods():
    assert original_cell("IG", 10, 7) is None
    with pytest.raises(UsageError, match="no method 'ig'"):
        original_cell("ig", 10, 10)
