"""Jinja2 rendering of the LaTeX templates (delimiters that avoid TeX braces) and the table model."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jinja2

from longctx.paper.latex import STALE_MARK

MISMATCH_MARK = r"\mismatchmark{}"
STALE_NOTE = r"\stalemark{} reused a stale result (ALLOW\_STALE=1): its config, code, model or data changed."
MISMATCH_NOTE = (
    r"\mismatchmark{} no speedup: the baseline was measured under a different fingerprint identity "
    r"(GPU, driver or software stack); rerun the baseline on this machine."
)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("longctx.paper", "templates"),
        block_start_string="<%",
        block_end_string="%>",
        variable_start_string="<<<",
        variable_end_string=">>>",
        comment_start_string="<#",
        comment_end_string="#>",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render(template: str, **context) -> str:
    """Render ``templates/<template>`` with ``context`` (values must already be LaTeX)."""
    return _environment().get_template(template).render(**context)


@dataclass
class Table:
    """A booktabs table: a header, blocks of rows (separated by midrules), a caption and footnotes.

    Every cell is LaTeX source. Footnotes explaining the stale and fingerprint-mismatch marks are added
    automatically when a cell carries one.
    """

    name: str
    caption: str
    label: str
    header: list[str]
    align: str
    blocks: list[list[list[str]]]
    notes: list[str] = field(default_factory=list)
    source: str = "results JSON"
    placement: str = "tbp"

    def to_latex(self) -> str:
        """The table, or a one-line note when the plan has no cells for it (e.g. RUN_SWEEPS=0)."""
        cells = [c for block in self.blocks for row in block for c in row]
        if not cells:
            return render("omitted.tex.j2", source=self.source, label=self.label)
        notes = list(self.notes)
        if any(STALE_MARK in c for c in cells):
            notes.append(STALE_NOTE)
        if any(MISMATCH_MARK in c for c in cells):
            notes.append(MISMATCH_NOTE)
        return render(
            "table.tex.j2",
            source=self.source,
            placement=self.placement,
            caption=self.caption,
            label=self.label,
            align=self.align,
            header=self.header,
            blocks=[b for b in self.blocks if b],
            notes=notes,
        )

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / f"{self.name}.tex"
        path.write_text(self.to_latex(), encoding="utf-8")
        return path
