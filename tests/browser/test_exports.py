"""In Chromium: QI and clinician users prepare and download exports, and a clinician imports a REDCap file;
the downloaded files are opened and checked."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from openpyxl import load_workbook

from outcomes import exports, storage
from tests.conftest import PASSWORD
from tests.export_helpers import PLANT, SECRET, build_planted, file_texts

from .conftest import screenshot, script_run, wait_for_idle
from .test_journeys import sign_in


@pytest.fixture
def planted(tmp_path, fast_hasher):
    return build_planted(tmp_path / "exports.db", n_synthetic=200)


def open_exports(page, server, username):
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, username, PASSWORD)
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Exports").click()
    page.get_by_role("heading", name="Exports").wait_for()
    page.get_by_role("button", name="Prepare and download the file").wait_for()
    page.get_by_text("Data as of").wait_for()


def prepare_and_download(page, tmp_path):
    from playwright.sync_api import expect

    with script_run(page), page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="Prepare and download the file").click()
    download = info.value
    expect(page.get_by_text("is ready")).to_be_visible()
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    return path


def choose(page, label):
    """Pick a radio option and wait until the rerun it causes has finished and is drawn.

    Waiting for "notRunning" alone can return before the rerun starts (toolchain notes §4); the next click
    then hit the previous run's radio (after "Summary tables", its old Format radio) and the file came
    out as CSV instead of Excel under load. A MutationObserver waiting to see "running" did not do either:
    when the browser handles the run's start and end before React draws, "running" is never on the page,
    and the wait ran out (60 s, test_clinician_gives_a_reason_for_an_identified_export; issue #14).
    ``script_run`` counts the runs the server reports instead.
    """
    option = page.get_by_role("radiogroup").get_by_role("radio", name=label, exact=True)
    if option.is_checked():
        return  # no change, no rerun
    with script_run(page):
        page.get_by_role("radiogroup").get_by_text(label, exact=True).click()
    from playwright.sync_api import expect

    expect(page.get_by_role("radiogroup").get_by_role("radio", name=label, exact=True)).to_be_checked()


def test_qi_downloads_summary_tables_dataset_and_fhir(browser, start_server, planted, tmp_path):
    server = start_server(planted.path)
    # Tall enough that a screenshot shows the preview below the button (Streamlit scrolls inside the page).
    page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
    open_exports(page, server, "quinn.qi")
    assert page.get_by_role("radiogroup").get_by_text("Identified dataset").count() == 0   # not for QI
    screenshot(page, "exports-qi-start")

    choose(page, "Summary tables")
    choose(page, "Excel workbook")
    path = prepare_and_download(page, tmp_path)
    screenshot(page, "exports-qi-summary-ready")
    page.get_by_role("tab", name="table1").click()
    screenshot(page, "exports-qi-summary-table1")
    assert path.name.startswith("outcomes-summary-deidentified-") and path.suffix == ".xlsx"
    book = load_workbook(path)
    assert book.sheetnames == ["README", "responders", "completion", "table1"]
    readme = {r[0].value: r[1].value for r in book["README"].iter_rows()}
    # De-identified: cut at the last month end, never a day a QI user picks (finding 1).
    last_month = (date.today().replace(day=1) - timedelta(days=1))
    assert readme["as_of"].startswith(f"{last_month:%Y-%m}: data through the end of {last_month:%B %Y}")
    assert path.name == f"outcomes-summary-deidentified-{last_month:%Y-%m}.xlsx"
    markers = {c.value for row in book["table1"].iter_rows(min_row=2) for c in row}
    assert "≤10" in markers

    choose(page, "De-identified analysis dataset")
    choose(page, "CSV (a ZIP with one CSV per table)")
    path = prepare_and_download(page, tmp_path)
    texts = file_texts(path.read_bytes(), path.name)
    assert set(texts) == {"README.txt", "episodes.csv", "scores.csv"}
    assert path.name == f"outcomes-dataset-deidentified-{date.today().year - 1}.csv.zip"   # a full past year
    everything = "\n".join(texts.values())
    assert not [p for p in planted.patient_ids if p in everything]
    assert exports.pseudonym(SECRET, PLANT["patient_id"]) in everything and PLANT["note"] not in everything

    choose(page, "FHIR R4 Observations, de-identified")
    path = prepare_and_download(page, tmp_path)
    from fhir.resources.bundle import Bundle

    bundle = Bundle.parse_raw(path.read_bytes())
    assert len(bundle.entry) > 100 and PLANT["patient_id"] not in path.read_text()
    screenshot(page, "exports-qi-fhir-ready")

    log = storage.load_audit_log(planted.open(), action="export")
    assert log["actor"].tolist() == ["quinn.qi"] * 3
    assert [json.loads(d)["what"] for d in log["details"]] == [
        "fhir (de-identified)", "dataset (de-identified)", "summary (de-identified)"]


def test_clinician_gives_a_reason_for_an_identified_export(browser, start_server, planted, tmp_path):
    from playwright.sync_api import expect

    server = start_server(planted.path)
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    open_exports(page, server, "cleo.clinician")
    choose(page, "Identified dataset")
    choose(page, "Excel workbook")
    with script_run(page):
        page.get_by_role("button", name="Prepare and download the file").click()
    expect(page.get_by_text("needs a reason")).to_be_visible()
    page.get_by_label("Reason for this identified export").fill("Registry submission, DUA 2025-07")
    with script_run(page):
        page.get_by_label("Reason for this identified export").press("Control+Enter")
    path = prepare_and_download(page, tmp_path)
    screenshot(page, "exports-clinician-identified")
    episodes = load_workbook(path)["episodes"]
    ids = {row[0].value for row in episodes.iter_rows(min_row=2)}
    assert PLANT["patient_id"] in ids
    entry = storage.load_audit_log(planted.open(), action="export").iloc[0]
    assert json.loads(entry["details"])["reason"] == "Registry submission, DUA 2025-07"


def test_clinician_imports_a_redcap_export(browser, start_server, planted, tmp_path):
    from playwright.sync_api import expect

    day = date.today() - timedelta(days=30)
    csv = tmp_path / "redcap_export.csv"
    csv.write_text("record_id,redcap_event_name,visit_date,eddep04,eddep06,eddep29,eddep41,promis_pf_tscore\n"
                   f"{PLANT['patient_id']},month_12_arm_1,{day},2,3,2,2,38.5\n"
                   f"{PLANT['patient_id']},month_13_arm_1,{day + timedelta(days=7)} 10:15,Often,3,2,2,\n")
    server = start_server(planted.path)
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, "cleo.clinician", PASSWORD)
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Import from REDCap").click()
    page.get_by_role("heading", name="Import from REDCap").wait_for()
    with script_run(page):
        page.locator("input[type=file]").set_input_files(str(csv))
    expect(page.get_by_text("3 would be added")).to_be_visible()
    screenshot(page, "import-redcap-preview")
    with script_run(page):
        page.get_by_text("I have checked the mapping and the preview").click()
    with script_run(page):
        page.get_by_role("button", name="Import all rows").click()
    expect(page.get_by_text("Imported from redcap_export.csv: 3 added")).to_be_visible()
    screenshot(page, "import-redcap-done")
    scores = storage.load_assessments(planted.open(), patient_id=PLANT["patient_id"])
    assert (scores["source"] == "import").sum() == 3
