"""A patient turns the clinic's invitation code into a login (app_pages/invitation.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outcomes import auth, clinic, storage
from outcomes.settings import load_settings
from tests.page_helpers import button, messages, new_session, sign_in, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

NEW_PASSWORD = "my own long password"


def invitation_page():
    at = new_session().run()
    return at.switch_page("app_pages/invitation.py").run()


def redeem(code: str, username: str = "pia.patient", password: str = NEW_PASSWORD, repeat: str | None = None):
    at = invitation_page()
    text_input(at, "Invitation code").input(code)
    text_input(at, "Choose a username").input(username)
    text_input(at, "Choose a password").input(password)
    text_input(at, "Type the password again").input(password if repeat is None else repeat)
    return button(at, "Create my login").click().run()


def enrol(clinic_db, patient_id: str = "P100", *, now: datetime | None = None) -> auth.Invitation:
    now = now or datetime.now(UTC)
    return clinic.enrol_patient(clinic_db.open(), clinic_db.users["clinician"], patient_id=patient_id,
                                today=now.date(), now=now, settings=load_settings())


def login_of(clinic_db, patient_id: str):
    users = storage.load_users(clinic_db.open())
    return users[users["patient_id"] == patient_id]


def test_the_page_is_open_to_visitors_and_explains_the_code(clinic_db):
    at = invitation_page()
    assert not at.exception
    assert at.title[0].value == "Create your login"
    assert "invitation code" in at.markdown[0].value


@pytest.mark.slow
def test_the_code_shown_at_enrolment_creates_the_patients_login(app_as, clinic_db):
    # The clinician enrols the patient on the Record page and reads the code off the screen.
    at = app_as("clinician", "app_pages/record.py")
    text_input(at, "Clinic patient ID").input("P100")
    button(at, "Enrol and create invitation code").click().run()
    code = at.code[0].value
    # The patient, at home, in their own browser.
    at = redeem(code)
    assert not at.exception
    assert at.title[0].value == "Weekly check-in"
    assert at.session_state["auth.user"].patient_id == "P100"
    row = login_of(clinic_db, "P100").iloc[0]
    assert (row["username"], row["role"], bool(row["must_change_password"])) == ("pia.patient", "patient", False)
    log = storage.load_audit_log(clinic_db.open(), action="redeem_invitation")
    assert log[["actor", "patient_id"]].values.tolist() == [["pia.patient", "P100"]]
    # The new login works from the sign-in page.
    at = sign_in(new_session().run(), "pia.patient", NEW_PASSWORD)
    assert at.title[0].value == "Weekly check-in"


def test_the_code_may_be_typed_in_lower_case_with_spaces(clinic_db):
    code = enrol(clinic_db).code
    at = redeem(" " + code.lower().replace("-", " ") + " ")
    assert at.title[0].value == "Weekly check-in"


@pytest.mark.slow
def test_a_code_works_only_once(clinic_db):
    code = enrol(clinic_db).code
    redeem(code)
    at = redeem(code, username="someone.else")
    assert messages(at, "error") == ["This invitation code has already been used. Sign in with the username "
                                     "chosen then, or ask the clinic for a new code."]
    assert login_of(clinic_db, "P100")["username"].tolist() == ["pia.patient"]


def test_an_expired_code_says_when_it_expired(clinic_db):
    issued = datetime.now(UTC) - timedelta(days=load_settings().invitation_days + 1)
    invitation = enrol(clinic_db, now=issued)
    at = redeem(invitation.code)
    assert messages(at, "error") == [f"This invitation code expired on {invitation.expires_at:%Y-%m-%d}. "
                                     "Ask the clinic for a new one."]
    assert at.title[0].value == "Create your login"
    assert login_of(clinic_db, "P100").empty


def test_an_unknown_code_asks_to_check_for_typos(clinic_db):
    enrol(clinic_db)
    at = redeem("K7QF-M2XD-9P")
    assert "This invitation code is not valid. Check it for typos" in at.error[0].value
    assert login_of(clinic_db, "P100").empty
    log = storage.load_audit_log(clinic_db.open(), action="invitation_failed")
    assert "unknown code" in log["details"].iloc[0]


def test_a_replaced_code_asks_for_the_latest_one(clinic_db):
    first = enrol(clinic_db).code
    auth.issue_invitation(clinic_db.open(), clinic_db.users["clinician"], "P100", now=datetime.now(UTC),
                          settings=load_settings())
    at = redeem(first)
    assert messages(at, "error") == ["This invitation code was replaced by a newer one. Use the latest code "
                                     "the clinic gave you."]


@pytest.mark.slow
def test_passwords_that_differ_create_nothing_and_keep_the_code_usable(clinic_db, dump):
    code = enrol(clinic_db).code
    before = dump(clinic_db.open())
    at = redeem(code, repeat=NEW_PASSWORD + "!")
    assert messages(at, "error") == ["The two passwords are not the same. Type them again."]
    assert dump(clinic_db.open()) == before
    assert redeem(code).title[0].value == "Weekly check-in"


@pytest.mark.parametrize("password, problem", [("short pw", "use at least 10"),
                                               ("pia.patient is me", "it contains the username")])
def test_a_weak_password_is_refused_with_the_rule(clinic_db, dump, password, problem):
    code = enrol(clinic_db).code
    before = dump(clinic_db.open())
    at = redeem(code, password=password)
    assert len(at.error) == 1 and problem in at.error[0].value
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_a_username_already_taken_is_refused_and_the_code_still_works(clinic_db):
    code = enrol(clinic_db).code
    at = redeem(code, username="cleo.clinician")
    assert len(at.error) == 1 and "cleo.clinician" in at.error[0].value
    assert login_of(clinic_db, "P100").empty
    assert redeem(code).title[0].value == "Weekly check-in"


def test_a_patient_who_got_a_login_after_the_code_was_issued_is_told_to_sign_in(clinic_db):
    db, now = clinic_db.open(), datetime.now(UTC)
    invitation = auth.issue_invitation(db, clinic_db.users["clinician"], "P002", now=now, settings=load_settings())
    auth.create_user(db, clinic_db.users["admin"], username="pia.patient", role="patient",
                     password=NEW_PASSWORD + "!", patient_id="P002", now=now)  # an administrator got there first
    at = redeem(invitation.code)
    assert messages(at, "error") == ["An account already exists for you. Sign in with it, or ask the clinic "
                                     "to reset its password."]
    assert login_of(clinic_db, "P002")["username"].tolist() == ["pia.patient"]
