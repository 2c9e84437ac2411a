"""The cohort reads of issue 6: compact dtypes, the same rows as the general reads, the covering index."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from outcomes import storage, synthetic
from outcomes.errors import ValidationError

DOMAINS = ("pain_interference", "depression", "physical_function")  # the domains these tests write

END = date(2026, 6, 30)


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "cohort.db"
    db = storage.connect(path)
    synthetic.write_cohort(db, synthetic.generate_cohort(120, seed=3, end=END))
    # A superseded score, a patient without scores or series, and one patient with a repeat series.
    pid = storage.load_patients(db)["patient_id"].iloc[5]
    day = storage.load_assessments(db, patient_id=pid)["assessed_on"].iloc[0].date()
    storage.save_assessment(db, patient_id=pid, assessed_on=day, domain="depression", t_score=55.5,
                            method="imported", source="clinician", entered_by="dr.lee", today=END)
    storage.add_patient(db, patient_id="AAA-no-scores", entered_by="dr.lee", today=END)
    db.close()
    db = storage.open_db(path)
    yield db
    db.close()


def test_cohort_scores_have_the_compact_dtype_contract(cohort_db):
    scores = storage.load_cohort_scores(cohort_db)
    assert tuple(scores.columns) == storage.COHORT_SCORE_COLUMNS
    assert isinstance(scores["patient_id"].dtype, pd.CategoricalDtype)
    assert list(scores["patient_id"].cat.categories) == sorted(storage.load_patients(cohort_db)["patient_id"])
    assert isinstance(scores["domain"].dtype, pd.CategoricalDtype)
    assert list(scores["domain"].cat.categories) == sorted(DOMAINS)
    assert scores["assessed_on"].dtype == "datetime64[ns]" and scores["t_score"].dtype == "float64"
    assert (scores["assessed_on"] == scores["assessed_on"].dt.normalize()).all()  # midnight
    assert scores.memory_usage(deep=True).sum() < 20 * len(scores) + 10_000  # about 18 bytes per score


def test_cohort_scores_are_the_active_scores_of_load_assessments(cohort_db):
    keys = ["patient_id", "domain", "assessed_on"]
    old = storage.load_assessments(cohort_db)[list(storage.COHORT_SCORE_COLUMNS)]
    new = storage.load_cohort_scores(cohort_db).astype({"patient_id": object, "domain": object})
    pd.testing.assert_frame_equal(old.sort_values(keys, ignore_index=True), new.sort_values(keys, ignore_index=True))
    assert 55.5 in set(new["t_score"])  # the superseding entry, not the superseded one


def test_cohort_scores_of_some_domains(cohort_db):
    new = storage.load_cohort_scores(cohort_db, domains=["physical_function", "depression"])
    assert list(new["domain"].cat.categories) == ["depression", "physical_function"]  # sorted
    old = storage.load_assessments(cohort_db, domains=["depression", "physical_function"])
    assert len(new) == len(old) and set(new["domain"]) == {"depression", "physical_function"}


def test_cohort_scores_read_only_the_covering_index(cohort_db):
    plan = cohort_db.conn.execute(
        "EXPLAIN QUERY PLAN SELECT patient_ref, unixepoch(assessed_on) / 86400, t_score FROM assessments "
        "INDEXED BY assessments_cohort WHERE domain = ? AND superseded_by IS NULL", ["depression"]).fetchall()
    assert any("COVERING INDEX assessments_cohort" in row[-1] for row in plan), plan


def test_cohort_episodes_are_series_with_patient_fields(cohort_db):
    new = storage.load_cohort_episodes(cohort_db)
    assert tuple(new.columns) == storage.COHORT_EPISODE_COLUMNS
    patients = storage.load_patients(cohort_db)[["patient_id", "diagnosis", "sex", "birth_year"]]
    old = storage.load_series(cohort_db).merge(patients, on="patient_id", how="left")[list(new.columns)]
    pd.testing.assert_frame_equal(old.astype({c: "int64" for c in ("series_id", "series_number", "infusions")}),
                                  new)
    assert new["first_infusion"].dtype == "datetime64[ns]" and new["birth_year"].dtype == "Int64"
    assert (new.groupby("patient_id")["series_number"].max() > 1).any()  # repeat series are numbered


def test_cohort_reads_of_an_empty_database():
    db = storage.connect(":memory:")
    scores, episodes = storage.load_cohort_scores(db), storage.load_cohort_episodes(db)
    assert scores.empty and tuple(scores.columns) == storage.COHORT_SCORE_COLUMNS
    assert scores["assessed_on"].dtype == "datetime64[ns]" and scores["t_score"].dtype == "float64"
    assert episodes.empty and tuple(episodes.columns) == storage.COHORT_EPISODE_COLUMNS
    assert episodes["first_infusion"].dtype == "datetime64[ns]"


def test_bulk_insert_still_checks_every_rule_and_stores_compact_responses():
    db = storage.connect(":memory:")
    cohort = synthetic.generate_cohort(5, seed=1, end=END)
    bad = cohort.assessments.copy()
    bad.at[bad.index[3], "responses"] = {"EDDEP04": 1.5}  # not a whole number: stored as given...
    bad.at[bad.index[4], "method"] = "guessed"  # ...but this breaks the CHECK on method
    with pytest.raises(ValidationError, match="CHECK constraint failed"):
        storage.insert_cohort(db, cohort.patients, cohort.series, cohort.infusions, bad, synthetic=True)
    assert storage.database_summary(db)["patients"] == 0
    storage.insert_cohort(db, cohort.patients, cohort.series, cohort.infusions, cohort.assessments, synthetic=True)
    text = db.conn.execute("SELECT responses FROM assessments ORDER BY id LIMIT 1").fetchone()[0]
    assert " " not in text and text.startswith('{"')
    first = cohort.assessments.iloc[0]
    got = storage.load_item_responses(db, first["patient_id"])
    assert dict(zip(got["item_id"][: len(first["responses"])], got["value"])) == first["responses"]
    # The pragma that deferred the checks is off again: a row-by-row write is checked at once.
    assert db.conn.execute("PRAGMA ignore_check_constraints").fetchone()[0] == 0


def test_dates_are_written_as_iso_days(tmp_path):
    frame = pd.DataFrame({"d": [pd.Timestamp("2025-01-02"), pd.NaT, pd.Timestamp("2024-12-31 23:00")],
                          "z": pd.to_datetime(["2025-01-02 23:30"] * 3).tz_localize("America/New_York")})
    rows = storage._values(frame, ["d", "z"], {"d", "z"}, extra=("x",))
    assert rows == [("2025-01-02", "2025-01-02", "x"), (None, "2025-01-02", "x"), ("2024-12-31", "2025-01-02", "x")]
    assert np.asarray(rows, dtype=object).shape == (3, 3)
