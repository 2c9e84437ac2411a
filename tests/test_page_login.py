"""Sign-in page (app_pages/login.py): local accounts, lockout, idle timeout, sign-out, hospital sign-in."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from outcomes import auth, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import button, messages, new_session, sign_in
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from ui import navigation


def audit(clinic_db, action: str, actor: str | None = None) -> list[dict]:
    log = storage.load_audit_log(clinic_db.open(), action=action, actor=actor)
    return [json.loads(d) if d else {} for d in log["details"]]


def reachable(at) -> set[str]:
    out = set()
    for spec in navigation.PAGES + navigation.PUBLIC_PAGES:
        try:
            at.switch_page(spec.path)
        except ValueError:
            continue
        out.add(spec.path)
    return out


def test_an_anonymous_visitor_sees_the_sign_in_form_and_the_invitation_link(clinic_db):
    at = new_session().run()
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert at.text_input[1].proto.type == at.text_input[1].proto.PASSWORD
    assert not at.warning                      # not the demo: no synthetic-data banner


@pytest.mark.slow
@pytest.mark.parametrize("username, role, title", [("cleo.clinician", "clinician", "Roster"),
                                                   ("pat.patient", "patient", "Weekly check-in"),
                                                   ("ada.admin", "admin", "Users"),
                                                   ("quinn.qi", "qi", "Cohort outcomes")])
def test_signing_in_opens_the_home_page_of_the_role_and_only_its_pages(clinic_db, username, role, title):
    at = sign_in(new_session().run(), username, PASSWORD)
    assert not at.exception
    assert at.title[0].value == title
    assert at.session_state["auth.user"].username == username
    assert reachable(at) == {p.path for p in navigation.pages_for(role)}
    assert f"Signed in as **{username}**" in at.sidebar.caption[0].value
    assert audit(clinic_db, "login", username)[0]["method"] == "password"


@pytest.mark.parametrize("username, password", [("cleo.clinician", "not the password"),
                                                ("nobody.here", PASSWORD),
                                                ("", "")])
def test_a_failed_sign_in_gets_one_generic_message_and_is_audited(clinic_db, username, password):
    at = sign_in(new_session().run(), username, password)
    assert not at.exception
    assert messages(at, "error") == [auth.LOGIN_FAILED]
    assert at.title[0].value == "Sign in"
    assert "auth.user" not in at.session_state
    assert audit(clinic_db, "login_failed")            # known or unknown user, the attempt is logged


@pytest.mark.slow
def test_too_many_failures_make_this_client_wait_even_for_the_right_password(clinic_db):
    settings = load_settings()
    at = new_session().run()
    for _ in range(settings.lockout_attempts):
        sign_in(at, "cleo.clinician", "wrong password, again")
        assert messages(at, "error") == [auth.LOGIN_FAILED]
    sign_in(at, "cleo.clinician", PASSWORD)
    error = messages(at, "error")[0]                          # the same for any username: nothing given away
    assert error.startswith("Too many failed sign-ins from here. Try again in 15 minutes")
    assert "python -m outcomes unlock USERNAME" in error      # and what to do
    assert at.title[0].value == "Sign in"
    assert "auth.user" not in at.session_state
    reasons = [d["reason"] for d in audit(clinic_db, "login_failed", "cleo.clinician")]
    assert reasons[0] == "throttled" and reasons[1:].count("wrong password") == settings.lockout_attempts
    users = auth.list_users(clinic_db.open(), clinic_db.users["admin"], now=datetime.now(UTC)).set_index("username")
    assert users.loc["cleo.clinician", "locked"] and not users.loc["ada.admin", "locked"]
    # Other accounts are not affected.
    at = sign_in(new_session().run(), "ada.admin", PASSWORD)
    assert at.title[0].value == "Users"
    # An unknown username is treated alike, so the wait reveals nothing about which accounts exist.
    for _ in range(settings.lockout_attempts):
        sign_in(at := new_session().run(), "nobody.here", "wrong password, again")
    assert messages(sign_in(at, "nobody.here", PASSWORD), "error")[0].startswith("Too many failed sign-ins")


def test_an_idle_session_is_signed_out_with_a_notice(app_as, clinic_db):
    at = app_as("clinician")
    assert at.title[0].value == "Roster"
    idle = load_settings().session_idle_minutes
    at.session_state["auth.last_seen"] = datetime.now(UTC) - timedelta(minutes=idle + 1)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert "signed out after a period of inactivity" in at.info[0].value
    assert "auth.user" not in at.session_state
    assert audit(clinic_db, "logout", "cleo.clinician")[0]["reason"] == "idle timeout"
    at.run()                                            # the notice is shown once
    assert not at.info


def test_a_session_ends_at_its_maximum_age_however_active(app_as, clinic_db):
    """Finding 6 of the security issue: a session had no absolute lifetime."""
    at = app_as("clinician")
    at.session_state["auth.signed_in_at"] = datetime.now(UTC) - auth.MAX_SESSION_AGE - timedelta(minutes=1)
    at.session_state["auth.last_seen"] = datetime.now(UTC) - timedelta(seconds=5)   # busy until now
    at.run()
    assert not at.exception
    assert at.title[0].value == "Sign in" and "auth.user" not in at.session_state
    assert "signed in more than 8 hours ago" in at.info[0].value
    assert audit(clinic_db, "logout", "cleo.clinician")[0]["reason"] == "maximum session age"


def test_signing_in_starts_the_clock_of_the_maximum_age(clinic_db):
    at = sign_in(new_session().run(), "cleo.clinician", PASSWORD)
    started = at.session_state["auth.signed_in_at"]
    assert abs((datetime.now(UTC) - started).total_seconds()) < 60
    at.run()
    assert at.session_state["auth.signed_in_at"] == started                 # activity does not move it


@pytest.mark.slow
def test_an_active_session_stays_signed_in(app_as):
    at = app_as("clinician")
    at.session_state["auth.last_seen"] = datetime.now(UTC) - timedelta(minutes=1)
    at.run()
    assert at.title[0].value == "Roster"


def test_sign_out_returns_to_the_sign_in_page(app_as, clinic_db):
    at = app_as("patient")
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert at.info[0].value == "You are signed out."
    assert "auth.user" not in at.session_state
    assert audit(clinic_db, "logout", "pat.patient")[0]["reason"] == "signed out"


@pytest.mark.slow
def test_a_reload_asks_to_sign_in_again(app_as):
    app_as("patient")
    at = new_session().run()            # a browser reload is a new Streamlit session
    assert at.title[0].value == "Sign in"


# Hospital sign-in (OIDC through st.login): at.user drives st.user -----------------------------------


def hospital_session(claims: dict) -> object:
    at = new_session()
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                          "client_id": "outcomes", "client_secret": "s",
                          "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    at.user = claims
    return at


@pytest.fixture
def cleo_email(clinic_db):
    db = clinic_db.open()
    storage.update_user(db, clinic_db.users["clinician"].id, email="cleo@clinic.example")
    return "Cleo@Clinic.example"


def test_without_an_identity_provider_there_is_no_hospital_button(clinic_db):
    at = new_session().run()
    assert "Sign in with your hospital account" not in [b.label for b in at.button]


@pytest.mark.slow
def test_a_hospital_identity_with_a_registered_email_is_signed_in(clinic_db, cleo_email):
    at = hospital_session({"is_logged_in": True, "email": cleo_email, "email_verified": True,
                           "iss": "https://idp.example", "sub": "c-1", "iat": time.time() - 60}).run()
    assert not at.exception
    assert at.title[0].value == "Roster"
    assert at.session_state["auth.user"].username == "cleo.clinician"
    assert audit(clinic_db, "login", "cleo.clinician")[0] == {
        "method": "oidc", "issuer": "https://idp.example", "subject": "c-1"}


def test_before_signing_in_the_hospital_button_is_offered(clinic_db):
    at = hospital_session({"is_logged_in": False}).run()
    assert at.title[0].value == "Sign in"
    assert "Sign in with your hospital account" in [b.label for b in at.button]
    assert [t.label for t in at.text_input] == ["Username", "Password"]   # local accounts still work


def test_an_unregistered_hospital_identity_is_told_what_to_do(clinic_db):
    at = hospital_session({"is_logged_in": True, "email": "stranger@hospital.example", "email_verified": True,
                           "iss": "https://idp.example", "sub": "s-9", "iat": time.time() - 60}).run()
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert "cannot use this app with it" in at.error[0].value
    assert "is not registered as an active user" in at.error[0].value
    assert "Ask an administrator to add this email" in at.error[0].value
    assert "Sign out of the hospital account" in [b.label for b in at.button]
    assert "auth.user" not in at.session_state
    at.run()                                   # a rerun keeps the explanation, and does not try again
    assert "is not registered as an active user" in at.error[0].value
    assert [d["reason"] for d in audit(clinic_db, "login_failed", "stranger@hospital.example")] == ["unknown email"]


def test_a_hospital_sign_in_older_than_the_maximum_age_is_refused(clinic_db, cleo_email):
    too_old = time.time() - auth.MAX_SESSION_AGE.total_seconds() - 60
    at = hospital_session({"is_logged_in": True, "email": cleo_email, "iat": too_old}).run()
    assert at.title[0].value == "Sign in"
    assert "more than 8 hours old" in at.error[0].value
    assert "auth.user" not in at.session_state


def test_a_hospital_identity_of_a_deactivated_user_is_refused(clinic_db, cleo_email):
    auth.deactivate_user(clinic_db.open(), clinic_db.users["admin"], "cleo.clinician")
    at = hospital_session({"is_logged_in": True, "email": cleo_email, "email_verified": True,
                           "iss": "https://idp.example", "sub": "c-1", "iat": time.time()}).run()
    assert at.title[0].value == "Sign in"
    assert "not registered as an active user" in at.error[0].value


def test_an_idle_hospital_session_is_signed_out_of_the_identity_provider_too(clinic_db, cleo_email):
    at = hospital_session({"is_logged_in": True, "email": cleo_email, "email_verified": True,
                           "iss": "https://idp.example", "sub": "c-1", "iat": time.time()}).run()
    assert at.title[0].value == "Roster"
    idle = load_settings().session_idle_minutes
    at.session_state["auth.last_seen"] = datetime.now(UTC) - timedelta(minutes=idle + 1)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert "signed out after a period of inactivity" in at.info[0].value
    assert audit(clinic_db, "logout", "cleo.clinician")[0]["reason"] == "idle timeout"
