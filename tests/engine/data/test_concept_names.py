"""Forgiving concept names: case, `_`, `-` and spaces; unknown names list the valid ones."""

from __future__ import annotations

import pytest

from engine.concepts import concept_token, match_concept, match_concepts, normalize_concept_name
from engine.errors import UsageError

VALID = ["Smiling", "Mouth_Slightly_Open", "Wearing_Lipstick", "Male"]


@pytest.mark.parametrize("typed,expected", [
    ("Smiling", "Smiling"), ("smiling", "Smiling"), ("SMILING", "Smiling"),
    ("mouth-slightly-open", "Mouth_Slightly_Open"), ("Mouth slightly  open", "Mouth_Slightly_Open"),
    ("wearing_lipstick", "Wearing_Lipstick"), (" male ", "Male"),
])
def test_equivalent_spellings(typed, expected):
    assert match_concept(typed, VALID) == expected


def test_unknown_name_lists_valid_and_closest():
    with pytest.raises(UsageError) as err:
        match_concept("smilng", VALID)
    msg = str(err.value)
    assert "did you mean 'Smiling'" in msg and "Mouth_Slightly_Open" in msg and err.value.exit_code == 2
    with pytest.raises(UsageError, match="did you mean 'Wearing_Lipstick'"):
        match_concept("lipstick", VALID)  # a part of one name
    with pytest.raises(UsageError) as err:
        match_concept("zzzz", VALID)
    assert "did you mean" not in str(err.value) and "valid: Smiling" in str(err.value)


def test_ambiguous_and_long_lists():
    with pytest.raises(UsageError, match="ambiguous"):
        match_concept("a b", ["A_B", "a-b"])
    many = [f"attr_{i}" for i in range(100)]
    with pytest.raises(UsageError, match=r"and 60 more"):
        match_concept("nothing like it", many)


def test_helpers():
    assert normalize_concept_name("Mouth_Slightly-Open ") == "mouth slightly open"
    assert concept_token("Small size 5 to 9 inches") == "Small_size_5_to_9_inches"
    assert match_concepts(["male", "Male", "smiling"], VALID) == ["Male", "Smiling"]
