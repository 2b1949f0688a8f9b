"""The concept layout of a bottleneck: which logits belong to which concept.

The encoder's output is one group of logits per concept (2 for a binary concept, n for a
categorical one) followed by `unknown` unconstrained dims, in that order, as the original project
lays it out (its YAML's `concept_output`, with an `unknown` entry last). Value v of a concept is
logit v of its group; for binary concepts value 1 means the attribute is present.

The original CelebA-HQ configs name concepts in their own words; `ORIGINAL_CELEBA_NAMES` maps those
to CelebA attribute names so `--concept Smiling` works with the original checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from engine.concepts import match_concept
from engine.errors import UsageError

# The original project's config names -> CelebA attribute names (value 1 = the attribute present).
ORIGINAL_CELEBA_NAMES = {
    "attractive": "Attractive",
    "lipstick": "Wearing_Lipstick",
    "mouth-closed": "Mouth_Slightly_Open",
    "smiling": "Smiling",
    "cheekbones": "High_Cheekbones",
    "makeup": "Heavy_Makeup",
    "gender": "Male",
    "eyebrows": "Arched_Eyebrows",
    "wavy-hair": "Wavy_Hair",
    "wavy_hair": "Wavy_Hair",
}


@dataclass(frozen=True)
class ConceptSpec:
    names: tuple[str, ...]  # concept names, in logit order
    sizes: tuple[int, ...]  # logits per concept (2 for binary)
    unknown: int = 0  # unconstrained dims after the concept logits (0: none)
    values: tuple[tuple[str, ...], ...] = ()  # readable name of each value per concept; () -> "not X" / "X"
    aliases: tuple[str, ...] = ()  # the names an original config used, parallel to `names` (() if none)

    def __post_init__(self):
        if len(self.names) != len(self.sizes):
            raise ValueError("names and sizes differ in length")
        if not self.names:
            raise UsageError("a bottleneck needs at least one concept")
        if len(set(self.names)) != len(self.names):
            raise UsageError(f"concept names repeat: {', '.join(self.names)}")
        if any(int(s) < 2 for s in self.sizes):
            raise UsageError("every concept needs at least 2 values")
        if self.unknown < 0:
            raise UsageError(f"unknown dims must be >= 0 (got {self.unknown})")
        if self.values and len(self.values) != len(self.names):
            raise ValueError("values and names differ in length")

    @classmethod
    def binary(cls, names: Sequence[str], unknown: int = 0) -> "ConceptSpec":
        return cls(names=tuple(names), sizes=tuple(2 for _ in names), unknown=int(unknown))

    @property
    def concept_dims(self) -> int:
        return sum(self.sizes)

    @property
    def total(self) -> int:  # the encoder's output width
        return self.concept_dims + self.unknown

    def group(self, k: int) -> slice:  # logits of concept k
        start = sum(self.sizes[:k])
        return slice(start, start + self.sizes[k])

    def value_names(self, k: int) -> tuple[str, ...]:
        if self.values:
            return self.values[k]
        n = self.names[k]
        return (f"not {n}", n) if self.sizes[k] == 2 else tuple(f"{n}={v}" for v in range(self.sizes[k]))

    def index(self, name: str) -> int:
        """Concept index of a name typed by a user (forgiving; original config names also match)."""
        try:
            return self.names.index(match_concept(name, self.names))
        except UsageError:
            if self.aliases:
                hits = [i for i, a in enumerate(self.aliases) if a.lower() == str(name).strip().lower()]
                if hits:
                    return hits[0]
            raise

    def check_value(self, k: int, value: int) -> int:
        if not 0 <= int(value) < self.sizes[k]:
            raise UsageError(f"--value for {self.names[k]} must be in 0..{self.sizes[k] - 1} (got {value})")
        return int(value)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"names": list(self.names), "sizes": list(self.sizes), "unknown": self.unknown}
        if self.values:
            doc["values"] = [list(v) for v in self.values]
        if self.aliases:
            doc["aliases"] = list(self.aliases)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "ConceptSpec":
        return cls(
            names=tuple(doc["names"]), sizes=tuple(int(s) for s in doc["sizes"]), unknown=int(doc.get("unknown", 0)),
            values=tuple(tuple(v) for v in doc.get("values") or ()), aliases=tuple(doc.get("aliases") or ()),
        )
