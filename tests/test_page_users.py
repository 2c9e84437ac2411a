"""Administrators manage accounts (app_pages/users.py): create, deactivate, reactivate, unlock, reset."""

from __future__ import annotations

import pytest

from outcomes import auth, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import button, messages, new_session, sign_in, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/users.py"
INITIAL = "initial password 42"


@pytest.fixture
def users_page(app_as):
    return app_as("admin", PAGE)


def users_table(at):
    """Staff and patients, from the page's two tables."""
    import pandas as pd

    return pd.concat([at.dataframe[0].value, at.dataframe[1].value]).set_index("username")


def create(at, username: str, role: str | None, password: str = INITIAL, patient_id: str = "", email: str = ""):
    text_input(at, "Username").input(username)
    if role is not None:
        next(s for s in at.selectbox if s.label == "Role").set_value(role)
    text_input(at, "Patient ID (patient role only)").input(patient_id)
    text_input(at, "Email (optional; lets the person sign in through the hospital's identity provider)").input(email)
    text_input(at, "Initial password (leave empty for hospital sign-in only)").input(password)
    return button(at, "Create user").click().run()


def choose(at, username: str):
    next(s for s in at.selectbox if s.label == "User").set_value(username).run()
    return at


def stored(clinic_db, username: str) -> dict:
    return storage.get_user(clinic_db.open(), username=username)


def test_every_user_is_listed_without_password_hashes(users_page):
    table = users_table(users_page)
    assert not users_page.exception
    assert sorted(table.index) == ["ada.admin", "cleo.clinician", "pat.patient", "quinn.qi"]
    assert "password_hash" not in table.columns and "password_hash" not in table.reset_index().columns
    assert table.loc["pat.patient", "patient_id"] == "P001"
    assert table["active"].all() and not table["locked"].any()


def test_the_role_must_be_chosen_explicitly(users_page, clinic_db, dump):
    role = next(s for s in users_page.selectbox if s.label == "Role")
    assert role.value is None                                    # never an administrator by default
    before = dump(clinic_db.open())
    at = create(users_page, "new.person", None)
    assert len(at.error) == 1 and "role is required" in at.error[0].value, messages(at, "error")
    assert dump(clinic_db.open()) == before
    assert text_input(at, "Username").value == "new.person"       # a refused form keeps what was typed


@pytest.mark.slow
def test_creating_a_clinician_who_must_change_the_initial_password(users_page, clinic_db):
    at = create(users_page, "dr.new", "clinician", email="Dr.New@Hospital.example")
    assert not at.exception
    assert messages(at, "success") == ["User dr.new created."]
    assert "dr.new" in users_table(at).index                     # the list is up to date at once
    assert text_input(at, "Username").value == ""                 # and the form is empty for the next one
    user = stored(clinic_db, "dr.new")
    assert (user["role"], user["email"], user["must_change_password"]) == ("clinician", "dr.new@hospital.example",
                                                                         True)
    log = storage.load_audit_log(clinic_db.open(), action="create_user")
    assert "dr.new" in log["details"].iloc[0] and log["actor"].iloc[0] == "ada.admin"
    at = sign_in(new_session().run(), "dr.new", INITIAL)
    assert at.session_state["auth.user"].must_change_password


@pytest.mark.slow
@pytest.mark.parametrize("fields, problem", [
    (dict(username="dr.weak", role="clinician", password="short"), "use at least 10"),
    (dict(username="cleo.clinician", role="clinician"), "The username 'cleo.clinician' is taken"),
    (dict(username="new.patient", role="patient"), "a patient login must name the enrolled patient"),
    (dict(username="second.login", role="patient", patient_id="P001"), "Patient 'P001' already has a login"),
    (dict(username="dr.nopass", role="clinician", password=""), "give an initial password, or an email"),
    (dict(username="x", role="qi"), "must be 3 to 64 characters"),
], ids=["weak-password", "taken", "patient-without-id", "second-patient-login", "no-password-no-email",
        "short-username"])
def test_a_refused_user_says_why_and_nothing_changes(users_page, clinic_db, dump, fields, problem):
    before = dump(clinic_db.open())
    at = create(users_page, **fields)
    assert not at.exception
    assert len(at.error) == 1 and problem in at.error[0].value, messages(at, "error")
    assert not at.success
    assert dump(clinic_db.open()) == before


@pytest.mark.slow
def test_deactivating_and_reactivating_a_user(users_page, clinic_db):
    at = choose(users_page, "cleo.clinician")
    button(at, "Deactivate").click().run()
    assert messages(at, "success") == ["cleo.clinician is deactivated."]
    assert not users_table(at).loc["cleo.clinician", "active"]      # the list shows it at once
    assert "Reactivate" in [b.label for b in at.button]
    assert messages(sign_in(new_session().run(), "cleo.clinician", PASSWORD), "error") == [auth.LOGIN_FAILED]

    button(at, "Reactivate").click().run()
    assert messages(at, "success") == ["cleo.clinician can sign in again."]
    assert users_table(at).loc["cleo.clinician", "active"]
    assert sign_in(new_session().run(), "cleo.clinician", PASSWORD).title[0].value == "Roster"
    actions = storage.load_audit_log(clinic_db.open(), actor="ada.admin")["action"].tolist()
    assert actions.index("reactivate_user") < actions.index("deactivate_user")     # newest first


def test_an_administrator_cannot_deactivate_themselves(users_page, clinic_db):
    at = choose(users_page, "ada.admin")
    button(at, "Deactivate").click().run()
    assert len(at.error) == 1 and "Cannot deactivate your own account" in at.error[0].value
    assert stored(clinic_db, "ada.admin")["active"]


@pytest.mark.slow
def test_unlocking_a_locked_account(users_page, clinic_db):
    at = new_session().run()
    for _ in range(load_settings().lockout_attempts):
        sign_in(at, "cleo.clinician", "not the password!")
    at = users_page
    at.run()
    assert users_table(at).loc["cleo.clinician", "locked"]
    choose(at, "cleo.clinician")
    button(at, "Unlock").click().run()
    assert messages(at, "success") == ["cleo.clinician is unlocked."]
    assert not users_table(at).loc["cleo.clinician", "locked"]
    assert "Unlock" not in [b.label for b in at.button]
    assert sign_in(new_session().run(), "cleo.clinician", PASSWORD).title[0].value == "Roster"


@pytest.mark.slow
def test_resetting_a_password(users_page, clinic_db):
    at = choose(users_page, "pat.patient")
    text_input(at, "Temporary password").input("temporary pass 99")
    button(at, "Reset password").click().run()
    assert messages(at, "success") == ["pat.patient's password is reset; they will be asked to change it."]
    assert stored(clinic_db, "pat.patient")["must_change_password"]
    assert messages(sign_in(new_session().run(), "pat.patient", PASSWORD), "error") == [auth.LOGIN_FAILED]
    at = sign_in(new_session().run(), "pat.patient", "temporary pass 99")
    assert at.title[0].value == "My account"        # a temporary password must be replaced first
    assert "Please choose a new password" in at.warning[0].value


def test_a_weak_temporary_password_is_refused(users_page, clinic_db, dump):
    at = choose(users_page, "pat.patient")
    before = dump(clinic_db.open())
    text_input(at, "Temporary password").input("pat.patient1")
    button(at, "Reset password").click().run()
    assert len(at.error) == 1 and "it contains the username" in at.error[0].value
    assert dump(clinic_db.open()) == before


# Security issue, while in the admin pages: staff and patients apart, a search, and stored text shown inert.


def test_staff_and_patients_are_listed_apart(users_page):
    at = users_page
    staff, patients = at.dataframe[0].value, at.dataframe[1].value
    assert sorted(staff["username"]) == ["ada.admin", "cleo.clinician", "quinn.qi"]
    assert "patient_id" not in staff.columns and "patient" not in set(staff["role"])
    assert patients["username"].tolist() == ["pat.patient"] and patients["patient_id"].tolist() == ["P001"]
    assert [t.label for t in at.tabs][:2] == ["Staff (3)", "Patients (1)"]


@pytest.mark.slow
@pytest.mark.parametrize("query, staff, patients", [
    ("CLEO", ["cleo.clinician"], []),                  # any part, any case
    ("p001", [], ["pat.patient"]),                     # a patient by the clinic's ID
    ("hospital.example", ["dr.mail"], []),             # by email
    ("nobody here", [], []),
])
def test_the_search_finds_users_by_name_email_or_patient_id(users_page, query, staff, patients):
    at = create(users_page, "dr.mail", "clinician", email="dr.mail@hospital.example")
    text_input(at, "Search").input(query).run()
    assert not at.exception
    assert at.dataframe[0].value["username"].tolist() == staff
    assert at.dataframe[1].value["username"].tolist() == patients
    if not staff and not patients:
        assert "No user matches" in at.info[0].value and "Clear the search" in at.info[0].value


@pytest.mark.slow
def test_a_display_name_that_is_a_formula_is_shown_inert(users_page, clinic_db):
    at = create(users_page, "dr.formula", "clinician")
    storage.update_user(clinic_db.open(), stored(clinic_db, "dr.formula")["id"],
                        display_name='=HYPERLINK("http://evil.example","x")')
    at.run()
    assert users_table(at).loc["dr.formula", "display_name"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
