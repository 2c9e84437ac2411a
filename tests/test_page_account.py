"""My account (app_pages/account.py): who I am, and changing my password."""

from __future__ import annotations

import pytest

from outcomes import auth, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import button, messages, new_session, sign_in, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/account.py"
NEW = "a brand new passphrase"


def change(at, current: str, new: str, repeat: str | None = None):
    text_input(at, "Current password").input(current)
    text_input(at, "New password").input(new)
    text_input(at, "Type the new password again").input(new if repeat is None else repeat)
    return button(at, "Change password").click().run()


def password_hash(clinic_db, username: str) -> str:
    return storage.get_user(clinic_db.open(), username=username)["password_hash"]


@pytest.mark.parametrize("role, line", [
    ("patient", "Username **pat.patient**, role **patient**, linked to patient record P001."),
    ("clinician", "Username **cleo.clinician**, role **clinician**."),
])
def test_the_page_says_who_is_signed_in(app_as, role, line):
    at = app_as(role, PAGE)
    assert not at.exception
    assert at.title[0].value == "My account"
    assert messages(at, "markdown")[0] == line


@pytest.mark.slow
def test_changing_the_password(app_as, clinic_db):
    at = change(app_as("clinician", PAGE), PASSWORD, NEW)
    assert not at.exception
    assert messages(at, "success") == ["Your password is changed. Use the new one next time you sign in. Any "
                                       "other browser signed in as you has been signed out."]
    assert messages(sign_in(new_session().run(), "cleo.clinician", PASSWORD), "error") == [auth.LOGIN_FAILED]
    assert sign_in(new_session().run(), "cleo.clinician", NEW).title[0].value == "Roster"
    assert not storage.get_user(clinic_db.open(), username="cleo.clinician")["must_change_password"]
    assert storage.load_audit_log(clinic_db.open(), action="change_password")["actor"].tolist() == ["cleo.clinician"]


@pytest.mark.slow
def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failure(app_as, clinic_db):
    before = password_hash(clinic_db, "cleo.clinician")
    at = change(app_as("clinician", PAGE), "not my password", NEW)
    assert messages(at, "error") == ["The current password is not right, so the password was not changed. "
                                     "Type your current password again."]
    assert password_hash(clinic_db, "cleo.clinician") == before
    attempts = load_settings().lockout_attempts
    for _ in range(attempts - 1):                  # counted like a failed sign-in of the account
        sign_in(new_session().run(), "cleo.clinician", "wrong again!")
    assert messages(sign_in(new_session().run(), "cleo.clinician", PASSWORD), "error")[0].startswith("Too many")
    assert not storage.load_audit_log(clinic_db.open(), action="change_password_failed").empty


def test_new_passwords_that_differ_change_nothing(app_as, clinic_db, dump):
    at = app_as("clinician", PAGE)
    before = dump(clinic_db.open())
    change(at, PASSWORD, NEW, repeat=NEW + "?")
    assert messages(at, "error") == ["The two new passwords are not the same. Type them again."]
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
@pytest.mark.parametrize("new, problem", [("tiny", "use at least 10"),
                                          ("cleo.clinician!!", "it contains the username"),
                                          (PASSWORD, "it is the same as the current password")])
def test_a_weak_new_password_is_refused_with_the_rule(app_as, clinic_db, new, problem):
    before = password_hash(clinic_db, "cleo.clinician")
    at = change(app_as("clinician", PAGE), PASSWORD, new)
    assert len(at.error) == 1 and problem in at.error[0].value
    assert "Choose another password: nothing was saved." in at.error[0].value
    assert password_hash(clinic_db, "cleo.clinician") == before


@pytest.mark.slow
def test_a_user_with_an_administrator_set_password_is_asked_to_change_it(app_as, clinic_db):
    storage.update_user(clinic_db.open(), clinic_db.users["clinician"].id, must_change_password=True)
    at = app_as("clinician", PAGE)
    assert messages(at, "warning") == ["Please choose a new password: the current one was set by an administrator. "
                                       "The rest of the app opens once you have."]
    change(at, PASSWORD, NEW)
    assert not at.session_state["auth.user"].must_change_password
    at.run()
    assert not at.warning


def test_no_reminder_once_the_password_is_the_user_s_own(app_as, clinic_db):
    storage.update_user(clinic_db.open(), clinic_db.users["clinician"].id, must_change_password=False)
    at = app_as("clinician", PAGE)
    assert not at.warning


def test_an_administrator_set_password_must_be_changed_before_anything_else(clinic_db):
    storage.update_user(clinic_db.open(), clinic_db.users["clinician"].id, must_change_password=True)
    at = sign_in(new_session().run(), "cleo.clinician", PASSWORD)
    assert at.title[0].value == "My account"
    with pytest.raises(ValueError):               # no other page is registered yet
        at.switch_page("app_pages/roster.py")
    change(at, PASSWORD, NEW)
    assert not at.exception
    at.switch_page("app_pages/roster.py").run()   # the whole navigation opens once it is changed
    assert not at.exception and at.title[0].value == "Roster"


# Finding 6 of the security issue: sessions survived a password change or an administrator's reset. -------


@pytest.mark.slow
def test_changing_the_password_ends_the_users_other_sessions_but_not_this_one(app_as, clinic_db):
    other = sign_in(new_session().run(), "cleo.clinician", PASSWORD)          # e.g. a forgotten browser
    assert other.title[0].value == "Roster"
    at = change(app_as("clinician", PAGE), PASSWORD, NEW)
    assert messages(at, "success")
    at.run()                                                                   # this session goes on
    assert at.title[0].value == "My account" and "auth.user" in at.session_state
    other.run()                                                                # the other one has ended
    assert other.title[0].value == "Sign in" and "auth.user" not in other.session_state
    assert other.info[0].value == auth.CREDENTIALS_CHANGED
    reasons = storage.load_audit_log(clinic_db.open(), action="logout", actor="cleo.clinician")["details"]
    assert '"credentials changed"' in reasons.iloc[0]


@pytest.mark.slow
def test_an_administrators_reset_ends_the_users_sessions(clinic_db):
    victim = sign_in(new_session().run(), "cleo.clinician", PASSWORD)
    auth.reset_password(clinic_db.open(), clinic_db.users["admin"], "cleo.clinician", "a temporary password")
    victim.run()
    assert victim.title[0].value == "Sign in" and victim.info[0].value == auth.CREDENTIALS_CHANGED
    at = sign_in(new_session().run(), "cleo.clinician", "a temporary password")   # the new password works
    assert at.title[0].value == "My account"
