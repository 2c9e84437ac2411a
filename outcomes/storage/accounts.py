"""User accounts, patient invitations and check-in drafts (docs/authentication.md).

The rules (password strength, lockout arithmetic, who may do what) live in outcomes/auth.py and
outcomes/clinic.py; this module only stores and reads. Callers that need several of these verbs to commit
together wrap them in :func:`~outcomes.storage.connection.transaction`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..errors import DuplicateRecord, NotFound
from ..validation import _raise_if, _who, clean_user
from .connection import _write
from .reads import _frame
from .rows import _JSON, _insert, _moment, _patient_ref, _stamp

_USER_FIELDS = ("id", "username", "role", "password_hash", "patient_id", "email", "display_name",
                "failed_logins", "locked_until", "active", "must_change_password", "last_login_at",
                "created_at", "credential_version", "oidc_issuer", "oidc_subject")
_USER_CHANGES = frozenset({"password_hash", "failed_logins", "locked_until", "active",
                           "must_change_password", "last_login_at", "email", "display_name",
                           "oidc_issuer", "oidc_subject"})


def count_users(db: Database) -> int:
    """How many user accounts exist (active or not)."""
    return int(db.conn.execute("SELECT count(*) FROM users").fetchone()[0])


def add_user(db: Database, *, username: str, role: str, password_hash: str | None,
             patient_id: str | None = None, email: str | None = None, display_name: str | None = None,
             must_change_password: bool = False, now: datetime) -> int:
    """Create a user account; returns its id.

    Raises
    ------
    ValidationError
        Invalid username, role, email or patient link (every problem listed).
    NotFound
        A patient login for a patient who is not enrolled.
    DuplicateRecord
        The username or email is taken, or the patient already has an active login.
    """
    values, problems = clean_user(username=username, role=role, patient_id=patient_id, email=email,
                                  display_name=display_name)
    if password_hash is not None and not (isinstance(password_hash, str) and password_hash.startswith("$")):
        problems.append("password_hash must be a password hash, never the password itself")
    _raise_if(problems, f"Cannot create the user {username!r}")
    with _write(db) as conn:
        if conn.execute("SELECT 1 FROM users WHERE username = ?", [values["username"]]).fetchone():
            raise DuplicateRecord(f"The username {values['username']!r} is taken; choose another")
        if values["email"] and conn.execute("SELECT 1 FROM users WHERE email = ? COLLATE NOCASE",
                                            [values["email"]]).fetchone():
            raise DuplicateRecord(f"Another user already has the email {values['email']}; "
                                  "each email can sign in as one user only")
        ref = None
        if values["patient_id"] is not None:
            ref = _patient_ref(conn, values["patient_id"])
            if conn.execute("SELECT 1 FROM users WHERE patient_ref = ? AND active = 1", [ref]).fetchone():
                raise DuplicateRecord(f"Patient {values['patient_id']!r} already has a login; reset its "
                                      "password or deactivate it instead of creating a second one")
        row = {"username": values["username"], "role": values["role"], "password_hash": password_hash,
               "patient_ref": ref, "email": values["email"], "display_name": values["display_name"],
               "must_change_password": int(bool(must_change_password)), "created_at": _stamp(now)}
        return _insert(conn, "users", row)


def get_user(db: Database, *, user_id: int | None = None, username: str | None = None,
             email: str | None = None) -> dict[str, Any] | None:
    """One user by id, username or email (case-insensitive), or None.

    Returns
    -------
    dict or None
        Keys ``id, username, role, password_hash, patient_id, email, display_name, failed_logins,
        locked_until`` (aware datetime or None), ``active``, ``must_change_password`` (bools),
        ``last_login_at``, ``created_at``.
    """
    given = [(c, v) for c, v in (("u.id", user_id), ("u.username", username), ("u.email", email))
             if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of user_id, username or email")
    column, value = given[0]
    columns = ", ".join("p.patient_id" if c == "patient_id" else f"u.{c}" for c in _USER_FIELDS)
    row = db.conn.execute(f"SELECT {columns} FROM users u LEFT JOIN patients p ON p.id = u.patient_ref "
                          f"WHERE {column} = ? COLLATE NOCASE", [value]).fetchone()
    if row is None:
        return None
    user = dict(zip(_USER_FIELDS, row))
    user["active"], user["must_change_password"] = bool(user["active"]), bool(user["must_change_password"])
    for key in ("locked_until", "last_login_at", "created_at"):
        user[key] = _moment(user[key])
    return user


def get_user_by_identity(db: Database, *, issuer: str, subject: str) -> dict[str, Any] | None:
    """The user bound to a hospital identity provider's ``issuer`` and ``subject`` (exact), or None."""
    row = db.conn.execute("SELECT id FROM users WHERE oidc_issuer = ? AND oidc_subject = ?",
                          [issuer, subject]).fetchone()
    return None if row is None else get_user(db, user_id=row[0])


def update_user(db: Database, user_id: int, *, bump: bool = True, new_credentials: bool = False,
                **changes: Any) -> None:
    """Change fields of one user (``password_hash, failed_logins, locked_until, active,
    must_change_password, last_login_at, email, display_name, oidc_issuer, oidc_subject``); datetimes
    must be timezone-aware.

    ``new_credentials`` bumps the user's ``credential_version``, which ends every session signed in before
    (a password change or reset, a deactivation). Changing the email forgets the identity provider's
    issuer and subject bound to the old one, unless they are given too.

    Raises
    ------
    NotFound
        No user with this id.
    DuplicateRecord
        Reactivating a patient login when the patient has another active one, or an email in use.
    """
    unknown = sorted(set(changes) - _USER_CHANGES)
    if unknown or not (changes or new_credentials):
        raise ValueError(f"cannot change user field(s) {unknown or '(none given)'}")
    if "email" in changes:
        changes = {"oidc_issuer": None, "oidc_subject": None, **changes}
    values = {k: _stamp(v) if isinstance(v, datetime) else int(v) if isinstance(v, bool) else v
              for k, v in changes.items()}
    assignments = [f"{k} = ?" for k in values] + (["credential_version = credential_version + 1"]
                                                  if new_credentials else [])
    with _write(db, bump=bump) as conn:
        try:
            done = conn.execute(f"UPDATE users SET {', '.join(assignments)} WHERE id = ?",
                                [*values.values(), user_id]).rowcount
        except sqlite3.IntegrityError as exc:
            if "users.patient_ref" in str(exc):
                raise DuplicateRecord("This patient already has another active login; deactivate that "
                                      "one first") from None
            if "users.email" in str(exc):
                raise DuplicateRecord("Another user already has this email") from None
            if "users.oidc_issuer" in str(exc):
                raise DuplicateRecord("Another user is already bound to this hospital identity") from None
            raise
        if not done:
            raise NotFound(f"No user with id {user_id}")


def patient_has_login(db: Database, patient_id: str) -> bool:
    """Whether the patient already has an active login."""
    return db.conn.execute("SELECT 1 FROM users u JOIN patients p ON p.id = u.patient_ref "
                           "WHERE p.patient_id = ? AND u.active = 1", [patient_id]).fetchone() is not None


def load_users(db: Database) -> pd.DataFrame:
    """Every user without the password hash: ``username, role, patient_id, display_name, email,
    active, failed_logins, locked_until, must_change_password, last_login_at, created_at``."""
    df = _frame(db, "SELECT u.username, u.role, p.patient_id, u.display_name, u.email, u.active, "
                    "u.failed_logins, u.locked_until, u.must_change_password, u.last_login_at, u.created_at "
                    "FROM users u LEFT JOIN patients p ON p.id = u.patient_ref ORDER BY u.username",
                ints=["failed_logins"], stamps=["locked_until", "last_login_at", "created_at"])
    return df.astype({"active": bool, "must_change_password": bool})


# Invitations and check-in drafts ---------------------------------------------------------------------


def add_invitation(db: Database, *, patient_id: str, code_hash: str, created_by: str, now: datetime,
                   expires_at: datetime) -> int:
    """Store a new invitation (its code's hash only); earlier unused ones of the patient are revoked.

    Raises
    ------
    NotFound
        Unknown patient.
    """
    problems: list[str] = []
    who = _who(problems, created_by, "created_by")
    if expires_at <= now:
        problems.append(f"expires_at {expires_at} must be after now {now}")
    _raise_if(problems, f"Cannot create an invitation for patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, patient_id)
        conn.execute("UPDATE invitations SET revoked_at = ? WHERE patient_ref = ? AND used_at IS NULL "
                     "AND revoked_at IS NULL", [_stamp(now), ref])
        return _insert(conn, "invitations", {"patient_ref": ref, "code_hash": code_hash, "created_by": who,
                                             "created_at": _stamp(now), "expires_at": _stamp(expires_at)})


def get_invitation(db: Database, code_hash: str) -> dict[str, Any] | None:
    """The invitation with this code hash: ``id, patient_id, created_at, expires_at, used_at,
    revoked_at`` (aware datetimes or None), or None."""
    row = db.conn.execute("SELECT i.id, p.patient_id, i.created_at, i.expires_at, i.used_at, i.revoked_at "
                          "FROM invitations i JOIN patients p ON p.id = i.patient_ref WHERE i.code_hash = ?",
                          [code_hash]).fetchone()
    if row is None:
        return None
    return {"id": row[0], "patient_id": row[1], **{k: _moment(v) for k, v in zip(
        ("created_at", "expires_at", "used_at", "revoked_at"), row[2:])}}


def use_invitation(db: Database, invitation_id: int, *, user_id: int, now: datetime) -> None:
    """Mark an invitation used by ``user_id``; a second use fails even in a race."""
    with _write(db) as conn:
        done = conn.execute("UPDATE invitations SET used_at = ?, used_by = ? WHERE id = ? "
                            "AND used_at IS NULL AND revoked_at IS NULL",
                            [_stamp(now), user_id, invitation_id]).rowcount
        if not done:
            raise DuplicateRecord("This invitation code has already been used")


def save_draft(db: Database, *, patient_id: str, user_id: int, answers: Mapping[str, Any],
               now: datetime) -> None:
    """Upsert the unsent check-in answers of ``user_id`` for ``patient_id``.

    Does not bump ``data_version``: drafts are saved at every answer and no cached page shows them.
    """
    text = _JSON(dict(answers))
    with _write(db, bump=False) as conn:
        ref = _patient_ref(conn, patient_id)
        conn.execute("INSERT INTO checkin_drafts (patient_ref, user_ref, answers, saved_at) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (patient_ref, user_ref) DO UPDATE SET "
                     "answers = excluded.answers, saved_at = excluded.saved_at",
                     [ref, user_id, text, _stamp(now)])


def load_draft(db: Database, *, patient_id: str, user_id: int) -> tuple[dict[str, Any], datetime] | None:
    """``(answers, saved_at)`` of the draft, or None."""
    row = db.conn.execute("SELECT d.answers, d.saved_at FROM checkin_drafts d JOIN patients p "
                          "ON p.id = d.patient_ref WHERE p.patient_id = ? AND d.user_ref = ?",
                          [patient_id, user_id]).fetchone()
    return None if row is None else (json.loads(row[0]), datetime.fromisoformat(row[1]))


def delete_draft(db: Database, *, patient_id: str, user_id: int) -> bool:
    """Delete the draft; True when there was one."""
    with _write(db, bump=False) as conn:
        deleted = conn.execute("DELETE FROM checkin_drafts WHERE user_ref = ? AND patient_ref = "
                               "(SELECT id FROM patients WHERE patient_id = ?)", [user_id, patient_id])
        return bool(deleted.rowcount)
