"""First run (app_pages/setup.py): create the first administrator, or open the synthetic demo."""

from __future__ import annotations

import functools

import pytest

from outcomes import auth, storage, synthetic
from tests.page_helpers import button, messages, new_session, select_row, sign_in, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PASSWORD = "first admin password"


@pytest.fixture
def empty_clinic(tmp_path, monkeypatch, fast_hasher):
    """A machine where the app has never run: no clinic database, no demo database."""
    paths = {"clinic": tmp_path / "clinic.db", "demo": tmp_path / "demo" / "demo.db"}
    monkeypatch.setenv("OUTCOMES_DB_PATH", str(paths["clinic"]))
    monkeypatch.setenv("OUTCOMES_DEMO_DB_PATH", str(paths["demo"]))
    # A small synthetic cohort keeps the test fast; the page's code path is the same.
    monkeypatch.setattr(synthetic, "prepare_demo", functools.partial(synthetic.prepare_demo, n_patients=30))
    return paths


def create_admin(at, username="root.admin", password=PASSWORD, repeat=None, email=""):
    text_input(at, "Username").input(username)
    text_input(at, "Email (optional; needed only for hospital sign-in)").input(email)
    text_input(at, "Password").input(password)
    text_input(at, "Type the password again").input(password if repeat is None else repeat)
    return button(at, "Create administrator").click().run()


def users(path) -> list[str]:
    return storage.load_users(storage.connect(path))["username"].tolist()


def test_first_run_shows_the_setup_screen(empty_clinic):
    at = new_session().run()
    assert not at.exception
    assert at.title[0].value == "Welcome to Infusion outcomes"
    assert [s.value for s in at.subheader] == ["Create the administrator", "Open the demo"]
    with pytest.raises(ValueError):
        at.switch_page("app_pages/login.py")          # nothing else is reachable before setup


def test_creating_the_first_administrator_signs_them_in(empty_clinic):
    at = create_admin(new_session().run(), email="root@clinic.example")
    assert not at.exception
    assert at.title[0].value == "Users"
    assert at.session_state["auth.user"].role == "admin"
    db = storage.open_db(empty_clinic["clinic"])
    assert storage.get_user(db, username="root.admin")["email"] == "root@clinic.example"
    assert storage.load_audit_log(db, action="create_first_admin")["actor"].tolist() == ["root.admin"]
    # From now on the app opens on the sign-in page, and the new account works there.
    at = sign_in(new_session().run(), "root.admin", PASSWORD)
    assert at.title[0].value == "Users"


def test_passwords_that_differ_are_refused_and_nothing_is_created(empty_clinic):
    at = create_admin(new_session().run(), repeat=PASSWORD + "x")
    assert messages(at, "error") == ["The two passwords are not the same. Type them again."]
    assert at.title[0].value == "Welcome to Infusion outcomes"
    assert users(empty_clinic["clinic"]) == []


@pytest.mark.parametrize("password, problem", [
    ("short", "it has 5 characters; use at least 10"),
    ("root.admin-2025", "it contains the username"),
    ("password123", "commonly used password"),
])
def test_a_weak_password_is_refused_with_the_rule_it_breaks(empty_clinic, password, problem):
    at = create_admin(new_session().run(), password=password)
    assert len(at.error) == 1
    assert "Choose another password: nothing was saved." in at.error[0].value
    assert problem in at.error[0].value
    assert users(empty_clinic["clinic"]) == []


def test_an_empty_username_is_refused(empty_clinic):
    at = create_admin(new_session().run(), username="  ")
    assert len(at.error) == 1 and "username" in at.error[0].value
    assert users(empty_clinic["clinic"]) == []


def test_open_the_demo_seeds_a_separate_database_and_lists_the_demo_accounts(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    assert not at.exception
    assert at.query_params["demo"] == "1"      # kept in the URL, so a reload stays in the demo
    assert at.title[0].value == "Sign in"
    assert "Demo with synthetic data." in at.warning[0].value            # the permanent banner
    listed = at.dataframe[0].value
    assert sorted(listed["role"]) == ["admin", "clinician", "patient", "qi"]
    assert set(listed["username"]) == {"demo-admin", "demo-clinician", "demo-qi", "demo-patient"}

    demo = storage.open_db(empty_clinic["demo"])
    assert storage.is_synthetic(demo)
    assert storage.database_summary(demo)["patients"] == 30
    assert set(users(empty_clinic["demo"])) == set(listed["username"])
    # The clinic's own database holds no demo account (nor any account) and stays at first run.
    assert users(empty_clinic["clinic"]) == []
    assert new_session().run().title[0].value == "Welcome to Infusion outcomes"


def test_a_demo_account_signs_in_and_the_banner_stays(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    sign_in(at, clinician["username"], clinician["password"])
    assert not at.exception
    assert at.title[0].value == "Roster"
    assert "Demo with synthetic data." in at.warning[0].value


def test_demo_accounts_do_not_work_on_the_clinic_database(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    # Another tab without ?demo=1, after the clinic has created its administrator.
    create_admin(new_session().run())
    at = sign_in(new_session().run(), clinician["username"], clinician["password"])
    assert messages(at, "error") == [auth.LOGIN_FAILED]
    assert "demo-clinician" not in users(empty_clinic["clinic"])


def test_the_demo_is_reopened_without_reseeding(empty_clinic):
    for _ in range(2):
        at = new_session().run()
        button(at, "Open the demo").click().run()
    assert storage.database_summary(storage.open_db(empty_clinic["demo"]))["patients"] == 30
    assert len(at.dataframe[0].value) == 4


def test_a_reload_of_the_demo_tab_stays_in_the_demo(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    at = new_session()
    at.query_params["demo"] = "1"
    at.run()
    assert at.title[0].value == "Sign in"
    assert "Demo with synthetic data." in at.warning[0].value
    assert len(at.dataframe[0].value) == 4


def test_a_demo_link_before_the_demo_exists(empty_clinic):
    at = new_session()
    at.query_params["demo"] = "1"
    at.run()
    assert at.title[0].value == "Sign in"
    assert "not prepared on this machine yet" in at.info[0].value
    assert not at.dataframe                            # no empty table of accounts
    button(at, "Prepare the demo").click().run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 4
    assert users(empty_clinic["clinic"]) == []


def test_the_demo_survives_moving_between_pages(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    sign_in(at, clinician["username"], clinician["password"])
    select_row(at, 0)                                   # the roster opens a patient with st.switch_page
    assert not at.exception
    assert not at.error, messages(at, "error")
    assert at.title[0].value.startswith("Patient DEMO-")
    assert "Demo with synthetic data." in at.warning[0].value
    assert at.query_params["demo"] == "1"
    at.switch_page("app_pages/alerts.py").run()         # a click in the sidebar
    assert at.title[0].value == "Alerts" and "Demo with synthetic data." in at.warning[0].value
    at.sidebar.button[0].click().run()                  # signing out stays in the demo too
    assert at.title[0].value == "Sign in"
    assert "Demo with synthetic data." in at.warning[0].value and len(at.dataframe[0].value) == 4
