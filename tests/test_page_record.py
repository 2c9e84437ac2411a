"""Clinicians record (app_pages/record.py): enrol, series, infusions with adverse events, paper questionnaires.

Every rejected form must say what to fix and change nothing: compared with a dump of every table.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pandas as pd
import pytest

from outcomes import clinic, storage
from outcomes.settings import load_settings
from tests.page_helpers import button, messages
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/record.py"
FORMS = clinic.checkin_forms(load_settings())
PI, DEP, PF = FORMS


@pytest.fixture
def record(app_as):
    return app_as("clinician", PAGE)


def widget(at, kind: str, label: str, form: str | None = None):
    """The widget of this kind and label (inside form ``form`` when given)."""
    found = [w for w in getattr(at, kind) if w.label == label and (form is None or w.form_id == form)]
    assert len(found) == 1, f"{len(found)} {kind} widgets labelled {label!r} (form {form})"
    return found[0]


def enrol(at, patient_id: str, diagnosis: str = "", sex: str | None = None, birth_year: int | None = None):
    widget(at, "text_input", "Clinic patient ID").input(patient_id)
    widget(at, "text_input", "Diagnosis").input(diagnosis)
    if sex:
        widget(at, "selectbox", "Sex").set_value(sex)
    if birth_year:
        widget(at, "number_input", "Birth year").set_value(birth_year)
    return button(at, "Enrol and create invitation code").click().run()


def log_series(at, patient_id: str, first, last, *, infusions: int = 5, dose: float = 0.5):
    widget(at, "selectbox", "Patient", "record.series").select(patient_id)
    widget(at, "date_input", "First infusion").set_value(first)
    widget(at, "date_input", "Last infusion").set_value(last)
    widget(at, "number_input", "Number of infusions").set_value(infusions)
    widget(at, "number_input", "Dose (mg/kg)", "record.series").set_value(dose)
    return button(at, "Save series").click().run()


def series_of(clinic_db, patient_id: str) -> pd.DataFrame:
    return storage.load_series(clinic_db.open(), patient_id)


# Enrolment -----------------------------------------------------------------------------------------


def test_enrolling_shows_the_one_time_invitation_code(record, clinic_db):
    at = enrol(record, "P100", "Neuropathic pain", sex="F", birth_year=1980)
    assert not at.exception
    assert messages(at, "success")[0].startswith("Enrolled P100. Give the patient this one-time invitation code")
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{2}", at.code[0].value)
    patient = storage.load_patient(clinic_db.open(), "P100").iloc[0]
    assert (patient["diagnosis"], patient["sex"], patient["birth_year"], patient["entered_by"]) == (
        "Neuropathic pain", "F", 1980, "cleo.clinician")
    # The form is empty for the next patient, and the new one is chosen in every tab, ready for the series.
    assert [widget(at, "text_input", label).value for label in ("Clinic patient ID", "Diagnosis")] == ["", ""]
    assert widget(at, "selectbox", "Sex").value is None
    assert {w.value for w in at.selectbox if w.label == "Patient"} == {"P100"}
    assert at.session_state["patient.selected"] == "P100"
    log = storage.load_audit_log(clinic_db.open(), patient_id="P100")
    assert {"enrol_patient", "issue_invitation"} <= set(log["action"])


def test_a_duplicate_patient_id_is_refused_and_nothing_changes(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = enrol(record, "P001", "Something")
    assert messages(at, "error") == ["Patient ID 'P001' is already enrolled; use another ID or open the "
                                     "existing patient"]
    assert not at.code
    assert dump(clinic_db.open()) == before
    # What was typed is still there to correct.
    assert widget(at, "text_input", "Diagnosis").value == "Something"


def test_an_empty_patient_id_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = enrol(record, "   ")
    assert len(at.error) == 1 and "patient_id" in at.error[0].value
    assert dump(clinic_db.open()) == before


# Series ---------------------------------------------------------------------------------------------


def test_a_series_is_saved(record, clinic_db):
    today = clinic_db.today
    at = log_series(record, "P002", today - timedelta(days=4), today, infusions=5, dose=0.75)
    assert messages(at, "success") == ["Series saved for P002. Log each infusion on the next tab."]
    saved = series_of(clinic_db, "P002").iloc[-1]
    assert (saved["series_number"], saved["infusions"], saved["dose_mg_per_kg"]) == (2, 5, 0.75)


@pytest.mark.parametrize("first, last, dose, problem", [
    (-3, -6, 0.5, "is before first_infusion"),
    (-1, 2, 0.5, "last_infusion"),       # the date picker stops at today, so the day never arrives
    (-6, -3, 3.0, "dose_mg_per_kg"),
    (-6, -3, 0.0, "dose_mg_per_kg"),
], ids=["last-before-first", "future-date", "dose-too-high", "dose-zero"])
def test_a_bad_series_says_what_to_fix_and_writes_nothing(record, clinic_db, dump, first, last, dose, problem):
    today = clinic_db.today
    before = dump(clinic_db.open())
    at = log_series(record, "P002", today + timedelta(days=first), today + timedelta(days=last), dose=dose)
    assert not at.exception
    assert len(at.error) == 1, messages(at, "error")
    assert "Cannot add the infusion series of patient 'P002'" in at.error[0].value
    assert problem in at.error[0].value
    assert not at.success
    assert dump(clinic_db.open()) == before


def test_a_series_without_dates_or_patient_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    button(record, "Save series").click().run()
    assert messages(record, "error") == ["Choose a patient first."]
    widget(record, "selectbox", "Patient", "record.series").select("P002")
    button(record, "Save series").click().run()
    assert len(record.error) == 1 and "first_infusion" in record.error[0].value
    assert dump(clinic_db.open()) == before


# Infusions and adverse events ------------------------------------------------------------------------


def infusion_form(at, patient_id: str):
    picker = next(w for w in at.selectbox if w.key == "record.infusion.patient")
    picker.select(patient_id).run()
    return at


def test_an_infusion_with_adverse_events_is_saved(record, clinic_db):
    at = infusion_form(record, "P001")
    first = series_of(clinic_db, "P001")["first_infusion"].iloc[0].date()
    widget(at, "date_input", "Date").set_value(first + timedelta(days=1))
    widget(at, "number_input", "Duration (min)").set_value(45)
    at.checkbox(key="record.ae.nausea").check()
    at.radio(key="record.ae.nausea.severity").set_value("moderate")
    at.checkbox(key="record.ae.dissociation").check()
    button(at, "Save infusion").click().run()
    assert not at.exception
    assert messages(at, "success") == ["Infusion saved for P001 with 2 adverse event(s)."]
    infusions = storage.load_infusions(clinic_db.open(), "P001")
    assert infusions[["infused_on", "duration_min"]].values.tolist() == [[pd.Timestamp(first + timedelta(days=1)), 45]]
    events = storage.load_adverse_events(clinic_db.open(), "P001")
    assert sorted(zip(events["kind"], events["severity"])) == [("dissociation", "mild"), ("nausea", "moderate")]


def test_an_infusion_outside_its_series_is_refused(record, clinic_db, dump):
    at = infusion_form(record, "P001")
    before = dump(clinic_db.open())
    widget(at, "date_input", "Date").set_value(clinic_db.today - timedelta(days=1))
    at.checkbox(key="record.ae.nausea").check()
    button(at, "Save infusion").click().run()
    assert len(at.error) == 1 and "is outside the series" in at.error[0].value
    assert dump(clinic_db.open()) == before


def test_a_patient_without_a_series_is_asked_for_one_first(record, clinic_db):
    at = enrol(record, "P100")
    assert "This patient has no series yet: log the series first." in messages(at, "info")


# Paper questionnaire on the patient's behalf ----------------------------------------------------------


def paper(at, patient_id: str, day, answers: dict):
    next(w for w in at.selectbox if w.key == "record.paper.patient").select(patient_id)
    at.date_input(key="record.paper.date").set_value(day)
    for form, value in answers.items():
        for item in form.items:
            at.radio(key=f"record.paper.{form.key}.{item.item_id}").set_value(value)
    return at.run()


def save_paper(at, label: str = "Save paper questionnaire"):
    return button(at, label).click().run()


def scores_on(clinic_db, patient_id, day, superseded=False):
    rows = storage.load_assessments(clinic_db.open(), patient_id=patient_id, include_superseded=superseded)
    return rows[rows["assessed_on"] == pd.Timestamp(day)]


def test_a_paper_questionnaire_is_saved_as_entered_by_the_clinician(record, clinic_db):
    day = clinic_db.today - timedelta(days=1)
    at = save_paper(paper(record, "P002", day, {PI: 3, DEP: 2}))
    assert not at.exception
    assert [m.split(" is ")[0] for m in messages(at, "success")] == ["The pain interference score",
                                                                     "The depression score"]
    assert messages(at, "warning") == ["The physical function answers were not scored: answer at least 3 of the 6 "
                                       "questions (0 answered). This part was not saved."]
    stored = scores_on(clinic_db, "P002", day)
    assert sorted(stored["domain"]) == ["depression", "pain_interference"]
    assert set(stored["source"]) == {"clinician"} and set(stored["entered_by"]) == {"cleo.clinician"}
    # The form is empty again for the next paper.
    assert all(r.value is None for r in at.radio if r.key and r.key.startswith("record.paper."))


def test_a_second_paper_on_the_same_day_asks_before_replacing(record, clinic_db):
    day = clinic_db.today - timedelta(weeks=2)                       # P002 already has a check-in that day
    first = scores_on(clinic_db, "P002", day)
    at = save_paper(paper(record, "P002", day, {DEP: 5}))
    assert messages(at, "warning")[0].startswith("This patient already has an entry on that day.")
    assert scores_on(clinic_db, "P002", day)["assessment_id"].tolist() == first["assessment_id"].tolist()
    at = save_paper(at, "Replace the entry")
    assert not at.exception
    assert messages(at, "success")[0].startswith("The depression score is ")
    now = scores_on(clinic_db, "P002", day)
    assert now.set_index("domain").loc["depression", "source"] == "clinician"
    assert now.set_index("domain").loc["depression", "assessment_id"] not in set(first["assessment_id"])
    assert scores_on(clinic_db, "P002", day, superseded=True)["superseded_by"].notna().sum() == 1
    # A severe depression score raised a high-priority alert for the clinic.
    assert "high" in set(storage.load_alerts(clinic_db.open(), patient_id="P002", open_only=True)["priority"])


def test_the_replace_question_is_not_carried_over_to_another_day(record, clinic_db):
    at = save_paper(paper(record, "P002", clinic_db.today - timedelta(weeks=2), {DEP: 3}))
    assert "Replace the entry" in [b.label for b in at.button]
    at.date_input(key="record.paper.date").set_value(clinic_db.today - timedelta(days=1)).run()
    assert not [m for m in messages(at, "warning") if m.startswith("This patient already has an entry")]
    assert "Save paper questionnaire" in [b.label for b in at.button]


def test_a_paper_dated_in_the_future_or_unanswered_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = save_paper(paper(record, "P002", clinic_db.today, {}))
    assert len(at.error) == 1 and "None of the questionnaires has enough answers" in at.error[0].value
    assert dump(clinic_db.open()) == before


# New invitation code ----------------------------------------------------------------------------------


def test_a_new_invitation_code_replaces_the_earlier_one(record, clinic_db):
    next(w for w in record.selectbox if w.key == "record.invite.patient").select("P002").run()
    at = button(record, "Create a new invitation code").click().run()
    assert messages(at, "success")[0].startswith("Invitation code for P002, valid until ")
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{2}", at.code[-1].value)
    invitations = clinic_db.open().conn.execute(
        "SELECT revoked_at IS NULL FROM invitations i JOIN patients p ON p.id = i.patient_ref "
        "WHERE p.patient_id = 'P002' ORDER BY i.id").fetchall()
    assert [bool(r[0]) for r in invitations] == [False, True]
