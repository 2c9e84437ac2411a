"""The audit log: append an entry, read entries back (triggers keep the table append-only)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd
from sqlite_utils import Database

from ..validation import _raise_if, _who
from .connection import _write
from .reads import _frame
from .rows import _insert, _now, _patient_ref


def append_audit(db: Database, *, actor: str, action: str, patient_id: str | None = None,
                 details: Mapping[str, Any] | None = None) -> int:
    """Append one entry to the audit log (which triggers keep append-only); returns its id.

    Does not bump ``data_version``: reading a page may be audited, and that must not empty the caches.
    """
    problems: list[str] = []
    actor = _who(problems, actor, "actor")
    if not isinstance(action, str) or not action.strip():
        problems.append(f"action must be non-empty text, got {action!r}")
    _raise_if(problems, "Cannot write the audit entry")
    with _write(db, bump=False) as conn:
        ref = None if patient_id is None else _patient_ref(conn, patient_id)
        row = {"at": _now(), "actor": actor, "action": action.strip(), "patient_ref": ref,
               "details": None if details is None else dict(details)}
        return _insert(conn, "audit_log", row)


AUDIT_COLUMNS = ("audit_id", "at", "actor", "action", "patient_id", "details")


def load_audit_log(db: Database, *, actor: str | None = None, patient_id: str | None = None,
                   action: str | None = None, date_from: date | None = None,
                   date_to: date | None = None) -> pd.DataFrame:
    """Audit entries, newest first, filtered by actor, patient, action and UTC day (both inclusive).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`AUDIT_COLUMNS`; ``at`` is UTC and ``details`` the JSON text (or None).
    """
    where, params = "", []
    for column, value in (("l.actor", actor), ("p.patient_id", patient_id), ("l.action", action)):
        if value is not None:
            where += f" AND {column} = ?"
            params.append(value)
    if date_from is not None:
        where += " AND l.at >= ?"
        params.append(date_from.isoformat())
    if date_to is not None:
        where += " AND l.at < date(?, '+1 day')"
        params.append(date_to.isoformat())
    return _frame(db, "SELECT l.id AS audit_id, l.at, l.actor, l.action, p.patient_id, l.details "
                      "FROM audit_log l LEFT JOIN patients p ON p.id = l.patient_ref WHERE 1" + where +
                      " ORDER BY l.at DESC, l.id DESC", params, ints=["audit_id"], stamps=["at"])
