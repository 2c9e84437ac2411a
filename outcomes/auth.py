"""Accounts, roles, passwords, lockout, invitations and sign-in (local argon2id, or OIDC claims).

Roles: ``admin`` (users, settings, audit log, backup), ``clinician`` (every patient, entry on a
patient's behalf), ``qi`` (cohort analytics and de-identified exports only) and ``patient`` (own
data only). Every function takes the moment ``now`` (timezone-aware) from the caller, and every
sign-in, denial and account change is written to the append-only audit log.

Passwords follow NIST SP 800-63B: 10 to 128 characters, any characters (spaces included,
normalised to Unicode NFKC), not containing the username, not one character repeated and not on a
list of common passwords; no composition rules and no expiry. Hashes are argon2id (argon2-cffi's
defaults: t=3, 64 MiB, p=4) and are upgraded on sign-in when the parameters change.

Failed sign-ins are throttled in the database, not in the session (docs/authentication.md): each attempt is
counted before its password is checked, per username and client (a browser the account has signed in on
before, or all other clients together), and per client address. After ``settings.lockout_attempts``
failures a client waits ``settings.lockout_minutes``, twice as long after each further failure; the
account's usual browsers are not held up by anybody else's failures. ``python -m outcomes unlock USER``
and the Users page lift the waits.

Sessions: a password change or reset, a deactivation or a reactivation bumps the user's credential
version, and :func:`require_role` refuses a session signed in with an older one; a session lasts at most
:data:`MAX_SESSION_AGE` (``ui.session``).

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

import contextlib
import dataclasses
import hashlib
import hmac
import math
import secrets
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import deployment, storage
from .errors import (
    DuplicateRecord,
    IdentityNotRegistered,
    InvitationInvalid,
    LoginFailed,
    NotADemoDatabase,
    NotFound,
    PermissionDenied,
    SessionExpired,
    StorageUnavailable,
    ValidationError,
    WeakPassword,
    WrongPassword,
)
from .settings import Settings

ROLES = storage.ROLES
ROLE_LABELS = {"admin": "Administrator", "clinician": "Clinician", "qi": "Quality improvement",
               "patient": "Patient"}

#: Shown for every sign-in whose password was checked and failed, whatever the reason, so it reveals nothing
#: about the account (a client that must wait is told so, for existing and unknown usernames alike).
LOGIN_FAILED = ("Sign-in failed: the username or password is wrong, or the account is deactivated. Check both "
                "and try again, or ask an administrator.")

#: The longest a session lasts from its sign-in, whatever the activity (one clinic shift); also the oldest
#: identity-provider sign-in accepted (toolchain notes 5a: the OIDC cookie lasts 30 days).
MAX_SESSION_AGE = timedelta(hours=8)

#: Failures a client address may make (sign-in, invitation code, setup token) before it is rate-limited to
#: one a minute, as a multiple of ``settings.lockout_attempts``; and how often repeated failures from one
#: address are summed up in one audit entry once its first failures are each logged (finding 16).
ADDRESS_ALLOWANCE = 10
ADDRESS_LEAK = timedelta(minutes=1)
AUDIT_SUMMARY_EVERY = timedelta(minutes=15)

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
    #: The account's credential version when this session signed in (see :func:`require_role`).
    credential_version: int = 0

    @property
    def name(self) -> str:
        """What to greet the user with."""
        return self.display_name or self.username


@dataclass(frozen=True)
class LinkUser(User):
    """A session opened by a one-tap check-in link (``outcomes.link_access``): it acts as the link's patient,
    without an account, and only for :data:`LINK_ACTIONS` (the check-in and its result).

    ``id`` is minus the link's id, so it never names a row of ``users``; ``username`` (``link:<id>``) is what
    the audit log records as the actor. :func:`require_role` checks it against the link itself, never the
    users table: a revoked or expired link ends what its session may do at the next call.
    """

    link_id: int = 0
    expires_at: datetime | None = None


#: All that a check-in link's session may do: open the check-in page, see whether the check-in is due, keep
#: its unsent answers with the link (so that reopening the link in the same browser brings them back) and
#: send it.
LINK_ACTIONS = frozenset({"open_page", "checkin_due", "save_draft", "load_draft", "discard_draft", "submit_checkin"})
LINK_ENDED = "This link can't be used any more. Ask your clinic for a new link."


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


def session_deadline(last_seen: datetime, settings: Settings, *, signed_in_at: datetime | None = None) -> datetime:
    """When a session last active at ``last_seen`` must sign in again: ``settings.session_idle_minutes`` after
    ``last_seen``, or :data:`MAX_SESSION_AGE` after ``signed_in_at``, whichever comes first."""
    deadline = last_seen + timedelta(minutes=settings.session_idle_minutes)
    return deadline if signed_in_at is None else min(deadline, signed_in_at + MAX_SESSION_AGE)


def session_expired(last_seen: datetime, now: datetime, settings: Settings, *,
                    signed_in_at: datetime | None = None) -> bool:
    """True when a session must sign in again: past its :func:`session_deadline`."""
    return now > session_deadline(last_seen, settings, signed_in_at=signed_in_at)


def credentials_changed(stored: Mapping[str, Any], actor: User) -> bool:
    """Whether the stored account (``storage.get_user``) had its password changed or reset, or was
    deactivated or reactivated, since ``actor`` signed in."""
    return int(stored.get("credential_version") or 0) != actor.credential_version


#: Said to a session whose credentials changed (and the reason in its audit entry).
CREDENTIALS_CHANGED = ("Your password was changed or reset, or your account was switched off and on again, "
                       "since you signed in here. Sign in again with your current password.")


# Throttling failed attempts (findings 4, 5 and 16) ----------------------------------------------------------


def _account_bucket(db: storage.Database, typed: str, stored: Mapping[str, Any] | None, browser: str | None,
                    settings: Settings) -> storage.Bucket:
    """The bucket of a username as typed (existing or not, so that waits reveal nothing) and client: the
    browser when the account has signed in on it before, otherwise the one shared by all other clients."""
    known = stored is not None and browser is not None and storage.known_browser(db, stored["id"], browser)
    return storage.Bucket("account", typed.strip().casefold(), f"browser:{browser}" if known else "new",
                          allowance=settings.lockout_attempts, base=timedelta(minutes=settings.lockout_minutes))


def _address_buckets(address: str | None, settings: Settings | None) -> list[storage.Bucket]:
    """The rate limit of one client address; none for a caller without a client (the command line, tests)."""
    if address is None or settings is None:
        return []
    return [storage.Bucket("address", address, "", allowance=ADDRESS_ALLOWANCE * settings.lockout_attempts,
                           leak=ADDRESS_LEAK, audit_every=AUDIT_SUMMARY_EVERY)]


@contextlib.contextmanager
def _giving_back_on_failure(db: storage.Database, buckets: list[storage.Bucket]) -> Iterator[None]:
    """A right password whose sign-in cannot be stored (disk full...) is not a failure: give its claim back
    if the database takes that much, so that the refused action leaves nothing behind."""
    try:
        yield
    except StorageUnavailable:
        with contextlib.suppress(StorageUnavailable):
            storage.settle_attempt(db, give_back=buckets)
        raise


def _client(db: storage.Database, address: str | None) -> dict[str, str]:
    """What an audit entry says about where an attempt came from: a keyed digest, never the address."""
    return {"client": storage.client_label(db, address)} if address else {}


def wait_message(until: datetime, now: datetime, what: str = "sign-ins") -> str:
    minutes = max(1, math.ceil((until - now).total_seconds() / 60))
    return (f"Too many failed {what} from here. Try again in {minutes} minute{'s' if minutes != 1 else ''} "
            f"(after {until.astimezone(UTC):%H:%M} UTC), or ask an administrator to lift the wait (Users page, "
            "or `python -m outcomes unlock USERNAME` on the server).")


def _audit_attempt(db: storage.Database, claim: storage.Claim, *, actor: str, action: str,
                   patient_id: str | None = None, details: dict[str, Any]) -> None:
    """One audit entry per failure at first; later ones summed up per address (``attempts``)."""
    if claim.report == 0:
        return
    if claim.report > 1:
        details = {**details, "attempts": claim.report, "summary": "this and the failed or refused attempts from "
                                                                   "this address since its previous entry"}
    storage.append_audit(db, actor=actor, action=action, patient_id=patient_id, details=details)


# Users, roles and authorisation --------------------------------------------------------------------


def _user(row: Mapping[str, Any]) -> User:
    return User(id=int(row["id"]), username=row["username"], role=row["role"], patient_id=row["patient_id"],
                display_name=row["display_name"], email=row["email"],
                must_change_password=bool(row["must_change_password"]),
                credential_version=int(row.get("credential_version") or 0))


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
    access at their next action, and so does a session signed in before the account's password was
    changed or reset (its credential version).

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
    if isinstance(actor, LinkUser):
        return _require_link(db, actor, roles, action=action, patient_id=patient_id)
    stored = storage.get_user(db, user_id=actor.id)
    if stored is None or not stored["active"] or stored["username"] != actor.username:
        _audit_denial(db, actor.username, action, patient_id, "account inactive or unknown")
        raise PermissionDenied("Your account is no longer active. Sign in again, or ask an administrator.")
    if credentials_changed(stored, actor):
        _audit_denial(db, actor.username, action, patient_id, "credentials changed")
        raise PermissionDenied(CREDENTIALS_CHANGED)
    current = _user(stored)
    if current.role not in roles:
        _audit_denial(db, current.username, action, patient_id, f"role {current.role}")
        allowed = " or ".join(ROLE_LABELS[r].lower() for r in roles)
        raise PermissionDenied(f"Only a user with the {allowed} role can do this; you are signed in as "
                               f"{ROLE_LABELS[current.role].lower()}.")
    return current


def link_session_open(db: storage.Database, session: LinkUser) -> bool:
    """Whether the check-in link behind a link session still stands: a check-in link of the session's patient,
    not revoked, and not past its expiry on the server's clock (not the caller's ``now``: a session must not
    outlive its link whatever moment a caller passes)."""
    links = storage.load_links(db, session.patient_id) if session.patient_id else None
    row = None if links is None else next(
        (r for r in links.itertuples() if r.link_id == session.link_id and r.purpose == "checkin"), None)
    return (row is not None and session.role == "patient" and pd.isna(row.revoked_at)
            and row.expires_at > datetime.now(UTC))


def _require_link(db: storage.Database, actor: LinkUser, roles: tuple[str, ...], *, action: str,
                  patient_id: str | None) -> LinkUser:
    """:func:`require_role` for a check-in link's session: the link must still be open (not revoked, not past
    its expiry on the server's clock), the patient role allowed, and ``action`` one of :data:`LINK_ACTIONS`."""
    if not link_session_open(db, actor):
        _audit_denial(db, actor.username, action, patient_id, "check-in link revoked or expired")
        raise PermissionDenied(LINK_ENDED)
    if "patient" not in roles or action not in LINK_ACTIONS:
        _audit_denial(db, actor.username, action, patient_id, "a check-in link opens only the check-in")
        raise PermissionDenied("A check-in link opens only your check-in. Sign in with your account to see more.")
    return actor


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
                       email: str | None = None, display_name: str | None = None,
                       setup_token: str | None = None, settings: Settings | None = None,
                       address: str | None = None, browser: str | None = None) -> User:
    """Create the first administrator of an empty database (there is no default password).

    From a web page, pass what the visitor typed as ``setup_token``: it must be the installation's pending
    one-time token (``deployment.issue_setup_token``, shown only in the server's log or by
    ``python -m outcomes setup-token``), and wrong tokens are throttled per ``address`` like failed
    sign-ins (``settings`` needed). ``setup_token=None`` is for callers that have the database file
    itself (the command line, tests, a notebook), who can do anything anyway.

    Raises
    ------
    PermissionDenied
        Some user already exists (administrators then create users from the admin page), or the setup
        token is missing, wrong or expired.
    LoginFailed
        Too many wrong setup tokens from this address: wait.
    WeakPassword, ValidationError
        The password or username breaks a rule.
    """
    if setup_token is not None:
        if storage.count_users(db):
            raise PermissionDenied("An administrator already exists; sign in and create users from the "
                                   "Users page instead.")
        claim = storage.claim_attempt(db, _address_buckets(address, settings), now=now)
        if not claim.allowed:
            _audit_attempt(db, claim, actor="(setup)", action="setup_failed",
                           details={"reason": "throttled", **_client(db, address)})
            raise LoginFailed(wait_message(claim.until, now, "setup tokens"))
        if not deployment.setup_token_matches(db, setup_token, now=now):
            _audit_attempt(db, claim, actor="(setup)", action="setup_failed",
                           details={"reason": "wrong or expired setup token", **_client(db, address)})
            raise PermissionDenied(
                "The setup token is not right or has expired, so no administrator was created. Copy the token "
                "from the server's log (the line 'Setup token for the first administrator'), or make a new one "
                "on the server with `python -m outcomes setup-token`.")
        storage.settle_attempt(db, give_back=_address_buckets(address, settings))  # the right token
    check_password(password, username)
    password_hash = hash_password(password)
    with storage.transaction(db):
        if storage.count_users(db):
            raise PermissionDenied("An administrator already exists; sign in and create users from the "
                                   "Users page instead.")
        if setup_token is not None and not deployment.setup_token_matches(db, setup_token, now=now):
            raise PermissionDenied("The setup token has just been replaced or has expired; copy the newest one "
                                   "from the server's log and try again.")
        user_id = storage.add_user(db, username=username, role="admin", password_hash=password_hash,
                                   email=email, display_name=display_name, now=now)
        details = {"setup_token": True} if setup_token is not None else None
        if setup_token is not None:
            deployment.forget_setup_token(db)
        if browser is not None:
            storage.remember_browser(db, user_id, browser, now=now)
        storage.append_audit(db, actor=username.strip(), action="create_first_admin", details=details)
    return _user(storage.get_user(db, user_id=user_id))


def login(db: storage.Database, username: str, password: str, *, now: datetime, settings: Settings,
          browser: str | None = None, address: str | None = None) -> User:
    """Sign in with a local username and password.

    ``browser`` is the digest of the browser's HttpOnly cookie (``ui.session``) and ``address`` the client's
    network address; both only decide which throttle counts the attempt (see the module's notes). The
    attempt is counted *before* the password is checked (``storage.claim_attempt``), so simultaneous
    guesses are checked only up to the allowance.

    Raises
    ------
    LoginFailed
        With :data:`LOGIN_FAILED` for an unknown username, a wrong password or a deactivated account alike
        (the audit log records which); with :func:`wait_message` when this client must wait first, which
        happens alike for existing and unknown usernames.
    """
    typed = username.strip() if isinstance(username, str) else ""
    stored = storage.get_user(db, username=typed) if typed else None
    buckets = [_account_bucket(db, typed, stored, browser, settings), *_address_buckets(address, settings)]
    who = stored["username"] if stored else "(unknown user)"  # the typed name may be a password
    patient = stored["patient_id"] if stored else None
    where = {"from": "known browser" if buckets[0].client != "new" else "new browser", **_client(db, address)}
    claim = storage.claim_attempt(db, buckets, now=now)
    if not claim.allowed:
        _audit_attempt(db, claim, actor=who, action="login_failed", patient_id=patient,
                       details={"reason": "throttled", "until": claim.until.isoformat(), **where})
        raise LoginFailed(wait_message(claim.until, now))
    # One verify on every path, so the response time does not reveal whether the username exists.
    ok = _verify(stored["password_hash"] if stored else None, password)
    if stored is None or not stored["active"] or not ok:
        reason = "unknown username" if stored is None else "deactivated" if not stored["active"] else "wrong password"
        details: dict[str, Any] = {"reason": reason, "failures": claim.failures[0], **where}
        if claim.failures[0] >= buckets[0].allowance:
            details["delayed_until"] = (now + buckets[0].delay(claim.failures[0])).isoformat()
        _audit_attempt(db, claim, actor=who, action="login_failed", patient_id=patient, details=details)
        raise LoginFailed(LOGIN_FAILED)
    changes: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
    if HASHER.check_needs_rehash(stored["password_hash"]):
        changes["password_hash"] = hash_password(password)
    with _giving_back_on_failure(db, buckets):
        with storage.transaction(db, bump=False):
            storage.settle_attempt(db, reset=buckets[:1], give_back=buckets[1:])
            storage.update_user(db, stored["id"], bump=False, **changes)
            if browser is not None:
                storage.remember_browser(db, stored["id"], browser, now=now)
            storage.append_audit(db, actor=stored["username"], action="login", patient_id=patient,
                                 details={"method": "password", "rehashed": "password_hash" in changes, **where})
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


def _claim_text(claims: Mapping[str, Any], key: str) -> str | None:
    value = claims.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _verified(value: Any) -> bool:
    # Some providers send the boolean as text.
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def user_for_identity(db: storage.Database, claims: Mapping[str, Any], *, now: datetime,
                      max_age: timedelta = MAX_SESSION_AGE) -> User:
    """Map the ID-token claims of an OIDC sign-in (``st.user``) to an active user.

    The identity is the provider's issuer and subject (``iss``, ``sub``). The first time, it is matched to
    the user whose email an administrator entered, and only through an email the provider marks verified
    (``email_verified`` true): an unverified email is whatever the person typed at the provider. The match is
    then kept on the user, and later sign-ins are recognised by issuer and subject alone; another identity
    with the same email, from any issuer, is refused. Changing the user's email forgets the match.

    Raises
    ------
    SessionExpired
        The provider's sign-in is older than ``max_age`` (see :func:`identity_expired`).
    IdentityNotRegistered
        No issuer or subject, no email, an email not marked verified, no active user with that email, or a
        user already matched to another identity.
    """
    email = claims.get("email")
    who = email.strip().lower() if isinstance(email, str) and email.strip() else "(no email claim)"
    issuer, subject = _claim_text(claims, "iss"), _claim_text(claims, "sub")

    def refuse(reason: str, message: str) -> IdentityNotRegistered:
        storage.append_audit(db, actor=who, action="login_failed",
                             details={"method": "oidc", "reason": reason, "issuer": str(claims.get("iss"))})
        return IdentityNotRegistered(message)

    if identity_expired(claims, now, max_age):
        storage.append_audit(db, actor=who, action="login_failed", details={"method": "oidc",
                                                                             "reason": "sign-in too old"})
        raise SessionExpired(f"Your sign-in is more than {max_age.total_seconds() / 3600:g} hours old; "
                             "sign out and sign in again.")
    if issuer is None or subject is None:
        raise refuse("no issuer or subject", "Your identity provider did not say who you are (the iss and sub "
                                             "claims), so this app cannot recognise you; ask IT to check the "
                                             "sign-in set-up.")
    stored = storage.get_user_by_identity(db, issuer=issuer, subject=subject)
    if stored is None:
        if who == "(no email claim)":
            raise refuse("no email", "Your identity provider did not send an email address, which this app "
                                     "needs to recognise you the first time; ask IT to release the email claim.")
        if not _verified(claims.get("email_verified")):
            raise refuse("email not verified", f"{who} is not verified by your identity provider (its "
                                               "email_verified claim is not true), so this app cannot match it to "
                                               "a user. Verify the address with the provider, or ask IT to send "
                                               "that claim, then sign in again.")
        stored = storage.get_user(db, email=who)
        if stored is not None and stored["oidc_subject"] is not None:
            raise refuse("email bound to another identity",
                         f"The user with {who} signs in with another hospital account. Ask an administrator "
                         "to check the user's email (changing it lets a new hospital account be matched).")
    if stored is None or not stored["active"]:
        raise refuse("unknown email" if stored is None else "deactivated",
                     f"{who} is not registered as an active user of this clinic's outcomes app. Ask an "
                     "administrator to add this email to a user.")
    with storage.transaction(db, bump=False):
        changes: dict[str, Any] = {"last_login_at": now}
        if stored["oidc_subject"] is None:
            changes.update(oidc_issuer=issuer, oidc_subject=subject)
        storage.update_user(db, stored["id"], bump=False, **changes)
        storage.append_audit(db, actor=stored["username"], action="login", patient_id=stored["patient_id"],
                             details={"method": "oidc", "issuer": issuer, "subject": subject})
    # The identity provider owns the credential here, so a pending local password change does not apply.
    return dataclasses.replace(_user(stored), must_change_password=False)


def change_password(db: storage.Database, actor: User, current: str, new: str, *, now: datetime,
                    settings: Settings, browser: str | None = None, address: str | None = None) -> User:
    """Change the signed-in user's own password; the current password is needed.

    A wrong current password counts like a failed sign-in of this user from this browser. Every other
    session of the user ends (the credential version changes); returns the user as this session should now
    hold it.

    Raises
    ------
    WrongPassword
        The current password is wrong (or this browser must wait after too many wrong ones).
    WeakPassword
        The new password breaks a rule (every rule broken is listed).
    """
    stored = storage.get_user(db, user_id=actor.id)
    if stored is None or not stored["active"]:
        raise PermissionDenied("Your account is no longer active. Sign in again, or ask an administrator.")
    bucket = _account_bucket(db, stored["username"], stored, browser, settings)
    claim = storage.claim_attempt(db, [bucket], now=now)
    if not claim.allowed:
        storage.append_audit(db, actor=stored["username"], action="change_password_failed",
                             details={"reason": "throttled", "until": claim.until.isoformat()})
        raise WrongPassword(wait_message(claim.until, now, "password checks"))
    if not _verify(stored["password_hash"], current):
        storage.append_audit(db, actor=stored["username"], action="change_password_failed",
                             details={"reason": "wrong current password", "failures": claim.failures[0]})
        raise WrongPassword("The current password is not right, so the password was not changed. "
                            "Type your current password again.")
    storage.settle_attempt(db, reset=[bucket])
    check_password(new, stored["username"])
    if _normalise(new) == _normalise(current):
        raise WeakPassword("Choose another password: nothing was saved.",
                           ["it is the same as the current password"])
    with storage.transaction(db):
        storage.update_user(db, stored["id"], new_credentials=True, password_hash=hash_password(new),
                            must_change_password=False, failed_logins=0)
        storage.append_audit(db, actor=stored["username"], action="change_password")
    return _user(storage.get_user(db, user_id=stored["id"]))


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


def _admin_change(db: storage.Database, actor: User, username: str, action: str, *,
                  new_credentials: bool = False, unlock: bool = False, **changes: Any) -> None:
    admin = require_role(db, actor, "admin", action=action)
    target = _target(db, username)
    if target["id"] == admin.id and changes.get("active") is False:
        raise ValidationError("Cannot deactivate your own account: another administrator must do it, so "
                              "the clinic is never left without one.")
    with storage.transaction(db):
        storage.update_user(db, target["id"], new_credentials=new_credentials, **changes)
        if unlock:
            storage.clear_throttle(db, scope="account", subject=target["username"])
        storage.append_audit(db, actor=admin.username, action=action, patient_id=target["patient_id"],
                             details={"username": target["username"]})


def deactivate_user(db: storage.Database, actor: User, username: str) -> None:
    """Stop a user from signing in (admin only; accounts are never deleted, for the audit trail)."""
    _admin_change(db, actor, username, "deactivate_user", new_credentials=True, active=False)


def reactivate_user(db: storage.Database, actor: User, username: str) -> None:
    """Let a deactivated user sign in again (admin only); sessions from before the deactivation stay ended."""
    _admin_change(db, actor, username, "reactivate_user", new_credentials=True, unlock=True, active=True,
                  failed_logins=0, locked_until=None)


def unlock_user(db: storage.Database, actor: User, username: str) -> None:
    """Lift every sign-in wait of the user, from every client, before it runs out (admin only).

    ``python -m outcomes unlock USER`` does the same on the server, for when no administrator can sign in.
    """
    _admin_change(db, actor, username, "unlock_user", unlock=True, failed_logins=0, locked_until=None)


def reset_password(db: storage.Database, actor: User, username: str, new_password: str) -> None:
    """Set a temporary password (admin only); the user must change it at the next sign-in, and every
    session of the user ends."""
    require_role(db, actor, "admin", action="reset_password")
    check_password(new_password, _target(db, username)["username"])
    _admin_change(db, actor, username, "reset_password", new_credentials=True, unlock=True,
                  password_hash=hash_password(new_password), must_change_password=True, failed_logins=0,
                  locked_until=None)


def list_users(db: storage.Database, actor: User, *, now: datetime) -> pd.DataFrame:
    """Every user for the admin page, without password hashes; ``locked`` when some client must wait
    before signing in as the user at ``now``, and ``locked_until`` the latest such wait."""
    require_role(db, actor, "admin", action="list_users")
    users = storage.load_users(db)
    waits = storage.throttled(db, users["username"], scope="account", now=now)
    users["locked_until"] = pd.to_datetime([waits.get(name) for name in users["username"]], utc=True)
    users["locked"] = users["locked_until"].notna()
    return users


# Invitations ---------------------------------------------------------------------------------------


def _code_hash(db: storage.Database, normalised: str, *, legacy: bool = False) -> str:
    # Keyed with a key derived from the database's own secret for this purpose only (deployment.derive_key):
    # a leaked hash list alone cannot be brute-forced offline, and the pseudonym key is not reused.
    secret = storage.get_meta(db, "secret") or ""
    # Codes issued before the keys were separated were keyed with the secret itself; they are looked up that
    # way too until they run out (at most settings.invitation_days, 90 days at the most).
    key = secret.encode() if legacy else deployment.derive_key(secret, "invitation code")
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


def _find_invitation(db: storage.Database, normalised: str) -> dict[str, Any] | None:
    return (storage.get_invitation(db, _code_hash(db, normalised))
            or storage.get_invitation(db, _code_hash(db, normalised, legacy=True)))


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
                      now: datetime, settings: Settings | None = None, address: str | None = None,
                      browser: str | None = None) -> User:
    """Create a patient's own login from their invitation code.

    Each attempt is counted against the client's ``address`` first (with ``settings``): after many
    failures it must wait, and repeated failures are summed up in the audit log instead of one entry each.

    Raises
    ------
    InvitationInvalid
        Unknown, expired, replaced or already used code (the message never names the patient), or too
        many failures from this address (wait).
    WeakPassword, ValidationError, DuplicateRecord
        The chosen password or username is not acceptable, or the patient already has a login.
    """
    buckets = _address_buckets(address, settings)
    claim = storage.claim_attempt(db, buckets, now=now)
    if not claim.allowed:
        _audit_attempt(db, claim, actor="(invitation)", action="invitation_failed",
                       details={"reason": "throttled", **_client(db, address)})
        raise InvitationInvalid(wait_message(claim.until, now, "invitation codes"))
    normalised = _normalise_code(code)
    invitation = _find_invitation(db, normalised) if normalised else None
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
        _audit_attempt(db, claim, actor="(invitation)", action="invitation_failed",
                       patient_id=invitation["patient_id"] if invitation else None,
                       details={"reason": problem[0], **_client(db, address)})
        raise InvitationInvalid(problem[1])
    if buckets:  # a valid code: not a failure of this address
        storage.settle_attempt(db, give_back=buckets)
    check_password(password, username)
    if storage.patient_has_login(db, invitation["patient_id"]):
        raise DuplicateRecord("An account already exists for you. Sign in with it, or ask the clinic to "
                              "reset its password.")
    password_hash = hash_password(password)
    with storage.transaction(db):
        user_id = storage.add_user(db, username=username, role="patient", password_hash=password_hash,
                                   patient_id=invitation["patient_id"], now=now)
        storage.use_invitation(db, invitation["id"], user_id=user_id, now=now)
        if browser is not None:
            storage.remember_browser(db, user_id, browser, now=now)
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
                storage.update_user(db, stored["id"], new_credentials=True, password_hash=hashes[username],
                                    active=True, failed_logins=0, locked_until=None, must_change_password=False)
                storage.clear_throttle(db, scope="account", subject=username)
            accounts.append(DemoAccount(username, password, role,
                                        note + (f" Linked to {patient_id}." if linked else "")))
        storage.append_audit(db, actor="(demo setup)", action="create_demo_accounts",
                             details={"usernames": [a.username for a in accounts]})
    return accounts
