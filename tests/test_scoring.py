"""Scoring: the engine against every shipped table and test vector, the missing-data rules, bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from outcomes import scoring
from outcomes.errors import InvalidResponse, MissingColumns, UnknownForm, ValidationError
from outcomes.instruments import Form, Registry, load_registry
from outcomes.scoring import (round_half_up, score_csv, score_file, score_frame, score_parquet, score_response,
                              summed_score_table)
from outcomes.settings import DATA_DIR

TEST_DATA = Path(__file__).parent / "data"
REGISTRY = load_registry(DATA_DIR / "instruments")


def _vectors(name: str) -> list[dict[str, str]]:
    with (TEST_DATA / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _form_of(row: dict[str, str]) -> Form:
    return REGISTRY.form(f"{row['instrument']}_sf{row['form']}_v{row['version']}")


def _answers(form: Form, responses: str) -> dict[str, int | None]:
    return {i: None if v == "" else int(v) for i, v in zip(form.item_ids, responses.split(";"), strict=True)}


def _id(row: dict[str, str]) -> str:
    return f"{row['instrument']}_{row['form']}_v{row['version']}:{row['responses']}"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return REGISTRY


@pytest.mark.parametrize("form", [f for f in REGISTRY.forms if f.has_parameters], ids=lambda f: f.key)
def test_engine_reproduces_every_cell_of_every_shipped_table(form: Form) -> None:
    """SOURCES.md "Verification": 12 tables, 324 raw scores, 648 cells, all equal."""
    assert summed_score_table(form) == dict(form.table)


def test_the_one_form_without_parameters_cannot_be_recomputed(registry: Registry) -> None:
    with pytest.raises(ValueError, match="no item parameters"):
        summed_score_table(registry.form("physical_function_sf4a_v2.0"))


@pytest.mark.parametrize("row", _vectors("test_vectors.csv"), ids=_id)
def test_published_vectors(row: dict[str, str]) -> None:
    form = _form_of(row)
    result = score_response(form, _answers(form, row["responses"]))
    assert (result.method, result.raw_score, result.t_score) == ("table", int(row["raw_score"]), float(row["expected_t"]))
    if row["expected_se"]:
        assert result.se == float(row["expected_se"])


@pytest.mark.parametrize("row", _vectors("pattern_vectors.csv"), ids=_id)
def test_pattern_vectors(row: dict[str, str]) -> None:
    form = _form_of(row)
    result = score_response(form, _answers(form, row["responses"]))
    assert result.method == "pattern" and result.n_answered == form.n_items - 1
    assert (result.t_score, result.se) == (float(row["expected_t"]), float(row["expected_se"]))


def test_complete_responses_use_the_table_not_the_pattern(registry: Registry) -> None:
    form = registry.form("depression_sf8a_v1.0")
    answers = dict(zip(form.item_ids, [5, 5, 5, 5, 1, 1, 1, 1]))
    result = score_response(form, answers)
    assert (result.method, result.raw_score, result.t_score, result.se) == ("table", 24, 62.1, 1.8)
    assert (result.n_answered, result.n_items, result.imprecise, result.note) == (8, 8, False, "")
    assert (result.domain, result.severity, result.form) == ("depression", "moderate", "depression_sf8a_v1.0")


def test_absent_items_are_missing(registry: Registry) -> None:
    form = registry.form("depression_sf4a_v1.0")
    with_none = score_response(form, {"EDDEP04": 2, "EDDEP06": 3, "EDDEP29": None, "EDDEP41": 4})
    assert score_response(form, {"EDDEP04": 2, "EDDEP06": 3, "EDDEP41": 4}) == with_none
    assert (with_none.t_score, with_none.se, with_none.raw_score) == (62.5, 2.9, 9)


@pytest.mark.parametrize(("answers", "raw", "t", "se", "imprecise"), [
    ([5, 5, 5, None], 20, 57.0, 6.6, True),  # ceil(15 * 4 / 3) = 20
    ([3, None, 2, 2], 10, 34.4, 2.3, True),  # ceil(7 * 4 / 3) = ceil(9.33) = 10, rounded up
    ([1, 2, None, None], 6, 28.9, 2.5, True),  # ceil(3 * 4 / 2) = 6 exactly: no rounding
    ([4, 4, 4, 4], 16, 41.9, 2.5, False),
])
def test_pf_v2_without_parameters_is_prorated(registry: Registry, answers: list[int | None], raw: int, t: float,
                                               se: float, imprecise: bool) -> None:
    form = registry.form("physical_function_sf4a_v2.0")
    assert form.table[raw] == (t, se)
    result = score_response(form, dict(zip(form.item_ids, answers)))
    assert (result.raw_score, result.t_score, result.se, result.imprecise) == (raw, t, se, imprecise)
    assert result.method == ("table" if None not in answers else "prorated")
    if result.method == "prorated":
        assert result.note.startswith("prorated: ") and "rounded up" in result.note


@pytest.mark.parametrize(("key", "n_answered", "scorable"), [
    ("depression_sf4a_v1.0", 1, False), ("depression_sf4a_v1.0", 2, True),
    ("pain_interference_sf6b_v1.0", 2, False), ("pain_interference_sf6b_v1.0", 3, True),
    ("depression_sf8b_v1.0", 3, False), ("depression_sf8b_v1.0", 4, True),
    ("physical_function_sf10a_v1.0", 4, False), ("physical_function_sf10a_v1.0", 5, True),
    ("physical_function_sf4a_v2.0", 1, False), ("physical_function_sf4a_v2.0", 2, True),
    ("depression_sf4a_v1.0", 0, False),
])
def test_at_least_half_the_items_are_needed(registry: Registry, key: str, n_answered: int, scorable: bool) -> None:
    form = registry.form(key)
    result = score_response(form, {i: 3 for i in form.item_ids[:n_answered]})
    assert result.scorable is scorable and result.n_answered == n_answered
    if scorable:
        assert result.method in ("pattern", "prorated") and result.severity is not None
        assert result.imprecise is (n_answered < 4)
        assert ("imprecise" in result.note) is (n_answered < 4)
    else:
        assert (result.t_score, result.se, result.severity, result.method, result.imprecise) == (None, None, None, None, False)
        assert result.note == (f"not scorable: {n_answered} of {form.n_items} items answered; "
                               f"at least half ({math.ceil(form.n_items / 2)}) are needed")
        assert result.raw_score == (None if n_answered == 0 else 3 * n_answered)


def test_pattern_note_says_how_it_was_scored(registry: Registry) -> None:
    form = registry.form("pain_interference_sf8a_v1.0")
    result = score_response(form, dict(zip(form.item_ids, [3, 4, 2, 3, None, 4, 2, 3])))
    assert (result.t_score, result.se, result.raw_score) == (61.7, 1.4, 21)
    assert result.note == "response-pattern (EAP) score: 7 of 8 items answered"


@pytest.mark.parametrize("value", [0, 6, -1, 2.5, 3.0, "3", True, False, float("nan"), [3], np.float64(3)])
def test_invalid_values_are_rejected_naming_item_and_allowed_values(registry: Registry, value: object) -> None:
    form = registry.form("pain_interference_sf4a_v1.0")
    with pytest.raises(InvalidResponse) as caught:
        score_response(form, {"PAININ9": 3, "PAININ22": value})
    message = str(caught.value)
    assert "PAININ22=" in message and "1 (Not at all)" in message and "5 (Very much)" in message
    assert "pain_interference_sf4a_v1.0" in message


def test_numpy_integers_are_whole_numbers(registry: Registry) -> None:
    form = registry.form("depression_sf4a_v1.0")
    assert score_response(form, dict.fromkeys(form.item_ids, np.int64(1))).t_score == 41.0


def test_unknown_item_is_rejected(registry: Registry) -> None:
    with pytest.raises(InvalidResponse, match="has no item 'EDDEP04'; its items are PAININ9, PAININ22"):
        score_response(registry.form("pain_interference_sf4a_v1.0"), {"PAININ9": 1, "EDDEP04": None})


def test_form_key_is_looked_up(registry: Registry) -> None:
    result = score_response("depression_sf4a_v1.0", {"EDDEP04": 1, "EDDEP06": 1, "EDDEP29": 1, "EDDEP41": 1}, registry)
    assert result.t_score == 41.0
    with pytest.raises(UnknownForm, match="valid form keys"):
        score_response("depression_sf4a_v9", {}, registry)


@pytest.mark.parametrize(("value", "rounded"), [
    (0.05, 0.1), (0.15, 0.2), (0.25, 0.3), (2.45, 2.5), (57.95, 58.0), (62.45, 62.5),  # halves go up
    (1.95003, 2.0), (46.44991, 46.4), (57.9496, 57.9), (1.44978, 1.4),  # SOURCES.md's near-boundary cells
])
def test_round_half_up(value: float, rounded: float) -> None:
    assert round_half_up(value) == rounded


def _frame(registry: Registry) -> pd.DataFrame:
    pi, pf = registry.form("pain_interference_sf4a_v1.0"), registry.form("physical_function_sf4a_v2.0")
    rows = [
        {"patient": "007", "form": pi.key, **dict(zip(pi.item_ids, [3, 3, 3, 3]))},
        {"patient": "008", "form": pi.key, **dict(zip(pi.item_ids, [5, 4, 5, None]))},
        {"patient": "009", "form": pf.key, **dict(zip(pf.item_ids, [5, 5, 5, None]))},
        {"patient": "010", "form": pi.key, **dict(zip(pi.item_ids, [7, 3, 3, 3]))},
        {"patient": "011", "form": "nope_sf4a_v1.0", "PAININ9": 3},
        {"patient": "012", "form": pi.key, "PAININ9": 3},
        {"patient": "013", "form": None, "PAININ9": 3},
        {"patient": "014", "form": pi.key, **dict(zip(pi.item_ids, [1, 2.5, 1, 1]))},
    ]
    return pd.DataFrame(rows)


def test_score_frame_scores_good_rows_and_flags_bad_ones(registry: Registry) -> None:
    df = _frame(registry)
    before = df.copy()
    out = score_frame(df, registry)
    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    assert list(out.columns) == [*df.columns, *scoring.OUTPUT_COLUMNS]
    assert out["patient"].tolist() == before["patient"].tolist()
    assert out["t_score"].tolist()[:3] == [61.2, 71.0, 57.0]
    assert out["method"].tolist() == ["table", "pattern", "prorated", None, None, None, None, None]
    assert out["raw_score"].tolist()[:3] == [12, 14, 20]
    assert out["severity"].tolist()[:3] == ["moderate", "severe", "within normal limits"]
    assert out["imprecise"].tolist()[:3] == [False, True, True]
    notes = out["note"].tolist()
    assert notes[0] == "" and notes[1].startswith("response-pattern") and notes[2].startswith("prorated")
    assert notes[3].startswith("error: pain_interference_sf4a_v1.0: PAININ9=7 is not an allowed answer")
    assert notes[4].startswith("error: unknown form key 'nope_sf4a_v1.0'; valid form keys:")
    assert notes[5].startswith("not scorable: 1 of 4 items answered")
    assert notes[6] == "error: no form key"
    assert notes[7].startswith("error: pain_interference_sf4a_v1.0: PAININ22=2.5 is not an allowed answer")
    assert out["t_score"][3:].isna().all() and out["n_answered"][3:].tolist() == [pd.NA, pd.NA, 1, pd.NA, pd.NA]


def test_score_frame_errors_match_score_response(registry: Registry) -> None:
    form = registry.form("pain_interference_sf4a_v1.0")
    for bad in (7, 2.5, "3", True):
        df = pd.DataFrame([{"form": form.key, "PAININ9": 1, "PAININ22": bad, "PAININ31": 1, "PAININ34": 1},
                           {"form": form.key, "PAININ9": 1, "PAININ22": 1, "PAININ31": 1, "PAININ34": 1}])
        with pytest.raises(InvalidResponse) as caught:
            score_response(form, {"PAININ9": 1, "PAININ22": bad, "PAININ31": 1, "PAININ34": 1})
        out = score_frame(df, registry)
        assert out["note"].tolist() == [f"error: {caught.value}", ""]


def test_score_frame_column_types(registry: Registry) -> None:
    form = registry.form("depression_sf4a_v1.0")
    df = pd.DataFrame({"form": [form.key] * 3, "EDDEP04": pd.array([1, None, 5], dtype="Int64"),
                       "EDDEP06": [1, 2, 5], "EDDEP29": [1.0, np.nan, 5.0], "EDDEP41": [None, None, None]})
    out = score_frame(df, registry)
    expected = [score_response(form, {"EDDEP04": 1, "EDDEP06": 1, "EDDEP29": 1}),
                score_response(form, {"EDDEP06": 2}),
                score_response(form, {"EDDEP04": 5, "EDDEP06": 5, "EDDEP29": 5})]
    assert out["t_score"].tolist()[::2] == [expected[0].t_score, expected[2].t_score]
    assert out["method"].tolist() == [r.method for r in expected]
    assert str(out["raw_score"].dtype) == "Int64" and str(out["n_answered"].dtype) == "Int64"


def test_score_frame_keeps_any_index(registry: Registry) -> None:
    df = pd.DataFrame({"form": ["depression_sf4a_v1.0"] * 3, "EDDEP04": [1, 5, None], "EDDEP06": [1, 5, 2],
                       "EDDEP29": [1, 5, 2], "EDDEP41": [1, 5, 2]}, index=[7, 3, 3])
    out = score_frame(df, registry)
    assert out.index.tolist() == [7, 3, 3]
    assert out["t_score"].tolist() == [41.0, 79.4, 55.5] and out["method"].tolist() == ["table", "table", "pattern"]


def test_score_frame_without_item_columns_or_rows(registry: Registry) -> None:
    out = score_frame(pd.DataFrame({"form": ["depression_sf4a_v1.0"]}), registry)
    assert out["note"].tolist() == ["not scorable: 0 of 4 items answered; at least half (2) are needed"]
    assert pd.isna(out["raw_score"][0])
    empty = score_frame(pd.DataFrame({"form": pd.Series([], dtype=object)}), registry)
    assert list(empty.columns) == ["form", *scoring.OUTPUT_COLUMNS] and empty.empty


def test_score_frame_replaces_earlier_output_columns(registry: Registry) -> None:
    once = score_frame(_frame(registry), registry)
    twice = score_frame(once, registry)
    pd.testing.assert_frame_equal(once, twice)


def test_score_frame_needs_a_form_column(registry: Registry) -> None:
    with pytest.raises(MissingColumns, match="'form' column"):
        score_frame(pd.DataFrame({"PAININ9": [1]}), registry)


def test_score_csv_keeps_other_columns_and_cells_as_written(tmp_path: Path, registry: Registry) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "patient,form,PAININ9,PAININ22,PAININ31,PAININ34,visit\n"
        "007,pain_interference_sf4a_v1.0,3,3,3,3,NA\n"
        "008,pain_interference_sf4a_v1.0,5,4,5,,baseline\n"
        "009,pain_interference_sf4a_v1.0,5, three ,5,5,\n"
        "010,pain_interference_sf4a_v1.0,03,3.0,3,3,x\n", encoding="utf-8")
    target = tmp_path / "out.csv"
    returned = score_csv(source, target, registry)
    written = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert written["patient"].tolist() == ["007", "008", "009", "010"]
    assert written["visit"].tolist() == ["NA", "baseline", "", "x"]
    assert written["PAININ22"].tolist() == ["3", "4", " three ", "3.0"]
    assert written["t_score"].tolist() == ["61.2", "71.0", "", "61.2"]
    assert written["method"].tolist() == ["table", "pattern", "", "table"]
    assert written["note"][2] == "error: pain_interference_sf4a_v1.0: PAININ22='three' is not an allowed answer; " \
        "use a whole number 1 (Not at all), 2 (A little bit), 3 (Somewhat), 4 (Quite a bit), 5 (Very much), " \
        "or None if the item was skipped"
    assert returned["raw_score"].tolist()[:2] == [12, 14]
    assert score_csv(source, registry=registry)["t_score"].tolist()[:2] == [61.2, 71.0]


def test_score_parquet_gives_what_score_csv_gives(tmp_path: Path, registry: Registry) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("patient,form,PAININ9,PAININ22,PAININ31,PAININ34\n"
                   "007,pain_interference_sf4a_v1.0,3,3,3,3\n"
                   "008,pain_interference_sf4a_v1.0,5,4,5,\n"
                   "009,pain_interference_sf4a_v1.0,5,7,5,5\n"
                   "010,no_such_form,1,1,1,1\n", encoding="utf-8")
    numeric = pd.read_csv(csv, dtype={"patient": str})  # item columns as numbers, the blank as NaN
    numeric.to_parquet(tmp_path / "numbers.parquet")
    pd.read_csv(csv, dtype=str, keep_default_na=False).to_parquet(tmp_path / "text.parquet")
    expected = score_csv(csv, registry=registry)
    for name in ("numbers.parquet", "text.parquet"):
        scored = score_parquet(tmp_path / name, registry=registry)
        pd.testing.assert_frame_equal(scored[list(scoring.OUTPUT_COLUMNS)], expected[list(scoring.OUTPUT_COLUMNS)])
        assert scored["patient"].tolist() == ["007", "008", "009", "010"]


def test_score_parquet_takes_nullable_integers_and_rejects_text_answers(tmp_path: Path, registry: Registry) -> None:
    frame = pd.DataFrame({"form": ["depression_sf4a_v1.0"] * 3,
                          "EDDEP04": pd.array([5, None, 2], dtype="Int64"), "EDDEP06": ["5", "5", "often"],
                          "EDDEP29": [1, 1, 1], "EDDEP41": [1.0, 1.0, 1.0]})
    frame.to_parquet(tmp_path / "in.parquet")
    scored = score_parquet(tmp_path / "in.parquet", registry=registry)
    assert scored["method"].tolist()[:2] == ["table", "pattern"] and scored["t_score"][0] == 62.2
    assert "EDDEP06='often'" in scored["note"][2] and pd.isna(scored["t_score"][2])
    assert scored["EDDEP06"].tolist() == ["5", "5", "often"]  # cells come back as stored


def test_score_file_picks_the_format_from_each_name(tmp_path: Path, registry: Registry) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("form,EDDEP04,EDDEP06,EDDEP29,EDDEP41\ndepression_sf4a_v1.0,5,5,1,1\n", encoding="utf-8")
    score_file(csv, tmp_path / "out.PARQUET", registry)
    assert pd.read_parquet(tmp_path / "out.PARQUET")["t_score"].tolist() == [62.2]
    score_file(tmp_path / "out.PARQUET", tmp_path / "again.csv", registry)
    assert pd.read_csv(tmp_path / "again.csv")["t_score"].tolist() == [62.2]


@pytest.mark.parametrize("content", [b"", b"form,EDDEP04\ndepression_sf4a_v1.0,1\n", b"PAR1\x00\x01garbage"],
                         ids=["empty", "a CSV named .parquet", "damaged"])
def test_a_file_that_is_not_parquet_gets_a_clear_error(tmp_path: Path, registry: Registry, content: bytes) -> None:
    path = tmp_path / "responses.parquet"
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=r"responses.parquet cannot be read as Parquet .*'form' column"):
        score_file(path, registry=registry)
