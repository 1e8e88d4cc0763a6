"""Generated blocks of README.md: text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` markers.

``longctx docs`` rewrites them from the code's tables (departures, claims); ``longctx docs --check`` (and a test)
fails when the README differs, so the README cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path


def _departures() -> str:
    from longctx.departures import all_departures, markdown_table

    return markdown_table(all_departures())


def _claims() -> str:
    from longctx.claims_check import markdown_table

    return markdown_table()


BLOCKS: dict[str, Callable[[], str]] = {"departures": _departures, "claims": _claims}


def render(text: str) -> str:
    """``text`` with every known block replaced by its generated content."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- begin {name} -->\n)(.*?)(<!-- end {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- begin {name} --> ... <!-- end {name} --> block")
        content = make()
        text = pattern.sub(lambda m, c=content: m.group(1) + c + m.group(3), text)
    return text


def sync(path: Path, *, check: bool) -> bool:
    """Rewrite the blocks of ``path`` (or, with ``check``, only say whether they are current). True: current."""
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if new == text:
        return True
    if not check:
        path.write_text(new, encoding="utf-8")
    return False
