"""The attribution study as the plan runner sees it: the time-curve cells, their ids, how they run.

The plan data gives the shared settings, ``method_options`` (each value goes to every method whose options
declare that field: chunk sizes to IFR/FlashTrace, the masked LM to ReAGent) and two grids: outputs grow at a
fixed prompt, prompts grow at a fixed output. ``ATTR_FUNCS`` restricts the methods.
Cell ids: ``attribution/<method>/P<P>-G<G>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from longctx import knobs
from longctx.plan import shared_settings
from longctx.study import Cell

GROUPS = ("time_curve_output", "time_curve_prompt")


def cell_id(config: dict) -> str:
    return f"attribution/{config['method']}/P{config['prompt_len']}-G{config['output_len']}"


def time_cell(settings: dict, group: str, method: str, prompt_len: int, output_len: int, options: dict) -> Cell:
    """The cell of one method at one (P, G), with ``options`` filtered to the fields the method declares."""
    from longctx.attribution.method import method_spec

    declared = {f.name for f in dataclasses.fields(method_spec(method).options)}
    config = {
        **settings,
        "method": method,
        "prompt_len": prompt_len,
        "output_len": output_len,
        "options": {k: v for k, v in options.items() if k in declared},
    }
    labels = {"method": method, "prompt_len": prompt_len, "output_len": output_len}
    return Cell(id=cell_id(config), study="attribution", group=group, labels=labels, config=config)


class AttributionStudy:
    """Study 2: time and peak memory of the attribution methods as prompt and output grow."""

    name = "attribution"

    def expand(self, spec: dict, env: Mapping[str, str]) -> list[Cell]:
        """The time curve: outputs grow at a fixed prompt, prompts grow at a fixed output, per method."""
        settings = shared_settings(spec, env)
        grids = [("time_curve_output", spec["fixed_prompt"], g) for g in spec["output_lengths"]]
        grids += [("time_curve_prompt", p, spec["fixed_output"]) for p in spec["prompt_lengths"]]
        methods = knobs.names("ATTR_FUNCS", spec["methods"], env)
        return [
            time_cell(settings, group, method, p, g, spec.get("method_options", {}))
            for method in methods
            for group, p, g in grids
        ]

    def config(self, values: dict):
        from longctx.attribution.config import TimeCellConfig

        return TimeCellConfig(**values)

    def is_baseline(self, config) -> bool:
        return False

    def timing_group(self, cell: Cell) -> str:
        """One time curve (outputs grow, or prompts grow): its table and figure set every method side by side."""
        return f"attribution/{cell.group}"

    def describe_inputs(self, config) -> dict:
        from longctx.attribution.cell import describe_inputs

        return describe_inputs(config)

    def run(self, config, inputs: dict, out_path: Path) -> dict:
        from longctx.attribution.cell import run_cell

        return run_cell(config, inputs, out_path)

    def read_metrics(self, kind: str, metrics: dict):
        """Time cells' metrics are typed; an ``explain`` record's are its own (time only)."""
        from longctx.attribution.metrics import AttributionMetrics

        return AttributionMetrics.model_validate(metrics) if kind == "attribution_time" else metrics


STUDY = AttributionStudy()
