"""Issue 7, backup and restore: ``python -m outcomes backup`` / ``restore`` and the admin's Backup page.

A backup taken while writers run is a consistent snapshot: integrity ``ok``, and every check-in in it is
complete, with exactly the domains its audit entry lists (data and audit are one transaction, and the copy
is one read snapshot). Later backups contain everything earlier ones did. Restoring brings back exactly the
backup's rows, into a fresh file or over the live database while a connection stays open, keeps the
replaced database, and leaves the database writable. Damaged, foreign and newer-schema backups are refused
without touching anything.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from outcomes import storage
from outcomes.cli import main
from outcomes.errors import ValidationError
from tests.reliability import harness

WRITERS, PER_WRITER = 8, 25


def table_rows(path, *, skip_meta: bool = True) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall() for t in names
                if not (skip_meta and t == "meta")}
    finally:
        conn.close()


def checkins_of(path) -> dict[tuple[str, str], set[str]]:
    """(patient, day) -> active domains, checked against the audit entries of the same file."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored: dict[tuple[str, str], set[str]] = {}
        for pid, day, domain in conn.execute(
                "SELECT p.patient_id, a.assessed_on, a.domain FROM assessments a JOIN patients p "
                "ON p.id = a.patient_ref WHERE a.superseded_by IS NULL AND p.patient_id <> ?", [harness.SHARED]):
            stored.setdefault((pid, day), set()).add(domain)
        audited = {}
        for pid, details in conn.execute(
                "SELECT p.patient_id, l.details FROM audit_log l JOIN patients p ON p.id = l.patient_ref "
                "WHERE l.action = 'submit_checkin' AND p.patient_id <> ?", [harness.SHARED]):
            d = json.loads(details)
            audited[(pid, d["assessed_on"])] = set(d["domains"])
        assert stored == audited, "a check-in in the backup without its audit entry, or with domains missing"
        return stored
    finally:
        conn.close()


@pytest.mark.slow
def test_backups_taken_under_load_are_consistent_and_restore_exactly(tmp_path, figures):
    path = tmp_path / "live.db"
    users = harness.make_clinic(path, [harness.SHARED, *(f"W{w:02d}" for w in range(WRITERS))])
    backups, stop = [], threading.Event()

    def back_up_repeatedly() -> None:
        with storage.open_db(path) as db:
            while not stop.is_set() or not backups:
                backups.append(storage.backup(db, tmp_path / f"backup-{len(backups)}.db").path)
                stop.wait(0.05)

    taker = threading.Thread(target=back_up_repeatedly)
    taker.start()
    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            results = list(pool.map(lambda w: harness.checkin_writer(str(path), users["clinician"], w, PER_WRITER),
                                    range(WRITERS)))
    finally:
        stop.set()
        taker.join()
    assert [e for r in results for e in r["errors"]] == []
    harness.verify_load(path, results)

    snapshots = [checkins_of(b) for b in backups]
    for earlier, later in zip(snapshots, snapshots[1:]):
        assert set(earlier) <= set(later)  # a later backup holds everything an earlier one did
    sizes = [sum(len(d) for d in s.values()) for s in snapshots]
    assert len(set(sizes)) > 1, "every backup saw the same data: none was taken while writers ran"

    middle = backups[len(backups) // 2]
    fresh = tmp_path / "fresh.db"
    storage.restore(fresh, middle)
    assert table_rows(fresh) == table_rows(middle)

    live_before = table_rows(path)
    reader = storage.open_db(path)  # a running app's connection stays open across the restore
    kept = tmp_path / "kept.db"
    restored = storage.restore(path, middle, keep=kept)
    now, then = table_rows(path), table_rows(middle)
    assert {t: r for t, r in now.items() if t != "audit_log"} == {t: r for t, r in then.items() if t != "audit_log"}
    # The audit log is never lost to a restore: the backup's entries, then the replaced database's later ones.
    assert now["audit_log"][:len(then["audit_log"])] == then["audit_log"]
    later = [r[1:] for r in live_before["audit_log"][len(then["audit_log"]):]]
    assert [r[1:] for r in now["audit_log"][len(then["audit_log"]):]] == later
    assert restored.kept_audit_entries == len(later) > 0
    assert table_rows(kept) == live_before
    assert storage.load_assessments(reader)["assessment_id"].max() == \
        max(r[0] for r in table_rows(middle)["assessments"])
    replaced_version = int(dict(table_rows(kept, skip_meta=False)["meta"])["data_version"])
    assert storage.data_version(reader) > replaced_version  # no cache keyed on a version can serve old results
    storage.add_patient(reader, patient_id="W99", entered_by="test")
    reader.close()
    more = harness.checkin_writer(str(path), users["clinician"], 99, 3, shared_every=0)  # writable again
    assert more["errors"] == [] and len(more["saved"]) == 3
    figures(writers=WRITERS, checkins=WRITERS * PER_WRITER, backups_during_load=len(backups),
            distinct_snapshots=len(set(sizes)), domain_scores_in_backups=f"{min(sizes)}..{max(sizes)}",
            restored_rows=sum(len(v) for v in table_rows(middle).values()))


def test_the_command_line_backs_up_and_restores_and_audits_both(tmp_path, monkeypatch):
    monkeypatch.setenv("USER", "night.job")
    monkeypatch.setenv("LOGNAME", "night.job")
    path = tmp_path / "clinic.db"
    harness.make_clinic(path, ["P1", "P2"])
    out, err = io.StringIO(), io.StringIO()
    assert main(["backup", "--db", str(path), "--out", str(tmp_path / "nightly.db")], out, err) == 0, err.getvalue()
    assert "integrity ok" in out.getvalue() and "2 patients" in out.getvalue()
    assert "audit-log entries" in out.getvalue() and "audit_log" not in out.getvalue()
    with storage.open_db(path) as db:
        storage.add_patient(db, patient_id="P3", entered_by="test")
    assert main(["restore", str(tmp_path / "nightly.db"), "--db", str(path)], out, err) == 0, err.getvalue()
    with storage.open_db(path) as db:
        assert storage.load_patients(db)["patient_id"].tolist() == ["P1", "P2"]
        log = storage.load_audit_log(db)
        assert log.loc[log["action"] == "restore", "actor"].tolist() == ["cli:night.job"]
    kept = list(tmp_path.glob("clinic.before-restore-*.db"))
    assert len(kept) == 1
    with storage.open_db(kept[0]) as db:  # the replaced database, with P3 and the backup's audit entry
        assert storage.load_patients(db)["patient_id"].tolist() == ["P1", "P2", "P3"]
        assert storage.load_audit_log(db, action="backup")["actor"].tolist() == ["cli:night.job"]
    assert (tmp_path / "nightly.db").stat().st_mode & 0o077 == 0  # identified data: owner only
    assert main(["backup", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "x.db")], out, err) == 1
    assert "There is no database" in err.getvalue() and not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("spoil", ["not_sqlite", "damaged", "other_app", "newer_schema"])
def test_a_bad_backup_is_refused_and_the_database_is_untouched(tmp_path, spoil):
    path = tmp_path / "clinic.db"
    harness.make_clinic(path, ["P1"])
    bad = tmp_path / "bad.db"
    with storage.open_db(path) as db:
        storage.backup(db, bad)
    if spoil == "not_sqlite":
        bad.write_bytes(b"PK\x03\x04 a zip file, not a backup" * 100)
    elif spoil == "damaged":
        data = bytearray(bad.read_bytes())
        for page in range(2, len(data) // 4096):  # scribble over the b-tree pages, keep the header
            data[page * 4096 + 8: page * 4096 + 64] = b"\xff" * 56
        bad.write_bytes(bytes(data))
    elif spoil == "other_app":
        bad.unlink()
        with sqlite3.connect(bad) as conn:
            conn.execute("CREATE TABLE notes (x)")
    else:
        with sqlite3.connect(bad) as conn:
            conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                         "VALUES ('outcomes', '9999_from_the_future', '2030-01-01')")
    before = table_rows(path, skip_meta=False)
    with pytest.raises(ValidationError):
        storage.restore(path, bad, keep=tmp_path / "kept.db")
    assert table_rows(path, skip_meta=False) == before
    assert not (tmp_path / "kept.db").exists()


def handed_over(at) -> tuple[str, bytes] | None:
    """The file a page run handed to the browser (ui.data.hand_over): name and bytes, or None."""
    import base64

    parts = [e for e in at.get("bidi_component") if e.proto.component_name == "outcomes_hand_over_file"]
    assert len(parts) <= 1
    if not parts:
        return None
    data = json.loads(parts[0].proto.json)
    return data["name"], base64.b64decode(data["b64"])


def test_the_admin_downloads_a_checked_backup_and_it_is_audited(app_as, clinic_db):
    from tests.page_helpers import button

    at = app_as("admin", "app_pages/backup.py")
    assert not at.exception and at.title[0].value == "Backup"
    assert handed_over(at) is None and not at.get("download_button")      # nothing made before the click
    button(at, "Download a backup").click().run()
    assert not at.exception and not at.error
    name, data = handed_over(at)
    assert "integrity check ok" in at.success[0].value and name in at.success[0].value
    assert re.search(r"\d+ user accounts, \d+ audit-log entries\. Your browser", at.success[0].value)  # words
    assert "backup.file" not in at.session_state                          # the bytes are not kept
    copy = clinic_db.path.with_name("downloaded.db")
    copy.write_bytes(data)
    assert checkins_of(copy)  # a valid, complete database with the clinic's check-ins
    assert table_rows(copy)["patients"] == table_rows(clinic_db.path)["patients"]
    with storage.open_db(clinic_db.path) as db:
        entry = storage.load_audit_log(db, action="backup").iloc[0]
    assert entry["actor"] == "ada.admin" and json.loads(entry["details"])["bytes"] == len(data)
    at.run()
    assert handed_over(at) is None                                        # handed over once, not per run
    assert "integrity check ok" in at.success[0].value                    # what it was stays on the page


def test_the_backup_page_says_when_the_server_last_backed_up(app_as, clinic_db, tmp_path, monkeypatch):
    import getpass
    from datetime import UTC, datetime, timedelta

    def nightly(name: str) -> None:  # what cron runs (docs/operations.md), as the account "outcomes"
        assert main(["backup", "--db", str(clinic_db.path), "--out", str(tmp_path / name)],
                    stdout=io.StringIO()) == 0

    at = app_as("admin", "app_pages/backup.py")
    assert "No backup made on the server is recorded" in at.warning[0].value and "docs/operations.md" in \
        at.warning[0].value
    monkeypatch.setattr(getpass, "getuser", lambda: "outcomes")
    three_days_ago = (datetime.now(UTC) - timedelta(days=3, hours=1)).isoformat(timespec="microseconds")
    with monkeypatch.context() as m:
        m.setattr(storage, "_now", lambda: three_days_ago)               # and then the job stopped
        nightly("old.db")
    at.run()
    stale = [w.value for w in at.warning if "last backup on the server" in w.value]
    assert stale and "3 days ago" in stale[0] and "ask IT to check the backup job" in stale[0]
    nightly("nightly.db")
    at.run()
    assert "The last backup on the server was made on" in at.info[0].value
    assert re.search(r"cli\\?:outcomes", at.info[0].value)                   # who (escaped for Markdown)
    assert not [w for w in at.warning if "last backup on the server" in w.value]


def test_the_backup_page_warns_that_the_download_is_identified_and_unencrypted(app_as):
    at = app_as("admin", "app_pages/backup.py")
    warning = next(w.value for w in at.warning if "every patient's data" in w.value)
    assert "unencrypted" in warning and "encrypted storage" in warning and "docs/operations.md" in warning


def test_a_database_too_large_for_the_browser_is_refused_before_it_is_copied(app_as, clinic_db, monkeypatch):
    from tests.page_helpers import button
    from ui import data

    at = app_as("admin", "app_pages/backup.py")
    monkeypatch.setattr(data, "hand_over_limit", lambda: 1000)
    button(at, "Download a backup").click().run()
    assert handed_over(at) is None
    assert "more than the browser connection carries" in at.error[0].value
    assert "python -m outcomes backup" in at.error[0].value
    with storage.open_db(clinic_db.path) as db:
        assert storage.load_audit_log(db, action="backup").empty          # nothing made, nothing audited
