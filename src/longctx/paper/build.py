"""``longctx paper build``: NeurIPS/main.pdf with latexmk, reproducibly.

``SOURCE_DATE_EPOCH`` (unless set) is the last commit time (``git log -1 --format=%ct``; 0 outside git)
and ``FORCE_SOURCE_DATE=1`` makes pdfTeX use it for every date, so two builds of the same sources are
byte-identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from longctx.errors import RunFailure, UsageError

TEX_TOOLS = ("latexmk", "pdflatex", "bibtex")
INSTALL_HINT = (
    "apt-get install latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended "
    "texlive-bibtex-extra"
)
LATEXMK = ("latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error")


def missing_tex_tools() -> list[str]:
    return [tool for tool in TEX_TOOLS if shutil.which(tool) is None]


def require_tex() -> None:
    """UsageError naming what to install when the TeX tool chain is absent."""
    missing = missing_tex_tools()
    if missing:
        raise UsageError(f"{', '.join(missing)} not found; install TeX Live: {INSTALL_HINT}")


def source_date_epoch(cwd: str | Path) -> str:
    """The last commit's UNIX time, or 0 outside a git checkout (or when git is absent)."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%ct"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "0"
    value = out.stdout.strip()
    return value if value.isdigit() else "0"


def first_error(log: Path) -> str:
    """The first TeX error line of a log ('! ...') with the line after it, for a one-line failure."""
    if not log.exists():
        return "no log written"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    for index, line in enumerate(lines):
        if line.startswith("!"):
            return " ".join(part.strip() for part in lines[index : index + 2])
    return "see the log"


def build_pdf(paper_dir: str | Path = "NeurIPS", main: str = "main.tex", *, quiet: bool = True) -> Path:
    """Run latexmk on ``paper_dir/main``; return the PDF path. RunFailure (with the TeX error) on failure."""
    require_tex()
    paper_dir = Path(paper_dir)
    if not (paper_dir / main).exists():
        raise UsageError(f"{paper_dir / main} not found (run from the repository root or pass --paper-dir)")
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or source_date_epoch(paper_dir)
    env = {**os.environ, "SOURCE_DATE_EPOCH": epoch, "FORCE_SOURCE_DATE": "1"}
    args = [*LATEXMK, *(["-quiet"] if quiet else []), main]
    proc = subprocess.run(args, cwd=paper_dir, env=env, capture_output=quiet, text=True, check=False)
    log = paper_dir / Path(main).with_suffix(".log")
    if proc.returncode != 0:
        raise RunFailure(f"latexmk failed in {paper_dir} ({first_error(log)}); full log: {log}")
    return paper_dir / Path(main).with_suffix(".pdf")
