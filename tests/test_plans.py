"""Plans as data: cell expansion, shared ids, environment knobs, profile selection."""

import pytest

from longctx.errors import UsageError
from longctx.plan import PROFILES, load_plan, select_profile


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_expands(profile):
    plan = load_plan(profile, env={})
    groups = plan.groups()
    streaming = {"main", "ablations", "sweep_R", "sweep_sigma", "sweep_delta", "sweep_delta_slack", "profiling"}
    assert streaming <= set(groups)
    assert {"time_curve_output", "time_curve_prompt"} <= set(groups)
    assert len(groups["main"]) == 12  # 2 datasets x 3 methods x 2 protocols
    assert {c.config["protocol"] for c in groups["main"]} == {"efficient", "reference"}
    methods = {c.config["method"] for c in groups["time_curve_output"]}
    assert len(methods) == 9


def test_paper_matrix_of_the_full_profile():
    plan = load_plan("full", env={})
    main = {(c.labels["dataset"], c.config["method"]): c.config for c in plan.groups()["main"]
            if c.config["protocol"] == "efficient"}  # fmt: skip
    assert main[("pg19", "recompute")]["cap_total"] == 2048 and main[("pg19", "recompute")]["n_sink"] == 0
    assert main[("pg19", "start_recent")]["n_sink"] == 32
    assert main[("pg19", "lazy")]["compress_every"] == 64
    assert main[("pg19", "lazy")]["max_eval_tokens"] == 20000
    assert main[("wikitext", "lazy")]["max_eval_tokens"] == 4096
    assert [c.config["compress_every"] for c in plan.groups()["sweep_R"]] == [1, 1, 4, 4, 16, 16, 32, 32, 64, 64,
                                                                              128, 128]  # fmt: skip
    ablations = {c.labels["row"] for c in plan.groups()["ablations"]}
    assert {"Lazy + slack σ=16", "Lazy + max drop δ=32", "Lazy + σ=16, δ=32"} <= ablations  # the published A2, A3
    slack_sweep = plan.groups()["sweep_delta_slack"]
    assert {(c.config["cache_slack"], c.config["max_drop"]) for c in slack_sweep} == {
        (16, d) for d in (0, 8, 16, 32, 64)
    }
    ig = [c.config for c in plan.groups()["time_curve_output"] if c.config["method"] == "IG"]
    assert [c["output_len"] for c in ig if c["protocol"] == "efficient"] == [10, 100, 500, 1000, 2000, 5000, 10000]
    reference = [c for c in ig if c["protocol"] == "reference"]
    assert [c["output_len"] for c in reference] == [10, 100, 500, 1000, 2000]
    assert all(c["dtype"] == "float16" and c["attn_implementation"] == "eager" for c in reference)  # the original's


@pytest.mark.parametrize("profile", PROFILES)
def test_attribution_cells_carry_their_protocol(profile):
    cells = [c for c in load_plan(profile, env={}).cells if c.study == "attribution"]
    protocols = {c.config["protocol"] for c in cells}
    assert protocols == {"efficient", "reference"}
    for cell in cells:
        protocol, method = cell.config["protocol"], cell.config["method"]
        assert cell.id.startswith(f"attribution/{protocol}/{method}/P") and cell.labels["protocol"] == protocol
    assert all(c.config.get("attn_implementation") == "eager" for c in cells if c.config["protocol"] == "reference")
    assert not any("attn_implementation" in c.config for c in cells if c.config["protocol"] == "efficient")
    reference = load_plan(profile, env={"ATTR_PROTOCOLS": "reference"}).cells
    assert {c.config["protocol"] for c in reference if c.study == "attribution"} == {"reference"}


def test_protocols_are_in_the_cell_ids_and_smoke_runs_reference_on_main_and_the_delta_sweep():
    plan = load_plan("smoke", env={})
    for cell in plan.cells:
        if cell.study == "streaming":
            reference = cell.config["protocol"] == "reference"
            assert cell.id.endswith("-ref") == reference == (cell.labels["protocol"] == "reference")
    reference_groups = {c.group for c in plan.cells if c.study == "streaming" and c.config["protocol"] == "reference"}
    assert reference_groups == {"main", "sweep_delta"}


def test_equal_configs_share_one_cell():
    plan = load_plan("full", env={})
    lazy_main = next(c for c in plan.groups()["main"] if c.config["method"] == "lazy" and c.labels["dataset"] == "pg19")
    r64 = next(c for c in plan.groups()["sweep_R"] if c.config["compress_every"] == 64)
    assert lazy_main.id == r64.id
    assert len(plan.unique_cells()) < len(plan.cells)


def test_environment_knobs():
    env = {"RUN_SWEEPS": "0", "RUN_ABLATIONS": "0", "REPEATS": "5", "WARMUP": "2"}
    plan = load_plan("smoke", env=env)
    assert not {"sweep_R", "ablations"} & set(plan.groups())
    assert all(c.config["repeats"] == 5 and c.config["warmup"] == 2 for c in plan.cells)
    plan = load_plan("smoke", env={"SWEEP_R_VALUES": "1 3", "RUN_QUALITY_HEURISTICS": "0"})
    assert [c.config["compress_every"] for c in plan.groups()["sweep_R"]] == [1, 3]
    assert "sweep_sigma" not in plan.groups()
    assert all(c.study == "streaming" for c in load_plan("smoke", env={"STUDIES": "streaming"}).cells)
    attr = load_plan("smoke", env={"ATTR_FUNCS": "IG,ifr_multi_hop"}).groups()["time_curve_output"]
    assert {c.config["method"] for c in attr} == {"IG", "ifr_multi_hop"}


@pytest.mark.parametrize(
    "env",
    [
        {"RUN_SWEEPS": "maybe"},
        {"SWEEP_R_VALUES": "1 x"},
        {"REPEATS": "-1"},
        {"STUDIES": "bogus"},
        {"ATTR_FUNCS": "IG,nope"},
        {"ATTR_PROTOCOLS": "fast"},
    ],
)
def test_bad_knobs_are_usage_errors(env):
    with pytest.raises(UsageError):
        load_plan("smoke", env=env)


def test_profile_selection():
    assert select_profile("timing", env={}) == ("timing", "requested explicitly")
    assert select_profile(None, env={"PROFILE": "smoke"})[0] == "smoke"
    profile, why = select_profile(None, env={})
    assert profile == "smoke" and "no GPU" in why
    with pytest.raises(UsageError):
        select_profile("huge", env={})
