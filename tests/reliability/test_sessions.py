"""Issue 7, sessions and secrets: sign-in throttling and invitations under races (and the security issue's
finding 4, parallel guesses), passwords only as argon2id hashes, no secret in the repository, a cookie secret
per installation.

Already proven elsewhere and listed in docs/reliability.md: waits with the right password and their end,
waits that spare an account's usual browsers, the command line's unlock, audit entries summed up
(tests/test_auth.py, tests/test_page_login.py, tests/browser/test_session_security.py), the idle timeout on
time (tests/test_page_login.py, tests/browser/test_session_security.py), a session kept to its browser
(tests/browser/test_browser_binding.py), invitation expiry and replacement (tests/test_auth.py), a
reload asking to sign in again (tests/test_page_login.py).
"""

from __future__ import annotations

import io
import json
import re
import stat
import subprocess
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outcomes import auth, storage
from outcomes.cli import main
from outcomes.errors import DuplicateRecord, InvitationInvalid, LoginFailed
from outcomes.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
SETTINGS = load_settings({})
ADMIN_PASSWORD = "root's own long password"


@pytest.fixture
def clinic(tmp_path, fast_hasher):
    path = tmp_path / "clinic.db"
    db = storage.connect(path)
    admin = auth.create_first_admin(db, "root.admin", ADMIN_PASSWORD, now=NOW)
    db.close()
    return path, admin


def race(n: int, work) -> list:
    """Run ``work(i)`` in ``n`` threads released at the same moment; returns results or exceptions."""
    start, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_simultaneous_wrong_passwords_are_each_counted_and_only_the_allowance_is_checked(clinic, figures):
    path, _ = clinic
    attempts = SETTINGS.lockout_attempts + 3

    def guess(i: int):
        with storage.open_db(path) as db:  # each guess on its own connection, as from separate sessions
            return auth.login(db, "root.admin", f"wrong guess {i}", now=NOW, settings=SETTINGS)

    results = race(attempts, guess)
    assert all(isinstance(r, LoginFailed) for r in results)
    with storage.open_db(path) as db:
        log = storage.load_audit_log(db, action="login_failed")
        reasons = [json.loads(d)["reason"] for d in log["details"]]
        # Claimed one after the other: the first lockout_attempts were checked, the others waited unchecked.
        assert sorted(reasons) == sorted(["wrong password"] * SETTINGS.lockout_attempts
                                         + ["throttled"] * (attempts - SETTINGS.lockout_attempts))
        with pytest.raises(LoginFailed, match="Too many failed sign-ins"):  # even the right password waits
            auth.login(db, "root.admin", ADMIN_PASSWORD, now=NOW + timedelta(minutes=1), settings=SETTINGS)
        after = NOW + timedelta(minutes=SETTINGS.lockout_minutes, seconds=1)
        assert auth.login(db, "root.admin", ADMIN_PASSWORD, now=after, settings=SETTINGS).username == "root.admin"
    figures(simultaneous_wrong_passwords=attempts, checked=reasons.count("wrong password"),
            refused_unchecked=reasons.count("throttled"))


@pytest.mark.slow
def test_parallel_guesses_cannot_outrun_the_wait_finding_4(clinic, monkeypatch, figures):
    """Security issue, finding 4: the wait was read before the slow password check and never again, so 30
    parallel sign-ins had 23 wrong passwords checked and then accepted the right one on a locked account."""
    path, _ = clinic
    checked, in_check = [], threading.Semaphore(0)
    verify = auth._verify

    def slow_verify(password_hash, password):  # argon2 at its real cost is ~0.1 s; make the race wide open
        checked.append(password)
        in_check.release()
        time.sleep(0.5)
        return verify(password_hash, password)

    monkeypatch.setattr(auth, "_verify", slow_verify)
    guesses = 29

    def guess(i: int):
        with storage.open_db(path) as db:
            return auth.login(db, "root.admin", f"wrong guess {i}", now=NOW, settings=SETTINGS)

    wrong: list = []
    attacker = threading.Thread(target=lambda: wrong.extend(race(guesses, guess)))
    attacker.start()
    for _ in range(SETTINGS.lockout_attempts):  # the first guesses are being checked...
        assert in_check.acquire(timeout=30)
    with storage.open_db(path) as db:           # ...when the right password arrives
        try:
            right = auth.login(db, "root.admin", ADMIN_PASSWORD, now=NOW, settings=SETTINGS)
        except LoginFailed as exc:
            right = exc
    attacker.join(60)
    assert isinstance(right, LoginFailed) and "Too many failed sign-ins" in str(right), \
        "the right password was accepted while the allowance was used up"
    assert len(checked) == SETTINGS.lockout_attempts, f"{len(checked)} guesses were checked"
    assert all(isinstance(r, LoginFailed) for r in wrong)
    figures(parallel_guesses=guesses + 1, passwords_checked=len(checked))


def test_one_invitation_code_redeemed_twice_at_the_same_moment_makes_one_login(clinic, figures):
    path, admin = clinic
    with storage.open_db(path) as db:
        storage.add_patient(db, patient_id="P001", entered_by="test")
        invitation = auth.issue_invitation(db, admin, "P001", now=NOW, settings=SETTINGS)
    tries = 6

    def redeem(i: int):
        with storage.open_db(path) as db:
            return auth.redeem_invitation(db, invitation.code, f"pat.try{i}", "my own long password", now=NOW)

    results = race(tries, redeem)
    made = [r for r in results if isinstance(r, auth.User)]
    refused = [r for r in results if isinstance(r, (InvitationInvalid, DuplicateRecord))]
    assert len(made) == 1 and len(refused) == tries - 1, results
    with storage.open_db(path) as db:
        patients = storage.load_users(db).query("role == 'patient'")
        assert patients["username"].tolist() == [made[0].username]
        with pytest.raises(InvitationInvalid, match="already been used"):
            auth.redeem_invitation(db, invitation.code, "pat.late", "my own long password", now=NOW)
        with pytest.raises(InvitationInvalid, match="expired"):  # and a fresh code stops at its expiry
            storage.add_patient(db, patient_id="P002", entered_by="test")
            late = auth.issue_invitation(db, admin, "P002", now=NOW, settings=SETTINGS)
            auth.redeem_invitation(db, late.code, "pat.two", "my own long password", now=late.expires_at)
    figures(simultaneous_redemptions=tries, logins_created=len(made))


def test_passwords_exist_only_as_argon2id_hashes(clinic, tmp_path):
    path, admin = clinic
    passwords = {"root.admin": ADMIN_PASSWORD}
    with storage.open_db(path) as db:
        storage.add_patient(db, patient_id="P001", entered_by="test")
        for name, role in (("dr.lee", "clinician"), ("qi.ana", "qi")):
            passwords[name] = f"first password of the {role}"
            auth.create_user(db, admin, username=name, role=role, password=passwords[name], now=NOW)
        code = auth.issue_invitation(db, admin, "P001", now=NOW, settings=SETTINGS).code
        passwords["pat.one"] = "Pässwörd with ümlauts and spaces"
        auth.redeem_invitation(db, code, "pat.one", passwords["pat.one"], now=NOW)
        lee = auth.login(db, "dr.lee", passwords["dr.lee"], now=NOW, settings=SETTINGS)
        old, passwords["dr.lee"] = passwords["dr.lee"], "lee's second password"
        auth.change_password(db, lee, old, passwords["dr.lee"], now=NOW, settings=SETTINGS)
        passwords["qi.ana"] = "a temporary password"
        auth.reset_password(db, admin, "qi.ana", passwords["qi.ana"])
        with pytest.raises(LoginFailed):  # a password typed into the username field is not logged either
            auth.login(db, passwords["qi.ana"], "whatever", now=NOW, settings=SETTINGS)
        hashes = db.conn.execute("SELECT password_hash FROM users").fetchall()
        assert all(re.fullmatch(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", h)
                   for (h,) in hashes)
        everything = b"".join(p.read_bytes() for p in path.parent.glob("clinic.db*"))  # file, WAL, shm
    for secret in list(passwords.values()) + [old, code, code.replace("-", "")]:
        for form in {secret, secret.casefold()}:
            assert form.encode("utf-8") not in everything, "a password or code is stored in clear"


def test_the_production_hasher_is_argon2id_with_owasp_parameters():
    from argon2 import PasswordHasher, Type

    hasher = PasswordHasher()  # what auth.HASHER is outside tests (the tests swap in a cheap one)
    assert auth.PasswordHasher is PasswordHasher
    assert (hasher.type, hasher.time_cost >= 2, hasher.memory_cost >= 19 * 1024) == (Type.ID, True, True)


# No secret in the repository ------------------------------------------------------------------------

#: High-confidence shapes of credentials (private keys, cloud and chat tokens, signed JWTs).
KEY_PATTERNS = {
    "private key": r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----",
    "AWS access key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    "OpenAI-style key": r"\bsk-[A-Za-z0-9]{32,}\b",
    "JWT": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
}
#: A secret-named setting given a literal value that looks random (long, letters and digits, no spaces).
ASSIGNMENT = re.compile(r"""(?ix)\b(cookie_secret|client_secret|secret_key|api_key|access_key|auth_token|
                            password|passwd|token|secret)\b["']?\s*[:=]\s*["']([^"'\s]{16,})["']""")
FORBIDDEN_FILES = re.compile(r"(^|/)(secrets\.toml|\.env(\..*)?|id_rsa|id_ed25519|.*\.pem|.*\.key|.*\.p12)$")


def _files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in listed if f and (ROOT / f).is_file()]


def _random_looking(value: str) -> bool:
    return bool(re.search(r"[A-Za-z]", value) and re.search(r"[0-9]", value)) and not re.search(r"[<>.]{1}", value)


@pytest.mark.slow
def test_no_secret_is_tracked_or_about_to_be(figures):
    files, findings = _files(), []
    assert len(files) > 50  # the scan really sees the repository
    for name in files:
        if FORBIDDEN_FILES.search(name):
            findings.append(f"{name}: a secrets file")
            continue
        text = (ROOT / name).read_bytes().decode("utf-8", errors="ignore")
        findings += [f"{name}: {kind}" for kind, pattern in KEY_PATTERNS.items() if re.search(pattern, text)]
        findings += [f"{name}: {m.group(1)} = {m.group(2)[:4]}…" for m in ASSIGNMENT.finditer(text)
                     if _random_looking(m.group(2))]
    assert findings == []
    history = subprocess.run(["git", "log", "-p", "--all", "--no-color"], cwd=ROOT, capture_output=True,
                             text=True, errors="ignore").stdout
    assert [k for k, p in KEY_PATTERNS.items() if re.search(p, history)] == []  # nor ever committed
    ignored = subprocess.run(["git", "check-ignore", "-q", ".streamlit/secrets.toml"], cwd=ROOT)
    assert ignored.returncode == 0, ".streamlit/secrets.toml must be git-ignored"
    figures(files_scanned=len(files), history_bytes_scanned=len(history))


@pytest.mark.parametrize("text", [  # built at run time, so that the scan of this file does not find them
    "cookie_secret = " + '"3f9a1c77e0b24d6a' + '9f1e2b3c4d5e6f70"',
    "password: " + '"Sup3rS3cret' + 'Value99"',
    "-----BEGIN OPENSSH " + "PRIVATE KEY-----",
    "AKIA" + "IOSFODNN7EXAMPLE",
])
def test_the_secret_scan_would_catch(text):
    caught = any(re.search(p, text) for p in KEY_PATTERNS.values()) or any(
        _random_looking(m.group(2)) for m in ASSIGNMENT.finditer(text))
    assert caught


# A cookie secret per installation ------------------------------------------------------------------------


def test_each_installation_writes_its_own_cookie_secret_and_keeps_it(tmp_path):
    secrets_file = tmp_path / "install-a" / ".streamlit" / "secrets.toml"
    out, err = io.StringIO(), io.StringIO()
    assert main(["secrets", "--file", str(secrets_file)], out, err) == 0, err.getvalue()
    first = tomllib.loads(secrets_file.read_text())["auth"]["cookie_secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert main(["secrets", "--file", str(secrets_file)], out, err) == 0
    assert tomllib.loads(secrets_file.read_text())["auth"]["cookie_secret"] == first  # kept
    other = tmp_path / "install-b" / "secrets.toml"
    main(["secrets", "--file", str(other)], out, err)
    assert tomllib.loads(other.read_text())["auth"]["cookie_secret"] != first
    assert main(["secrets", "--file", str(secrets_file), "--rotate"], out, err) == 0
    assert tomllib.loads(secrets_file.read_text())["auth"]["cookie_secret"] not in (first, "")


def test_the_cookie_secret_joins_an_existing_auth_table_and_leaves_the_rest(tmp_path):
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text('[general]\nemail = "x"\n\n[auth]\nredirect_uri = "https://a.example/oauth2callback"\n'
                            'client_id = "outcomes"\n\n[auth.extra]\nclient_id = "y"\n')
    assert main(["secrets", "--file", str(secrets_file)], io.StringIO(), io.StringIO()) == 0
    data = tomllib.loads(secrets_file.read_text())
    assert data["general"] == {"email": "x"} and data["auth"]["client_id"] == "outcomes"
    assert data["auth"]["extra"] == {"client_id": "y"} and len(data["auth"]["cookie_secret"]) == 64


def test_a_cookie_secret_alone_does_not_switch_hospital_sign_in_on(clinic_db):
    from tests.page_helpers import new_session

    at = new_session()
    at.secrets["auth"] = {"cookie_secret": "0" * 64}
    at.run()
    assert not at.exception
    assert "Sign in with your hospital account" not in [b.label for b in at.button]
    at.secrets["auth"] = {"cookie_secret": "0" * 64, "client_id": "outcomes", "client_secret": "s",
                          "redirect_uri": "http://localhost:8501/oauth2callback",
                          "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    at.run()
    assert "Sign in with your hospital account" in [b.label for b in at.button]


def test_every_database_has_its_own_pseudonym_secret(tmp_path):
    secrets = {storage.get_meta(storage.connect(tmp_path / f"{i}.db"), "secret") for i in range(3)}
    assert len(secrets) == 3 and all(re.fullmatch(r"[0-9a-f]{64}", s) for s in secrets)
