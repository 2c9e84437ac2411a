"""The exports page (app_pages/exports.py): choices per role, the audited file, a reason when identified."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from outcomes import storage
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from tests.page_helpers import seen

PAGE = "app_pages/exports.py"


def prepare(at):
    at.button(key="exports.prepare").click().run()
    assert not at.exception
    return at


def exported(clinic_db):
    return storage.load_audit_log(clinic_db.open(), action="export")


def test_qi_gets_only_deidentified_exports(app_as):
    at = app_as("qi", PAGE)
    assert not at.exception and at.title[0].value == "Exports"
    assert at.radio(key="exports.choice").options == [
        "De-identified analysis dataset", "Summary tables", "FHIR R4 Observations, de-identified"]
    assert at.radio(key="exports.format.dataset").options == [
        "CSV (a ZIP with one CSV per table)", "Excel workbook", "Parquet (a ZIP with one file per table)"]
    assert not at.get("download_button")   # nothing is handed over before "Prepare the file"


def test_preparing_a_file_audits_it_and_offers_the_download(app_as, clinic_db):
    at = prepare(app_as("qi", PAGE))
    assert seen(at, "is ready", "success") and seen(at, "recorded in the audit log", "success")
    assert len(at.get("download_button")) == 1
    request, file = at.session_state["exports.file"]
    assert file.filename.startswith("outcomes-dataset-deidentified-") and file.filename.endswith(".csv.zip")
    members = zipfile.ZipFile(io.BytesIO(file.data)).namelist()
    assert sorted(members) == ["README.txt", "episodes.csv", "scores.csv"]
    everything = b"".join(zipfile.ZipFile(io.BytesIO(file.data)).read(m) for m in members)
    assert b"P001" not in everything and b"ps_" in everything
    log = exported(clinic_db)
    assert log["actor"].tolist() == ["quinn.qi"]
    details = json.loads(log["details"].iloc[0])
    assert details["what"] == "dataset (de-identified)"
    assert details["format"] == "csv" and details["deidentified"] is True
    assert details["rows"] == file.rows and details["filters"] == {"as_of": clinic_db.today.isoformat()}
    # The preview shows the tables that went into the file.
    assert [t.label for t in at.tabs] == ["episodes", "scores"]


def test_changing_an_option_withdraws_the_prepared_file(app_as):
    at = prepare(app_as("qi", PAGE))
    at.radio(key="exports.format.dataset").set_value("xlsx").run()
    assert not at.get("download_button")
    assert seen(at, "options have changed", "caption")
    prepare(at)
    assert at.session_state["exports.file"][1].filename.endswith(".xlsx")


def test_summary_tables_show_their_markers_and_analysis_set(app_as, clinic_db):
    at = app_as("admin", PAGE)
    at.radio(key="exports.choice").set_value("summary").run()
    assert at.radio(key="exports.series").value == "first"
    prepare(at)
    file = at.session_state["exports.file"][1]
    assert list(file.tables) == ["responders", "completion", "table1"]
    assert "≤10" in file.tables["table1"]["n"].tolist()      # two patients: nothing but markers
    assert json.loads(exported(clinic_db)["details"].iloc[0])["filters"]["series"] == "first"


def test_identified_export_needs_a_reason(app_as, clinic_db):
    at = app_as("clinician", PAGE)
    assert "Identified dataset" in at.radio(key="exports.choice").options
    at.radio(key="exports.choice").set_value("identified").run()
    assert seen(at, "This file identifies patients", "warning")
    prepare(at)
    assert at.error and "needs a reason" in at.error[0].value
    assert exported(clinic_db).empty and not at.get("download_button")
    at.text_area(key="exports.reason").input("Registry submission, DUA 2025-07").run()
    prepare(at)
    file = at.session_state["exports.file"][1]
    assert b"P001" in zipfile.ZipFile(io.BytesIO(file.data)).read("episodes.csv")
    details = json.loads(exported(clinic_db)["details"].iloc[0])
    assert details["reason"] == "Registry submission, DUA 2025-07" and details["deidentified"] is False


@pytest.mark.parametrize("role", ["clinician", "admin"])
def test_fhir_exports_for_clinical_roles(app_as, role):
    at = app_as(role, PAGE)
    at.radio(key="exports.choice").set_value("fhir").run()
    assert at.radio(key="exports.format.fhir").options == ["FHIR JSON"]
    prepare(at)
    file = at.session_state["exports.file"][1]
    bundle = json.loads(file.data)
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == file.rows > 0
    assert [t.label for t in at.tabs] == ["observations"]
