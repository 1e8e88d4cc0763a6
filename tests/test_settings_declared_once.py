"""Each setting is declared once: a new option field shows up in --help, the config hash and the result JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from longctx.attribution import cell as cell_module
from longctx.attribution import method as method_module
from longctx.attribution.config import TimeCellConfig
from longctx.attribution.methods.ig import IGOptions
from longctx.cli import build_parser
from longctx.options import check_fields, option
from longctx.results import config_hash, read_result


@dataclass(frozen=True)
class FakeIGOptions(IGOptions):
    fake_knob: int = option(7, help="a fake option added in one place", minimum=0)

    def __post_init__(self):
        check_fields(self)


def _with_fake_option(monkeypatch):
    spec = method_module.method_spec("IG")
    monkeypatch.setitem(method_module._REGISTRY, "IG", dataclasses.replace(spec, options=FakeIGOptions))


def _cell(**options) -> TimeCellConfig:
    return TimeCellConfig(model="m", method="IG", prompt_len=4, output_len=2, options=options)


def test_fake_option_reaches_help_hash_and_result(monkeypatch, tmp_path):
    _with_fake_option(monkeypatch)
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["attribution"]
    for name in ("time-curve", "explain"):
        text = sub._subparsers._group_actions[0].choices[name].format_help()
        assert "--fake-knob" in text and "a fake option added in one place" in text
    args = parser.parse_args(["attribution", "time-curve", "--model", "m", "--attr-funcs", "IG", "--output-lengths",
                              "2", "--input-lengths", "4", "--output-dir", "o", "--fake-knob", "9"])  # fmt: skip
    assert args.fake_knob == 9
    seven, eight = _cell(fake_knob=7), _cell(fake_knob=8)
    assert seven.options == FakeIGOptions(fake_knob=7)
    inputs = {"model": {}, "data": {}}
    assert config_hash(dataclasses.asdict(seven), inputs) != config_hash(dataclasses.asdict(eight), inputs)
    monkeypatch.setattr(cell_module, "measure_cell", lambda cfg, log_path=None: [])
    cell_module.run_cell(eight, inputs, tmp_path / "r.json")
    assert read_result(tmp_path / "r.json").config["options"]["fake_knob"] == 8


def test_option_constraints_are_checked_wherever_the_config_comes_from():
    import pytest

    from longctx.errors import UsageError

    with pytest.raises(UsageError, match="--n-steps must be >= 2, got 1"):
        _cell(n_steps=1)
    with pytest.raises(UsageError, match="IG has no option chunk_tokens"):
        _cell(chunk_tokens=4)
    with pytest.raises(UsageError, match="--repeats must be >= 1"):
        TimeCellConfig(model="m", method="IG", prompt_len=4, output_len=2, repeats=0)
