"""One-tap links through the whole app (app.py, ui.session.open_link, app_pages/link.py, the check-in page):
the token leaves the URL, a check-in link opens only the check-in and its result, every unusable link gets
the same page, the stop link asks first, and sign-in still works."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outcomes import auth, links, storage
from tests.conftest import PASSWORD
from tests.page_helpers import button, new_session, seen, sign_in
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from tests.test_app_navigation import registered
from ui import navigation, session

FRIENDLY = "This link can't be used any more. Ask your clinic for a new link."


def make_link(clinic_db, purpose: str = "checkin", *, patient_id: str = "P001", expires_in=timedelta(hours=6),
              created: datetime | None = None) -> tuple[str, int]:
    token, moment = links.new_token(), created or datetime.now(UTC)
    db = clinic_db.open()
    try:
        link_id = storage.add_link(db, token_hash=links.token_hash(token), purpose=purpose, patient_id=patient_id,
                                   expires_at=moment + expires_in, by="reminders", now=moment)
    finally:
        db.close()
    return token, link_id


def opened(parameter: str, token: str):
    at = new_session()
    at.query_params[parameter] = token
    return at.run()


def audit(clinic_db, action: str) -> list[tuple]:
    db = clinic_db.open()
    try:
        log = storage.load_audit_log(db)
    finally:
        db.close()
    return [tuple(r) for r in log.loc[log["action"] == action, ["actor", "patient_id"]].itertuples(index=False)]


def test_a_check_in_link_opens_the_check_in_alone_and_leaves_the_address(clinic_db):
    token, link_id = make_link(clinic_db)
    at = opened("checkin", token)
    assert not at.exception
    assert at.query_params == {}                                           # gone from the address bar
    assert at.title[0].value == "Weekly check-in"
    assert isinstance(at.session_state[session.USER_KEY], auth.LinkUser)
    # Only the check-in page is registered: no progress, no account, no sign-in page.
    assert registered(at) == {navigation.CHECKIN_PAGE.path}
    assert seen(at, "Opened from the check-in link", "caption")
    assert seen(at, "saved as you go", "caption")                         # with the link (reopening it restores)
    assert audit(clinic_db, "link_used") == [(f"link:{link_id}", "P001")]


@pytest.mark.slow
def test_answering_through_a_link_shows_the_result_and_nothing_more(clinic_db):
    from tests.test_page_checkin import fill_all

    token, link_id = make_link(clinic_db)
    at = opened("checkin", token)
    fill_all(at)
    button(at, "Send my answers").click().run()
    assert not at.exception
    assert seen(at, "Thank you. Your answers are saved.", "success")
    assert seen(at, "You can close this page now.", "caption")
    assert not at.get("page_link") and "Start another check-in" not in [b.label for b in at.button]
    assert (f"link:{link_id}", "P001") in audit(clinic_db, "submit_checkin")
    db = clinic_db.open()
    try:  # no draft was kept for the link session (it has no account to keep one for)
        assert db.conn.execute("SELECT count(*) FROM checkin_drafts WHERE user_ref < 0").fetchone()[0] == 0
    finally:
        db.close()


@pytest.mark.parametrize("how", ["used", "expired", "revoked", "forged", "malformed"])
def test_every_link_that_cannot_be_used_gets_the_same_page(clinic_db, how):
    token, link_id = make_link(clinic_db)
    if how == "used":
        opened("checkin", token)
    elif how == "expired":
        token, _ = make_link(clinic_db, created=datetime.now(UTC) - timedelta(days=2), expires_in=timedelta(days=1))
    elif how == "revoked":
        db = clinic_db.open()
        storage.revoke_links(db, "P001", by="cleo.clinician", now=datetime.now(UTC), link_id=link_id)
        db.close()
    elif how == "forged":
        token = links.new_token()
    else:
        token = "<script>alert(1)</script>"
    at = opened("checkin", token)
    assert not at.exception
    assert at.query_params == {}
    assert session.USER_KEY not in at.session_state
    assert [i.value for i in at.info] == [FRIENDLY]
    assert at.title[0].value == "Your clinic"
    assert registered(at) == set()                                # the link page alone (not a PageSpec of PAGES)
    assert [b.label for b in at.button] == ["Sign in"]


def test_a_patient_with_an_account_signs_in_from_the_friendly_page(clinic_db):
    at = opened("checkin", links.new_token())
    button(at, "Sign in").click().run()
    assert at.title[0].value == "Sign in"
    sign_in(at, "pat.patient", PASSWORD)
    assert not at.exception
    assert at.title[0].value == "Weekly check-in"
    assert at.session_state[session.USER_KEY].username == "pat.patient"
    assert navigation.CHECKIN_PAGE.path in registered(at) and "app_pages/progress.py" in registered(at)


def test_a_link_ends_the_session_the_tab_had(app_as, clinic_db):
    token, _ = make_link(clinic_db)
    at = app_as("clinician")
    at.query_params["checkin"] = token
    at.run()
    assert isinstance(at.session_state[session.USER_KEY], auth.LinkUser)
    assert registered(at) == {navigation.CHECKIN_PAGE.path}
    assert ("cleo.clinician", None) in audit(clinic_db, "logout")


def test_a_revoked_link_ends_its_session_at_the_next_run(clinic_db):
    token, link_id = make_link(clinic_db)
    at = opened("checkin", token)
    db = clinic_db.open()
    db.conn.execute("UPDATE checkin_links SET revoked_at = ?, revoked_by = 'cleo.clinician' WHERE id = ?",
                    [datetime.now(UTC).isoformat(), link_id])
    db.conn.commit()
    db.close()
    at.run()
    assert not at.exception
    assert session.USER_KEY not in at.session_state
    assert [i.value for i in at.info] == [FRIENDLY]


def test_an_idle_link_session_ends_with_the_link_page(clinic_db):
    token, _ = make_link(clinic_db)
    at = opened("checkin", token)
    at.session_state[session.LAST_SEEN_KEY] = datetime.now(UTC) - timedelta(hours=2)
    at.run()
    assert session.USER_KEY not in at.session_state
    assert [i.value for i in at.info] == [
        f"You were signed out after a period of inactivity. {FRIENDLY}"]


def test_the_stop_link_asks_first_then_stops_the_messages(clinic_db):
    db = clinic_db.open()
    storage.set_contact(db, "P001", email="pat@example.org", channel="email", consent_on=clinic_db.today,
                        by="cleo.clinician", now=datetime.now(UTC))
    db.close()
    token, _ = make_link(clinic_db, "stop")
    at = opened("stop", token)
    assert not at.exception and at.query_params == {}
    assert at.title[0].value == "Stop these messages?"
    assert [b.label for b in at.button] == ["Stop these messages"]
    db = clinic_db.open()
    assert storage.load_contacts(db, "P001")["channel"].tolist() == ["email"]
    db.close()
    button(at, "Stop these messages").click().run()
    assert [s.value for s in at.success] == ["You will get no more messages from Your clinic."]
    db = clinic_db.open()
    assert storage.load_contacts(db, "P001")["channel"].tolist() == ["none"]
    db.close()
    assert audit(clinic_db, "opt_out") == [("patient (stop link)", "P001")]
    # The same link again: asks again, stops nothing more, harms nothing.
    again = opened("stop", token)
    assert again.title[0].value == "Stop these messages?"
    button(again, "Stop these messages").click().run()
    assert [s.value for s in again.success] == ["You will get no more messages from Your clinic."]


@pytest.mark.parametrize("token", ["forged", "checkin link"])
def test_a_stop_link_that_is_not_one_gets_the_same_friendly_page(clinic_db, token):
    token = links.new_token() if token == "forged" else make_link(clinic_db)[0]
    at = opened("stop", token)
    assert [i.value for i in at.info] == [FRIENDLY]
    assert "Stop these messages" not in [b.label for b in at.button]
