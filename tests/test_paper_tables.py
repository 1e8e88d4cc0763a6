"""Generated LaTeX from fake results: precision, mean ± std, missing/malformed/stale cells, fingerprints."""

from __future__ import annotations

import json
import math
import re
import statistics

import pytest

from longctx.cli import main as cli_main
from longctx.paper.latex import escape, fmt_summary, macro_name
from longctx.paper.tables import MANIFEST, generate_tables
from longctx.stats import Summary
from test_paper_fakes import (
    ATTR_SECONDS,
    STREAMING,
    attribution_result,
    smoke_plan,
    streaming_result,
    write,
    write_all,
)


@pytest.fixture
def plan():
    return smoke_plan()


def cell_of(plan, group, method, dataset="pg19"):
    return next(
        c
        for c in plan.groups()[group]
        if c.config["method"] == method and c.labels.get("dataset", dataset) == dataset
    )


def row_of(tex: str, label: str) -> list[str]:
    """The cells of the first table row whose first cells contain ``label``."""
    for line in tex.splitlines():
        if label in line and line.rstrip().endswith(r"\\"):
            return [c.strip() for c in line.rstrip()[:-2].split(" & ")]
    raise AssertionError(f"no row {label!r} in\n{tex}")


def generate(plan, tmp_path):
    report = generate_tables(plan, tmp_path / "results" / plan.profile, tmp_path / "generated")
    return report, lambda name: (tmp_path / "generated" / f"{name}.tex").read_text()


def test_main_table_numbers_precision_and_speedup(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    report, read = generate(plan, tmp_path)
    assert report.missing == [] and report.notes == []
    tex = read("main_table")
    base_tpot, base_ppl = STREAMING["recompute"]
    lazy_tpot, lazy_ppl = STREAMING["lazy"]
    lazy = row_of(tex, "Lazy (R=8)")
    assert lazy[1] == "efficient"  # the efficient block comes first
    assert lazy[3] == f"{lazy_tpot:#.3g}"  # timings: 3 significant digits
    assert lazy[4] == f"{base_tpot / lazy_tpot:.2f}" + r"$\times$"
    assert lazy[5] == f"{lazy_ppl:.2f}"
    assert lazy[6] == f"{100 * (lazy_ppl - base_ppl) / base_ppl:+.2f}"
    assert lazy[8:] == ["--", "20.318"]  # the published PPL its efficient claim compares with (no TPOT claim)
    reference = row_of(tex, "reference & Lazy (R=8)")
    assert reference[8:] == ["14.37", "20.318"]
    assert "baseline TPOT $/$ method TPOT" in tex  # the definition is in the caption
    assert r"\toprule" in tex and r"\bottomrule" in tex
    macros = read("macros")
    assert rf"\newcommand{{\LazySpeedupPGnineteen}}{{{base_tpot / lazy_tpot:.2f}}}" in macros
    manifest = json.loads((tmp_path / "generated" / MANIFEST).read_text())
    assert manifest == {"profile": "smoke", "missing": [], "notes": []}


def test_repeats_render_mean_pm_std_with_std_to_two_significant_digits(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    lazy = cell_of(plan, "main", "lazy")
    values = [4.0, 4.3, 4.9]
    write(tmp_path / "results", plan, lazy, streaming_result(lazy, tpot_values=values))
    _, read = generate(plan, tmp_path)
    mean, std = statistics.mean(values), statistics.stdev(values)  # std ~0.458 -> 0.46, mean -> 4.40
    assert row_of(read("main_table"), "Lazy (R=8)")[3] == rf"{mean:.2f}\,$\pm$\,{std:.2f}"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0], "1.000"),
        ([10.0, 12.0], r"11.0\,$\pm$\,1.4"),
        ([100.0, 100.0004], r"100.00020\,$\pm$\,0.00028"),
    ],
)
def test_fmt_summary_precision(values, expected):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    assert fmt_summary(Summary(n=len(values), mean=mean, std=std, ci95=None, values=values), 3) == expected


def test_missing_cell_renders_insert_data_and_is_listed(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    strict = cell_of(plan, "main", "start_recent", "wikitext")
    (tmp_path / "results" / plan.profile / f"{strict.id}.json").unlink()
    report, read = generate(plan, tmp_path)
    assert report.missing == [strict.id]
    wikitext_rows = [line for line in read("main_table").splitlines() if line.startswith("WikiText")]
    assert r"\missing{}" in wikitext_rows[1] and r"\missing{}" not in wikitext_rows[0]
    assert r"\newcommand{\StrictPPLWikiText}{\missing{}}" in read("macros")


def test_malformed_result_is_missing_not_a_number(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    lazy = cell_of(plan, "main", "lazy")
    text = json.dumps(streaming_result(lazy, ppl=12.3456))
    write(tmp_path / "results", plan, lazy, text[: len(text) // 2])  # truncated mid-write
    report, read = generate(plan, tmp_path)
    assert lazy.id in report.missing
    assert any("malformed" in note for note in report.notes)
    assert "12.35" not in read("main_table")
    assert r"\missing{}" in row_of(read("main_table"), "Lazy (R=8)")[5]


def test_stale_result_is_marked_with_a_footnote(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    lazy = cell_of(plan, "main", "lazy")
    write(tmp_path / "results", plan, lazy, streaming_result(lazy, stale={"reason": "code changed"}))
    _, read = generate(plan, tmp_path)
    tex = read("main_table")
    assert all(c.endswith(r"\stalemark{}") for c in row_of(tex, "Lazy (R=8)")[3:8])
    assert r"\stalemark{}" not in "".join(row_of(tex, "Start+Recent (strict)"))
    assert "ALLOW\\_STALE=1" in tex


def test_mixed_fingerprints_give_no_speedup(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    lazy = cell_of(plan, "main", "lazy")
    write(tmp_path / "results", plan, lazy, streaming_result(lazy, identity_hash="fp-other-gpu"))
    report, read = generate(plan, tmp_path)
    row = row_of(read("main_table"), "Lazy (R=8)")
    assert row[4] == r"\missing{}\mismatchmark{}"
    assert row[5] == f"{STREAMING['lazy'][1]:.2f}"  # PPL does not depend on the machine
    assert "different fingerprint" in read("main_table")
    assert any(lazy.id in note for note in report.notes)
    assert r"\newcommand{\LazySpeedupPGnineteen}{\missing{}}" in read("macros")


def test_reference_rows_use_the_reference_baseline_and_macros(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    baseline = next(c for c in plan.groups()["main"] if c.config["method"] == "recompute"
                    and c.config["protocol"] == "reference" and c.labels["dataset"] == "pg19")  # fmt: skip
    write(tmp_path / "results", plan, baseline, streaming_result(baseline, tpot_values=[40.0]))
    _, read = generate(plan, tmp_path)
    assert row_of(read("main_table"), "reference & Lazy (R=8)")[4] == f"{40.0 / STREAMING['lazy'][0]:.2f}" + r"$\times$"
    assert row_of(read("main_table"), "efficient & Lazy (R=8)")[4].startswith(f"{12.5 / STREAMING['lazy'][0]:.2f}")
    macros = read("macros")
    assert rf"\newcommand{{\RefLazySpeedupPGnineteen}}{{{40.0 / STREAMING['lazy'][0]:.2f}}}" in macros
    assert rf"\newcommand{{\LazySpeedupPGnineteen}}{{{12.5 / STREAMING['lazy'][0]:.2f}}}" in macros


def block_rows(tex: str, protocol: str) -> list[list[str]]:
    """The rows of the table block whose first row names ``protocol`` (the others leave that cell empty)."""
    for block in tex.split(r"\midrule")[1:]:
        rows = [[c.strip() for c in line.rstrip()[:-2].split(" & ")] for line in block.splitlines()
                if line.rstrip().endswith(r"\\")]  # fmt: skip
        if rows and rows[0][0] == protocol:
            return rows
    raise AssertionError(f"no {protocol} block in\n{tex}")


def test_rows_with_the_lazy_rows_prune_schedule_are_marked(plan, tmp_path):
    """Fake schedules as the arithmetic gives them: every σ = 0 Lazy cell with S and R of the Lazy row shares its
    schedule (δ cannot act), any other cell has its own; only the former are marked."""
    write_all(tmp_path / "results", plan)
    lazy_knobs = {"n_sink": 4, "compress_every": 8, "cache_slack": 0}
    for c in plan.unique_cells():
        if c.study == "streaming":
            result = streaming_result(c)
            same = c.config["method"] == "lazy" and all(c.config[k] == v for k, v in lazy_knobs.items())
            result["metrics"]["cache"]["prune_schedule_sha256"] = "lazy" if same else c.id
            write(tmp_path / "results", plan, c, result)
    _, read = generate(plan, tmp_path)
    delta = read("sweep_delta")
    mark = r"\textsuperscript{$\equiv$}"
    for protocol in ("efficient", "reference"):
        labels = [row[1] for row in block_rows(delta, protocol)]
        assert labels == ["0", *(f"{d}{mark}" for d in (2, 4, 8, 16))]  # δ=0 is the Lazy row itself
    assert "whatever $\\delta$ is" in delta
    slack = [row[1] for row in block_rows(read("sweep_delta_slack"), "efficient")]
    assert slack == ["0", "2", "4", "8", "16"]  # σ > 0: other schedules
    assert r"\textsuperscript{$\equiv$}" in row_of(read("ablations"), "Lazy + max drop")[1]


def test_departures_and_claims_tables_are_generated(plan, tmp_path):
    from longctx.claims import CLAIMS
    from longctx.departures import all_departures

    write_all(tmp_path / "results", plan)
    _, read = generate(plan, tmp_path)
    departures = read("departures")
    assert r"\begin{longtable}" in departures and departures.count(r"\newline\textbf{") == len(all_departures())
    claims = read("claims")
    assert claims.count(r"\texttt{") == len(CLAIMS) + 1  # one per claim, plus the caption's command name
    assert "not comparable" in claims and "20.318" in claims


def test_attribution_statuses_and_flashtrace_speedup_at_longest_common_length(plan, tmp_path):
    root = tmp_path / "results"
    write_all(root, plan)
    group = plan.groups()["time_curve_output"]
    cells = {(c.config["method"], c.config["output_len"]): c for c in group if c.config["protocol"] == "efficient"}
    lengths = sorted({g for _, g in cells})
    write(root, plan, cells[("ifr_all_positions", lengths[-1])], attribution_result(cells[("IG", 8)], "oom"))
    write(root, plan, cells[("IG", lengths[-1])], attribution_result(cells[("IG", 8)], "runtime_error: boom"))
    report, read = generate(plan, tmp_path)
    tex = read("attr_time_output")
    assert row_of(tex, "IFR (all positions)")[:2] == ["IFR (all positions)", "efficient"]  # efficient row first
    assert row_of(tex, "IFR (all positions)")[-1] == r"\statuscell{OOM}"
    assert row_of(tex, "IG &")[-1] == r"\statuscell{err}"
    assert row_of(read("attr_time_prompt"), "AttnLRP")[-1] == r"\statuscell{skip}"  # P=4096 > context
    prompt = group[0].config["prompt_len"]
    longest_ok = lengths[-2]  # IFR is OOM at the longest output, so the comparison moves one step down
    ratio = ATTR_SECONDS["ifr_all_positions"] / ATTR_SECONDS["ifr_multi_hop"]
    macros = read("macros")
    assert rf"\newcommand{{\FlashTraceVsIFROutputLenEfficient}}{{{longest_ok}}}" in macros
    assert rf"\newcommand{{\FlashTraceVsIFRSpeedupEfficient}}{{{ratio:.1f}}}" in macros
    reference_lengths = sorted({c.config["output_len"] for c in group if c.config["protocol"] == "reference"})
    assert rf"\newcommand{{\FlashTraceVsIFROutputLen}}{{{reference_lengths[-1]}}}" in macros  # claims: reference
    assert rf"\newcommand{{\FlashTraceVsIFRSpeedup}}{{{ratio:.1f}}}" in macros
    t_fast = ATTR_SECONDS["ifr_multi_hop"] * (prompt + longest_ok)
    assert row_of(tex, "FlashTrace &")[-2] == f"{t_fast:#.3g}"  # 3 significant digits
    assert report.missing == []


def test_attribution_rows_per_protocol(plan, tmp_path):
    write_all(tmp_path / "results", plan)
    _, read = generate(plan, tmp_path)
    lines = [line for line in read("attr_time_output").splitlines() if line.endswith(r"\\")]
    first = lines.index(next(x for x in lines if x.startswith("IG &")))
    assert [line.split(" & ")[:2] for line in lines[first : first + 2]] == [["IG", "efficient"], ["", "reference"]]
    reference = next(line for line in lines if line.startswith(" & reference"))
    assert reference.split(" & ")[-1].startswith("--")  # outside the reference grid (shorter on smoke)
    assert not any("original" in line for line in lines)  # the original's numbers only beside full-profile results


def test_full_profile_shows_the_originals_measurements(tmp_path):
    from longctx.plan import load_plan

    plan = load_plan("full", env={"STUDIES": "attribution", "ATTR_FUNCS": "IG"})
    write_all(tmp_path / "results", plan)
    _, read = generate(plan, tmp_path)
    time_row = row_of(read("attr_time_output"), "original (their GPUs)")
    # G = 10 ... 10000 at P = 10: 7.78 s, ..., 4334 s, a genuine failure, a run after a fatal error, never run
    assert time_row[2] == "7.78" and time_row[5] == "4334" and time_row[6:] == [
        r"\statuscell{err}",
        r"\statuscell{n/r}",
        "--",
    ]
    memory_row = row_of(read("attr_memory_output"), "original (their GPUs)")
    assert memory_row[2] == f"{39.3352e9 / 2**30:.1f}"  # allocated, summed over its GPUs, in GiB
    assert "six 80 GB GPUs" in read("attr_memory_output") and r"max\_memory\_allocated" in read("attr_memory_output")


def test_negative_results_table_is_qualitative_and_escaped(plan, tmp_path):
    report, read = generate(plan, tmp_path)
    tex = read("negative_results")
    assert "qualitative" in tex
    for row in plan.negative_results:
        assert escape(row["idea"]) in tex
    assert "U+63A2" in tex  # a CJK file name prints as code points instead of breaking pdflatex
    assert len(report.missing) == len(plan.unique_cells())  # nothing was written: every cell is missing


def test_plan_without_sweeps_renders_a_note_not_a_table(tmp_path):
    from longctx.plan import load_plan

    plan = load_plan("smoke", env={"RUN_SWEEPS": "0"})
    _, read = generate(plan, tmp_path)
    assert r"\begin{table}" not in read("sweep_R") and "not part of this run's plan" in read("sweep_R")


def test_escape_and_macro_names():
    assert escape("a_b & 50% σ=7 {x}") == r"a\_\allowbreak{}b \& 50\% $\sigma$=7 \{x\}"
    assert macro_name("Lazy", "Speedup", "pg19") == "LazySpeedupPGnineteen"
    assert re.fullmatch(r"[A-Za-z]+", macro_name("x", "r64", "set-2"))


def test_tables_cli_lists_missing_cells_and_rejects_bad_profile(tmp_path, monkeypatch, capsys):
    (tmp_path / "NeurIPS").mkdir()
    (tmp_path / "NeurIPS" / "main.tex").write_text("% stub\n")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["tables", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "profile: smoke (requested explicitly)" in out
    assert "missing cells" in out and "streaming/pg19/lazy-S4-C256-R8-sig0-del0" in out
    assert (tmp_path / "NeurIPS" / "generated" / "main_table.tex").exists()
    assert cli_main(["tables", "--profile", "nope"]) == 2


@pytest.mark.parametrize(
    ("profile", "banner"),
    [("smoke", "smoke profile --- not paper numbers"), ("timing", "random weights: speed/memory only")],
)
def test_profile_mark_for_smoke_and_timing_but_not_full(profile, banner, tmp_path):
    from longctx.plan import load_plan

    for name in (profile, "full"):
        generate_tables(load_plan(name, env={}), tmp_path / "results", tmp_path / name)
    assert banner in (tmp_path / profile / "profile.tex").read_text()
    assert r"\newcommand{\ProfileMark}{}" in (tmp_path / "full" / "profile.tex").read_text()


def test_flashtrace_macros_not_in_plan_without_both_methods(tmp_path):
    from longctx.plan import load_plan

    plan = load_plan("smoke", env={"STUDIES": "attribution", "ATTR_FUNCS": "IG,ifr_multi_hop"})
    write_all(tmp_path / "results", plan)
    _, read = generate(plan, tmp_path)
    for name in ("FlashTraceVsIFRSpeedup", "FlashTraceTimeEfficient"):
        assert rf"\newcommand{{\{name}}}{{\notinplan{{}}}}" in read("macros")
