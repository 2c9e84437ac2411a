"""Security issue, findings 9 (part), 10, 12 and 14, against a real ``streamlit run`` in Chromium, with a
second HTTP client beside it that holds nothing of the administrator's session.

* 14: a backup put on Streamlit's media route (``/media/<hash>.db``) was served to any client holding the
  URL, before and after the click and after the administrator's session closed.
* 12: the audit-log CSV sat at its ``/media`` URL from the moment the page was drawn (the browser itself
  fetched it, to check it, before any click), so fetching it there was never audited.
* 10: Streamlit's own table toolbar downloaded identified tables as CSV, unaudited.
* 9: a signed-out session could upload files of up to 200 MB each, held in the server's memory.

Every test failed on the code before the fix.
"""

from __future__ import annotations

import io
import json
import sqlite3
import urllib.error
import urllib.request

from outcomes import storage
from tests.conftest import PASSWORD

from .conftest import script_run, settle_in_page, wait_for_idle
from .test_journeys import sign_in


def media_traffic(page) -> list[str]:
    """Every /media URL the page's browser asks for, from now on."""
    from urllib.parse import urlparse

    seen: list[str] = []  # Streamlit's media route, not the app's own /static/media fonts
    page.on("request", lambda r: seen.append(r.url) if urlparse(r.url).path.startswith("/media/") else None)
    return seen


def fetch_as_stranger(url: str) -> tuple[int, bytes]:
    """GET ``url`` from a client with no cookie, no websocket, nothing of anybody's session."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def open_admin_page(browser, server, name: str):
    from playwright.sync_api import expect

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    seen = media_traffic(page)
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, "ada.admin", PASSWORD)
    expect(page.get_by_role("heading", name="Users")).to_be_visible(timeout=30_000)
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    return context, page, seen


def download(page, *names: str):
    """Press the first of the buttons ``names`` on the page and, when it offers a download button in turn
    (the old two-step page), that one too; returns Playwright's Download."""
    with page.expect_download(timeout=60_000) as made:
        for name in names:
            button = page.get_by_role("button", name=name)
            if button.count():
                with script_run(page):
                    button.first.click()
                offered = page.get_by_test_id("stDownloadButton").get_by_role("button")
                if offered.count():
                    offered.first.click()
                break
        else:
            raise AssertionError(f"none of the buttons {names} is on the page")
    return made.value


def test_a_backup_is_handed_only_to_the_session_that_made_it_and_is_never_at_a_url(
        browser, start_server, clinic_db, tmp_path):
    server = start_server(clinic_db.path)
    context, page, seen = open_admin_page(browser, server, "Backup")
    made = download(page, "Download a backup", "Prepare a backup")
    saved = tmp_path / "backup.db"
    made.save_as(saved)
    conn = sqlite3.connect(saved)
    try:  # the administrator got the whole, checked database
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] == 2
    finally:
        conn.close()
    wait_for_idle(page)
    # Another client holding every URL this browser ever asked for gets nothing, now and after the
    # administrator's session has closed; and nothing was there to fetch in the first place.
    stolen = [(url, fetch_as_stranger(url)) for url in seen]
    context.close()
    stolen += [(url, fetch_as_stranger(url)) for url in seen]
    leaked = [url for url, (status, body) in stolen if status == 200 and body.startswith(b"SQLite format 3")]
    assert not leaked, f"a client without the session fetched the backup at {leaked}"
    assert not seen, f"the backup was put at a URL: {seen}"
    with storage.open_db(clinic_db.path) as db:
        assert storage.load_audit_log(db, action="backup")["actor"].tolist() == ["ada.admin"]  # once


def test_the_audit_log_csv_is_made_and_audited_only_at_the_click(browser, start_server, clinic_db):
    server = start_server(clinic_db.path)
    context, page, seen = open_admin_page(browser, server, "Audit log")
    # Whatever the page fetches on its own it has started once the run is drawn and the tasks it queued have
    # run; and every request this page ever makes is in `seen`, so the last assertion below would also
    # catch a fetch that started later.
    settle_in_page(page)
    early = [(url, fetch_as_stranger(url)) for url in seen]
    assert not seen, f"the audit log was at a URL before any click (stranger got {[s for _, (s, _) in early]})"
    with storage.open_db(clinic_db.path) as db:
        assert storage.load_audit_log(db, action="export").empty
    made = download(page, "Download as CSV")
    text = made.path().read_bytes().decode("utf-8")
    assert text.startswith("audit_id,at,actor,action,patient_id,details") and "ada.admin" in text
    wait_for_idle(page)
    with storage.open_db(clinic_db.path) as db:
        exports = storage.load_audit_log(db, action="export")
    assert len(exports) == 1 and json.loads(exports["details"].iloc[0])["what"] == "audit log"
    assert not seen, f"the audit log was put at a URL: {seen}"
    context.close()


def test_the_table_toolbar_offers_no_csv_download_of_identified_tables(browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    context, page, _ = open_admin_page(browser, server, "Audit log")
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    grid.hover()
    toolbar = page.get_by_test_id("stElementToolbar").first
    expect(toolbar.get_by_role("button").first).to_be_visible()
    buttons = [b.get_attribute("aria-label") or b.inner_text()
               for b in toolbar.get_by_role("button").all()]
    assert buttons, "no toolbar appeared over the table: the test could not look"
    assert not [b for b in buttons if "download" in b.lower()], buttons
    context.close()


UPLOAD = """async ([sessionId, size]) => {
  const token = document.cookie.split('; ').find(c => c.startsWith('_streamlit_xsrf='))?.split('=')[1] ?? '';
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(size)]), 'redcap.csv');
  const r = await fetch(`/_stcore/upload_file/${sessionId}/${crypto.randomUUID()}`,
                        {method: 'PUT', body: form, headers: {'X-Xsrftoken': decodeURIComponent(token)}});
  return r.status;
}"""


def test_a_signed_out_session_cannot_upload_a_large_file(browser, start_server, clinic_db):
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    server = start_server(clinic_db.path)
    context = browser.new_context()
    page = context.new_page()
    sessions: list[str] = []

    def frames(ws):
        def read(payload):
            if isinstance(payload, bytes):
                msg = ForwardMsg()
                msg.ParseFromString(payload)
                if msg.WhichOneof("type") == "new_session":
                    sessions.append(msg.new_session.initialize.session_id)
        ws.on("framereceived", read)

    page.on("websocket", frames)
    page.goto(server.url)
    wait_for_idle(page)
    assert page.get_by_role("button", name="Sign in", exact=True).count()  # signed out
    assert sessions and sessions[-1]
    small = page.evaluate(UPLOAD, [sessions[-1], 2_000_000])
    large = page.evaluate(UPLOAD, [sessions[-1], 12 * 1024 * 1024])
    assert small == 204                       # the attack's method works: a REDCap-sized file goes in
    assert large == 413, f"a signed-out session uploaded 12 MB (status {large})"
    context.close()
