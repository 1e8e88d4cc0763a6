"""The one definition of a token-id hash: sha256 of the ids as int64 little-endian bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def token_ids_sha256(ids: Sequence[int]) -> str:
    """sha256 of ``ids`` as int64 little-endian bytes (what ``inputs.data.token_ids_sha256`` records)."""
    return hashlib.sha256(np.asarray(list(ids), dtype="<i8").tobytes()).hexdigest()
