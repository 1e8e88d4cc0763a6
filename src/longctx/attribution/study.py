"""The attribution study as the plan runner sees it: the time-curve cells, their ids, how they run.

The plan data gives the shared settings, ``method_options`` (each value goes to every method whose options
declare that field: chunk sizes to IFR/FlashTrace, the masked LM to ReAGent), two grids (outputs grow at a
fixed prompt, prompts grow at a fixed output) and ``protocols``: for each protocol (``efficient``, this
artifact's code; ``reference``, the original's code path) the settings and grid values it overrides, e.g.
the original's fp16 + eager kernel and a shorter grid. ``ATTR_FUNCS`` restricts the methods,
``ATTR_PROTOCOLS`` the protocols. Cell ids: ``attribution/<protocol>/<method>/P<P>-G<G>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from longctx import knobs
from longctx.plan import shared_settings
from longctx.study import Cell

GROUPS = ("time_curve_output", "time_curve_prompt")


PROTOCOL_SETTINGS = ("attn_implementation",)  # settings a protocol may add to the shared ones


def cell_id(config: dict) -> str:
    protocol = config.get("protocol", "efficient")
    return f"attribution/{protocol}/{config['method']}/P{config['prompt_len']}-G{config['output_len']}"


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
    labels["protocol"] = config.get("protocol", "efficient")
    return Cell(id=cell_id(config), study="attribution", group=group, labels=labels, config=config)


class AttributionStudy:
    """Study 2: time and peak memory of the attribution methods as prompt and output grow."""

    name = "attribution"

    def expand(self, spec: dict, env: Mapping[str, str]) -> list[Cell]:
        """The time curve per protocol: outputs grow at a fixed prompt, prompts grow at a fixed output, per method."""
        variants = spec.get("protocols", {"efficient": {}})
        methods = knobs.names("ATTR_FUNCS", spec["methods"], env)
        cells = []
        for protocol in knobs.names("ATTR_PROTOCOLS", tuple(variants), env):
            data = {**spec, **variants[protocol]}
            keys = [key for key in PROTOCOL_SETTINGS if key in data]
            settings = {**shared_settings(data, env, *keys), "protocol": protocol}
            grids = [("time_curve_output", data["fixed_prompt"], g) for g in data["output_lengths"]]
            grids += [("time_curve_prompt", p, data["fixed_output"]) for p in data["prompt_lengths"]]
            cells += [
                time_cell(settings, group, method, p, g, data.get("method_options", {}))
                for method in methods
                for group, p, g in grids
            ]
        return cells

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
