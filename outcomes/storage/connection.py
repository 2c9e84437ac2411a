"""Connections and transactions: open a database, migrate it, and make every write one transaction.

Every connection runs WAL with a 30 s busy timeout and foreign keys on (docs/architecture.md). Every
write is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock before its first read, so two
writers queue behind the busy timeout instead of failing with "database is locked" when a deferred
transaction tries to upgrade its read snapshot. A rejected write raises before ``COMMIT`` and leaves
the database unchanged; an SQLite error that means the database cannot be written or reached becomes
:class:`~outcomes.errors.StorageUnavailable`. The ``meta`` table (``data_version``, ``synthetic``...) is
read and set here too.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from ..errors import StorageUnavailable
from .schema import MIGRATIONS

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
    """Open a connection WITHOUT migrating: use :func:`connect` unless the schema is known to be current.

    Only sets the project's PRAGMAs. :func:`connect` calls this and then :func:`migrate`; ``open_db`` alone
    is for further connections to a database already migrated (``ui/data.py`` opens one per call after
    one ``connect`` per process; the CLI after a restore), and for :func:`restore`, which migrates itself.

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
    """Apply pending migrations (:func:`connect` runs this); a no-op, read-only, when the schema is current."""
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
    """Open the database at ``path`` and MIGRATE it: the call that opens a database (app, CLI, scripts).

    Creates missing parent folders, then runs :func:`open_db` and :func:`migrate` (a no-op when the
    schema is current).

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
    >>> from outcomes.storage import add_patient, append_audit
    >>> db = connect(":memory:")
    >>> with transaction(db):
    ...     _ = add_patient(db, patient_id="P001", entered_by="dr.lee")
    ...     _ = append_audit(db, actor="dr.lee", action="enrol_patient", patient_id="P001")
    """
    with _write(db, bump=bump):
        yield db


# The meta table ----------------------------------------------------------------------------------------


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
