"""Accounts: password rules and hashing, lockout, sessions, admin user management, invitations, OIDC, demo."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from argon2 import PasswordHasher

from outcomes import auth, deployment, storage
from outcomes.cli import main
from outcomes.errors import (
    DuplicateRecord,
    IdentityNotRegistered,
    InvitationInvalid,
    LoginFailed,
    NotADemoDatabase,
    NotFound,
    PermissionDenied,
    SessionExpired,
    ValidationError,
    WeakPassword,
    WrongPassword,
)
from outcomes.settings import load_settings

pytestmark = pytest.mark.usefixtures("fast_hasher")

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TODAY = date(2025, 6, 2)
SETTINGS = load_settings({})
PASSWORD = "correct horse battery"


def audit(db, action=None):
    log = storage.load_audit_log(db, action=action)
    return list(zip(log["actor"], log["action"], log["patient_id"]))


@pytest.fixture
def admin(db):
    return auth.create_first_admin(db, "root.admin", PASSWORD, now=NOW, display_name="Root")


@pytest.fixture
def lee(db, admin):
    user = auth.create_user(db, admin, username="dr.lee", role="clinician", password="lee's long password",
                            email="Lee@Hospital.org", now=NOW)
    storage.update_user(db, user.id, must_change_password=False)
    return dataclasses.replace(user, must_change_password=False)


def login(db, username="root.admin", password=PASSWORD, now=NOW):
    return auth.login(db, username, password, now=now, settings=SETTINGS)


# Passwords


@pytest.mark.parametrize("password, username, broken", [
    ("short", None, ["it has 5 characters; use at least 10"]),
    ("xy" * 65, None, ["it has 130 characters; use at most 128"]),
    ("my dr.lee password", "Dr.Lee", ["contains the username"]),
    ("aaaaaaaaaaaa", None, ["one character repeated"]),
    ("Password123", None, ["commonly used password"]),
    ("tab\tinside pass", None, ["control character"]),
    ("1234", "root", ["use at least 10"]),
])
def test_password_rules_name_every_rule_broken(password, username, broken):
    problems = auth.password_problems(password, username)
    assert len(problems) == len(broken)
    for problem, expected in zip(problems, broken):
        assert expected in problem
    with pytest.raises(WeakPassword) as info:
        auth.check_password(password, username)
    assert all(p in str(info.value) for p in problems)


@pytest.mark.parametrize("password", ["correct horse battery", "ÄÖÜ unicode ok 🙂", "1234567890x", "xy" * 64])
def test_acceptable_passwords(password):
    assert auth.password_problems(password, "dr.lee") == []


def test_the_database_never_holds_a_password(db, dump, admin):
    auth.create_user(db, admin, username="nurse.kim", role="clinician", password="kim's long password", now=NOW)
    text = repr(dump(db))
    assert PASSWORD not in text and "kim's long password" not in text
    hashes = db.conn.execute("SELECT password_hash FROM users").fetchall()
    assert all(h.startswith("$argon2id$") for (h,) in hashes)


def test_unicode_passwords_are_normalised(db, admin):
    auth.change_password(db, admin, PASSWORD, "caf\u00e9 au lait please", now=NOW, settings=SETTINGS)
    assert login(db, password="cafe\u0301 au lait please").username == "root.admin"  # decomposed é


# First admin and sign-in


def test_first_admin_only_in_an_empty_database(db, dump, admin):
    assert (admin.role, admin.name) == ("admin", "Root")
    before = dump(db)
    with pytest.raises(PermissionDenied, match="already exists"):
        auth.create_first_admin(db, "second.admin", PASSWORD, now=NOW)
    assert dump(db) == before


def test_first_admin_password_rules(db, dump):
    before = dump(db)
    with pytest.raises(WeakPassword, match="contains the username"):
        auth.create_first_admin(db, "administrator", "administrator1!", now=NOW)
    assert dump(db) == before


def test_login_succeeds_and_is_audited(db, admin):
    user = login(db, "ROOT.ADMIN")  # usernames are not case-sensitive
    assert user == admin
    assert audit(db, "login") == [("root.admin", "login", None)]
    assert storage.get_user(db, username="root.admin")["last_login_at"] == NOW


def test_every_failure_gets_the_same_generic_message(db, admin, lee, monkeypatch):
    calls = []

    class Counting(PasswordHasher):
        def verify(self, hash, password):
            calls.append(hash)
            return super().verify(hash, password)

    monkeypatch.setattr(auth, "HASHER", Counting(time_cost=1, memory_cost=8, parallelism=1))
    messages = []
    for username, password in [("nobody", PASSWORD), ("root.admin", "wrong password!!"), ("", ""),
                               (None, None)]:
        with pytest.raises(LoginFailed) as info:
            login(db, username, password)
        messages.append(str(info.value))
    auth.deactivate_user(db, admin, "dr.lee")
    with pytest.raises(LoginFailed) as info:
        login(db, "dr.lee", "lee's long password")
    messages.append(str(info.value))
    assert set(messages) == {auth.LOGIN_FAILED}
    assert len(calls) == 5  # unknown users pay for a verify too, so timing does not tell them apart
    failures = audit(db, "login_failed")
    assert ("(unknown user)", "login_failed", None) in failures  # the typed name is not logged: it may be a password
    assert "nobody" not in repr(storage.load_audit_log(db).to_dict())


def test_a_client_waits_after_too_many_failures_even_with_the_right_password_then_longer(db, admin):
    for i in range(SETTINGS.lockout_attempts):
        with pytest.raises(LoginFailed, match="username or password is wrong"):
            login(db, password=f"wrong password {i}", now=NOW + timedelta(seconds=i))
    last = NOW + timedelta(seconds=SETTINGS.lockout_attempts - 1)
    until = last + timedelta(minutes=SETTINGS.lockout_minutes)
    assert auth.list_users(db, admin, now=last)["locked_until"].iloc[0] == until
    with pytest.raises(LoginFailed, match="Try again in 15 minutes"):
        login(db, now=last + timedelta(seconds=1))               # the right password, checked or not: waits
    with pytest.raises(LoginFailed, match="Try again in 1 minute "):
        login(db, now=until - timedelta(seconds=1))
    assert auth.list_users(db, admin, now=last)["locked_until"].iloc[0] == until   # not extended by waiting
    with pytest.raises(LoginFailed, match="username or password is wrong"):
        login(db, password="one more wrong one", now=until)      # after the wait, one more try...
    with pytest.raises(LoginFailed, match="Try again in 30 minutes"):
        login(db, now=until + timedelta(seconds=1))              # ...and the next wait is twice as long
    assert login(db, now=until + timedelta(minutes=30)).username == "root.admin"
    assert auth.list_users(db, admin, now=until + timedelta(minutes=30))["locked"].tolist() == [False]
    reasons = [json.loads(d)["reason"] for d in storage.load_audit_log(db, action="login_failed")["details"]]
    assert reasons.count("throttled") == 3 and reasons.count("wrong password") == SETTINGS.lockout_attempts + 1


def test_failures_count_in_a_row_and_a_success_resets_them(db, admin):
    for _ in range(SETTINGS.lockout_attempts - 1):
        with pytest.raises(LoginFailed):
            login(db, password="wrong password!!")
    login(db)
    for _ in range(SETTINGS.lockout_attempts - 1):
        with pytest.raises(LoginFailed):
            login(db, password="wrong password!!")
    assert login(db).username == "root.admin"


def test_hash_is_upgraded_when_the_parameters_change(db, admin, monkeypatch):
    old = storage.get_user(db, username="root.admin")["password_hash"]
    monkeypatch.setattr(auth, "HASHER", PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    login(db)
    new = storage.get_user(db, username="root.admin")["password_hash"]
    assert new != old and "m=16,t=2,p=1" in new
    assert not auth.HASHER.check_needs_rehash(new)
    assert login(db).username == "root.admin"


def test_session_idle_timeout():
    seen = NOW - timedelta(minutes=SETTINGS.session_idle_minutes)
    assert not auth.session_expired(seen, NOW, SETTINGS)
    assert auth.session_expired(seen - timedelta(seconds=1), NOW, SETTINGS)


def test_naive_datetimes_are_refused(db, admin):
    with pytest.raises(ValueError, match="timezone-aware"):
        auth.create_user(db, admin, username="nurse.kim", role="clinician", password="kim's long password",
                         now=datetime(2025, 6, 2, 9))


# Changing passwords and managing users


def test_change_password_needs_the_current_one(db, admin):
    with pytest.raises(WrongPassword, match="current password is not right"):
        auth.change_password(db, admin, "not my password", "a brand new password", now=NOW, settings=SETTINGS)
    for _ in range(SETTINGS.lockout_attempts - 1):  # it counts like a failed sign-in
        with pytest.raises(LoginFailed):
            login(db, password="wrong password!!")
    with pytest.raises(LoginFailed, match="Too many failed sign-ins"):
        login(db)
    auth.unlock_user(db, admin, "root.admin")
    with pytest.raises(WeakPassword, match="at least 10"):
        auth.change_password(db, admin, PASSWORD, "short", now=NOW, settings=SETTINGS)
    with pytest.raises(WeakPassword, match="same as the current"):
        auth.change_password(db, admin, PASSWORD, PASSWORD, now=NOW, settings=SETTINGS)
    changed = auth.change_password(db, admin, PASSWORD, "a brand new password", now=NOW, settings=SETTINGS)
    assert changed.credential_version == admin.credential_version + 1
    with pytest.raises(LoginFailed):
        login(db)
    assert login(db, password="a brand new password").username == "root.admin"
    assert ("root.admin", "change_password", None) in audit(db)


def test_admin_creates_users_of_every_role(db, dump, admin):
    storage.add_patient(db, patient_id="P001", entered_by="dr.lee")
    for role in ("clinician", "qi"):
        user = auth.create_user(db, admin, username=f"{role}.one", role=role, password="a long password 1",
                                now=NOW)
        assert (user.role, user.patient_id, user.must_change_password) == (role, None, True)
    patient = auth.create_user(db, admin, username="pat.one", role="patient", password="a long password 1",
                               patient_id="P001", now=NOW)
    assert patient.patient_id == "P001"
    oidc_only = auth.create_user(db, admin, username="dr.sso", role="clinician", email="SSO@h.org", now=NOW)
    assert oidc_only.email == "sso@h.org"
    assert [a for a in audit(db, "create_user")][0] == ("root.admin", "create_user", None)
    before = dump(db)
    bad = [
        (dict(username="pat.two", role="patient", password="a long password 1"), ValidationError,
         "must name the enrolled patient"),
        (dict(username="pat.two", role="patient", password="a long password 1", patient_id="P404"), NotFound,
         "P404"),
        (dict(username="pat.two", role="patient", password="a long password 1", patient_id="P001"),
         DuplicateRecord, "already has a login"),
        (dict(username="qi.two", role="qi", password="a long password 1", patient_id="P001"), ValidationError,
         "only patient logins"),
        (dict(username="QI.ONE", role="qi", password="a long password 1"), DuplicateRecord, "taken"),
        (dict(username="x", role="boss", password="a long password 1"), ValidationError, "role must be one of"),
        (dict(username="dr.two", role="clinician", email="sso@H.org"), DuplicateRecord, "email"),
        (dict(username="dr.two", role="clinician", email="not-an-email"), ValidationError, "not an email"),
        (dict(username="dr.two", role="clinician"), ValidationError, "initial password"),
        (dict(username="dr.two", role="clinician", password="dr.two is me!"), WeakPassword, "username"),
    ]
    for kwargs, error, message in bad:
        with pytest.raises(error, match=message):
            auth.create_user(db, admin, now=NOW, **kwargs)
    assert dump(db) == before


def test_only_admins_manage_users_and_denials_are_audited(db, admin, lee):
    calls = [
        lambda: auth.create_user(db, lee, username="x.y.z", role="qi", password="a long password 1", now=NOW),
        lambda: auth.deactivate_user(db, lee, "root.admin"),
        lambda: auth.reactivate_user(db, lee, "root.admin"),
        lambda: auth.unlock_user(db, lee, "root.admin"),
        lambda: auth.reset_password(db, lee, "root.admin", "a long password 1"),
        lambda: auth.list_users(db, lee, now=NOW),
    ]
    for call in calls:
        with pytest.raises(PermissionDenied, match="administrator role"):
            call()
    assert len(audit(db, "access_denied")) == len(calls)


def test_deactivation_ends_live_sessions_and_unlock_and_reset(db, admin, lee):
    auth.deactivate_user(db, admin, "dr.lee")
    with pytest.raises(PermissionDenied, match="no longer active"):
        auth.list_users(db, lee, now=NOW)  # the stale User object no longer opens anything
    with pytest.raises(ValidationError, match="your own account"):
        auth.deactivate_user(db, admin, "root.admin")
    auth.reactivate_user(db, admin, "dr.lee")
    for _ in range(SETTINGS.lockout_attempts):
        with pytest.raises(LoginFailed):
            login(db, "dr.lee", "wrong password!!")
    users = auth.list_users(db, admin, now=NOW).set_index("username")
    assert bool(users.loc["dr.lee", "locked"]) and "password_hash" not in users.columns
    auth.unlock_user(db, admin, "dr.lee")
    assert login(db, "dr.lee", "lee's long password").username == "dr.lee"
    auth.reset_password(db, admin, "dr.lee", "temporary password 1")
    assert login(db, "dr.lee", "temporary password 1").must_change_password
    with pytest.raises(NotFound, match="No user named"):
        auth.unlock_user(db, admin, "dr.nobody")
    assert {a for _, a, _ in audit(db)} >= {"deactivate_user", "reactivate_user", "unlock_user", "reset_password"}


# Invitations


@pytest.fixture
def invitation(db, admin):
    storage.add_patient(db, patient_id="P001", entered_by="dr.lee")
    return auth.issue_invitation(db, admin, "P001", now=NOW, settings=SETTINGS)


def test_invitation_code_shape_and_only_a_hash_is_stored(db, dump, invitation):
    code = invitation.code
    assert len(code) == 12 and code[4] == code[9] == "-"
    assert set(code.replace("-", "")) <= set(auth.CODE_ALPHABET) and not set(code) & set("ILOU")
    assert invitation.expires_at == NOW + timedelta(days=SETTINGS.invitation_days)
    text = repr(dump(db))
    assert code not in text and code.replace("-", "") not in text
    assert "P001" in invitation.describe()


def test_invitation_is_single_use(db, invitation):
    typed = invitation.code.lower().replace("-", " ").replace("0", "o").replace("1", "l")  # forgiving input
    user = auth.redeem_invitation(db, typed, "pat.one", "my own long password", now=NOW + timedelta(hours=1))
    assert (user.role, user.patient_id, user.must_change_password) == ("patient", "P001", False)
    assert auth.login(db, "pat.one", "my own long password", now=NOW, settings=SETTINGS) == user
    with pytest.raises(InvitationInvalid, match="already been used"):
        auth.redeem_invitation(db, invitation.code, "pat.two", "my own long password", now=NOW)
    assert ("pat.one", "redeem_invitation", "P001") in audit(db)


def test_invitation_expiry_unknown_and_replaced(db, dump, admin, invitation):
    before = dump(db)
    with pytest.raises(InvitationInvalid, match="expired on 2025-06-09") as info:
        auth.redeem_invitation(db, invitation.code, "pat.one", "my own long password", now=invitation.expires_at)
    assert "P001" not in str(info.value)
    for code in ("K7QF-M2XD-9P", "not a code", "", None):
        with pytest.raises(InvitationInvalid, match="not valid"):
            auth.redeem_invitation(db, code, "pat.one", "my own long password", now=NOW)
    newer = auth.issue_invitation(db, admin, "P001", now=NOW, settings=SETTINGS)
    with pytest.raises(InvitationInvalid, match="replaced by a newer one"):
        auth.redeem_invitation(db, invitation.code, "pat.one", "my own long password", now=NOW)
    after = dump(db)
    assert {t: after[t] for t in ("users", "patients")} == {t: before[t] for t in ("users", "patients")}
    assert len(audit(db, "invitation_failed")) == 6
    auth.redeem_invitation(db, newer.code, "pat.one", "my own long password", now=NOW)


def test_invitation_redeem_rejects_weak_passwords_and_existing_logins(db, dump, admin, invitation):
    before = dump(db)
    with pytest.raises(WeakPassword, match="at least 10"):
        auth.redeem_invitation(db, invitation.code, "pat.one", "short", now=NOW)
    with pytest.raises(ValidationError, match="username"):
        auth.redeem_invitation(db, invitation.code, "a", "my own long password", now=NOW)
    assert dump(db) == before
    auth.create_user(db, admin, username="pat.old", role="patient", password="a long password 1",
                     patient_id="P001", now=NOW)
    with pytest.raises(DuplicateRecord, match="account already exists for you"):
        auth.redeem_invitation(db, invitation.code, "pat.one", "my own long password", now=NOW)


def test_no_new_invitation_for_a_patient_who_already_has_a_login(db, dump, admin, invitation):
    auth.redeem_invitation(db, invitation.code, "pat.one", "my own long password", now=NOW)
    before = dump(db)
    with pytest.raises(DuplicateRecord, match="P001 already has a login"):
        auth.issue_invitation(db, admin, "P001", now=NOW, settings=SETTINGS)
    assert dump(db) == before


def test_only_clinicians_and_admins_issue_invitations(db, admin, invitation):
    qi = auth.create_user(db, admin, username="qi.one", role="qi", password="a long password 1", now=NOW)
    with pytest.raises(PermissionDenied):
        auth.issue_invitation(db, qi, "P001", now=NOW, settings=SETTINGS)
    assert audit(db, "access_denied") == [("qi.one", "access_denied", "P001")]


# OIDC


def claims(email="lee@hospital.org", **extra):
    return {"iss": "https://idp.example", "sub": "u-123", "email": email, "email_verified": True,
            "auth_time": int((NOW - timedelta(hours=1)).timestamp()), **extra}


def test_oidc_maps_the_verified_email_to_an_active_user(db, lee):
    user = auth.user_for_identity(db, claims("LEE@hospital.ORG"), now=NOW)
    assert user == lee
    log = storage.load_audit_log(db, action="login")
    assert log["actor"].tolist() == ["dr.lee"] and '"oidc"' in log["details"].iloc[0]


@pytest.mark.parametrize("given, error, message", [
    (claims("stranger@hospital.org"), IdentityNotRegistered, "stranger@hospital.org is not registered"),
    (claims(email_verified=False), IdentityNotRegistered, "not verified"),
    ({k: v for k, v in claims().items() if k != "email"}, IdentityNotRegistered, "did not send an email"),
    (claims(auth_time=int((NOW - timedelta(hours=8, seconds=1)).timestamp())), SessionExpired, "8 hours"),
    ({k: v for k, v in claims().items() if k != "auth_time"}, SessionExpired, "sign in again"),
])
def test_oidc_refusals(db, lee, given, error, message):
    with pytest.raises(error, match=message):
        auth.user_for_identity(db, given, now=NOW)
    assert storage.load_audit_log(db, action="login_failed")["details"].str.contains("oidc").all()
    assert storage.load_audit_log(db, action="login").empty


def test_oidc_refuses_deactivated_users_and_uses_iat_without_auth_time(db, admin, lee):
    fresh = {**claims(), "iat": int(NOW.timestamp())}
    del fresh["auth_time"]
    assert not auth.identity_expired(fresh, NOW)
    assert auth.identity_expired(claims(), NOW + timedelta(hours=8))
    auth.deactivate_user(db, admin, "dr.lee")
    with pytest.raises(IdentityNotRegistered, match="not registered as an active user"):
        auth.user_for_identity(db, fresh, now=NOW)


# Demo accounts


def test_demo_accounts_are_refused_in_a_real_database(db, dump):
    storage.add_patient(db, patient_id="DEMO-00001", entered_by="x")
    before = dump(db)
    with pytest.raises(NotADemoDatabase, match="not flagged synthetic"):
        auth.create_demo_accounts(db, now=NOW)
    assert dump(db) == before


def test_demo_accounts_one_per_role_in_a_synthetic_database(db):
    patients = pd.DataFrame({"patient_id": ["DEMO-00001", "DEMO-00002", "DEMO-00003"]})
    empty = pd.DataFrame(columns=["patient_id", "first_infusion", "last_infusion", "infusions"])
    infusions = pd.DataFrame(columns=["patient_id", "series_first_infusion", "infused_on", "dose_mg_per_kg",
                                      "duration_min"])
    scores = pd.DataFrame({"patient_id": ["DEMO-00003", "DEMO-00002"], "assessed_on": ["2025-05-01"] * 2,
                           "domain": ["depression"] * 2, "t_score": [60.0, 61.0], "method": ["imported"] * 2,
                           "source": ["import"] * 2})
    storage.insert_cohort(db, patients, empty, infusions, scores, synthetic=True)
    accounts = auth.create_demo_accounts(db, now=NOW)
    assert [a.role for a in accounts] == list(auth.ROLES)
    for account in accounts:
        user = auth.login(db, account.username, account.password, now=NOW, settings=SETTINGS)
        assert user.role == account.role and not user.must_change_password
    patient = next(a for a in accounts if a.role == "patient")
    assert storage.get_user(db, username=patient.username)["patient_id"] == "DEMO-00002"
    assert "DEMO-00002" in patient.note
    again = auth.create_demo_accounts(db, now=NOW)  # resets the passwords
    assert {a.password for a in again}.isdisjoint({a.password for a in accounts})
    assert storage.count_users(db) == 4


# Schema


def test_a_database_from_before_accounts_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    with storage.open_db(path) as old:
        storage.MIGRATIONS.apply(old, stop_before="0002_accounts_checkins_alerts")
        old.execute("INSERT INTO patients (patient_id, entered_by, entered_at) VALUES ('P001', 'x', 'now')")
        old.execute("INSERT INTO users (username, role, password_hash, created_at) "
                    "VALUES ('root.admin', 'admin', ?, '2025-01-01T00:00:00+00:00')", [auth.hash_password(PASSWORD)])
        old.conn.commit()
    with storage.connect(path) as db:
        assert {"invitations", "checkin_drafts", "alerts"} <= set(db.table_names())
        admin = login(db)
        assert (admin.display_name, admin.must_change_password) == (None, False)


def test_one_active_login_per_patient(db, admin):
    storage.add_patient(db, patient_id="P001", entered_by="dr.lee")
    auth.create_user(db, admin, username="pat.old", role="patient", password="a long password 1",
                     patient_id="P001", now=NOW)
    auth.deactivate_user(db, admin, "pat.old")
    auth.create_user(db, admin, username="pat.new", role="patient", password="a long password 1",
                     patient_id="P001", now=NOW)
    with pytest.raises(DuplicateRecord, match="already has another active login"):
        auth.reactivate_user(db, admin, "pat.old")
    auth.create_user(db, admin, username="dr.a", role="clinician", email="a@h.org", now=NOW)
    dr_b = auth.create_user(db, admin, username="dr.b", role="clinician", email="b@h.org", now=NOW)
    with pytest.raises(DuplicateRecord, match="email"):
        storage.update_user(db, dr_b.id, email="a@h.org")


# Security issue, finding 5: anyone could lock any account, the only administrator included -------------------

BROWSER = "b" * 40            # a digest of the administrator's browser cookie (ui.session.browser_digest)


def test_failing_on_purpose_does_not_hold_an_account_off_the_browsers_it_uses(db, admin):
    assert login_from(db, BROWSER).username == "root.admin"               # the administrator's usual browser
    for i in range(4 * SETTINGS.lockout_attempts):                        # an attacker, from many clients
        with pytest.raises(LoginFailed):
            auth.login(db, "root.admin", f"guess {i}", now=NOW, settings=SETTINGS, address=f"10.0.0.{i}",
                       browser=None if i % 2 else f"{i:040d}")
    assert login_from(db, BROWSER).username == "root.admin"               # still signs in where it always does
    with pytest.raises(LoginFailed, match="Too many failed sign-ins"):  # a browser it has never used waits
        login_from(db, "c" * 40)
    # ...and so do the attacker's guesses, however they vary their address: the right password is not even
    # checked (at most lockout_attempts guesses per wait for all new browsers together).
    reasons = [json.loads(d)["reason"] for d in storage.load_audit_log(db, action="login_failed")["details"]]
    assert reasons.count("wrong password") == SETTINGS.lockout_attempts


def test_a_known_browser_that_fails_too_often_waits_on_its_own(db, admin):
    login_from(db, BROWSER)
    for _ in range(SETTINGS.lockout_attempts):
        with pytest.raises(LoginFailed):
            auth.login(db, "root.admin", "wrong one!", now=NOW, settings=SETTINGS, browser=BROWSER)
    with pytest.raises(LoginFailed, match="Too many failed sign-ins"):
        login_from(db, BROWSER)
    assert login_from(db, "d" * 40).username == "root.admin"              # other clients are not held up


def test_the_command_line_lifts_every_wait_when_no_administrator_can_sign_in(tmp_path):
    path = tmp_path / "clinic.db"
    db = storage.connect(path)
    auth.create_first_admin(db, "root.admin", PASSWORD, now=NOW)
    now = datetime.now(UTC)
    for _ in range(SETTINGS.lockout_attempts):
        with pytest.raises(LoginFailed):
            auth.login(db, "root.admin", "not the password", now=now, settings=SETTINGS)
    with pytest.raises(LoginFailed, match="Too many"):
        auth.login(db, "root.admin", PASSWORD, now=now, settings=SETTINGS)
    out, err = io.StringIO(), io.StringIO()
    assert main(["unlock", "ROOT.ADMIN", "--db", str(path)], out, err) == 0, err.getvalue()
    assert "root.admin can sign in again from every browser (1 wait lifted)" in out.getvalue()
    assert auth.login(db, "root.admin", PASSWORD, now=now, settings=SETTINGS).username == "root.admin"
    entry = storage.load_audit_log(db, action="unlock_user")
    assert entry["actor"].iloc[0].startswith("cli:") and '"root.admin"' in entry["details"].iloc[0]
    err = io.StringIO()
    assert main(["unlock", "nobody", "--db", str(path)], io.StringIO(), err) == 1
    assert "No user named 'nobody'" in err.getvalue()


def login_from(db, browser, now=NOW):
    return auth.login(db, "root.admin", PASSWORD, now=now, settings=SETTINGS, browser=browser)


# Security issue, finding 16: signed-out clients could write unlimited audit entries ---------------------------


def test_signed_out_failures_are_rate_limited_per_address_and_summed_up_in_the_audit_log(db, admin, invitation):
    allowance = auth.ADDRESS_ALLOWANCE * SETTINGS.lockout_attempts
    refused = 0
    for i in range(500):                                       # a script, as fast as it can
        call = (lambda: auth.login(db, f"user{i}", "whatever", now=NOW, settings=SETTINGS, address="10.9.9.9")) \
            if i % 2 else (lambda: auth.redeem_invitation(db, f"AAAA-AAAA-{i % 90:02d}", "pat.x", "a long password",
                                                          now=NOW, settings=SETTINGS, address="10.9.9.9"))
        with pytest.raises((LoginFailed, InvitationInvalid)) as info:
            call()
        refused += "Too many failed" in str(info.value)
    assert refused == 500 - allowance                          # the rest waited, without being checked
    entries = storage.load_audit_log(db)
    entries = entries[entries["action"].isin(["login_failed", "invitation_failed"])]
    assert len(entries) == allowance + 1                       # each of the first, and the first refusal
    later = NOW + auth.AUDIT_SUMMARY_EVERY                     # a quarter of an hour later, one entry sums up
    with pytest.raises(LoginFailed):
        auth.login(db, "user-late", "whatever", now=later, settings=SETTINGS, address="10.9.9.9")
    summary = json.loads(storage.load_audit_log(db, action="login_failed")["details"].iloc[0])
    assert summary["attempts"] >= 500 - allowance and summary["client"].startswith("client-")
    assert "10.9.9.9" not in repr(storage.load_audit_log(db).to_dict())       # addresses are not stored
    # Another address is not held up, and the right code still works from there.
    user = auth.redeem_invitation(db, invitation.code, "pat.one", "my own long password", now=NOW,
                                  settings=SETTINGS, address="10.1.1.1")
    assert user.patient_id == "P001"
    # Rate-limited, not locked: one failure a minute passes again.
    with pytest.raises(LoginFailed, match="username or password is wrong"):
        auth.login(db, "user-x", "whatever", now=later + auth.ADDRESS_LEAK, settings=SETTINGS, address="10.9.9.9")


# Security issue, finding 6: sessions survived a password change or an administrator's reset ------------------


@pytest.mark.parametrize("change", ["own change", "admin reset", "deactivated and reactivated"])
def test_a_session_signed_in_before_the_password_changed_is_refused(db, admin, lee, change):
    if change == "own change":
        auth.change_password(db, lee, "lee's long password", "lee's new password", now=NOW, settings=SETTINGS)
    elif change == "admin reset":
        auth.reset_password(db, admin, "dr.lee", "a temporary password")
    else:
        auth.deactivate_user(db, admin, "dr.lee")
        auth.reactivate_user(db, admin, "dr.lee")
    with pytest.raises(PermissionDenied, match="Sign in again with your current password"):
        auth.require_role(db, lee, "clinician", action="open_page")    # the session's old User
    denial = storage.load_audit_log(db, action="access_denied")
    assert denial["actor"].tolist() == ["dr.lee"] and '"credentials changed"' in denial["details"].iloc[0]
    password = "lee's new password" if change == "own change" else \
        "a temporary password" if change == "admin reset" else "lee's long password"
    fresh = auth.login(db, "dr.lee", password, now=NOW, settings=SETTINGS)
    assert auth.require_role(db, fresh, "clinician", action="open_page").username == "dr.lee"


def test_a_session_has_a_maximum_age(db):
    assert not auth.session_expired(NOW, NOW, SETTINGS, signed_in_at=NOW - auth.MAX_SESSION_AGE)
    assert auth.session_expired(NOW, NOW, SETTINGS, signed_in_at=NOW - auth.MAX_SESSION_AGE - timedelta(seconds=1))


def test_a_sessions_deadline_is_the_earlier_of_its_idle_limit_and_its_maximum_age():
    idle = timedelta(minutes=SETTINGS.session_idle_minutes)
    assert auth.session_deadline(NOW, SETTINGS) == NOW + idle
    assert auth.session_deadline(NOW, SETTINGS, signed_in_at=NOW - timedelta(hours=1)) == NOW + idle
    late = NOW - auth.MAX_SESSION_AGE + timedelta(minutes=1)  # one minute of its eight hours left
    assert auth.session_deadline(NOW, SETTINGS, signed_in_at=late) == NOW + timedelta(minutes=1)


# Suspected: hospital sign-in took any token carrying an administrator's email ------------------------------------


def test_oidc_without_a_verified_email_is_refused(db, admin):
    storage.update_user(db, admin.id, email="root@hospital.org")
    token = {k: v for k, v in claims("root@hospital.org").items() if k != "email_verified"}
    with pytest.raises(IdentityNotRegistered, match="root@hospital.org is not verified"):
        auth.user_for_identity(db, token, now=NOW)                 # what a provider says of a typed-in address
    with pytest.raises(IdentityNotRegistered, match="verified"):
        auth.user_for_identity(db, {**token, "email_verified": "no"}, now=NOW)
    assert storage.load_audit_log(db, action="login").empty


def test_oidc_binds_the_first_verified_identity_and_then_recognises_it_by_issuer_and_subject(db, admin, lee):
    assert auth.user_for_identity(db, claims(), now=NOW) == lee
    stored = storage.get_user(db, username="dr.lee")
    assert (stored["oidc_issuer"], stored["oidc_subject"]) == ("https://idp.example", "u-123")
    # Another identity with the same verified email, from another issuer (another tenant), is refused.
    with pytest.raises(IdentityNotRegistered, match="signs in with another hospital account"):
        auth.user_for_identity(db, claims(iss="https://other-tenant.example", sub="evil"), now=NOW)
    # The bound identity works without the email (a provider that changed it) ...
    renamed = {**claims(), "email": "lee.renamed@hospital.org", "email_verified": False}
    assert auth.user_for_identity(db, renamed, now=NOW) == lee
    # ... and an administrator who changes the user's email lets a new identity be matched.
    storage.update_user(db, lee.id, email="lee@new-hospital.org")
    assert storage.get_user(db, username="dr.lee")["oidc_subject"] is None
    assert auth.user_for_identity(db, claims("lee@new-hospital.org", sub="u-456"), now=NOW).username == "dr.lee"


# Suspected: one secret served pseudonyms, invitation codes and FHIR ids ------------------------------------------


def test_invitation_codes_are_keyed_with_their_own_key_not_the_pseudonym_secret(db, invitation):
    secret = storage.get_meta(db, "secret")
    normalised = invitation.code.replace("-", "")
    stored = db.conn.execute("SELECT code_hash FROM invitations").fetchone()[0]
    assert stored != hmac.new(secret.encode(), normalised.encode(), hashlib.sha256).hexdigest()
    key = deployment.derive_key(secret, "invitation code")
    assert stored == hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()
    assert key != secret.encode() and key != deployment.derive_key(secret, "setup token")


def test_a_code_issued_before_the_keys_were_separated_still_works(db, admin):
    storage.add_patient(db, patient_id="P009", entered_by="dr.lee")
    code = "K7QF-M2XD-9P"
    legacy = hmac.new(storage.get_meta(db, "secret").encode(), b"K7QFM2XD9P", hashlib.sha256).hexdigest()
    storage.add_invitation(db, patient_id="P009", code_hash=legacy, created_by="dr.lee", now=NOW,
                           expires_at=NOW + timedelta(days=7))
    user = auth.redeem_invitation(db, code, "pat.nine", "my own long password", now=NOW)
    assert user.patient_id == "P009"
