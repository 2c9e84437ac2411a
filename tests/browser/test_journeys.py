"""The three journeys of issue #3, end to end in Chromium against a real ``streamlit run``."""

from __future__ import annotations

import re

from tests.conftest import PASSWORD

from .conftest import question, screenshot, script_run, wait_for_idle

PHONE = {"width": 390, "height": 844}


def sign_in(page, username: str, password: str) -> None:
    """Sign in, and wait until the app has answered (the page signed in to, or why not)."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    with script_run(page):
        page.get_by_role("button", name="Sign in", exact=True).click()


def fill_date(scope, label: str, day) -> None:
    """Type a date into Streamlit's date field (separate year, month and day spin buttons)."""
    for part, text in (("year", f"{day:%Y}"), ("month", f"{day:%m}"), ("day", f"{day:%d}")):
        spin = scope.get_by_role("spinbutton", name=f"{part}, {label}")
        spin.click()
        spin.press_sequentially(text)


def answer(page, number: int, label: str) -> None:
    """Tap ``label`` under question ``number`` of the questionnaire on the screen, and wait for the rerun."""
    with script_run(page):
        question(page, number).get_by_text(label, exact=True).click()


def test_first_run_setup_then_demo(browser, start_server, tmp_path):
    from playwright.sync_api import expect

    server = start_server(tmp_path / "empty.db")
    page = browser.new_page()
    page.goto(server.url)
    wait_for_idle(page)
    expect(page.get_by_role("heading", name="Welcome to Infusion outcomes")).to_be_visible()
    screenshot(page, "journey-setup")

    with script_run(page):
        page.get_by_role("button", name="Open the demo").click()
    expect(page.get_by_text("Demo with synthetic data.")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("heading", name="Demo accounts")).to_be_visible()
    assert "demo=1" in page.url
    table = page.get_by_test_id("stDataFrame")
    expect(table).to_contain_text("demo-clinician")
    screenshot(page, "journey-demo-sign-in")

    # The passwords are listed in the demo database itself (never in the clinic's); read one back.
    from outcomes import storage, synthetic

    accounts = synthetic.demo_accounts(storage.open_db(tmp_path / "demo.db"))
    assert {a["role"] for a in accounts} == {"admin", "clinician", "qi", "patient"}
    assert storage.database_summary(storage.open_db(tmp_path / "empty.db"))["users"] == 0
    clinician = next(a for a in accounts if a["role"] == "clinician")
    sign_in(page, clinician["username"], clinician["password"])
    expect(page.get_by_role("heading", name="Roster")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Demo with synthetic data.")).to_be_visible()   # the banner stays
    wait_for_idle(page)
    screenshot(page, "journey-demo-roster")


def test_patient_checks_in_on_a_phone_and_sees_progress(browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, "pat.patient", PASSWORD)
    expect(page.get_by_role("heading", name="Weekly check-in")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Questionnaire 1 of 3")).to_be_visible()
    answer(page, 1, "Quite a bit")
    answer(page, 2, "A little bit")
    screenshot(page, "journey-checkin-phone")

    # A reload starts a new session: a friendly sign-in, then the answers are back.
    page.reload()
    wait_for_idle(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    sign_in(page, "pat.patient", PASSWORD)
    expect(page.get_by_text("Welcome back")).to_be_visible(timeout=30_000)
    expect(question(page, 1).get_by_role("radio", name="Quite a bit")).to_be_checked()
    expect(question(page, 2).get_by_role("radio", name="A little bit")).to_be_checked()

    for number in range(3, 7):  # the rest of the pain questions
        answer(page, number, "Somewhat")
    with script_run(page):
        page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Questionnaire 2 of 3")).to_be_visible()
    for number in range(1, 7):
        answer(page, number, "Always")
    with script_run(page):
        page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Questionnaire 3 of 3")).to_be_visible()
    for number in range(1, 4):
        answer(page, number, "With some difficulty")
    with script_run(page):
        page.get_by_role("button", name="Send my answers").click()
    expect(page.get_by_text("Thank you. Your answers are saved.")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"Your depression score is \d+\.\d \(severe\)"))).to_be_visible()
    screenshot(page, "journey-checkin-result")

    with script_run(page):
        page.get_by_role("link", name="See my progress").click()
    expect(page.get_by_role("heading", name="My progress")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stPlotlyChart").locator(".main-svg").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"^Thank you: your week \d+ questionnaire is done. The next one"))).to_be_visible()
    screenshot(page, "journey-progress-phone")
    context.close()


def test_clinician_enrols_logs_a_series_enters_paper_scores_and_acknowledges_the_alert(
        browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, "cleo.clinician", PASSWORD)
    expect(page.get_by_role("heading", name="Roster")).to_be_visible(timeout=30_000)

    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Record").click()
    expect(page.get_by_role("heading", name="Record")).to_be_visible()
    page.get_by_role("textbox", name="Clinic patient ID").fill("P100")
    page.get_by_role("textbox", name="Diagnosis").fill("Neuropathic pain")
    with script_run(page):
        page.get_by_role("button", name="Enrol and create invitation code").click()
    expect(page.get_by_text("Enrolled P100")).to_be_visible()
    code = page.get_by_test_id("stCode").inner_text().strip()
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{2}", code)

    page.get_by_role("tab", name="Log a series").click()
    series_tab = page.get_by_role("tabpanel", name="Log a series")
    today = clinic_db.today
    fill_date(series_tab, "First infusion", today)
    fill_date(series_tab, "Last infusion", today)
    series_tab.get_by_role("spinbutton", name="Number of infusions").fill("1")
    with script_run(page):
        series_tab.get_by_role("button", name="Save series").click()
    expect(page.get_by_text("Series saved for P100")).to_be_visible()

    page.get_by_role("tab", name="Paper questionnaire").click()
    paper = page.get_by_role("tabpanel", name="Paper questionnaire")
    depression = paper.get_by_test_id("stExpander").filter(has_text="Depression")
    for number in range(1, 7):  # the depression questionnaire: all "Always" (severe)
        with script_run(page):
            question(depression, number).get_by_text("Always", exact=True).click()
    with script_run(page):
        paper.get_by_role("button", name="Save paper questionnaire").click()
    expect(page.get_by_text(re.compile(r"The depression score is \d+\.\d \(severe\)"))).to_be_visible(timeout=30_000)
    screenshot(page, "journey-record")

    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Alerts").click()
    expect(page.get_by_text("no question about suicide")).to_be_visible()
    card = page.locator("[class*='st-key-alert-']").filter(has_text="P100")
    expect(card).to_contain_text("High priority")
    screenshot(page, "journey-alerts")
    with script_run(page):
        card.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("[class*='st-key-alert-']").filter(has_text="P100")).to_have_count(0)

    from outcomes import storage

    alerts = storage.load_alerts(clinic_db.open(), patient_id="P100")
    assert alerts["acknowledged_by"].tolist() == ["cleo.clinician"]
