"""Concept names: forgiving matching of what a user typed against the names a dataset or model knows.

`Smiling`, `smiling`, `SMILING` are one name, and `_`, `-` and spaces are interchangeable
(`mouth-slightly-open` is `Mouth_Slightly_Open`). An unknown name gets a UsageError (exit code 2)
that lists the valid names and the closest match. No torch here: the CLI may use it while parsing.
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable

from engine.errors import UsageError

__all__ = ["normalize_concept_name", "match_concept", "match_concepts", "concept_token"]

_SEPARATORS = re.compile(r"[\s_\-]+")
_MAX_LISTED = 40  # valid names listed in an error message before "... and N more"


def normalize_concept_name(name: str) -> str:
    """The comparison key of a name: lower case, runs of `_`, `-` and whitespace as one space."""
    return _SEPARATORS.sub(" ", str(name)).strip().lower()


def concept_token(name: str) -> str:
    """A name as the original project spells it in file names: spaces become `_` (`Wearing Lipstick`
    -> `Wearing_Lipstick`, `Small size 5 to 9 inches` -> `Small_size_5_to_9_inches`)."""
    return "_".join(str(name).split())


def _listing(valid: list[str]) -> str:
    shown = ", ".join(valid[:_MAX_LISTED])
    if len(valid) > _MAX_LISTED:
        shown += f", ... and {len(valid) - _MAX_LISTED} more"
    return shown


def match_concept(
    name: str,  # what the user typed
    valid: Iterable[str],  # the names this dataset / model knows, spelled as they should come back
    what: str = "concept",  # the noun for error messages
) -> str:
    """The entry of `valid` that `name` means (case-insensitive, `_` `-` and spaces equivalent).

    UsageError (exit 2) naming the valid names and the closest one when there is no match, or when
    the name matches several valid names equally well.
    """
    names = list(dict.fromkeys(str(v) for v in valid))
    if not names:
        raise UsageError(f"no {what}s are available to match {name!r}")
    if name in names:
        return name
    key = normalize_concept_name(name)
    hits = [v for v in names if normalize_concept_name(v) == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UsageError(f"{what} {name!r} is ambiguous: it matches {', '.join(hits)}")
    keys = {normalize_concept_name(v): v for v in names}
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.5)
    if not close:  # a part of a longer name, e.g. "lipstick" for "Wearing_Lipstick"
        partial = [v for k, v in keys.items() if key and key in k]
        close = [normalize_concept_name(partial[0])] if len(partial) == 1 else []
    hint = f"; did you mean {keys[close[0]]!r}?" if close else ""
    raise UsageError(f"unknown {what} {name!r}{hint} (valid: {_listing(names)})")


def match_concepts(names: Iterable[str], valid: Iterable[str], what: str = "concept") -> list[str]:
    """match_concept for each name, duplicates removed, order kept."""
    valid = list(valid)
    out: list[str] = []
    for name in names:
        hit = match_concept(name, valid, what)
        if hit not in out:
            out.append(hit)
    return out
