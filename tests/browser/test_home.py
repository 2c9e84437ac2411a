"""In Chromium: a fresh server on a demo database shows the landing page with its contents."""

from datetime import date

import pytest

from outcomes import storage, synthetic

from .conftest import screenshot, wait_for_idle

pytestmark = pytest.mark.browser


def test_landing_page_shows_the_database(browser, start_server, tmp_path):
    from playwright.sync_api import expect

    db_path = tmp_path / "demo.db"
    db = storage.connect(db_path)
    synthetic.write_cohort(db, synthetic.generate_cohort(40, seed=5, end=date(2026, 10, 1)))
    db.close()
    server = start_server(db_path)

    page = browser.new_page()
    page.goto(server.url)
    wait_for_idle(page)
    expect(page.get_by_text("Synthetic data.")).to_be_visible()
    expect(page.get_by_test_id("stMetric").first).to_contain_text("40")
    expect(page.get_by_text("Questionnaires this clinic can score")).to_be_visible()
    screenshot(page, "home")
    page.close()
