"""In Chromium: the administrator signs in and sees what is in the database."""

from tests.conftest import PASSWORD

from .conftest import screenshot, script_run, wait_for_idle
from .test_journeys import sign_in


def test_administrator_sees_the_database_page(browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    page = browser.new_page()
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, "ada.admin", PASSWORD)
    expect(page.get_by_role("heading", name="Users")).to_be_visible(timeout=30_000)
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Database").click()
    expect(page.get_by_test_id("stMetric").first).to_contain_text("2")          # two patients
    expect(page.get_by_text("Questionnaires this clinic can score")).to_be_visible()
    screenshot(page, "admin-database")
