"""Sign-in throttling and the browsers an account has signed in on (docs/authentication.md, "Failed
sign-ins").

The policy (which buckets an attempt counts in, their allowances) lives in outcomes/auth.py; this module
counts attempts atomically and stores subjects as keyed digests only.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from .connection import _write
from .rows import _moment, _stamp

#: The longest delay a bucket imposes, and how long a bucket without failures is remembered.
MAX_THROTTLE_DELAY = timedelta(hours=24)


@dataclass(frozen=True)
class Bucket:
    """One sign-in throttle counter (table ``sign_in_throttle``).

    ``allowance`` failures pass; from then on an attempt must wait. Without ``leak``, the wait doubles with
    each further failure from ``base`` up to :data:`MAX_THROTTLE_DELAY`, and a bucket that has not failed
    for that long starts afresh. With ``leak``, one failure is forgotten per ``leak`` interval (a rate limit:
    a burst of ``allowance``, then one failure per interval).

    With ``audit_every``, the bucket also decides what reaches the audit log (finding 16): each of the first
    ``allowance`` failures on its own (and the first attempt refused by a wait), after that one entry per
    ``audit_every`` for all attempts since.
    """

    scope: str
    subject: str
    client: str
    allowance: int
    base: timedelta = timedelta(minutes=15)
    leak: timedelta | None = None
    audit_every: timedelta | None = None

    def delay(self, failures: int) -> timedelta:
        if self.leak is not None:
            return self.leak
        return min(self.base * 2 ** min(failures - self.allowance, 32), MAX_THROTTLE_DELAY)


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_attempt`.

    ``allowed``; if not, ``until`` when the waiting bucket lets the next attempt through. ``failures``: the
    count of each bucket after this claim. ``report``: how many attempts the audit entry for this one should
    stand for (1: this attempt alone; more: every attempt since the last entry; 0: none is due yet).
    """

    allowed: bool
    until: datetime | None = None
    failures: tuple[int, ...] = ()
    report: int = 1


def _throttle_subject(conn: sqlite3.Connection, subject: str) -> str:
    """How a bucket's subject is stored: a keyed digest, never the text. A username field may hold a password
    typed in the wrong box, and client addresses are kept out of the database (docs/privacy.md)."""
    from ..deployment import derive_key  # deployment imports the storage package

    row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    key = derive_key(row[0] if row else "", "sign-in throttle")
    return hmac.new(key, subject.casefold().encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:40]


def _row_key(conn: sqlite3.Connection, b: Bucket) -> list[str]:
    return [b.scope, _throttle_subject(conn, b.subject), b.client]


def _bucket_state(conn: sqlite3.Connection, b: Bucket, now: datetime) -> dict[str, Any]:
    row = conn.execute("SELECT failures, delayed_until, last_at, unaudited, audited_at, refused "
                       "FROM sign_in_throttle WHERE scope = ? AND subject = ? AND client = ?",
                       _row_key(conn, b)).fetchone()
    if row is None:
        return {"failures": 0, "until": None, "last": now, "unaudited": 0, "audited_at": None, "refused": 0}
    state = {"failures": row[0], "until": _moment(row[1]), "last": _moment(row[2]), "unaudited": row[3],
             "audited_at": _moment(row[4]), "refused": row[5]}
    if b.leak is not None:
        leaked = int((now - state["last"]) / b.leak)
        if leaked > 0:
            state["failures"] = max(0, state["failures"] - leaked)
            state["last"] = now
        if state["failures"] < b.allowance:
            state["until"] = None
    elif now - state["last"] >= MAX_THROTTLE_DELAY and (state["until"] is None or state["until"] <= now):
        state["failures"], state["until"] = 0, None
    return state


def claim_attempt(db: Database, buckets: Sequence[Bucket], *, now: datetime) -> Claim:
    """Count an attempt as failed in every bucket *before* its password or code is checked, or refuse it.

    Claimed in one ``BEGIN IMMEDIATE`` transaction, so attempts made at the same moment are counted one after
    the other: once a bucket's allowance is used up, no further attempt is checked, however many arrive
    together (finding 4: a lock read before a slow check, and never read again, let 23 parallel guesses be
    checked). A success gives the claim back with :func:`settle_attempt`. If any bucket is waiting, the
    attempt is refused and counted for the audit only.
    """
    if not buckets:
        return Claim(True)
    with _write(db, bump=False) as conn:
        states = [_bucket_state(conn, b, now) for b in buckets]
        waiting = [s["until"] for s in states if s["until"] is not None and s["until"] > now]
        allowed = not waiting
        report = 1
        for b, s in zip(buckets, states):
            if allowed:
                s["failures"] += 1
                s["until"] = now + b.delay(s["failures"]) if s["failures"] >= b.allowance else None
                s["last"] = now
            if b.audit_every is not None:
                if (s["failures"] <= b.allowance) if allowed else (s["refused"] == 0 and not s["unaudited"]):
                    # A failure within the allowance, or the first refusal: an entry of its own, which also
                    # sums up any attempts not yet written.
                    report, s["unaudited"], s["audited_at"] = s["unaudited"] + 1, 0, now
                elif s["audited_at"] is None or now - s["audited_at"] >= b.audit_every:
                    report, s["unaudited"], s["audited_at"] = s["unaudited"] + 1, 0, now
                else:
                    report, s["unaudited"] = 0, s["unaudited"] + 1
            conn.execute("INSERT INTO sign_in_throttle (scope, subject, client, failures, refused, delayed_until, "
                         "last_at, unaudited, audited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (scope, subject, client) DO UPDATE SET failures = excluded.failures, "
                         "refused = CASE WHEN ? THEN 0 ELSE refused + 1 END, delayed_until = excluded.delayed_until, "
                         "last_at = excluded.last_at, unaudited = excluded.unaudited, audited_at = excluded.audited_at",
                         [*_row_key(conn, b), s["failures"], 0 if allowed else 1,
                          s["until"] and _stamp(s["until"]), _stamp(s["last"]), s["unaudited"],
                          s["audited_at"] and _stamp(s["audited_at"]), allowed])
        return Claim(allowed, until=max(waiting) if waiting else None,
                     failures=tuple(s["failures"] for s in states), report=report)


def settle_attempt(db: Database, *, reset: Sequence[Bucket] = (), give_back: Sequence[Bucket] = ()) -> None:
    """After a successful attempt: forget the ``reset`` buckets, and give back the failure claimed in the
    ``give_back`` buckets (so that a busy shared address counts only real failures)."""
    with _write(db, bump=False) as conn:
        for b in reset:
            conn.execute("DELETE FROM sign_in_throttle WHERE scope = ? AND subject = ? AND client = ?",
                         _row_key(conn, b))
        for b in give_back:
            conn.execute("UPDATE sign_in_throttle SET failures = max(failures - 1, 0), delayed_until = CASE "
                         "WHEN failures - 1 < ? THEN NULL ELSE delayed_until END WHERE scope = ? AND subject = ? "
                         "AND client = ?", [b.allowance, *_row_key(conn, b)])
            conn.execute("DELETE FROM sign_in_throttle WHERE scope = ? AND subject = ? AND client = ? AND failures = 0 "
                         "AND refused = 0 AND unaudited = 0", _row_key(conn, b))


def clear_throttle(db: Database, *, scope: str, subject: str) -> int:
    """Forget every bucket of ``subject`` (an unlock: every wait of a username); returns how many there were."""
    with _write(db, bump=False) as conn:
        return conn.execute("DELETE FROM sign_in_throttle WHERE scope = ? AND subject = ?",
                            [scope, _throttle_subject(db.conn, subject)]).rowcount


def throttled(db: Database, subjects: Iterable[str], *, scope: str, now: datetime) -> dict[str, datetime]:
    """Those of ``subjects`` with a bucket of ``scope`` that makes attempts wait at ``now``, and until when."""
    out = {}
    for subject in subjects:
        until = db.conn.execute("SELECT max(delayed_until) FROM sign_in_throttle WHERE scope = ? AND subject = ? "
                                "AND delayed_until > ?", [scope, _throttle_subject(db.conn, subject),
                                                          _stamp(now)]).fetchone()[0]
        if until is not None:
            out[subject] = _moment(until)
    return out


def client_label(db: Database, address: str) -> str:
    """A short keyed digest of a client address, for audit entries: entries from one client can be told
    apart from another's, but the address itself is not stored."""
    return "client-" + _throttle_subject(db.conn, "address\x00" + address)[:12]


def known_browser(db: Database, user_id: int, browser: str) -> bool:
    """Whether ``user_id`` has signed in on the browser with this cookie digest before."""
    return db.conn.execute("SELECT 1 FROM known_browsers WHERE user_ref = ? AND browser = ?",
                           [user_id, browser]).fetchone() is not None


def remember_browser(db: Database, user_id: int, browser: str, *, now: datetime) -> None:
    """Record a successful sign-in of ``user_id`` on the browser with this cookie digest."""
    with _write(db, bump=False) as conn:
        conn.execute("INSERT INTO known_browsers (user_ref, browser, first_at, last_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (user_ref, browser) DO UPDATE SET last_at = excluded.last_at",
                     [user_id, browser, _stamp(now), _stamp(now)])
