"""The clinic record in storage: planned series logged day by day, vitals, adverse events, corrections and
voids with their trail, cancellations, dispositions, and the migration that adds them."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

import pandas as pd
import pytest

from outcomes import storage
from outcomes.errors import DuplicateRecord, NotFound, ValidationError

TODAY = date(2025, 6, 2)


def enrol(db, pid="P001", **kwargs):
    storage.add_patient(db, patient_id=pid, entered_by="dr.lee", today=TODAY, **kwargs)


def plan(db, pid="P001", first=TODAY, n=5, **kwargs):
    return storage.plan_series(db, patient_id=pid, first_infusion=first, planned_infusions=n, entered_by="dr.lee",
                               today=TODAY, **kwargs)


def infuse(db, series_id, on, events=(), today=None, **vitals):
    return storage.add_infusion(db, series_id=series_id, infused_on=on, dose_mg_per_kg=0.5, duration_min=40,
                                adverse_events=list(events), entered_by="dr.lee", today=today or on, **vitals)


def one_series(db, **kwargs):
    return storage.load_series(db, every=True, **kwargs).iloc[0]


# Planned series, logged day by day -------------------------------------------------------------------


def test_a_planned_series_counts_only_once_an_infusion_is_given(db):
    enrol(db)
    sid = plan(db, first=TODAY + timedelta(days=7), dose_mg_per_kg=0.5)
    s = one_series(db)
    assert (s["state"], s["planned_first"], s["planned_last"], s["planned_infusions"]) == (
        "planned", pd.Timestamp("2025-06-09"), pd.Timestamp("2025-06-13"), 5)
    assert storage.load_series(db).empty and storage.load_cohort_episodes(db).empty  # nothing given yet
    for day in range(9, 11):  # days 1 and 2 given
        infuse(db, sid, date(2025, 6, day))
    s = one_series(db)
    assert (s["state"], s["first_infusion"], s["last_infusion"], s["infusions"]) == (
        "given", pd.Timestamp("2025-06-09"), pd.Timestamp("2025-06-10"), 2)
    assert s["planned_last"] == pd.Timestamp("2025-06-13")  # the plan is kept
    episodes = storage.load_cohort_episodes(db)
    assert episodes["last_infusion"].tolist() == [pd.Timestamp("2025-06-10")]  # the last one given


def test_plan_validation_names_every_problem_and_changes_nothing(db, dump):
    enrol(db)
    before = dump(db)
    with pytest.raises(ValidationError) as info:
        plan(db, first=TODAY + timedelta(days=400), n=0, dose_mg_per_kg=5)
    text = str(info.value)
    assert "more than 366 days ahead" in text and "planned_infusions" in text and "dose_mg_per_kg" in text
    with pytest.raises(ValidationError, match="planned_last 2025-06-01 is before"):
        plan(db, planned_last=date(2025, 6, 1))
    with pytest.raises(NotFound):
        plan(db, pid="P404")
    assert dump(db) == before


def test_infusions_of_a_planned_series(db):
    enrol(db)
    sid = plan(db)
    with pytest.raises(ValidationError, match="in the future"):
        infuse(db, sid, TODAY + timedelta(days=1), today=TODAY)
    with pytest.raises(ValidationError, match="before the series' first infusion"):
        infuse(db, sid, TODAY - timedelta(days=1))
    infuse(db, sid, TODAY)
    with pytest.raises(DuplicateRecord, match="already has an infusion on 2025-06-02"):
        infuse(db, sid, TODAY)
    # A delayed infusion after the planned end is still recorded, and the series follows it.
    infuse(db, sid, TODAY + timedelta(days=6))
    assert one_series(db)["last_infusion"] == pd.Timestamp("2025-06-08")


def test_a_recorded_series_keeps_its_range_rule(db):
    enrol(db)
    sid = storage.add_series(db, patient_id="P001", first_infusion="2025-05-05", last_infusion="2025-05-09",
                             infusions=5, entered_by="dr.lee", today=TODAY)
    with pytest.raises(ValidationError, match="outside the series"):
        infuse(db, sid, date(2025, 5, 12))
    assert one_series(db)["state"] == "given" and not one_series(db)["by_day"]


# Vitals and adverse events -------------------------------------------------------------------------------


def test_vitals_are_stored_and_checked(db, dump):
    enrol(db)
    sid = plan(db)
    infuse(db, sid, TODAY, bp_systolic_before=128, bp_diastolic_before=82, bp_systolic_after=151,
           bp_diastolic_after=95, heart_rate=88, sedation_rass=-1)
    row = storage.load_infusions(db).iloc[0]
    assert [row[v] for v in storage.VITALS] == [128, 82, 151, 95, 88, -1]
    before = dump(db)
    with pytest.raises(ValidationError) as info:
        infuse(db, sid, TODAY + timedelta(days=1), today=TODAY + timedelta(days=1), bp_systolic_before=80,
               bp_diastolic_before=120, bp_systolic_after=150, heart_rate=400, sedation_rass=7, spo2=97)
    problems = info.value.problems
    assert any("blood pressure before 80/120: the diastolic value must be lower" in p for p in problems)
    assert any("blood pressure after: give both systolic and diastolic" in p for p in problems)
    assert any(p.startswith("heart_rate must be a whole number from 20 to 250") for p in problems)
    assert any(p.startswith("sedation_rass must be a whole number from -5 to 4") for p in problems)
    assert any("unknown infusion field(s) spo2" in p for p in problems)
    assert dump(db) == before


def test_adverse_events_with_action_and_a_description_for_other(db):
    enrol(db)
    sid = plan(db)
    with pytest.raises(ValidationError, match='kind "other" needs a short description'):
        infuse(db, sid, TODAY, [{"kind": "other", "severity": "mild"}])
    with pytest.raises(ValidationError, match="action must be one of none, slowed, stopped, medication"):
        infuse(db, sid, TODAY, [{"kind": "nausea", "severity": "mild", "action": "ignored"}])
    infuse(db, sid, TODAY, [{"kind": "nausea", "severity": "moderate", "action": "medication"},
                            {"kind": "other", "severity": "mild", "action": "slowed", "description": "headache"}])
    events = storage.load_adverse_events(db)
    assert events[["kind", "severity", "action", "description"]].values.tolist() == [
        ["nausea", "moderate", "medication", None], ["other", "mild", "slowed", "headache"]]


# Corrections with a trail ------------------------------------------------------------------------------


def test_correcting_demographics_keeps_the_old_values_in_the_trail(db, dump):
    enrol(db, diagnosis="CRPS", birth_year=1970)
    before = dump(db)
    for changes, reason, message in (({"sex": "Q"}, "typo", "unknown sex code"),
                                     ({"diagnosis": "CRPS"}, "typo", "nothing was changed"),
                                     ({"diagnosis": "Fibromyalgia"}, " ", "reason is required"),
                                     ({"patient_id": "P002"}, "typo", "patient_id cannot be corrected")):
        with pytest.raises(ValidationError, match=message):
            storage.correct_record(db, "patient", "P001", changes=changes, reason=reason, by="dr.lee", today=TODAY)
    assert dump(db) == before
    storage.correct_record(db, "patient", "P001", changes={"birth_year": 1971, "diagnosis": None},
                           reason="chart says 1971", by="dr.kim", today=TODAY)
    p = storage.load_patients(db).iloc[0]
    assert p["birth_year"] == 1971 and p["diagnosis"] is None
    trail = storage.load_record_changes(db, "P001")
    assert trail[["actor", "record", "action", "reason"]].values.tolist() == [
        ["dr.kim", "patient", "correct", "chart says 1971"]]
    assert trail["before"][0] == {"birth_year": 1970, "diagnosis": "CRPS"}
    assert trail["after"][0] == {"birth_year": 1971, "diagnosis": None}


def test_correcting_a_planned_series_corrects_its_plan(db):
    enrol(db)
    sid = plan(db, dose_mg_per_kg=0.5)
    infuse(db, sid, TODAY)
    storage.correct_record(db, "series", sid, changes={"infusions": 3, "dose_mg_per_kg": 0.35}, reason="protocol",
                           by="dr.lee", today=TODAY)
    s = one_series(db)
    assert (s["planned_infusions"], s["infusions"], s["dose_mg_per_kg"]) == (3, 1, 0.35)  # given count kept
    assert storage.load_record_changes(db, "P001")["after"][0] == {"infusions": 3, "dose_mg_per_kg": 0.35}


def test_correcting_an_infusion_and_an_adverse_event(db):
    enrol(db)
    sid = plan(db)
    iid = infuse(db, sid, TODAY, [{"kind": "nausea", "severity": "mild"}])
    infuse(db, sid, TODAY + timedelta(days=1), today=TODAY + timedelta(days=1))
    with pytest.raises(ValidationError, match="already has an infusion on 2025-06-03"):
        storage.correct_record(db, "infusion", iid, changes={"infused_on": "2025-06-03"}, reason="x", by="dr.lee",
                               today=TODAY + timedelta(days=1))
    storage.correct_record(db, "infusion", iid, changes={"heart_rate": 90}, reason="late entry", by="dr.lee",
                           today=TODAY)
    event = int(storage.load_adverse_events(db)["event_id"][0])
    storage.correct_record(db, "adverse_event", event, changes={"severity": "severe", "action": "stopped"},
                           reason="worse than noted", by="dr.lee", today=TODAY)
    assert storage.load_infusions(db)["heart_rate"].tolist()[0] == 90
    assert storage.load_adverse_events(db)[["severity", "action"]].values.tolist() == [["severe", "stopped"]]
    assert storage.load_record_changes(db, "P001", record="adverse_event")["before"][0] == {
        "severity": "mild", "action": None}


def test_correcting_an_assessment_supersedes_it_and_keeps_the_old_row(db):
    enrol(db)
    old = storage.save_assessment(db, patient_id="P001", assessed_on="2025-05-01", domain="depression",
                                  t_score=62.0, se=3.0, method="imported", source="import", entered_by="import",
                                  today=TODAY)
    patient, new = storage.correct_record(db, "assessment", old, changes={"assessed_on": "2025-05-02",
                                                                           "t_score": 61.0},
                                          reason="wrong column", by="dr.lee", today=TODAY)
    assert patient == "P001" and new != old
    active = storage.load_assessments(db)
    assert active[["assessment_id", "assessed_on", "t_score", "se"]].values.tolist() == [
        [new, pd.Timestamp("2025-05-02"), 61.0, 3.0]]
    every = storage.load_assessments(db, include_superseded=True).set_index("assessment_id")
    assert every.loc[old, "superseded_by"] == new and every.loc[old, "t_score"] == 62.0
    with pytest.raises(ValidationError, match="voided or replaced"):
        storage.correct_record(db, "assessment", old, changes={"t_score": 60}, reason="x", by="dr.lee", today=TODAY)


def test_a_scored_questionnaire_is_voided_not_retyped(db):
    enrol(db)
    a = storage.save_assessment(db, patient_id="P001", assessed_on="2025-05-01", domain="depression",
                                t_score=62.0, se=3.0, form="depression_sf6a_v1.0", raw_score=20, n_answered=6,
                                method="table", source="patient", entered_by="pat", today=TODAY)
    with pytest.raises(ValidationError, match="comes from its answers"):
        storage.correct_record(db, "assessment", a, changes={"t_score": 50.0}, reason="x", by="dr.lee",
                               today=TODAY)
    # The date may be corrected (a paper form typed under the wrong day).
    storage.correct_record(db, "assessment", a, changes={"assessed_on": "2025-04-30"}, reason="date on form",
                           by="dr.lee", today=TODAY)
    assert storage.load_assessments(db)["assessed_on"].tolist() == [pd.Timestamp("2025-04-30")]


# Voids and cancellations -------------------------------------------------------------------------------


def test_a_voided_assessment_leaves_every_read_of_active_scores(db):
    enrol(db)
    storage.add_series(db, patient_id="P001", first_infusion="2025-04-01", last_infusion="2025-04-05",
                       infusions=5, entered_by="dr.lee", today=TODAY)
    keep = storage.save_assessment(db, patient_id="P001", assessed_on="2025-03-20", domain="depression",
                                   t_score=65.0, method="imported", source="import", entered_by="i", today=TODAY)
    wrong = storage.save_assessment(db, patient_id="P001", assessed_on="2025-05-01", domain="depression",
                                    t_score=75.0, method="imported", source="import", entered_by="i", today=TODAY)
    with pytest.raises(ValidationError, match="reason is required"):
        storage.void_record(db, "assessment", wrong, reason="", by="dr.lee")
    storage.void_record(db, "assessment", wrong, reason="another patient's form", by="dr.lee")
    assert storage.load_assessments(db)["assessment_id"].tolist() == [keep]
    assert storage.load_cohort_scores(db)["t_score"].tolist() == [65.0]
    assert storage.load_latest_scores(db)["t_score"].tolist() == [65.0]
    assert storage.load_alert_candidates(db)["assessment_id"].tolist() == [keep]
    voided = storage.load_assessments(db, include_superseded=True).set_index("assessment_id").loc[wrong]
    assert voided["superseded_by"] == wrong and voided["voided_by"] == "dr.lee"
    assert voided["void_reason"] == "another patient's form"
    with pytest.raises(ValidationError, match="already voided by dr.lee"):
        storage.void_record(db, "assessment", wrong, reason="again", by="dr.lee")
    # Its day is free for the right entry.
    storage.save_assessment(db, patient_id="P001", assessed_on="2025-05-01", domain="depression", t_score=60.0,
                            method="imported", source="import", entered_by="i", today=TODAY)


def test_voiding_a_series_takes_its_infusions_and_events_out_of_the_record_counts(db):
    enrol(db)
    sid = plan(db, first=date(2025, 5, 1))
    iid = infuse(db, sid, date(2025, 5, 1), [{"kind": "nausea", "severity": "mild"}])
    infuse(db, sid, date(2025, 5, 2), [{"kind": "dissociation", "severity": "mild"}])
    storage.void_record(db, "infusion", iid, reason="logged twice", by="dr.lee")
    s = one_series(db)
    assert (s["first_infusion"], s["infusions"]) == (pd.Timestamp("2025-05-02"), 1)
    assert storage.load_adverse_events(db)["kind"].tolist() == ["dissociation"]
    assert storage.load_adverse_events(db, every=True)["voided"].tolist() == [True, False]
    storage.void_record(db, "series", sid, reason="wrong patient", by="dr.lee")
    assert storage.load_series(db).empty and storage.load_infusions(db).empty
    assert storage.load_adverse_events(db).empty and storage.load_cohort_episodes(db).empty
    assert bool(one_series(db)["voided"]) and len(storage.load_infusions(db, every=True)) == 2
    with pytest.raises(ValidationError, match="series was voided"):
        infuse(db, sid, date(2025, 5, 3))
    with pytest.raises(ValidationError, match="a patient cannot be voided"):
        storage.void_record(db, "patient", "P001", reason="x", by="dr.lee")
    with pytest.raises(NotFound):
        storage.void_record(db, "infusion", 999, reason="x", by="dr.lee")


def test_only_a_planned_series_can_be_cancelled(db):
    enrol(db)
    planned, started = plan(db, first=date(2025, 6, 20)), plan(db, first=date(2025, 5, 1))
    infuse(db, started, date(2025, 5, 1))
    with pytest.raises(ValidationError, match="this one has infusions given; correct its planned number"):
        storage.cancel_series(db, started, reason="stopped", by="dr.lee")
    with pytest.raises(ValidationError, match="reason is required"):
        storage.cancel_series(db, planned, reason=None, by="dr.lee")
    storage.cancel_series(db, planned, reason="insurance declined", by="dr.lee")
    row = storage.load_series(db, every=True).set_index("series_id").loc[planned]
    assert (row["state"], row["cancel_reason"]) == ("cancelled", "insurance declined")
    with pytest.raises(ValidationError, match="already cancelled"):
        storage.cancel_series(db, planned, reason="again", by="dr.lee")
    with pytest.raises(ValidationError, match="was cancelled"):
        infuse(db, planned, date(2025, 6, 20), today=date(2025, 6, 20))


# Disposition -----------------------------------------------------------------------------------------


def test_disposition_is_dated_and_kept_in_the_trail(db, dump):
    enrol(db)
    before = dump(db)
    with pytest.raises(ValidationError) as info:
        storage.set_disposition(db, "P001", disposition="withdrawn", on=TODAY + timedelta(days=1), by="dr.lee",
                                today=TODAY)
    assert "in the future" in str(info.value) and "reason is required for a withdrawal" in str(info.value)
    with pytest.raises(ValidationError, match="must be one of active, discharged"):
        storage.set_disposition(db, "P001", disposition="gone", on=TODAY, by="dr.lee", today=TODAY)
    with pytest.raises(ValidationError, match="already active"):
        storage.set_disposition(db, "P001", disposition="active", on=TODAY, by="dr.lee", today=TODAY)
    assert dump(db) == before
    storage.set_disposition(db, "P001", disposition="withdrawn", on=TODAY, reason="moved away", by="dr.lee",
                            today=TODAY)
    p = storage.load_patient(db, "P001").iloc[0]
    assert (p["disposition"], p["disposition_on"], p["disposition_reason"], p["disposition_by"]) == (
        "withdrawn", pd.Timestamp(TODAY), "moved away", "dr.lee")
    with pytest.raises(ValidationError, match="reason is required to make the patient active again"):
        storage.set_disposition(db, "P001", disposition="active", on=TODAY, by="dr.lee", today=TODAY)
    storage.set_disposition(db, "P001", disposition="active", on=TODAY, reason="returned", by="dr.lee", today=TODAY)
    trail = storage.load_record_changes(db, "P001")
    assert trail["action"].tolist() == ["disposition", "disposition"]
    assert trail["before"][1]["disposition"] == "withdrawn" and trail["after"][1]["disposition"] == "active"


# Nothing is deleted --------------------------------------------------------------------------------------


def test_clinical_rows_and_the_trail_cannot_be_deleted_or_rewritten(db, tmp_path):
    enrol(db)
    sid = plan(db)
    infuse(db, sid, TODAY, [{"kind": "nausea", "severity": "mild"}])
    storage.save_assessment(db, patient_id="P001", assessed_on=TODAY, domain="depression", t_score=60,
                            method="imported", source="import", entered_by="i", today=TODAY)
    storage.correct_record(db, "patient", "P001", changes={"diagnosis": "CRPS"}, reason="x", by="dr.lee",
                           today=TODAY)
    path = tmp_path / "copy.db"
    storage.backup(db, path)  # for a plain connection below, before this one's failed statements
    for table in ("patients", "series", "infusions", "adverse_events", "assessments", "record_changes"):
        with pytest.raises(sqlite3.IntegrityError, match="cannot be deleted|are kept"):
            db.conn.execute(f"DELETE FROM {table}")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.conn.execute("UPDATE record_changes SET reason = 'rewritten'")
    # INSERT OR REPLACE would delete the old row without firing the DELETE triggers: refused too, also on a
    # plain connection (sqlite-utils turns recursive_triggers on for its own).
    plain = sqlite3.connect(path)
    for table, row in (("patients", "(id, patient_id, entered_by, entered_at) VALUES (1, 'P009', 'x', 'x')"),
                       ("record_changes", "(id, at, actor, patient_ref, record, record_id, action, before, after, "
                                          "reason) VALUES (1, 'x', 'x', 1, 'patient', 1, 'correct', '{}', '{}', 'x')")):
        with pytest.raises(sqlite3.IntegrityError, match="cannot be replaced"):
            plain.execute(f"INSERT OR REPLACE INTO {table} {row}")


def test_migration_keeps_a_database_built_before_it(tmp_path):
    """A database at migration 0003 (today's schema before this change) migrates with every row kept."""
    path = tmp_path / "old.db"
    old = storage.open_db(path)
    storage.MIGRATIONS.apply(old, stop_before="0004_clinic_record")
    old["patients"].insert({"patient_id": "P001", "entered_by": "x", "entered_at": "2025-01-01T00:00:00+00:00"})
    old["series"].insert({"patient_ref": 1, "first_infusion": "2025-01-06", "last_infusion": "2025-01-10",
                          "infusions": 5, "entered_by": "x", "entered_at": "2025-01-01T00:00:00+00:00"})
    old["infusions"].insert({"series_ref": 1, "infused_on": "2025-01-06", "dose_mg_per_kg": 0.5, "duration_min": 40,
                             "entered_by": "x", "entered_at": "2025-01-01T00:00:00+00:00"})
    old["adverse_events"].insert({"infusion_ref": 1, "kind": "nausea", "severity": "mild"})
    old["assessments"].insert({"patient_ref": 1, "assessed_on": "2025-01-05", "domain": "depression",
                               "t_score": 60.0, "method": "imported", "source": "import", "entered_by": "x",
                               "entered_at": "2025-01-01T00:00:00+00:00"})
    old.close()
    db = storage.connect(path)
    assert [m.name for m in storage.MIGRATIONS.pending(db)] == []
    s = one_series(db)
    assert (s["state"], bool(s["by_day"]), s["infusions"]) == ("given", False, 5)
    assert storage.load_patients(db)["disposition"].tolist() == ["active"]
    assert len(storage.load_infusions(db)) == 1 and storage.load_adverse_events(db)["action"].isna().all()
    assert storage.load_assessments(db)["t_score"].tolist() == [60.0]
    assert len(storage.load_cohort_episodes(db)) == 1
