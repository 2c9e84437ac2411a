"""Properties of scoring that must hold for every form and any pattern of answers (Hypothesis)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outcomes.errors import InvalidResponse
from outcomes.instruments import Form, load_registry
from outcomes.scoring import ScoreResult, score_frame, score_response
from outcomes.settings import DATA_DIR

REGISTRY = load_registry(DATA_DIR / "instruments")
FORMS = st.sampled_from(REGISTRY.forms)
# Per test, not a loaded profile: a profile would change Hypothesis settings for the whole suite.
PROPERTY = settings(deadline=None, max_examples=200)  # deadline: the first call per form fills caches


@st.composite
def answers(draw: st.DrawFn, complete: bool = False) -> tuple[Form, dict[str, int | None]]:
    """A form and a response to it: each item a value in range or, unless ``complete``, None."""
    form = draw(FORMS)
    value = st.integers(1, 5) if complete else st.one_of(st.none(), st.integers(1, 5))
    values = draw(st.lists(value, min_size=form.n_items, max_size=form.n_items))
    return form, dict(zip(form.item_ids, values))


def _t_range(form: Form) -> tuple[float, float]:
    ts = [t for t, _ in form.table.values()]
    return min(ts), max(ts)


@pytest.mark.slow
@PROPERTY
@given(answers())
def test_scored_only_with_half_the_items_and_within_the_table(case: tuple[Form, dict[str, int | None]]) -> None:
    form, response = case
    result = score_response(form, response)
    n_answered = sum(v is not None for v in response.values())
    assert result.n_answered == n_answered
    assert result.scorable is (2 * n_answered >= form.n_items)
    if result.scorable:
        low, high = _t_range(form)
        assert low <= result.t_score <= high  # type: ignore[operator]
        assert result.se is not None and result.se > 0 and result.severity is not None
        assert result.imprecise is (n_answered < 4)
    else:
        assert result.t_score is None and result.se is None and result.method is None


@pytest.mark.slow
@PROPERTY
@given(answers(complete=True))
def test_complete_response_is_the_table_value(case: tuple[Form, dict[str, int | None]]) -> None:
    form, response = case
    raw = sum(v for v in response.values() if v is not None)
    result = score_response(form, response)
    assert (result.method, result.raw_score, (result.t_score, result.se)) == ("table", raw, form.table[raw])


@pytest.mark.slow
@PROPERTY
@given(st.data())
def test_raising_one_answer_never_lowers_t(data: st.DataObject) -> None:
    """Every item is valued so that higher means more of the domain (SOURCES.md, "Scoring rules")."""
    form, response = data.draw(answers())
    raisable = [i for i, v in response.items() if v is not None and v < 5]
    if not raisable or not score_response(form, response).scorable:
        return
    item = data.draw(st.sampled_from(raisable))
    before = score_response(form, response)
    after = score_response(form, {**response, item: response[item] + 1})  # type: ignore[operator]
    assert after.method == before.method
    assert after.t_score >= before.t_score  # type: ignore[operator]


INVALID = st.one_of(
    st.integers().filter(lambda v: not 1 <= v <= 5),
    st.floats(allow_nan=True),  # even 3.0: a float is not an answer code
    st.text(max_size=3),
    st.booleans(),
    st.just(np.float64(2.0)),
    st.lists(st.integers(1, 5), max_size=1),
)


@PROPERTY
@given(answers(), st.data())
def test_every_invalid_value_is_rejected(case: tuple[Form, dict[str, int | None]], data: st.DataObject) -> None:
    form, response = case
    item = data.draw(st.sampled_from(form.item_ids))
    bad = data.draw(INVALID)
    with pytest.raises(InvalidResponse, match=f"{item}="):
        score_response(form, {**response, item: bad})


def _expected(form_key: str, response: dict[str, Any]) -> tuple[Any, ...]:
    try:
        r: ScoreResult = score_response(REGISTRY.form(form_key), response)
    except InvalidResponse as exc:
        return (None, None, None, None, None, None, False, f"error: {exc}")
    return (r.raw_score, r.t_score, r.se, r.n_answered, r.method, r.severity, r.imprecise, r.note)


def _cell(value: Any) -> Any:
    return None if value is pd.NA or (isinstance(value, float) and np.isnan(value)) else value


@pytest.mark.slow
@PROPERTY
@given(st.lists(st.tuples(answers(), st.one_of(st.none(), st.sampled_from([0, 6, 2.5, "x"])), st.integers(0, 9)),
                min_size=1, max_size=25))
def test_score_frame_equals_score_response_row_by_row(rows: list[tuple[tuple[Form, dict[str, Any]], Any, int]]) -> None:
    records = []
    for (form, response), bad, position in rows:
        if bad is not None:  # now and then a bad value, to pin error rows too
            response = {**response, form.item_ids[position % form.n_items]: bad}
        records.append({"form": form.key, **response})
    df = pd.DataFrame.from_records(records)
    out = score_frame(df, REGISTRY)
    columns = ["raw_score", "t_score", "se", "n_answered", "method", "severity", "imprecise", "note"]
    for record, (_, scored) in zip(records, out.iterrows(), strict=True):
        key, response = record["form"], {k: v for k, v in record.items() if k != "form"}
        assert tuple(_cell(scored[c]) for c in columns) == _expected(key, response)
