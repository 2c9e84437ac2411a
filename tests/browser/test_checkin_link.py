"""The one-tap link journey of issue 15 in Chromium on a phone-sized viewport: open the link → the token leaves
the address bar → answer half → reopen it in the same browser: answers back (another browser: the friendly
page) → answer → result; the same link again, and an expired one → the same friendly page; the stop link →
confirm → no more messages. The token is in no server log and no Referer."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from outcomes import links, storage

from .conftest import question, screenshot, script_run, wait_for_idle

PHONE = {"width": 390, "height": 844}
FRIENDLY = "This link can't be used any more. Ask your clinic for a new link."


def add_link(path, purpose: str, *, expires_in=timedelta(hours=6), created: datetime | None = None) -> str:
    token, moment = links.new_token(), created or datetime.now(UTC)
    db = storage.open_db(path)
    try:
        storage.add_link(db, token_hash=links.token_hash(token), purpose=purpose, patient_id="P001",
                         expires_at=moment + expires_in, by="reminders", now=moment)
    finally:
        db.close()
    return token


def open_link(page, url: str):
    response = page.goto(url)
    wait_for_idle(page)
    return response


def answer_every_question(page) -> None:
    """Tap the first answer of every question on the screen, one at a time as a patient does."""
    from playwright.sync_api import expect

    caption = page.get_by_text(re.compile(r"^\d+ of \d+ answered"))
    expect(caption).to_be_visible()
    count = int(re.match(r"\d+ of (\d+)", caption.inner_text()).group(1))
    for number in range(1, count + 1):
        expect(question(page, number)).to_be_visible()
        with script_run(page):
            question(page, number).locator("label").first.click()


def test_a_patient_checks_in_from_the_link_on_a_phone_and_the_link_then_stops_working(
        browser, start_server, clinic_db, tmp_path):
    from playwright.sync_api import expect

    db = storage.open_db(clinic_db.path)
    storage.set_contact(db, "P001", email="pat@example.org", channel="email", consent_on=clinic_db.today,
                        by="cleo.clinician", now=datetime.now(UTC))
    db.close()
    checkin = add_link(clinic_db.path, "checkin")
    expired = add_link(clinic_db.path, "checkin", created=datetime.now(UTC) - timedelta(days=2),
                       expires_in=timedelta(days=1))
    stop = add_link(clinic_db.path, "stop")
    server = start_server(clinic_db.path)
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    requests: list = []
    page.on("request", lambda request: requests.append(request))

    # Open the link: the check-in, and the token is gone from the address bar at once.
    response = open_link(page, links.link_url(server.url, "checkin", checkin))
    assert response.headers.get("referrer-policy") == "no-referrer"
    expect(page.get_by_role("heading", name="Weekly check-in")).to_be_visible(timeout=30_000)
    assert checkin not in page.url and "checkin=" not in page.url
    expect(page.get_by_text("Opened from the check-in link")).to_have_count(1)
    expect(question(page, 1)).to_be_visible()
    screenshot(page, "link-checkin-phone")

    # Half-way, the phone discards the tab: the same link in the same browser brings the answers back.
    answer_every_question(page)
    open_link(page, links.link_url(server.url, "checkin", checkin))
    expect(page.get_by_text(re.compile("^Welcome back: your unsent answers"))).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"^(\d+) of \1 answered"))).to_be_visible()
    assert checkin not in page.url
    # Someone else with the link (another browser) gets the friendly page, and changes nothing.
    other = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    intruder = other.new_page()
    open_link(intruder, links.link_url(server.url, "checkin", checkin))
    expect(intruder.get_by_text(FRIENDLY)).to_be_visible(timeout=30_000)
    other.close()
    with script_run(page):  # the first questionnaire is answered already
        page.get_by_role("button", name="Next").click()

    # Answer every other questionnaire, then send.
    while True:
        expect(page.get_by_text(re.compile(r"^Questionnaire \d+ of \d+"))).to_be_visible()
        answer_every_question(page)
        send = page.get_by_role("button", name="Send my answers")
        if send.count():
            with script_run(page):
                send.click()
            break
        with script_run(page):
            page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("Thank you. Your answers are saved.")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("You can close this page now.")).to_be_visible()
    expect(page.get_by_role("link", name="See my progress")).to_have_count(0)
    screenshot(page, "link-checkin-result")

    # The same link again, once the check-in was sent through it: the friendly page.
    open_link(page, links.link_url(server.url, "checkin", checkin))
    expect(page.get_by_text(FRIENDLY)).to_be_visible(timeout=30_000)
    expect(page.get_by_role("heading", name="Weekly check-in")).to_have_count(0)
    assert checkin not in page.url
    screenshot(page, "link-used-phone")
    used_page = page.get_by_test_id("stMain").inner_text()

    # An expired link: the very same page.
    open_link(page, links.link_url(server.url, "checkin", expired))
    expect(page.get_by_text(FRIENDLY)).to_be_visible(timeout=30_000)
    assert page.get_by_test_id("stMain").inner_text() == used_page

    # The stop link: asks first, then stops.
    open_link(page, links.link_url(server.url, "stop", stop))
    expect(page.get_by_role("heading", name="Stop these messages?")).to_be_visible(timeout=30_000)
    assert stop not in page.url
    screenshot(page, "link-stop-phone")
    with script_run(page):
        page.get_by_role("button", name="Stop these messages").click()
    expect(page.get_by_text("You will get no more messages from Your clinic.")).to_be_visible(timeout=30_000)
    screenshot(page, "link-stopped-phone")
    context.close()

    db = storage.open_db(clinic_db.path)
    try:
        assert storage.load_contacts(db, "P001")["channel"].tolist() == ["none"]
        log = storage.load_audit_log(db)
    finally:
        db.close()
    assert {"link_used", "link_refused", "opt_out", "submit_checkin"} <= set(log["action"])
    # Nowhere: not in the audit log, the server's log, or any request's Referer but the link's own load.
    server_log = "".join(p.read_text() for p in tmp_path.glob("streamlit-*.log"))
    for token in (checkin, expired, stop):
        assert token not in log.to_json() and token not in server_log
        assert not [r.url for r in requests if token in (r.headers.get("referer") or "")]
