"""Security issue, findings 3 and 11 and the public metrics: attacks on a running server at websocket level.

A signed-in Chromium session is the victim; the attacker is a script (tests/reliability/streamlit_wire.py) that
knows the victim's Streamlit session id, as proxy and access logs of upload URLs reveal it
(``PUT /_stcore/upload_file/<session id>/…``), but not the victim's cookies. (Here rather than in
tests/reliability because it needs the Chromium fixtures of tests/browser/conftest.py.)
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from tests.conftest import PASSWORD
from tests.reliability.streamlit_wire import WireClient, fetch_cookies

from .conftest import script_run, wait_for_idle
from .test_journeys import sign_in


def _session_ids(page) -> list[str]:
    """Collect the Streamlit session ids the server tells this page (one per script run)."""
    ids: list[str] = []

    def on_websocket(ws) -> None:
        def on_frame(payload) -> None:
            if isinstance(payload, (bytes, bytearray)):
                msg = ForwardMsg()
                msg.ParseFromString(bytes(payload))
                if msg.WhichOneof("type") == "new_session":
                    ids.append(msg.new_session.initialize.session_id)
        ws.on("framereceived", on_frame)

    page.on("websocket", on_websocket)
    return ids


def _signed_in_victim(browser, server, username: str = "cleo.clinician", heading: str = "Roster"):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    ids = _session_ids(page)
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, username, PASSWORD)
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=30_000)
    wait_for_idle(page)
    assert ids, "the page told no session id"
    return context, page, ids[-1]


SIGNED_IN_SIGNS = ("Signed in as", "Roster", "P001", "P002", "cleo.clinician", "Sign out")


def _assert_anonymous(run, victim_id: str) -> None:
    assert run.finished, "the script run did not finish"
    assert run.session_id and run.session_id != victim_id, "the attacker was attached to the victim's session"
    seen = [s for s in SIGNED_IN_SIGNS if s in run.text]
    assert seen == [], f"the attacker saw the victim's signed-in page: {seen}"
    assert "Sign in" in run.text


def test_a_leaked_session_id_without_the_browsers_cookie_does_not_take_over_the_session(
        browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    context, page, victim_id = _signed_in_victim(browser, server)

    # 1. The session id alone (no cookie at all).
    with WireClient(server.url, session_id=victim_id) as attacker:
        attacker.rerun()
        _assert_anonymous(attacker.receive(), victim_id)

    # 2. The session id and a cookie of the attacker's own, fetched from the server like any visitor's.
    own = fetch_cookies(server.url)
    with WireClient(server.url, session_id=victim_id, cookies=own) as attacker:
        attacker.rerun()
        _assert_anonymous(attacker.receive(), victim_id)

    # The victim's session is untouched: still signed in, and it still works.
    with script_run(page):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("heading", name="Alerts")).to_be_visible(timeout=30_000)

    # Control: with the victim's own cookies the same script does resume the session, so the checks above
    # would have seen a takeover (this is what a stolen cookie plus a leaked id still allow).
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    with WireClient(server.url, session_id=victim_id, cookies=cookies) as owner:
        owner.rerun()
        run = owner.receive()
    assert run.session_id == victim_id and "Signed in as" in run.text
    context.close()


CACHE_PROBE = """
import os
from streamlit.runtime import app_session

_clear = app_session.AppSession._handle_clear_cache_request


def _counted(self):
    with open(os.environ["OUTCOMES_CACHE_PROBE"], "a") as f:
        f.write("cleared\\n")
    _clear(self)


app_session.AppSession._handle_clear_cache_request = _counted
"""


def test_a_client_cannot_empty_every_cache(browser, start_server, clinic_db, tmp_path):
    """Finding 11: the ``clear_cache`` message of Streamlit's developer menu empties the caches of every user."""
    # The server counts the cache clears it performs (a sitecustomize of this test only).
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(CACHE_PROBE)
    log = tmp_path / "cache-clears.log"
    server = start_server(clinic_db.path, OUTCOMES_CACHE_PROBE=str(log), PYTHONPATH=str(probe))
    with WireClient(server.url) as client:
        client.rerun()
        client.receive()
        msg = BackMsg()
        msg.clear_cache = True
        client.send(msg)
        client.rerun()                      # the server handles messages in order: this one comes after
        assert client.receive().finished
    assert not log.exists() or log.read_text() == "", "a client emptied every cache"


def test_the_metrics_endpoint_is_not_public(start_server, clinic_db):
    server = start_server(clinic_db.path)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "/_stcore/metrics", timeout=30)
    assert refused.value.code == 404
    with urllib.request.urlopen(server.url + "/_stcore/health", timeout=30) as health:  # still there
        assert health.read() == b"ok"
