"""Corrections, voids, cancellations and dispositions: the record's trail (docs/clinic-record.md).

No clinical row is ever deleted: a wrong record is corrected (a corrected assessment is a new row that
supersedes the old one) or voided, with who, when and why in the append-only ``record_changes``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..errors import DuplicateRecord, NotFound, ValidationError
from ..validation import (DOSE_RANGE, _Fields, _missing, _raise_if, _reason, _who, clean_adverse_event,
                          clean_infusion, clean_patient, clean_series)
from .connection import _write
from .reads import _frame, _patient_filter
from .records import PLAN_AHEAD_DAYS, _check_series_start_free, _sync_given
from .rows import _insert, _now, _sql
from .schema import CORRECTABLE, DISPOSITIONS, RECORD_KINDS

_RECORD_TABLES = {"patient": "patients", "series": "series", "infusion": "infusions",
                  "adverse_event": "adverse_events", "assessment": "assessments"}
_RECORD_NAMES = {"patient": "patient", "series": "series", "infusion": "infusion",
                 "adverse_event": "adverse event", "assessment": "assessment"}
#: The patient a record belongs to (an SQL expression over the record's table, aliased r).
_OWNER = {"patient": "r.id", "series": "r.patient_ref", "assessment": "r.patient_ref",
          "infusion": "(SELECT patient_ref FROM series WHERE id = r.series_ref)",
          "adverse_event": "(SELECT s.patient_ref FROM infusions i JOIN series s ON s.id = i.series_ref "
                           "WHERE i.id = r.infusion_ref)"}


def _record_row(conn: sqlite3.Connection, record: str, record_id: Any) -> dict[str, Any]:
    """The record as a dict (every column, plus ``_patient_ref`` and ``_patient_id``); NotFound otherwise."""
    if record not in _RECORD_TABLES:
        raise ValidationError(f"record must be one of {', '.join(RECORD_KINDS)}, got {record!r}")
    key = "r.patient_id = ?" if record == "patient" else "r.id = ?"
    cursor = conn.execute(f"SELECT r.*, {_OWNER[record]} AS _patient_ref, (SELECT patient_id FROM patients "
                          f"WHERE id = {_OWNER[record]}) AS _patient_id FROM {_RECORD_TABLES[record]} r "
                          f"WHERE {key}", [record_id])
    row = cursor.fetchone()
    if row is None:
        raise NotFound(f"No {_RECORD_NAMES[record]} with id {record_id!r}; reload the patient's record")
    return dict(zip([d[0] for d in cursor.description], row))


def _log_change(conn: sqlite3.Connection, row: Mapping[str, Any], record: str, action: str,
                before: Mapping[str, Any], after: Mapping[str, Any], reason: str, who: str) -> None:
    _insert(conn, "record_changes", {
        "at": _now(), "actor": who, "patient_ref": row["_patient_ref"], "record": record, "record_id": row["id"],
        "action": action, "before": {k: _sql(v) for k, v in before.items()},
        "after": {k: _sql(v) for k, v in after.items()}, "reason": reason})


def correct_record(db: Database, record: str, record_id: int | str, *, changes: Mapping[str, Any], reason: str,
                   by: str, today: date | None = None, unchanged_ok: bool = False) -> tuple[str, int]:
    """Correct fields of a record, keeping the old values in the trail with who, when and why.

    Parameters
    ----------
    record
        One of :data:`RECORD_KINDS`; ``record_id`` is the patient ID for ``patient``, else the row's id
        (``series_id``, ``infusion_id``, ``event_id``, ``assessment_id``).
    changes
        ``{field: new value}`` for fields of :data:`CORRECTABLE`; an empty value clears an optional field.
        An assessment's ``t_score`` and ``se`` can be corrected only when it was imported as a T-score (a
        scored questionnaire's T comes from its answers: void it and enter it again). For a series planned
        day by day, ``first_infusion``, ``last_infusion`` and ``infusions`` correct its plan.
    unchanged_ok
        Nothing changed is not an error (the caller changed something else in the same transaction).

    Returns
    -------
    (patient_id, record_id)
        The record's patient and its id after the correction: a corrected assessment is a new row that
        supersedes the old one, which is kept.

    Raises
    ------
    ValidationError
        No reason, an unknown field, nothing changed, an invalid value (every problem listed).
    NotFound, DuplicateRecord
    """
    problems: list[str] = []
    who, why = _who(problems, by, "by"), _reason(problems, reason)
    allowed = CORRECTABLE.get(record, ())
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        problems.append(f"{', '.join(unknown)} cannot be corrected on a {_RECORD_NAMES.get(record, record)}; "
                        f"correctable: {', '.join(allowed)}")
    what = f"Cannot correct the {_RECORD_NAMES.get(record, record)}"
    _raise_if(problems, what)
    with _write(db) as conn:
        row = _record_row(conn, record, record_id)
        if row.get("voided_at") or (record == "assessment" and row["superseded_by"] is not None):
            _raise_if([f"this {_RECORD_NAMES[record]} was voided or replaced; correct the current record"], what)
        current = {k: row[k] for k in allowed}
        if record == "series" and row["by_day"]:
            current.update(first_infusion=row["planned_first"], last_infusion=row["planned_last"],
                           infusions=row["planned_infusions"])
        values, problems = _clean_record(conn, record, row, {**current, **changes}, today)
        changed = {k: values[k] for k in allowed if _sql(values[k]) != _sql(current[k])}
        if not problems and not changed:
            if unchanged_ok:
                return str(row["_patient_id"]), record_id
            problems.append("nothing was changed: every value is the same as stored")
        if record == "assessment" and row["method"] != "imported" and {"t_score", "se"} & set(changed):
            problems.append("the T-score of a scored questionnaire comes from its answers: void this assessment "
                            "and enter the questionnaire again")
        _raise_if(problems, what)
        before = {k: current[k] for k in changed}
        new_id = _apply_correction(conn, record, row, changed, who)
        _log_change(conn, row, record, "correct", before, changed, why, who)
        return str(row["_patient_id"]), new_id


def _clean_record(conn: sqlite3.Connection, record: str, row: Mapping[str, Any], merged: dict[str, Any],
                  today: date | None) -> tuple[dict[str, Any], list[str]]:
    """The merged record checked by the same rules as a new one."""
    if record == "patient":
        return clean_patient(patient_id=row["patient_id"], today=today, **merged)
    if record == "series":
        if not row["by_day"]:
            values, problems = clean_series(today=today, **merged)
        else:
            f = _Fields(today)
            values = {"first_infusion": f.day("first_infusion", merged["first_infusion"], required=True,
                                              future_days=PLAN_AHEAD_DAYS),
                      "last_infusion": f.day("last_infusion", merged["last_infusion"], required=True,
                                             future_days=PLAN_AHEAD_DAYS + 366),
                      "infusions": f.number("infusions", merged["infusions"], 1, 60, integer=True, required=True),
                      "protocol": f.text("protocol", merged["protocol"], max_len=200),
                      "dose_mg_per_kg": f.number("dose_mg_per_kg", merged["dose_mg_per_kg"], *DOSE_RANGE,
                                                 unit=" mg/kg"),
                      "notes": f.text("notes", merged["notes"])}
            problems = f.problems
            if values["first_infusion"] and values["last_infusion"] and values["last_infusion"] < values["first_infusion"]:
                problems.append("last_infusion is before first_infusion; correct the dates")
        if values["first_infusion"] and not problems:
            try:
                _check_series_start_free(conn, row["patient_ref"], values["first_infusion"], row["_patient_id"],
                                         row["id"])
            except DuplicateRecord as exc:
                problems.append(str(exc))
        return values, problems
    if record == "infusion":
        values, problems = clean_infusion(today=today, **merged)
        series = conn.execute("SELECT first_infusion, last_infusion, by_day, planned_first FROM series "
                              "WHERE id = ?", [row["series_ref"]]).fetchone()
        day = values["infused_on"]
        if day and not series[2] and not series[0] <= day.isoformat() <= series[1]:
            problems.append(f"infused_on {day} is outside the series ({series[0]} to {series[1]}); correct "
                            "the series first")
        if day and conn.execute("SELECT 1 FROM infusions WHERE series_ref = ? AND infused_on = ? AND id <> ? "
                                "AND voided_at IS NULL", [row["series_ref"], day.isoformat(), row["id"]]).fetchone():
            problems.append(f"the series already has an infusion on {day}")
        return values, problems
    if record == "adverse_event":
        return clean_adverse_event(**merged)
    f = _Fields(today)  # assessment
    values = {"assessed_on": f.day("assessed_on", merged["assessed_on"], required=True),
              "t_score": f.number("t_score", merged["t_score"], 0, 100, required=True),
              "se": f.number("se", merged["se"], 0, 50, above=True)}
    if values["assessed_on"] and values["assessed_on"].isoformat() != row["assessed_on"] and conn.execute(
            "SELECT 1 FROM assessments WHERE patient_ref = ? AND domain = ? AND assessed_on = ? AND "
            "superseded_by IS NULL", [row["patient_ref"], row["domain"], values["assessed_on"].isoformat()]
            ).fetchone():
        f.fail(f"the patient already has a {row['domain']} score on {values['assessed_on']}; void one of them "
               "first")
    return values, f.problems


def _apply_correction(conn: sqlite3.Connection, record: str, row: Mapping[str, Any], changed: Mapping[str, Any],
                      who: str) -> int:
    if record == "assessment":
        copy = {k: v for k, v in row.items() if not k.startswith("_") and k not in
                ("id", "superseded_by", "entered_by", "entered_at", "voided_at", "voided_by", "void_reason")}
        conn.execute("UPDATE assessments SET superseded_by = id WHERE id = ?", [row["id"]])
        new = _insert(conn, "assessments", {**copy, **changed, "entered_by": who, "entered_at": _now()})
        conn.execute("UPDATE assessments SET superseded_by = ? WHERE id = ?", [new, row["id"]])
        return new
    columns = dict(changed)
    if record == "series" and row["by_day"]:
        columns = {{"first_infusion": "planned_first", "last_infusion": "planned_last",
                    "infusions": "planned_infusions"}.get(k, k): v for k, v in changed.items()}
    if columns:
        key = "id"
        conn.execute(f"UPDATE {_RECORD_TABLES[record]} SET {', '.join(c + ' = ?' for c in columns)} "
                     f"WHERE {key} = ?", [*(_sql(v) for v in columns.values()), row["id"]])
    if record == "series" and row["by_day"]:
        _sync_given(conn, row["id"])
    elif record == "infusion":
        series = conn.execute("SELECT by_day FROM series WHERE id = ?", [row["series_ref"]]).fetchone()
        if series[0]:
            _sync_given(conn, row["series_ref"])
    return int(row["id"])


def void_record(db: Database, record: str, record_id: int, *, reason: str, by: str) -> str:
    """Void a series, infusion, adverse event or assessment entered in error; returns its patient ID.

    The record stays, marked voided with who, when and why, and leaves every analysis and export; a
    voided series takes its infusions with it, and a voided assessment frees its day for a new entry.
    A patient cannot be voided (record a disposition instead).

    Raises
    ------
    ValidationError (no reason, already voided or replaced), NotFound
    """
    problems: list[str] = []
    who, why = _who(problems, by, "by"), _reason(problems, reason)
    if record == "patient":
        problems.append("a patient cannot be voided: correct the demographics, or record a disposition "
                        "(withdrawn, discharged...)")
    what = f"Cannot void the {_RECORD_NAMES.get(record, record)}"
    _raise_if(problems, what)
    with _write(db) as conn:
        row = _record_row(conn, record, record_id)
        if row["voided_at"]:
            _raise_if([f"it was already voided by {row['voided_by']} at {row['voided_at'][:16].replace('T', ' ')} "
                       "UTC"], what)
        if record == "assessment" and row["superseded_by"] is not None:
            _raise_if(["it was replaced by a later entry; void the current one"], what)
        at = _now()
        extra = ", superseded_by = id" if record == "assessment" else ""
        conn.execute(f"UPDATE {_RECORD_TABLES[record]} SET voided_at = ?, voided_by = ?, void_reason = ?{extra} "
                     "WHERE id = ?", [at, who, why, row["id"]])
        if record == "infusion" and conn.execute("SELECT by_day FROM series WHERE id = ?",
                                                 [row["series_ref"]]).fetchone()[0]:
            _sync_given(conn, row["series_ref"])
        _log_change(conn, row, record, "void", {"voided": False}, {"voided": True}, why, who)
        return str(row["_patient_id"])


def cancel_series(db: Database, series_id: int, *, reason: str, by: str) -> str:
    """Cancel a planned series before any infusion is given; returns its patient ID.

    Raises
    ------
    ValidationError (no reason; infusions already given: correct the planned number or void them), NotFound
    """
    problems: list[str] = []
    who, why = _who(problems, by, "by"), _reason(problems, reason)
    _raise_if(problems, f"Cannot cancel series {series_id}")
    with _write(db) as conn:
        row = _record_row(conn, "series", series_id)
        if row["state"] != "planned" or row["voided_at"]:
            state = "voided" if row["voided_at"] else {"given": "has infusions given", "cancelled":
                                                       "is already cancelled"}[row["state"]]
            _raise_if([f"only a planned series with no infusion given can be cancelled; this one {state}"
                       + ("; correct its planned number of infusions instead" if row["state"] == "given" else "")],
                      f"Cannot cancel series {series_id}")
        conn.execute("UPDATE series SET state = 'cancelled', cancel_reason = ? WHERE id = ?", [why, series_id])
        _log_change(conn, row, "series", "cancel", {"state": "planned"}, {"state": "cancelled"}, why, who)
        return str(row["_patient_id"])


def set_disposition(db: Database, patient_id: str, *, disposition: str, on: date | str,
                    reason: str | None = None, by: str, today: date | None = None) -> None:
    """Record a patient's disposition (active, discharged, withdrawn, lost to follow-up, deceased).

    Dated (not in the future) and kept in the trail with who recorded it; ``reason`` is required for
    ``withdrawn`` and for a return to ``active``.
    """
    f = _Fields(today)
    values = {"disposition": f.choice("disposition", disposition, DISPOSITIONS, required=True),
              "disposition_on": f.day("disposition_on", on, required=True),
              "disposition_reason": f.text("reason", reason.strip() if isinstance(reason, str) else reason,
                                           max_len=500)}
    if values["disposition"] == "withdrawn" and not values["disposition_reason"] and not _missing(disposition):
        f.fail("reason is required for a withdrawal (for example 'moved away', 'no benefit', 'side effects')")
    who = _who(f.problems, by, "by")
    what = f"Cannot record the disposition of patient {patient_id!r}"
    _raise_if(f.problems, what)
    with _write(db) as conn:
        row = _record_row(conn, "patient", str(patient_id).strip())
        if values["disposition"] == "active" and row["disposition"] != "active" and not values["disposition_reason"]:
            _raise_if(["reason is required to make the patient active again"], what)
        if row["disposition"] == values["disposition"] == "active":
            _raise_if(["the patient is already active"], what)
        before = {k: row[k] for k in values}
        conn.execute("UPDATE patients SET disposition = ?, disposition_on = ?, disposition_reason = ?, "
                     "disposition_by = ? WHERE id = ?", [*(_sql(v) for v in values.values()), who, row["id"]])
        _log_change(conn, row, "patient", "disposition", before, values,
                    values["disposition_reason"] or values["disposition"].replace("_", " "), who)


def record_owner(db: Database, record: str, record_id: Any) -> str | None:
    """The patient ID a record belongs to, or None when there is no such record."""
    try:
        return str(_record_row(db.conn, record, record_id)["_patient_id"])
    except NotFound:
        return None


CHANGE_COLUMNS = ("change_id", "at", "actor", "patient_id", "record", "record_id", "action", "before", "after",
                  "reason")


def load_record_changes(db: Database, patient_id: str | None = None, *, record: str | None = None,
                        record_id: int | None = None) -> pd.DataFrame:
    """The trail of corrections, voids, cancellations and dispositions, oldest first.

    Columns :data:`CHANGE_COLUMNS`; ``before`` and ``after`` are dicts of the changed fields.
    """
    where, params = _patient_filter(patient_id)
    if record is not None:
        where += " AND c.record = ?"
        params.append(record)
    if record_id is not None:
        where += " AND c.record_id = ?"
        params.append(int(record_id))
    df = _frame(db, "SELECT c.id AS change_id, c.at, c.actor, p.patient_id, c.record, c.record_id, c.action, "
                    "c.before, c.after, c.reason FROM record_changes c JOIN patients p ON p.id = c.patient_ref "
                    "WHERE 1" + where + " ORDER BY c.at, c.id", params, ints=["change_id", "record_id"],
                stamps=["at"])
    for c in ("before", "after"):
        df[c] = [json.loads(v) for v in df[c]]
    return df
