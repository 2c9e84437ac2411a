from datetime import date

import numpy as np
import pandas as pd
import pytest

from outcomes import storage, synthetic

END = date(2026, 11, 1)


@pytest.fixture(scope="module")
def cohort():
    return synthetic.generate_cohort(1034, seed=2025, end=END)


def test_same_seed_same_cohort(cohort):
    again = synthetic.generate_cohort(1034, seed=2025, end=END)
    for name in ("patients", "series", "infusions", "assessments"):
        pd.testing.assert_frame_equal(getattr(cohort, name), getattr(again, name))


def test_another_seed_another_cohort(cohort):
    other = synthetic.generate_cohort(1034, seed=7, end=END)
    assert not cohort.assessments["t_score"].equals(other.assessments["t_score"])


def test_shape_of_the_registry_cohort(cohort):
    p, s = cohort.patients, cohort.series
    assert len(p) == 1034 and p["patient_id"].str.startswith("DEMO-").all()
    age = END.year - p["birth_year"]
    assert 47 < age.mean() < 54
    assert 0.68 < (p["sex"] == "F").mean() < 0.76
    first = s.sort_values("first_infusion").groupby("patient_id").head(1)
    assert 0.82 < (first["infusions"] == 5).mean() < 0.90           # 86.1 % completed all five
    assert set(s["dose_mg_per_kg"]) == {0.5}
    assert (s["last_infusion"] - s["first_infusion"]).dt.days.eq(s["infusions"] - 1).all()
    assert 0.1 < (s.groupby("patient_id").size() > 1).mean() < 0.3   # some repeat series
    assert len(cohort.infusions) == s["infusions"].sum()


def test_baseline_means_are_moderately_impaired(cohort):
    a, s = cohort.assessments, cohort.series
    first = s.groupby("patient_id")["first_infusion"].min().rename("F")
    a = a.join(first, on="patient_id")
    pre = a[(a["assessed_on"] <= a["F"]) & (a["assessed_on"] >= a["F"] - pd.Timedelta(days=30))]
    means = pre.groupby("domain")["t_score"].mean()
    assert abs(means["pain_interference"] - 66) < 2
    assert abs(means["depression"] - 61) < 2
    assert abs(means["physical_function"] - 36) < 2


def test_scores_are_real_scores(cohort):
    a = cohort.assessments
    assert a["t_score"].notna().all() and a["se"].gt(0).all()
    assert set(a["method"]) == {"table", "pattern"}           # skipped items are pattern-scored
    assert (a["assessed_on"] <= pd.Timestamp(END)).all()
    assert set(a["form"]) == set(synthetic.FORMS.values())
    first = a.iloc[0]
    assert set(first["responses"]) <= {"PAININ9", "PAININ22", "PAININ31", "PAININ34", "PAININ12", "PAININ36",
                                      "EDDEP04", "EDDEP06", "EDDEP29", "EDDEP41", "EDDEP22", "EDDEP36",
                                      "PFA11", "PFA21", "PFA23", "PFA53", "PFC12", "PFB1"} or first["responses"]


def test_written_cohort_is_flagged_synthetic(cohort):
    db = storage.connect(":memory:")
    synthetic.write_cohort(db, synthetic.generate_cohort(30, seed=1, end=END))
    summary = storage.database_summary(db)
    assert summary["synthetic"] is True and summary["patients"] == 30
    assert storage.load_assessments(db)["patient_id"].str.startswith("DEMO-").all()


def test_rejects_an_empty_cohort():
    with pytest.raises(ValueError):
        synthetic.generate_cohort(0, seed=1, end=END)


def test_demo_responder_rates_sit_inside_the_published_envelope(cohort):
    # Tankha et al. 2025: 20.3-46.4 % improved meaningfully depending on the measure, similar to 6 months.
    from outcomes import reports
    from outcomes.settings import load_settings

    db = storage.connect(":memory:")
    synthetic.write_cohort(db, cohort)
    settings = load_settings({})
    table = reports.responders(db, as_of=END, series="first", mcid=settings.mcid, settings=settings)
    assert len(table) == 12
    assert table["pct_observed"].between(20.0, 46.4).all(), table[["domain", "window", "pct_observed"]]
    by_domain = table.groupby("domain")["pct_observed"].mean()
    assert by_domain["pain_interference"] > by_domain["depression"] > by_domain["physical_function"]
    # Follow-up thins out, as in every registry: fewer observed at 6 months than at the end of the series.
    pi = table[table["domain"] == "pain_interference"].set_index("window")
    assert pi.loc["month_6", "n_observed"] < 0.6 * pi.loc["end_of_series", "n_observed"]
