"""The clinic record as clinicians keep it: plans, corrections, voids and dispositions through the service
layer (audited, owner-checked), the one alert path, and the roster's Today list."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from outcomes import auth, clinic, storage
from outcomes.errors import NotFound, ValidationError
from outcomes.settings import load_settings

pytestmark = pytest.mark.usefixtures("fast_hasher")

NOW = datetime(2025, 6, 4, 9, 0, tzinfo=UTC)
TODAY = date(2025, 6, 4)  # a Wednesday: this week runs from Monday 2 to Sunday 8 June
SETTINGS = load_settings({})


@pytest.fixture
def lee(db):
    admin = auth.create_first_admin(db, "root.admin", "correct horse battery", now=NOW)
    return auth.create_user(db, admin, username="dr.lee", role="clinician", password="lee's long password",
                            now=NOW)


def enrol(db, lee, *pids):
    for pid in pids:
        clinic.enrol_patient(db, lee, patient_id=pid, today=TODAY, now=NOW, settings=SETTINGS)


def score(db, pid, on, t, domain="depression"):
    return storage.save_assessment(db, patient_id=pid, assessed_on=on, domain=domain, t_score=t,
                                   method="imported", source="import", entered_by="import", today=TODAY)


def test_every_change_is_audited_with_its_reason(db, lee):
    enrol(db, lee, "P001")
    sid = clinic.plan_series(db, lee, patient_id="P001", first_infusion=TODAY + timedelta(days=5),
                             planned_infusions=5, today=TODAY)
    clinic.correct_record(db, lee, patient_id="P001", record="series", record_id=sid,
                          changes={"dose_mg_per_kg": 0.4}, reason="weight-based", today=TODAY, now=NOW,
                          settings=SETTINGS)
    clinic.cancel_series(db, lee, patient_id="P001", series_id=sid, reason="patient unwell")
    clinic.set_disposition(db, lee, patient_id="P001", disposition="lost_to_follow_up", on=TODAY, today=TODAY)
    log = storage.load_audit_log(db, patient_id="P001")
    actions = log["action"].tolist()
    assert {"plan_series", "correct_record", "cancel_series", "set_disposition"} <= set(actions)
    correct = json.loads(log[log["action"] == "correct_record"].iloc[0]["details"])
    assert correct["reason"] == "weight-based" and correct["fields"] == ["dose_mg_per_kg"]
    history = clinic.record_history(db, lee, "P001")
    assert history["summary"].tolist() == [
        "dose (mg/kg): (empty) → 0.4",
        "status: planned → cancelled",
        "disposition: active → lost to follow up, since: (empty) → 2025-06-04, reason: (empty) → (empty)"]
    assert history["reason"].tolist() == ["weight-based", "patient unwell", "lost to follow up"]


def test_a_record_of_another_patient_cannot_be_changed_through_this_one(db, lee, dump):
    enrol(db, lee, "P001", "P002")
    theirs = score(db, "P002", "2025-06-01", 60.0)
    before = dump(db)
    with pytest.raises(NotFound, match="Patient 'P001' has no assessment"):
        clinic.void_record(db, lee, patient_id="P001", record="assessment", record_id=theirs, reason="x")
    with pytest.raises(NotFound):
        clinic.correct_record(db, lee, patient_id="P001", record="assessment", record_id=theirs,
                              changes={"t_score": 50}, reason="x", today=TODAY, now=NOW, settings=SETTINGS)
    assert dump(db) == before


def test_a_corrected_assessment_goes_through_the_alert_rules(db, lee):
    enrol(db, lee, "P001")
    wrong = score(db, "P001", "2025-06-01", 55.0)
    new = clinic.correct_record(db, lee, patient_id="P001", record="assessment", record_id=wrong,
                                changes={"t_score": 72.0}, reason="typed 55 for 72", today=TODAY, now=NOW,
                                settings=SETTINGS)
    alerts = storage.load_alerts(db, patient_id="P001")
    assert alerts[["assessment_id", "priority"]].values.tolist() == [[new, "high"]]


def test_raise_score_alerts_latest_only_checks_each_patients_latest_score(db, lee):
    enrol(db, lee, "P001", "P002")
    ids = [score(db, "P001", "2025-01-10", 72.0), score(db, "P001", "2025-02-10", 71.0),
           score(db, "P002", "2025-03-01", 50.0), score(db, "P002", "2025-03-08", 58.0)]
    assert clinic.raise_score_alerts(db, ids, now=NOW, settings=SETTINGS, latest_only=True) == 2
    alerts = storage.load_alerts(db).set_index("patient_id")
    assert alerts.loc["P001", "assessment_id"] == ids[1] and alerts.loc["P001", "priority"] == "high"
    # P002 worsened by 8 T points since the previous score: a routine alert naming the previous score.
    assert alerts.loc["P002", "priority"] == "routine" and "since the previous score (50.0 on 2025-03-01)" in (
        alerts.loc["P002", "reason"])


# The roster's Today list ---------------------------------------------------------------------------------


@pytest.fixture
def clinic_day(db, lee):
    """A clinic on Wednesday 4 June 2025, one patient per situation."""
    enrol(db, lee, "A-today", "B-week", "C-baseline", "D-alert", "E-overdue", "F-done", "G-old", "H-gone",
          "I-none")
    day1 = clinic.plan_series(db, lee, patient_id="A-today", first_infusion="2025-06-03", planned_infusions=5,
                              today=TODAY)
    clinic.log_infusion(db, lee, patient_id="A-today", series_id=day1, infused_on="2025-06-03",
                        dose_mg_per_kg=0.5, duration_min=40, today=TODAY)
    clinic.plan_series(db, lee, patient_id="B-week", first_infusion="2025-06-07", planned_infusions=5, today=TODAY)
    clinic.plan_series(db, lee, patient_id="C-baseline", first_infusion="2025-06-20", planned_infusions=5,
                       today=TODAY)
    for pid, first in (("D-alert", "2025-05-01"), ("E-overdue", "2025-04-01"), ("F-done", "2025-04-01"),
                       ("G-old", "2024-01-01"), ("H-gone", "2025-04-01")):
        last = (date.fromisoformat(first) + timedelta(days=4)).isoformat()
        clinic.log_series(db, lee, patient_id=pid, first_infusion=first, last_infusion=last, infusions=5,
                          today=TODAY)
    score(db, "D-alert", "2025-06-03", 74.0)
    clinic.raise_score_alerts(db, None, now=NOW, settings=SETTINGS)
    score(db, "E-overdue", "2025-05-20", 60.0)  # due 27 May, overdue from 31 May
    score(db, "F-done", "2025-06-01", 60.0)
    score(db, "G-old", "2024-03-01", 60.0)  # long past the six-month follow-up
    score(db, "H-gone", "2025-05-01", 60.0)
    clinic.set_disposition(db, lee, patient_id="H-gone", disposition="withdrawn", on=TODAY, reason="moved",
                           today=TODAY)
    return clinic.roster(db, lee, today=TODAY, settings=SETTINGS)


def test_the_roster_knows_who_is_in_a_series_and_where_each_follow_up_stands(clinic_day):
    rows = clinic_day.set_index("patient_id")
    assert rows.loc["A-today", "series_status"] == "In series (day 2 of 5)"
    assert rows.loc["B-week", "series_status"] == "Planned from 07 Jun 2025"
    assert rows["in_series_today"][lambda x: x].index.tolist() == ["A-today"]
    assert sorted(rows["in_series_this_week"][lambda x: x].index) == ["A-today", "B-week"]
    # A-today's baseline closed undone at its first infusion yesterday; B-week's fell due today (planned today,
    # less than 7 days ahead); C-baseline's falls due 7 days before 20 June. E-overdue's week 8 fell due on 31 May.
    assert rows["followup"].to_dict() == {
        "A-today": "missed", "B-week": "due", "C-baseline": "upcoming", "D-alert": "done", "E-overdue": "overdue",
        "F-done": "done", "G-old": "complete", "H-gone": "inactive", "I-none": "no series"}
    # Only active patients in follow-up can be overdue: not the one past six months, nor the withdrawn one.
    assert rows["overdue"][lambda x: x].index.tolist() == ["E-overdue"]
    assert rows["on_call_list"][lambda x: x].index.tolist() == ["E-overdue"]
    assert rows.loc["E-overdue", "next_due"] == pd.Timestamp("2025-05-31")
    assert rows.loc["F-done", "next_due"] == pd.Timestamp("2025-06-07")
    assert rows.loc["C-baseline", "next_due"] == pd.Timestamp("2025-06-13")  # the baseline falls due then
    assert rows.loc["A-today", "next_due"] == pd.Timestamp("2025-06-07")  # end of series, as planned
    assert rows["baseline_due"][lambda x: x].index.tolist() == ["B-week"]
    assert pd.isna(rows.loc["G-old", "next_due"]) and pd.isna(rows.loc["H-gone", "next_due"])


def test_today_list_orders_the_clinicians_morning(clinic_day):
    today = clinic.today_list(clinic_day)
    assert today["patient_id"].tolist() == ["A-today", "B-week", "D-alert", "E-overdue"]
    assert today["today"].tolist() == ["In series today", "In series this week · Baseline due by 07 Jun",
                                       "Open alert (high)", "Week 8 overdue since 31 May · call"]


def test_a_baseline_already_given_is_not_due(db, lee):
    enrol(db, lee, "P001")
    clinic.plan_series(db, lee, patient_id="P001", first_infusion="2025-06-20", planned_infusions=5, today=TODAY)
    score(db, "P001", "2025-05-25", 60.0)  # inside the 30-day baseline window of 20 June
    row = clinic.roster(db, lee, today=TODAY, settings=SETTINGS).iloc[0]
    assert not row["baseline_due"] and pd.isna(row["today_rank"])


def test_a_cancelled_series_is_not_on_the_roster(db, lee):
    enrol(db, lee, "P001")
    sid = clinic.plan_series(db, lee, patient_id="P001", first_infusion="2025-06-05", planned_infusions=5,
                             today=TODAY)
    clinic.cancel_series(db, lee, patient_id="P001", series_id=sid, reason="insurance")
    row = clinic.roster(db, lee, today=TODAY, settings=SETTINGS).iloc[0]
    assert (row["series_status"], row["followup"], bool(row["baseline_due"])) == ("No series", "no series", False)


def test_disposition_needs_a_reason_for_withdrawal(db, lee):
    enrol(db, lee, "P001")
    with pytest.raises(ValidationError, match="reason is required for a withdrawal"):
        clinic.set_disposition(db, lee, patient_id="P001", disposition="withdrawn", on=TODAY, today=TODAY)


def test_a_booster_long_after_the_last_check_in_is_due_from_its_first_day_not_overdue(db, lee):
    enrol(db, lee, "P001")
    clinic.log_series(db, lee, patient_id="P001", first_infusion="2024-01-08", last_infusion="2024-01-12",
                      infusions=5, today=TODAY)
    score(db, "P001", "2024-02-01", 60.0)
    booster = clinic.plan_series(db, lee, patient_id="P001", first_infusion="2025-06-03", planned_infusions=1,
                                 today=TODAY)
    clinic.log_infusion(db, lee, patient_id="P001", series_id=booster, infused_on="2025-06-03",
                        dose_mg_per_kg=0.5, duration_min=40, today=TODAY)
    row = clinic.roster(db, lee, today=TODAY, settings=SETTINGS).iloc[0]
    assert (row["followup"], row["followup_text"], row["next_due"]) == (
        "due", "End of series due since 03 Jun", pd.Timestamp("2025-06-03"))  # not "overdue since February 2024"
    assert not row["overdue"]
