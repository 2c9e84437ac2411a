"""The schema: the vocabularies of its CHECK constraints, and every migration in the order it is applied.

:func:`~outcomes.storage.connection.migrate` applies ``MIGRATIONS`` (0001 to 0009, declared below in that
order), each from its frozen SQL file in ``migrations/``: existing databases were built from that text,
so it never changes, and a schema change is a new migration at the end. The vocabularies the field rules
check too (sex codes, methods, sources, adverse-event kinds, roles, dose range, vital signs) are defined in
:mod:`outcomes.validation`.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from ..validation import CHANNELS, VITALS  # noqa: F401  (CHANNELS: the contacts CHECK)
from .rows import _now


def _in(values: Iterable[str]) -> str:
    """An SQL list literal; only ever given the constants of this module and of outcomes.validation."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# Vocabularies ----------------------------------------------------------------------------------------

PRIORITIES = ("high", "routine")  # of a clinical alert; "high" sorts first
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

#: Sign-in throttling (docs/authentication.md): ``account`` buckets are one per username (as typed, casefolded)
#: and browser this account has signed in on (``browser:<digest>``), plus one (``new``) shared by every other
#: client; ``address`` buckets are one per client address, for everything a signed-out client can fail at.
THROTTLE_SCOPES = ("account", "address")

#: A starter list (the clinic renames or retires what it does not use); no patient's text is ever copied.
DIAGNOSIS_SEED = ("Complex regional pain syndrome", "Fibromyalgia", "Neuropathic pain", "Chronic low back pain",
                  "Headache disorder", "Other chronic pain")
DIAGNOSIS_LABEL_MAX = 80

#: Follow-up (migration 0009, docs/followup.md).
STEPS = ("invitation", "reminder", "test")  # what an outbox message is
OUTBOX_STATUSES = ("planned", "sending", "sent", "failed", "gave_up", "cancelled")
CALL_OUTCOMES = ("completed_by_phone", "no_answer", "declined", "wrong_number")
LINK_PURPOSES = ("checkin", "stop")


# Migrations, in the order they are applied -------------------------------------------------------------
#
# Each migration's SQL is a file in migrations/ (statements separated by a line holding only ";"), frozen
# once released: tests/test_storage_migrations.py pins every file's SHA-256, so a schema change is always a
# new migration at the end. What each one is for:
#   0001  the clinical record (patients, series, infusions, adverse events, assessments), users, audit log
#   0002  accounts: invitations (keyed hash of the code only), check-in drafts, alerts (never deleted,
#         frozen once acknowledged), one working login per patient
#   0003  covering index of load_cohort_scores: a domain's active scores in patient and date order
#   0004  the clinic record: planned/cancelled series, dispositions, corrections kept in record_changes
#   0005  account hardening: credential versions, hospital sign-in identities, sign-in throttle buckets
#   0006  audit log append-only even for clients without recursive triggers
#   0007  diagnosis codes, seeded with a starter list
#   0008  domains are data: no CHECK names a domain any more (the write path checks the registry)
#   0009  follow-up: patients' contacts and consent, the message outbox, one-tap check-in links, call
#         outcomes, reminder runs (docs/followup.md)

MIGRATIONS = Migrations("outcomes")
MIGRATION_DIR = Path(__file__).with_name("migrations")


def migration_statements(name: str) -> list[str]:
    """The SQL statements of migration ``name`` (e.g. ``0001_initial_schema``), in order."""
    text = (MIGRATION_DIR / f"{name}.sql").read_text(encoding="utf-8")
    return [statement for statement in text.split("\n;\n") if statement.strip()]


def _run(db: Database, name: str) -> None:
    for statement in migration_statements(name):
        db.execute(statement)


@MIGRATIONS(name="0001_initial_schema")
def _initial_schema(db: Database) -> None:
    _run(db, "0001_initial_schema")
    # The secret keys later pseudonymisation (HMAC of patient IDs); it never leaves this database.
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('synthetic', '0'), ('data_version', '0'), ('secret', ?)",
        [secrets.token_hex(32)],
    )


# Migrations that are their SQL file and nothing else.
for _name in ("0002_accounts_checkins_alerts", "0003_cohort_read_index", "0004_clinic_record",
              "0005_account_hardening", "0006_audit_hardening"):
    MIGRATIONS(name=_name)(functools.partial(_run, name=_name))

#: Covering index of load_cohort_scores: superseded_by (always NULL here) is a column too, because SQLite
#: 3.40 reads the table to check a partial index's WHERE otherwise.
COHORT_INDEX = migration_statements("0003_cohort_read_index")[0]


@MIGRATIONS(name="0007_diagnosis_codes")
def _diagnosis_codes(db: Database) -> None:
    _run(db, "0007_diagnosis_codes")
    now = _now()
    for label in DIAGNOSIS_SEED:
        db.execute("INSERT INTO diagnosis_codes (label, created_at, created_by) VALUES (?, ?, 'migration')",
                   [label, now])
    # Patients enrolled before: coded where the note is exactly a starter label, else "not coded".
    db.execute("UPDATE patients SET diagnosis_code = (SELECT id FROM diagnosis_codes WHERE "
               "label = trim(patients.diagnosis) COLLATE NOCASE) WHERE diagnosis IS NOT NULL")


#: The constraint 0001 and 0002 put on ``domain`` (the three domains of the time), and what replaces it.
_DOMAIN_CHECK = re.compile(r"CHECK \(domain IN \('[a-z_]+'(?:, '[a-z_]+')*\)\)")
DOMAIN_CHECK = "CHECK (length(domain) BETWEEN 1 AND 64)"


@MIGRATIONS(name="0008_domains_as_data")
def _domains_as_data(db: Database) -> None:
    """Drop the domain lists from the CHECKs of ``assessments`` and ``alerts``, in place.

    SQLite cannot drop a CHECK with ALTER TABLE. Removing or loosening one does not change how rows are
    stored, so the table definitions are rewritten in sqlite_schema ("Making other kinds of table schema
    changes", sqlite.org/lang_altertable.html): no row is copied or renumbered, and the indexes, triggers,
    supersession links and audit log stay exactly as they were. The new CHECK holds for every stored row
    (each is one of the old names), and quick_check confirms the file afterwards.
    """
    conn = db.conn
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    try:
        for table in ("assessments", "alerts"):
            (sql,) = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?",
                                  [table]).fetchone()
            new, found = _DOMAIN_CHECK.subn(DOMAIN_CHECK, sql)
            if found != 1:
                raise RuntimeError(f"migration 0008: the domain CHECK of {table} is not the one 0001/0002 made")
            conn.execute("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?", [new, table])
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")
    if (problem := conn.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
        raise RuntimeError(f"migration 0008: quick_check after the schema rewrite says {problem!r}")


MIGRATIONS(name="0009_followup")(functools.partial(_run, name="0009_followup"))
