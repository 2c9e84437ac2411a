"""One patient for the clinician (app_pages/patient.py), and no way for a patient to reach another's record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from outcomes import clinic, storage
from outcomes.errors import PermissionDenied
from outcomes.settings import load_settings
from tests.page_helpers import charts, messages, seen, values
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from ui import navigation

PAGE = "app_pages/patient.py"


def open_patient(app_as, patient_id: str):
    at = app_as("clinician", PAGE)
    at.selectbox[0].select(patient_id).run()
    return at


def test_without_a_choice_the_page_asks_for_a_patient(app_as):
    at = app_as("clinician", PAGE)
    assert not at.exception
    assert at.selectbox[0].label == "Patient"
    assert at.selectbox[0].options == ["P001", "P002"]
    assert messages(at, "info") == ["Choose a patient, or select one on the Roster."]


def test_every_section_is_shown_for_the_chosen_patient(app_as, clinic_db):
    at = open_patient(app_as, "P002")
    assert not at.exception
    assert at.title[0].value == "Patient P002"
    assert at.text[0].value == "Fibromyalgia · female · born 1970"
    assert [s.value for s in at.subheader] == ["Series and infusions", "Trajectories", "Every assessment",
                                               "Item-level answers"]
    series = at.dataframe[0].value
    assert series[["Series", "Infusions", "Protocol"]].values.tolist() == [[1, 5, "5-day 0.5 mg/kg"]]
    assert len(charts(at)) == 3
    assert at.session_state["patient.selected"] == "P002"
    assert clinic.SAFETY_NOTICE in messages(at, "caption")     # depression scores shown: the notice too
    views = storage.load_audit_log(clinic_db.open(), action="view_record", actor="cleo.clinician")
    assert "P002" in set(views["patient_id"])


def test_open_alerts_are_shown_with_the_safety_notice(app_as):
    at = open_patient(app_as, "P001")
    assert messages(at, "error")[0].startswith("1 open alert(s): Depression T 69.3")
    assert clinic.SAFETY_NOTICE in messages(at, "caption")


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


def test_infusions_and_adverse_events_are_listed(app_as, clinic_db):
    db, today = clinic_db.open(), clinic_db.today
    series_id = int(storage.load_series(db, "P001")["series_id"].iloc[0])
    clinic.log_infusion(db, clinic_db.users["clinician"], patient_id="P001", series_id=series_id,
                        infused_on=today - timedelta(days=41), dose_mg_per_kg=0.5, duration_min=40,
                        adverse_events=[{"kind": "nausea", "severity": "mild"},
                                        {"kind": "blood_pressure_rise", "severity": "moderate"}], today=today)
    at = open_patient(app_as, "P001")
    assert at.expander[0].label == "1 infusions, 2 adverse events"
    infusions = at.dataframe[1].value
    assert infusions["adverse"].tolist() == ["nausea (mild), blood pressure rise (moderate)"]
    markers = [t for f in charts(at) for t in f["data"] if t.get("name") == "Infusion"]
    assert len(markers) == 3 and all(len(values(m["x"])) == 1 for m in markers)


def test_the_roster_choice_carries_over(app_as):
    at = app_as("clinician")
    at.session_state["patient.selected"] = "P002"
    at.switch_page(PAGE).run()
    assert at.title[0].value == "Patient P002"


def test_an_unknown_selected_id_asks_for_a_choice(app_as):
    at = app_as("clinician")
    at.session_state["patient.selected"] = "P999"
    at.switch_page(PAGE).run()
    assert messages(at, "info") == ["Choose a patient, or select one on the Roster."]


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
