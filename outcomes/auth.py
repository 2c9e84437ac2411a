"""Accounts, roles, passwords, lockout, invitations and sign-in (local argon2id, or OIDC claims).

Roles: ``admin`` (users, settings, audit log, backup), ``clinician`` (every patient, entry on a
patient's behalf), ``qi`` (cohort analytics and de-identified exports only) and ``patient`` (own
data only). Every function takes the moment ``now`` (timezone-aware) from the caller, and every
sign-in, denial and account change is written to the append-only audit log.

Passwords follow NIST SP 800-63B: 10 to 128 characters, any characters (spaces included,
normalised to Unicode NFKC), not containing the username, not one character repeated and not on a
list of common passwords; no composition rules and no expiry. Hashes are argon2id (argon2-cffi's
defaults: t=3, 64 MiB, p=4) and are upgraded on sign-in when the parameters change. A wrong
password counts in the database, not in the session: ``settings.lockout_attempts`` failures in a
row lock the account for ``settings.lockout_minutes``, during which even the right password fails.

Example
-------
>>> from datetime import UTC, datetime
>>> from outcomes import storage
>>> from outcomes.settings import load_settings
>>> db = storage.connect(":memory:")
>>> now = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
>>> admin = create_first_admin(db, "root.admin", "correct horse battery", now=now)
>>> login(db, "root.admin", "correct horse battery", now=now, settings=load_settings({})).role
'admin'
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import storage
from .errors import (
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
from .settings import Settings

ROLES = storage.ROLES
ROLE_LABELS = {"admin": "Administrator", "clinician": "Clinician", "qi": "Quality improvement",
               "patient": "Patient"}

#: Shown for every failed sign-in, whatever the reason, so it reveals nothing about the account.
LOGIN_FAILED = ("Sign-in failed: the username or password is wrong, or the account is locked after too "
                "many failed attempts or deactivated. Check both and try again in a few minutes, or ask "
                "an administrator.")

#: Oldest identity-provider sign-in accepted (toolchain notes 5a: the OIDC cookie lasts 30 days).
MAX_SESSION_AGE = timedelta(hours=8)

MIN_PASSWORD, MAX_PASSWORD = 10, 128

#: Common passwords of 10 or more characters (shorter ones already fail the length rule). A clinic
#: that wants a full breached-password list can extend this set at start-up.
COMMON_PASSWORDS = frozenset({
    "1234567890", "0123456789", "12345678910", "123456789012", "0987654321", "1111111111",
    "1q2w3e4r5t", "1qaz2wsx3edc", "qwertyuiop", "qwerty123456", "asdfghjkl1", "zxcvbnm123",
    "password12", "password123", "password1234", "password1!", "passw0rd123", "p@ssw0rd123",
    "iloveyou12", "iloveyou123", "letmein123", "welcome123", "welcome2024", "welcome2025",
    "changeme123", "administrator", "admin12345", "admin123456", "football123", "baseball123",
    "sunshine123", "princess123", "trustno1234", "qwertyuiop1", "abcdefghij", "abc1234567",
    "superman123", "monkey12345", "dragon12345", "hospital123", "clinic12345", "ketamine123",
    "infusion123", "patient123", "doctor12345", "nurse12345", "summer2024", "summer2025",
    "winter2024", "winter2025", "spring2025", "autumn2025", "passwordpassword", "1234512345",
    "aaaaaaaaaa", "0000000000", "qazwsxedcrfv", "zaq12wsxcde3", "myp@ssword", "mypassword1",
})

#: Invitation codes: Crockford's base 32 (no I, L, O, U), 10 characters (50 bits), shown 4-4-2.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
_CODE_READS_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})  # what a person may type instead

#: The hasher; tests swap in a cheap one. Verifying with the defaults takes ~0.1 s on the build machine.
HASHER = PasswordHasher()
_dummy_hashes: dict[tuple[int, int, int], str] = {}


@dataclass(frozen=True)
class User:
    """A signed-in user. ``patient_id`` is set for (and only for) the patient role."""

    id: int
    username: str
    role: str
    patient_id: str | None = None
    display_name: str | None = None
    email: str | None = None
    must_change_password: bool = False

    @property
    def name(self) -> str:
        """What to greet the user with."""
        return self.display_name or self.username


@dataclass(frozen=True)
class Invitation:
    """A one-time code that lets a patient create their login; only its hash is stored."""

    patient_id: str
    code: str
    expires_at: datetime

    def describe(self) -> str:
        """The sentence to hand to the patient with the code."""
        return (f"Invitation code {self.code} for patient {self.patient_id}: valid once, until "
                f"{self.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC.")


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str
    note: str


# Passwords -----------------------------------------------------------------------------------------


def _normalise(password: str) -> str:
    # NIST SP 800-63B 5.1.1.2: normalise Unicode so the same visible password always hashes the same.
    return unicodedata.normalize("NFKC", password)


def password_problems(password: Any, username: str | None = None) -> list[str]:
    """Every password rule ``password`` breaks (empty when it is acceptable).

    Example
    -------
    >>> password_problems("short", "amy")
    ['it has 5 characters; use at least 10']
    """
    if not isinstance(password, str):
        return ["the password must be text"]
    text = _normalise(password)
    problems = []
    if len(text) < MIN_PASSWORD:
        problems.append(f"it has {len(text)} characters; use at least {MIN_PASSWORD}")
    if len(text) > MAX_PASSWORD:
        problems.append(f"it has {len(text)} characters; use at most {MAX_PASSWORD}")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        problems.append("it contains a control character (such as a tab or line break); remove it")
    name = username.strip().casefold() if isinstance(username, str) else ""
    if len(name) >= 3 and name in text.casefold():
        problems.append("it contains the username; choose something else")
    if text and len(set(text)) == 1:
        problems.append("it is one character repeated")
    if text.casefold() in COMMON_PASSWORDS:
        problems.append("it is a commonly used password that attackers try first")
    return problems


def check_password(password: Any, username: str | None = None) -> None:
    """Raise :class:`WeakPassword` listing every rule ``password`` breaks."""
    problems = password_problems(password, username)
    if problems:
        raise WeakPassword("Choose another password: nothing was saved.", problems)


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (after Unicode normalisation)."""
    return HASHER.hash(_normalise(password))


def _verify(password_hash: str | None, password: Any) -> bool:
    """Check a password; always costs one full argon2 verify, even without a stored hash."""
    if not isinstance(password, str):
        password = ""
    if password_hash is None:
        key = (HASHER.time_cost, HASHER.memory_cost, HASHER.parallelism)
        if key not in _dummy_hashes:
            _dummy_hashes[key] = HASHER.hash(secrets.token_hex(16))
        password_hash = _dummy_hashes[key]
        password = "\x00" + password  # cannot match the dummy whatever is typed
    try:
        return HASHER.verify(password_hash, _normalise(password))
    except (VerificationError, InvalidHashError):
        return False


def session_expired(last_seen: datetime, now: datetime, settings: Settings) -> bool:
    """True when a session idle since ``last_seen`` must sign in again (``settings.session_idle_minutes``)."""
    return now - last_seen > timedelta(minutes=settings.session_idle_minutes)


# Users, roles and authorisation --------------------------------------------------------------------


def _user(row: Mapping[str, Any]) -> User:
    return User(id=int(row["id"]), username=row["username"], role=row["role"], patient_id=row["patient_id"],
                display_name=row["display_name"], email=row["email"],
                must_change_password=bool(row["must_change_password"]))


def _audit_denial(db: storage.Database, who: str, action: str, patient_id: str | None, reason: str) -> None:
    details = {"attempted": action, "reason": reason}
    if patient_id is not None:
        details["patient_id"] = str(patient_id)
    try:
        storage.append_audit(db, actor=who, action="access_denied", patient_id=patient_id, details=details)
    except NotFound:  # a probe for a patient who does not exist: keep the ID in the details only
        storage.append_audit(db, actor=who, action="access_denied", details=details)


def require_role(db: storage.Database, actor: User, *roles: str, action: str,
                 patient_id: str | None = None) -> User:
    """The acting user as stored now, if their role is one of ``roles``; else deny and audit.

    The account is re-read, so a user deactivated or given another role while signed in loses
    access at their next action.

    Parameters
    ----------
    actor
        The signed-in user.
    roles
        Roles allowed to do ``action``.
    action
        What is attempted (recorded in the audit entry of a denial).
    patient_id
        The patient whose record is concerned, for the audit entry.

    Raises
    ------
    PermissionDenied
        With an ``access_denied`` audit entry.
    """
    stored = storage.get_user(db, user_id=actor.id)
    if stored is None or not stored["active"] or stored["username"] != actor.username:
        _audit_denial(db, actor.username, action, patient_id, "account inactive or unknown")
        raise PermissionDenied("Your account is no longer active. Sign in again, or ask an administrator.")
    current = _user(stored)
    if current.role not in roles:
        _audit_denial(db, current.username, action, patient_id, f"role {current.role}")
        allowed = " or ".join(ROLE_LABELS[r].lower() for r in roles)
        raise PermissionDenied(f"Only a user with the {allowed} role can do this; you are signed in as "
                               f"{ROLE_LABELS[current.role].lower()}.")
    return current


def require_patient_access(db: storage.Database, actor: User, patient_id: str, *, action: str,
                           roles: tuple[str, ...] = ("clinician",), patient_self: bool = True) -> User:
    """Allow ``roles`` for any patient, and a patient for their own record when ``patient_self``.

    Raises
    ------
    PermissionDenied
        With an ``access_denied`` audit entry; the message never says whether the patient exists.
    """
    allowed = roles + (("patient",) if patient_self else ())
    current = require_role(db, actor, *allowed, action=action, patient_id=patient_id)
    if current.role == "patient" and current.patient_id != patient_id:
        _audit_denial(db, current.username, action, patient_id, "another patient's record")
        raise PermissionDenied("You can only see and enter your own check-ins.")
    return current


def create_first_admin(db: storage.Database, username: str, password: str, *, now: datetime,
                       email: str | None = None, display_name: str | None = None) -> User:
    """Create the first administrator of an empty database (there is no default password).

    Raises
    ------
    PermissionDenied
        Some user already exists: administrators then create users from the admin page.
    WeakPassword, ValidationError
        The password or username breaks a rule.
    """
    check_password(password, username)
    password_hash = hash_password(password)
    with storage.transaction(db):
        if storage.count_users(db):
            raise PermissionDenied("An administrator already exists; sign in and create users from the "
                                   "Users page instead.")
        user_id = storage.add_user(db, username=username, role="admin", password_hash=password_hash,
                                   email=email, display_name=display_name, now=now)
        storage.append_audit(db, actor=username.strip(), action="create_first_admin")
    return _user(storage.get_user(db, user_id=user_id))


def login(db: storage.Database, username: str, password: str, *, now: datetime, settings: Settings) -> User:
    """Sign in with a local username and password.

    Raises
    ------
    LoginFailed
        With :data:`LOGIN_FAILED` for an unknown username, a wrong password, a locked or a
        deactivated account alike (the audit log records which).
    """
    stored = storage.get_user(db, username=username.strip()) if isinstance(username, str) else None
    # One verify on every path, so the response time does not reveal whether the username exists.
    ok = _verify(stored["password_hash"] if stored else None, password)
    if stored is None:
        storage.append_audit(db, actor="(unknown user)", action="login_failed",
                             details={"reason": "unknown username"})  # the typed name may be a password
        raise LoginFailed(LOGIN_FAILED)
    who, patient = stored["username"], stored["patient_id"]
    locked = stored["locked_until"] is not None and stored["locked_until"] > now
    if not stored["active"] or locked or not ok:
        reason = "deactivated" if not stored["active"] else "locked" if locked else "wrong password"
        with storage.transaction(db, bump=False):
            details: dict[str, Any] = {"reason": reason}
            if reason == "wrong password":
                until = storage.record_failed_login(db, stored["id"], now=now,
                                                    max_attempts=settings.lockout_attempts,
                                                    lock_minutes=settings.lockout_minutes)
                if until is not None:
                    details["locked_until"] = until.isoformat()
            storage.append_audit(db, actor=who, action="login_failed", patient_id=patient, details=details)
        raise LoginFailed(LOGIN_FAILED)
    changes: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
    if HASHER.check_needs_rehash(stored["password_hash"]):
        changes["password_hash"] = hash_password(password)
    with storage.transaction(db, bump=False):
        storage.update_user(db, stored["id"], bump=False, **changes)
        storage.append_audit(db, actor=who, action="login", patient_id=patient,
                             details={"method": "password", "rehashed": "password_hash" in changes})
    return _user(stored)


def log_out(db: storage.Database, actor: User, *, reason: str = "signed out") -> None:
    """Audit the end of a session (``reason`` e.g. "signed out" or "idle timeout")."""
    storage.append_audit(db, actor=actor.username, action="logout", details={"reason": reason})


def identity_expired(claims: Mapping[str, Any], now: datetime, max_age: timedelta = MAX_SESSION_AGE) -> bool:
    """True when the identity provider's sign-in (``auth_time``, else ``iat``) is older than ``max_age``.

    Streamlit's OIDC cookie lasts 30 days and cannot be revoked, so the app enforces its own
    maximum session age and calls ``st.logout()`` when this is True. Missing claims count as expired.
    """
    stamp = claims.get("auth_time", claims.get("iat"))
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        return True
    return now - datetime.fromtimestamp(stamp, UTC) > max_age


def user_for_identity(db: storage.Database, claims: Mapping[str, Any], *, now: datetime,
                      max_age: timedelta = MAX_SESSION_AGE) -> User:
    """Map the verified ID-token claims of an OIDC sign-in (``st.user``) to an active user.

    The ``email`` claim is matched, without case, to a user's email; the identity provider has
    already authenticated the person, and the clinic decides here whether and as what they may enter.

    Raises
    ------
    SessionExpired
        The provider's sign-in is older than ``max_age`` (see :func:`identity_expired`).
    IdentityNotRegistered
        No email, an email the provider marks unverified, or no active user with that email.
    """
    email = claims.get("email")
    who = email.strip().lower() if isinstance(email, str) and email.strip() else "(no email claim)"

    def refuse(reason: str, message: str) -> IdentityNotRegistered:
        storage.append_audit(db, actor=who, action="login_failed",
                             details={"method": "oidc", "reason": reason, "issuer": str(claims.get("iss"))})
        return IdentityNotRegistered(message)

    if identity_expired(claims, now, max_age):
        storage.append_audit(db, actor=who, action="login_failed", details={"method": "oidc",
                                                                             "reason": "sign-in too old"})
        raise SessionExpired(f"Your sign-in is more than {max_age.total_seconds() / 3600:g} hours old; "
                             "sign out and sign in again.")
    if who == "(no email claim)":
        raise refuse("no email", "Your identity provider did not send an email address, which this app "
                                 "needs to recognise you; ask IT to release the email claim.")
    if claims.get("email_verified") is False:
        raise refuse("email not verified", f"Your identity provider says {who} is not verified; verify it "
                                           "there, then sign in again.")
    stored = storage.get_user(db, email=who)
    if stored is None or not stored["active"]:
        raise refuse("unknown email" if stored is None else "deactivated",
                      f"{who} is not registered as an active user of this clinic's outcomes app. Ask an "
                      "administrator to add this email to a user.")
    with storage.transaction(db, bump=False):
        storage.update_user(db, stored["id"], bump=False, last_login_at=now)
        storage.append_audit(db, actor=stored["username"], action="login", patient_id=stored["patient_id"],
                             details={"method": "oidc", "issuer": str(claims.get("iss")),
                                      "subject": str(claims.get("sub"))})
    # The identity provider owns the credential here, so a pending local password change does not apply.
    return dataclasses.replace(_user(stored), must_change_password=False)


def change_password(db: storage.Database, actor: User, current: str, new: str, *, now: datetime,
                    settings: Settings) -> None:
    """Change the signed-in user's own password; the current password is needed.

    A wrong current password counts towards the lockout like a failed sign-in.

    Raises
    ------
    WrongPassword
        The current password is wrong (or the account is locked).
    WeakPassword
        The new password breaks a rule (every rule broken is listed).
    """
    stored = storage.get_user(db, user_id=actor.id)
    if stored is None or not stored["active"]:
        raise PermissionDenied("Your account is no longer active. Sign in again, or ask an administrator.")
    ok = _verify(stored["password_hash"], current)
    locked = stored["locked_until"] is not None and stored["locked_until"] > now
    if not ok or locked:
        with storage.transaction(db, bump=False):
            if not locked:
                storage.record_failed_login(db, stored["id"], now=now, max_attempts=settings.lockout_attempts,
                                            lock_minutes=settings.lockout_minutes)
            storage.append_audit(db, actor=stored["username"], action="change_password_failed",
                                 details={"reason": "locked" if locked else "wrong current password"})
        raise WrongPassword("The current password is not right, so the password was not changed. "
                            "Type your current password again.")
    check_password(new, stored["username"])
    if _normalise(new) == _normalise(current):
        raise WeakPassword("Choose another password: nothing was saved.",
                           ["it is the same as the current password"])
    with storage.transaction(db):
        storage.update_user(db, stored["id"], password_hash=hash_password(new), must_change_password=False,
                            failed_logins=0)
        storage.append_audit(db, actor=stored["username"], action="change_password")


def create_user(db: storage.Database, actor: User, *, username: str, role: str, password: str | None = None,
                patient_id: str | None = None, email: str | None = None, display_name: str | None = None,
                now: datetime) -> User:
    """Create a user (admin only). The user must change the password at first sign-in.

    Parameters
    ----------
    password
        Initial password; may be None only with an ``email`` (an identity-provider-only user).
    patient_id
        Required for, and only for, the patient role: an enrolled patient without a login.

    Raises
    ------
    PermissionDenied, WeakPassword, ValidationError, NotFound, DuplicateRecord
    """
    admin = require_role(db, actor, "admin", action="create_user")
    if password is None and not email:
        raise ValidationError("Cannot create the user: nothing was saved. Fix the following and try again:",
                              ["give an initial password, or an email for sign-in through the identity "
                               "provider"])
    password_hash = None
    if password is not None:
        check_password(password, username)
        password_hash = hash_password(password)
    with storage.transaction(db):
        user_id = storage.add_user(db, username=username, role=role, password_hash=password_hash,
                                   patient_id=patient_id, email=email, display_name=display_name,
                                   must_change_password=password is not None, now=now)
        created = storage.get_user(db, user_id=user_id)
        storage.append_audit(db, actor=admin.username, action="create_user", patient_id=created["patient_id"],
                             details={"username": created["username"], "role": created["role"]})
    return _user(created)


def _target(db: storage.Database, username: str) -> dict[str, Any]:
    stored = storage.get_user(db, username=username.strip()) if isinstance(username, str) else None
    if stored is None:
        raise NotFound(f"No user named {username!r}; check the spelling in the list of users")
    return stored


def _admin_change(db: storage.Database, actor: User, username: str, action: str, **changes: Any) -> None:
    admin = require_role(db, actor, "admin", action=action)
    target = _target(db, username)
    if target["id"] == admin.id and changes.get("active") is False:
        raise ValidationError("Cannot deactivate your own account: another administrator must do it, so "
                              "the clinic is never left without one.")
    with storage.transaction(db):
        storage.update_user(db, target["id"], **changes)
        storage.append_audit(db, actor=admin.username, action=action, patient_id=target["patient_id"],
                             details={"username": target["username"]})


def deactivate_user(db: storage.Database, actor: User, username: str) -> None:
    """Stop a user from signing in (admin only; accounts are never deleted, for the audit trail)."""
    _admin_change(db, actor, username, "deactivate_user", active=False)


def reactivate_user(db: storage.Database, actor: User, username: str) -> None:
    """Let a deactivated user sign in again (admin only)."""
    _admin_change(db, actor, username, "reactivate_user", active=True, failed_logins=0, locked_until=None)


def unlock_user(db: storage.Database, actor: User, username: str) -> None:
    """Lift a lockout before it runs out (admin only)."""
    _admin_change(db, actor, username, "unlock_user", failed_logins=0, locked_until=None)


def reset_password(db: storage.Database, actor: User, username: str, new_password: str) -> None:
    """Set a temporary password (admin only); the user must change it at the next sign-in."""
    require_role(db, actor, "admin", action="reset_password")
    check_password(new_password, _target(db, username)["username"])
    _admin_change(db, actor, username, "reset_password", password_hash=hash_password(new_password),
                  must_change_password=True, failed_logins=0, locked_until=None)


def list_users(db: storage.Database, actor: User, *, now: datetime) -> pd.DataFrame:
    """Every user for the admin page, without password hashes, with ``locked`` as of ``now``."""
    require_role(db, actor, "admin", action="list_users")
    users = storage.load_users(db)
    users["locked"] = users["locked_until"].notna() & (users["locked_until"] > pd.Timestamp(now))
    return users


# Invitations ---------------------------------------------------------------------------------------


def _code_hash(db: storage.Database, normalised: str) -> str:
    # Keyed with the database's own secret: a leaked hash list alone cannot be brute-forced offline.
    key = (storage.get_meta(db, "secret") or "").encode()
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


def _normalise_code(code: Any) -> str | None:
    if not isinstance(code, str):
        return None
    text = "".join(code.split()).replace("-", "").upper().translate(_CODE_READS_AS)
    return text if len(text) == CODE_LENGTH and all(ch in CODE_ALPHABET for ch in text) else None


def new_invitation_code() -> str:
    """A random code such as ``K7QF-M2XD-9P`` (50 bits; no I, L, O or U, so it reads unambiguously)."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def issue_invitation(db: storage.Database, actor: User, patient_id: str, *, now: datetime,
                     settings: Settings) -> Invitation:
    """A new one-time invitation code for an enrolled patient (clinician or admin).

    Any earlier unused code of the patient stops working. The code is shown once: only its hash
    is stored.

    Raises
    ------
    PermissionDenied, NotFound, DuplicateRecord (the patient already has a login)
    """
    user = require_patient_access(db, actor, patient_id, action="issue_invitation",
                                  roles=("clinician", "admin"), patient_self=False)
    if storage.patient_has_login(db, patient_id):
        raise DuplicateRecord(f"{patient_id} already has a login, so an invitation code would not work. If the "
                              "patient forgot the password, an administrator can reset it on the Users page.")
    code = new_invitation_code()
    expires_at = now + timedelta(days=settings.invitation_days)
    with storage.transaction(db):
        storage.add_invitation(db, patient_id=patient_id, code_hash=_code_hash(db, _normalise_code(code)),
                               created_by=user.username, now=now, expires_at=expires_at)
        storage.append_audit(db, actor=user.username, action="issue_invitation", patient_id=patient_id,
                             details={"expires_at": expires_at.isoformat()})
    return Invitation(patient_id=patient_id, code=code, expires_at=expires_at)


def redeem_invitation(db: storage.Database, code: str, username: str, password: str, *,
                      now: datetime) -> User:
    """Create a patient's own login from their invitation code.

    Raises
    ------
    InvitationInvalid
        Unknown, expired, replaced or already used code (the message never names the patient).
    WeakPassword, ValidationError, DuplicateRecord
        The chosen password or username is not acceptable, or the patient already has a login.
    """
    normalised = _normalise_code(code)
    invitation = storage.get_invitation(db, _code_hash(db, normalised)) if normalised else None
    problem = None
    if invitation is None:
        problem = ("unknown code", "This invitation code is not valid. Check it for typos (it has 10 letters "
                                   "and digits, such as K7QF-M2XD-9P) or ask the clinic for a new one.")
    elif invitation["used_at"] is not None:
        problem = ("already used", "This invitation code has already been used. Sign in with the username "
                                   "chosen then, or ask the clinic for a new code.")
    elif invitation["revoked_at"] is not None:
        problem = ("replaced", "This invitation code was replaced by a newer one. Use the latest code the "
                               "clinic gave you.")
    elif invitation["expires_at"] <= now:
        problem = ("expired", f"This invitation code expired on {invitation['expires_at']:%Y-%m-%d}. Ask the "
                              "clinic for a new one.")
    if problem:
        storage.append_audit(db, actor="(invitation)", action="invitation_failed",
                             patient_id=invitation["patient_id"] if invitation else None,
                             details={"reason": problem[0]})
        raise InvitationInvalid(problem[1])
    check_password(password, username)
    if storage.patient_has_login(db, invitation["patient_id"]):
        raise DuplicateRecord("An account already exists for you. Sign in with it, or ask the clinic to "
                              "reset its password.")
    password_hash = hash_password(password)
    with storage.transaction(db):
        user_id = storage.add_user(db, username=username, role="patient", password_hash=password_hash,
                                   patient_id=invitation["patient_id"], now=now)
        storage.use_invitation(db, invitation["id"], user_id=user_id, now=now)
        storage.append_audit(db, actor=username.strip(), action="redeem_invitation",
                             patient_id=invitation["patient_id"])
    return _user(storage.get_user(db, user_id=user_id))


# Demo accounts -------------------------------------------------------------------------------------

_DEMO = (("demo-admin", "admin", "Administrator: users, settings, audit log."),
         ("demo-clinician", "clinician", "Clinician: every patient, roster, alerts, entry on behalf."),
         ("demo-qi", "qi", "Quality improvement: cohort analytics and de-identified exports only."),
         ("demo-patient", "patient", "Patient: own check-ins and results only."))


def create_demo_accounts(db: storage.Database, *, now: datetime) -> list[DemoAccount]:
    """One account per role in a synthetic demo database, with fresh random passwords.

    Demo accounts never exist in a database that may hold real patients. Calling again resets the
    demo accounts' passwords (the passwords are only ever shown from this return value).

    Returns
    -------
    list of DemoAccount
        ``(username, password, role, note)``; the patient is linked to the first ``DEMO-`` patient
        that has scores.

    Raises
    ------
    NotADemoDatabase
        The database is not flagged synthetic (``storage.is_synthetic``).
    """
    if not storage.is_synthetic(db):
        raise NotADemoDatabase("Demo accounts can only be created in a synthetic demo database; this "
                               "database is not flagged synthetic and may hold real patients.")
    patient_id = storage.first_patient_with_assessments(db, "DEMO-")
    if patient_id is None:
        raise NotADemoDatabase("The demo database has no DEMO- patient with check-ins yet; seed it first.")
    accounts = []
    passwords = {username: secrets.token_urlsafe(12) for username, _, _ in _DEMO}
    # Hashed before the transaction, so the write lock is not held through four argon2 runs.
    hashes = {username: hash_password(password) for username, password in passwords.items()}
    with storage.transaction(db):
        for username, role, note in _DEMO:
            password = passwords[username]
            linked = patient_id if role == "patient" else None
            stored = storage.get_user(db, username=username)
            if stored is None:
                storage.add_user(db, username=username, role=role, password_hash=hashes[username],
                                 patient_id=linked, display_name=f"Demo {ROLE_LABELS[role].lower()}", now=now)
            elif stored["role"] != role or stored["patient_id"] != linked:
                raise DuplicateRecord(f"User {username!r} exists with another role or patient; rename it "
                                      "before creating the demo accounts.")
            else:
                storage.update_user(db, stored["id"], password_hash=hashes[username], active=True,
                                    failed_logins=0, locked_until=None, must_change_password=False)
            accounts.append(DemoAccount(username, password, role,
                                        note + (f" Linked to {patient_id}." if linked else "")))
        storage.append_audit(db, actor="(demo setup)", action="create_demo_accounts",
                             details={"usernames": [a.username for a in accounts]})
    return accounts
