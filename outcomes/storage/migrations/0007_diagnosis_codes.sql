CREATE TABLE diagnosis_codes (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL UNIQUE COLLATE NOCASE
            CHECK (length(trim(label)) BETWEEN 1 AND 80 AND label = trim(label)),
        retired_at TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL) STRICT
;
CREATE TRIGGER diagnosis_codes_no_delete BEFORE DELETE ON diagnosis_codes
        BEGIN SELECT RAISE(ABORT, 'diagnosis codes are kept: retire a code instead of deleting it'); END
;
ALTER TABLE patients ADD COLUMN diagnosis_code INTEGER REFERENCES diagnosis_codes(id)
;
CREATE INDEX patients_by_diagnosis_code ON patients (diagnosis_code)
;
CREATE TRIGGER patients_code_from_note AFTER INSERT ON patients
        WHEN NEW.diagnosis_code IS NULL AND NEW.diagnosis IS NOT NULL
        BEGIN UPDATE patients SET diagnosis_code = (SELECT id FROM diagnosis_codes
            WHERE retired_at IS NULL AND label = trim(NEW.diagnosis) COLLATE NOCASE) WHERE id = NEW.id; END
;
