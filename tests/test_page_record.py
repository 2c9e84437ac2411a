"""Clinicians record (app_pages/record.py): enrol, plan or log a series and each infusion (vital signs,
adverse events), cancel a planned series, a disposition, paper questionnaires.

Every rejected form must say what to fix and change nothing: compared with a dump of every table. Every
form that saves starts empty again, with new widgets (other ids): the browser keeps what it showed for a
widget id, so a form redrawn with the same ids showed, and sent back, the previous entry (the adverse
events of one infusion were saved again with the next ones; tests/browser/test_record.py shows it in
Chromium).
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
TABS = {"enrol": "Enrol a patient", "series": "Plan or log a series", "infusion": "Log an infusion",
        "paper": "Paper questionnaire", "disposition": "Disposition", "invite": "New invitation code"}


@pytest.fixture
def record(app_as):
    return app_as("clinician", PAGE)


def tab(at, name: str):
    """The tab ``name`` (a key of TABS): its widgets only."""
    found = [t for t in at.tabs if t.label == TABS[name]]
    assert len(found) == 1, [t.label for t in at.tabs]
    return found[0]


def widget(scope, kind: str, label: str):
    """The one widget of this kind and label in ``scope`` (the page or a tab)."""
    found = [w for w in getattr(scope, kind) if w.label == label]
    assert len(found) == 1, (len(found), kind, label, [w.label for w in getattr(scope, kind)])
    return found[0]


def words(day) -> str:
    """A day as the page writes it: "3 March 2026"."""
    return f"{day.day} {day:%B %Y}"


#: Widgets kept on purpose after a save: the patient pickers, the series tab's mode, the paper's date.
KEPT = re.compile(r"record\.(\w+\.patient|series\.mode|paper\.date)")


def ids(scope) -> set[str]:
    """The ids of the form widgets in ``scope`` (not those in KEPT): what the browser keys its state by."""
    kinds = ("text_input", "text_area", "number_input", "date_input", "selectbox", "checkbox", "radio")
    return {w.id for kind in kinds for w in getattr(scope, kind) if w.id and not KEPT.fullmatch(w.key or "")}


def pick_patient(at, name: str, patient_id: str):
    next(w for w in at.selectbox if w.key == f"record.{name}.patient").select(patient_id)
    return at.run()


NOTE = "Diagnosis note (optional free text; never shown to QI)"
CODE = "Diagnosis (the clinic's code; what QI sees)"


def enrol(at, patient_id: str, diagnosis: str = "", sex: str | None = None, birth_year: int | None = None,
          enrolled_on=None, code: int | None = None):
    form = tab(at, "enrol")
    if code is not None:
        widget(form, "selectbox", CODE).set_value(code)
    widget(form, "text_input", "Clinic patient ID").input(patient_id)
    widget(form, "text_input", NOTE).input(diagnosis)
    if sex:
        widget(form, "selectbox", "Sex").set_value(sex)
    if birth_year:
        widget(form, "number_input", "Birth year").set_value(birth_year)
    if enrolled_on:
        widget(form, "date_input", "Enrolled on").set_value(enrolled_on)
    return button(at, "Enrol and create invitation code").click().run()


def record_series(at, patient_id: str, first, last, *, infusions: int = 5, dose: float = 0.5):
    """A completed series recorded after the fact (clinic.log_series)."""
    pick_patient(at, "series", patient_id)
    widget(tab(at, "series"), "radio", "What to record").set_value("record").run()
    form = tab(at, "series")
    widget(form, "date_input", "First infusion").set_value(first)
    widget(form, "date_input", "Last infusion").set_value(last)
    widget(form, "number_input", "Number of infusions").set_value(infusions)
    widget(form, "number_input", "Dose (mg/kg)").set_value(dose)
    return button(at, "Save series").click().run()


def plan(at, patient_id: str, first, *, infusions: int | None = None, last=None, dose: float | None = None):
    """A series planned ahead (clinic.plan_series): the tab's default."""
    pick_patient(at, "series", patient_id)
    form = tab(at, "series")
    widget(form, "date_input", "First infusion").set_value(first)
    if infusions is not None:
        widget(form, "number_input", "Number of infusions").set_value(infusions)
    if last is not None:
        widget(form, "date_input", "Last infusion").set_value(last)
    if dose is not None:
        widget(form, "number_input", "Dose (mg/kg)").set_value(dose)
    return button(at.run(), "Save series").click().run()


def every_series(clinic_db, patient_id: str) -> pd.DataFrame:
    return storage.load_series(clinic_db.open(), patient_id, every=True)


def series_of(clinic_db, patient_id: str) -> pd.DataFrame:
    return storage.load_series(clinic_db.open(), patient_id)


# Enrolment -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_enrolling_shows_the_one_time_invitation_code(record, clinic_db):
    at = enrol(record, "P100", "Neuropathic pain", sex="F", birth_year=1980)
    assert not at.exception
    assert messages(at, "success")[0].startswith("Enrolled P100. Give the patient this one-time invitation "
                                                 "code")
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{2}", at.code[0].value)
    patient = storage.load_patient(clinic_db.open(), "P100").iloc[0]
    assert (patient["diagnosis"], patient["sex"], patient["birth_year"], patient["entered_by"]) == (
        "Neuropathic pain", "F", 1980, "cleo.clinician")
    # The new patient is chosen in every tab, ready for the series.
    assert {w.value for w in at.selectbox if w.label == "Patient"} == {"P100"}
    assert at.session_state["patient.selected"] == "P100"
    log = storage.load_audit_log(clinic_db.open(), patient_id="P100")
    assert {"enrol_patient", "issue_invitation"} <= set(log["action"])


@pytest.mark.slow
def test_the_enrolment_form_is_empty_for_the_next_patient(record, clinic_db):
    before = ids(tab(record, "enrol"))
    at = enrol(record, "P100", "Neuropathic pain", sex="M", birth_year=1980,
               enrolled_on=clinic_db.today - timedelta(days=3))
    assert messages(at, "success")[0].startswith("Enrolled P100.")
    form = tab(at, "enrol")
    assert widget(form, "text_input", "Clinic patient ID").value == ""
    assert widget(form, "text_input", NOTE).value == ""
    assert widget(form, "selectbox", "Sex").value is None
    assert widget(form, "number_input", "Birth year").value is None
    assert widget(form, "date_input", "Enrolled on").value == clinic_db.today
    # New widgets: the browser cannot show the previous patient's diagnosis, sex and birth year.
    assert not ids(form) & before
    # The next patient is enrolled with what is typed for them only.
    at = enrol(at, "P101")
    patient = storage.load_patient(clinic_db.open(), "P101").iloc[0]
    assert patient[["diagnosis", "sex", "birth_year", "diagnosis_code"]].isna().all()
    assert patient["enrolled_on"] == pd.Timestamp(clinic_db.today)


@pytest.mark.slow
def test_the_diagnosis_is_a_code_from_the_clinics_list_with_a_separate_note(record, clinic_db):
    """Security issue, finding 2: diagnosis was free text that QI filtered by (names, phone numbers)."""
    db = clinic_db.open()
    crps = storage.add_diagnosis_code(db, "Small fibre neuropathy", by="ada.admin")
    retired = storage.add_diagnosis_code(db, "Old code", by="ada.admin")
    storage.retire_diagnosis_code(db, retired, by="ada.admin")
    record.run()
    box = widget(tab(record, "enrol"), "selectbox", CODE)
    assert "Small fibre neuropathy" in box.options and "Old code" not in box.options
    at = enrol(record, "P102", "CRPS 1, left foot; referred by Dr Roe", code=crps)
    assert messages(at, "success")[0].startswith("Enrolled P102.")
    patient = storage.load_patient(clinic_db.open(), "P102").iloc[0]
    assert patient["diagnosis_code"] == crps and patient["diagnosis_label"] == "Small fibre neuropathy"
    assert patient["diagnosis"] == "CRPS 1, left foot; referred by Dr Roe"
    assert widget(tab(at, "enrol"), "selectbox", CODE).value is None  # the next patient's form is empty


@pytest.mark.slow
def test_a_duplicate_patient_id_is_refused_and_nothing_changes(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = enrol(record, "P001", "Something", birth_year=1990)
    assert messages(at, "error") == ["Patient ID 'P001' is already enrolled; use another ID or open the "
                                     "existing patient"]
    assert not at.code
    assert dump(clinic_db.open()) == before
    # What was typed is still there to correct.
    form = tab(at, "enrol")
    assert widget(form, "text_input", NOTE).value == "Something"
    assert widget(form, "number_input", "Birth year").value == 1990


def test_an_empty_patient_id_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = enrol(record, "   ")
    assert len(at.error) == 1 and "patient_id" in at.error[0].value
    assert dump(clinic_db.open()) == before


# Series: planned ahead, recorded after the fact, cancelled ------------------------------------------------


@pytest.mark.slow
def test_a_series_is_planned_ahead_with_consecutive_days_by_default(record, clinic_db):
    first = clinic_db.today + timedelta(days=10)
    at = pick_patient(record, "series", "P002")
    form = tab(at, "series")
    assert widget(form, "radio", "What to record").value == "plan"
    assert widget(form, "number_input", "Number of infusions").value == 5
    widget(form, "date_input", "First infusion").set_value(first).run()
    # The default last day is shown before saving.
    last = first + timedelta(days=4)
    assert (f"Last infusion: {words(last)} (5 consecutive days). Choose a last infusion to spread them out."
            in messages(tab(at, "series"), "caption"))
    before = ids(tab(at, "series"))
    at = button(at, "Save series").click().run()
    assert not at.exception and not at.error
    assert messages(at, "success") == [
        f"Series saved for P002: 5 infusions planned from {words(first)} to {words(last)}. Log each infusion "
        "on the “Log an infusion” tab as it is given."]
    saved = every_series(clinic_db, "P002").iloc[-1]
    assert (saved["state"], saved["planned_first"], saved["planned_last"], saved["planned_infusions"],
            saved["dose_mg_per_kg"], saved["entered_by"]) == (
        "planned", pd.Timestamp(first), pd.Timestamp(last), 5, 0.5, "cleo.clinician")
    assert len(series_of(clinic_db, "P002")) == 1   # a plan is not a given series: no analysis counts it
    # An empty form for the next series.
    form = tab(at, "series")
    assert widget(form, "date_input", "First infusion").value is None
    assert not ids(form) & before


@pytest.mark.slow
def test_a_series_is_planned_with_its_own_last_day_and_dose(record, clinic_db):
    first = clinic_db.today + timedelta(days=3)
    at = plan(record, "P002", first, infusions=3, last=first + timedelta(days=6), dose=0.75)
    assert messages(at, "success")[0].startswith(
        f"Series saved for P002: 3 infusions planned from {words(first)} to ")
    saved = every_series(clinic_db, "P002").iloc[-1]
    assert (saved["planned_last"], saved["planned_infusions"], saved["dose_mg_per_kg"]) == (
        pd.Timestamp(first + timedelta(days=6)), 3, 0.75)


@pytest.mark.slow
def test_a_plan_too_far_ahead_is_refused_with_the_library_s_reason(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = plan(record, "P002", clinic_db.today + timedelta(days=400))
    assert len(at.error) == 1 and "Cannot plan the infusion series of patient 'P002'" in at.error[0].value
    assert "more than 366 days ahead" in at.error[0].value
    assert dump(clinic_db.open()) == before
    kept = widget(tab(at, "series"), "date_input", "First infusion").value
    assert kept == clinic_db.today + timedelta(days=400)


@pytest.mark.slow
def test_a_completed_series_is_recorded_after_the_fact(record, clinic_db):
    today = clinic_db.today
    at = record_series(record, "P002", today - timedelta(days=4), today, infusions=5, dose=0.75)
    assert messages(at, "success") == ["Series saved for P002. Log each infusion on the “Log an infusion” "
                                       "tab."]
    saved = series_of(clinic_db, "P002").iloc[-1]
    assert (saved["series_number"], saved["infusions"], saved["dose_mg_per_kg"], saved["state"]) == (
        2, 5, 0.75, "given")
    # Still in "record" mode, with an empty form.
    form = tab(at, "series")
    assert widget(form, "radio", "What to record").value == "record"
    assert widget(form, "date_input", "First infusion").value is None


@pytest.mark.slow
@pytest.mark.parametrize("first, last, dose, problem", [
    (-3, -6, 0.5, "is before first_infusion"),
    (-1, 2, 0.5, "last_infusion"),       # the date picker stops at today, so the day never arrives
    (-6, -3, 3.0, "dose_mg_per_kg"),
    (-6, -3, 0.0, "dose_mg_per_kg"),
], ids=["last-before-first", "future-date", "dose-too-high", "dose-zero"])
def test_a_bad_series_says_what_to_fix_and_writes_nothing(record, clinic_db, dump, first, last, dose, problem):
    today = clinic_db.today
    before = dump(clinic_db.open())
    at = record_series(record, "P002", today + timedelta(days=first), today + timedelta(days=last), dose=dose)
    assert not at.exception
    assert len(at.error) == 1, messages(at, "error")
    assert "Cannot add the infusion series of patient 'P002'" in at.error[0].value
    assert problem in at.error[0].value
    assert not at.success
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_a_series_without_dates_or_patient_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    button(record, "Save series").click().run()
    assert messages(record, "error") == ["Choose a patient first."]
    pick_patient(record, "series", "P002")
    button(record, "Save series").click().run()
    assert len(record.error) == 1 and "first_infusion" in record.error[0].value
    assert dump(clinic_db.open()) == before


def plan_directly(clinic_db, patient_id: str, first, infusions: int = 5) -> int:
    return clinic.plan_series(clinic_db.open(), clinic_db.users["clinician"], patient_id=patient_id,
                              first_infusion=first, planned_infusions=infusions, dose_mg_per_kg=0.5,
                              today=clinic_db.today)


@pytest.mark.slow
def test_a_planned_series_is_cancelled_with_a_reason(record, clinic_db):
    first = clinic_db.today + timedelta(days=7)
    series_id = plan_directly(clinic_db, "P001", first)
    at = pick_patient(record, "series", "P001")
    form = tab(at, "series")
    picker = widget(form, "selectbox", "Planned series")
    assert picker.options == [f"Planned series from {words(first)}, 0 of 5 given"]
    widget(form, "text_input", "Reason for cancelling").input("Patient unwell: rescheduled")
    at = button(at, "Cancel the planned series").click().run()
    assert not at.exception and not at.error
    assert messages(at, "success") == [f"The series of P001 planned from {words(first)} is cancelled."]
    row = every_series(clinic_db, "P001").set_index("series_id").loc[series_id]
    assert (row["state"], row["cancel_reason"]) == ("cancelled", "Patient unwell: rescheduled")
    trail = storage.load_record_changes(clinic_db.open(), "P001")
    assert trail[["action", "actor", "reason"]].values.tolist() == [["cancel", "cleo.clinician",
                                                                     "Patient unwell: rescheduled"]]
    # Nothing planned is left to cancel.
    assert "This patient has no planned series to cancel." in messages(tab(at, "series"), "caption")


@pytest.mark.slow
def test_cancelling_without_a_reason_is_refused_and_changes_nothing(record, clinic_db, dump):
    plan_directly(clinic_db, "P001", clinic_db.today + timedelta(days=7))
    before = dump(clinic_db.open())
    at = button(pick_patient(record, "series", "P001"), "Cancel the planned series").click().run()
    assert len(at.error) == 1
    assert at.error[0].value.startswith("Cannot cancel series")
    assert "reason is required" in at.error[0].value
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_only_planned_series_are_offered_for_cancelling(record, clinic_db):
    at = pick_patient(record, "series", "P002")           # P002 has one given series, nothing planned
    form = tab(at, "series")
    assert not [w for w in form.selectbox if w.label == "Planned series"]
    assert "This patient has no planned series to cancel." in messages(form, "caption")


# Infusions: vital signs and adverse events -----------------------------------------------------------


def infusion_form(at, patient_id: str):
    return pick_patient(at, "infusion", patient_id)


def tick(at, kind: str, severity: str | None = None, action: str | None = None,
         description: str | None = None):
    """Tick an adverse event; its severity, action and description appear once it is ticked."""
    label = kind.replace("_", " ").capitalize()
    widget(tab(at, "infusion"), "checkbox", label).check().run()
    form = tab(at, "infusion")
    if severity:
        widget(form, "radio", f"Severity of {label.lower()}").set_value(severity)
    if action:
        widget(form, "radio", f"Action taken for {label.lower()}").set_value(action)
    if description is not None:
        widget(form, "text_input", "Describe the other adverse event").input(description)
    return at.run()


VITAL_LABELS = {"bp_systolic_before": "Systolic BP before (mmHg)",
                "bp_diastolic_before": "Diastolic BP before (mmHg)",
                "bp_systolic_after": "Systolic BP after (mmHg)",
                "bp_diastolic_after": "Diastolic BP after (mmHg)",
                "heart_rate": "Heart rate (beats/min)"}


@pytest.mark.slow
def test_an_infusion_with_vital_signs_and_adverse_events_is_saved(record, clinic_db):
    at = infusion_form(record, "P001")
    day = series_of(clinic_db, "P001")["first_infusion"].iloc[0].date() + timedelta(days=1)
    form = tab(at, "infusion")
    widget(form, "date_input", "Date").set_value(day)
    widget(form, "number_input", "Duration (min)").set_value(45)
    for name, value in {"bp_systolic_before": 128, "bp_diastolic_before": 82, "bp_systolic_after": 141,
                        "bp_diastolic_after": 88, "heart_rate": 76}.items():
        widget(form, "number_input", VITAL_LABELS[name]).set_value(value)
    widget(form, "selectbox", "Sedation (RASS)").set_value(-1)
    tick(at, "nausea", "moderate", "medication")
    tick(at, "dissociation", "mild")
    button(at, "Save infusion").click().run()
    assert not at.exception and not at.error
    assert messages(at, "success") == [
        f"Infusion of {day:%A} {words(day)} saved for P001. Adverse events saved: dissociation (mild), "
        "nausea (moderate, medication given)."]
    infusion = storage.load_infusions(clinic_db.open(), "P001").iloc[0]
    assert infusion[["infused_on", "duration_min", "dose_mg_per_kg", *storage.VITALS]].tolist() == [
        pd.Timestamp(day), 45, 0.5, 128, 82, 141, 88, 76, -1]
    events = storage.load_adverse_events(clinic_db.open(), "P001")
    assert events[["kind", "severity", "action"]].values.tolist() == [["dissociation", "mild", None],
                                                                     ["nausea", "moderate", "medication"]]


@pytest.mark.slow
def test_the_infusion_form_is_empty_after_a_save(record, clinic_db):
    """Issue: nausea ticked on day 2 only was saved on days 3 to 5 too."""
    first = series_of(clinic_db, "P001")["first_infusion"].iloc[0].date()
    at = infusion_form(record, "P001")
    form = tab(at, "infusion")
    widget(form, "date_input", "Date").set_value(first + timedelta(days=1))
    widget(form, "number_input", "Dose (mg/kg)").set_value(0.4)
    widget(form, "number_input", "Duration (min)").set_value(60)
    widget(form, "number_input", VITAL_LABELS["bp_systolic_before"]).set_value(130)
    widget(form, "number_input", VITAL_LABELS["bp_diastolic_before"]).set_value(85)
    widget(form, "number_input", VITAL_LABELS["heart_rate"]).set_value(90)
    widget(form, "selectbox", "Sedation (RASS)").set_value(-2)
    widget(form, "text_area", "Notes").input("Slept through")
    tick(at, "nausea", "severe", "stopped")
    tick(at, "other", "mild", "none", "Tingling lips")
    before = ids(tab(at, "infusion"))
    button(at, "Save infusion").click().run()
    assert not at.error, messages(at, "error")
    form = tab(at, "infusion")
    assert [c.value for c in form.checkbox] == [False] * len(storage.EVENT_KINDS)
    assert not [r for r in form.radio if r.label.startswith(("Severity", "Action"))]  # shown when ticked only
    assert [widget(form, "number_input", label).value for label in VITAL_LABELS.values()] == [None] * 5
    assert widget(form, "selectbox", "Sedation (RASS)").value is None
    assert widget(form, "date_input", "Date").value is None
    assert widget(form, "number_input", "Dose (mg/kg)").value == 0.5
    assert widget(form, "number_input", "Duration (min)").value == 40
    assert widget(form, "text_area", "Notes").value == ""
    assert not ids(form) & before
    # Ticking nausea again starts it without a severity or action.
    tick(at, "nausea")
    form = tab(at, "infusion")
    assert widget(form, "radio", "Severity of nausea").value is None
    assert widget(form, "radio", "Action taken for nausea").value is None
    # The next day is saved with nothing but what is entered for it.
    widget(tab(at, "infusion"), "checkbox", "Nausea").uncheck()
    widget(tab(at, "infusion"), "date_input", "Date").set_value(first + timedelta(days=2))
    button(at.run(), "Save infusion").click().run()
    assert messages(at, "success")[-1].endswith("saved for P001. No adverse events.")
    events = storage.load_adverse_events(clinic_db.open(), "P001")
    day_2 = pd.Timestamp(first + timedelta(days=1))
    assert events[["infused_on", "kind", "description"]].values.tolist() == [[day_2, "nausea", None],
                                                                            [day_2, "other", "Tingling lips"]]
    second = storage.load_infusions(clinic_db.open(), "P001").iloc[1]
    assert second[list(storage.VITALS)].isna().all() and second["n_adverse_events"] == 0


@pytest.mark.slow
def test_a_refused_infusion_keeps_what_was_typed(record, clinic_db, dump):
    first = series_of(clinic_db, "P001")["first_infusion"].iloc[0].date()
    at = infusion_form(record, "P001")
    form = tab(at, "infusion")
    widget(form, "date_input", "Date").set_value(first)
    widget(form, "number_input", VITAL_LABELS["bp_systolic_before"]).set_value(150)  # no diastolic
    widget(form, "number_input", VITAL_LABELS["heart_rate"]).set_value(300)          # out of range
    tick(at, "nausea", "moderate", "slowed")
    before = dump(clinic_db.open())
    button(at, "Save infusion").click().run()
    assert len(at.error) == 1 and not at.success
    assert at.error[0].value.startswith("Cannot add the infusion to series")
    assert "blood pressure before: give both systolic and diastolic, or neither" in at.error[0].value
    assert "heart_rate must be a whole number from 20 to 250 beats per minute, got 300" in at.error[0].value
    assert dump(clinic_db.open()) == before
    form = tab(at, "infusion")
    assert widget(form, "checkbox", "Nausea").value is True
    assert widget(form, "radio", "Severity of nausea").value == "moderate"
    assert widget(form, "radio", "Action taken for nausea").value == "slowed"
    assert widget(form, "number_input", VITAL_LABELS["bp_systolic_before"]).value == 150
    assert widget(form, "date_input", "Date").value == first


@pytest.mark.slow
def test_an_adverse_event_without_a_severity_is_refused(record, clinic_db, dump):
    at = infusion_form(record, "P001")
    widget(tab(at, "infusion"), "date_input", "Date").set_value(
        series_of(clinic_db, "P001")["first_infusion"].iloc[0].date())
    tick(at, "hallucination", action="none")
    before = dump(clinic_db.open())
    button(at, "Save infusion").click().run()
    assert messages(at, "error") == ["Choose the severity of each adverse event ticked (hallucination). "
                                     "Nothing was saved."]
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_an_other_adverse_event_needs_a_description(record, clinic_db, dump):
    at = infusion_form(record, "P001")
    widget(tab(at, "infusion"), "date_input", "Date").set_value(
        series_of(clinic_db, "P001")["first_infusion"].iloc[0].date())
    tick(at, "other", "mild", description="   ")
    before = dump(clinic_db.open())
    button(at, "Save infusion").click().run()
    assert len(at.error) == 1
    assert 'an adverse event of kind "other" needs a short description of what happened' in at.error[0].value
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_an_infusion_outside_a_completed_series_is_refused(record, clinic_db, dump):
    at = infusion_form(record, "P001")
    before = dump(clinic_db.open())
    widget(tab(at, "infusion"), "date_input", "Date").set_value(clinic_db.today - timedelta(days=1))
    button(at, "Save infusion").click().run()
    assert len(at.error) == 1 and "is outside the series" in at.error[0].value
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_the_series_picker_shows_planned_and_given_series_with_progress(record, clinic_db):
    today = clinic_db.today
    old_first = series_of(clinic_db, "P001")["first_infusion"].iloc[0].date()
    old_last = old_first + timedelta(days=4)
    cancelled = plan_directly(clinic_db, "P001", today + timedelta(days=30))
    clinician = clinic_db.users["clinician"]
    clinic.cancel_series(clinic_db.open(), clinician, patient_id="P001", series_id=cancelled,
                         reason="rescheduled")
    voided = plan_directly(clinic_db, "P001", today + timedelta(days=60))
    clinic.void_record(clinic_db.open(), clinician, patient_id="P001", record="series", record_id=voided,
                       reason="entered for the wrong patient")
    planned = plan_directly(clinic_db, "P001", today - timedelta(days=2))
    clinic.log_infusion(clinic_db.open(), clinician, patient_id="P001", series_id=planned,
                        infused_on=today - timedelta(days=2), dose_mg_per_kg=0.5, duration_min=40,
                        today=today)
    at = infusion_form(record, "P001")
    picker = widget(tab(at, "infusion"), "selectbox", "Series")
    start = today - timedelta(days=2)
    assert picker.options == [
        f"Series 1: completed, {words(old_first)} to {words(old_last)}, 0 of 5 logged",
        f"Series 2: in progress from {words(start)}, 1 of 5 given",
    ]
    assert picker.value == planned            # the latest series is the one being given
    # A planned series takes its infusions day by day, from its first day on.
    widget(tab(at, "infusion"), "date_input", "Date").set_value(today - timedelta(days=1))
    button(at, "Save infusion").click().run()
    assert not at.error, messages(at, "error")
    assert widget(tab(at, "infusion"), "selectbox", "Series").options[-1].endswith("2 of 5 given")
    assert every_series(clinic_db, "P001").set_index("series_id").loc[planned, "infusions"] == 2


@pytest.mark.slow
def test_a_patient_without_a_series_is_asked_to_plan_one(record, clinic_db):
    at = enrol(record, "P100")
    assert ("This patient has no planned or given series: plan one on the “Plan or log a series” tab first."
            in messages(tab(at, "infusion"), "info"))


# Disposition --------------------------------------------------------------------------------------------


def disposition(at, patient_id: str, value: str, reason: str = "", on=None):
    at = pick_patient(at, "disposition", patient_id)
    form = tab(at, "disposition")
    widget(form, "radio", "New disposition").set_value(value)
    if on:
        widget(form, "date_input", "Effective date").set_value(on)
    widget(form, "text_input", "Reason").input(reason)
    return button(at, "Record the disposition").click().run()


@pytest.mark.slow
def test_the_current_disposition_is_shown(record, clinic_db):
    at = pick_patient(record, "disposition", "P002")
    enrolled = clinic_db.today - timedelta(days=60)
    assert messages(tab(at, "disposition"), "markdown")[0] == (
        f"**Current disposition:** Active since enrolment on {words(enrolled)}; no change recorded")


@pytest.mark.slow
def test_a_withdrawal_without_a_reason_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = disposition(record, "P002", "withdrawn")
    assert len(at.error) == 1
    assert at.error[0].value.startswith("Cannot record the disposition of patient 'P002'")
    assert "reason is required for a withdrawal" in at.error[0].value
    assert dump(clinic_db.open()) == before
    assert widget(tab(at, "disposition"), "radio", "New disposition").value == "withdrawn"   # kept


@pytest.mark.slow
def test_a_withdrawal_with_a_reason_is_saved_and_shown(record, clinic_db):
    day = clinic_db.today - timedelta(days=2)
    at = disposition(record, "P002", "withdrawn", "Moved away **far**", on=day)
    assert not at.error, messages(at, "error")
    assert messages(at, "success") == [f"Disposition of P002 recorded: Withdrawn on {words(day)}."]
    patient = storage.load_patient(clinic_db.open(), "P002").iloc[0]
    assert patient[["disposition", "disposition_on", "disposition_reason", "disposition_by"]].tolist() == [
        "withdrawn", pd.Timestamp(day), "Moved away **far**", "cleo.clinician"]
    form = tab(at, "disposition")
    assert messages(form, "markdown")[0] == (f"**Current disposition:** Withdrawn on {words(day)}, recorded "
                                             "by cleo.clinician")
    assert messages(form, "text") == ["Reason: Moved away **far**"]     # stored text, shown literally
    assert widget(form, "radio", "New disposition").value is None      # an empty form again


@pytest.mark.slow
def test_a_disposition_needs_a_choice(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = button(pick_patient(record, "disposition", "P002"), "Record the disposition").click().run()
    assert len(at.error) == 1 and "disposition is required" in at.error[0].value
    assert dump(clinic_db.open()) == before


# Paper questionnaire on the patient's behalf ----------------------------------------------------------


def paper(at, patient_id: str, day, answers: dict):
    at = pick_patient(at, "paper", patient_id)
    at.date_input(key="record.paper.date").set_value(day)
    scope = tab(at, "paper")
    for form, value in answers.items():
        for number, item in enumerate(form.items, start=1):
            next(r for r in scope.radio if r.label.startswith(f"{number}. {item.description}")
                 and r.key and f".{form.key}." in r.key).set_value(value)
    return at.run()


def save_paper(at, label: str = "Save paper questionnaire"):
    return button(at, label).click().run()


def scores_on(clinic_db, patient_id, day, superseded=False):
    rows = storage.load_assessments(clinic_db.open(), patient_id=patient_id, include_superseded=superseded)
    return rows[rows["assessed_on"] == pd.Timestamp(day)]


def page_links(at) -> list[str]:
    """The pages linked to (their URL path)."""
    return [link.proto.page for link in at.get("page_link")]


def alert_ids(clinic_db, patient_id: str) -> set[int]:
    return set(storage.load_alerts(clinic_db.open(), patient_id=patient_id)["alert_id"])


@pytest.mark.slow
def test_a_paper_questionnaire_is_saved_as_entered_by_the_clinician(record, clinic_db):
    day = clinic_db.today - timedelta(days=1)
    alerts = alert_ids(clinic_db, "P002")
    at = paper(record, "P002", day, {PI: 2, DEP: 2})      # as two weeks ago: nothing for the alert rules
    before = ids(tab(at, "paper"))
    at = save_paper(at)
    assert not at.exception
    assert [m.split(" is ")[0] for m in messages(at, "success")] == ["The pain interference score",
                                                                     "The depression score"]
    assert messages(at, "warning") == ["The physical function answers were not scored: answer at least 3 of "
                                       "the 6 questions (0 answered). This part was not saved."]
    stored = scores_on(clinic_db, "P002", day)
    assert sorted(stored["domain"]) == ["depression", "pain_interference"]
    assert set(stored["source"]) == {"clinician"} and set(stored["entered_by"]) == {"cleo.clinician"}
    assert alert_ids(clinic_db, "P002") == alerts and not page_links(tab(at, "paper"))
    # The form is empty again for the next paper, with new widgets (the browser kept showing the answers).
    scope = tab(at, "paper")
    assert all(r.value is None for r in scope.radio)
    assert not ids(scope) & before


@pytest.mark.slow
def test_a_paper_entry_that_raises_an_alert_says_so(record, clinic_db):
    day = clinic_db.today - timedelta(days=1)
    alerts = alert_ids(clinic_db, "P002")
    at = save_paper(paper(record, "P002", day, {DEP: 5}))      # every depression answer at its most severe
    assert not at.exception and not at.error
    assert scores_on(clinic_db, "P002", day).set_index("domain").loc["depression", "t_score"] >= 70
    raised = storage.load_alerts(clinic_db.open(), patient_id="P002")
    raised = raised[~raised["alert_id"].isin(alerts)]
    assert raised[["domain", "priority"]].values.tolist() == [["depression", "high"]]
    assert messages(tab(at, "paper"), "warning")[0] == ("This entry raised 1 alert for clinician review: "
                                                        "open the Alerts page to acknowledge it.")
    assert page_links(tab(at, "paper")) == ["alerts"]
    assert all(r.value is None for r in tab(at, "paper").radio)


@pytest.mark.slow
def test_the_alert_warning_counts_every_alert_raised(record, clinic_db):
    day = clinic_db.today - timedelta(days=1)
    alerts = alert_ids(clinic_db, "P002")
    at = save_paper(paper(record, "P002", day, {PI: 5, DEP: 5}))   # both worse than two weeks ago
    raised = len(alert_ids(clinic_db, "P002") - alerts)
    assert raised == 2
    assert messages(tab(at, "paper"), "warning")[0] == ("This entry raised 2 alerts for clinician review: "
                                                        "open the Alerts page to acknowledge them.")


@pytest.mark.slow
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
    # A severe depression score raised a high-priority alert for the clinic, and the page says so.
    assert "high" in set(storage.load_alerts(clinic_db.open(), patient_id="P002", open_only=True)["priority"])
    assert messages(at, "warning")[0].startswith("This entry raised 1 alert for clinician review")


@pytest.mark.slow
def test_the_replace_question_is_not_carried_over_to_another_day(record, clinic_db):
    at = save_paper(paper(record, "P002", clinic_db.today - timedelta(weeks=2), {DEP: 3}))
    assert "Replace the entry" in [b.label for b in at.button]
    at.date_input(key="record.paper.date").set_value(clinic_db.today - timedelta(days=1)).run()
    assert not [m for m in messages(at, "warning") if m.startswith("This patient already has an entry")]
    assert "Save paper questionnaire" in [b.label for b in at.button]


@pytest.mark.slow
def test_a_paper_dated_in_the_future_or_unanswered_is_refused(record, clinic_db, dump):
    before = dump(clinic_db.open())
    at = save_paper(paper(record, "P002", clinic_db.today, {}))
    assert len(at.error) == 1 and "None of the questionnaires has enough answers" in at.error[0].value
    assert dump(clinic_db.open()) == before


# New invitation code ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_new_invitation_code_replaces_the_earlier_one(record, clinic_db):
    next(w for w in record.selectbox if w.key == "record.invite.patient").select("P002").run()
    at = button(record, "Create a new invitation code").click().run()
    assert messages(at, "success")[0].startswith("Invitation code for P002, valid until ")
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{2}", at.code[-1].value)
    invitations = clinic_db.open().conn.execute(
        "SELECT revoked_at IS NULL FROM invitations i JOIN patients p ON p.id = i.patient_ref "
        "WHERE p.patient_id = 'P002' ORDER BY i.id").fetchall()
    assert [bool(r[0]) for r in invitations] == [False, True]


# Contacts for reminders ----------------------------------------------------------------------------------------

CONTACTS = "Contacts for reminders"


def contacts_tab(at):
    found = [t for t in at.tabs if t.label == CONTACTS]
    assert len(found) == 1, [t.label for t in at.tabs]
    return found[0]


def fill_contact(at, email="", phone="", channel="none", consent_on=None):
    scope = contacts_tab(at)
    widget(scope, "text_input", "Email").input(email)
    widget(scope, "text_input", "Mobile number").input(phone)
    widget(scope, "radio", "Preferred channel").set_value(channel)
    widget(scope, "date_input", "Consent date").set_value(consent_on)
    return button(at, "Save contact details").click().run()


def test_contact_details_are_saved_and_shown_with_who_recorded_the_consent(record, clinic_db):
    record = pick_patient(record, "contacts", "P001")
    assert any("No contact details recorded" in m for m in messages(contacts_tab(record), "markdown"))
    day = clinic_db.today - timedelta(days=1)
    record = fill_contact(record, "Ann.Lee@Example.org", "(201) 555-0123", "sms", day)
    assert not record.exception
    assert "Contact details of P001 saved." in messages(record, "success")
    with clinic_db.open() as db:
        stored = storage.load_contacts(db, "P001").iloc[0]
        audit = storage.load_audit_log(db, action="set_contact")
    assert (stored["email"], stored["phone"], stored["channel"]) == ("Ann.Lee@example.org", "+12015550123", "sms")
    assert (stored["consent_by"], stored["consent_how"]) == ("cleo.clinician", "recorded")
    shown = " ".join(messages(contacts_tab(record), "markdown"))
    assert "Text message (SMS)" in shown and f"consent given on {words(day)}, recorded by cleo.clinician" in shown
    # the form shows what is stored, normalised
    assert widget(contacts_tab(record), "text_input", "Mobile number").value == "+12015550123"
    assert "0123" not in audit.to_json() and "Ann.Lee" not in audit.to_json()


def test_bad_contact_details_are_listed_per_field_and_nothing_is_saved(record, clinic_db, dump):
    record = pick_patient(record, "contacts", "P001")
    with clinic_db.open() as db:
        before = dump(db)
    record = fill_contact(record, "ann@", "12", "email", None)
    (error,) = messages(record, "error")
    assert error.startswith("Nothing was saved.")
    assert "- **Email**: email 'ann@' is not a valid email address" in error
    assert "- **Mobile number**: phone '12' is not" in error
    assert "- **Consent date**: consent_on is required" in error
    with clinic_db.open() as db:
        assert {t: r for t, r in dump(db).items() if t != "audit_log"} == \
            {t: r for t, r in before.items() if t != "audit_log"}
    # what was typed stays for correcting
    assert widget(contacts_tab(record), "text_input", "Email").value == "ann@"


def test_no_contact_value_is_carried_into_the_next_patient(record, clinic_db):
    record = pick_patient(record, "contacts", "P001")
    record = fill_contact(record, "ann@example.org", "+12015550123", "email", clinic_db.today)
    scope = contacts_tab(record)
    widget(scope, "text_input", "Email").input("typed.but.not.saved@example.org")
    record.run()
    record = pick_patient(record, "contacts", "P002")
    scope = contacts_tab(record)
    assert widget(scope, "text_input", "Email").value == ""
    assert widget(scope, "text_input", "Mobile number").value == ""
    assert widget(scope, "radio", "Preferred channel").value == "none"
    assert widget(scope, "date_input", "Consent date").value is None


@pytest.mark.slow
def test_stopping_messages_shows_who_and_when_and_keeps_the_addresses(record, clinic_db):
    record = pick_patient(record, "contacts", "P001")
    record = fill_contact(record, "ann@example.org", "", "email", clinic_db.today)
    record = button(record, "Stop all messages").click().run()
    assert "Messages to P001 stopped." in messages(record, "success")
    (warning,) = messages(contacts_tab(record), "warning")
    assert warning.startswith("Messages stopped on ") and "by cleo.clinician" in warning
    with clinic_db.open() as db:
        stored = storage.load_contacts(db, "P001").iloc[0]
        assert len(storage.load_audit_log(db, action="stop_messages")) == 1
    assert (stored["channel"], stored["email"], stored["opted_out_by"]) == ("none", "ann@example.org",
                                                                            "cleo.clinician")
    assert button(record, "Stop all messages").disabled


def test_open_check_in_links_are_revoked(record, clinic_db):
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    with clinic_db.open() as db:
        for i in range(2):
            storage.add_link(db, token_hash=f"{i:064x}", purpose="checkin", patient_id="P001",
                             expires_at=now + timedelta(days=3), by="remind", now=now)
    record = pick_patient(record, "contacts", "P001")
    record = button(record, "Revoke open check-in links (2)").click().run()
    assert "2 check-in links of P001 revoked." in messages(record, "success")
    assert button(record, "Revoke open check-in links (0)").disabled
    with clinic_db.open() as db:
        assert storage.load_links(db, "P001")["revoked_by"].tolist() == ["cleo.clinician"] * 2
