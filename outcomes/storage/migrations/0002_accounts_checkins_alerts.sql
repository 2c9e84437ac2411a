ALTER TABLE users ADD COLUMN display_name TEXT
;
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1))
;
ALTER TABLE users ADD COLUMN last_login_at TEXT
;
CREATE UNIQUE INDEX users_by_email ON users (email COLLATE NOCASE) WHERE email IS NOT NULL
;
CREATE UNIQUE INDEX users_one_login_per_patient ON users (patient_ref) WHERE patient_ref IS NOT NULL AND active = 1
;
CREATE TABLE invitations (
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
        CHECK ((used_at IS NULL) = (used_by IS NULL))) STRICT
;
CREATE INDEX invitations_by_patient ON invitations (patient_ref)
;
CREATE TABLE checkin_drafts (
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        user_ref INTEGER NOT NULL REFERENCES users(id),
        answers TEXT NOT NULL CHECK (json_type(answers) = 'object'),
        saved_at TEXT NOT NULL,
        PRIMARY KEY (patient_ref, user_ref)) STRICT
;
CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        assessment_ref INTEGER NOT NULL REFERENCES assessments(id),
        domain TEXT NOT NULL CHECK (domain IN ('pain_interference', 'depression', 'physical_function')),
        t_score REAL NOT NULL CHECK (t_score BETWEEN 0 AND 100),
        priority TEXT NOT NULL CHECK (priority IN ('high', 'routine')),
        reason TEXT NOT NULL CHECK (length(reason) > 0),
        created_at TEXT NOT NULL,
        acknowledged_by TEXT,
        acknowledged_at TEXT,
        note TEXT,
        CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))) STRICT
;
CREATE INDEX alerts_open ON alerts (patient_ref) WHERE acknowledged_at IS NULL
;
CREATE INDEX alerts_by_patient ON alerts (patient_ref, created_at)
;
CREATE TRIGGER alerts_no_delete BEFORE DELETE ON alerts
        BEGIN SELECT RAISE(ABORT, 'alerts are kept: an alert cannot be deleted, only acknowledged'); END
;
CREATE TRIGGER alerts_frozen_once_acknowledged BEFORE UPDATE ON alerts
        WHEN OLD.acknowledged_at IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'an acknowledged alert cannot be changed'); END
;
CREATE INDEX audit_log_by_action ON audit_log (action, at)
;
