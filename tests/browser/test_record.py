"""The Record page in Chromium: every form that saves starts empty for the next entry.

Found by a clinician: after "Save infusion" the adverse-event ticks and severities stayed on screen, so
nausea ticked on day 2 only was saved on days 3 to 5 too; the next patient enrolled inherited the previous
one's diagnosis, sex and birth year; a paper questionnaire's answers stayed after saving. Deleting the
widgets' session-state keys emptied them on the server only: the browser kept showing, and sent back, what
it had for the same widget ids. The page now draws new widgets after every successful save.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta

import pandas as pd

from tests.conftest import PASSWORD

from .conftest import question, screenshot, script_run, wait_for_idle
from .test_journeys import fill_date, sign_in

LAPTOP = {"width": 1366, "height": 768}


def open_record(browser, server):
    from playwright.sync_api import expect

    page = browser.new_page(viewport=LAPTOP)
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, "cleo.clinician", PASSWORD)
    expect(page.get_by_role("heading", name="Roster")).to_be_visible(timeout=30_000)
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Record").click()
    expect(page.get_by_role("heading", name="Record")).to_be_visible()
    return page


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()
    return page.get_by_role("tabpanel", name=name)


def choose(page, scope, label: str, option: str, in_form: bool = False) -> None:
    """Pick ``option`` in the select box ``label`` of ``scope``, then wait for the rerun (none in a form:
    a form sends its widgets only when it is submitted)."""
    from playwright.sync_api import expect

    box = scope.get_by_role("combobox", name=label)
    box.click()
    with script_run(page) if not in_form else contextlib.nullcontext():
        page.get_by_role("option", name=option, exact=True).click()
    expect(box).to_have_value(option)


def date(page, scope, label: str, day) -> None:
    """Type a date; closing the calendar that opened with it (Escape) hands the value to the app."""
    fill_date(scope, label, day)
    with script_run(page):
        page.keyboard.press("Escape")


def words(day) -> str:
    """A day as the page writes it: "3 March 2026"."""
    return f"{day.day} {day:%B %Y}"


def test_a_five_day_series_is_planned_then_logged_day_by_day_with_nausea_on_day_2_only(
        browser, start_server, clinic_db):
    from playwright.sync_api import expect

    from outcomes import storage

    server = start_server(clinic_db.path)
    page = open_record(browser, server)
    first = clinic_db.today - timedelta(days=4)

    series = open_tab(page, "Plan or log a series")
    choose(page, series, "Patient", "P001")
    expect(series.get_by_role("radio", name=re.compile("^Plan a series"))).to_be_checked()
    date(page, series, "First infusion", first)
    # The default last day (consecutive days) is shown before saving.
    last = first + timedelta(days=4)
    expect(series.get_by_text(f"Last infusion: {words(last)} (5 consecutive days)")).to_be_visible()
    screenshot(page, "record-plan-series")
    with script_run(page):
        series.get_by_role("button", name="Save series").click()
    planned = f"Series saved for P001: 5 infusions planned from {words(first)} to {words(last)}."
    expect(page.get_by_text(planned)).to_be_visible()

    infusion = open_tab(page, "Log an infusion")
    choose(page, infusion, "Patient", "P001")
    expect(infusion.get_by_role("combobox", name="Series")).to_have_value(
        re.compile(rf"^Planned series from {words(first)}, 0 of 5 given"))
    for n in range(5):
        day = first + timedelta(days=n)
        date(page, infusion, "Date", day)
        if n == 1:
            with script_run(page):  # the label: the box itself is drawn over
                infusion.get_by_text("Nausea", exact=True).click()
            expect(infusion.get_by_role("checkbox", name="Nausea")).to_be_checked()
            with script_run(page):
                infusion.get_by_role("radiogroup", name="Severity of nausea").get_by_text("Moderate").click()
            action = infusion.get_by_role("radiogroup", name="Action taken for nausea")
            with script_run(page):
                action.get_by_text("Infusion slowed").click()
            infusion.get_by_text("Adverse events", exact=True).scroll_into_view_if_needed()
            screenshot(page, "record-infusion-nausea-ticked")
        with script_run(page):
            infusion.get_by_role("button", name="Save infusion").click()
        saved = f"Infusion of {day:%A} {words(day)} saved for P001. " + (
            "Adverse events saved: nausea (moderate, infusion slowed)." if n == 1 else "No adverse events.")
        expect(infusion.get_by_text(saved)).to_be_visible()
        # An empty form for the next day: no tick, no severity, no date.
        expect(infusion.get_by_role("checkbox", name="Nausea")).not_to_be_checked()
        expect(infusion.get_by_role("checkbox", checked=True)).to_have_count(0)
        expect(infusion.get_by_role("radiogroup", name="Severity of nausea")).to_have_count(0)
        expect(infusion.get_by_role("spinbutton", name="year, Date")).to_have_text("yyyy")
        if n == 1:
            infusion.get_by_text(saved).scroll_into_view_if_needed()
            screenshot(page, "record-infusion-after-save")
    expect(infusion.get_by_role("combobox", name="Series")).to_have_value(
        re.compile(rf"^Series 2: completed, {words(first)} to {words(last)}, 5 of 5 given"))

    db = clinic_db.open()
    events = storage.load_adverse_events(db, "P001")
    assert events[["infused_on", "kind", "severity", "action"]].values.tolist() == [
        [pd.Timestamp(first + timedelta(days=1)), "nausea", "moderate", "slowed"]]
    infusions = storage.load_infusions(db, "P001")
    assert infusions["infused_on"].tolist() == [pd.Timestamp(first + timedelta(days=n)) for n in range(5)]
    assert infusions["n_adverse_events"].tolist() == [0, 1, 0, 0, 0]
    given = storage.load_series(db, "P001").iloc[-1]
    assert (given["state"], given["infusions"], given["planned_infusions"]) == ("given", 5, 5)


def test_the_enrolment_form_is_empty_for_the_next_patient(browser, start_server, clinic_db):
    from playwright.sync_api import expect

    from outcomes import storage

    server = start_server(clinic_db.path)
    page = open_record(browser, server)
    enrol = page.get_by_role("tabpanel", name="Enrol a patient")
    enrol.get_by_role("textbox", name="Clinic patient ID").fill("P100")
    enrol.get_by_role("textbox", name="Diagnosis").fill("Neuropathic pain")
    choose(page, enrol, "Sex", "Female", in_form=True)
    enrol.get_by_role("spinbutton", name="Birth year").fill("1980")
    with script_run(page):
        enrol.get_by_role("button", name="Enrol and create invitation code").click()
    expect(page.get_by_text("Enrolled P100")).to_be_visible()
    expect(enrol.get_by_role("textbox", name="Clinic patient ID")).to_have_value("")
    expect(enrol.get_by_role("textbox", name="Diagnosis")).to_have_value("")
    expect(enrol.get_by_role("combobox", name="Sex")).to_have_value("")
    expect(enrol.get_by_role("spinbutton", name="Birth year")).to_have_value("")

    # The next patient gets only what is typed for them.
    enrol.get_by_role("textbox", name="Clinic patient ID").fill("P101")
    with script_run(page):
        enrol.get_by_role("button", name="Enrol and create invitation code").click()
    expect(page.get_by_text("Enrolled P101")).to_be_visible()
    patient = storage.load_patient(clinic_db.open(), "P101").iloc[0]
    assert patient[["diagnosis", "sex", "birth_year"]].isna().all()


def test_a_paper_questionnaire_is_emptied_after_saving_and_its_alert_announced(
        browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    page = open_record(browser, server)
    paper = open_tab(page, "Paper questionnaire")
    choose(page, paper, "Patient", "P002")
    depression = paper.get_by_test_id("stExpander").filter(has_text="Depression")
    for number in range(1, 7):  # every depression answer "Always": severe, a high-priority alert
        with script_run(page):
            question(depression, number).get_by_text("Always", exact=True).click()
    expect(paper.get_by_role("radio", checked=True)).to_have_count(6)
    with script_run(page):
        paper.get_by_role("button", name="Save paper questionnaire").click()
    expect(paper.get_by_text("This entry raised 1 alert for clinician review")).to_be_visible()
    expect(paper.get_by_role("link", name="Open the Alerts page")).to_be_visible()
    expect(paper.get_by_role("radio", checked=True)).to_have_count(0)
    paper.get_by_text("This entry raised 1 alert").scroll_into_view_if_needed()
    screenshot(page, "record-paper-after-save")


def test_a_disposition_is_recorded_and_shown(browser, start_server, clinic_db):
    from playwright.sync_api import expect

    from outcomes import storage

    server = start_server(clinic_db.path)
    page = open_record(browser, server)
    tab = open_tab(page, "Disposition")
    choose(page, tab, "Patient", "P002")
    current = tab.get_by_test_id("stMarkdownContainer").filter(has_text="Current disposition:")
    expect(current).to_contain_text("Active since enrolment")
    tab.get_by_role("radiogroup", name="New disposition").get_by_text("Withdrawn").click()  # in a form
    with script_run(page):
        tab.get_by_role("button", name="Record the disposition").click()
    expect(tab.get_by_text("reason is required for a withdrawal")).to_be_visible()
    tab.get_by_role("textbox", name="Reason").fill("Moved away")
    with script_run(page):
        tab.get_by_role("button", name="Record the disposition").click()
    today = words(clinic_db.today)
    expect(tab.get_by_text(f"Disposition of P002 recorded: Withdrawn on {today}.")).to_be_visible()
    expect(current).to_contain_text(f"Withdrawn on {today}, recorded by cleo.clinician")
    expect(tab.get_by_text("Reason: Moved away")).to_be_visible()
    screenshot(page, "record-disposition")
    assert storage.load_patient(clinic_db.open(), "P002")["disposition"].tolist() == ["withdrawn"]
