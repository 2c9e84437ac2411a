"""The clinic's daily list (app_pages/roster.py): columns, search, filters, overdue flag, open a patient."""

from __future__ import annotations

import dataclasses

from datetime import UTC, datetime, timedelta

import pandas as pd

import pytest

from outcomes import auth, clinic, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import messages, new_session, select_row, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/roster.py"
FORMS = {f.domain: f for f in clinic.checkin_forms(load_settings())}


@pytest.fixture
def p100_checked_in_today_and_severe(clinic_db):
    """P100: enrolled today, no series, a check-in today with a severe depression score (high alert)."""
    db, now = clinic_db.open(), datetime.now(UTC)
    clinic.enrol_patient(db, clinic_db.users["clinician"], patient_id="P100", diagnosis="Major depression",
                         today=now.date(), now=now, settings=load_settings())
    dep = FORMS["depression"]
    clinic.submit_checkin(db, clinic_db.users["clinician"], patient_id="P100",
                          answers={dep.key: {i.item_id: 5 for i in dep.items}}, assessed_on=now.date(),
                          today=now.date(), now=now, settings=load_settings())


def roster(at):
    return at.dataframe[0].value


def multiselect(at, label):
    return next(m for m in at.multiselect if m.label == label)


def all_patients(at):
    at.radio(key="roster.view").set_value("all").run()
    return at


@pytest.mark.slow
def test_every_patient_with_series_check_ins_scores_and_alerts(app_as, clinic_db):
    at = all_patients(app_as("clinician", PAGE))
    assert not at.exception
    assert at.title[0].value == "Roster"
    table = roster(at)
    assert table.columns.tolist() == [
        "patient_id", "series_status", "followup_text", "open_alerts", "top_priority",
        "pain_interference_t", "pain_interference_change", "depression_t", "depression_change",
        "physical_function_t", "physical_function_change", "diagnosis", "last_checkin", "next_due", "disposition"]
    assert table["patient_id"].tolist() == ["P001", "P002"]
    p001 = table.iloc[0]
    assert p001["series_status"] == "Week 6 after series 1"
    # Last infusion 38 days ago: week 5 fell due 3 days ago (day 4 of the slot), and no score since.
    due = clinic_db.today - timedelta(days=3)
    assert (p001["followup_text"], p001["next_due"], p001["disposition"]) == (
        f"Week 5 overdue since {due:%d %b}", pd.Timestamp(due), "active")
    assert int(p001["open_alerts"]) == 1 and p001["top_priority"] == "routine"
    # Latest T and change from baseline agree with the patient's own record.
    record = clinic.patient_record(clinic_db.open(), clinic_db.users["clinician"], "P001",
                                   settings=load_settings()).assessments
    for domain in FORMS:
        latest = record[record["domain"] == domain].iloc[-1]
        assert p001[f"{domain}_t"] == pytest.approx(latest["t_score"])
        assert p001[f"{domain}_change"] == pytest.approx(latest["change"])
    assert [m.value for m in at.metric] == ["2", "0", "0", "0", "2 · 2"]
    assert messages(at, "caption")[0].startswith("2 of 2 patients.")
    assert clinic.SAFETY_NOTICE in messages(at, "caption")
    assert set(storage.load_audit_log(clinic_db.open(), action="view_roster")["actor"]) == {"cleo.clinician"}


@pytest.mark.slow
def test_high_priority_alerts_come_first(app_as, p100_checked_in_today_and_severe):
    at = all_patients(app_as("clinician", PAGE))
    table = roster(at)
    assert table["patient_id"].tolist() == ["P100", "P001", "P002"]
    p100 = table.iloc[0]
    # No series: nothing falls due for P100 (and nothing can be overdue).
    assert (p100["top_priority"], p100["series_status"], p100["followup_text"]) == ("high", "No series", "No series")
    assert [m.value for m in at.metric] == ["3", "0", "0", "1", "2 · 2"]


@pytest.mark.slow
def test_today_is_the_default_view_in_the_clinicians_order(app_as, clinic_db, p100_checked_in_today_and_severe):
    db, clinician, today = clinic_db.open(), clinic_db.users["clinician"], clinic_db.today
    clinic.enrol_patient(db, clinician, patient_id="P200", today=today, now=datetime.now(UTC),
                         settings=load_settings())
    clinic.plan_series(db, clinician, patient_id="P200", first_infusion=today, planned_infusions=5, today=today)
    clinic.enrol_patient(db, clinician, patient_id="P300", today=today, now=datetime.now(UTC),
                         settings=load_settings())
    clinic.plan_series(db, clinician, patient_id="P300", first_infusion=today + timedelta(days=14),
                       planned_infusions=5, today=today)
    clinic.set_disposition(db, clinician, patient_id="P002", disposition="withdrawn", on=today,
                           reason="moved away", today=today)
    at = app_as("clinician", PAGE)
    assert at.radio(key="roster.view").value == "today"
    table = roster(at)
    # P300's baseline falls due 7 days before its series (in a week): not on today's list yet.
    assert table["patient_id"].tolist() == ["P200", "P100", "P001", "P002"]
    assert table["today"].tolist() == [
        f"In series today · Baseline due by {today:%d %b}",  # planned today: due the day it was planned
        "Open alert (high)",
        f"Open alert (routine) · Week 5 overdue since {today - timedelta(days=3):%d %b} · call",
        "Open alert (routine)"]  # P002 was withdrawn: nothing falls due, but its alert still needs review
    assert [m.value for m in at.metric] == ["4", "1", "1", "1", "1 · 1"]
    # The headline counts follow the filters.
    next(t for t in at.toggle if t.label == "In series").set_value(True).run()
    assert roster(at)["patient_id"].tolist() == ["P200"]
    assert [m.value for m in at.metric] == ["1", "1", "1", "0", "0 · 0"]
    next(t for t in at.toggle if t.label == "In series").set_value(False).run()
    all_patients(at)
    p300 = roster(at).set_index("patient_id").loc["P300"]
    assert (p300["followup_text"], p300["next_due"]) == (
        f"Next: Baseline on {today + timedelta(days=7):%d %b}", pd.Timestamp(today + timedelta(days=7)))


@pytest.mark.slow
def test_a_quiet_day_says_so(app_as, clinic_db):
    db, clinician = clinic_db.open(), clinic_db.users["clinician"]
    for pid in ("P001", "P002"):
        clinic.set_disposition(db, clinician, patient_id=pid, disposition="discharged", on=clinic_db.today,
                               today=clinic_db.today)
        for alert in storage.load_alerts(db, patient_id=pid, open_only=True)["alert_id"]:
            clinic.acknowledge_alert(db, clinician, int(alert), now=datetime.now(UTC))
    at = app_as("clinician", PAGE)
    assert roster(at).empty
    assert messages(at, "success")[0].startswith("Nobody needs attention today")


@pytest.mark.slow
@pytest.mark.parametrize("query, expected", [("P002", ["P002"]), ("crps", ["P001"]), ("p00", ["P001", "P002"]),
                                             ("nobody", [])])
def test_search_by_patient_id_or_diagnosis(app_as, query, expected):
    at = all_patients(app_as("clinician", PAGE))
    text_input(at, "Search patient ID or diagnosis").input(query).run()
    assert roster(at)["patient_id"].tolist() == expected
    assert messages(at, "caption")[0].startswith(f"{len(expected)} of 2 patients.")


@pytest.mark.slow
def test_filter_by_check_in_status(app_as, p100_checked_in_today_and_severe):
    at = all_patients(app_as("clinician", PAGE))
    multiselect(at, "Follow-up").select("overdue").run()
    assert roster(at)["patient_id"].tolist() == ["P001", "P002"]
    assert roster(at)["followup_text"].str.contains("overdue").all()
    multiselect(at, "Follow-up").unselect("overdue").select("no series").run()
    assert roster(at)["patient_id"].tolist() == ["P100"]


@pytest.mark.slow
def test_filter_by_diagnosis_and_open_alerts(app_as, clinic_db, p100_checked_in_today_and_severe):
    at = all_patients(app_as("clinician", PAGE))
    multiselect(at, "Diagnosis").select("Fibromyalgia").run()
    assert roster(at)["patient_id"].tolist() == ["P002"]
    multiselect(at, "Diagnosis").unselect("Fibromyalgia").run()
    alerts = storage.load_alerts(clinic_db.open(), patient_id="P002")
    clinic.acknowledge_alert(clinic_db.open(), clinic_db.users["clinician"], int(alerts["alert_id"].iloc[0]),
                             now=datetime.now(UTC))
    next(t for t in at.toggle if t.label == "Open alerts only").set_value(True).run()
    assert roster(at)["patient_id"].tolist() == ["P100", "P001"]


@pytest.mark.slow
def test_selecting_a_row_opens_that_patient(app_as):
    at = all_patients(app_as("clinician", PAGE))
    select_row(at, 1)
    assert not at.exception
    assert at.title[0].value == "Patient P002"
    assert at.session_state["patient.selected"] == "P002"
    at.switch_page(PAGE).run()                      # back on the roster, it does not bounce to the patient
    assert at.title[0].value == "Roster"


@pytest.mark.slow
def test_selecting_a_row_of_a_filtered_list_opens_the_patient_shown(app_as):
    at = all_patients(app_as("clinician", PAGE))
    text_input(at, "Search patient ID or diagnosis").input("P002").run()
    select_row(at, 0)
    assert at.title[0].value == "Patient P002"


def test_an_empty_clinic_points_to_enrolment(tmp_path, monkeypatch, fast_hasher):
    db, now = storage.connect(tmp_path / "new.db"), datetime.now(UTC)
    admin = auth.create_first_admin(db, "ada.admin", PASSWORD, now=now)
    clinician = auth.create_user(db, admin, username="cleo.clinician", role="clinician", password=PASSWORD,
                                 now=now)
    monkeypatch.setenv("OUTCOMES_DB_PATH", str(tmp_path / "new.db"))
    at = new_session()
    storage.update_user(db, clinician.id, must_change_password=False)
    at.session_state["auth.user"] = dataclasses.replace(clinician, must_change_password=False)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Roster"
    assert messages(at, "info") == ["No patients yet. Enrol the first one on the Record page."]
    assert [link.proto.label for link in at.get("page_link")] == ["Record → Enrol a patient"]
