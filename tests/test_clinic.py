"""The clinic's daily work: role matrix, check-ins, drafts, alerts, due dates, roster, records, audit log."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from outcomes import auth, clinic, storage
from outcomes.errors import (
    CheckinExists,
    CheckinNotScorable,
    ConfigError,
    DuplicateRecord,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from outcomes.instruments import default_registry
from outcomes.settings import load_settings

pytestmark = pytest.mark.usefixtures("fast_hasher")

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TODAY = date(2025, 6, 2)
SETTINGS = load_settings({})
PI, DEP, PF = SETTINGS.checkin_forms
REGISTRY = default_registry()


def spread(form_key, raw):
    """Item answers of ``form_key`` summing to ``raw`` (as even as possible)."""
    items = REGISTRY.form(form_key).item_ids
    base, extra = divmod(raw, len(items))
    return {item: base + (i < extra) for i, item in enumerate(items)}


def answers(pi=None, dep=None, pf=None):
    return {key: spread(key, raw) for key, raw in ((PI, pi), (DEP, dep), (PF, pf)) if raw is not None}


class World:
    def __init__(self, db):
        self.db = db
        self.admin = auth.create_first_admin(db, "root.admin", "correct horse battery", now=NOW)
        self.clinician = auth.create_user(db, self.admin, username="dr.lee", role="clinician",
                                          password="lee's long password", now=NOW)
        self.qi = auth.create_user(db, self.admin, username="qi.ana", role="qi", password="ana's long password",
                                   now=NOW)
        for pid in ("P001", "P002"):
            storage.add_patient(db, patient_id=pid, diagnosis="CRPS", entered_by="dr.lee", today=TODAY)
        self.patient = auth.create_user(db, self.admin, username="pat.one", role="patient", patient_id="P001",
                                        password="pat's long password", now=NOW)
        self.other = auth.create_user(db, self.admin, username="pat.two", role="patient", patient_id="P002",
                                      password="two's long password", now=NOW)
        self.series_id = clinic.log_series(db, self.clinician, patient_id="P001", first_infusion="2025-05-05",
                                           last_infusion="2025-05-09", infusions=5, dose_mg_per_kg=0.5,
                                           today=TODAY)

    def submit(self, actor=None, patient_id="P001", on=TODAY, replace=False, **raws):
        actor = actor or self.clinician
        return clinic.submit_checkin(self.db, actor, patient_id=patient_id, answers=answers(**raws),
                                     assessed_on=on, today=TODAY, now=NOW, settings=SETTINGS, replace=replace)

    def without_login(self) -> str:
        if storage.load_patient(self.db, "P003").empty:
            storage.add_patient(self.db, patient_id="P003", entered_by="dr.lee", today=TODAY)
        return "P003"

    def denials(self):
        return storage.load_audit_log(self.db, action="access_denied")


@pytest.fixture
def w(db):
    return World(db)


# Role matrix: every function, every role -------------------------------------------------------------

ACTORS = ("admin", "clinician", "qi", "patient", "other")  # "patient" owns P001; "other" is P002's login

CALLS = {
    "enrol_patient": ({"clinician"}, lambda w, a: clinic.enrol_patient(
        w.db, a, patient_id=f"N-{a.username}", today=TODAY, now=NOW, settings=SETTINGS)),
    "issue_invitation": ({"clinician", "admin"}, lambda w, a: auth.issue_invitation(  # P003 has no login yet
        w.db, a, w.without_login(), now=NOW, settings=SETTINGS)),
    "log_series": ({"clinician"}, lambda w, a: clinic.log_series(
        w.db, a, patient_id="P001", first_infusion="2025-05-20", last_infusion="2025-05-24", infusions=5,
        today=TODAY)),
    "log_infusion": ({"clinician"}, lambda w, a: clinic.log_infusion(
        w.db, a, patient_id="P001", series_id=w.series_id, infused_on="2025-05-05", dose_mg_per_kg=0.5,
        duration_min=40, adverse_events=[{"kind": "nausea", "severity": "mild"}], today=TODAY)),
    "plan_series": ({"clinician"}, lambda w, a: clinic.plan_series(
        w.db, a, patient_id="P001", first_infusion="2025-06-20", planned_infusions=5, today=TODAY)),
    "cancel_series": ({"clinician"}, lambda w, a: clinic.cancel_series(
        w.db, a, patient_id="P001", series_id=storage.plan_series(
            w.db, patient_id="P001", first_infusion="2025-06-20", planned_infusions=5, entered_by="dr.lee",
            today=TODAY), reason="insurance declined")),
    "correct_record": ({"clinician"}, lambda w, a: clinic.correct_record(
        w.db, a, patient_id="P001", record="patient", changes={"diagnosis": "Fibromyalgia"}, reason="typo",
        today=TODAY, now=NOW, settings=SETTINGS)),
    "void_record": ({"clinician"}, lambda w, a: clinic.void_record(
        w.db, a, patient_id="P001", record="assessment",
        record_id=int(storage.load_assessments(w.db, patient_id="P001")["assessment_id"].iloc[0]),
        reason="entered for the wrong patient")),
    "set_disposition": ({"clinician"}, lambda w, a: clinic.set_disposition(
        w.db, a, patient_id="P001", disposition="discharged", on=TODAY, today=TODAY)),
    "record_history": ({"clinician"}, lambda w, a: clinic.record_history(w.db, a, "P001")),
    "submit_checkin": ({"clinician", "patient"}, lambda w, a: w.submit(a, replace=True, pi=18, dep=12, pf=20)),
    "save_draft": ({"clinician", "patient"}, lambda w, a: clinic.save_draft(
        w.db, a, "P001", {PI: {"PAININ9": 3}}, now=NOW)),
    "load_draft": ({"clinician", "patient"}, lambda w, a: clinic.load_draft(w.db, a, "P001")),
    "discard_draft": ({"clinician", "patient"}, lambda w, a: clinic.discard_draft(w.db, a, "P001")),
    "checkin_due": ({"clinician", "patient"}, lambda w, a: clinic.checkin_due(
        w.db, a, "P001", today=TODAY, settings=SETTINGS)),
    "patient_record": ({"clinician", "patient"}, lambda w, a: clinic.patient_record(
        w.db, a, "P001", settings=SETTINGS)),
    "patient_ids": ({"clinician"}, lambda w, a: clinic.patient_ids(w.db, a)),
    "roster": ({"clinician"}, lambda w, a: clinic.roster(w.db, a, today=TODAY, settings=SETTINGS)),
    "open_alerts": ({"clinician"}, lambda w, a: clinic.open_alerts(w.db, a)),
    "acknowledge_alert": ({"clinician"}, lambda w, a: clinic.acknowledge_alert(w.db, a, 1, now=NOW)),
    "read_audit_log": ({"admin"}, lambda w, a: clinic.read_audit_log(w.db, a)),
    "export_deidentified": ({"clinician", "qi", "admin"}, lambda w, a: clinic.record_export(
        w.db, a, what="responders.csv", rows=3, deidentified=True)),
    "export_identified": ({"clinician", "admin", "patient"}, lambda w, a: clinic.record_export(
        w.db, a, what="record.csv", rows=3, deidentified=False, patient_id="P001")),
    "cohort_page": ({"clinician", "qi"}, lambda w, a: auth.require_role(
        w.db, a, "clinician", "qi", action="view_cohort")),
}


@pytest.mark.slow
@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("name", CALLS)
def test_role_matrix(w, name, actor):
    allowed, call = CALLS[name]
    w.submit(dep=25)  # a high depression alert (id 1) to acknowledge
    user = w.other if actor == "other" else getattr(w, actor)
    before = len(w.denials())
    if actor in allowed:
        call(w, user)
        assert len(w.denials()) == before
    else:
        with pytest.raises(PermissionDenied) as info:
            call(w, user)
        denials = w.denials()
        assert len(denials) == before + 1
        assert denials["actor"].iloc[0] == user.username
        if actor == "other" and "patient" in allowed:  # P002's login on P001's record
            assert str(info.value) == "You can only see and enter your own check-ins."
            assert denials["patient_id"].iloc[0] == "P001"


def test_a_patient_probing_an_unknown_id_learns_nothing(w):
    messages = []
    for pid in ("P002", "P999"):
        with pytest.raises(PermissionDenied) as info:
            clinic.patient_record(w.db, w.patient, pid, settings=SETTINGS)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    denial = w.denials().iloc[0]
    assert pd.isna(denial["patient_id"]) and '"P999"' in denial["details"]


def test_a_user_demoted_while_signed_in_loses_access_at_once(w):
    w.db.conn.execute("UPDATE users SET role = 'qi' WHERE username = 'dr.lee'")
    with pytest.raises(PermissionDenied, match="you are signed in as quality improvement"):
        clinic.roster(w.db, w.clinician, today=TODAY, settings=SETTINGS)


# Enrolment and treatment -----------------------------------------------------------------------------


def test_enrolment_returns_an_invitation_and_rejections_change_nothing(w, dump):
    invitation = clinic.enrol_patient(w.db, w.clinician, patient_id=" P003 ", sex="f", birth_year=1980,
                                      enrolled_on="2025-06-01", today=TODAY, now=NOW, settings=SETTINGS)
    assert invitation.patient_id == "P003" and invitation.expires_at == NOW + timedelta(days=7)
    assert storage.load_audit_log(w.db, patient_id="P003")["action"].tolist() == ["issue_invitation",
                                                                                    "enrol_patient"]
    before = dump(w.db)
    with pytest.raises(DuplicateRecord, match="already enrolled"):
        clinic.enrol_patient(w.db, w.clinician, patient_id="P003", today=TODAY, now=NOW, settings=SETTINGS)
    with pytest.raises(ValidationError) as info:
        clinic.enrol_patient(w.db, w.clinician, patient_id="P004", sex="Q", birth_year=2030,
                             enrolled_on="2025-07-01", today=TODAY, now=NOW, settings=SETTINGS)
    assert len(info.value.problems) == 3 and "in the future" in str(info.value)
    assert dump(w.db) == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(first_infusion="2025-06-10", last_infusion="2025-06-12"), "in the future"),
    (dict(first_infusion="2025-05-10", last_infusion="2025-05-06"), "before first_infusion"),
    (dict(dose_mg_per_kg=5), "0.05 to 2 mg/kg"),
    (dict(infusions=0), "infusions must be"),
])
def test_series_validation_changes_nothing(w, dump, kwargs, message):
    fields = dict(first_infusion="2025-05-20", last_infusion="2025-05-24", infusions=5) | kwargs
    before = dump(w.db)
    with pytest.raises(ValidationError, match=message):
        clinic.log_series(w.db, w.clinician, patient_id="P001", today=TODAY, **fields)
    assert dump(w.db) == before


def test_infusion_validation_changes_nothing(w, dump):
    before = dump(w.db)
    good = dict(patient_id="P001", series_id=w.series_id, infused_on="2025-05-06", dose_mg_per_kg=0.5,
                duration_min=40, today=TODAY)
    with pytest.raises(NotFound, match="no infusion series"):
        clinic.log_infusion(w.db, w.clinician, **good | {"patient_id": "P002"})
    with pytest.raises(ValidationError) as info:
        clinic.log_infusion(w.db, w.clinician, **good | {"dose_mg_per_kg": 35, "adverse_events": [
            {"kind": "headache", "severity": "mild"}, {"kind": "nausea"}]})
    assert "0.05 to 2 mg/kg" in str(info.value) and "adverse event 1: kind must be one of" in str(info.value)
    assert "adverse event 2: severity is required" in str(info.value)
    with pytest.raises(ValidationError, match="outside the series"):
        clinic.log_infusion(w.db, w.clinician, **good | {"infused_on": "2025-05-20"})
    assert dump(w.db) == before
    clinic.log_infusion(w.db, w.clinician, **good | {"adverse_events": [
        {"kind": "dissociation", "severity": "moderate"}, {"kind": "blood_pressure_rise", "severity": "mild"}]})
    record = clinic.patient_record(w.db, w.clinician, "P001", settings=SETTINGS)
    assert record.adverse_events["kind"].tolist() == ["dissociation", "blood_pressure_rise"]


# Check-ins -------------------------------------------------------------------------------------------


def test_checkin_forms_follow_the_settings():
    assert [f.key for f in clinic.checkin_forms(SETTINGS)] == list(SETTINGS.checkin_forms)
    with pytest.raises(ConfigError, match="checkin_forms: unknown form key"):
        clinic.checkin_forms(SETTINGS.replace(checkin_forms=("depression_sf9z_v1.0",)))
    with pytest.raises(ConfigError, match="one form per domain"):
        clinic.checkin_forms(SETTINGS.replace(checkin_forms=(DEP, "depression_sf8a_v1.0")))


def test_checkin_is_scored_stored_and_explained_against_baseline(w):
    first = w.submit(on=date(2025, 5, 1), pi=24, dep=18, pf=12)  # paper entry, before the series
    assert [d.message.split(". ")[1] for d in first.domains] == [
        "This is the starting score that later check-ins are compared with."] * 3
    result = w.submit(w.patient, pi=18, dep=18, pf=18)
    assert (result.patient_id, result.assessed_on, result.source, result.replaced) == ("P001", TODAY, "patient",
                                                                                      False)
    pi, dep, pf = result.domains
    assert (pi.t_score, pi.se, pi.severity, pi.method, pi.baseline_t, pi.change) == (61.2, 1.4, "moderate",
                                                                                     "table", 66.7, -5.5)
    assert pi.improved and not pi.worsened
    assert pi.message == ("Your pain interference score is 61.2 (moderate). That is 5.5 points lower than "
                          "before your infusions — a meaningful improvement.")
    assert dep.message.endswith("That is the same as before your infusions.")
    assert (pf.change, pf.improved) == (5.1, True)
    assert "5.1 points higher than before your infusions — a meaningful improvement" in pf.message
    stored = storage.load_assessments(w.db, patient_id="P001")
    today = stored[stored["assessed_on"] == pd.Timestamp(TODAY)]
    assert sorted(today["domain"]) == ["depression", "pain_interference", "physical_function"]
    assert set(today["source"]) == {"patient"} and set(today["entered_by"]) == {"pat.one"}
    items = storage.load_item_responses(w.db, "P001")
    assert len(items[items["assessed_on"] == pd.Timestamp(TODAY)]) == 18
    assert storage.load_audit_log(w.db, action="submit_checkin")["actor"].tolist() == ["pat.one", "dr.lee"]


def test_a_small_change_and_a_worsening_are_worded_for_the_patient(w):
    w.submit(on=date(2025, 5, 1), pi=15, dep=12, pf=24)
    pi, dep, pf = w.submit(w.patient, pi=16, dep=15, pf=20).domains
    assert pi.message.endswith("0.9 points higher than before your infusions — less than the 3 points that "
                               "count as a meaningful change.")
    assert dep.message.endswith("3.5 points higher than before your infusions — a meaningful worsening.")
    assert pf.worsened and not pf.improved and pf.change == -3.8


def test_without_a_series_the_first_score_is_the_baseline(w):
    w.submit(patient_id="P002", on=date(2025, 5, 1), dep=18)
    (dep,) = w.submit(w.other, patient_id="P002", dep=12).domains
    assert (dep.baseline_on, dep.baseline_t, dep.change) == (date(2025, 5, 1), 61.7, -7.0)
    assert dep.message.endswith("7.0 points lower than at your first check-in — a meaningful improvement.")


def test_a_baseline_outside_the_window_is_no_baseline(w):
    w.submit(on=date(2025, 3, 1), pi=24)  # more than 30 days before the first infusion (2025-05-05)
    (pi,) = w.submit(w.patient, pi=18).domains
    assert pi.baseline_t is None and pi.improved is None
    assert pi.message.endswith("There is no earlier score to compare it with yet.")


def test_a_domain_with_too_few_answers_is_reported_and_not_stored(w):
    partial = answers(dep=12, pf=18) | {PI: {"PAININ9": 3, "PAININ22": 4, "PAININ31": None}}
    partial[DEP] = dict(partial[DEP], EDDEP04=None, EDDEP06=None)  # 4 of 6: response-pattern scoring
    result = clinic.submit_checkin(w.db, w.patient, patient_id="P001", answers=partial, assessed_on=TODAY,
                                   today=TODAY, now=NOW, settings=SETTINGS)
    pi, dep, pf = result.domains
    assert not pi.scored and pi.t_score is None
    assert pi.message == ("Your pain interference answers were not scored: answer at least 3 of the 6 "
                          "questions (2 answered). This part was not saved.")
    assert dep.scored and dep.method == "pattern" and dep.n_answered == 4
    assert sorted(storage.load_assessments(w.db, patient_id="P001")["domain"]) == ["depression",
                                                                                 "physical_function"]


def test_nothing_scorable_or_invalid_answers_change_nothing(w, dump):
    w.submit(on=date(2025, 5, 1), pi=20)
    clinic.save_draft(w.db, w.patient, "P001", {DEP: {"EDDEP04": 2}}, now=NOW)
    before = dump(w.db)
    with pytest.raises(CheckinNotScorable) as info:
        clinic.submit_checkin(w.db, w.patient, patient_id="P001", answers={PI: {"PAININ9": 2}, DEP: {}},
                              assessed_on=TODAY, today=TODAY, now=NOW, settings=SETTINGS)
    assert len(info.value.problems) == 2 and "answer at least 3 of the 6" in str(info.value)
    bad = [
        ({PI: dict(spread(PI, 18), PAININ9=7)}, "PAININ9=7 is not an allowed answer"),
        ({PI: dict(spread(PI, 18), PAININ9=2.5)}, "PAININ9=2.5 is not an allowed answer"),
        ({"pain_interference_sf9z_v1.0": {}}, "unknown form key"),
        ({PI: spread(PI, 18), "pain_interference_sf4a_v1.0": spread("pain_interference_sf4a_v1.0", 8)},
         "both measure pain_interference"),
        ({}, "there are no answers"),
        ({PI: [1, 2, 3]}, "must map each form key"),
    ]
    for given, message in bad:
        with pytest.raises(ValidationError, match=message):
            clinic.submit_checkin(w.db, w.patient, patient_id="P001", answers=given, assessed_on=TODAY,
                                  today=TODAY, now=NOW, settings=SETTINGS)
    with pytest.raises(ValidationError, match="dated today"):
        w.submit(w.patient, on=date(2025, 6, 1), pi=18)
    with pytest.raises(ValidationError, match="source must be patient"):
        clinic.submit_checkin(w.db, w.patient, patient_id="P001", answers=answers(pi=18), assessed_on=TODAY,
                              source="clinician", today=TODAY, now=NOW, settings=SETTINGS)
    with pytest.raises(ValidationError, match="in the future"):
        w.submit(on=date(2025, 6, 3), pi=18)
    with pytest.raises(NotFound, match="P404"):
        w.submit(patient_id="P404", pi=18)
    assert dump(w.db) == before


def test_a_second_checkin_the_same_day_asks_before_replacing(w, dump):
    w.submit(w.patient, pi=18, dep=18, pf=18)
    before = dump(w.db)
    with pytest.raises(CheckinExists, match="You already sent a check-in today. Replace it") as info:
        w.submit(w.patient, pi=12, dep=12, pf=12)
    assert (info.value.patient_id, info.value.assessed_on) == ("P001", TODAY)
    with pytest.raises(CheckinExists, match="Patient P001 already has a check-in today"):
        w.submit(pi=12)
    assert dump(w.db) == before
    result = w.submit(w.patient, replace=True, pi=12, dep=12, pf=12)
    assert result.replaced
    active = storage.load_assessments(w.db, patient_id="P001")
    assert active["t_score"].tolist() == [54.7, 55.6, 32.5]  # depression, pain interference, physical function
    everything = storage.load_assessments(w.db, patient_id="P001", include_superseded=True)
    assert everything["superseded_by"].notna().sum() == 3


def test_drafts_are_saved_restored_and_discarded_on_submit(w):
    assert clinic.load_draft(w.db, w.patient, "P001") is None
    version = storage.data_version(w.db)
    clinic.save_draft(w.db, w.patient, "P001", {PI: {"PAININ9": 3, "PAININ22": None}}, now=NOW)
    clinic.save_draft(w.db, w.patient, "P001", {PI: {"PAININ9": 4}}, now=NOW + timedelta(minutes=1))
    assert storage.data_version(w.db) == version  # drafts do not empty the pages' caches
    clinic.save_draft(w.db, w.clinician, "P001", {DEP: {"EDDEP04": 1}}, now=NOW)
    draft = clinic.load_draft(w.db, w.patient, "P001")
    assert draft.answers == {PI: {"PAININ9": 4}} and draft.saved_at == NOW + timedelta(minutes=1)
    with pytest.raises(ValidationError, match="whole numbers or empty"):
        clinic.save_draft(w.db, w.patient, "P001", {PI: {"PAININ9": "four"}}, now=NOW)
    w.submit(w.patient, pi=18)
    assert clinic.load_draft(w.db, w.patient, "P001") is None
    assert clinic.load_draft(w.db, w.clinician, "P001").answers == {DEP: {"EDDEP04": 1}}  # a separate draft
    assert clinic.discard_draft(w.db, w.clinician, "P001") is True
    assert clinic.discard_draft(w.db, w.clinician, "P001") is False


# Alerts ----------------------------------------------------------------------------------------------


def test_alerts_are_raised_on_storing_and_acknowledged_with_who_and_when(w, dump):
    w.submit(on=date(2025, 5, 1), pi=12, dep=12)
    result = w.submit(w.patient, pi=15, dep=25)  # PI 55.6 -> 58.6 (+3.0), depression 70.6
    assert result.alerts_created == 2
    alerts = clinic.open_alerts(w.db, w.clinician)
    assert alerts["priority"].tolist() == ["high", "routine"]
    assert alerts["domain"].tolist() == ["depression", "pain_interference"]
    assert alerts["t_score"].tolist() == [70.6, 58.6]
    assert "worsened by 3.0 T points" in alerts["reason"].iloc[1]
    assert alerts["action"].iloc[0] == clinic.ALERT_ACTIONS["high"]
    assert set(alerts.columns) >= {"patient_id", "created_at", "entry_replaced"}
    assert "suicide" in clinic.SAFETY_NOTICE and "988" in clinic.PATIENT_CRISIS_TEXT
    assert clinic.patient_record(w.db, w.patient, "P001", settings=SETTINGS).alerts.empty  # no triage hints
    alert_id = int(alerts["alert_id"].iloc[0])
    later = NOW + timedelta(hours=2)
    clinic.acknowledge_alert(w.db, w.clinician, alert_id, now=later, note="called, safe, appointment booked")
    done = storage.load_alerts(w.db, patient_id="P001").set_index("alert_id").loc[alert_id]
    assert (done["acknowledged_by"], done["acknowledged_at"], done["note"]) == (
        "dr.lee", pd.Timestamp(later), "called, safe, appointment booked")
    entry = storage.load_audit_log(w.db, action="acknowledge_alert").iloc[0]
    assert (entry["actor"], entry["patient_id"]) == ("dr.lee", "P001") and f'"alert_id": {alert_id}' in entry["details"]
    before = dump(w.db)
    with pytest.raises(ValidationError, match="already acknowledged by dr.lee"):
        clinic.acknowledge_alert(w.db, w.clinician, alert_id, now=later)
    with pytest.raises(NotFound, match="No alert with id 99"):
        clinic.acknowledge_alert(w.db, w.clinician, 99, now=later)
    assert dump(w.db) == before
    assert len(clinic.open_alerts(w.db, w.clinician)) == 1


def test_alerts_survive_a_replaced_entry(w):
    w.submit(dep=25)
    w.submit(replace=True, dep=12)
    alerts = clinic.open_alerts(w.db, w.clinician)
    assert alerts["entry_replaced"].tolist() == [True]


# Due dates, roster, record ---------------------------------------------------------------------------


# P001's series ended on Friday 9 May 2025: week 3 runs 30 May to 5 June, week 4 (1 month) 6 to 12 June.
@pytest.mark.parametrize("today, status, next_due, label", [
    (date(2025, 6, 1), "done", date(2025, 6, 6), "Week 3"), (date(2025, 6, 5), "done", date(2025, 6, 6), "Week 3"),
    (date(2025, 6, 6), "due", date(2025, 6, 6), "1 month"), (date(2025, 6, 7), "due", date(2025, 6, 6), "1 month"),
    (date(2025, 6, 8), "overdue", date(2025, 6, 6), "1 month"),
    (date(2025, 6, 12), "overdue", date(2025, 6, 6), "1 month"), (date(2025, 6, 13), "due", date(2025, 6, 13), "Week 5"),
])
def test_checkin_due(w, today, status, next_due, label):
    w.submit(on=date(2025, 6, 1), dep=12)
    due = clinic.checkin_due(w.db, w.patient, "P001", today=today, settings=SETTINGS)
    assert (due.status, due.last_checkin, due.next_due, due.slot_label) == (status, date(2025, 6, 1), next_due, label)
    assert due.message.startswith("Thank you: your week 3" if status == "done" else f"Your {label.lower()}")
    assert due.kind == ("timepoint" if label == "1 month" else "weekly")
    assert due.on_call_list is (today >= date(2025, 6, 9) and status == "overdue")


def test_checkin_due_after_follow_up_is_complete(w):
    due = clinic.checkin_due(w.db, w.patient, "P001", today=date(2026, 1, 1), settings=SETTINGS)
    assert (due.status, due.slot_label, due.next_due) == ("complete", None, None)
    assert due.message == ("Your follow-up after the last infusion series is complete. You can still check in "
                           "whenever you like.")
    assert clinic.checkin_due(w.db, w.clinician, "P001", today=date(2026, 1, 1), settings=SETTINGS).message == (
        "The follow-up after the last infusion series is complete.")


def test_checkin_due_without_a_series(w):
    due = clinic.checkin_due(w.db, w.clinician, "P002", today=TODAY, settings=SETTINGS)
    assert (due.status, due.last_checkin, due.next_due, due.slot_label) == ("no series", None, None, None)
    assert due.message == "No questionnaire is due."


def test_followup_schedule_lists_the_slots_with_how_they_were_chased(w):
    w.submit(on=date(2025, 5, 1), dep=12)
    schedule = clinic.followup_schedule(w.db, w.clinician, "P001", today=TODAY, settings=SETTINGS)
    head = schedule.head(5)
    assert head["label"].tolist() == ["Baseline", "End of series", "Week 1", "Week 2", "Week 3"]
    assert head["status"].tolist() == ["done", "missed", "missed", "missed", "overdue"]
    assert schedule["invitation_sent"].isna().all() and (schedule["call"] == "").all()
    assert storage.load_audit_log(w.db, action="view_followup")["patient_id"].tolist() == ["P001"]
    # An invitation sent and a call about week 3 show on its row; another patient's messages do not.
    other = clinic.log_series(w.db, w.clinician, patient_id="P002", first_infusion="2025-05-05",
                              last_infusion="2025-05-09", infusions=5, today=TODAY)
    sent_at = datetime(2025, 5, 30, 8, tzinfo=UTC)
    for pid, series_id in (("P001", w.series_id), ("P002", other)):
        storage.plan_messages(w.db, [{"patient_id": pid, "series_id": series_id, "slot": "week_3",
                                      "due_on": date(2025, 5, 30), "step": "invitation", "channel": "email",
                                      "recipient": f"{pid}@example.org"}], by="remind", now=sent_at)
    for message in storage.claim_messages(w.db, by="remind", now=sent_at, max_attempts=3):
        if message["patient_id"] == "P001":
            storage.finish_message(w.db, message["message_id"], sent=True, now=sent_at, max_attempts=3)
    storage.add_call_outcome(w.db, "P002", series_id=other, slot="week_3", due_on=date(2025, 5, 30),
                             outcome="no_answer", by="dr.lee", now=NOW)
    storage.finish_message(w.db, int(storage.load_outbox(w.db, patient_id="P002")["message_id"].iloc[0]), sent=True,
                           now=sent_at, max_attempts=3)
    rows = clinic.followup_schedule(w.db, w.clinician, "P001", today=TODAY, settings=SETTINGS).set_index("label")
    assert rows.loc["Week 3", "invitation_sent"] == pd.Timestamp(sent_at)
    assert rows["invitation_sent"].notna().sum() == 1 and (rows["call"] == "").all()
    with pytest.raises(PermissionDenied):
        clinic.followup_schedule(w.db, w.patient, "P001", today=TODAY, settings=SETTINGS)


def test_roster(w):
    clinic.enrol_patient(w.db, w.clinician, patient_id="P003", today=TODAY, now=NOW, settings=SETTINGS)
    clinic.log_series(w.db, w.clinician, patient_id="P003", first_infusion="2025-05-30",
                      last_infusion="2025-06-03", infusions=5, today=date(2025, 6, 3))
    w.submit(on=date(2025, 5, 1), pi=24, dep=18, pf=12)
    w.submit(on=date(2025, 5, 28), pi=18, dep=25, pf=18)  # depression 70.6: high alert
    w.submit(patient_id="P002", on=date(2025, 5, 10), dep=12)
    table = clinic.roster(w.db, w.clinician, today=TODAY, settings=SETTINGS)
    assert tuple(table.columns) == clinic.roster_columns(SETTINGS.domains)
    rows = table.set_index("patient_id")
    assert table["patient_id"].tolist() == ["P001", "P002", "P003"]  # alerts first, then overdue
    assert rows.loc["P001", "series_status"] == "Week 4 after series 1"
    assert rows.loc["P003", "series_status"] == "In series (day 4 of 5)"
    assert rows.loc["P002", "series_status"] == "No series"
    # Week 3 of P001 fell due on 30 May and is undone on day 4: overdue and on the call list. P002 has no series.
    # P003's baseline closed undone on its first infusion (30 May); its end-of-series slot falls due on 3 June.
    assert rows["followup"].to_dict() == {"P001": "overdue", "P002": "no series", "P003": "missed"}
    assert rows["followup_text"].to_dict() == {"P001": "Week 3 overdue since 30 May", "P002": "No series",
                                               "P003": "Next: End of series on 03 Jun"}
    assert rows["overdue"].to_dict() == {"P001": True, "P002": False, "P003": False}
    assert rows["on_call_list"].to_dict() == {"P001": True, "P002": False, "P003": False}
    assert rows.loc["P003", "next_due"] == pd.Timestamp("2025-06-03")
    assert rows["today"].to_dict() == {"P001": "Open alert (high) · Week 3 overdue since 30 May · call", "P002": "",
                                       "P003": "In series today"}
    assert rows.loc["P001", "last_checkin"] == pd.Timestamp("2025-05-28")
    assert rows.loc["P001", "next_due"] == pd.Timestamp("2025-05-30")
    assert (rows.loc["P001", "pain_interference_t"], rows.loc["P001", "pain_interference_change"]) == (61.2, -5.5)
    assert bool(rows.loc["P001", "pain_interference_improved"])
    assert rows.loc["P001", "physical_function_change"] == 5.1
    assert (rows.loc["P002", "depression_t"], rows.loc["P002", "depression_change"]) == (54.7, 0.0)
    assert pd.isna(rows.loc["P002", "pain_interference_t"]) and pd.isna(rows.loc["P003", "depression_improved"])
    assert (rows.loc["P001", "open_alerts"], rows.loc["P001", "top_priority"]) == (1, "high")
    assert rows.loc["P002", "open_alerts"] == 0 and pd.isna(rows.loc["P002", "top_priority"])
    assert storage.load_audit_log(w.db, action="view_roster")["actor"].tolist() == ["dr.lee"]


@pytest.mark.slow
def test_roster_runs_the_same_queries_whatever_the_number_of_patients(w):
    def statements():
        seen = []
        w.db.conn.set_trace_callback(seen.append)
        clinic.roster(w.db, w.clinician, today=TODAY, settings=SETTINGS)
        w.db.conn.set_trace_callback(None)
        return len(seen)

    w.submit(on=date(2025, 5, 1), pi=24)
    few = statements()
    for i in range(30):
        pid = f"Q{i:03d}"
        storage.add_patient(w.db, patient_id=pid, entered_by="dr.lee")
        storage.add_series(w.db, patient_id=pid, first_infusion="2025-05-05", last_infusion="2025-05-09",
                           infusions=5, entered_by="dr.lee")
        w.submit(patient_id=pid, on=date(2025, 5, 1), pi=20, dep=20)
        w.submit(patient_id=pid, on=date(2025, 5, 20), pi=15, dep=15)
    assert statements() == few


def test_roster_of_an_empty_clinic(db):
    admin = auth.create_first_admin(db, "root.admin", "correct horse battery", now=NOW)
    lee = auth.create_user(db, admin, username="dr.lee", role="clinician", password="lee's long password",
                           now=NOW)
    table = clinic.roster(db, lee, today=TODAY, settings=SETTINGS)
    assert table.empty and tuple(table.columns) == clinic.roster_columns(SETTINGS.domains)


def test_patient_record(w):
    clinic.log_infusion(w.db, w.clinician, patient_id="P001", series_id=w.series_id, infused_on="2025-05-05",
                        dose_mg_per_kg=0.5, duration_min=40, adverse_events=[{"kind": "nausea", "severity": "mild"}],
                        today=TODAY)
    w.submit(on=date(2025, 5, 1), pi=24, dep=18, pf=12)
    w.submit(w.patient, pi=12, dep=18, pf=18)
    record = clinic.patient_record(w.db, w.clinician, "P001", settings=SETTINGS)
    assert record.patient["patient_id"].tolist() == ["P001"]
    assert len(record.series) == 1 and len(record.infusions) == 1 and len(record.adverse_events) == 1
    a = record.assessments.set_index(["domain", "assessed_on"])
    pi = a.loc[("pain_interference", pd.Timestamp(TODAY))]
    assert (pi["method"], pi["se"], pi["baseline_t"], pi["change"], bool(pi["improved"])) == (
        "table", 1.5, 66.7, -11.1, True)
    assert pi["rci"] == pytest.approx(-11.1 / (1.5**2 + 1.5**2) ** 0.5) and bool(pi["reliable"])
    pf = a.loc[("physical_function", pd.Timestamp(TODAY))]
    assert bool(pf["improved"]) and bool(pf["reliable"])  # 32.5 -> 37.6, SE 1.8 both: RCI 2.0
    assert len(record.item_responses) == 36
    assert storage.load_audit_log(w.db, action="view_record")["actor"].tolist() == ["dr.lee"]
    with pytest.raises(NotFound, match="P404"):
        clinic.patient_record(w.db, w.clinician, "P404", settings=SETTINGS)


# Audit log -------------------------------------------------------------------------------------------


def test_read_audit_log_filters(w):
    w.submit(w.patient, dep=12)
    clinic.patient_record(w.db, w.clinician, "P001", settings=SETTINGS)
    log = clinic.read_audit_log(w.db, w.admin, patient_id="P001")
    assert set(log["action"]) >= {"submit_checkin", "view_record", "log_series", "create_user"}
    assert clinic.read_audit_log(w.db, w.admin, user="pat.one")["action"].tolist() == ["submit_checkin"]
    assert clinic.read_audit_log(w.db, w.admin, action="view_record")["actor"].tolist() == ["dr.lee"]
    today = datetime.now(UTC).date()  # audit times are the real clock, never the caller's
    assert len(clinic.read_audit_log(w.db, w.admin, date_from=today, date_to=today)) > 0
    assert clinic.read_audit_log(w.db, w.admin, date_to=today - timedelta(days=1)).empty
    with pytest.raises(ValidationError, match="swap the dates"):
        clinic.read_audit_log(w.db, w.admin, date_from=today, date_to=today - timedelta(days=1))
    assert "view_audit_log" in set(clinic.read_audit_log(w.db, w.admin)["action"])


def test_exports_are_audited(w):
    clinic.record_export(w.db, w.qi, what="responders.csv", rows=12, deidentified=True)
    entry = storage.load_audit_log(w.db, action="export").iloc[0]
    assert entry["actor"] == "qi.ana" and '"deidentified": true' in entry["details"]
    with pytest.raises(PermissionDenied):
        clinic.record_export(w.db, w.qi, what="record.csv", rows=1, deidentified=False, patient_id="P001")


def test_an_export_entry_says_which_export_its_level_filters_format_and_reason(w):
    clinic.record_export(w.db, w.admin, what="dataset (identified)", rows=40, deidentified=False, fmt="xlsx",
                         filters={"as_of": date(2025, 6, 1)}, reason="registry submission")
    entry = storage.load_audit_log(w.db, action="export").iloc[0]
    assert json.loads(entry["details"]) == {"what": "dataset (identified)", "rows": 40, "deidentified": False,
                                            "format": "xlsx", "filters": {"as_of": "2025-06-01"},
                                            "reason": "registry submission"}
    clinic.record_operator_export(w.db, "analyst", what="summary (de-identified)", rows=58, deidentified=True)
    entry = storage.load_audit_log(w.db, action="export").iloc[0]
    assert entry["actor"] == "cli:analyst"
    assert json.loads(entry["details"]) == {"what": "summary (de-identified)", "rows": 58, "deidentified": True}
