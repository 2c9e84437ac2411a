"""Migrations are frozen once released, and 0008 (domains as data) keeps an existing database whole."""

import hashlib
import sqlite3
from datetime import UTC, date, datetime

import pytest

from outcomes import storage
from outcomes.errors import ValidationError
from outcomes.storage import schema

#: SHA-256 of every released migration's SQL. A change here means an old migration was edited: existing
#: databases were built from the old text, so write a new migration instead.
FROZEN = {
    "0001_initial_schema": "e9004f07fb47f1b5511830993d6f776347c859a09df92e16bb903e836dc0a3df",
    "0002_accounts_checkins_alerts": "c14928b7256ebabd67364c50f1ba887c4c03c7fc88409d195633a63d646b0500",
    "0003_cohort_read_index": "f5c0cc193f58ad2806aab68cfc5933f5b8542f6069747623da5e3ff464707429",
    "0004_clinic_record": "706cae13078a31e4fa5aea40a0ee3602ccbb65bd5a8b96323cecd8b3199cb297",
    "0005_account_hardening": "7c9368c3092659704a5abbc6406261e34b3867682965d069318232d8bae74d9d",
    "0006_audit_hardening": "5f3999e733c2f198ca9f67460f06a588b39e2a107ed511d66a5824ac5a266474",
    "0007_diagnosis_codes": "f593f162d55481fee32d09404cef0b3228a59c3e8d51878454dec84d738e8450",
    "0009_followup": "67693ff2f021070b283a5197649b557fdad6472aec55ac239090ed03575a3a91",
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_released_migration_text_is_frozen(name):
    text = (schema.MIGRATION_DIR / f"{name}.sql").read_bytes()
    assert hashlib.sha256(text).hexdigest() == FROZEN[name], f"{name}.sql changed: add a new migration instead"


def test_every_sql_file_is_a_migration_in_order():
    files = sorted(p.stem for p in schema.MIGRATION_DIR.glob("*.sql"))
    names = [m.name for m in storage.MIGRATIONS._migrations]
    assert names == sorted(names)
    assert set(files) <= set(names)


def _old_database(path):
    """A database as the code before 0008 built it, with a history worth keeping."""
    db = storage.open_db(path)
    storage.MIGRATIONS.apply(db, stop_before="0008_domains_as_data")
    assert "0008_domains_as_data" not in [m.name for m in storage.MIGRATIONS.applied(db)]
    for pid in ("P1", "P2"):
        storage.add_patient(db, patient_id=pid, entered_by="dr.lee")
        storage.save_assessment(db, patient_id=pid, assessed_on=date(2025, 1, 6), domain="depression",
                                t_score=71.0, method="imported", source="clinician", entered_by="dr.lee")
        # Same day again: the first row is superseded, not deleted.
        storage.save_assessment(db, patient_id=pid, assessed_on=date(2025, 1, 6), domain="depression",
                                t_score=72.0, method="imported", source="clinician", entered_by="dr.lee")
        storage.save_assessment(db, patient_id=pid, assessed_on=date(2025, 1, 6), domain="pain_interference",
                                t_score=60.0, method="imported", source="clinician", entered_by="dr.lee")
    active = storage.load_assessments(db)
    storage.add_alerts(db, [{"patient_id": "P1", "assessment_id": int(active["assessment_id"].iloc[0]),
                             "domain": "depression", "t_score": 72.0, "priority": "high", "reason": "severe"}],
                       now=datetime(2025, 1, 6, tzinfo=UTC))
    storage.append_audit(db, actor="dr.lee", action="view_record", patient_id="P1")
    return db


def _snapshot(db):
    conn = db.conn
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%' AND name != '_sqlite_migrations'")]
    rows = {t: conn.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall() for t in tables}
    rows["meta"] = [r for r in rows["meta"] if r[0] != "schema_version"]  # the migration count, which rises
    return {
        "rows": rows,
        "indexes_and_triggers": conn.execute("SELECT type, name, sql FROM sqlite_schema WHERE type IN "
                                             "('index', 'trigger') ORDER BY name").fetchall(),
    }


def test_0008_keeps_every_row_link_index_trigger_and_audit_entry(tmp_path):
    db = _old_database(tmp_path / "old.db")
    before = _snapshot(db)
    assert db.execute("SELECT count(*) FROM assessments WHERE superseded_by IS NOT NULL").fetchone()[0] == 2
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK named the three domains
        db.execute("INSERT INTO assessments (patient_ref, assessed_on, domain, t_score, method, source, "
                   "entered_by, entered_at) VALUES (1, '2025-02-01', 'fatigue', 50, 'imported', 'import', 'x', 'x')")
    db.conn.close()

    migrated = storage.open_db(tmp_path / "old.db")
    storage.MIGRATIONS.apply(migrated, stop_before="0009_followup")  # later migrations add tables of their own
    assert [m.name for m in storage.MIGRATIONS.applied(migrated)][-1] == "0008_domains_as_data"
    assert _snapshot(migrated) == before
    assert migrated.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for table in ("assessments", "alerts"):
        sql = migrated.execute("SELECT sql FROM sqlite_schema WHERE name = ?", [table]).fetchone()[0]
        assert "domain IN" not in sql and schema.DOMAIN_CHECK in sql
    # A domain the registry knows but the old CHECK did not can now be stored; an empty one still cannot.
    migrated.execute("INSERT INTO assessments (patient_ref, assessed_on, domain, t_score, method, source, "
                     "entered_by, entered_at) VALUES (1, '2025-02-01', 'fatigue', 50, 'imported', 'import', 'x', 'x')")
    with pytest.raises(sqlite3.IntegrityError):
        migrated.execute("INSERT INTO assessments (patient_ref, assessed_on, domain, t_score, method, source, "
                         "entered_by, entered_at) VALUES (1, '2025-02-02', '', 50, 'imported', 'import', 'x', 'x')")


def test_the_write_path_checks_domains_against_the_registry(tmp_path):
    db = storage.connect(tmp_path / "new.db")
    storage.add_patient(db, patient_id="P1", entered_by="dr.lee")
    with pytest.raises(ValidationError, match="domain"):
        storage.save_assessment(db, patient_id="P1", assessed_on=date(2025, 1, 6), domain="mood", t_score=50.0,
                                method="imported", source="clinician", entered_by="dr.lee")
    assert storage.load_assessments(db).empty


def test_0009_adds_follow_up_to_an_existing_database_and_changes_nothing_else(tmp_path):
    db = _old_database(tmp_path / "old.db")
    storage.MIGRATIONS.apply(db, stop_before="0009_followup")
    before = _snapshot(db)
    db.conn.close()
    migrated = storage.connect(tmp_path / "old.db")
    after = _snapshot(migrated)
    new_tables = {"contacts", "outbox", "checkin_links", "link_drafts", "call_outcomes", "remind_runs"}
    assert set(after["rows"]) - set(before["rows"]) == new_tables
    assert {t: after["rows"][t] for t in before["rows"]} == before["rows"]
    assert set(before["indexes_and_triggers"]) <= set(after["indexes_and_triggers"])
    assert all(after["rows"][t] == [] for t in new_tables)
    assert migrated.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The old patients can get contacts, and the new tables keep their history.
    storage.set_contact(migrated, "P1", email="p1@example.org", channel="email", consent_on=date(2025, 1, 6),
                        by="dr.lee", now=datetime(2025, 1, 6, tzinfo=UTC))
    with pytest.raises(sqlite3.IntegrityError, match="kept"):
        migrated.execute("INSERT INTO outbox (patient_ref, series_ref, slot, due_on, step, channel, recipient, "
                         "planned_at, planned_by) VALUES (NULL, NULL, NULL, NULL, 'test', 'email', 'x@example.org', "
                         "'t', 'x')")
        migrated.execute("DELETE FROM outbox")
