"""LaTeX text helpers: escaping arbitrary strings and formatting numbers with the precision they deserve.

Every number that reaches the paper goes through ``fmt_fixed`` or ``fmt_summary``: a single run prints with
fixed decimals, repeats print as ``mean ± std`` with the std rounded to two significant digits and the mean
to the same decimal place. Missing values print as the ``\\missing`` macro (a red [INSERT DATA]).
"""

from __future__ import annotations

import math

from longctx.stats import Summary

MISSING = r"\missing{}"
STALE_MARK = r"\stalemark{}"

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_\allowbreak{}",
    "/": r"/\allowbreak{}",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_SYMBOLS = {
    "σ": r"$\sigma$",
    "δ": r"$\delta$",
    "×": r"$\times$",
    "±": r"$\pm$",
    "≤": r"$\le$",
    "≥": r"$\ge$",
    "→": r"$\to$",
    "≈": r"$\approx$",
    "≠": r"$\ne$",
    "≡": r"$\equiv$",
    "·": r"$\cdot$",
    "—": "---",
    "–": "--",
    "…": r"\ldots{}",
    "’": "'",
    "“": "``",
    "”": "''",
}


def escape(text: object) -> str:
    """Plain text -> LaTeX source that pdflatex (utf8, T1) renders as written.

    Latin-1 letters pass through; a few math symbols become math; any other non-ASCII character (e.g. a
    CJK file name in the plan data) prints as its code point, ``U+63A2``, rather than breaking the build.
    """
    out = []
    for ch in str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ord(ch) < 0x100:
            out.append(ch)
        else:
            out.append(rf"\texttt{{U+{ord(ch):04X}}}\allowbreak{{}}")
    return "".join(out)


def mark(text: str, *results) -> str:
    """Append the stale mark to a value taken from a stale result (one reused under ALLOW_STALE=1)."""
    return text + STALE_MARK if any(r is not None and r.stale for r in results) else text


def fmt_fixed(value: float | None, decimals: int, *, sign: bool = False, suffix: str = "") -> str:
    """A number with fixed decimals (``\\missing`` for None or non-finite values)."""
    if value is None or not math.isfinite(value):
        return MISSING
    text = f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"
    return text.replace("-", "$-$") + suffix


def std_decimals(std: float) -> int:
    """Decimal places that show ``std`` with two significant digits (never negative)."""
    if std <= 0 or not math.isfinite(std):
        return 0
    return max(0, 1 - math.floor(math.log10(std)))


def fmt_summary(summary: Summary | None, decimals: int, *, scale: float = 1.0) -> str:
    """``mean ± std`` when n > 1 (std to two significant digits), else the single value with ``decimals``."""
    if summary is None or summary.mean is None:
        return MISSING
    mean = summary.mean * scale
    std = summary.std
    if summary.n > 1 and std is not None:
        std *= scale
        places = std_decimals(std)
        return rf"{fmt_fixed(mean, places)}\,$\pm$\,{fmt_fixed(std, places)}"
    return fmt_fixed(mean, decimals)


def fmt_sig(value: float | None, digits: int = 3) -> str:
    """A quantity spanning orders of magnitude (seconds, bytes) with ``digits`` significant digits."""
    if value is None or not math.isfinite(value):
        return MISSING
    if value == 0:
        return "0"
    places = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return fmt_fixed(value, places)


def fmt_summary_sig(summary: Summary | None, digits: int = 3, *, scale: float = 1.0) -> str:
    """Like ``fmt_summary`` but a single run gets ``digits`` significant digits instead of fixed decimals."""
    if summary is None or summary.mean is None:
        return MISSING
    if summary.n > 1 and summary.std is not None:
        return fmt_summary(summary, 0, scale=scale)
    return fmt_sig(summary.mean * scale, digits)


def macro_name(*parts: str) -> str:
    """A control-sequence name from words and digits: ("Lazy", "Speedup", "pg19") -> LazySpeedupPGnineteen.

    Known dataset names keep their conventional spelling (``pg19`` -> PGnineteen, ``wikitext`` -> WikiText).
    """
    known = {"pg19": "PGnineteen", "wikitext": "WikiText"}
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    out = []
    for part in parts:
        part = known.get(part, part)
        digits_as_words = "".join(words[int(c)] if c.isdigit() else c for c in part)
        letters = "".join(c for c in digits_as_words if c.isascii() and c.isalpha())
        out.append(letters[:1].upper() + letters[1:])
    return "".join(out)
