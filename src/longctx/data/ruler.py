"""The attribution study's text: a RULER variable-tracking sample, generated from a seed or read from JSONL.

The real RULER file is not redistributable, so by default a sample is generated the way RULER's
``variable_tracking`` task builds one: assignment chains (``VAR ABCDE = 12345``, ``VAR FGHIJ = VAR ABCDE``)
hidden at seeded positions in repeated filler sentences, wrapped in RULER's instruction and question
templates. A real RULER JSONL (one JSON object per line with an ``input`` string) can be read instead.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from longctx.errors import UsageError

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {value} in the text above."
)


@dataclass(frozen=True)
class RulerSample:
    """One variable-tracking prompt and its answer (the variables that hold the value)."""

    text: str
    answer: list[str]
    source: str  # "generated:seed=<s>,chains=<c>,hops=<h>,filler=<n>" or the JSONL path
    sample_id: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _chains(rng: random.Random, n_chains: int, n_hops: int) -> tuple[list[list[str]], list[list[str]]]:
    """(statements per chain, variable names per chain) with distinct 5-letter names and 5-digit values."""
    names: set[str] = set()
    statements, variables = [], []
    for _ in range(n_chains):
        chain = []
        while len(chain) < n_hops + 1:
            name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
            if name not in names:
                names.add(name)
                chain.append(name)
        value = str(rng.randint(10000, 99999))
        statements.append([f"VAR {chain[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in pairwise(chain)])
        variables.append(chain)
    return statements, variables


def variable_tracking_sample(seed: int = 0, n_chains: int = 1, n_hops: int = 4, n_filler: int = 40) -> RulerSample:
    """A deterministic RULER-style variable-tracking sample; the question asks for the first chain's value."""
    if n_chains < 1 or n_hops < 1 or n_filler < 1:
        raise UsageError("variable tracking needs at least one chain, one hop and one filler sentence")
    rng = random.Random(seed)
    statements, variables = _chains(rng, n_chains, n_hops)
    sentences = [FILLER] * n_filler
    flat = [s for chain in statements for s in chain]
    # Chain order is kept (each assignment after the one it reads), positions are seeded.
    slots = sorted(rng.sample(range(n_filler + len(flat)), len(flat)))
    for slot, statement in zip(slots, flat, strict=True):
        sentences.insert(slot, statement)
    value = statements[0][0].split("= ")[1].rstrip(".")
    text = TEMPLATE.format(context=" ".join(sentences), value=value)
    source = f"generated:seed={seed},chains={n_chains},hops={n_hops},filler={n_filler}"
    return RulerSample(text=text, answer=variables[0], source=source, sample_id=f"vt-seed{seed}")


def read_ruler_jsonl(path: str | Path, index: int = 0) -> RulerSample:
    """Sample ``index`` (0-based line) of a RULER JSONL file; UsageError naming the problem if malformed."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"RULER file {path} does not exist")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not 0 <= index < len(lines):
        raise UsageError(f"RULER file {path} has {len(lines)} samples; index {index} is out of range")
    try:
        record = json.loads(lines[index])
    except json.JSONDecodeError as exc:
        raise UsageError(f"RULER file {path} line {index + 1} is not JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("input"), str) or not record["input"]:
        raise UsageError(f"RULER file {path} line {index + 1} has no non-empty string field 'input'")
    answer = record.get("outputs", [])
    return RulerSample(
        text=record["input"],
        answer=[str(a) for a in answer] if isinstance(answer, list) else [str(answer)],
        source=str(path),
        sample_id=str(record.get("index", index)),
    )


def load_ruler_sample(path: str | Path | None = None, seed: int = 0) -> RulerSample:
    """The real sample when a file is given, else the generated one."""
    return read_ruler_jsonl(path) if path else variable_tracking_sample(seed)
