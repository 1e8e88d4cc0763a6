"""The registry of studies, by name (objects, not import strings)."""

from __future__ import annotations

from longctx.attribution.study import STUDY as ATTRIBUTION
from longctx.streaming.study import STUDY as STREAMING
from longctx.study import Study

STUDIES: dict[str, Study] = {study.name: study for study in (STREAMING, ATTRIBUTION)}


def study(name: str) -> Study:
    return STUDIES[name]
