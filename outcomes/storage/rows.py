"""Row helpers every topic shares: timestamps, Python values as SQL values, one-row INSERT, patient lookup."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from ..errors import NotFound


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _sql(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return _JSON(dict(value))
    return value


def _insert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> int:
    # Table and column names are the storage package's constants; values are always bound.
    sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
    rowid = conn.execute(sql, [_sql(v) for v in row.values()]).lastrowid
    assert rowid is not None
    return rowid


def _patient_ref(conn: sqlite3.Connection, patient_id: str) -> int:
    row = conn.execute("SELECT id FROM patients WHERE patient_id = ?", [patient_id]).fetchone()
    if row is None:
        raise NotFound(f"No patient with ID {patient_id!r}; check the ID or add the patient first")
    return int(row[0])


_JSON_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _stamp(moment: datetime) -> str:
    """A timezone-aware moment as UTC ISO text, so stored timestamps sort and compare as text."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime such as datetime.now(UTC), got {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
