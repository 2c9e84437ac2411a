"""The exports page (app_pages/exports.py): choices per role, the audited file, a reason when identified."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from datetime import date, timedelta

import pytest

from outcomes import exports, storage
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from tests.page_helpers import seen

PAGE = "app_pages/exports.py"


@pytest.fixture(autouse=True)
def history(clinic_db):
    """A series four years ago for each patient, with scores: released (follow-up closed, delay passed) by the
    last year end, so de-identified files hold something. The clinic's recent series are not released."""
    db = clinic_db.open()
    for pid in ("P001", "P002"):
        first = clinic_db.today - timedelta(days=4 * 365)
        storage.add_series(db, patient_id=pid, first_infusion=first, last_infusion=first + timedelta(days=4),
                           infusions=5, protocol="5-day 0.5 mg/kg", entered_by="x", today=clinic_db.today)
        for day, t in ((-3, 66.0), (4, 60.0), (30, 58.5), (91, 57.0)):
            storage.save_assessment(db, patient_id=pid, assessed_on=first + timedelta(days=day),
                                    domain="depression", t_score=t, method="imported", source="import",
                                    entered_by="x", today=clinic_db.today)
    db.close()


def handed_over(at) -> bytes | None:
    """The file this run handed to the browser (ui.data.hand_over), or None."""
    parts = [e for e in at.get("bidi_component") if e.proto.component_name == "outcomes_hand_over_file"]
    assert len(parts) <= 1
    return base64.b64decode(json.loads(parts[0].proto.json)["b64"]) if parts else None


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
    assert handed_over(at) is None   # nothing is handed over before "Prepare and download the file"


@pytest.mark.slow
def test_preparing_a_file_audits_it_and_offers_the_download(app_as, clinic_db):
    at = prepare(app_as("qi", PAGE))
    assert seen(at, "is ready", "success") and seen(at, "recorded in the audit log", "success")
    request, file = at.session_state["exports.file"]
    assert handed_over(at) == file.data and not at.get("download_button")  # no /media URL (finding 14)
    at.run()                                                # the next run hands nothing over again
    assert handed_over(at) is None
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
    last_year_end = date(clinic_db.today.year - 1, 12, 31)
    assert details["rows"] == file.rows and details["filters"] == {"as_of": last_year_end.isoformat()}
    assert file.filename == f"outcomes-dataset-deidentified-{last_year_end.year}.csv.zip"
    # Only the series of four years ago: the recent ones are not released yet.
    assert sorted(file.tables["episodes"]["episode"]) == [1, 1]
    # The preview shows the tables that went into the file.
    assert [t.label for t in at.tabs] == ["episodes", "scores"]


@pytest.mark.slow
def test_changing_an_option_withdraws_the_prepared_file(app_as):
    at = prepare(app_as("qi", PAGE))
    at.radio(key="exports.format.dataset").set_value("xlsx").run()
    assert handed_over(at) is None and not seen(at, "is ready", "success")
    assert seen(at, "options have changed", "caption")
    prepare(at)
    assert at.session_state["exports.file"][1].filename.endswith(".xlsx")


@pytest.mark.slow
def test_summary_tables_show_their_markers_and_analysis_set(app_as, clinic_db):
    at = app_as("admin", PAGE)
    at.radio(key="exports.choice").set_value("summary").run()
    assert at.radio(key="exports.series").value == "first"
    prepare(at)
    file = at.session_state["exports.file"][1]
    assert list(file.tables) == ["responders", "completion", "table1"]
    assert "≤10" in file.tables["table1"]["n"].tolist()      # two patients: nothing but markers
    assert json.loads(exported(clinic_db)["details"].iloc[0])["filters"]["series"] == "first"


@pytest.mark.slow
def test_identified_export_needs_a_reason(app_as, clinic_db):
    at = app_as("clinician", PAGE)
    assert "Identified dataset" in at.radio(key="exports.choice").options
    at.radio(key="exports.choice").set_value("identified").run()
    assert seen(at, "This file identifies patients", "warning")
    prepare(at)
    assert at.error and "needs a reason" in at.error[0].value
    assert exported(clinic_db).empty and handed_over(at) is None
    at.text_area(key="exports.reason").input("Registry submission, DUA 2025-07").run()
    prepare(at)
    file = at.session_state["exports.file"][1]
    assert b"P001" in zipfile.ZipFile(io.BytesIO(file.data)).read("episodes.csv")
    details = json.loads(exported(clinic_db)["details"].iloc[0])
    assert details["reason"] == "Registry submission, DUA 2025-07" and details["deidentified"] is False


@pytest.mark.slow
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


@pytest.mark.slow
def test_deidentified_files_offer_year_or_month_ends_and_identified_any_day(app_as, clinic_db):
    """Finding 1: a de-identified file's cut cannot be chosen by the day (two files a day apart would date
    the episodes that differ); identified exports keep any day."""
    today = clinic_db.today
    at = app_as("qi", PAGE)
    assert not at.date_input
    years = at.selectbox(key="exports.cut.year")
    assert years.value == date(today.year - 1, 12, 31) and years.options[:2] == [str(today.year - 1),
                                                                                str(today.year - 2)]
    at.radio(key="exports.choice").set_value("summary").run()
    months = at.selectbox(key="exports.cut.month")
    assert months.value == exports.release_cut("summary", today, deidentified=True).date()
    assert not at.date_input
    prepare(at)
    assert seen(at, f"data as of {months.value:%Y-%m}", "success")
    clinician = app_as("clinician", PAGE)
    clinician.radio(key="exports.choice").set_value("identified").run()
    assert [d.key for d in clinician.date_input] == ["exports.as_of"]
    assert clinician.date_input(key="exports.as_of").value == today


@pytest.mark.slow
def test_a_file_too_large_to_hand_over_is_refused_before_it_is_audited(app_as, clinic_db, monkeypatch):
    from ui import data

    monkeypatch.setattr(data, "hand_over_limit", lambda: 100)
    at = prepare(app_as("qi", PAGE))
    assert at.error and "more than this page can hand to the browser" in at.error[0].value
    assert exported(clinic_db).empty and handed_over(at) is None
