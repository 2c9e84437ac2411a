"""In Chromium: a clinician and a QI user open Cohort outcomes on a synthetic cohort."""

from datetime import UTC, date, datetime

import pytest

from outcomes import auth, storage, synthetic
from tests.conftest import PASSWORD

from .conftest import screenshot, script_run, wait_for_idle
from .test_journeys import sign_in


@pytest.fixture
def cohort_db(tmp_path, fast_hasher):
    path = tmp_path / "cohort.db"
    db = storage.connect(path)
    synthetic.write_cohort(db, synthetic.generate_cohort(300, seed=11, end=date.today()))
    now = datetime.now(UTC)
    admin = auth.create_first_admin(db, "ada.admin", PASSWORD, now=now)
    for username, role in (("cleo.clinician", "clinician"), ("quinn.qi", "qi")):
        user = auth.create_user(db, admin, username=username, role=role, password=PASSWORD, now=now)
        storage.update_user(db, user.id, must_change_password=False)  # as if they had chosen their own
    db.close()
    return path


@pytest.mark.parametrize("username", ["cleo.clinician", "quinn.qi"])
def test_cohort_page_shows_the_responder_table_and_charts(browser, start_server, cohort_db, username):
    from playwright.sync_api import expect

    server = start_server(cohort_db)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, username, PASSWORD)
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Cohort outcomes").click()
    expect(page.get_by_text("Observed outcomes in an uncontrolled cohort")).to_be_visible(timeout=30_000)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible(timeout=30_000)
    screenshot(page, f"cohort-{username.split('.')[1]}-responders")
    page.get_by_role("tab", name="Trajectories").click()
    expect(page.get_by_test_id("stPlotlyChart").locator(".main-svg").first).to_be_visible(timeout=30_000)
    screenshot(page, f"cohort-{username.split('.')[1]}-trajectories")
    page.get_by_role("tab", name="Time to improvement").click()
    expect(page.get_by_test_id("stPlotlyChart").locator(".main-svg").first).to_be_visible(timeout=30_000)
    wait_for_idle(page)
    screenshot(page, f"cohort-{username.split('.')[1]}-km")
    for secret in ("DEMO-00001", "DEMO-00002"):
        expect(page.get_by_text(secret)).to_have_count(0)
    sidebar = page.get_by_test_id("stSidebar")
    if username == "quinn.qi":  # findings 1 and 2: month ends only, no calendar filter, pooled values
        expect(sidebar.get_by_text("Data as of (end of month)")).to_be_visible()
        expect(sidebar.get_by_text("First infusion between")).to_have_count(0)
        expect(page.get_by_text("released by the end of")).to_be_visible()
    else:
        expect(sidebar.get_by_text("First infusion between")).to_be_visible()
