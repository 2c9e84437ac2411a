"""One patient for the clinician (app_pages/patient.py), and no way for a patient to reach another's record."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from outcomes import clinic, storage
from outcomes.errors import PermissionDenied
from outcomes.settings import load_settings
from tests.page_helpers import button, charts, messages, seen, values
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from ui import navigation

PAGE = "app_pages/patient.py"


def open_patient(app_as, patient_id: str):
    at = app_as("clinician", PAGE)
    at.selectbox[0].select(patient_id).run()
    return at


def frame(at, column: str) -> pd.DataFrame:
    """The page's table with this column (each table has its own headers)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no table with a column {column!r}: {[list(d.value.columns) for d in at.dataframe]}"
    return found[0]


def refusals(at) -> list[str]:
    """Error messages other than the open-alert banner (both fixture patients have an open alert)."""
    return [m for m in messages(at, "error") if "open alert(s)" not in m]


def in_words(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def pick(at, kind: str, record_id=None):
    """Choose what to correct (and which record) in the "Correct or void a record" section."""
    at.selectbox(key="patient.fix.kind").select(kind).run()
    if record_id is not None:
        at.selectbox(key=f"patient.fix.{at.session_state['patient.selected']}.{kind}").select(record_id).run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_without_a_choice_the_page_asks_for_a_patient(app_as):
    at = app_as("clinician", PAGE)
    assert not at.exception
    assert at.selectbox[0].label == "Patient"
    assert at.selectbox[0].options == ["P001", "P002"]
    assert messages(at, "info") == ["Choose a patient, or select one on the Roster."]


@pytest.mark.slow
def test_every_section_is_shown_for_the_chosen_patient(app_as, clinic_db):
    at = open_patient(app_as, "P002")
    assert not at.exception
    assert at.title[0].value == "Patient P002"
    assert at.text[0].value == "Fibromyalgia · female · born 1970 · Active"
    assert [s.value for s in at.subheader] == ["Alert history", "Follow-up", "Series and infusions", "Trajectories",
                                               "Every assessment", "Item-level answers",
                                               "Correct or void a record", "History of this record"]
    series = frame(at, "Infusions given")
    assert series[["Series", "Status", "Infusions given", "Protocol"]].values.tolist() == [
        [1, "Completed", 5, "5-day 0.5 mg/kg"]]
    assert len(charts(at)) == 3
    assert at.session_state["patient.selected"] == "P002"
    assert clinic.SAFETY_NOTICE in messages(at, "caption")     # depression scores shown: the notice too
    views = storage.load_audit_log(clinic_db.open(), action="view_record", actor="cleo.clinician")
    assert "P002" in set(views["patient_id"])


@pytest.mark.slow
def test_open_alerts_are_shown_with_the_safety_notice(app_as):
    at = open_patient(app_as, "P001")
    assert messages(at, "error")[0].startswith("1 open alert(s): Depression T 69.3")
    assert clinic.SAFETY_NOTICE in messages(at, "caption")


@pytest.mark.slow
def test_the_assessment_table_shows_method_se_and_reliable_change_apart_from_meaningful_change(app_as, clinic_db):
    at = open_patient(app_as, "P001")
    table = next(at.dataframe[i].value for i in range(len(at.dataframe)) if "rci" in at.dataframe[i].value)
    assert table.columns.tolist() == ["assessed_on", "domain", "form", "t_score", "se", "method", "n_answered",
                                      "source", "entered_by", "change", "improved", "rci", "reliable"]
    assert len(table) == 9                                        # 3 check-ins x 3 domains
    assert set(table["method"]) <= {"eap", "table", "prorated"} and table["se"].notna().all()
    assert set(table["source"]) == {"clinician"} and set(table["entered_by"]) == {"cleo.clinician"}
    newest = table.iloc[0]
    assert newest["assessed_on"] == max(table["assessed_on"])
    expected_rci, _ = clinic.reliable_change(
        *table[(table["domain"] == newest["domain"])].iloc[-1][["t_score", "se"]], newest["t_score"], newest["se"])
    assert newest["rci"] == pytest.approx(expected_rci)
    assert seen(at, "**reliable change** asks whether that change is larger than the measurement error",
                "caption")


@pytest.mark.slow
def test_infusions_and_adverse_events_are_listed(app_as, clinic_db):
    db, today = clinic_db.open(), clinic_db.today
    series_id = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    clinic.log_infusion(db, clinic_db.users["clinician"], patient_id="P001", series_id=series_id,
                        infused_on=today - timedelta(days=41), dose_mg_per_kg=0.5, duration_min=40,
                        adverse_events=[{"kind": "nausea", "severity": "mild"},
                                        {"kind": "blood_pressure_rise", "severity": "moderate",
                                         "action": "slowed"},
                                        {"kind": "other", "severity": "mild", "action": "medication",
                                         "description": "headache"}],
                        bp_systolic_before=142, bp_diastolic_before=88, bp_systolic_after=151,
                        bp_diastolic_after=92, heart_rate=78, sedation_rass=-1, today=today)
    at = open_patient(app_as, "P001")
    assert at.expander[0].label == "1 infusions, 3 adverse events"
    infusions = frame(at, "adverse")
    assert infusions["adverse"].tolist() == [
        "nausea (mild), blood pressure rise (moderate, infusion slowed), headache (mild, medication given)"]
    assert infusions[["bp_before", "bp_after", "heart_rate", "rass", "status"]].values.tolist() == [
        ["142/88", "151/92", 78, "-1", "Given"]]
    markers = [t for f in charts(at) for t in f["data"] if t.get("name") == "Infusion"]
    assert len(markers) == 3 and all(len(values(m["x"])) == 1 for m in markers)


@pytest.mark.slow
def test_the_roster_choice_carries_over(app_as):
    at = app_as("clinician")
    at.session_state["patient.selected"] = "P002"
    at.switch_page(PAGE).run()
    assert at.title[0].value == "Patient P002"


@pytest.mark.slow
def test_an_unknown_selected_id_asks_for_a_choice(app_as):
    at = app_as("clinician")
    at.session_state["patient.selected"] = "P999"
    at.switch_page(PAGE).run()
    assert messages(at, "info") == ["Choose a patient, or select one on the Roster."]


# Alerts, disposition, series states -----------------------------------------------------------------


@pytest.mark.slow
def test_the_alert_history_lists_open_alerts_first_then_who_acknowledged_when_with_the_note(
        app_as, clinic_db, monkeypatch):
    monkeypatch.setenv("OUTCOMES_TIMEZONE", "America/Chicago")
    db, today, lee = clinic_db.open(), clinic_db.today, clinic_db.users["clinician"]
    old = int(storage.load_alerts(db, patient_id="P001")["alert_id"].iloc[0])
    clinic.acknowledge_alert(db, lee, old, now=datetime(2026, 1, 15, 15, 30, tzinfo=UTC),
                             note="Called the patient; safety plan reviewed")
    worse = {form.key: {item.item_id: 5 if form.domain != "physical_function" else 1 for item in form.items}
             for form in clinic.checkin_forms(load_settings())}
    result = clinic.submit_checkin(db, lee, patient_id="P001", answers=worse, assessed_on=today, today=today,
                                   now=datetime.now(UTC), settings=load_settings(), source="clinician")
    raised = result.alerts_created
    assert raised >= 1  # a severe depression score
    at = open_patient(app_as, "P001")
    alerts = frame(at, "Priority")
    assert alerts.columns.tolist() == ["Raised", "Priority", "Domain", "T", "Reason", "Status", "Note"]
    # Open ones first; who acknowledged and when (15:30 UTC, in the clinic's time zone), and the note.
    acknowledged = "Acknowledged by cleo.clinician, 2026-01-15 09:30"
    assert alerts["Status"].tolist() == ["Open"] * raised + [acknowledged]
    assert alerts["Priority"].iloc[0] == "High" and alerts["Reason"].iloc[0].startswith("Depression T ")
    assert alerts["Note"].iloc[:raised].isna().all()
    done = alerts.iloc[-1]
    assert (done["Domain"], done["T"], done["Priority"]) == ("Depression", 69.3, "Routine")
    assert done["Reason"].startswith("Depression T 69.3 is from 65 to below 70")
    assert done["Note"] == "Called the patient; safety plan reviewed"
    assert messages(at, "error")[0].startswith(f"{raised} open alert(s): Depression T ")  # the banner stays
    assert clinic.SAFETY_NOTICE in messages(at, "caption")


@pytest.mark.slow
def test_a_patient_without_alerts_says_so(app_as, clinic_db):
    clinic.enrol_patient(clinic_db.open(), clinic_db.users["clinician"], patient_id="P003",
                         today=clinic_db.today, now=datetime.now(UTC), settings=load_settings())
    at = open_patient(app_as, "P003")
    assert seen(at, "No alert has been raised for this patient.", "caption")
    assert not [d for d in at.dataframe if "Priority" in d.value.columns]


@pytest.mark.slow
def test_the_disposition_is_shown_with_its_date_reason_and_who_recorded_it(app_as, clinic_db):
    db, today = clinic_db.open(), clinic_db.today
    clinic.set_disposition(db, clinic_db.users["clinician"], patient_id="P002", disposition="withdrawn",
                           on=date(2025, 3, 3), reason="moved away", today=today)
    at = open_patient(app_as, "P002")
    assert at.text[0].value == ("Fibromyalgia · female · born 1970 · Withdrawn on 3 March 2025 (moved away), "
                                "recorded by cleo.clinician")
    links = {link.proto.label: link.proto.page for link in at.get("page_link")}
    assert links["Change the disposition (discharged, withdrawn…) on the Record page"] == "record"


@pytest.mark.slow
def test_every_series_is_listed_with_its_status_in_words(app_as, clinic_db):
    db, today, lee = clinic_db.open(), clinic_db.today, clinic_db.users["clinician"]
    logged = int(storage.load_series(db, "P002")["series_id"].iloc[0])
    started = clinic.plan_series(db, lee, patient_id="P002", first_infusion=today - timedelta(days=3),
                                 planned_infusions=3, dose_mg_per_kg=0.5, today=today)
    clinic.log_infusion(db, lee, patient_id="P002", series_id=started, infused_on=today - timedelta(days=3),
                        dose_mg_per_kg=0.5, duration_min=40, today=today)
    clinic.plan_series(db, lee, patient_id="P002", first_infusion=today + timedelta(days=14),
                       planned_infusions=5, protocol="5-day 0.5 mg/kg", dose_mg_per_kg=0.5, today=today)
    cancelled = clinic.plan_series(db, lee, patient_id="P002", first_infusion=today + timedelta(days=60),
                                   planned_infusions=5, today=today)
    clinic.cancel_series(db, lee, patient_id="P002", series_id=cancelled, reason="patient declined")
    clinic.void_record(db, lee, patient_id="P002", record="series", record_id=logged,
                       reason="entered for the wrong patient")
    at = open_patient(app_as, "P002")
    series = frame(at, "Infusions given")
    assert series["Status"].tolist() == [
        "Voided (entered for the wrong patient)", "In progress (1 of 3 given)",
        f"Planned (first infusion on {in_words(today + timedelta(days=14))}, 5 planned)",
        "Cancelled (patient declined)"]
    assert series["Infusions given"].tolist() == [5, 1, 0, 0]
    assert series["Planned end"].iloc[2] == pd.Timestamp(today + timedelta(days=18))  # 5 consecutive days
    assert series["First infusion"].iloc[1] == pd.Timestamp(today - timedelta(days=3))
    assert series["First infusion"].iloc[2:].isna().all()  # nothing given yet


@pytest.mark.slow
def test_a_voided_infusion_is_listed_as_voided_with_its_reason(app_as, clinic_db):
    db, today, lee = clinic_db.open(), clinic_db.today, clinic_db.users["clinician"]
    series_id = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    for day in (41, 40):
        infusion = clinic.log_infusion(db, lee, patient_id="P001", series_id=series_id,
                                       infused_on=today - timedelta(days=day), dose_mg_per_kg=0.5,
                                       duration_min=40, today=today,
                                       adverse_events=[{"kind": "nausea", "severity": "mild"}])
    clinic.void_record(db, lee, patient_id="P001", record="infusion", record_id=infusion,
                       reason="logged twice")
    at = open_patient(app_as, "P001")
    assert at.expander[0].label == "1 infusions, 1 adverse events (1 voided infusion(s) listed too)"
    infusions = frame(at, "adverse")
    assert infusions["status"].tolist() == ["Given", "Voided (logged twice)"]
    assert infusions["infused_on"].tolist() == [pd.Timestamp(today - timedelta(days=d)) for d in (41, 40)]


# Corrections and voids, with the record's history ------------------------------------------------------


def dose_input(at, series_id: int):
    return at.number_input(key=f"patient.fix.series.{series_id}.dose_mg_per_kg")


@pytest.mark.slow
def test_correcting_a_series_dose_with_a_reason_stores_it_and_the_history_shows_it(app_as, clinic_db):
    db = clinic_db.open()
    series_id = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    at = pick(open_patient(app_as, "P001"), "series", series_id)
    assert dose_input(at, series_id).value == 0.5  # the form starts from what is stored
    dose_input(at, series_id).set_value(0.35)
    at.text_input(key=f"patient.fix.series.{series_id}.reason").input("pharmacy label said 0.35 mg/kg")
    button(at, "Save correction").click().run()
    assert not at.exception and not refusals(at)
    first, last = (in_words(clinic_db.today - timedelta(days=d)) for d in (42, 38))
    assert messages(at, "success") == [f"Saved the correction of Series 1: {first} to {last}. The old values "
                                       "are kept in the history below."]
    assert storage.load_series(db, "P001")["dose_mg_per_kg"].tolist() == [0.35]
    history = frame(at, "Change")
    assert len(history) == 1
    change = history.iloc[0]
    assert "0.5 → 0.35" in change["Change"]
    assert (change["Who"], change["Action"], change["Reason"]) == ("cleo.clinician", "Corrected",
                                                                   "pharmacy label said 0.35 mg/kg")
    assert change["Record"].startswith("Series 1: ")
    assert frame(at, "Infusions given")["Dose (mg/kg)"].tolist() == [0.35]  # the page shows the new value
    assert dose_input(at, series_id).value == 0.35
    assert at.text_input(key=f"patient.fix.series.{series_id}.reason").value == ""  # no reason carried over


@pytest.mark.slow
def test_a_correction_without_a_reason_is_refused_and_changes_nothing(app_as, clinic_db):
    db = clinic_db.open()
    series_id = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    at = pick(open_patient(app_as, "P001"), "series", series_id)
    dose_input(at, series_id).set_value(0.35)
    button(at, "Save correction").click().run()
    assert not at.exception
    assert len(refusals(at)) == 1 and "reason is required: say why the record is changed" in refusals(at)[0]
    assert not at.success
    assert storage.load_series(db, "P001")["dose_mg_per_kg"].tolist() == [0.5]
    assert storage.load_record_changes(db, "P001").empty
    assert seen(at, "No correction, void, cancellation or disposition recorded yet.", "caption")
    assert dose_input(at, series_id).value == 0.35  # what was typed stays, to add the reason and save again


@pytest.mark.slow
def test_the_form_never_carries_one_record_s_values_over_to_another(app_as, clinic_db):
    db, today = clinic_db.open(), clinic_db.today
    first = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    second = clinic.plan_series(db, clinic_db.users["clinician"], patient_id="P001",
                                first_infusion=today + timedelta(days=7), planned_infusions=5,
                                dose_mg_per_kg=0.8, today=today)
    at = pick(open_patient(app_as, "P001"), "series", first)
    dose_input(at, first).set_value(0.35)
    at.text_input(key=f"patient.fix.series.{first}.reason").input("typo")
    at.run()
    pick(at, "series", second)
    assert dose_input(at, second).value == 0.8
    assert at.text_input(key=f"patient.fix.series.{second}.reason").value == ""
    assert at.date_input(key=f"patient.fix.series.{second}.first_infusion").label == "Planned first infusion"
    assert at.date_input(key=f"patient.fix.series.{second}.first_infusion").value == today + timedelta(days=7)


@pytest.mark.slow
def test_correcting_the_demographics_shows_the_new_values_in_the_header(app_as, clinic_db):
    at = pick(open_patient(app_as, "P002"), "patient")
    assert at.number_input(key="patient.fix.patient.P002.birth_year").value == 1970
    at.number_input(key="patient.fix.patient.P002.birth_year").set_value(1971)
    at.text_input(key="patient.fix.patient.P002.reason").input("birth year read from the wrong form")
    button(at, "Save correction").click().run()
    assert not at.exception and not refusals(at)
    assert at.text[0].value == "Fibromyalgia · female · born 1971 · Active"
    change = frame(at, "Change").iloc[0]
    assert (change["Record"], change["Change"]) == ("Demographics", "birth year: 1970 → 1971")


@pytest.mark.slow
def test_correcting_the_diagnosis_code_keeps_the_note_and_records_both_in_the_trail(app_as, clinic_db):
    db = clinic_db.open()
    sfn = storage.add_diagnosis_code(db, "Small fibre neuropathy", by="ada.admin")
    at = pick(open_patient(app_as, "P002"), "patient")
    code = at.selectbox(key="patient.fix.patient.P002.diagnosis_code")
    assert code.label == "Diagnosis (the clinic's code; what QI sees)" and "Small fibre neuropathy" in code.options
    code.set_value(sfn)
    at.text_input(key="patient.fix.patient.P002.diagnosis").input("Fibromyalgia, widespread; SFN on biopsy")
    at.text_input(key="patient.fix.patient.P002.reason").input("skin biopsy result")
    button(at, "Save correction").click().run()
    assert not at.exception and not refusals(at)
    assert at.text[0].value == ("Small fibre neuropathy (note: Fibromyalgia, widespread; SFN on biopsy) · female · "
                                "born 1970 · Active")
    changes = set(frame(at, "Change")["Change"])
    assert "diagnosis code: Fibromyalgia → Small fibre neuropathy" in changes
    assert "diagnosis note: Fibromyalgia → Fibromyalgia, widespread; SFN on biopsy" in changes
    # Only the code: nothing else changed is no error.
    other = storage.add_diagnosis_code(db, "Other chronic pain (coded later)", by="ada.admin")
    at = pick(open_patient(app_as, "P002"), "patient")
    at.selectbox(key="patient.fix.patient.P002.diagnosis_code").set_value(other)
    at.text_input(key="patient.fix.patient.P002.reason").input("biopsy belonged to another patient")
    button(at, "Save correction").click().run()
    assert not refusals(at)
    assert storage.load_patient(clinic_db.open(), "P002")["diagnosis_code"].tolist() == [other]
    # And nothing at all changed is refused, as for any record.
    at = pick(open_patient(app_as, "P002"), "patient")
    at.text_input(key="patient.fix.patient.P002.reason").input("no change")
    button(at, "Save correction").click().run()
    assert any("nothing was changed" in m for m in refusals(at))


@pytest.mark.slow
def test_correcting_an_assessment_s_date_keeps_the_corrected_score_chosen(app_as, clinic_db):
    db, today = clinic_db.open(), clinic_db.today
    scores = storage.load_assessments(db, patient_id="P002", domains=["depression"])
    old = int(scores["assessment_id"].iloc[-1])
    at = pick(open_patient(app_as, "P002"), "assessment", old)
    assert at.number_input(key=f"patient.fix.assessment.{old}.t_score").disabled  # scored: T from its answers
    at.date_input(key=f"patient.fix.assessment.{old}.assessed_on").set_value(today - timedelta(days=13))
    at.text_input(key=f"patient.fix.assessment.{old}.reason").input("paper form dated the day before")
    button(at, "Save correction").click().run()
    assert not at.exception and not refusals(at)
    scores = storage.load_assessments(db, patient_id="P002", domains=["depression"])
    new = int(scores["assessment_id"].iloc[-1])
    assert new != old
    assert at.selectbox(key="patient.fix.P002.assessment").value == new
    assert at.date_input(key=f"patient.fix.assessment.{new}.assessed_on").value == today - timedelta(days=13)
    replaced = frame(at, "Entered at")
    assert replaced["Status"].tolist() == ["Corrected (see the history above)"]


@pytest.mark.slow
def test_voiding_an_assessment_removes_it_from_the_scores_and_lists_it_as_voided(app_as, clinic_db,
                                                                                  monkeypatch):
    monkeypatch.setenv("OUTCOMES_TIMEZONE", "UTC")
    db = clinic_db.open()
    newest = storage.load_assessments(db, patient_id="P001", domains=["depression"]).iloc[-1]
    at = pick(open_patient(app_as, "P001"), "assessment", int(newest["assessment_id"]))
    at.text_input(key=f"patient.fix.assessment.{newest['assessment_id']}.void_reason").input(
        "entered for the wrong patient")
    button(at, "Void this assessment").click().run()
    assert not at.exception and not refusals(at)
    assert messages(at, "success") == [f"Voided Depression score of {in_words(newest['assessed_on'])}: "
                                       f"T {newest['t_score']:.1f}."]
    scores = frame(at, "rci")
    assert len(scores) == 8
    assert not ((scores["domain"] == "Depression") & (scores["assessed_on"] == newest["assessed_on"])).any()
    assert at.expander[-1].label == "Replaced or voided scores (1)"
    voided = frame(at, "Entered at")
    assert voided[["Date", "Domain", "T"]].values.tolist() == [[newest["assessed_on"], "Depression",
                                                                newest["t_score"]]]
    stored = storage.load_assessments(db, patient_id="P001", include_superseded=True)
    when = stored.loc[stored["assessment_id"] == newest["assessment_id"], "voided_at"].iloc[0]
    assert voided["Status"].tolist() == [
        f"Voided by cleo.clinician, {when:%Y-%m-%d %H:%M} (entered for the wrong patient)"]
    change = frame(at, "Change").iloc[0]
    assert (change["Action"], change["Reason"]) == ("Voided", "entered for the wrong patient")
    assert change["Record"].startswith("Depression score of ")
    picker = at.selectbox(key="patient.fix.P001.assessment")
    assert picker.value is None and len(picker.options) == 8  # the voided one is no longer offered
    voided_label = f"Depression score of {in_words(newest['assessed_on'])}: T {newest['t_score']:.1f}"
    assert voided_label not in picker.options


@pytest.mark.slow
def test_voiding_without_a_reason_is_refused(app_as, clinic_db):
    db = clinic_db.open()
    series_id = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    at = pick(open_patient(app_as, "P001"), "series", series_id)
    button(at, "Void this series").click().run()
    assert len(refusals(at)) == 1 and "reason is required" in refusals(at)[0]
    assert not storage.load_series(db, "P001").empty and storage.load_record_changes(db, "P001").empty


@pytest.mark.slow
def test_demographics_cannot_be_voided(app_as, clinic_db):
    at = pick(open_patient(app_as, "P001"), "patient")
    assert [b.label for b in at.button if b.label.startswith("Void")] == []
    assert seen(at, "A patient cannot be voided", "caption")


# A patient can never reach another patient's record -----------------------------------------------


def test_a_patient_s_session_has_no_patient_page_whatever_its_state(app_as, clinic_db):
    at = app_as("patient")
    at.session_state["patient.selected"] = "P002"
    at.run()
    assert PAGE not in {p.path for p in navigation.pages_for("patient")}
    with pytest.raises(ValueError):
        at.switch_page(PAGE)
    assert not seen(at, "P002")


def test_a_patient_running_the_page_file_directly_sees_nothing_and_is_audited(clinic_db):
    at = AppTest.from_file(str(navigation.ROOT / PAGE), default_timeout=60)
    at.session_state["auth.user"] = clinic_db.users["patient"]
    at.session_state["patient.selected"] = "P002"
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "role" in at.error[0].value
    assert not at.title and not at.dataframe and not seen(at, "P002")
    denied = storage.load_audit_log(clinic_db.open(), action="access_denied", actor="pat.patient")
    assert json.loads(denied["details"].iloc[0])["attempted"] == "open_page"


def test_the_service_layer_refuses_another_patient_s_record_with_an_audit_entry(clinic_db):
    db = clinic_db.open()
    with pytest.raises(PermissionDenied, match="You can only see and enter your own check-ins"):
        clinic.patient_record(db, clinic_db.users["patient"], "P002", settings=load_settings())
    denied = storage.load_audit_log(db, action="access_denied", actor="pat.patient")
    assert denied["patient_id"].tolist() == ["P002"]
    assert json.loads(denied["details"].iloc[0]) == {"attempted": "view_record", "reason": "another patient's record",
                                                     "patient_id": "P002"}
    assert storage.load_audit_log(db, action="view_record", patient_id="P002", actor="pat.patient").empty


@pytest.mark.parametrize("call", [
    lambda db, u, s: clinic.checkin_due(db, u, "P002", today=datetime.now(UTC).date(), settings=s),
    lambda db, u, s: clinic.load_draft(db, u, "P002"),
    lambda db, u, s: clinic.save_draft(db, u, "P002", {}, now=datetime.now(UTC)),
    lambda db, u, s: clinic.submit_checkin(db, u, patient_id="P002", answers={}, assessed_on=datetime.now(UTC).date(),
                                           today=datetime.now(UTC).date(), now=datetime.now(UTC), settings=s),
], ids=["checkin_due", "load_draft", "save_draft", "submit_checkin"])
def test_every_patient_facing_call_refuses_another_patient(clinic_db, call):
    db = clinic_db.open()
    with pytest.raises(PermissionDenied):
        call(db, clinic_db.users["patient"], load_settings())
    assert storage.load_audit_log(db, action="access_denied", patient_id="P002")["actor"].tolist() == ["pat.patient"]


@pytest.mark.slow
def test_a_full_promis29_day_shows_its_trajectories_and_the_summary_scores_waiting_for_pain_intensity(
        app_as, clinic_db):
    db = clinic_db.open()
    day = clinic_db.today - timedelta(days=1)
    extra = {"anxiety": 58.0, "fatigue": 61.0, "sleep_disturbance": 55.0, "ability_to_participate": 42.0,
             "pain_interference": 63.0, "depression": 57.0, "physical_function": 38.0}
    for domain, t in extra.items():
        storage.save_assessment(db, patient_id="P002", assessed_on=day, domain=domain, t_score=t, method="imported",
                                source="clinician", entered_by="x")
    record = clinic.patient_record(db, clinic_db.users["clinician"], "P002", settings=load_settings())
    assert record.summary_scores[["physical_health_t", "mental_health_t"]].isna().all().all()
    assert record.summary_scores["missing"].tolist() == ["pain_intensity"]
    at = open_patient(app_as, "P002")
    assert not at.exception
    assert "PROMIS-29 summary scores" in [s.value for s in at.subheader]
    assert len(charts(at)) == 7  # one trajectory per domain with scores
    assert frame(at, "missing")["missing"].tolist() == ["pain intensity"]
