"""Follow-up: patients' contacts and consent, the message outbox, one-tap links, call outcomes, reminder runs.

The rules (which slot is due, which step to send, who is on the call list) are pure and live in
:mod:`outcomes.followup`; sending is :mod:`outcomes.messaging`. This module only stores and reads, each
write one transaction. The outbox is what makes sending safe to repeat (docs/followup.md): a message is a
row before it is sent, one row per patient, series, slot and step (a unique index), and it is *claimed*
(``planned``/``failed`` → ``sending``) in a write transaction before the transport sees it, so two runs at
once, a re-run or a crash never send a step twice.
"""

from __future__ import annotations

import json

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..errors import NotFound, ValidationError
from ..validation import _Fields, _raise_if, _who, clean_contact
from .rows import _JSON
from .connection import _write
from .reads import _frame, _patient_filter
from .rows import _insert, _patient_ref, _stamp
from .schema import CALL_OUTCOMES, LINK_PURPOSES, OUTBOX_STATUSES, STEPS

# Contacts --------------------------------------------------------------------------------------------

CONTACT_COLUMNS = ("patient_id", "email", "phone", "channel", "consent_on", "consent_by", "consent_how",
                   "opted_out_at", "opted_out_by", "updated_at", "updated_by")


def set_contact(db: Database, patient_id: str, *, email: Any = None, phone: Any = None, channel: Any = None,
                consent_on: Any = None, consent_how: str = "recorded", by: str, now: datetime,
                region: str = "US", today: date | None = None) -> dict[str, Any]:
    """Store a patient's contact details for reminders, replacing what was there; returns the stored row.

    Checked by :func:`outcomes.validation.clean_contact` (email by ``email-validator``, the mobile number
    by ``phonenumbers``, normalised to E.164). ``consent_how`` is ``recorded`` (staff recorded the
    patient's consent) or ``imported``; ``consent_by`` is ``by``. Choosing a channel again after an
    opt-out clears the opt-out (staff record the patient's new consent).

    Raises
    ------
    ValidationError
        Every problem at once; nothing was stored.
    """
    values, problems = clean_contact(email=email, phone=phone, channel=channel, consent_on=consent_on,
                                     region=region, today=today)
    who = _who(problems, by, "by")
    if consent_how not in ("recorded", "imported"):
        problems.append(f"consent_how must be recorded or imported, got {consent_how!r}")
    _raise_if(problems, f"Cannot save the contact details of {patient_id}")
    messaging = values["channel"] != "none"
    row = {**values, "consent_by": who if values["consent_on"] else None,
           "consent_how": consent_how if values["consent_on"] else None,
           "updated_at": _stamp(now), "updated_by": who}
    with _write(db) as conn:
        ref = _patient_ref(conn, patient_id)
        old = conn.execute("SELECT opted_out_at, opted_out_by FROM contacts WHERE patient_ref = ?",
                           [ref]).fetchone()
        opted = (None, None) if messaging or old is None else old
        conn.execute("INSERT OR REPLACE INTO contacts (patient_ref, email, phone, channel, consent_on, consent_by, "
                     "consent_how, opted_out_at, opted_out_by, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, "
                     "?, ?, ?, ?)",
                     [ref, row["email"], row["phone"], row["channel"],
                      None if row["consent_on"] is None else row["consent_on"].isoformat(), row["consent_by"],
                      row["consent_how"], opted[0], opted[1], row["updated_at"], row["updated_by"]])
    return {"patient_id": patient_id, **row, "opted_out_at": opted[0], "opted_out_by": opted[1]}


def opt_out(db: Database, patient_id: str, *, by: str, now: datetime) -> bool:
    """Stop every message to the patient (channel ``none``), keeping the addresses and who stopped them,
    and cancel their planned messages. True when messages were on; False when they already were off."""
    problems: list[str] = []
    who = _who(problems, by, "by")
    _raise_if(problems, f"Cannot stop messages to {patient_id}")
    stamp = _stamp(now)
    with _write(db) as conn:
        ref = _patient_ref(conn, patient_id)
        changed = conn.execute("UPDATE contacts SET channel = 'none', opted_out_at = ?, opted_out_by = ?, "
                               "updated_at = ?, updated_by = ? WHERE patient_ref = ? AND channel <> 'none'",
                               [stamp, who, stamp, who, ref]).rowcount
        conn.execute("UPDATE outbox SET status = 'cancelled', last_error = 'the patient stopped messages' "
                     "WHERE patient_ref = ? AND status IN ('planned', 'failed')", [ref])
    return bool(changed)


def load_contacts(db: Database, patient_id: str | None = None) -> pd.DataFrame:
    """Contact details, one row per patient that has any: :data:`CONTACT_COLUMNS`."""
    where, params = _patient_filter(patient_id)
    return _frame(db, "SELECT p.patient_id, c.email, c.phone, c.channel, c.consent_on, c.consent_by, c.consent_how, "
                      "c.opted_out_at, c.opted_out_by, c.updated_at, c.updated_by FROM contacts c "
                      "JOIN patients p ON p.id = c.patient_ref WHERE 1" + where + " ORDER BY p.patient_id", params,
                  dates=["consent_on"], stamps=["opted_out_at", "updated_at"])


# Schedule inputs ---------------------------------------------------------------------------------------


def load_followup_inputs(db: Database, patient_id: str | None = None, *,
                         days_since: date | None = None) -> dict[str, pd.DataFrame]:
    """What the follow-up schedule is computed from, in three compact reads.

    ``days_since`` reads only the days with a score from that day on: enough for the slots open on a day
    (``slots(only_open=True)``; the reminder run passes ``as_of - baseline_days - slot_days``), and far
    faster for a large clinic (1.8 million score days at 100,000 patients).

    Returns
    -------
    dict
        ``patients``: ``patient_id, disposition, disposition_on``; ``series``: series that are planned or given (not
        cancelled or voided) with ``series_id, patient_id, first_infusion, last_infusion, planned_first,
        planned_last, state, planned_on`` (the day the series was entered) and ``entered_by``;
        ``days``: ``patient_id, assessed_on``, one row per day on which the patient has any active score.
    """
    where, params = _patient_filter(patient_id)
    patients = _frame(db, "SELECT p.patient_id, p.disposition, p.disposition_on FROM patients p WHERE 1" + where +
                      " ORDER BY p.patient_id", params, dates=["disposition_on"])
    series = _frame(db, "SELECT s.id AS series_id, p.patient_id, s.first_infusion, s.last_infusion, s.planned_first, "
                        "s.planned_last, s.state, substr(s.entered_at, 1, 10) AS planned_on, s.entered_by "
                        "FROM series s JOIN patients p ON p.id = s.patient_ref "
                        "WHERE s.state <> 'cancelled' AND s.voided_at IS NULL" + where +
                        " ORDER BY p.patient_id, s.first_infusion", params,
                    dates=["first_infusion", "last_infusion", "planned_first", "planned_last", "planned_on"],
                    ints=["series_id"])
    days = _frame(db, "SELECT DISTINCT p.patient_id, a.assessed_on FROM assessments a "
                      "JOIN patients p ON p.id = a.patient_ref "
                      "WHERE a.superseded_by IS NULL AND a.voided_at IS NULL" + where +
                      ("" if days_since is None else " AND a.assessed_on >= ?") +
                      " ORDER BY p.patient_id, a.assessed_on",
                  params + ([] if days_since is None else [days_since.isoformat()]), dates=["assessed_on"])
    return {"patients": patients, "series": series, "days": days}


# The outbox ---------------------------------------------------------------------------------------------

OUTBOX_COLUMNS = ("message_id", "patient_id", "series_id", "slot", "due_on", "step", "channel", "recipient",
                  "status", "attempts", "last_error", "provider_id", "provider_response", "planned_at",
                  "planned_by", "claimed_at", "claimed_by", "sent_at")


def plan_messages(db: Database, messages: Sequence[Mapping[str, Any]], *, by: str, now: datetime) -> int:
    """Put messages in the outbox as ``planned``; returns how many were new.

    Each message is ``{patient_id, series_id, slot, due_on, step, channel, recipient}``; a step already
    in the outbox for that patient, series and slot (whatever its status) is left alone, so planning is
    idempotent. A test message (``step='test'``) has no patient, series, slot or due day.
    """
    problems: list[str] = []
    who = _who(problems, by, "by")
    for m in messages:
        if m["step"] not in STEPS or m["channel"] not in ("email", "sms"):
            problems.append(f"unknown step {m['step']!r} or channel {m['channel']!r}")
    _raise_if(problems, "Cannot plan the messages")
    stamp = _stamp(now)
    with _write(db, bump=False) as conn:
        refs = (dict(conn.execute("SELECT patient_id, id FROM patients")) if len(messages) > 50 else None)
        new = 0
        for m in messages:
            ref = None
            if m.get("patient_id") is not None:
                ref = refs[m["patient_id"]] if refs is not None else _patient_ref(conn, m["patient_id"])
            due = m.get("due_on")
            new += conn.execute(
                "INSERT OR IGNORE INTO outbox (patient_ref, series_ref, slot, due_on, step, channel, recipient, "
                "planned_at, planned_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [ref, m.get("series_id"), m.get("slot"), due.isoformat() if isinstance(due, date) else due,
                 m["step"], m["channel"], m["recipient"], stamp, who]).rowcount
    return new


def claim_messages(db: Database, *, by: str, now: datetime, max_attempts: int,
                   ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Claim messages to send: ``planned`` ones, and ``failed`` ones with fewer than ``max_attempts``
    attempts, become ``sending`` (attempts + 1) in one write transaction, and are returned with
    ``patient_id``. A message another run claimed is not returned, so each is sent by one run only.
    ``ids`` limits the claim to those messages."""
    stamp = _stamp(now)
    only = ""
    params: list[Any] = [stamp, by, max_attempts]
    if ids is not None:
        ids = [int(i) for i in ids]
        if not ids:
            return []
        only = f" AND id IN ({', '.join('?' * len(ids))})"
        params += ids
    with _write(db, bump=False) as conn:
        rows = conn.execute(
            "UPDATE outbox SET status = 'sending', claimed_at = ?, claimed_by = ?, attempts = attempts + 1 "
            "WHERE (status = 'planned' OR (status = 'failed' AND attempts < ?))" + only +
            " RETURNING id, patient_ref, series_ref, slot, due_on, step, channel, recipient, attempts",
            params).fetchall()
        names = dict(conn.execute("SELECT id, patient_id FROM patients WHERE id IN (SELECT patient_ref FROM outbox "
                                  "WHERE status = 'sending' AND claimed_at = ? AND claimed_by = ?)", [stamp, by]))
    keys = ("message_id", "patient_ref", "series_id", "slot", "due_on", "step", "channel", "recipient", "attempts")
    claimed = [dict(zip(keys, row)) for row in rows]
    for m in claimed:
        m["patient_id"] = names.get(m.pop("patient_ref"))
        m["due_on"] = None if m["due_on"] is None else date.fromisoformat(m["due_on"])
    return sorted(claimed, key=lambda m: m["message_id"])


def finish_message(db: Database, message_id: int, *, sent: bool, now: datetime, max_attempts: int,
                   provider_id: str | None = None, provider_response: str | None = None,
                   error: str | None = None) -> str:
    """Record what the transport said of a claimed message; returns its new status: ``sent``, ``failed``
    (retried by a later run) or ``gave_up`` (``max_attempts`` reached: shown on the admin page)."""
    with _write(db, bump=False) as conn:
        row = conn.execute("SELECT status, attempts FROM outbox WHERE id = ?", [message_id]).fetchone()
        if row is None:
            raise NotFound(f"No outbox message {message_id}")
        if row[0] != "sending":
            raise ValidationError(f"Outbox message {message_id} is {row[0]}, not being sent; it was not changed")
        status = "sent" if sent else ("gave_up" if row[1] >= max_attempts else "failed")
        conn.execute("UPDATE outbox SET status = ?, sent_at = ?, provider_id = ?, provider_response = ?, "
                     "last_error = ? WHERE id = ?",
                     [status, _stamp(now) if sent else None, provider_id,
                      None if provider_response is None else provider_response[:2000],
                      None if error is None else error[:2000], message_id])
    return status


def cancel_messages(db: Database, message_ids: Iterable[int], *, reason: str) -> int:
    """Cancel planned or failed messages (the slot was done, closed, or messages were stopped)."""
    ids = [int(i) for i in message_ids]
    if not ids:
        return 0
    with _write(db, bump=False) as conn:
        return conn.execute(f"UPDATE outbox SET status = 'cancelled', last_error = ? WHERE status IN ('planned', "
                            f"'failed') AND id IN ({', '.join('?' * len(ids))})", [reason, *ids]).rowcount


def give_up_interrupted(db: Database, *, claimed_before: datetime) -> int:
    """Messages left ``sending`` by a run that died (claimed before ``claimed_before``) become ``gave_up``:
    the transport may or may not have sent them, and a message is never sent twice, so staff decide."""
    with _write(db, bump=False) as conn:
        return conn.execute("UPDATE outbox SET status = 'gave_up', last_error = 'the run sending it was interrupted: "
                            "it may or may not have been sent; check before contacting the patient again' "
                            "WHERE status = 'sending' AND claimed_at < ?", [_stamp(claimed_before)]).rowcount


def load_outbox(db: Database, *, status: str | Sequence[str] | None = None, patient_id: str | None = None,
                step: str | None = None, since: datetime | None = None, limit: int | None = None) -> pd.DataFrame:
    """Outbox messages, newest first: :data:`OUTBOX_COLUMNS` (``due_on`` a day, the times UTC)."""
    where, params = _patient_filter(patient_id)
    statuses = [status] if isinstance(status, str) else list(status or ())
    if bad := [s for s in statuses if s not in OUTBOX_STATUSES]:
        raise ValidationError(f"Unknown outbox status {bad[0]!r}; use one of {', '.join(OUTBOX_STATUSES)}")
    if statuses:
        where += f" AND o.status IN ({', '.join('?' * len(statuses))})"
        params += statuses
    if step is not None:
        where += " AND o.step = ?"
        params.append(step)
    if since is not None:
        where += " AND o.planned_at >= ?"
        params.append(_stamp(since))
    tail = " ORDER BY o.id DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
    return _frame(db, "SELECT o.id AS message_id, p.patient_id, o.series_ref AS series_id, o.slot, o.due_on, o.step, "
                      "o.channel, o.recipient, o.status, o.attempts, o.last_error, o.provider_id, "
                      "o.provider_response, o.planned_at, o.planned_by, o.claimed_at, o.claimed_by, o.sent_at "
                      "FROM outbox o LEFT JOIN patients p ON p.id = o.patient_ref WHERE 1" + where + tail, params,
                  dates=["due_on"], ints=["message_id", "series_id", "attempts"],
                  stamps=["planned_at", "claimed_at", "sent_at"])


def load_sent_steps(db: Database, patient_id: str | None = None) -> pd.DataFrame:
    """Per patient (or only ``patient_id``), series and slot: when the invitation and the reminder were sent
    (NaT: not sent). Columns ``patient_id, series_id, slot, invitation_sent, reminder_sent`` (UTC)."""
    where, params = _patient_filter(patient_id)
    return _frame(db, "SELECT p.patient_id, o.series_ref AS series_id, o.slot, "
                      "max(CASE WHEN o.step = 'invitation' THEN o.sent_at END) AS invitation_sent, "
                      "max(CASE WHEN o.step = 'reminder' THEN o.sent_at END) AS reminder_sent "
                      "FROM outbox o JOIN patients p ON p.id = o.patient_ref "
                      "WHERE o.status = 'sent' AND o.step <> 'test'" + where +
                      " GROUP BY o.patient_ref, o.series_ref, o.slot", params,
                  ints=["series_id"], stamps=["invitation_sent", "reminder_sent"])


# One-tap links ------------------------------------------------------------------------------------------

LINK_COLUMNS = ("link_id", "purpose", "patient_id", "series_id", "slot", "message_id", "expires_at", "created_at",
                "created_by", "used_at", "spent_at", "revoked_at", "revoked_by")


def add_link(db: Database, *, token_hash: str, purpose: str, patient_id: str, expires_at: datetime, by: str,
             now: datetime, series_id: int | None = None, slot: str | None = None,
             message_id: int | None = None) -> int:
    """Store a link by the hash of its token (the token itself is never stored); returns its id."""
    if purpose not in LINK_PURPOSES:
        raise ValidationError(f"Unknown link purpose {purpose!r}; use one of {', '.join(LINK_PURPOSES)}")
    with _write(db, bump=False) as conn:
        return _insert(conn, "checkin_links", {
            "token_hash": token_hash, "purpose": purpose, "patient_ref": _patient_ref(conn, patient_id),
            "series_ref": series_id, "slot": slot, "outbox_ref": message_id, "expires_at": _stamp(expires_at),
            "created_at": _stamp(now), "created_by": by})


def use_link(db: Database, token_hash: str, *, purpose: str, now: datetime, single_use: bool = True,
             browser: str | None = None) -> dict[str, Any] | None:
    """Use the link with this token hash: returns ``{link_id, patient_id, series_id, slot, expires_at,
    reopened}`` and marks it used, in one transaction; None when there is no such link for ``purpose``, or
    it is revoked or expired, or (``single_use``) it cannot be used again. The caller cannot tell which, by
    design.

    A single-use (check-in) link is bound to the ``browser`` (a digest) that first opens it: until the
    check-in is sent through it (:func:`spend_link`), the same browser may open it again (a reload, a phone
    that discarded the tab) and ``reopened`` is True; any other browser, or any use after the check-in was
    sent, gets None.
    """
    stamp = _stamp(now)
    with _write(db, bump=False) as conn:
        row = conn.execute("SELECT l.id, p.patient_id, l.series_ref, l.slot, l.expires_at, l.used_at, l.revoked_at, "
                           "l.browser, l.spent_at FROM checkin_links l JOIN patients p ON p.id = l.patient_ref "
                           "WHERE l.token_hash = ? AND l.purpose = ?", [token_hash, purpose]).fetchone()
        if row is None or row[6] is not None or row[4] <= stamp:
            return None
        reopened = row[5] is not None
        if single_use and reopened and (row[8] is not None or browser is None or row[7] != browser):
            return None
        conn.execute("UPDATE checkin_links SET used_at = coalesce(used_at, ?), browser = coalesce(browser, ?) "
                     "WHERE id = ?", [stamp, browser if single_use else None, row[0]])
    return {"link_id": row[0], "patient_id": row[1], "series_id": row[2], "slot": row[3],
            "expires_at": datetime.fromisoformat(row[4]), "reopened": reopened}


def spend_link(db: Database, link_id: int, *, now: datetime) -> None:
    """Record that the check-in was sent through this link: it cannot be opened again, from any browser.
    Its unsent answers (:func:`save_link_draft`) are deleted."""
    with _write(db, bump=False) as conn:
        conn.execute("UPDATE checkin_links SET spent_at = coalesce(spent_at, ?) WHERE id = ?", [_stamp(now), link_id])
        conn.execute("DELETE FROM link_drafts WHERE link_ref = ?", [link_id])


def save_link_draft(db: Database, link_id: int, *, answers: Mapping[str, Any], now: datetime) -> None:
    """Upsert the unsent answers of a check-in opened with a link (one draft per link), so that reopening
    the link in the same browser brings them back. Not a data change (no ``data_version`` bump)."""
    with _write(db, bump=False) as conn:
        conn.execute("INSERT INTO link_drafts (link_ref, answers, saved_at) VALUES (?, ?, ?) ON CONFLICT (link_ref) "
                     "DO UPDATE SET answers = excluded.answers, saved_at = excluded.saved_at",
                     [link_id, _JSON(dict(answers)), _stamp(now)])


def load_link_draft(db: Database, link_id: int) -> tuple[dict[str, Any], datetime] | None:
    """``(answers, saved_at)`` of the link's draft, or None."""
    row = db.conn.execute("SELECT answers, saved_at FROM link_drafts WHERE link_ref = ?", [link_id]).fetchone()
    return None if row is None else (json.loads(row[0]), datetime.fromisoformat(row[1]))


def delete_link_draft(db: Database, link_id: int) -> bool:
    """Delete the link's draft; True when there was one."""
    with _write(db, bump=False) as conn:
        return bool(conn.execute("DELETE FROM link_drafts WHERE link_ref = ?", [link_id]).rowcount)


def revoke_links(db: Database, patient_id: str, *, by: str, now: datetime, link_id: int | None = None) -> int:
    """Revoke the patient's unexpired links (or only ``link_id``), used ones too: a used check-in link is a
    check-in session still open, which revoking ends; returns how many were revoked."""
    stamp = _stamp(now)
    with _write(db, bump=False) as conn:
        ref = _patient_ref(conn, patient_id)
        extra, params = ("", []) if link_id is None else (" AND id = ?", [int(link_id)])
        return conn.execute("UPDATE checkin_links SET revoked_at = ?, revoked_by = ? WHERE patient_ref = ? "
                            "AND revoked_at IS NULL AND expires_at > ?" + extra,
                            [stamp, by, ref, stamp, *params]).rowcount


def load_links(db: Database, patient_id: str | None = None) -> pd.DataFrame:
    """Links, newest first: :data:`LINK_COLUMNS` (never the token or its hash)."""
    where, params = _patient_filter(patient_id)
    return _frame(db, "SELECT l.id AS link_id, l.purpose, p.patient_id, l.series_ref AS series_id, l.slot, "
                      "l.outbox_ref AS message_id, l.expires_at, l.created_at, l.created_by, l.used_at, l.spent_at, l.revoked_at, "
                      "l.revoked_by FROM checkin_links l JOIN patients p ON p.id = l.patient_ref WHERE 1" + where +
                      " ORDER BY l.id DESC", params, ints=["link_id", "series_id", "message_id"],
                  stamps=["expires_at", "created_at", "used_at", "spent_at", "revoked_at"])


# Call outcomes ------------------------------------------------------------------------------------------

CALL_COLUMNS = ("call_id", "patient_id", "series_id", "slot", "due_on", "outcome", "note", "recorded_at",
                "recorded_by")


def add_call_outcome(db: Database, patient_id: str, *, series_id: int, slot: str, due_on: date, outcome: Any,
                     note: Any = None, by: str, now: datetime) -> int:
    """Record the outcome of a follow-up call (append-only); returns its id."""
    f = _Fields(None)
    outcome = f.choice("outcome", outcome, CALL_OUTCOMES, required=True)
    note = f.text("note", note, max_len=500)
    who = _who(f.problems, by, "by")
    _raise_if(f.problems, f"Cannot record the call to {patient_id}")
    with _write(db) as conn:
        ref = _patient_ref(conn, patient_id)
        owner = conn.execute("SELECT patient_ref FROM series WHERE id = ?", [int(series_id)]).fetchone()
        if owner is None or owner[0] != ref:
            raise NotFound(f"Series {series_id} is not a series of {patient_id}")
        return _insert(conn, "call_outcomes", {"patient_ref": ref, "series_ref": int(series_id), "slot": slot,
                                               "due_on": due_on, "outcome": outcome, "note": note,
                                               "recorded_at": _stamp(now), "recorded_by": who})


def load_call_outcomes(db: Database, patient_id: str | None = None) -> pd.DataFrame:
    """Call outcomes, oldest first: :data:`CALL_COLUMNS`."""
    where, params = _patient_filter(patient_id)
    return _frame(db, "SELECT c.id AS call_id, p.patient_id, c.series_ref AS series_id, c.slot, c.due_on, c.outcome, "
                      "c.note, c.recorded_at, c.recorded_by FROM call_outcomes c JOIN patients p ON p.id = c.patient_ref "
                      "WHERE 1" + where + " ORDER BY c.id", params, dates=["due_on"], ints=["call_id", "series_id"],
                  stamps=["recorded_at"])


# Reminder runs ------------------------------------------------------------------------------------------

RUN_COLUMNS = ("run_id", "started_at", "finished_at", "as_of", "dry_run", "planned", "sent", "failed", "outcome",
               "error")


def start_run(db: Database, *, as_of: date, dry_run: bool, now: datetime) -> int:
    """Record that a reminder run started; returns its id."""
    with _write(db, bump=False) as conn:
        return _insert(conn, "remind_runs", {"started_at": _stamp(now), "as_of": as_of, "dry_run": int(dry_run)})


def finish_run(db: Database, run_id: int, *, now: datetime, planned: int, sent: int, failed: int, outcome: str,
               error: str | None = None) -> None:
    """Record how a reminder run ended (``ok``, ``failures``, ``error`` or ``quiet_hours``)."""
    with _write(db, bump=False) as conn:
        conn.execute("UPDATE remind_runs SET finished_at = ?, planned = ?, sent = ?, failed = ?, outcome = ?, "
                     "error = ? WHERE id = ?", [_stamp(now), planned, sent, failed, outcome,
                                                None if error is None else error[:2000], run_id])


def load_runs(db: Database, *, limit: int = 50) -> pd.DataFrame:
    """Reminder runs, newest first: :data:`RUN_COLUMNS`."""
    return _frame(db, "SELECT id AS run_id, started_at, finished_at, as_of, dry_run, planned, sent, failed, outcome, "
                      f"error FROM remind_runs ORDER BY id DESC LIMIT {int(limit)}", dates=["as_of"],
                  ints=["run_id", "planned", "sent", "failed"], stamps=["started_at", "finished_at"]).astype(
                      {"dry_run": bool})
