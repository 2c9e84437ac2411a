ALTER TABLE patients ADD COLUMN disposition TEXT NOT NULL DEFAULT 'active' CHECK (disposition IN ('active', 'discharged', 'withdrawn', 'lost_to_follow_up', 'deceased'))
;
ALTER TABLE patients ADD COLUMN disposition_on TEXT CHECK (disposition_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]')
;
ALTER TABLE patients ADD COLUMN disposition_reason TEXT
;
ALTER TABLE patients ADD COLUMN disposition_by TEXT
;
ALTER TABLE series ADD COLUMN planned_first TEXT CHECK (planned_first GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]')
;
ALTER TABLE series ADD COLUMN planned_last TEXT CHECK (planned_last GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]')
;
ALTER TABLE series ADD COLUMN planned_infusions INTEGER CHECK (planned_infusions >= 1)
;
ALTER TABLE series ADD COLUMN by_day INTEGER NOT NULL DEFAULT 0 CHECK (by_day IN (0, 1))
;
ALTER TABLE series ADD COLUMN state TEXT NOT NULL DEFAULT 'given' CHECK (state IN ('planned', 'given', 'cancelled'))
;
ALTER TABLE series ADD COLUMN cancel_reason TEXT
;
ALTER TABLE infusions ADD COLUMN bp_systolic_before INTEGER
;
ALTER TABLE infusions ADD COLUMN bp_diastolic_before INTEGER
;
ALTER TABLE infusions ADD COLUMN bp_systolic_after INTEGER
;
ALTER TABLE infusions ADD COLUMN bp_diastolic_after INTEGER
;
ALTER TABLE infusions ADD COLUMN heart_rate INTEGER
;
ALTER TABLE infusions ADD COLUMN sedation_rass INTEGER
;
ALTER TABLE adverse_events ADD COLUMN action TEXT CHECK (action IN ('none', 'slowed', 'stopped', 'medication'))
;
ALTER TABLE adverse_events ADD COLUMN description TEXT
;
ALTER TABLE series ADD COLUMN voided_at TEXT
;
ALTER TABLE series ADD COLUMN voided_by TEXT
;
ALTER TABLE series ADD COLUMN void_reason TEXT
;
ALTER TABLE infusions ADD COLUMN voided_at TEXT
;
ALTER TABLE infusions ADD COLUMN voided_by TEXT
;
ALTER TABLE infusions ADD COLUMN void_reason TEXT
;
ALTER TABLE adverse_events ADD COLUMN voided_at TEXT
;
ALTER TABLE adverse_events ADD COLUMN voided_by TEXT
;
ALTER TABLE adverse_events ADD COLUMN void_reason TEXT
;
ALTER TABLE assessments ADD COLUMN voided_at TEXT
;
ALTER TABLE assessments ADD COLUMN voided_by TEXT
;
ALTER TABLE assessments ADD COLUMN void_reason TEXT
;
CREATE TABLE record_changes (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        record TEXT NOT NULL CHECK (record IN ('patient', 'series', 'infusion', 'adverse_event', 'assessment')),
        record_id INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('correct', 'void', 'cancel', 'disposition')),
        before TEXT NOT NULL CHECK (json_type(before) = 'object'),
        after TEXT NOT NULL CHECK (json_type(after) = 'object'),
        reason TEXT NOT NULL CHECK (length(trim(reason)) > 0)) STRICT
;
CREATE INDEX record_changes_by_patient ON record_changes (patient_ref, at)
;
CREATE TRIGGER record_changes_no_update BEFORE UPDATE ON record_changes
        BEGIN SELECT RAISE(ABORT, 'record_changes is append-only: entries cannot be changed'); END
;
CREATE TRIGGER record_changes_no_delete BEFORE DELETE ON record_changes
        BEGIN SELECT RAISE(ABORT, 'record_changes is append-only: entries cannot be deleted'); END
;
CREATE TRIGGER patients_no_delete BEFORE DELETE ON patients
        BEGIN SELECT RAISE(ABORT, 'patients are kept: correct or void a record instead of deleting it'); END
;
CREATE TRIGGER series_no_delete BEFORE DELETE ON series
        BEGIN SELECT RAISE(ABORT, 'series are kept: correct or void a record instead of deleting it'); END
;
CREATE TRIGGER infusions_no_delete BEFORE DELETE ON infusions
        BEGIN SELECT RAISE(ABORT, 'infusions are kept: correct or void a record instead of deleting it'); END
;
CREATE TRIGGER adverse_events_no_delete BEFORE DELETE ON adverse_events
        BEGIN SELECT RAISE(ABORT, 'adverse_events are kept: correct or void a record instead of deleting it'); END
;
CREATE TRIGGER assessments_no_delete BEFORE DELETE ON assessments
        BEGIN SELECT RAISE(ABORT, 'assessments are kept: correct or void a record instead of deleting it'); END
;
CREATE TRIGGER patients_no_replace BEFORE INSERT ON patients
        WHEN EXISTS (SELECT 1 FROM patients WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'patients are kept: a row cannot be replaced'); END
;
CREATE TRIGGER series_no_replace BEFORE INSERT ON series
        WHEN EXISTS (SELECT 1 FROM series WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'series are kept: a row cannot be replaced'); END
;
CREATE TRIGGER infusions_no_replace BEFORE INSERT ON infusions
        WHEN EXISTS (SELECT 1 FROM infusions WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'infusions are kept: a row cannot be replaced'); END
;
CREATE TRIGGER adverse_events_no_replace BEFORE INSERT ON adverse_events
        WHEN EXISTS (SELECT 1 FROM adverse_events WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'adverse_events are kept: a row cannot be replaced'); END
;
CREATE TRIGGER assessments_no_replace BEFORE INSERT ON assessments
        WHEN EXISTS (SELECT 1 FROM assessments WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'assessments are kept: a row cannot be replaced'); END
;
CREATE TRIGGER alerts_no_replace BEFORE INSERT ON alerts
        WHEN EXISTS (SELECT 1 FROM alerts WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'alerts are kept: a row cannot be replaced'); END
;
CREATE TRIGGER record_changes_no_replace BEFORE INSERT ON record_changes
        WHEN EXISTS (SELECT 1 FROM record_changes WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'record_changes are kept: a row cannot be replaced'); END
;
