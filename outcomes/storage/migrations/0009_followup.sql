CREATE TABLE contacts (
        patient_ref INTEGER PRIMARY KEY REFERENCES patients(id),
        email TEXT CHECK (email IS NULL OR length(email) BETWEEN 3 AND 254),
        phone TEXT CHECK (phone IS NULL OR phone GLOB '+[1-9]*'),
        channel TEXT NOT NULL DEFAULT 'none' CHECK (channel IN ('email', 'sms', 'none')),
        consent_on TEXT CHECK (consent_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        consent_by TEXT,
        consent_how TEXT CHECK (consent_how IN ('recorded', 'imported')),
        opted_out_at TEXT,
        opted_out_by TEXT,
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL,
        CHECK (channel = 'none' OR consent_on IS NOT NULL),
        CHECK (channel <> 'email' OR email IS NOT NULL),
        CHECK (channel <> 'sms' OR phone IS NOT NULL)) STRICT
;
CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER REFERENCES patients(id),
        series_ref INTEGER REFERENCES series(id),
        slot TEXT,
        due_on TEXT CHECK (due_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        step TEXT NOT NULL CHECK (step IN ('invitation', 'reminder', 'test')),
        channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
        recipient TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'planned'
            CHECK (status IN ('planned', 'sending', 'sent', 'failed', 'gave_up', 'cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        last_error TEXT,
        provider_id TEXT,
        provider_response TEXT,
        planned_at TEXT NOT NULL,
        planned_by TEXT NOT NULL,
        claimed_at TEXT,
        claimed_by TEXT,
        sent_at TEXT,
        CHECK ((step = 'test') = (patient_ref IS NULL)),
        CHECK (step = 'test' OR (series_ref IS NOT NULL AND slot IS NOT NULL AND due_on IS NOT NULL))) STRICT
;
CREATE UNIQUE INDEX outbox_one_per_step ON outbox (patient_ref, series_ref, slot, step) WHERE step <> 'test'
;
CREATE INDEX outbox_by_status ON outbox (status, planned_at)
;
CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
        BEGIN SELECT RAISE(ABORT, 'outbox messages are kept: cancel a message instead of deleting it'); END
;
CREATE TABLE checkin_links (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE CHECK (length(token_hash) = 64),
        purpose TEXT NOT NULL CHECK (purpose IN ('checkin', 'stop')),
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        series_ref INTEGER REFERENCES series(id),
        slot TEXT,
        outbox_ref INTEGER REFERENCES outbox(id),
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        used_at TEXT,
        browser TEXT CHECK (browser IS NULL OR length(browser) BETWEEN 16 AND 64),
        spent_at TEXT,
        revoked_at TEXT,
        revoked_by TEXT,
        CHECK (purpose = 'checkin' OR (browser IS NULL AND spent_at IS NULL))) STRICT
;
CREATE INDEX checkin_links_by_patient ON checkin_links (patient_ref)
;
CREATE TRIGGER checkin_links_no_delete BEFORE DELETE ON checkin_links
        BEGIN SELECT RAISE(ABORT, 'check-in links are kept: revoke a link instead of deleting it'); END
;
CREATE TABLE link_drafts (
        link_ref INTEGER PRIMARY KEY REFERENCES checkin_links(id),
        answers TEXT NOT NULL CHECK (json_type(answers) = 'object'),
        saved_at TEXT NOT NULL) STRICT
;
CREATE TABLE call_outcomes (
        id INTEGER PRIMARY KEY,
        patient_ref INTEGER NOT NULL REFERENCES patients(id),
        series_ref INTEGER NOT NULL REFERENCES series(id),
        slot TEXT NOT NULL,
        due_on TEXT NOT NULL CHECK (due_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        outcome TEXT NOT NULL CHECK (outcome IN ('completed_by_phone', 'no_answer', 'declined', 'wrong_number')),
        note TEXT CHECK (note IS NULL OR length(note) <= 500),
        recorded_at TEXT NOT NULL,
        recorded_by TEXT NOT NULL) STRICT
;
CREATE INDEX call_outcomes_by_patient ON call_outcomes (patient_ref, series_ref, slot)
;
CREATE TRIGGER call_outcomes_no_update BEFORE UPDATE ON call_outcomes
        BEGIN SELECT RAISE(ABORT, 'call outcomes are append-only: record a new outcome instead'); END
;
CREATE TRIGGER call_outcomes_no_delete BEFORE DELETE ON call_outcomes
        BEGIN SELECT RAISE(ABORT, 'call outcomes are append-only: record a new outcome instead'); END
;
CREATE TABLE remind_runs (
        id INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        as_of TEXT NOT NULL CHECK (as_of GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        dry_run INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
        planned INTEGER NOT NULL DEFAULT 0,
        sent INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        outcome TEXT CHECK (outcome IN ('ok', 'failures', 'error', 'quiet_hours')),
        error TEXT) STRICT
;
