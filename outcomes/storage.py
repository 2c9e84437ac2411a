"""SQLite storage: the only module in the package that contains SQL or knows table names.

Every connection runs WAL with a 30 s busy timeout and foreign keys on (docs/architecture.md). Every
write is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock before its first read, so two
writers queue behind the busy timeout instead of failing with "database is locked" when a deferred
transaction tries to upgrade its read snapshot. A rejected write raises before ``COMMIT`` and leaves
the database unchanged.

Integer surrogate keys (``patient_ref``, ``series_ref``...) stay inside this module; reads expose the
clinic's own ``patient_id``. Field rules live in :func:`clean_patient`, :func:`clean_series`,
:func:`clean_infusion` and :func:`clean_score`, shared by the write verbs and the CSV import.

Example
-------
>>> db = connect(":memory:")
>>> add_patient(db, patient_id="P001", sex="F", birth_year=1980, entered_by="dr.lee")
1
>>> load_patients(db)["patient_id"].tolist()
['P001']
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import numbers
import os
import random
import re
import secrets
import shutil
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .errors import DuplicateRecord, ImportRejected, NotFound, StorageUnavailable, ValidationError
from .settings import DOMAINS

SEXES = ("F", "M", "X")
METHODS = ("table", "pattern", "prorated", "imported")
SOURCES = ("patient", "clinician", "import")
EVENT_KINDS = ("dissociation", "nausea", "blood_pressure_rise", "hallucination", "other")
SEVERITIES = ("mild", "moderate", "severe")
ROLES = ("admin", "clinician", "qi", "patient")
DOSE_RANGE = (0.05, 2.0)  # mg/kg: sub-anaesthetic infusion doses; outside this is a typo (mg vs mg/kg)
FORM_KEY = re.compile(r"(pain_interference|depression|physical_function)_sf\w+_v\d+\.\d+", re.ASCII)
EARLIEST = date(1900, 1, 1)

_ISO = "GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'"


def _in(values: Iterable[str]) -> str:
    """An SQL list literal; only ever given this module's constants."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    f"""CREATE TABLE patients (
        id INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL UNIQUE CHECK (length(trim(patient_id)) > 0),
        diagnosis TEXT,
        sex TEXT CHECK (sex IN {_in(SEXES)}),
        birth_year INTEGER CHECK (birth_year BETWEEN 1900 AND 9999),
        enrolled_on TEXT CHECK (enrolled_on {_ISO}),
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL) STRICT""",
    f"""CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        first_infusion TEXT NOT NULL CHECK (first_infusion {_ISO}),
        last_infusion TEXT NOT NULL CHECK (last_infusion {_ISO}),
        infusions INTEGER NOT NULL CHECK (infusions >= 1),
        protocol TEXT,
        dose_mg_per_kg REAL CHECK (dose_mg_per_kg BETWEEN {DOSE_RANGE[0]} AND {DOSE_RANGE[1]}),
        notes TEXT,
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        UNIQUE (patient_ref, first_infusion),
        CHECK (last_infusion >= first_infusion)) STRICT""",
    f"""CREATE TABLE infusions (
        id INTEGER PRIMARY KEY,
        series_ref INTEGER NOT NULL REFERENCES series(id),
        infused_on TEXT NOT NULL CHECK (infused_on {_ISO}),
        dose_mg_per_kg REAL NOT NULL CHECK (dose_mg_per_kg BETWEEN {DOSE_RANGE[0]} AND {DOSE_RANGE[1]}),
        duration_min INTEGER NOT NULL CHECK (duration_min BETWEEN 1 AND 1440),
        notes TEXT,
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        UNIQUE (series_ref, infused_on)) STRICT""",
    # severity may be NULL ("not recorded") for bulk-loaded history; add_infusion requires it.
    f"""CREATE TABLE adverse_events (
        id INTEGER PRIMARY KEY,
        infusion_ref INTEGER NOT NULL REFERENCES infusions(id),
        kind TEXT NOT NULL CHECK (kind IN {_in(EVENT_KINDS)}),
        severity TEXT CHECK (severity IN {_in(SEVERITIES)}),
        notes TEXT) STRICT""",
    "CREATE INDEX adverse_events_by_infusion ON adverse_events (infusion_ref)",
    f"""CREATE TABLE assessments (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        assessed_on TEXT NOT NULL CHECK (assessed_on {_ISO}),
        domain TEXT NOT NULL CHECK (domain IN {_in(DOMAINS)}),
        form TEXT,
        responses TEXT CHECK (responses IS NULL OR json_type(responses) = 'object'),
        raw_score REAL,
        t_score REAL NOT NULL CHECK (t_score BETWEEN 0 AND 100),
        se REAL CHECK (se > 0),
        n_answered INTEGER CHECK (n_answered >= 0),
        method TEXT NOT NULL CHECK (method IN {_in(METHODS)}),
        source TEXT NOT NULL CHECK (source IN {_in(SOURCES)}),
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        superseded_by INTEGER REFERENCES assessments(id)) STRICT""",
    # At most one active row per patient, domain and day; superseded rows are kept for the record.
    """CREATE UNIQUE INDEX assessments_one_active ON assessments (patient_ref, domain, assessed_on)
        WHERE superseded_by IS NULL""",
    "CREATE INDEX assessments_by_patient ON assessments (patient_ref, domain, assessed_on)",
    "CREATE INDEX assessments_by_domain ON assessments (domain, assessed_on) WHERE superseded_by IS NULL",
    f"""CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role TEXT NOT NULL CHECK (role IN {_in(ROLES)}),
        password_hash TEXT,
        patient_ref INTEGER REFERENCES patients(id),
        email TEXT,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT,
        active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        created_at TEXT NOT NULL,
        CHECK (role <> 'patient' OR patient_ref IS NOT NULL)) STRICT""",
    "CREATE INDEX users_by_patient ON users (patient_ref)",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        patient_ref INTEGER REFERENCES patients(id),
        details TEXT CHECK (details IS NULL OR json_valid(details))) STRICT""",
    "CREATE INDEX audit_log_by_patient ON audit_log (patient_ref, at)",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be changed'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be deleted'); END""",
]

MIGRATIONS = Migrations("outcomes")


@MIGRATIONS(name="0001_initial_schema")
def _initial_schema(db: Database) -> None:
    for statement in _SCHEMA:
        db.execute(statement)
    # The secret keys later pseudonymisation (HMAC of patient IDs); it never leaves this database.
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('synthetic', '0'), ('data_version', '0'), ('secret', ?)",
        [secrets.token_hex(32)],
    )


# Connections and transactions --------------------------------------------------------------------


#: Database files hold identified data: readable and writable by the app's account only. SQLite gives the
#: -wal and -shm files the mode of the database file, so making that one 0600 covers all three.
PRIVATE_MODE = 0o600


def _create_owner_only(path: Path) -> None:
    """Create a missing database file empty with mode 0600 (SQLite would make it 0644 under umask 022).

    O_EXCL: when another connection creates it first, that one's file is kept. A missing folder or an
    unwritable one is left for SQLite to report (StorageUnavailable "cannot be opened").
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except OSError:
        pass


def _tighten(path: Path) -> None:
    """Take group and other permissions off the database and its -wal/-shm files (an existing install
    made before 0600, or a file copied in); a file owned by another account is left as it is."""
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, PRIVATE_MODE)
        except OSError:
            pass


def open_db(path: str | Path) -> Database:
    """Open a connection (no schema changes) with the project's PRAGMAs.

    Parameters
    ----------
    path
        Database file, or ``":memory:"``. Use one connection per thread or process.

    Returns
    -------
    sqlite_utils.Database
        With WAL (files only), ``busy_timeout=30000``, ``foreign_keys=ON`` and ``synchronous=NORMAL``.
    """
    memory = str(path) == ":memory:"
    if not memory:
        _create_owner_only(Path(path))
    try:
        db = Database(":memory:" if memory else Path(path), strict=True, execute_plugins=False)
    except sqlite3.DatabaseError as exc:
        _raise_unavailable(exc, None if memory else Path(path))
        raise
    conn = db.conn
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        # journal_mode is persistent; switching needs a lock, so only ask when the file is not WAL yet.
        # While another connection writes, the switch fails at once without SQLite's busy handler (racing
        # first connections to a new file hit this; docs/reliability.md bug 10), so retry as writers do.
        if not memory and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            _retry_while_locked(conn, "PRAGMA journal_mode = WAL", time.monotonic() + WRITE_WAIT_SECONDS)
        conn.execute("PRAGMA synchronous = NORMAL")  # safe in WAL: a power cut may lose the last commits only
    except sqlite3.DatabaseError as exc:
        db.close()
        _raise_unavailable(exc, None if memory else Path(path))
        raise
    return db


def migrate(db: Database) -> None:
    """Apply pending migrations; a no-op (and read-only) when the schema is current."""
    if not MIGRATIONS.pending(db):
        return
    # IMMEDIATE: two processes opening a new file queue here instead of both creating the tables.
    with _write(db, bump=False) as conn:
        MIGRATIONS.apply(db)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            [str(len(MIGRATIONS.applied(db)))],
        )


def connect(path: str | Path) -> Database:
    """Open (creating parent folders) and migrate the database at ``path``.

    A new database file is created readable by its owner only (0600), and an existing one that others
    can read is tightened to 0600, with its -wal and -shm files (docs/privacy.md, files at rest).
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = open_db(path)
    migrate(db)
    if str(path) != ":memory:":
        _tighten(Path(path))
    return db


@contextmanager
def _write(db: Database, *, bump: bool = True) -> Iterator[sqlite3.Connection]:
    """One write transaction; bumps ``data_version`` so UI caches keyed on it see the change."""
    conn = db.conn
    if conn.in_transaction:  # inside a caller's transaction: a savepoint, committed with theirs
        with db.atomic():
            yield conn
            if bump:
                _bump(conn)
        return
    queue = _write_queue(conn)
    deadline = time.monotonic() + WRITE_WAIT_SECONDS
    if queue is not None and not queue.acquire(timeout=WRITE_WAIT_SECONDS):
        _raise_unavailable(sqlite3.OperationalError("database is locked"))
    try:
        _retry_while_locked(conn, "BEGIN IMMEDIATE", deadline)
        yield conn
        if bump:
            _bump(conn)
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite may already have rolled back (disk full, I/O error)
                pass
        if isinstance(exc, sqlite3.DatabaseError):
            _raise_unavailable(exc, _file_of(conn))
        raise
    finally:
        if queue is not None:
            queue.release()


def _retry_while_locked(conn: sqlite3.Connection, statement: str, deadline: float) -> None:
    """Run ``statement`` (``BEGIN IMMEDIATE``, a journal-mode switch), trying again every 0.5-3 ms while
    the database is locked, until ``deadline`` or the busy timeout (then "database is locked").

    Not SQLite's busy handler: it backs off to 100 ms sleeps, so a writer that has waited long sleeps
    longest and keeps losing to newcomers. 16 processes x 500 check-ins left one waiting past 30 s
    (docs/reliability.md). With a short, even retry every waiting process has the same chance each time.
    In a ``:memory:`` or unshared database there is nobody to wait for.
    """
    busy_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])  # 30 s from open_db, unless changed
    deadline = min(deadline, time.monotonic() + busy_ms / 1000)
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0.0005, 0.003))
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")


#: How long a write waits for the database: the in-process queue, then the retries of BEGIN IMMEDIATE.
WRITE_WAIT_SECONDS = 30.0
_WRITE_QUEUES: dict[str, threading.RLock] = {}
_WRITE_QUEUES_GUARD = threading.Lock()


def _write_queue(conn: sqlite3.Connection) -> threading.RLock | None:
    """The lock that queues this process's writers to one database file (None for ``:memory:``).

    SQLite's busy handler polls with sleeps of up to 100 ms, so a writer that keeps losing the race can
    wait past the 30 s busy timeout while others get through: 16 threads x 500 check-ins saw a wait of
    32 s (docs/reliability.md). Threads of one process (the app's sessions) therefore wait here, woken
    as soon as the lock is free, and only one of them at a time contends for SQLite's lock with other
    processes.
    """
    path = _file_of(conn)
    if path is None:
        return None
    with _WRITE_QUEUES_GUARD:
        return _WRITE_QUEUES.setdefault(str(path), threading.RLock())


#: What SQLite says when the database cannot be written or reached, as the reason and the message users see.
_UNAVAILABLE = (
    ("database or disk is full", "disk_full",
     "The server's disk is full, so nothing from this action was stored. Ask the clinic's IT to free disk "
     "space, then try again."),
    ("readonly database", "read_only",
     "The database is read-only right now (its file or disk is write-protected), so nothing from this "
     "action was stored. Ask the clinic's IT to make it writable again, then try again."),
    ("database is locked", "busy",
     "The database was busy for too long (another long task was writing), so nothing from this action was "
     "stored. Try again in a minute."),
    ("disk i/o error", "unreachable",
     "The database could not be read or written (a disk error), so nothing from this action was stored. "
     "Ask the clinic's IT to check the server's disk, then try again."),
    ("unable to open database file", "unreachable",
     "The database file cannot be opened (missing, or its folder is not accessible), so nothing from this "
     "action was stored. Ask the clinic's IT to check the database path and its folder."),
    ("malformed", "corrupt",
     "The database file is damaged, so nothing from this action was stored. Ask the clinic's IT to restore "
     "the latest backup (docs/operations.md)."),
    ("file is not a database", "corrupt",
     "The database file is not an SQLite database or is damaged, so nothing from this action was stored. "
     "Ask the clinic's IT to check the database path or restore the latest backup (docs/operations.md)."),
)


#: Below this much free space, an I/O error is taken for a full disk: with no room for the 32 KiB
#: shared-memory file of a WAL database, SQLite says "disk I/O error", not "database or disk is full".
_LOW_SPACE = 1 << 20


def _file_of(conn: sqlite3.Connection) -> Path | None:
    try:
        name = conn.execute("PRAGMA database_list").fetchone()[2]
    except sqlite3.Error:
        return None
    return Path(name) if name else None


def _raise_unavailable(exc: sqlite3.DatabaseError, path: Path | None = None) -> None:
    """Raise the :class:`StorageUnavailable` an SQLite error means; return for others (constraints...)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return
    text = str(exc).lower()
    if "disk i/o error" in text and path is not None:
        try:
            if shutil.disk_usage(path.parent).free < _LOW_SPACE:
                text = "database or disk is full"
        except OSError:
            pass
    for fragment, reason, message in _UNAVAILABLE:
        if fragment in text:
            raise StorageUnavailable(f"{message} (SQLite: {exc})", reason=reason) from exc


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'data_version'")


class _Rollback(Exception):
    """Raised inside a transaction to undo it on purpose (dry runs)."""


# Field rules, shared by the write verbs and the CSV import -----------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


class _Fields:
    """Parses fields one by one and collects every problem instead of stopping at the first."""

    def __init__(self, today: date | None) -> None:
        self.today = today or date.today()
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def required(self, name: str, value: Any, required: bool) -> bool:
        """True when there is a value to parse; records a problem when a required one is missing."""
        if not _missing(value):
            return True
        if required:
            self.fail(f"{name} is required")
        return False

    def text(self, name: str, value: Any, *, required: bool = False, max_len: int = 2000) -> str | None:
        if not self.required(name, value, required):
            return None
        if not isinstance(value, str):
            return self.fail(f"{name} must be text, got {value!r}")
        if "\x00" in value:
            return self.fail(f"{name} contains a NUL character; remove it")
        if len(value) > max_len:
            return self.fail(f"{name} is {len(value)} characters long; shorten it to at most {max_len}")
        return value  # stored exactly as given: free text is the clinician's own words

    def identifier(self, name: str, value: Any) -> str | None:
        text = self.text(name, value.strip() if isinstance(value, str) else value, required=True, max_len=64)
        if text is not None and any(unicodedata.category(ch).startswith("C") for ch in text):
            return self.fail(f"{name} {text!r} contains a control or invisible character; retype it")
        return text

    def choice(self, name: str, value: Any, options: Sequence[str], *, required: bool = False) -> str | None:
        if not self.required(name, value, required):
            return None
        if isinstance(value, str) and value.strip() in options:
            return value.strip()
        return self.fail(f"{name} must be one of {', '.join(options)}, got {value!r}")

    def number(self, name: str, value: Any, low: float, high: float = math.inf, *, required: bool = False,
               integer: bool = False, above: bool = False, unit: str = "") -> Any:
        if not self.required(name, value, required):
            return None
        kind = "a whole number" if integer else "a number"
        if high == math.inf:
            span = f"above {low:g}" if above else f"of at least {low:g}"
        else:
            span = f"above {low:g} and at most {high:g}" if above else f"from {low:g} to {high:g}"
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            comma = "; use a decimal point, not a comma" if isinstance(value, str) and "," in value else ""
            return self.fail(f"{name} must be {kind} {span}{unit}, got {value!r}{comma}")
        ok = math.isfinite(number) and (not integer or number.is_integer())
        if not ok or number < low or number > high or (above and number == low):
            return self.fail(f"{name} must be {kind} {span}{unit}, got {value!r}")
        return int(number) if integer else number

    def day(self, name: str, value: Any, *, required: bool = False, future_days: int = 0) -> date | None:
        """A calendar day, at most ``future_days`` after today (0: not in the future)."""
        if not self.required(name, value, required):
            return None
        if isinstance(value, datetime):  # includes pandas.Timestamp; normalised to the day
            result = value.date()
        elif isinstance(value, date):
            result = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value.strip()):
            try:
                result = date.fromisoformat(value.strip())
            except ValueError:
                return self.fail(f"{name} {value.strip()} is not a real calendar date")
        else:
            return self.fail(f"{name} must be a date written YYYY-MM-DD (for example 2024-03-15), "
                             f"got {value!r}")
        if result > self.today + timedelta(days=future_days):
            if future_days:
                return self.fail(f"{name} {result} is more than {future_days} days ahead (today is "
                                 f"{self.today}); check the year")
            return self.fail(f"{name} {result} is in the future (today is {self.today})")
        if result < EARLIEST:
            return self.fail(f"{name} {result} is before {EARLIEST.year}; check the year")
        return result

    def birth_year(self, value: Any) -> int | None:
        if not self.required("birth_year", value, False):
            return None
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{4}", text):
            return self.fail(f"birth_year must be a four-digit year such as 1975, got {value!r}")
        year = int(text)
        if year > self.today.year:
            return self.fail(f"birth_year {year} is in the future")
        if year < EARLIEST.year:
            return self.fail(f"birth_year {year} is before {EARLIEST.year}; check the year")
        return year


def clean_patient(*, patient_id: Any, diagnosis: Any = None, sex: Any = None, birth_year: Any = None,
                  enrolled_on: Any = None, today: date | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one patient's fields.

    Returns
    -------
    (values, problems)
        Parsed values (``None`` where missing or invalid) and one message per problem, empty when valid.
    """
    f = _Fields(today)
    if not _missing(sex) and isinstance(sex, str) and sex.strip().upper() in SEXES:
        sex = sex.strip().upper()
    elif not _missing(sex):
        f.fail(f"unknown sex code {sex!r}: use F, M or X, or leave it empty")
        sex = None
    values = {
        "patient_id": f.identifier("patient_id", patient_id),
        "diagnosis": f.text("diagnosis", diagnosis, max_len=200),
        "sex": None if _missing(sex) else sex,
        "birth_year": f.birth_year(birth_year),
        "enrolled_on": f.day("enrolled_on", enrolled_on),
    }
    return values, f.problems


def clean_series(*, first_infusion: Any, last_infusion: Any, infusions: Any, protocol: Any = None,
                 dose_mg_per_kg: Any = None, notes: Any = None,
                 today: date | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one infusion series; see :func:`clean_patient` for the return value."""
    f = _Fields(today)
    values = {
        "first_infusion": f.day("first_infusion", first_infusion, required=True),
        "last_infusion": f.day("last_infusion", last_infusion, required=True),
        "infusions": f.number("infusions", infusions, 1, integer=True, required=True),
        "protocol": f.text("protocol", protocol, max_len=200),
        "dose_mg_per_kg": f.number("dose_mg_per_kg", dose_mg_per_kg, *DOSE_RANGE, unit=" mg/kg"),
        "notes": f.text("notes", notes),
    }
    first, last = values["first_infusion"], values["last_infusion"]
    if first and last and last < first:
        f.fail(f"last_infusion {last} is before first_infusion {first}; swap or correct the dates")
    return values, f.problems


def clean_infusion(*, infused_on: Any, dose_mg_per_kg: Any, duration_min: Any,
                   adverse_events: Iterable[Mapping[str, Any]] = (), notes: Any = None,
                   today: date | None = None, **vitals: Any) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one infusion, its vital signs and its adverse events.

    ``vitals`` are the optional :data:`VITALS` (blood pressure before and after, heart rate, RASS);
    each adverse event is ``{kind, severity, action=None, description=None, notes=None}`` (see
    :func:`clean_adverse_event`).
    """
    unknown = sorted(set(vitals) - set(VITALS))
    f = _Fields(today)
    if unknown:
        f.fail(f"unknown infusion field(s) {', '.join(unknown)}; vital signs are {', '.join(VITALS)}")
    events = []
    for i, event in enumerate(adverse_events, 1):
        if not isinstance(event, Mapping):
            f.fail(f"adverse event {i} must be a mapping with kind and severity, got {event!r}")
            continue
        cleaned, problems = clean_adverse_event(**{k: event.get(k) for k in _EVENT_FIELDS})
        f.problems += [f"adverse event {i}: {p}" for p in problems]
        events.append(cleaned)
    values = {
        "infused_on": f.day("infused_on", infused_on, required=True),
        "dose_mg_per_kg": f.number("dose_mg_per_kg", dose_mg_per_kg, *DOSE_RANGE, required=True,
                                   unit=" mg/kg"),
        "duration_min": f.number("duration_min", duration_min, 1, 1440, integer=True, required=True,
                                 unit=" minutes"),
        "notes": f.text("notes", notes),
        **_clean_vitals(f, {k: vitals.get(k) for k in VITALS}),
        "adverse_events": events,
    }
    return values, f.problems


#: Vital signs of an infusion, each optional: name -> (label, low, high, unit). Ranges reject typos, not
#: clinical extremes: ketamine raises blood pressure, and a hypertensive reading must still be recordable.
VITALS = {
    "bp_systolic_before": ("systolic blood pressure before", 50, 300, " mmHg"),
    "bp_diastolic_before": ("diastolic blood pressure before", 20, 200, " mmHg"),
    "bp_systolic_after": ("systolic blood pressure after", 50, 300, " mmHg"),
    "bp_diastolic_after": ("diastolic blood pressure after", 20, 200, " mmHg"),
    "heart_rate": ("heart rate", 20, 250, " beats per minute"),
    # Richmond Agitation-Sedation Scale (Sessler et al. 2002): -5 unarousable ... 0 alert and calm ... +4.
    "sedation_rass": ("sedation (RASS)", -5, 4, ""),
}


def _clean_vitals(f: _Fields, vitals: Mapping[str, Any]) -> dict[str, Any]:
    out = {name: f.number(name, vitals.get(name), low, high, integer=True, unit=unit)
           for name, (_, low, high, unit) in VITALS.items()}
    for when in ("before", "after"):
        systolic, diastolic = out[f"bp_systolic_{when}"], out[f"bp_diastolic_{when}"]
        given = [name for name in (f"bp_systolic_{when}", f"bp_diastolic_{when}") if not _missing(vitals.get(name))]
        if len(given) == 1:
            f.fail(f"blood pressure {when}: give both systolic and diastolic, or neither")
        elif systolic is not None and diastolic is not None and diastolic >= systolic:
            f.fail(f"blood pressure {when} {systolic}/{diastolic}: the diastolic value must be lower than the "
                   "systolic; check the order")
    return out


EVENT_ACTIONS = ("none", "slowed", "stopped", "medication")  # action taken for an adverse event
_EVENT_FIELDS = ("kind", "severity", "action", "description", "notes")


def clean_adverse_event(*, kind: Any, severity: Any, action: Any = None, description: Any = None,
                        notes: Any = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one adverse event: kind, severity, action taken, and a description for "other"."""
    f = _Fields(None)
    values = {"kind": f.choice("kind", kind, EVENT_KINDS, required=True),
              "severity": f.choice("severity", severity, SEVERITIES, required=True),
              "action": f.choice("action", action, EVENT_ACTIONS),
              "description": f.text("description", description.strip() if isinstance(description, str)
                                    else description, max_len=200),
              "notes": f.text("notes", notes)}
    if values["kind"] == "other" and _missing(description):
        f.fail('an adverse event of kind "other" needs a short description of what happened')
    return values, f.problems


def clean_score(*, domain: Any, assessed_on: Any, t_score: Any, se: Any = None, form: Any = None,
                responses: Any = None, raw_score: Any = None, n_answered: Any = None, method: Any,
                source: Any, today: date | None = None,
                known_forms: Collection[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one domain score.

    ``form`` must look like ``pain_interference_sf6a_v1.0`` and start with ``domain``; with
    ``known_forms`` it must also be one of them. It may be missing only when ``method`` is
    ``imported`` (a T-score copied from elsewhere). ``responses`` maps item IDs to whole numbers or
    ``None`` (skipped). See :func:`clean_patient` for the return value.
    """
    f = _Fields(today)
    values = {
        "domain": f.choice("domain", domain, DOMAINS, required=True),
        "assessed_on": f.day("assessed_on", assessed_on, required=True),
        "t_score": f.number("t_score", t_score, 0, 100, required=True),
        "se": f.number("se", se, 0, 50, above=True),
        "form": f.text("form", form.strip() if isinstance(form, str) else form, max_len=100),
        "responses": None,
        "raw_score": f.number("raw_score", raw_score, 0),
        "n_answered": f.number("n_answered", n_answered, 0, integer=True),
        "method": f.choice("method", method, METHODS, required=True),
        "source": f.choice("source", source, SOURCES, required=True),
    }
    key, dom = values["form"], values["domain"]
    if key is not None:
        if not FORM_KEY.fullmatch(key):
            f.fail(f"form {key!r} is not a form key such as pain_interference_sf6a_v1.0")
        elif dom and not key.startswith(dom + "_"):
            f.fail(f"form {key} does not belong to domain {dom}")
        elif known_forms is not None and key not in known_forms:
            f.fail(f"form {key} is not a known form; known forms: {', '.join(sorted(known_forms))}")
    elif values["method"] not in (None, "imported"):
        f.fail(f"form is required when method is {values['method']} (only imported T-scores may lack one)")
    if not _missing(responses) and responses != {}:
        values["responses"] = _clean_responses(f, responses, has_form=key is not None)
    return values, f.problems


def _clean_responses(f: _Fields, responses: Any, *, has_form: bool) -> dict[str, int | None] | None:
    if not isinstance(responses, Mapping):
        return f.fail(f"responses must map item IDs to values, got {type(responses).__name__}")
    if not has_form:
        f.fail("responses were given without the form they answer; add the form key")
    cleaned: dict[str, int | None] = {}
    for item, value in responses.items():
        if not isinstance(item, str) or not item.strip():
            f.fail(f"response item ID {item!r} must be non-empty text")
        elif _missing(value):
            cleaned[item] = None
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
            f.fail(f"response to {item} must be a whole number or empty, got {value!r}")
        else:
            cleaned[item] = int(value)
    return cleaned


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise ValidationError(f"{what}: nothing was saved. Fix the following and try again:", problems)


def _who(problems: list[str], value: Any, name: str = "entered_by") -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name} must name the person or process making the change, got {value!r}")
        return ""
    return value.strip()


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
    # Table and column names are this module's constants; values are always bound.
    sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
    rowid = conn.execute(sql, [_sql(v) for v in row.values()]).lastrowid
    assert rowid is not None
    return rowid


def _patient_ref(conn: sqlite3.Connection, patient_id: str) -> int:
    row = conn.execute("SELECT id FROM patients WHERE patient_id = ?", [patient_id]).fetchone()
    if row is None:
        raise NotFound(f"No patient with ID {patient_id!r}; check the ID or add the patient first")
    return int(row[0])


# Writes --------------------------------------------------------------------------------------------


def add_patient(db: Database, *, patient_id: str, diagnosis: str | None = None, sex: str | None = None,
                birth_year: int | str | None = None, enrolled_on: date | str | None = None,
                entered_by: str, today: date | None = None) -> int:
    """Enrol a patient.

    Returns
    -------
    int
        Internal row id.

    Raises
    ------
    ValidationError
        Listing every invalid field (unknown sex code, birth year not four digits or in the future...).
    DuplicateRecord
        When the patient ID is already enrolled.
    """
    values, problems = clean_patient(patient_id=patient_id, diagnosis=diagnosis, sex=sex,
                                     birth_year=birth_year, enrolled_on=enrolled_on, today=today)
    who = _who(problems, entered_by)
    _raise_if(problems, f"Cannot add patient {patient_id!r}")
    with _write(db) as conn:
        if conn.execute("SELECT 1 FROM patients WHERE patient_id = ?", [values["patient_id"]]).fetchone():
            raise DuplicateRecord(f"Patient ID {values['patient_id']!r} is already enrolled; "
                                  "use another ID or open the existing patient")
        return _insert(conn, "patients", {**values, "entered_by": who, "entered_at": _now()})


def add_series(db: Database, *, patient_id: str, first_infusion: date | str, last_infusion: date | str,
               infusions: int, protocol: str | None = None, dose_mg_per_kg: float | None = None,
               notes: str | None = None, entered_by: str, today: date | None = None) -> int:
    """Record an infusion series of an enrolled patient; returns its ``series_id``.

    Raises
    ------
    ValidationError
        Dates in the future, last infusion before first, fewer than one infusion, dose outside
        0.05–2.0 mg/kg.
    NotFound
        Unknown patient.
    DuplicateRecord
        The patient already has a series starting that day.
    """
    values, problems = clean_series(first_infusion=first_infusion, last_infusion=last_infusion,
                                    infusions=infusions, protocol=protocol, dose_mg_per_kg=dose_mg_per_kg,
                                    notes=notes, today=today)
    who = _who(problems, entered_by)
    _raise_if(problems, f"Cannot add the infusion series of patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, str(patient_id).strip())
        if conn.execute("SELECT 1 FROM series WHERE patient_ref = ? AND first_infusion = ?",
                        [ref, values["first_infusion"].isoformat()]).fetchone():
            raise DuplicateRecord(f"Patient {patient_id!r} already has a series starting "
                                  f"{values['first_infusion']}; edit that series instead")
        row = {"patient_ref": ref, **values, "entered_by": who, "entered_at": _now()}
        return _insert(conn, "series", row)


def plan_series(db: Database, *, patient_id: str, first_infusion: date | str, planned_infusions: int,
                planned_last: date | str | None = None, protocol: str | None = None,
                dose_mg_per_kg: float | None = None, notes: str | None = None, entered_by: str,
                today: date | None = None) -> int:
    """Plan a series whose infusions are then logged day by day as they are given; returns its id.

    The first infusion may be up to :data:`PLAN_AHEAD_DAYS` ahead. ``planned_last`` defaults to
    consecutive days (first + planned_infusions - 1). Until an infusion is logged the series is
    ``planned`` and no analysis counts it; afterwards its first and last infusion and count are those
    given (:func:`add_infusion` keeps them), and the plan stays in ``planned_first``, ``planned_last`` and
    ``planned_infusions``.

    Raises
    ------
    ValidationError, NotFound, DuplicateRecord
    """
    f = _Fields(today)
    first = f.day("first_infusion", first_infusion, required=True, future_days=PLAN_AHEAD_DAYS)
    count = f.number("planned_infusions", planned_infusions, 1, 60, integer=True, required=True)
    last = f.day("planned_last", planned_last, future_days=PLAN_AHEAD_DAYS + 366)
    if last is None and first is not None and count is not None and _missing(planned_last):
        last = first + timedelta(days=count - 1)
    if first and last and last < first:
        f.fail(f"planned_last {last} is before first_infusion {first}; correct the dates")
    values = {"first_infusion": first, "last_infusion": last, "infusions": count,
              "protocol": f.text("protocol", protocol, max_len=200),
              "dose_mg_per_kg": f.number("dose_mg_per_kg", dose_mg_per_kg, *DOSE_RANGE, unit=" mg/kg"),
              "notes": f.text("notes", notes)}
    who = _who(f.problems, entered_by)
    _raise_if(f.problems, f"Cannot plan the infusion series of patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, str(patient_id).strip())
        _check_series_start_free(conn, ref, first, patient_id)
        row = {"patient_ref": ref, **values, "planned_first": first, "planned_last": last,
               "planned_infusions": count, "by_day": 1, "state": "planned", "entered_by": who,
               "entered_at": _now()}
        return _insert(conn, "series", row)


#: How far ahead a series can be planned.
PLAN_AHEAD_DAYS = 366


def _check_series_start_free(conn: sqlite3.Connection, ref: int, first: date, patient_id: str,
                             series_id: int | None = None) -> None:
    clash = conn.execute("SELECT id FROM series WHERE patient_ref = ? AND first_infusion = ? AND id IS NOT ?",
                         [ref, first.isoformat(), series_id]).fetchone()
    if clash:
        raise DuplicateRecord(f"Patient {patient_id!r} already has a series starting {first}; "
                              "correct that series instead")


def add_infusion(db: Database, *, series_id: int, infused_on: date | str, dose_mg_per_kg: float,
                 duration_min: int, adverse_events: Iterable[Mapping[str, Any]] = (),
                 notes: str | None = None, entered_by: str, today: date | None = None, **vitals: Any) -> int:
    """Record one infusion of a series, with its vital signs and adverse events; returns the infusion id.

    ``adverse_events`` holds mappings ``{"kind", "severity", "action", "description", "notes"}`` (see
    :func:`clean_adverse_event`); ``vitals`` any of :data:`VITALS`. For a series recorded after the fact
    the date must fall inside it (first to last infusion); for a planned series (:func:`plan_series`) it
    must be on or after its first infusion and not in the future, and the series' given dates and count
    follow the infusions logged. A cancelled or voided series takes no infusion.
    """
    values, problems = clean_infusion(infused_on=infused_on, dose_mg_per_kg=dose_mg_per_kg,
                                      duration_min=duration_min, adverse_events=adverse_events, notes=notes,
                                      today=today, **vitals)
    who = _who(problems, entered_by)
    what = f"Cannot add the infusion to series {series_id}"
    _raise_if(problems, what)
    events = values.pop("adverse_events")
    with _write(db) as conn:
        series = conn.execute("SELECT first_infusion, last_infusion, by_day, state, voided_at, planned_first "
                              "FROM series WHERE id = ?", [series_id]).fetchone()
        if series is None:
            raise NotFound(f"No infusion series with id {series_id}; pick the series from the patient's list")
        first, last, by_day, state, voided, planned_first = series
        day = values["infused_on"].isoformat()
        if voided or state == "cancelled":
            _raise_if([f"the series was {'voided' if voided else 'cancelled'}; plan a new series instead"], what)
        if by_day and day < min(first, planned_first):
            _raise_if([f"infused_on {day} is before the series' first infusion ({min(first, planned_first)}); "
                       "correct the series' first infusion date first"], what)
        if not by_day and not first <= day <= last:
            _raise_if([f"infused_on {day} is outside the series ({first} to {last}); correct the date or "
                       "the series"], what)
        if conn.execute("SELECT 1 FROM infusions WHERE series_ref = ? AND infused_on = ? AND voided_at IS NULL",
                        [series_id, day]).fetchone():
            raise DuplicateRecord(f"Series {series_id} already has an infusion on {day}; correct that one "
                                  "instead")
        infusion = _insert(conn, "infusions",
                           {"series_ref": series_id, **values, "entered_by": who, "entered_at": _now()})
        for event in events:
            _insert(conn, "adverse_events", {"infusion_ref": infusion, **event})
        if by_day:
            _sync_given(conn, series_id)
        return infusion


def _sync_given(conn: sqlite3.Connection, series_id: int) -> None:
    """A day-by-day series' first and last infusion and count are those given (its plan when none is)."""
    first, last, given = conn.execute("SELECT min(infused_on), max(infused_on), count(*) FROM infusions "
                                      "WHERE series_ref = ? AND voided_at IS NULL", [series_id]).fetchone()
    if given:
        conn.execute("UPDATE series SET first_infusion = ?, last_infusion = ?, infusions = ?, state = 'given' "
                     "WHERE id = ?", [first, last, given, series_id])
    else:
        conn.execute("UPDATE series SET first_infusion = planned_first, last_infusion = planned_last, "
                     "infusions = planned_infusions, state = CASE state WHEN 'given' THEN 'planned' ELSE state "
                     "END WHERE id = ?", [series_id])


def _store_score(conn: sqlite3.Connection, ref: int, values: Mapping[str, Any], who: str,
                 at: str) -> tuple[int, bool]:
    """Insert an assessment, superseding the active one of the same patient, domain and day."""
    old = conn.execute("SELECT id FROM assessments WHERE patient_ref = ? AND domain = ? AND assessed_on = ? "
                       "AND superseded_by IS NULL", [ref, values["domain"], values["assessed_on"].isoformat()]
                       ).fetchone()
    if old:
        # The partial unique index is checked per statement: park the old row (a self-reference keeps
        # the foreign key valid) before the new one exists, then point it at the new row.
        conn.execute("UPDATE assessments SET superseded_by = id WHERE id = ?", [old[0]])
    new = _insert(conn, "assessments", {"patient_ref": ref, **values, "entered_by": who, "entered_at": at})
    if old:
        conn.execute("UPDATE assessments SET superseded_by = ? WHERE id = ?", [new, old[0]])
    return new, bool(old)


def save_assessment(db: Database, *, patient_id: str, assessed_on: date | str, domain: str, t_score: float,
                    se: float | None = None, form: str | None = None,
                    responses: Mapping[str, int | None] | None = None, raw_score: float | None = None,
                    n_answered: int | None = None, method: str, source: str, entered_by: str,
                    today: date | None = None) -> int:
    """Save one domain score; an active score of the same patient, domain and day is superseded.

    Returns
    -------
    int
        ``assessment_id`` of the new row.

    Raises
    ------
    ValidationError
        Any invalid field (T outside 0–100, date in the future, unknown domain or method...).
    NotFound
        Unknown patient.
    """
    return save_checkin(db, patient_id=patient_id, assessed_on=assessed_on, source=source,
                        entered_by=entered_by, today=today,
                        scores=[{"domain": domain, "t_score": t_score, "se": se, "form": form,
                                 "responses": responses, "raw_score": raw_score, "n_answered": n_answered,
                                 "method": method}])[0]


_SCORE_KEYS = frozenset({"domain", "t_score", "se", "form", "responses", "raw_score", "n_answered", "method"})


def save_checkin(db: Database, *, patient_id: str, assessed_on: date | str,
                 scores: Sequence[Mapping[str, Any]], source: str, entered_by: str,
                 today: date | None = None) -> list[int]:
    """Save the domain scores of one sitting atomically: all of them or none.

    Parameters
    ----------
    scores
        One mapping per domain with keys ``domain``, ``t_score``, ``method`` and optionally ``se``,
        ``form``, ``responses``, ``raw_score``, ``n_answered`` (as in :func:`save_assessment`).

    Returns
    -------
    list of int
        The new ``assessment_id`` of each score, in the order given.
    """
    problems: list[str] = []
    who = _who(problems, entered_by)
    cleaned = []
    if not scores:
        problems.append("a check-in needs at least one domain score")
    for i, score in enumerate(scores, 1):
        label = f"score {i} ({score.get('domain', '?')})" if len(scores) > 1 else "score"
        unknown = sorted(set(score) - _SCORE_KEYS)
        if unknown:
            problems.append(f"{label}: unknown field(s) {', '.join(unknown)}")
        values, errs = clean_score(assessed_on=assessed_on, source=source, today=today,
                                   **{k: score.get(k) for k in _SCORE_KEYS})
        # Fields shared by the sitting are reported once, not once per domain.
        problems += [e if len(scores) == 1 or e.startswith(("assessed_on", "source")) else f"{label}: {e}"
                     for e in errs]
        cleaned.append(values)
    domains = [v["domain"] for v in cleaned if v["domain"]]
    problems += [f"domain {d} appears more than once" for d in sorted(set(domains)) if domains.count(d) > 1]
    problems = list(dict.fromkeys(problems))
    _raise_if(problems, f"Cannot save the assessment of patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, str(patient_id).strip())
        at = _now()
        return [_store_score(conn, ref, values, who, at)[0] for values in cleaned]


def set_meta(db: Database, key: str, value: str) -> None:
    """Set a ``meta`` entry (``data_version`` is managed here and cannot be set)."""
    if key == "data_version":
        raise ValueError("data_version is bumped by every write and cannot be set")
    with _write(db) as conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, str(value)])


def get_meta(db: Database, key: str, default: str | None = None) -> str | None:
    """Read a ``meta`` entry (``synthetic``, ``secret``, ``schema_version``, ``data_version``...)."""
    row = db.conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return default if row is None else row[0]


def data_version(db: Database) -> int:
    """A counter bumped by every write: UI caches key on it."""
    return int(get_meta(db, "data_version", "0") or 0)


def is_synthetic(db: Database) -> bool:
    """Whether the database holds a generated demo cohort (never real patients)."""
    return get_meta(db, "synthetic") == "1"


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


# Import and bulk load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What an import added and what was already present (``scores_superseded`` are among the added)."""

    patients_added: int = 0
    patients_present: int = 0
    series_added: int = 0
    series_present: int = 0
    scores_added: int = 0
    scores_present: int = 0
    scores_superseded: int = 0
    dry_run: bool = False

    @property
    def added(self) -> int:
        return self.patients_added + self.series_added + self.scores_added

    @property
    def present(self) -> int:
        return self.patients_present + self.series_present + self.scores_present

    def describe(self) -> str:
        """One line for the CLI and the import page, e.g. ``0 added, 12 already present``."""
        verb = "would be added" if self.dry_run else "added"
        parts = [f"{k}: {getattr(self, k + '_added')} {verb}, {getattr(self, k + '_present')} already present"
                 for k in ("patients", "series", "scores")]
        if self.scores_superseded:
            parts.append(f"{self.scores_superseded} of the scores replace an earlier T-score")
        return f"{self.added} {verb}, {self.present} already present ({'; '.join(parts)})."

    __str__ = describe


def _file_rows(df: pd.DataFrame | None, kind: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(where, line, row) for each row; ``line`` counts the header as line 1, as a spreadsheet does."""
    if df is None:
        return
    source = df.attrs.get("source", f"{kind}.csv")
    lines = df["line"].tolist() if "line" in df.columns else range(2, len(df) + 2)
    for line, row in zip(lines, df.to_dict("records")):
        yield f"{source} line {line}", int(line), row


_PATIENT_FIELDS = ("patient_id", "diagnosis", "sex", "birth_year", "enrolled_on")
_SERIES_FIELDS = ("first_infusion", "last_infusion", "infusions", "protocol", "dose_mg_per_kg", "notes")
_IMPORTED_SCORE_FIELDS = ("domain", "assessed_on", "t_score", "se", "form")
# Item-level rows scored by the caller (the REDCap import) also carry these; without them: "imported".
_SCORED_FIELDS = ("responses", "raw_score", "n_answered")


def _plan(problems: list[str], rows: Iterable[tuple[str, int, dict[str, Any]]],
          clean: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]],
          key_of: Callable[[str, dict[str, Any], dict[str, Any]], tuple[Any, ...] | None],
          stored: Mapping[tuple[Any, ...], Mapping[str, Any]], label: Callable[[tuple[Any, ...]], str],
          *, supersede: bool = False, settled: Callable[[tuple[Any, ...], dict[str, Any]], bool] | None = None,
          ) -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], int, set[Any]]:
    """Check one file's rows against each other and the database.

    Returns the rows to add, how many are already present, and the keys seen. A row whose stored
    twin differs in a field the file gives is a conflict, unless ``supersede`` (scores). A row for which
    ``settled`` is true was stored once and later voided or corrected: it counts as present, so a
    re-import never undoes a documented void or correction.
    """
    new, present, seen = [], 0, {}
    for where, line, row in rows:
        values, errs = clean(row)
        problems += [f"{where}: {e}" for e in errs]
        key = key_of(where, row, values)
        if key is None:
            continue
        if key in seen:
            problems.append(f"{where}: {label(key)} already appears on line {seen[key]}")
            continue
        seen[key] = line
        old = stored.get(key)
        if settled is not None and not errs and settled(key, values) and (
                old is None or _sql(values["t_score"]) != old["t_score"]):
            present += 1
            continue
        # Empty cells say nothing, so they never conflict with a stored value.
        differs = [k for k in old or () if values[k] is not None and _sql(values[k]) != old[k]]
        if old is not None and not differs:
            present += 1
        elif differs and not supersede:
            shown = ", ".join(f"{k} {old[k]!r} (file: {_sql(values[k])!r})" for k in differs)
            problems.append(f"{where}: {label(key)} is already in the database with {shown}; "
                            "correct the file or edit the record in the app")
        elif not errs:
            new.append((key, values))
    return new, present, set(seen)


def import_records(db: Database, patients_df: pd.DataFrame | None = None,
                   series_df: pd.DataFrame | None = None, scores_df: pd.DataFrame | None = None, *,
                   entered_by: str, known_forms: Collection[str] | None = None, today: date | None = None,
                   dry_run: bool = False) -> ImportSummary:
    """Import patients, series and T-scores in one all-or-nothing transaction.

    Rows already present are skipped: the same patient ID with no differing field, a series with the
    same patient and first infusion and no differing field, a score with the same patient, domain,
    date and T. A different T for an existing patient, domain and date supersedes the stored one.
    A patient or series stored with different details is an error (correct the file or edit the
    record in the app): nothing is overwritten, and re-importing the same files adds nothing.

    Parameters
    ----------
    patients_df, series_df, scores_df
        Columns as in ``patients.csv``, ``series.csv`` and ``scores.csv`` (values may be text); an
        optional ``line`` column and ``df.attrs["source"]`` name the file and line in messages.
        A score row scored from its items also gives ``method`` (table, pattern or prorated),
        ``responses`` (``{item_id: value}``), ``raw_score`` and ``n_answered``; otherwise it is an
        ``imported`` T-score.
    dry_run
        Validate and count, then roll back.

    Raises
    ------
    ImportRejected
        With every problem, one per file line; nothing is written.
    """
    problems: list[str] = []
    who = _who(problems, entered_by)
    patients_file = None if patients_df is None else patients_df.attrs.get("source", "patients.csv")
    try:
        with _write(db) as conn:
            refs = dict(conn.execute("SELECT patient_id, id FROM patients").fetchall())
            stored = {(r[0],): dict(zip(_PATIENT_FIELDS[1:], r[1:])) for r in conn.execute(
                f"SELECT {', '.join(_PATIENT_FIELDS)} FROM patients")}
            patients, patients_present, in_file = _plan(
                problems, _file_rows(patients_df, "patients"),
                lambda row: clean_patient(**{k: row.get(k) for k in _PATIENT_FIELDS}, today=today),
                lambda where, row, values: None if values["patient_id"] is None else (values["patient_id"],),
                stored, lambda key: f"patient {key[0]!r}")

            def known(where: str, pid: Any) -> str | None:
                """The row's patient, when it is in the database or in the patients file."""
                pid = pid.strip() if isinstance(pid, str) else pid
                if _missing(pid):
                    problems.append(f"{where}: patient_id is required")
                elif pid not in refs and (pid,) not in in_file:
                    also = f" or in {patients_file}" if patients_file else ""
                    problems.append(f"{where}: patient {pid!r} is not in the database{also}; "
                                    "add the patient first")
                else:
                    return str(pid)
                return None

            def keyed(*fields: str) -> Callable[..., tuple[Any, ...] | None]:
                def key_of(where: str, row: dict[str, Any], values: dict[str, Any]) -> tuple[Any, ...] | None:
                    key = (known(where, row.get("patient_id")), *(_sql(values[f]) for f in fields))
                    return None if None in key else key
                return key_of

            stored = {(r[0], r[1]): dict(zip(_SERIES_FIELDS[1:], r[2:])) for r in conn.execute(
                f"SELECT p.patient_id, {', '.join('s.' + f for f in _SERIES_FIELDS)} "
                "FROM series s JOIN patients p ON p.id = s.patient_ref")}
            series, series_present, _ = _plan(
                problems, _file_rows(series_df, "series"),
                lambda row: clean_series(**{k: row.get(k) for k in _SERIES_FIELDS}, today=today),
                keyed("first_infusion"), stored, lambda key: f"the series of {key[0]!r} starting {key[1]}")

            stored = {r[:3]: {"t_score": r[3]} for r in conn.execute(
                "SELECT p.patient_id, a.domain, a.assessed_on, a.t_score FROM assessments a "
                "JOIN patients p ON p.id = a.patient_ref WHERE a.superseded_by IS NULL")}
            # Scores a clinician voided or corrected (the trail says so): the file's copy is not news.
            retired = set(conn.execute(
                "SELECT p.patient_id, a.domain, a.assessed_on, a.t_score FROM record_changes c "
                "JOIN assessments a ON a.id = c.record_id JOIN patients p ON p.id = a.patient_ref "
                "WHERE c.record = 'assessment' AND c.action IN ('correct', 'void')"))
            scores, scores_present, _ = _plan(
                problems, _file_rows(scores_df, "scores"),
                lambda row: clean_score(**{k: row.get(k) for k in _IMPORTED_SCORE_FIELDS + _SCORED_FIELDS},
                                        method="imported" if _missing(row.get("method")) else row["method"],
                                        source="import", today=today, known_forms=known_forms),
                keyed("domain", "assessed_on"), stored, lambda key: f"{key[1]} of {key[0]!r} on {key[2]}",
                supersede=True, settled=lambda key, values: (*key, values["t_score"]) in retired)

            if problems:
                raise ImportRejected(f"Nothing was imported: {len(problems)} problem(s) found. "
                                     "Fix them and import the files again.", problems)
            at = _now()
            for _, values in patients:
                row = {**values, "entered_by": who, "entered_at": at}
                refs[values["patient_id"]] = _insert(conn, "patients", row)
            for (pid, _), values in series:
                row = {"patient_ref": refs[pid], **values, "entered_by": who, "entered_at": at}
                _insert(conn, "series", row)
            superseded = sum(_store_score(conn, refs[key[0]], values, who, at)[1] for key, values in scores)
            if dry_run or not (patients or series or scores):
                raise _Rollback  # nothing to keep: data_version stays, so no cache is emptied
    except _Rollback:
        pass
    return ImportSummary(len(patients), patients_present, len(series), series_present, len(scores),
                         scores_present, superseded, dry_run)


def _values(df: pd.DataFrame, columns: Sequence[str], dates: Collection[str] = (),
            extra: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of plain Python values for ``executemany`` (NULL for NaN/NaT/NA, ISO dates, JSON dicts),
    each followed by the constant values ``extra``."""
    out = []
    for c in columns:
        if c not in df.columns:
            out.append([None] * len(df))
            continue
        col = _iso_days(df[c]) if c in dates else df[c]
        values = col.astype(object).where(col.notna(), None).tolist()  # column-wise: 10x faster than per cell
        if c == "responses":
            values = _json_column(values)
        out.append(values)
    out += [[value] * len(df) for value in extra]
    return list(zip(*out))


def _iso_days(column: pd.Series) -> pd.Series:
    """Dates as ``YYYY-MM-DD`` text (NaT stays missing), formatted by NumPy (faster than ``strftime``)."""
    stamps = pd.to_datetime(column)
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize(None)  # the wall-clock day, as strftime gives it
    days = stamps.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    return pd.Series(np.datetime_as_string(days, unit="D"), index=column.index, dtype=object).where(
        stamps.notna(), None)


_JSON_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _json_column(values: Sequence[Any]) -> list[str | None]:
    """Item-response mappings as compact JSON text (without the spaces: 11 bytes less per score)."""
    encode = _JSON_COMPACT
    return [None if v is None else encode(v if isinstance(v, dict) else dict(v) if isinstance(v, Mapping) else v)
            for v in values]


def _require_columns(df: pd.DataFrame, name: str, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValidationError(f"The {name} table lacks column(s) {', '.join(missing)}")


_BULK_CHUNK = 250_000


def insert_cohort(db: Database, patients: pd.DataFrame, series: pd.DataFrame, infusions: pd.DataFrame,
                  assessments: pd.DataFrame, *, synthetic: bool,
                  entered_by: str = "synthetic") -> dict[str, int]:
    """Bulk-insert a whole cohort in one transaction (the demo generator's fast path).

    Rows are checked by the schema's constraints rather than field by field, so this is for
    generated or already-validated data. Clinical entry goes through the single-record verbs.

    Parameters
    ----------
    patients
        ``patient_id`` and optionally ``diagnosis, sex, birth_year, enrolled_on``.
    series
        ``patient_id, first_infusion, last_infusion, infusions`` and optionally
        ``protocol, dose_mg_per_kg, notes``.
    infusions
        ``patient_id, series_first_infusion, infused_on, dose_mg_per_kg, duration_min`` and optionally
        ``notes`` and ``adverse_events`` (a list per row of kinds, or of ``{kind, severity, notes}``).
    assessments
        ``patient_id, assessed_on, domain, t_score, method, source`` and optionally
        ``form, responses (dict), raw_score, se, n_answered``.
    synthetic
        Flag the database as a demo database. A database that already holds patients cannot change
        its flag, so real and generated patients never mix.

    Returns
    -------
    dict
        Rows inserted per table.

    Raises
    ------
    ValidationError
        A missing column, an unknown patient or series, or a row that breaks a schema rule.
    """
    _require_columns(patients, "patients", ["patient_id"])
    _require_columns(series, "series", ["patient_id", "first_infusion", "last_infusion", "infusions"])
    _require_columns(infusions, "infusions", ["patient_id", "series_first_infusion", "infused_on",
                                              "dose_mg_per_kg", "duration_min"])
    _require_columns(assessments, "assessments", ["patient_id", "assessed_on", "domain", "t_score", "method",
                                                  "source"])
    at = _now()
    try:
        with _write(db) as conn:
            if conn.execute("SELECT count(*) FROM patients").fetchone()[0] and is_synthetic(db) != synthetic:
                raise ValidationError("This database already holds " + ("real" if synthetic else "synthetic")
                                      + " patients; load the cohort into a separate database")
            conn.executemany(
                "INSERT INTO patients (patient_id, diagnosis, sex, birth_year, enrolled_on, entered_by, "
                "entered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [r + (entered_by, at) for r in _values(patients, _PATIENT_FIELDS, {"enrolled_on"})])
            refs = dict(conn.execute("SELECT patient_id, id FROM patients"))

            def ref_of(df: pd.DataFrame, name: str) -> pd.Series:
                mapped = df["patient_id"].map(refs)
                if mapped.isna().any():
                    unknown = sorted(set(df.loc[mapped.isna(), "patient_id"].astype(str)))
                    raise ValidationError(f"The {name} table names patients not in the patients table",
                                          unknown[:10])
                return mapped.astype("int64")

            s = series.assign(patient_ref=ref_of(series, "series"))
            conn.executemany(
                "INSERT INTO series (patient_ref, first_infusion, last_infusion, infusions, protocol, "
                "dose_mg_per_kg, notes, entered_by, entered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [r + (entered_by, at) for r in _values(s, ("patient_ref",) + _SERIES_FIELDS,
                                                         {"first_infusion", "last_infusion"})])
            series_refs = {(p, f): i for i, p, f in conn.execute(
                "SELECT id, patient_ref, first_infusion FROM series")}
            inf = infusions.assign(patient_ref=ref_of(infusions, "infusions"))
            keys = _values(inf, ("patient_ref", "series_first_infusion"), {"series_first_infusion"})
            missing = [k for k in keys if k not in series_refs]
            if missing:
                raise ValidationError("The infusions table names series not in the series table",
                                      [f"patient ref {p}, series starting {f}" for p, f in missing[:10]])
            inf["series_ref"] = [series_refs[k] for k in keys]
            before = conn.execute("SELECT coalesce(max(id), 0) FROM infusions").fetchone()[0]
            conn.executemany(
                "INSERT INTO infusions (series_ref, infused_on, dose_mg_per_kg, duration_min, notes, "
                "entered_by, entered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [r + (entered_by, at) for r in _values(inf, ("series_ref", "infused_on", "dose_mg_per_kg",
                                                             "duration_min", "notes"), {"infused_on"})])
            events = []
            if "adverse_events" in inf.columns:
                # Under the write lock each new rowid is max(rowid) + 1, so ids follow the frame's order.
                for infusion_id, listed in enumerate(inf["adverse_events"], start=before + 1):
                    for e in listed if isinstance(listed, (list, tuple)) else ():
                        e = e if isinstance(e, Mapping) else {"kind": e}
                        events.append((infusion_id, e.get("kind"), e.get("severity"), e.get("notes")))
            conn.executemany("INSERT INTO adverse_events (infusion_ref, kind, severity, notes) "
                             "VALUES (?, ?, ?, ?)", events)
            a = assessments.assign(patient_ref=ref_of(assessments, "assessments"))
            if "n_answered" in a.columns:  # often float after a NaN-aware computation; INTEGER column
                a["n_answered"] = a["n_answered"].astype("Int64")
            columns = ("patient_ref", "assessed_on", "domain", "form", "responses", "raw_score", "t_score",
                       "se", "n_answered", "method", "source")
            # Building the indexes once after the load is about a third faster than updating them row by
            # row; the DDL is part of the transaction, so a failure restores them too.
            indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                   "AND tbl_name = 'assessments' AND sql IS NOT NULL").fetchall()
            for name, _ in indexes:
                conn.execute(f"DROP INDEX {name}")
            # The table's CHECK constraints cost about 10 us per row when evaluated row by row (each IN
            # list is rebuilt for every executemany row), four times the insert itself. They are checked
            # instead in one pass after the load (quick_check evaluates every CHECK of the table), which
            # rolls the whole load back on a failure, as the row-by-row check did. Chunks bound the memory
            # of the Python row tuples for a cohort of millions of scores.
            insert = (f"INSERT INTO assessments ({', '.join(columns)}, entered_by, entered_at) "
                      f"VALUES ({', '.join('?' * (len(columns) + 2))})")
            conn.execute("PRAGMA ignore_check_constraints = ON")
            try:
                for start in range(0, len(a), _BULK_CHUNK):
                    conn.executemany(insert, _values(a.iloc[start:start + _BULK_CHUNK], columns, {"assessed_on"},
                                                     extra=(entered_by, at)))
            finally:
                conn.execute("PRAGMA ignore_check_constraints = OFF")
            failed = [row[0] for row in conn.execute("PRAGMA quick_check(assessments)")]
            if failed != ["ok"]:
                raise ValidationError("The cohort was not inserted: a row breaks a database rule", failed[:10])
            for _, sql in indexes:
                conn.execute(sql)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('synthetic', ?)",
                         ["1" if synthetic else "0"])
    except (sqlite3.IntegrityError, ValueError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError("The cohort was not inserted: a row breaks a database rule",
                              [str(exc)]) from None
    return {"patients": len(patients), "series": len(series), "infusions": len(infusions),
            "adverse_events": len(events), "assessments": len(assessments)}


# Reads ---------------------------------------------------------------------------------------------


def _frame(db: Database, sql: str, params: Sequence[Any] = (), *, dates: Iterable[str] = (),
           ints: Iterable[str] = (), floats: Iterable[str] = (), stamps: Iterable[str] = ()) -> pd.DataFrame:
    # What pd.read_sql_query does, without its wrapper's overhead (about 0.2 ms of the 0.45 ms it takes to
    # read one patient's scores; the check-in reads several such frames).
    cursor = db.conn.execute(sql, list(params))
    df = pd.DataFrame.from_records(cursor.fetchall(), columns=[d[0] for d in cursor.description],
                                   coerce_float=True)
    for c in dates:
        df[c] = pd.to_datetime(df[c], format="%Y-%m-%d").astype("datetime64[ns]")
    for c in ints:
        df[c] = df[c].astype("Int64")
    for c in floats:
        df[c] = df[c].astype("float64")
    for c in stamps:
        df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    return df


def _patient_filter(patient_id: str | None, alias: str = "p") -> tuple[str, list[Any]]:
    return ("", []) if patient_id is None else (f" AND {alias}.patient_id = ?", [patient_id])


_PATIENT_READ = ("SELECT patient_id, diagnosis, sex, birth_year, enrolled_on, disposition, disposition_on, "
                 "disposition_reason, disposition_by, entered_by, entered_at FROM patients")


def load_patients(db: Database) -> pd.DataFrame:
    """One row per patient: ``patient_id, diagnosis, sex, birth_year, enrolled_on, disposition,
    disposition_on, disposition_reason, disposition_by, entered_by, entered_at``."""
    return _frame(db, _PATIENT_READ + " ORDER BY patient_id",
                  dates=["enrolled_on", "disposition_on"], ints=["birth_year"], stamps=["entered_at"])


#: A series that analyses count: infusions were given (not only planned), not cancelled, not voided.
_GIVEN = "s.state = 'given' AND s.voided_at IS NULL"


def load_series(db: Database, patient_id: str | None = None, *, every: bool = False) -> pd.DataFrame:
    """One row per series given, with ``series_number`` (1, 2... per patient by first infusion).

    Parameters
    ----------
    every
        Also planned, cancelled and voided series (``state`` planned/given/cancelled, ``voided``), for
        the patient's record and the roster; their ``series_number`` is <NA> (numbers count the series
        given, so a series has the same number with or without ``every``).

    Returns
    -------
    pandas.DataFrame
        ``series_id, patient_id, series_number, first_infusion, last_infusion, infusions`` (for a series
        logged day by day: the first and last infusion given and how many; its plan until one is),
        ``protocol, dose_mg_per_kg, notes, planned_first, planned_last, planned_infusions, by_day, state,
        cancel_reason, voided, voided_at, voided_by, void_reason, entered_by, entered_at``.
    """
    where, params = _patient_filter(patient_id)
    if not every:
        where += " AND " + _GIVEN
    # Series numbers count the series given (as analyses do), so a series keeps its number on every page;
    # a planned, cancelled or voided one has none.
    return _frame(db, "SELECT s.id AS series_id, p.patient_id, CASE WHEN " + _GIVEN + " THEN ROW_NUMBER() OVER "
                      "(PARTITION BY s.patient_ref, " + _GIVEN + " ORDER BY s.first_infusion) END AS series_number, "
                      "s.first_infusion, s.last_infusion, "
                      "s.infusions, s.protocol, s.dose_mg_per_kg, s.notes, s.planned_first, s.planned_last, "
                      "s.planned_infusions, s.by_day, s.state, s.cancel_reason, s.voided_at IS NOT NULL AS voided, "
                      "s.voided_at, s.voided_by, s.void_reason, s.entered_by, s.entered_at "
                      "FROM series s JOIN patients p ON p.id = s.patient_ref WHERE 1" + where +
                      " ORDER BY p.patient_id, s.first_infusion", params,
                  dates=["first_infusion", "last_infusion", "planned_first", "planned_last"],
                  ints=["series_id", "series_number", "infusions", "planned_infusions"],
                  floats=["dose_mg_per_kg"], stamps=["entered_at", "voided_at"]).astype(
                      {"by_day": bool, "voided": bool})


def load_infusions(db: Database, patient_id: str | None = None, *, every: bool = False) -> pd.DataFrame:
    """One row per infusion, with its vital signs (:data:`VITALS`) and ``n_adverse_events`` (details in
    :func:`load_adverse_events`). Infusions that were voided, or whose series was, only with ``every``
    (then ``voided`` says which)."""
    where, params = _patient_filter(patient_id)
    if not every:
        where += " AND i.voided_at IS NULL AND s.voided_at IS NULL"
    vitals = ", ".join("i." + v for v in VITALS)
    return _frame(db, "SELECT i.id AS infusion_id, s.id AS series_id, p.patient_id, i.infused_on, "
                      f"i.dose_mg_per_kg, i.duration_min, {vitals}, i.notes, (SELECT count(*) FROM adverse_events e "
                      "WHERE e.infusion_ref = i.id AND e.voided_at IS NULL) AS n_adverse_events, "
                      "(i.voided_at IS NOT NULL OR s.voided_at IS NOT NULL) AS voided, i.voided_at, i.voided_by, "
                      "i.void_reason, i.entered_by FROM infusions i "
                      "JOIN series s ON s.id = i.series_ref JOIN patients p ON p.id = s.patient_ref WHERE 1"
                      + where + " ORDER BY p.patient_id, i.infused_on, i.id", params,
                  dates=["infused_on"], ints=["infusion_id", "series_id", "duration_min", "n_adverse_events",
                                              *VITALS],
                  floats=["dose_mg_per_kg"], stamps=["voided_at"]).astype({"voided": bool})


def load_adverse_events(db: Database, patient_id: str | None = None, *, every: bool = False) -> pd.DataFrame:
    """One row per adverse event: ``event_id, infusion_id, patient_id, infused_on, kind, severity, action,
    description, notes``; voided ones (or of a voided infusion or series) only with ``every``."""
    where, params = _patient_filter(patient_id)
    if not every:
        where += " AND e.voided_at IS NULL AND i.voided_at IS NULL AND s.voided_at IS NULL"
    return _frame(db, "SELECT e.id AS event_id, i.id AS infusion_id, p.patient_id, i.infused_on, e.kind, "
                      "e.severity, e.action, e.description, e.notes, (e.voided_at IS NOT NULL OR "
                      "i.voided_at IS NOT NULL OR s.voided_at IS NOT NULL) AS voided, e.voided_at, e.voided_by, "
                      "e.void_reason FROM adverse_events e JOIN infusions i ON i.id = e.infusion_ref "
                      "JOIN series s ON s.id = i.series_ref JOIN patients p ON p.id = s.patient_ref WHERE 1"
                      + where + " ORDER BY p.patient_id, i.infused_on, e.id", params,
                  dates=["infused_on"], ints=["event_id", "infusion_id"], stamps=["voided_at"]).astype(
                      {"voided": bool})


ASSESSMENT_COLUMNS = ("assessment_id", "patient_id", "assessed_on", "domain", "form", "t_score", "se",
                      "raw_score", "n_answered", "method", "source", "entered_by", "entered_at",
                      "superseded_by", "voided_at", "voided_by", "void_reason")


def load_assessments(db: Database, *, patient_id: str | None = None, domains: Iterable[str] | None = None,
                     include_superseded: bool = False) -> pd.DataFrame:
    """Domain scores in long form, one row per patient, domain and day.

    Parameters
    ----------
    patient_id
        Only this patient (an unknown ID gives an empty frame).
    domains
        Only these domains.
    include_superseded
        Also rows replaced by a later entry for the same day or by a correction (``superseded_by`` names
        the replacement) and voided rows (``superseded_by`` is their own id, ``voided_at`` is set).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ASSESSMENT_COLUMNS`, sorted by patient, domain and date; ``assessed_on`` is
        ``datetime64[ns]`` at midnight, ``entered_at`` is UTC.
    """
    where, params = _patient_filter(patient_id)
    if not include_superseded:
        # "+" keeps the planner off the partial (domain, date) index: walking patients in ID order
        # through assessments_by_patient needs no sort and loads a full cohort about 40 % faster.
        where += " AND +a.superseded_by IS NULL"
    if domains is not None:
        domains = list(domains)
        where += f" AND a.domain IN ({', '.join('?' * len(domains))})"
        params += domains
    columns = ", ".join("a." + c for c in ASSESSMENT_COLUMNS[2:])
    return _frame(db, f"SELECT a.id AS assessment_id, p.patient_id, {columns} FROM assessments a "
                      "JOIN patients p ON p.id = a.patient_ref WHERE 1" + where +
                      " ORDER BY p.patient_id, a.domain, a.assessed_on, a.id", params,
                  dates=["assessed_on"], ints=["assessment_id", "n_answered", "superseded_by"],
                  floats=["t_score", "se", "raw_score"], stamps=["entered_at", "voided_at"])


# Cohort reads: every patient at once, only the columns the cohort analyses use, compact dtypes. A
# health system's cohort has millions of scores; these read the covering index assessments_cohort
# (never the table rows with their item responses) and build each column as one NumPy array.

COHORT_SCORE_COLUMNS = ("patient_id", "domain", "assessed_on", "t_score")
COHORT_EPISODE_COLUMNS = ("series_id", "patient_id", "series_number", "first_infusion", "last_infusion",
                          "infusions", "protocol", "diagnosis", "sex", "birth_year")
_DAY_NS = 86_400_000_000_000


def _day_column(days: Any) -> Any:
    """Day numbers (days since 1970-01-01, from ``unixepoch(date) / 86400``) as datetime64[ns]."""
    return (np.asarray(days, dtype=np.int64) * _DAY_NS).view("datetime64[ns]")


def _patient_categories(conn: sqlite3.Connection) -> tuple[pd.Index, Any]:
    """Every patient ID in sorted order, and an array mapping ``patient_ref`` to its position."""
    rows = conn.execute("SELECT id, patient_id FROM patients ORDER BY patient_id").fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    lookup = np.full(int(ids.max()) + 1 if len(ids) else 1, -1, dtype=np.int32)
    lookup[ids] = np.arange(len(ids), dtype=np.int32)
    return pd.Index([r[1] for r in rows], dtype=object), lookup


def load_cohort_scores(db: Database, *, domains: Iterable[str] | None = None) -> pd.DataFrame:
    """Every active T-score in the compact form the cohort analyses read.

    The cohort page and ``report responders`` need four columns of every score and nothing else; this
    reads them from the covering index ``assessments_cohort``, one domain at a time in index order (no
    sort), straight from the cursor into NumPy arrays. :func:`load_assessments` gives every column.

    Parameters
    ----------
    domains
        Only these domains (default: all).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COHORT_SCORE_COLUMNS`: ``patient_id`` categorical over every enrolled patient's
        ID (sorted), ``domain`` categorical over the domains read (in :data:`DOMAINS` order),
        ``assessed_on`` datetime64[ns] at midnight, ``t_score`` float64. Rows are grouped by domain,
        then by patient and date; the same rows as ``load_assessments(db)`` (equal once sorted alike).
    """
    wanted = list(DOMAINS) if domains is None else [d for d in DOMAINS if d in set(domains)]
    scan = "FROM assessments INDEXED BY assessments_cohort WHERE domain = ? AND superseded_by IS NULL"
    conn = db.conn
    own = not conn.in_transaction
    if own:  # one read snapshot, so the counts below and the rows agree while others write
        conn.execute("BEGIN")
    try:
        categories, lookup = _patient_categories(conn)
        sizes = [conn.execute(f"SELECT count(*) {scan}", [d]).fetchone()[0] for d in wanted]
        # Filled chunk by chunk: row tuples for millions of scores would take five times the arrays' memory.
        codes = np.empty(sum(sizes), dtype=np.int32)
        days = np.empty(sum(sizes), dtype=np.int64)
        t_score = np.empty(sum(sizes), dtype=np.float64)
        at = 0
        for domain in wanted:
            cursor = conn.execute(f"SELECT patient_ref, unixepoch(assessed_on) / 86400, t_score {scan}", [domain])
            while rows := cursor.fetchmany(_READ_CHUNK):
                chunk = np.array(rows, dtype=np.float64)
                end = at + len(chunk)
                codes[at:end] = lookup[chunk[:, 0].astype(np.int64)]
                days[at:end] = chunk[:, 1]
                t_score[at:end] = chunk[:, 2]
                at = end
    finally:
        if own:
            conn.execute("COMMIT")
    days *= _DAY_NS
    return pd.DataFrame({
        "patient_id": pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories)),
        "domain": pd.Categorical.from_codes(np.repeat(np.arange(len(wanted), dtype=np.int8), sizes),
                                            dtype=pd.CategoricalDtype(wanted)),
        "assessed_on": days.view("datetime64[ns]"),
        "t_score": t_score,
    })


_READ_CHUNK = 65_536


def load_cohort_episodes(db: Database) -> pd.DataFrame:
    """Every infusion series with the patient fields the cohort filters and groups use, in one query.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COHORT_EPISODE_COLUMNS`, sorted by patient and first infusion: ``series_id``,
        ``series_number`` (1, 2... per patient), ``infusions`` int64; ``patient_id, protocol,
        diagnosis, sex`` text; ``first_infusion, last_infusion`` datetime64[ns]; ``birth_year`` Int64.
        The rows and values of ``load_series`` merged with ``load_patients`` on ``patient_id``.
    """
    rows = db.conn.execute(
        "SELECT s.id, p.patient_id, ROW_NUMBER() OVER (PARTITION BY s.patient_ref ORDER BY s.first_infusion), "
        "unixepoch(s.first_infusion) / 86400, unixepoch(s.last_infusion) / 86400, s.infusions, s.protocol, "
        "p.diagnosis, p.sex, p.birth_year FROM series s JOIN patients p ON p.id = s.patient_ref "
        f"WHERE {_GIVEN} ORDER BY p.patient_id, s.first_infusion").fetchall()
    columns = list(zip(*rows)) if rows else [()] * len(COHORT_EPISODE_COLUMNS)
    out = pd.DataFrame({name: np.array(values, dtype=object) for name, values in
                        zip(COHORT_EPISODE_COLUMNS, columns)}, columns=list(COHORT_EPISODE_COLUMNS))
    for c in ("series_id", "series_number", "infusions"):
        out[c] = out[c].astype(np.int64)
    for c in ("first_infusion", "last_infusion"):
        out[c] = _day_column(out[c].to_numpy(dtype=np.int64))
    out["birth_year"] = out["birth_year"].astype("Int64")
    return out


def load_item_responses(db: Database, patient_id: str) -> pd.DataFrame:
    """Item answers of a patient's active assessments (long).

    Columns ``assessment_id, assessed_on, domain, form, item_id, value``; ``value`` is ``<NA>`` for a
    skipped item.
    """
    return _frame(db, "SELECT a.id AS assessment_id, a.assessed_on, a.domain, a.form, j.key AS item_id, "
                      "j.value AS value FROM assessments a JOIN patients p ON p.id = a.patient_ref, "
                      "json_each(a.responses) j WHERE p.patient_id = ? AND a.superseded_by IS NULL "
                      "ORDER BY a.assessed_on, a.domain, j.id", [patient_id],
                  dates=["assessed_on"], ints=["assessment_id", "value"])


def database_summary(db: Database) -> dict[str, Any]:
    """Counts and facts for the landing page and ``python -m outcomes init``.

    Keys: ``patients, series, infusions, assessments`` (active), ``users``, ``first_assessment`` and
    ``last_assessment`` (``datetime.date`` or ``None``), ``assessments_by_domain``, ``synthetic``,
    ``schema_version``, ``data_version``.
    """
    conn = db.conn
    count = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
             for t in ("patients", "series", "infusions", "users")}
    active = "FROM assessments WHERE superseded_by IS NULL"
    n, first, last = conn.execute(f"SELECT count(*), min(assessed_on), max(assessed_on) {active}").fetchone()
    by_domain = dict(conn.execute(f"SELECT domain, count(*) {active} GROUP BY domain ORDER BY domain"))
    return {**count, "assessments": n,
            "first_assessment": date.fromisoformat(first) if first else None,
            "last_assessment": date.fromisoformat(last) if last else None,
            "assessments_by_domain": by_domain, "synthetic": is_synthetic(db),
            "schema_version": int(get_meta(db, "schema_version", "0") or 0), "data_version": data_version(db)}


# Accounts, invitations, check-in drafts and alerts (issue 3) ----------------------------------------
#
# The rules (password strength, lockout arithmetic, alert thresholds, who may do what) live in
# outcomes/auth.py and outcomes/clinic.py; this section only stores and reads. Callers that need
# several of these verbs to commit together wrap them in :func:`transaction`.

PRIORITIES = ("high", "routine")  # of a clinical alert; "high" sorts first
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{2,63}", re.ASCII)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_USER_FIELDS = ("id", "username", "role", "password_hash", "patient_id", "email", "display_name",
                "failed_logins", "locked_until", "active", "must_change_password", "last_login_at",
                "created_at", "credential_version", "oidc_issuer", "oidc_subject")
_USER_CHANGES = frozenset({"password_hash", "failed_logins", "locked_until", "active",
                           "must_change_password", "last_login_at", "email", "display_name",
                           "oidc_issuer", "oidc_subject"})

_ACCOUNTS_SCHEMA = [
    "ALTER TABLE users ADD COLUMN display_name TEXT",
    "ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0 "
    "CHECK (must_change_password IN (0, 1))",
    "ALTER TABLE users ADD COLUMN last_login_at TEXT",
    # OIDC sign-in maps the identity provider's verified email to exactly one user.
    "CREATE UNIQUE INDEX users_by_email ON users (email COLLATE NOCASE) WHERE email IS NOT NULL",
    # One working login per patient: a second one would be a second way into the same record.
    "CREATE UNIQUE INDEX users_one_login_per_patient ON users (patient_ref) "
    "WHERE patient_ref IS NOT NULL AND active = 1",
    # Only a keyed hash of the code is stored, so a copy of the database cannot be used to sign up.
    """CREATE TABLE invitations (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        code_hash TEXT NOT NULL UNIQUE,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        used_by INTEGER REFERENCES users(id),
        revoked_at TEXT,
        CHECK (expires_at > created_at),
        CHECK ((used_at IS NULL) = (used_by IS NULL))) STRICT""",
    "CREATE INDEX invitations_by_patient ON invitations (patient_ref)",
    # One draft per patient and author, so a clinician's paper entry never overwrites the patient's own.
    """CREATE TABLE checkin_drafts (
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        user_ref INTEGER NOT NULL REFERENCES users(id),
        answers TEXT NOT NULL CHECK (json_type(answers) = 'object'),
        saved_at TEXT NOT NULL,
        PRIMARY KEY (patient_ref, user_ref)) STRICT""",
    f"""CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        assessment_ref INTEGER NOT NULL REFERENCES assessments(id),
        domain TEXT NOT NULL CHECK (domain IN {_in(DOMAINS)}),
        t_score REAL NOT NULL CHECK (t_score BETWEEN 0 AND 100),
        priority TEXT NOT NULL CHECK (priority IN {_in(PRIORITIES)}),
        reason TEXT NOT NULL CHECK (length(reason) > 0),
        created_at TEXT NOT NULL,
        acknowledged_by TEXT,
        acknowledged_at TEXT,
        note TEXT,
        CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))) STRICT""",
    "CREATE INDEX alerts_open ON alerts (patient_ref) WHERE acknowledged_at IS NULL",
    "CREATE INDEX alerts_by_patient ON alerts (patient_ref, created_at)",
    # An alert is a safety record: it is never deleted, and once acknowledged it is never changed.
    """CREATE TRIGGER alerts_no_delete BEFORE DELETE ON alerts
        BEGIN SELECT RAISE(ABORT, 'alerts are kept: an alert cannot be deleted, only acknowledged'); END""",
    """CREATE TRIGGER alerts_frozen_once_acknowledged BEFORE UPDATE ON alerts
        WHEN OLD.acknowledged_at IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'an acknowledged alert cannot be changed'); END""",
    "CREATE INDEX audit_log_by_action ON audit_log (action, at)",
]


@MIGRATIONS(name="0002_accounts_checkins_alerts")
def _accounts_checkins_alerts(db: Database) -> None:
    for statement in _ACCOUNTS_SCHEMA:
        db.execute(statement)


#: Covering index of load_cohort_scores (issue 6): a domain's active scores in patient and date order
#: without touching the table rows, whose item responses make them ten times wider. superseded_by (always
#: NULL here) is a column too: SQLite 3.40 reads the table to check a partial index's WHERE otherwise.
COHORT_INDEX = ("CREATE INDEX assessments_cohort ON assessments "
                "(domain, patient_ref, assessed_on, t_score, superseded_by) WHERE superseded_by IS NULL")


@MIGRATIONS(name="0003_cohort_read_index")
def _cohort_read_index(db: Database) -> None:
    db.execute(COHORT_INDEX)


DISPOSITIONS = ("active", "discharged", "withdrawn", "lost_to_follow_up", "deceased")
SERIES_STATES = ("planned", "given", "cancelled")
#: What a correction can change, per kind of record (the record's id and owner never change).
CORRECTABLE = {
    "patient": ("diagnosis", "sex", "birth_year", "enrolled_on"),
    "series": ("first_infusion", "last_infusion", "infusions", "protocol", "dose_mg_per_kg", "notes"),
    "infusion": ("infused_on", "dose_mg_per_kg", "duration_min", "notes", *VITALS),
    "adverse_event": ("kind", "severity", "action", "description", "notes"),
    "assessment": ("assessed_on", "t_score", "se"),
}
RECORD_KINDS = tuple(CORRECTABLE)
CHANGE_ACTIONS = ("correct", "void", "cancel", "disposition")

_CLINIC_RECORD_SCHEMA = [
    # Disposition: only active patients are expected to check in.
    f"ALTER TABLE patients ADD COLUMN disposition TEXT NOT NULL DEFAULT 'active' "
    f"CHECK (disposition IN {_in(DISPOSITIONS)})",
    f"ALTER TABLE patients ADD COLUMN disposition_on TEXT CHECK (disposition_on {_ISO})",
    "ALTER TABLE patients ADD COLUMN disposition_reason TEXT",
    "ALTER TABLE patients ADD COLUMN disposition_by TEXT",
    # A series planned ahead and logged day by day keeps its plan; first/last/infusions are what was given.
    f"ALTER TABLE series ADD COLUMN planned_first TEXT CHECK (planned_first {_ISO})",
    f"ALTER TABLE series ADD COLUMN planned_last TEXT CHECK (planned_last {_ISO})",
    "ALTER TABLE series ADD COLUMN planned_infusions INTEGER CHECK (planned_infusions >= 1)",
    "ALTER TABLE series ADD COLUMN by_day INTEGER NOT NULL DEFAULT 0 CHECK (by_day IN (0, 1))",
    f"ALTER TABLE series ADD COLUMN state TEXT NOT NULL DEFAULT 'given' CHECK (state IN {_in(SERIES_STATES)})",
    "ALTER TABLE series ADD COLUMN cancel_reason TEXT",
    # Vital signs per infusion (VITALS; ranges checked by clean_infusion).
    *(f"ALTER TABLE infusions ADD COLUMN {name} INTEGER" for name in VITALS),
    f"ALTER TABLE adverse_events ADD COLUMN action TEXT CHECK (action IN {_in(EVENT_ACTIONS)})",
    "ALTER TABLE adverse_events ADD COLUMN description TEXT",
    # Voided records stay, marked; an assessment is voided by superseding it with itself (superseded_by =
    # id), so every read of active scores leaves it out and its day is free for a new entry.
    *(f"ALTER TABLE {table} ADD COLUMN {column} TEXT" for table in ("series", "infusions", "adverse_events",
                                                                    "assessments")
      for column in ("voided_at", "voided_by", "void_reason")),
    # The trail of every correction, void, cancellation and disposition: who, when, why, before and after.
    f"""CREATE TABLE record_changes (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        record TEXT NOT NULL CHECK (record IN {_in(RECORD_KINDS)}),
        record_id INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN {_in(CHANGE_ACTIONS)}),
        before TEXT NOT NULL CHECK (json_type(before) = 'object'),
        after TEXT NOT NULL CHECK (json_type(after) = 'object'),
        reason TEXT NOT NULL CHECK (length(trim(reason)) > 0)) STRICT""",
    "CREATE INDEX record_changes_by_patient ON record_changes (patient_ref, at)",
    """CREATE TRIGGER record_changes_no_update BEFORE UPDATE ON record_changes
        BEGIN SELECT RAISE(ABORT, 'record_changes is append-only: entries cannot be changed'); END""",
    """CREATE TRIGGER record_changes_no_delete BEFORE DELETE ON record_changes
        BEGIN SELECT RAISE(ABORT, 'record_changes is append-only: entries cannot be deleted'); END""",
    # Nothing clinical is ever deleted: a wrong record is corrected or voided, with a reason.
    *(f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} are kept: correct or void a record instead of deleting it'); END"""
      for table in ("patients", "series", "infusions", "adverse_events", "assessments")),
    # INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers (unless a connection turns
    # recursive_triggers on); a BEFORE INSERT trigger runs before the conflict is resolved, on every connection.
    *(f"""CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table}
        WHEN EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, '{table} are kept: a row cannot be replaced'); END"""
      for table in ("patients", "series", "infusions", "adverse_events", "assessments", "alerts",
                    "record_changes")),
]


@MIGRATIONS(name="0004_clinic_record")
def _clinic_record(db: Database) -> None:
    for statement in _CLINIC_RECORD_SCHEMA:
        db.execute(statement)


#: Sign-in throttling (docs/authentication.md): ``account`` buckets are one per username (as typed, casefolded)
#: and browser this account has signed in on (``browser:<digest>``), plus one (``new``) shared by every other
#: client; ``address`` buckets are one per client address, for everything a signed-out client can fail at.
THROTTLE_SCOPES = ("account", "address")

_ACCOUNT_HARDENING_SCHEMA = [
    # Bumped by every password change or reset, deactivation and reactivation: a session signed in with an
    # older version ends at its next action (auth.require_role).
    "ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0 CHECK (credential_version >= 0)",
    # Hospital sign-in: the identity provider's issuer and subject, bound at the first verified sign-in.
    "ALTER TABLE users ADD COLUMN oidc_issuer TEXT",
    "ALTER TABLE users ADD COLUMN oidc_subject TEXT",
    "CREATE UNIQUE INDEX users_by_oidc_identity ON users (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL",
    f"""CREATE TABLE sign_in_throttle (
        scope TEXT NOT NULL CHECK (scope IN {_in(THROTTLE_SCOPES)}),
        subject TEXT NOT NULL,
        client TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
        refused INTEGER NOT NULL DEFAULT 0 CHECK (refused >= 0),
        delayed_until TEXT,
        last_at TEXT NOT NULL,
        -- attempts not yet written to the audit log, and when it last had an entry for this bucket
        unaudited INTEGER NOT NULL DEFAULT 0 CHECK (unaudited >= 0),
        audited_at TEXT,
        PRIMARY KEY (scope, subject, client)) STRICT""",
    # Browsers (digests of their HttpOnly cookie) an account has signed in on: their failures are counted apart
    # from everybody else's, so nobody can hold an account's usual browsers off by failing on purpose.
    """CREATE TABLE known_browsers (
        user_ref INTEGER NOT NULL REFERENCES users(id),
        browser TEXT NOT NULL CHECK (length(browser) BETWEEN 16 AND 128),
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        PRIMARY KEY (user_ref, browser)) STRICT""",
]


@MIGRATIONS(name="0005_account_hardening")
def _account_hardening(db: Database) -> None:
    for statement in _ACCOUNT_HARDENING_SCHEMA:
        db.execute(statement)


#: ``INSERT OR REPLACE`` (or ``REPLACE``) with an existing id deletes that audit entry and writes another
#: in its place. That delete fires the no-delete trigger only when ``recursive_triggers`` is on, which
#: sqlite-utils sets for the app's connections but no other client does (the sqlite3 shell, Python's
#: sqlite3). A BEFORE INSERT trigger runs before the conflict is resolved, on every connection.
_AUDIT_HARDENING_SCHEMA = [
    """CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
        WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: an entry cannot be replaced'); END""",
]


@MIGRATIONS(name="0006_audit_hardening")
def _audit_hardening(db: Database) -> None:
    for statement in _AUDIT_HARDENING_SCHEMA:
        db.execute(statement)


# Diagnosis codes (security issue, finding 2) ---------------------------------------------------------
#
# The diagnosis a cohort is filtered and pooled by is a code from a list the clinic maintains
# (``diagnosis_codes``: add, rename, retire; app_pages/diagnoses.py). The patient's free-text ``diagnosis``
# stays as the clinician's note: identified output only, never a filter or a de-identified value. A
# patient may be "not coded" (NULL). A new patient whose note reads exactly an active code's label
# (ignoring case and outer spaces) gets that code on insert, so imports and the demo are coded without
# copying free text anywhere; anything else stays uncoded until a clinician or administrator codes it.

#: A starter list (the clinic renames or retires what it does not use); no patient's text is ever copied.
DIAGNOSIS_SEED = ("Complex regional pain syndrome", "Fibromyalgia", "Neuropathic pain", "Chronic low back pain",
                  "Headache disorder", "Other chronic pain")
DIAGNOSIS_LABEL_MAX = 80

_DIAGNOSIS_CODES_SCHEMA = [
    f"""CREATE TABLE diagnosis_codes (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL UNIQUE COLLATE NOCASE
            CHECK (length(trim(label)) BETWEEN 1 AND {DIAGNOSIS_LABEL_MAX} AND label = trim(label)),
        retired_at TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL) STRICT""",
    """CREATE TRIGGER diagnosis_codes_no_delete BEFORE DELETE ON diagnosis_codes
        BEGIN SELECT RAISE(ABORT, 'diagnosis codes are kept: retire a code instead of deleting it'); END""",
    "ALTER TABLE patients ADD COLUMN diagnosis_code INTEGER REFERENCES diagnosis_codes(id)",
    "CREATE INDEX patients_by_diagnosis_code ON patients (diagnosis_code)",
    """CREATE TRIGGER patients_code_from_note AFTER INSERT ON patients
        WHEN NEW.diagnosis_code IS NULL AND NEW.diagnosis IS NOT NULL
        BEGIN UPDATE patients SET diagnosis_code = (SELECT id FROM diagnosis_codes
            WHERE retired_at IS NULL AND label = trim(NEW.diagnosis) COLLATE NOCASE) WHERE id = NEW.id; END""",
]


@MIGRATIONS(name="0007_diagnosis_codes")
def _diagnosis_codes(db: Database) -> None:
    for statement in _DIAGNOSIS_CODES_SCHEMA:
        db.execute(statement)
    now = _now()
    for label in DIAGNOSIS_SEED:
        db.execute("INSERT INTO diagnosis_codes (label, created_at, created_by) VALUES (?, ?, 'migration')",
                   [label, now])
    # Patients enrolled before: coded where the note is exactly a starter label, else "not coded".
    db.execute("UPDATE patients SET diagnosis_code = (SELECT id FROM diagnosis_codes WHERE "
               "label = trim(patients.diagnosis) COLLATE NOCASE) WHERE diagnosis IS NOT NULL")


def _clean_label(problems: list[str], label: Any) -> str:
    if not isinstance(label, str) or not label.strip():
        problems.append("label is required: type the diagnosis as it should appear in reports, for example "
                        "'Fibromyalgia'")
        return ""
    text = " ".join(label.split())
    if len(text) > DIAGNOSIS_LABEL_MAX:
        problems.append(f"label is {len(text)} characters long; shorten it to at most {DIAGNOSIS_LABEL_MAX}")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        problems.append("label contains a control or invisible character; retype it")
    return text


def _label_taken(conn: sqlite3.Connection, label: str, code: int | None = None) -> str | None:
    row = conn.execute("SELECT id FROM diagnosis_codes WHERE label = ? COLLATE NOCASE AND id IS NOT ?",
                       [label, code]).fetchone()
    return None if row is None else (f"a diagnosis code labelled {label!r} already exists (code {row[0]}); "
                                     "use it, or choose another label")


def _code_row(conn: sqlite3.Connection, code: Any) -> tuple[int, str, str | None]:
    if isinstance(code, bool) or not isinstance(code, (int, np.integer)):
        raise ValidationError(f"A diagnosis code is a number from the clinic's list, got {code!r}")
    row = conn.execute("SELECT id, label, retired_at FROM diagnosis_codes WHERE id = ?", [int(code)]).fetchone()
    if row is None:
        raise NotFound(f"No diagnosis code {code!r}; reload the list of diagnosis codes")
    return int(row[0]), str(row[1]), row[2]


def load_diagnosis_codes(db: Database, *, retired: bool = True) -> pd.DataFrame:
    """The clinic's diagnosis codes: ``code, label, retired_at, created_at, created_by, patients`` (how many
    patients hold it), by label; ``retired=False`` leaves retired codes out (what a form offers)."""
    where = "" if retired else " WHERE c.retired_at IS NULL"
    return _frame(db, "SELECT c.id AS code, c.label, c.retired_at, c.created_at, c.created_by, "
                      "(SELECT count(*) FROM patients p WHERE p.diagnosis_code = c.id) AS patients "
                      f"FROM diagnosis_codes c{where} ORDER BY c.label COLLATE NOCASE",
                  ints=["code", "patients"], stamps=["retired_at", "created_at"])


def add_diagnosis_code(db: Database, label: str, *, by: str) -> int:
    """Add a code to the clinic's list; returns its number. Raises ValidationError (empty, too long, taken)."""
    problems: list[str] = []
    who, text = _who(problems, by, "by"), _clean_label(problems, label)
    _raise_if(problems, "Cannot add the diagnosis code")
    with _write(db) as conn:
        _raise_if([p for p in [_label_taken(conn, text)] if p], "Cannot add the diagnosis code")
        return _insert(conn, "diagnosis_codes", {"label": text, "created_at": _now(), "created_by": who})


def rename_diagnosis_code(db: Database, code: int, label: str, *, by: str) -> str:
    """Change a code's label (every patient holding it follows); returns the old label."""
    problems: list[str] = []
    _who(problems, by, "by")
    text = _clean_label(problems, label)
    _raise_if(problems, "Cannot rename the diagnosis code")
    with _write(db) as conn:
        number, old, _ = _code_row(conn, code)
        if old == text:
            _raise_if([f"the label is already {text!r}; type the new label"], "Cannot rename the diagnosis code")
        _raise_if([p for p in [_label_taken(conn, text, number)] if p], "Cannot rename the diagnosis code")
        conn.execute("UPDATE diagnosis_codes SET label = ? WHERE id = ?", [text, number])
        return old


def retire_diagnosis_code(db: Database, code: int, *, by: str, retired: bool = True) -> str:
    """Retire a code (no longer offered for new patients; patients holding it keep it) or, with
    ``retired=False``, offer it again; returns its label."""
    problems: list[str] = []
    _who(problems, by, "by")
    _raise_if(problems, "Cannot change the diagnosis code")
    with _write(db) as conn:
        number, label, was = _code_row(conn, code)
        if bool(was) == retired:
            _raise_if([f"{label!r} is already {'retired' if retired else 'offered'}"],
                      "Cannot change the diagnosis code")
        conn.execute("UPDATE diagnosis_codes SET retired_at = ? WHERE id = ?", [_now() if retired else None, number])
        return label


def set_diagnosis_code(db: Database, patient_id: str, code: int | None, *, reason: str | None, by: str) -> str | None:
    """Give a patient a diagnosis code (None: not coded); returns the code's label.

    With a ``reason`` the change goes into the record's trail (a correction: before and after as labels);
    without one it is part of the enrolment that calls it (``clinic.enrol_patient``, in the same
    transaction as the new patient: the code chosen on the form replaces one matched from the note). A
    retired code cannot be given.
    """
    problems: list[str] = []
    who = _who(problems, by, "by")
    why = _reason(problems, reason) if reason is not None else None
    what = "Cannot set the diagnosis code"
    _raise_if(problems, what)
    with _write(db) as conn:
        row = _record_row(conn, "patient", patient_id)
        label = None
        if code is not None:
            number, label, retired = _code_row(conn, code)
            if retired and number != row["diagnosis_code"]:
                _raise_if([f"{label!r} is retired; choose a current code, or offer it again on the "
                           "Diagnosis codes page"], what)
        else:
            number = None
        before = (None if row["diagnosis_code"] is None else
                  conn.execute("SELECT label FROM diagnosis_codes WHERE id = ?", [row["diagnosis_code"]]).fetchone()[0])
        if number == row["diagnosis_code"]:
            if why is not None:
                _raise_if(["nothing was changed: the patient already has this diagnosis code"], what)
            return label
        conn.execute("UPDATE patients SET diagnosis_code = ? WHERE id = ?", [number, row["id"]])
        if why is not None:
            _log_change(conn, row, "patient", "correct", {"diagnosis_code": before}, {"diagnosis_code": label},
                        why, who)
        return label


def code_patients_by_note(db: Database, note: str, code: int, *, reason: str, by: str) -> int:
    """Give ``code`` to every patient not yet coded whose diagnosis note reads exactly ``note`` (ignoring case
    and outer spaces); each change goes into the record's trail. Returns how many patients were coded."""
    problems: list[str] = []
    who, why = _who(problems, by, "by"), _reason(problems, reason)
    if not isinstance(note, str) or not note.strip():
        problems.append("note is required: choose a diagnosis note as entered")
    _raise_if(problems, "Cannot code the patients")
    with _write(db) as conn:
        number, label, retired = _code_row(conn, code)
        if retired:
            _raise_if([f"{label!r} is retired; offer it again first"], "Cannot code the patients")
        ids = [r[0] for r in conn.execute("SELECT patient_id FROM patients WHERE diagnosis_code IS NULL AND "
                                          "trim(diagnosis) = trim(?) COLLATE NOCASE", [note])]
        for pid in ids:
            row = _record_row(conn, "patient", pid)
            conn.execute("UPDATE patients SET diagnosis_code = ? WHERE id = ?", [number, row["id"]])
            _log_change(conn, row, "patient", "correct", {"diagnosis_code": None}, {"diagnosis_code": label}, why, who)
        return len(ids)


def load_diagnosis_notes(db: Database) -> pd.DataFrame:
    """Diagnosis notes of patients not yet coded, with how many patients share each (identified: free text):
    ``note, patients``, most frequent first."""
    return _frame(db, "SELECT trim(diagnosis) AS note, count(*) AS patients FROM patients WHERE diagnosis_code "
                      "IS NULL AND diagnosis IS NOT NULL AND trim(diagnosis) <> '' GROUP BY trim(diagnosis) "
                      "COLLATE NOCASE ORDER BY patients DESC, note", ints=["patients"])


def load_patient_diagnoses(db: Database) -> pd.DataFrame:
    """Every patient's diagnosis code: ``patient_id, diagnosis_code`` (Int64, <NA>: not coded) and
    ``diagnosis_label`` (None when not coded), by patient ID."""
    return _frame(db, "SELECT p.patient_id, p.diagnosis_code, c.label AS diagnosis_label FROM patients p "
                      "LEFT JOIN diagnosis_codes c ON c.id = p.diagnosis_code ORDER BY p.patient_id",
                  ints=["diagnosis_code"])


# Corrections, voids, cancellations and dispositions: the record's trail ----------------------------

_RECORD_TABLES = {"patient": "patients", "series": "series", "infusion": "infusions",
                  "adverse_event": "adverse_events", "assessment": "assessments"}
_RECORD_NAMES = {"patient": "patient", "series": "series", "infusion": "infusion",
                 "adverse_event": "adverse event", "assessment": "assessment"}
#: The patient a record belongs to (an SQL expression over the record's table, aliased r).
_OWNER = {"patient": "r.id", "series": "r.patient_ref", "assessment": "r.patient_ref",
          "infusion": "(SELECT patient_ref FROM series WHERE id = r.series_ref)",
          "adverse_event": "(SELECT s.patient_ref FROM infusions i JOIN series s ON s.id = i.series_ref "
                           "WHERE i.id = r.infusion_ref)"}


def _reason(problems: list[str], reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        problems.append("reason is required: say why the record is changed (for example 'typed the wrong "
                        "date')")
        return ""
    if len(reason) > 500:
        problems.append(f"reason is {len(reason)} characters long; shorten it to at most 500")
    return reason.strip()


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


ALERT_CANDIDATE_COLUMNS = ("assessment_id", "patient_id", "domain", "assessed_on", "t_score", "previous_t",
                           "previous_on", "latest")


def load_alert_candidates(db: Database, assessment_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Active scores with the patient's previous active score in the domain, for the alert rules.

    Parameters
    ----------
    assessment_ids
        These scores; None: every patient's latest score per domain.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ALERT_CANDIDATE_COLUMNS`; ``latest`` is True for the patient's latest score in the
        domain. Scores that are not active (replaced, voided) are left out.
    """
    if assessment_ids is None:
        return _latest_with_previous(db)
    ids = _JSON_COMPACT([int(i) for i in assessment_ids])
    scope = ("AND patient_ref IN (SELECT patient_ref FROM assessments WHERE id IN "
             "(SELECT value FROM json_each(?)))")
    pick, params = "c.id IN (SELECT value FROM json_each(?))", [ids, ids]
    return _frame(db, "SELECT c.id AS assessment_id, p.patient_id, c.domain, c.assessed_on, c.t_score, "
                      "c.previous_t, c.previous_on, c.recency = 1 AS latest FROM ("
                      "SELECT id, patient_ref, domain, assessed_on, t_score, "
                      "lag(t_score) OVER w AS previous_t, lag(assessed_on) OVER w AS previous_on, "
                      "row_number() OVER (PARTITION BY patient_ref, domain ORDER BY assessed_on DESC) AS recency "
                      f"FROM assessments WHERE superseded_by IS NULL {scope} "
                      "WINDOW w AS (PARTITION BY patient_ref, domain ORDER BY assessed_on)) c "
                      f"JOIN patients p ON p.id = c.patient_ref WHERE {pick} ORDER BY p.patient_id, c.domain, "
                      "c.assessed_on", params, dates=["assessed_on", "previous_on"], ints=["assessment_id"],
                  floats=["t_score", "previous_t"]).astype({"latest": bool})


def _latest_with_previous(db: Database) -> pd.DataFrame:
    """Every patient's latest active score per domain with the one before it, from the covering index
    (a GROUP BY walk and two index seeks per patient: about 1 s per domain at 100,000 patients, where a
    window over the table rows took 40 s)."""
    frames = []
    for domain in DOMAINS:
        frames.append(_frame(
            db, "SELECT l.id AS assessment_id, p.patient_id, ? AS domain, l.assessed_on, l.t_score, "
                "(SELECT b.t_score FROM assessments b INDEXED BY assessments_cohort WHERE b.domain = ? AND "
                "b.patient_ref = l.patient_ref AND b.superseded_by IS NULL AND b.assessed_on < l.assessed_on "
                "ORDER BY b.assessed_on DESC LIMIT 1) AS previous_t, "
                "(SELECT max(b.assessed_on) FROM assessments b INDEXED BY assessments_cohort WHERE b.domain = ? "
                "AND b.patient_ref = l.patient_ref AND b.superseded_by IS NULL AND b.assessed_on < l.assessed_on) "
                "AS previous_on, 1 AS latest FROM (SELECT a.patient_ref, a.id, max(a.assessed_on) AS assessed_on, "
                "a.t_score FROM assessments a INDEXED BY assessments_cohort WHERE a.domain = ? AND "
                "a.superseded_by IS NULL GROUP BY a.patient_ref) l JOIN patients p ON p.id = l.patient_ref",
            [domain] * 4, dates=["assessed_on", "previous_on"], ints=["assessment_id"],
            floats=["t_score", "previous_t"]))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ALERT_CANDIDATE_COLUMNS)
    return (out.astype({"latest": bool}).sort_values(["patient_id", "domain", "assessed_on"])
            .reset_index(drop=True)[list(ALERT_CANDIDATE_COLUMNS)])


def acknowledge_alerts(db: Database, alert_ids: Sequence[int], *, by: str, now: datetime,
                       note: str | None = None) -> int:
    """Acknowledge several open alerts at once (the demo's history of reviewed alerts); returns how many."""
    problems: list[str] = []
    who = _who(problems, by, "by")
    _raise_if(problems, "Cannot acknowledge the alerts")
    with _write(db) as conn:
        return conn.executemany("UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, note = ? "
                                "WHERE id = ? AND acknowledged_at IS NULL",
                                [(who, _stamp(now), note, int(i)) for i in alert_ids]).rowcount


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


@contextmanager
def transaction(db: Database, *, bump: bool = True) -> Iterator[Database]:
    """Run several write verbs as one ``BEGIN IMMEDIATE`` transaction: all commit or none.

    The verbs called inside become savepoints of this transaction. Reads inside it see a stable
    snapshot, because the write lock is taken before the first read.

    Parameters
    ----------
    bump
        Bump ``data_version`` (set False for bookkeeping that no cached page shows, such as sign-ins).

    Example
    -------
    >>> db = connect(":memory:")
    >>> with transaction(db):
    ...     _ = add_patient(db, patient_id="P001", entered_by="dr.lee")
    ...     _ = append_audit(db, actor="dr.lee", action="enrol_patient", patient_id="P001")
    """
    with _write(db, bump=bump):
        yield db


def _stamp(moment: datetime) -> str:
    """A timezone-aware moment as UTC ISO text, so stored timestamps sort and compare as text."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime such as datetime.now(UTC), got {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def clean_user(*, username: Any, role: Any, patient_id: Any = None, email: Any = None,
               display_name: Any = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check a user's fields (not the password: see ``auth.password_problems``).

    Usernames are 3 to 64 letters, digits and ``. _ @ -`` starting with a letter or digit, compared
    without case. A patient login names the enrolled patient it belongs to; other roles name none.
    See :func:`clean_patient` for the return value.
    """
    f = _Fields(None)
    name = username.strip() if isinstance(username, str) else username
    if f.required("username", name, True):
        if not isinstance(name, str) or not USERNAME.fullmatch(name):
            f.fail(f"username {name!r} must be 3 to 64 characters: letters, digits and . _ @ -, "
                   "starting with a letter or digit")
            name = None
    else:
        name = None
    values = {
        "username": name,
        "role": f.choice("role", role, ROLES, required=True),
        "patient_id": None,
        "email": None,
        "display_name": f.text("display_name", display_name, max_len=200),
    }
    if values["role"] == "patient" and _missing(patient_id):
        f.fail("a patient login must name the enrolled patient it belongs to (patient_id)")
    elif values["role"] == "patient":
        values["patient_id"] = f.identifier("patient_id", patient_id)
    elif values["role"] is not None and not _missing(patient_id):
        f.fail(f"only patient logins are linked to a patient; a {values['role']} login cannot be")
    if not _missing(email):
        text = email.strip() if isinstance(email, str) else email
        if not isinstance(text, str) or len(text) > 254 or not EMAIL.fullmatch(text):
            f.fail(f"email {email!r} is not an email address such as name@hospital.org")
        else:
            values["email"] = text.lower()  # identity providers differ in case; addresses do not
    return values, f.problems


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


# Sign-in throttling (security issue, findings 4, 5 and 16) ------------------------------------------------

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
    from .deployment import derive_key  # deployment imports this module

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


def add_alerts(db: Database, alerts: Sequence[Mapping[str, Any]], *, now: datetime) -> list[int]:
    """Store alerts, each ``{patient_id, assessment_id, domain, t_score, priority, reason}``."""
    for alert in alerts:
        if alert["priority"] not in PRIORITIES:
            raise ValueError(f"alert priority must be one of {PRIORITIES}, got {alert['priority']!r}")
    with _write(db) as conn:
        if len(alerts) > 50:  # a bulk load (the demo, an import): one lookup of every patient, one statement
            refs = dict(conn.execute("SELECT patient_id, id FROM patients"))
            first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM alerts").fetchone()[0]
            stamp = _stamp(now)
            conn.executemany("INSERT INTO alerts (patient_ref, assessment_ref, domain, t_score, priority, reason, "
                             "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(refs[a["patient_id"]], a["assessment_id"], a["domain"], a["t_score"], a["priority"],
                               a["reason"], stamp) for a in alerts])
            return list(range(first, first + len(alerts)))  # under the write lock, ids follow the list
        return [_insert(conn, "alerts", {
            "patient_ref": _patient_ref(conn, alert["patient_id"]), "assessment_ref": alert["assessment_id"],
            "domain": alert["domain"], "t_score": alert["t_score"], "priority": alert["priority"],
            "reason": alert["reason"], "created_at": _stamp(now)}) for alert in alerts]


def acknowledge_alert(db: Database, alert_id: int, *, by: str, now: datetime,
                      note: str | None = None) -> str:
    """Mark an alert acknowledged by ``by`` at ``now``; returns the alert's patient ID.

    Raises
    ------
    NotFound
        No alert with this id.
    ValidationError
        The alert was already acknowledged (by whom and when is in the message), or a bad note.
    """
    problems: list[str] = []
    who = _who(problems, by, "by")
    f = _Fields(None)
    note = f.text("note", note)
    _raise_if(problems + f.problems, f"Cannot acknowledge alert {alert_id}")
    with _write(db) as conn:
        row = conn.execute("SELECT p.patient_id, a.acknowledged_by, a.acknowledged_at FROM alerts a "
                           "JOIN patients p ON p.id = a.patient_ref WHERE a.id = ?", [alert_id]).fetchone()
        if row is None:
            raise NotFound(f"No alert with id {alert_id}; reload the list of open alerts")
        if row[1] is not None:
            _raise_if([f"it was already acknowledged by {row[1]} at {row[2][:16].replace('T', ' ')} UTC"],
                      f"Cannot acknowledge alert {alert_id}")
        conn.execute("UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, note = ? WHERE id = ?",
                     [who, _stamp(now), note, alert_id])
        return str(row[0])


ALERT_COLUMNS = ("alert_id", "patient_id", "domain", "t_score", "priority", "reason", "created_at",
                 "assessment_id", "assessed_on", "entry_replaced", "acknowledged_by", "acknowledged_at",
                 "note")


def load_alerts(db: Database, *, patient_id: str | None = None, open_only: bool = False) -> pd.DataFrame:
    """Alerts, high priority first, then oldest first.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ALERT_COLUMNS`; ``entry_replaced`` is True when the check-in that raised the
        alert was later replaced by a corrected entry (the alert stays until acknowledged).
    """
    where, params = _patient_filter(patient_id)
    if open_only:
        where += " AND a.acknowledged_at IS NULL"
    df = _frame(db, "SELECT a.id AS alert_id, p.patient_id, a.domain, a.t_score, a.priority, a.reason, "
                    "a.created_at, a.assessment_ref AS assessment_id, s.assessed_on, "
                    "s.superseded_by IS NOT NULL AS entry_replaced, a.acknowledged_by, a.acknowledged_at, "
                    "a.note "
                    "FROM alerts a JOIN patients p ON p.id = a.patient_ref "
                    "JOIN assessments s ON s.id = a.assessment_ref WHERE 1" + where +
                    f" ORDER BY a.priority <> '{PRIORITIES[0]}', a.created_at, a.id", params,
                dates=["assessed_on"], ints=["alert_id", "assessment_id"], floats=["t_score"],
                stamps=["created_at", "acknowledged_at"])
    return df.astype({"entry_replaced": bool})


def load_alert_summary(db: Database) -> pd.DataFrame:
    """Per patient with open alerts: ``patient_id, open_alerts, top_priority``."""
    return _frame(db, f"SELECT p.patient_id, count(*) AS open_alerts, CASE WHEN max(a.priority = "
                      f"'{PRIORITIES[0]}') THEN '{PRIORITIES[0]}' ELSE '{PRIORITIES[1]}' END AS top_priority "
                      "FROM alerts a JOIN patients p ON p.id = a.patient_ref "
                      "WHERE a.acknowledged_at IS NULL GROUP BY a.patient_ref", ints=["open_alerts"])


def load_patient(db: Database, patient_id: str) -> pd.DataFrame:
    """The one-row frame of :func:`load_patients` for this patient, with its ``diagnosis_code`` and
    ``diagnosis_label`` (:func:`load_patient_diagnoses`); empty when unknown."""
    return _frame(db, _PATIENT_READ.replace(" FROM patients", ", diagnosis_code, (SELECT label FROM diagnosis_codes c "
                                            "WHERE c.id = diagnosis_code) AS diagnosis_label FROM patients")
                  + " WHERE patient_id = ?", [patient_id], dates=["enrolled_on", "disposition_on"],
                  ints=["birth_year", "diagnosis_code"], stamps=["entered_at"])


def series_patient(db: Database, series_id: int) -> str | None:
    """The patient ID a series belongs to, or None for an unknown series."""
    row = db.conn.execute("SELECT p.patient_id FROM series s JOIN patients p ON p.id = s.patient_ref "
                          "WHERE s.id = ?", [series_id]).fetchone()
    return None if row is None else str(row[0])


SCORE_SUMMARY_COLUMNS = ("patient_id", "domain", "assessed_on", "t_score", "se")


def load_latest_scores(db: Database, *, patient_id: str | None = None,
                       before: date | None = None) -> pd.DataFrame:
    """The latest active score per patient and domain (optionally only scores dated before ``before``).

    One aggregate query whatever the number of patients. Columns :data:`SCORE_SUMMARY_COLUMNS`.
    """
    where, params = _patient_filter(patient_id)
    if before is not None:
        where += " AND a.assessed_on < ?"
        params.append(before.isoformat())
    # SQLite documents that with max() the other (bare) columns come from the row holding the maximum;
    # active rows are unique per patient, domain and day, so that row is the latest score.
    return _frame(db, "SELECT p.patient_id, a.domain, max(a.assessed_on) AS assessed_on, a.t_score, a.se "
                      "FROM assessments a JOIN patients p ON p.id = a.patient_ref "
                      "WHERE a.superseded_by IS NULL" + where + " GROUP BY a.patient_ref, a.domain "
                      "ORDER BY p.patient_id, a.domain", params,
                  dates=["assessed_on"], floats=["t_score", "se"])


def load_baseline_candidates(db: Database, baseline_days: int) -> pd.DataFrame:
    """Active scores that can be a baseline, for every patient in one query.

    These are the scores dated from ``baseline_days`` before the first infusion of any series up to
    that day, plus each patient's first score per domain (the baseline when there is no series).
    Columns :data:`SCORE_SUMMARY_COLUMNS`; which of them is the baseline is decided by the caller.
    """
    offset = f"-{int(baseline_days)} days"
    # CROSS JOIN makes SQLite walk the series and range-scan assessments_by_patient for each (the IN
    # list lets it use the index past the domain column): 5x faster than its own plan on 10,000 patients.
    return _frame(db, "SELECT p.patient_id, c.domain, c.assessed_on, c.t_score, c.se FROM ("
                      "SELECT a.patient_ref, a.domain, a.assessed_on, a.t_score, a.se FROM series s "
                      "CROSS JOIN assessments a ON a.patient_ref = s.patient_ref AND " + _GIVEN + " "
                      f"AND a.domain IN {_in(DOMAINS)} "
                      "AND a.assessed_on BETWEEN date(s.first_infusion, ?) AND s.first_infusion "
                      "WHERE a.superseded_by IS NULL "
                      "UNION SELECT a.patient_ref, a.domain, min(a.assessed_on), a.t_score, a.se "
                      "FROM assessments a WHERE a.superseded_by IS NULL GROUP BY a.patient_ref, a.domain"
                      ") c JOIN patients p ON p.id = c.patient_ref "
                      "ORDER BY p.patient_id, c.domain, c.assessed_on",
                  [offset], dates=["assessed_on"], floats=["t_score", "se"])


def first_patient_with_assessments(db: Database, prefix: str = "") -> str | None:
    """The first patient ID (in ID order) starting with ``prefix`` that has an active score."""
    row = db.conn.execute("SELECT min(p.patient_id) FROM patients p WHERE p.patient_id GLOB ? AND EXISTS "
                          "(SELECT 1 FROM assessments a WHERE a.patient_ref = p.id "
                          "AND a.superseded_by IS NULL)",
                          [re.sub(r"([*?\[])", r"[\1]", prefix) + "*"]).fetchone()
    return None if row is None or row[0] is None else str(row[0])


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


# Backup and restore (issue 7) -----------------------------------------------------------------------
#
# SQLite's online backup API copies every page of the database in one step, that is from one read
# snapshot: writers carry on meanwhile (WAL), and the copy holds exactly the transactions committed when
# it started. The copy is a single self-contained file (rollback journal, no -wal): it can be moved,
# checked and restored as it is. A backup holds identified data and the pseudonym secret (docs/privacy.md).


@dataclass(frozen=True)
class BackupCheck:
    """What a backup file holds: its size, integrity, schema and row counts."""

    path: Path
    bytes: int
    integrity: str
    schema_version: int
    migrations: tuple[str, ...]
    counts: Mapping[str, int]
    #: After a restore: audit entries of the replaced database that the backup lacked, appended again.
    kept_audit_entries: int = 0

    def contents(self) -> str:
        """The row counts in words: "1,034 patients, 1,602 series, ..., 12,007 audit-log entries"."""
        return ", ".join(f"{n:,} {_BACKUP_COUNTED.get(table, table)}" for table, n in self.counts.items())

    def describe(self) -> str:
        return (f"{self.path} ({self.bytes:,} bytes, integrity {self.integrity}, schema version "
                f"{self.schema_version}): {self.contents()}")


#: The tables a backup check counts, with the words for their rows.
_BACKUP_COUNTED = {"patients": "patients", "series": "series", "infusions": "infusions",
                   "assessments": "assessments", "users": "user accounts", "audit_log": "audit-log entries"}


def _check_copy(conn: sqlite3.Connection, path: Path) -> BackupCheck:
    problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables or "_sqlite_migrations" not in tables:
        raise ValidationError(f"{path} is not a backup of this app's database (no meta or migrations table)")
    applied = tuple(r[0] for r in conn.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'outcomes' ORDER BY id"))
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in _BACKUP_COUNTED if t in tables}
    return BackupCheck(path, path.stat().st_size, "ok" if problems == ["ok"] else "; ".join(problems[:5]),
                       int(version[0]) if version else 0, applied, counts)


def backup(db: Database, out: str | Path) -> BackupCheck:
    """Copy the database into the file ``out``, consistently, while other connections keep writing.

    The copy is written next to ``out`` under a temporary name, checked (``PRAGMA integrity_check``),
    flushed to disk and then renamed, so ``out`` is either the complete copy or untouched.

    Raises
    ------
    StorageUnavailable
        The copy cannot be written (disk full, read-only folder); nothing is left behind.
    ValidationError
        The copy fails its integrity check (it is deleted).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        _create_owner_only(partial)  # 0600 from the first byte, not only once complete
        target = sqlite3.connect(partial)
        try:
            db.conn.backup(target)  # pages=-1: every page in one step, from one snapshot
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal
            check = _check_copy(target, partial)
        finally:
            target.close()
        if check.integrity != "ok":
            raise ValidationError(f"The backup failed its integrity check: {check.integrity}")
        os.chmod(partial, 0o600)  # identified data: readable by its owner only
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, out)
    except sqlite3.DatabaseError as exc:
        _raise_unavailable(exc)
        raise
    finally:
        partial.unlink(missing_ok=True)
    return dataclasses.replace(check, path=out)


def check_backup(path: str | Path) -> BackupCheck:
    """Open a backup read-only and report what it holds (raises ValidationError when it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"No backup file at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _check_copy(conn, path)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ValidationError(f"{path} is not a readable SQLite backup: {exc}") from None


def restore(path: str | Path, backup_file: str | Path, *, keep: str | Path | None = None) -> BackupCheck:
    """Replace the database at ``path`` by the backup ``backup_file``, in one transaction.

    Connections that stay open (a running app) see the restored database at their next read. The
    backup is checked first; an older backup is migrated to the current schema afterwards, a backup
    made by a newer version of the app is refused. ``data_version`` ends above both databases' values,
    so no cache keyed on it can serve results computed before the restore.

    Parameters
    ----------
    keep
        Where to save a backup of the database being replaced first (when it exists).

    Raises
    ------
    ValidationError
        The backup is damaged, not this app's, or from a newer schema; the database is untouched.
    """
    check = check_backup(backup_file)
    if check.integrity != "ok":
        raise ValidationError(f"The backup {backup_file} is damaged ({check.integrity}); nothing was "
                              "restored")
    known = [m.name for m in MIGRATIONS._migrations]
    if unknown := [m for m in check.migrations if m not in known]:
        raise ValidationError(f"The backup {backup_file} was made by a newer version of the app (schema "
                              f"steps {', '.join(unknown)}); upgrade the app first. Nothing was restored")
    target = open_db(path)
    try:
        before = data_version(target) if "meta" in target.table_names() else 0
        if keep is not None and Path(path).exists() and target.table_names():
            backup(target, keep)
        # The audit log is never lost to a restore, --no-keep or not: read it just before the copy and
        # append what the backup lacks afterwards (entries written in between by a running app are not).
        replaced_log = _audit_entries(target.conn)
        source = sqlite3.connect(f"{Path(backup_file).resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.backup(target.conn)
        except sqlite3.DatabaseError as exc:
            _raise_unavailable(exc)
            raise
        finally:
            source.close()
        migrate(target)
        with _write(target, bump=False) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'data_version'",
                         [str(max(before, data_version(target)) + 1)])
            kept = _append_missing_audit_entries(conn, replaced_log)
        restored = dataclasses.replace(_check_copy(target.conn, Path(path)), kept_audit_entries=kept)
    finally:
        target.close()
    return restored


def _audit_entries(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Every audit entry, oldest first, as (at, actor, action, patient ID, details); the patient by the
    clinic's ID, since another database may number its patients differently. None in a new file."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'").fetchone():
        return []
    return conn.execute("SELECT l.at, l.actor, l.action, p.patient_id, l.details FROM audit_log l "
                        "LEFT JOIN patients p ON p.id = l.patient_ref ORDER BY l.id").fetchall()


def _append_missing_audit_entries(conn: sqlite3.Connection, entries: list[tuple[Any, ...]]) -> int:
    """Append, in their order, the ``entries`` the (restored) log lacks: each kept with its own time,
    actor, action and details. An entry about a patient this database does not hold keeps the patient's
    ID in its details instead of a link. Returns how many were appended."""
    from collections import Counter

    present = Counter(_audit_entries(conn))
    kept = 0
    for at, actor, action, patient_id, details in entries:
        if present[(at, actor, action, patient_id, details)] > 0:
            present[(at, actor, action, patient_id, details)] -= 1
            continue
        row = conn.execute("SELECT id FROM patients WHERE patient_id = ?", [patient_id]).fetchone()
        if patient_id is not None and row is None:
            earlier = json.loads(details) if details else {}
            details = json.dumps({**(earlier if isinstance(earlier, dict) else {"details": earlier}),
                                  "patient_id": patient_id})
        conn.execute("INSERT INTO audit_log (at, actor, action, patient_ref, details) VALUES (?, ?, ?, ?, ?)",
                     [at, actor, action, row[0] if row else None, details])
        kept += 1
    return kept
