"""The schema: the vocabularies of its CHECK constraints, and every migration in the order it is applied.

:func:`~outcomes.storage.connection.migrate` applies ``MIGRATIONS`` (0001 to 0007, declared below in that
order). Existing databases were built from this SQL text, so it never changes: a schema change is a new
migration at the end. The vocabularies the field rules check too (sex codes, methods, sources, adverse-event
kinds, roles, dose range, vital signs) are defined in :mod:`outcomes.validation`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from ..settings import DOMAINS
from ..validation import (DOSE_RANGE, EVENT_ACTIONS, EVENT_KINDS, METHODS, ROLES, SEVERITIES, SEXES, SOURCES,
                          VITALS)
from .rows import _now

_ISO = "GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'"


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


# Migrations, in the order they are applied -------------------------------------------------------------

MIGRATIONS = Migrations("outcomes")


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


@MIGRATIONS(name="0001_initial_schema")
def _initial_schema(db: Database) -> None:
    for statement in _SCHEMA:
        db.execute(statement)
    # The secret keys later pseudonymisation (HMAC of patient IDs); it never leaves this database.
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('synthetic', '0'), ('data_version', '0'), ('secret', ?)",
        [secrets.token_hex(32)],
    )


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


# 0007: diagnosis codes (outcomes/storage/diagnoses.py).

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
