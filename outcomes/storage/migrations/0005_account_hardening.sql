ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0 CHECK (credential_version >= 0)
;
ALTER TABLE users ADD COLUMN oidc_issuer TEXT
;
ALTER TABLE users ADD COLUMN oidc_subject TEXT
;
CREATE UNIQUE INDEX users_by_oidc_identity ON users (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL
;
CREATE TABLE sign_in_throttle (
        scope TEXT NOT NULL CHECK (scope IN ('account', 'address')),
        subject TEXT NOT NULL,
        client TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
        refused INTEGER NOT NULL DEFAULT 0 CHECK (refused >= 0),
        delayed_until TEXT,
        last_at TEXT NOT NULL,
        -- attempts not yet written to the audit log, and when it last had an entry for this bucket
        unaudited INTEGER NOT NULL DEFAULT 0 CHECK (unaudited >= 0),
        audited_at TEXT,
        PRIMARY KEY (scope, subject, client)) STRICT
;
CREATE TABLE known_browsers (
        user_ref INTEGER NOT NULL REFERENCES users(id),
        browser TEXT NOT NULL CHECK (length(browser) BETWEEN 16 AND 128),
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        PRIMARY KEY (user_ref, browser)) STRICT
;
