"""Backup and restore (docs/operations.md).

SQLite's online backup API copies every page of the database in one step, that is from one read
snapshot: writers carry on meanwhile (WAL), and the copy holds exactly the transactions committed when
it started. The copy is a single self-contained file (rollback journal, no -wal): it can be moved,
checked and restored as it is. A backup holds identified data and the pseudonym secret (docs/privacy.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..errors import NotFound, ValidationError
from .connection import _create_owner_only, _raise_unavailable, _write, data_version, migrate, open_db
from .schema import MIGRATIONS


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
