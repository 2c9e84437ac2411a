"""The REDCap import page (app_pages/import_redcap.py): upload, confirm the mapping, preview, import."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from outcomes import redcap, storage
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from tests.page_helpers import seen

PAGE = "app_pages/import_redcap.py"
HEADER = "record_id,redcap_event_name,visit_date,eddep04,eddep06,eddep29,eddep41,promis_pf_tscore\n"


@pytest.fixture
def export_text(clinic_db):
    day = clinic_db.today - timedelta(days=100)  # before the clinic's own check-ins
    return HEADER + (f"P001,baseline_arm_1,{day},2,3,2,2,38.5\n"
                     f"P002,baseline_arm_1,{day + timedelta(days=1)} 09:15,Often,3,2,2,\n")


def upload(at, text: str, name: str = "redcap.csv"):
    at.file_uploader(key="redcap.file").set_value((name, text.encode(), "text/csv")).run()
    assert not at.exception, at.exception
    return at


def imported(clinic_db):
    return storage.load_assessments(clinic_db.open(), domains=["depression"])


def test_without_a_file_the_page_explains_what_to_export(app_as):
    at = app_as("clinician", PAGE)
    assert at.title[0].value == "Import from REDCap" and seen(at, "Export data", "caption")
    assert [b.key for b in at.button] == ["auth.sign_out"]


@pytest.mark.slow
def test_upload_detect_preview_confirm_import(app_as, clinic_db, export_text):
    at = upload(app_as("clinician", PAGE), export_text)
    assert at.selectbox(key="redcap.record_id").value == "record_id"
    assert at.selectbox(key="redcap.date").value == "visit_date"
    assert at.radio(key="redcap.source.depression").value == "items"
    assert at.selectbox(key="redcap.form.depression").value == "depression_sf4a_v1.0"
    assert at.radio(key="redcap.source.physical_function").value == "tscore"
    assert at.radio(key="redcap.source.pain_interference").value == "none"
    assert [m.value for m in at.metric] == ["2", "3", "0", "0"]
    assert seen(at, "3 would be added")
    before = len(imported(clinic_db))
    assert at.button(key="redcap.import").disabled          # not before the user confirms
    at.checkbox(key="redcap.confirm").check().run()
    at.button(key="redcap.import").click().run()
    assert not at.exception
    assert seen(at, "Imported from redcap.csv: 3 added", "success")
    assert len(imported(clinic_db)) == before + 2
    assert seen(at, "already in the database", "info")       # the preview now finds nothing new
    entry = storage.load_audit_log(clinic_db.open(), action="import_redcap").iloc[0]
    assert entry["actor"] == "cleo.clinician" and json.loads(entry["details"])["scores_added"] == 3


@pytest.mark.slow
def test_rows_that_cannot_be_read_block_the_import(app_as, clinic_db, export_text):
    bad = export_text + "P001,month_1_arm_1,,1,1,1,1,\nP404,month_1_arm_1,2025-01-01,1,1,1,9,\n"
    at = upload(app_as("admin", PAGE), bad)
    assert at.metric[2].value == "2"
    assert at.error and "nothing can be imported" in at.error[0].value
    problems = at.code[0].value
    assert "redcap.csv line 4 (month_1_arm_1): no date" in problems
    assert "redcap.csv line 5 (month_1_arm_1): PROMIS SF v1.0 Depression 4a: EDDEP41=9" in problems
    assert at.checkbox(key="redcap.confirm").disabled and at.button(key="redcap.import").disabled


@pytest.mark.slow
def test_an_incomplete_mapping_stops_before_the_preview(app_as, export_text):
    at = upload(app_as("clinician", PAGE), export_text)
    at.selectbox(key="redcap.date").select_index(0).run()   # "(none)"
    assert at.warning and "REDCap event names are not dates" in at.warning[0].value
    assert not at.metric


def test_an_unreadable_file_is_refused_with_its_problems(app_as):
    at = upload(app_as("clinician", PAGE), "record_id;visit_date\nP1;2025-01-01\n")
    assert at.error and "cannot be read" in at.error[0].value
    assert seen(at, "uses ';' between values", "markdown")


@pytest.mark.slow
def test_unknown_records_are_listed_unless_added_as_patients(app_as, clinic_db, export_text):
    at = upload(app_as("clinician", PAGE), export_text.replace("P002", "P777"))
    assert "patient 'P777' is not in the database" in at.code[0].value
    at.checkbox(key="redcap.add_patients").check().run()
    assert not at.error and seen(at, "patients: 1 would be added")


@pytest.mark.slow
def test_the_import_says_how_many_alerts_it_raised_and_which_scores_are_checked(app_as, clinic_db):
    day = clinic_db.today - timedelta(days=1)  # after the clinic's check-ins: P001's latest depression score
    at = upload(app_as("clinician", PAGE), HEADER + f"P001,month_3_arm_1,{day},5,5,5,5,\n")
    rule = "only each patient's latest score per domain is checked against the alert rules"
    assert seen(at, f"On import, {rule}.", "markdown")
    before = storage.load_alerts(clinic_db.open())["alert_id"].tolist()
    at.checkbox(key="redcap.confirm").check().run()
    at.button(key="redcap.import").click().run()
    assert not at.exception
    assert seen(at, f"1 alert raised for clinician review ({rule}).", "success")
    alerts = storage.load_alerts(clinic_db.open())
    new = alerts[~alerts["alert_id"].isin(before)]
    assert new[["patient_id", "domain", "t_score", "priority"]].values.tolist() == [
        ["P001", "depression", 79.4, "high"]]


@pytest.mark.slow
def test_an_upload_is_parsed_once_not_at_every_choice(app_as, export_text, monkeypatch):
    """Security issue, finding 8: each rerun parsed the whole file again (a 42 MB file: 100 s of CPU each)."""
    calls = []
    read = redcap.read
    monkeypatch.setattr(redcap, "read", lambda source: calls.append(1) or read(source))
    at = upload(app_as("clinician", PAGE), export_text)
    at.radio(key="redcap.source.pain_interference").set_value("none").run()
    at.checkbox(key="redcap.confirm").check().run()
    assert not at.exception
    assert len(calls) == 1
    upload(at, export_text.replace("38.5", "39.5"), name="second.csv")  # another file is parsed afresh
    assert len(calls) == 2 and seen(at, "second.csv")
