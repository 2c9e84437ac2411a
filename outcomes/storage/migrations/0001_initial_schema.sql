CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT
;
CREATE TABLE patients (
        id INTEGER PRIMARY KEY,
        patient_id TEXT NOT NULL UNIQUE CHECK (length(trim(patient_id)) > 0),
        diagnosis TEXT,
        sex TEXT CHECK (sex IN ('F', 'M', 'X')),
        birth_year INTEGER CHECK (birth_year BETWEEN 1900 AND 9999),
        enrolled_on TEXT CHECK (enrolled_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL) STRICT
;
CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        first_infusion TEXT NOT NULL CHECK (first_infusion GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        last_infusion TEXT NOT NULL CHECK (last_infusion GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        infusions INTEGER NOT NULL CHECK (infusions >= 1),
        protocol TEXT,
        dose_mg_per_kg REAL CHECK (dose_mg_per_kg BETWEEN 0.05 AND 2.0),
        notes TEXT,
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        UNIQUE (patient_ref, first_infusion),
        CHECK (last_infusion >= first_infusion)) STRICT
;
CREATE TABLE infusions (
        id INTEGER PRIMARY KEY,
        series_ref INTEGER NOT NULL REFERENCES series(id),
        infused_on TEXT NOT NULL CHECK (infused_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        dose_mg_per_kg REAL NOT NULL CHECK (dose_mg_per_kg BETWEEN 0.05 AND 2.0),
        duration_min INTEGER NOT NULL CHECK (duration_min BETWEEN 1 AND 1440),
        notes TEXT,
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        UNIQUE (series_ref, infused_on)) STRICT
;
CREATE TABLE adverse_events (
        id INTEGER PRIMARY KEY,
        infusion_ref INTEGER NOT NULL REFERENCES infusions(id),
        kind TEXT NOT NULL CHECK (kind IN ('dissociation', 'nausea', 'blood_pressure_rise', 'hallucination', 'other')),
        severity TEXT CHECK (severity IN ('mild', 'moderate', 'severe')),
        notes TEXT) STRICT
;
CREATE INDEX adverse_events_by_infusion ON adverse_events (infusion_ref)
;
CREATE TABLE assessments (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        assessed_on TEXT NOT NULL CHECK (assessed_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        domain TEXT NOT NULL CHECK (domain IN ('pain_interference', 'depression', 'physical_function')),
        form TEXT,
        responses TEXT CHECK (responses IS NULL OR json_type(responses) = 'object'),
        raw_score REAL,
        t_score REAL NOT NULL CHECK (t_score BETWEEN 0 AND 100),
        se REAL CHECK (se > 0),
        n_answered INTEGER CHECK (n_answered >= 0),
        method TEXT NOT NULL CHECK (method IN ('table', 'pattern', 'prorated', 'imported')),
        source TEXT NOT NULL CHECK (source IN ('patient', 'clinician', 'import')),
        entered_by TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        superseded_by INTEGER REFERENCES assessments(id)) STRICT
;
CREATE UNIQUE INDEX assessments_one_active ON assessments (patient_ref, domain, assessed_on)
        WHERE superseded_by IS NULL
;
CREATE INDEX assessments_by_patient ON assessments (patient_ref, domain, assessed_on)
;
CREATE INDEX assessments_by_domain ON assessments (domain, assessed_on) WHERE superseded_by IS NULL
;
CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'clinician', 'qi', 'patient')),
        password_hash TEXT,
        patient_ref INTEGER REFERENCES patients(id),
        email TEXT,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT,
        active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        created_at TEXT NOT NULL,
        CHECK (role <> 'patient' OR patient_ref IS NOT NULL)) STRICT
;
CREATE INDEX users_by_patient ON users (patient_ref)
;
CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        patient_ref INTEGER REFERENCES patients(id),
        details TEXT CHECK (details IS NULL OR json_valid(details))) STRICT
;
CREATE INDEX audit_log_by_patient ON audit_log (patient_ref, at)
;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be changed'); END
;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be deleted'); END
;
