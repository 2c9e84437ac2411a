"""First run (app_pages/setup.py): create the first administrator with the one-time setup token from the
server's log, or open the synthetic demo."""

from __future__ import annotations

import functools
import io
import json
import re
from datetime import UTC, datetime

import pytest

from outcomes import auth, storage, synthetic
from outcomes.cli import main
from outcomes.errors import PermissionDenied
from outcomes.settings import load_settings
from tests.page_helpers import button, messages, new_session, select_row, sign_in, text_input, texts
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


TOKEN_LINE = re.compile(r"Setup token for the first administrator: ([0-9A-Z]{5}(?:-[0-9A-Z]{5}){3})")


@pytest.fixture
def server_log(capsys):
    """What the server printed to its log (standard error) so far, and the last setup token in it."""
    printed: list[str] = []

    def read() -> tuple[str, str | None]:
        printed.append(capsys.readouterr().err)
        text = "".join(printed)
        tokens = TOKEN_LINE.findall(text)
        return text, tokens[-1] if tokens else None

    return read


def create_admin(at, token=None, username="root.admin", password=PASSWORD, repeat=None, email=""):
    """Fill in the form as a visitor would; ``token`` None leaves the setup token empty (or absent)."""
    if token is not None:
        text_input(at, "Setup token").input(token)
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


@pytest.mark.slow
def test_creating_the_first_administrator_signs_them_in(empty_clinic, server_log):
    at = new_session().run()
    at = create_admin(at, server_log()[1], email="root@clinic.example")
    assert not at.exception
    assert at.title[0].value == "Users"
    assert at.session_state["auth.user"].role == "admin"
    db = storage.open_db(empty_clinic["clinic"])
    assert storage.get_user(db, username="root.admin")["email"] == "root@clinic.example"
    assert storage.load_audit_log(db, action="create_first_admin")["actor"].tolist() == ["root.admin"]
    assert storage.get_meta(db, "setup_token") == ""            # used up
    # From now on the app opens on the sign-in page, and the new account works there.
    at = sign_in(new_session().run(), "root.admin", PASSWORD)
    assert at.title[0].value == "Users"


def test_passwords_that_differ_are_refused_and_nothing_is_created(empty_clinic, server_log):
    at = new_session().run()
    at = create_admin(at, server_log()[1], repeat=PASSWORD + "x")
    assert messages(at, "error") == ["The two passwords are not the same. Type them again."]
    assert at.title[0].value == "Welcome to Infusion outcomes"
    assert users(empty_clinic["clinic"]) == []


@pytest.mark.parametrize("password, problem", [
    ("short", "it has 5 characters; use at least 10"),
    ("root.admin-2025", "it contains the username"),
    ("password123", "commonly used password"),
])
def test_a_weak_password_is_refused_with_the_rule_it_breaks(empty_clinic, server_log, password, problem):
    at = new_session().run()
    at = create_admin(at, server_log()[1], password=password)
    assert len(at.error) == 1
    assert "Choose another password: nothing was saved." in at.error[0].value
    assert problem in at.error[0].value
    assert users(empty_clinic["clinic"]) == []


def test_an_empty_username_is_refused(empty_clinic, server_log):
    at = new_session().run()
    at = create_admin(at, server_log()[1], username="  ")
    assert len(at.error) == 1 and "username" in at.error[0].value
    assert users(empty_clinic["clinic"]) == []


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_demo_account_signs_in_and_the_banner_stays(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    sign_in(at, clinician["username"], clinician["password"])
    assert not at.exception
    assert at.title[0].value == "Roster"
    assert "Demo with synthetic data." in at.warning[0].value


@pytest.mark.slow
def test_demo_accounts_do_not_work_on_the_clinic_database(empty_clinic, server_log):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    # Another tab without ?demo=1, after the clinic has created its administrator.
    setup = new_session().run()
    create_admin(setup, server_log()[1])
    at = sign_in(new_session().run(), clinician["username"], clinician["password"])
    assert messages(at, "error") == [auth.LOGIN_FAILED]
    assert "demo-clinician" not in users(empty_clinic["clinic"])


@pytest.mark.slow
def test_the_demo_is_reopened_without_reseeding(empty_clinic):
    for _ in range(2):
        at = new_session().run()
        button(at, "Open the demo").click().run()
    assert storage.database_summary(storage.open_db(empty_clinic["demo"]))["patients"] == 30
    assert len(at.dataframe[0].value) == 4


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_demo_survives_moving_between_pages(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    sign_in(at, clinician["username"], clinician["password"])
    select_row(at, 0)                                   # the roster opens a patient with st.switch_page
    assert not at.exception
    # The patient page shows the patient's open alerts as errors; nothing else may be one.
    assert [m for m in messages(at, "error") if "open alert" not in m] == []
    assert at.title[0].value.startswith("Patient DEMO-")
    assert "Demo with synthetic data." in at.warning[0].value
    assert at.query_params["demo"] == "1"
    at.switch_page("app_pages/alerts.py").run()         # a click in the sidebar
    assert at.title[0].value == "Alerts" and "Demo with synthetic data." in at.warning[0].value
    at.sidebar.button[0].click().run()                  # signing out stays in the demo too
    assert at.title[0].value == "Sign in"
    assert "Demo with synthetic data." in at.warning[0].value and len(at.dataframe[0].value) == 4


# Finding 8 of the security issue: the demo was open on every production server. ------------------------


def test_once_the_clinic_has_an_administrator_a_demo_link_opens_the_clinics_sign_in(empty_clinic, server_log):
    """Before: anybody could prepare the demo on a production server and sign in as demo-clinician."""
    setup = new_session().run()
    create_admin(setup, server_log()[1])
    at = new_session()
    at.query_params["demo"] = "1"
    at.run()
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert "Prepare the demo" not in [b.label for b in at.button]
    assert not any("Demo with synthetic data." in w.value for w in at.warning)
    assert "demo" not in at.query_params
    assert not empty_clinic["demo"].exists()            # nothing was prepared


@pytest.mark.slow
def test_a_demo_session_is_emptied_when_the_clinic_creates_its_administrator(empty_clinic, server_log):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    clinician = at.dataframe[0].value.set_index("role").loc["clinician"]
    sign_in(at, clinician["username"], clinician["password"])
    assert at.title[0].value == "Roster"
    create_admin(new_session().run(), server_log()[1])  # meanwhile, in another tab
    at.run()
    assert at.title[0].value == "Sign in"               # signed out, on the clinic's sign-in page
    assert not any("Demo with synthetic data." in w.value for w in at.warning)


@pytest.mark.slow
def test_the_setting_keeps_the_demo_open_after_the_administrator_exists(empty_clinic, server_log, monkeypatch):
    create_admin(new_session().run(), server_log()[1])
    monkeypatch.setenv("OUTCOMES_DEMO", "true")
    at = new_session()
    at.query_params["demo"] = "1"
    at.run()
    button(at, "Prepare the demo").click().run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 4
    assert "Demo with synthetic data." in at.warning[0].value


@pytest.mark.slow
def test_the_demos_database_page_does_not_show_where_the_clinics_database_is(empty_clinic):
    at = new_session().run()
    button(at, "Open the demo").click().run()
    admin = at.dataframe[0].value.set_index("role").loc["admin"]
    sign_in(at, admin["username"], admin["password"])
    at.switch_page("app_pages/home.py").run()
    shown = " ".join(c.value for c in at.caption)
    assert "synthetic demo database" in shown
    assert str(empty_clinic["clinic"]) not in shown and str(empty_clinic["demo"]) not in shown


# Finding 15 of the security issue: on a new installation the first visitor became administrator. --------


def test_a_visitor_without_the_setup_token_cannot_become_administrator(empty_clinic, server_log):
    at = new_session().run()
    create_admin(at)                                            # everything but the token
    assert users(empty_clinic["clinic"]) == []
    assert "auth.user" not in at.session_state
    assert at.title[0].value == "Welcome to Infusion outcomes"
    error = at.error[0].value
    assert "setup token is not right" in error and "server's log" in error and "python -m outcomes setup-token" in error
    for guess in ("AAAAA-AAAAA-AAAAA-AAAAA", "anything"):        # nor with a guess
        create_admin(at, guess)
        assert users(empty_clinic["clinic"]) == []
    db = storage.open_db(empty_clinic["clinic"])
    details = [json.loads(d) for d in storage.load_audit_log(db, action="setup_failed")["details"]]
    assert [d["reason"] for d in details] == ["wrong or expired setup token"] * 3
    # The demo stays open to look around, before any account exists.
    button(at, "Open the demo").click().run()
    assert at.title[0].value == "Sign in" and len(at.dataframe[0].value) == 4


def test_the_setup_token_is_printed_in_the_servers_log_only_and_works_once(empty_clinic, server_log):
    at = new_session().run()
    log, token = server_log()
    assert token is not None, log
    assert not any(token in t for t in texts(at)) and token not in str(at.session_state)   # never on the page
    new_session().run()                                         # another visitor: no new token, nothing printed
    assert server_log()[1] == token
    at = create_admin(at, token.lower().replace("-", " "))      # as typed off a screen
    assert at.title[0].value == "Users"
    db = storage.open_db(empty_clinic["clinic"])
    assert storage.load_audit_log(db, action="create_first_admin")["details"].map(json.loads).tolist() == [
        {"setup_token": True}]
    with pytest.raises(PermissionDenied):                       # the installation has its administrator now
        auth.create_first_admin(db, "second.admin", PASSWORD, now=datetime.now(UTC), setup_token=token)
    assert users(empty_clinic["clinic"]) == ["root.admin"]


def test_a_token_from_the_command_line_replaces_the_logged_one(empty_clinic, server_log):
    at = new_session().run()
    logged = server_log()[1]
    out, err = io.StringIO(), io.StringIO()
    assert main(["setup-token", "--db", str(empty_clinic["clinic"])], out, err) == 0, err.getvalue()
    fresh = TOKEN_LINE.search(out.getvalue()).group(1)
    create_admin(at, logged)
    assert users(empty_clinic["clinic"]) == [] and "setup token is not right" in at.error[0].value
    create_admin(at, fresh)
    assert users(empty_clinic["clinic"]) == ["root.admin"]
    err = io.StringIO()                                         # and none once an administrator exists
    assert main(["setup-token", "--db", str(empty_clinic["clinic"])], io.StringIO(), err) == 1
    assert "has users already" in err.getvalue()


def test_wrong_setup_tokens_are_throttled_per_address(empty_clinic, server_log):
    at = new_session().run()
    token = server_log()[1]
    allowance = auth.ADDRESS_ALLOWANCE * load_settings().lockout_attempts
    db = storage.open_db(empty_clinic["clinic"])
    now = datetime.now(UTC)
    for i in range(allowance):
        with pytest.raises(PermissionDenied):
            auth.create_first_admin(db, "root.admin", PASSWORD, now=now, setup_token=f"guess {i}",
                                    settings=load_settings(), address="local")
    create_admin(at, token)                                     # even the right token now waits
    assert users(empty_clinic["clinic"]) == []
    assert "Too many failed setup tokens from here" in at.error[0].value
    logged = storage.load_audit_log(db, action="setup_failed")
    assert len(logged) <= allowance + 1                         # the refusals are summed up, not one each
