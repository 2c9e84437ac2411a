"""Pure field rules (outcomes/validation.py): what a write or an import accepts, and what it says otherwise."""

import pytest

from outcomes.validation import MAX_WHOLE, clean_score, clean_series


@pytest.mark.parametrize("value", ["1E20", 1e20, 2 ** 63, "1E17"])
def test_a_huge_whole_number_is_refused_not_overflowed(value):
    values, problems = clean_score(domain="depression", assessed_on="2025-01-06", t_score=50, method="imported",
                                   source="import", n_answered=value)
    assert problems == [f"n_answered must be a whole number of at least 0, got {value!r}"]


def test_the_largest_whole_number_is_still_accepted():
    values, problems = clean_score(domain="depression", assessed_on="2025-01-06", t_score=50, method="imported",
                                   source="import", n_answered=MAX_WHOLE)
    assert problems == [] and values["n_answered"] == MAX_WHOLE


def test_a_series_with_an_absurd_infusion_count_says_what_to_fix():
    _, problems = clean_series(first_infusion="2025-01-06", last_infusion="2025-01-10", infusions="1E20")
    assert problems and all("infusions" in p for p in problems)
