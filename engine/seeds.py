"""Seed lists as users write them: `0-3,7` -> [0, 1, 2, 3, 7]."""

from __future__ import annotations

import re

from engine.errors import UsageError

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
MAX_SEED = 2**32 - 1  # numpy's RandomState accepts seeds in [0, 2**32)


def parse_seeds(text: str) -> list[int]:
    """Comma-separated seeds and inclusive ranges; duplicates kept in order given."""
    if not text or not text.strip():
        raise UsageError("seeds must not be empty (e.g. 0-3,7)")
    seeds: list[int] = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise UsageError(f"malformed seed list {text!r}: {part.strip()!r} is not a seed or a range like 0-3")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"malformed seed range {part.strip()!r}: end before start")
        if hi > MAX_SEED:
            raise UsageError(f"seed {hi} out of range (0..{MAX_SEED})")
        seeds.extend(range(lo, hi + 1))
    return seeds
