"""Security issue, findings 12 and 13: the audit log cannot be rewritten or lost, the command line audits
what it writes, and the database files are readable by their owner only.

Each test attacks the committed behaviour the issue reported and failed before the fix.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat

import pytest

from outcomes import storage
from outcomes.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def operator(monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "night.ops")
    return "cli:night.ops"


# Finding 12: INSERT OR REPLACE rewrote an audit entry despite the append-only triggers -------------------


@pytest.mark.parametrize("statement", [
    "INSERT OR REPLACE INTO audit_log (id, at, actor, action) VALUES (?, '2020-01-01', 'mallory', 'nothing')",
    "REPLACE INTO audit_log (id, at, actor, action) VALUES (?, '2020-01-01', 'mallory', 'nothing')",
], ids=["insert-or-replace", "replace-into"])
def test_replace_cannot_rewrite_an_audit_entry(tmp_path, statement):
    # REPLACE deletes the conflicting row without firing DELETE triggers unless recursive_triggers is on.
    # sqlite-utils turns it on for the app's own connections, but any other client (the sqlite3 shell,
    # Python's sqlite3) has it off, and there the append-only triggers of migration 0001 did not stop it.
    db = storage.connect(tmp_path / "clinic.db")
    entry = storage.append_audit(db, actor="ada.admin", action="export", details={"what": "audit log"})
    before = storage.load_audit_log(db)
    other = sqlite3.connect(tmp_path / "clinic.db")
    assert other.execute("PRAGMA recursive_triggers").fetchone() == (0,)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            other.execute(statement, [entry])
        other.commit()
    finally:
        other.close()
    assert storage.load_audit_log(db).equals(before)
    db.close()


def test_new_entries_are_still_appended_after_the_hardening(db):
    first = storage.append_audit(db, actor="ada.admin", action="login")
    second = storage.append_audit(db, actor="ada.admin", action="logout")
    assert second == first + 1
    assert "0006_audit_hardening" in [m.name for m in storage.MIGRATIONS._migrations]


# Finding 12: restore --no-keep dropped audit entries newer than the backup ----------------------------------


def test_restore_keeps_audit_entries_made_after_the_backup(tmp_path, operator):
    live = tmp_path / "clinic.db"
    db = storage.connect(live)
    storage.add_patient(db, patient_id="P001", entered_by="setup")
    storage.append_audit(db, actor="ada.admin", action="view_record", patient_id="P001")
    assert run("backup", "--db", str(live), "--out", str(tmp_path / "b.db"))[0] == 0
    # After the backup: a patient the backup does not know, and entries someone may want to hide.
    storage.add_patient(db, patient_id="P-LATE", entered_by="setup")
    storage.append_audit(db, actor="mallory", action="export", details={"what": "identified dataset"})
    storage.append_audit(db, actor="mallory", action="view_record", patient_id="P-LATE")
    storage.append_audit(db, actor="mallory", action="view_record", patient_id="P001")
    db.close()

    code, out, err = run("restore", str(tmp_path / "b.db"), "--db", str(live), "--no-keep")
    assert code == 0, err
    assert not list(tmp_path.glob("*.before-restore-*"))                  # --no-keep: no copy kept
    with storage.open_db(live) as db:
        log = storage.load_audit_log(db).iloc[::-1]                      # oldest first
        assert "P-LATE" not in set(storage.load_patients(db)["patient_id"])  # the data are the backup's
    mallory = log[log["actor"] == "mallory"]
    assert mallory["action"].tolist() == ["export", "view_record", "view_record"]
    assert json.loads(mallory["details"].iloc[0]) == {"what": "identified dataset"}
    # the entry about a patient the restored database does not hold keeps the patient's ID in its details
    assert json.loads(mallory["details"].iloc[1]) == {"patient_id": "P-LATE"}
    assert mallory["patient_id"].iloc[2] == "P001"
    restore = log[log["action"] == "restore"].iloc[-1]
    # kept: mallory's three, and the backup command's own entry (written after its copy was taken)
    assert restore["actor"] == operator and json.loads(restore["details"])["audit_entries_kept"] == 4
    assert "4 audit-log entries made after the backup were kept" in out
    # nothing is kept twice: the backup's own entries are there once
    assert (log["action"] == "backup").sum() == 1 and (log["actor"] == "ada.admin").sum() == 1


def test_restoring_the_same_backup_twice_keeps_nothing_twice(tmp_path):
    live = tmp_path / "clinic.db"
    db = storage.connect(live)
    storage.append_audit(db, actor="ada.admin", action="login")
    storage.backup(db, tmp_path / "b.db")
    storage.append_audit(db, actor="ada.admin", action="logout")
    db.close()
    assert storage.restore(live, tmp_path / "b.db").kept_audit_entries == 1
    assert storage.restore(live, tmp_path / "b.db").kept_audit_entries == 1  # the same entry, once more
    with storage.open_db(live) as db:
        assert storage.load_audit_log(db)["action"].tolist().count("logout") == 1


# Finding 12: the command-line import wrote no audit entry --------------------------------------------------


def test_the_command_line_import_is_audited(tmp_path, operator):
    live = tmp_path / "clinic.db"
    patients = tmp_path / "patients.csv"
    patients.write_text("patient_id,diagnosis,sex,birth_year\nP100,CRPS,F,1970\nP101,CRPS,M,1980\n")
    code, out, err = run("import", "--db", str(live), "--patients", str(patients))
    assert code == 0, err
    with storage.open_db(live) as db:
        entries = storage.load_audit_log(db, action="import")
    assert len(entries) == 1 and entries["actor"].iloc[0] == operator
    details = json.loads(entries["details"].iloc[0])
    assert details["files"] == {"patients": str(patients)}
    assert (details["patients_added"], details["series_added"], details["scores_added"]) == (2, 0, 0)
    assert details["alerts"] == 0
    with storage.open_db(live) as db:  # the rows name who loaded them, as the audit entry does
        assert set(storage.load_patients(db)["entered_by"]) == {operator}


def test_a_refused_command_line_import_writes_nothing_not_even_an_audit_entry(tmp_path, operator):
    live = tmp_path / "clinic.db"
    bad = tmp_path / "patients.csv"
    bad.write_text("patient_id,sex\nP100,not a sex\n")
    assert run("import", "--db", str(live), "--patients", str(bad))[0] == 1
    with storage.open_db(live) as db:
        assert storage.load_audit_log(db, action="import").empty


# Finding 13: the live database and its WAL were world-readable (0644) --------------------------------------


def test_a_new_database_its_wal_and_shared_memory_are_readable_by_the_owner_only(tmp_path):
    old = os.umask(0o022)  # the usual umask, under which SQLite made every file 0644
    try:
        db = storage.connect(tmp_path / "data" / "clinic.db")
        storage.add_patient(db, patient_id="P001", entered_by="setup")
        files = [tmp_path / "data" / name for name in ("clinic.db", "clinic.db-wal", "clinic.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        db.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_tightened_when_the_app_opens_it(tmp_path):
    path = tmp_path / "clinic.db"
    storage.connect(path).close()
    os.chmod(path, 0o644)
    db = storage.connect(path)
    storage.add_patient(db, patient_id="P001", entered_by="setup")
    assert oct(mode(path)) == "0o600" and oct(mode(f"{path}-wal")) == "0o600"
    db.close()


def test_a_backup_is_never_readable_by_others_even_while_it_is_written(tmp_path, monkeypatch):
    db = storage.connect(tmp_path / "clinic.db")
    seen = []
    real = storage._check_copy

    def watch(conn, path):  # runs while the copy is still the partial file, before the rename
        seen.append((path.name.endswith(".partial"), mode(path)))
        return real(conn, path)

    monkeypatch.setattr(storage, "_check_copy", watch)
    old = os.umask(0o022)
    try:
        storage.backup(db, tmp_path / "out" / "b.db")
    finally:
        os.umask(old)
    assert seen == [(True, 0o600)] and mode(tmp_path / "out" / "b.db") == 0o600
