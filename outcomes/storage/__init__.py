"""SQLite storage: the only package that contains SQL or knows table names.

Callers use the names re-exported here (``storage.connect``, ``storage.add_patient``...). Integer
surrogate keys (``patient_ref``, ``series_ref``...) stay inside the package; reads expose the clinic's own
``patient_id``. One file per topic, each importing only those above it:

- ``rows.py``: helpers every topic shares: timestamps, Python values as SQL values, one-row INSERT.
- ``schema.py``: the vocabularies of the CHECK constraints and every migration (``MIGRATIONS``), in order.
- ``connection.py``: ``connect`` (open and migrate), ``open_db`` (open only), ``migrate``, the write
  transaction with its queue and retries, ``StorageUnavailable`` for SQLite errors, ``transaction``, ``meta``.
- ``reads.py``: tidy DataFrame reads of the clinical record, and the compact cohort reads.
- ``records.py``: clinical writes: patients, series (recorded or planned), infusions, scores, check-ins.
- ``corrections.py``: corrections, voids, cancellations and dispositions, and their trail.
- ``diagnoses.py``: the clinic's diagnosis codes and each patient's code.
- ``bulk.py``: CSV import (``import_records``) and bulk load (``insert_cohort``).
- ``audit.py``: the append-only audit log.
- ``accounts.py``: user accounts, invitations, check-in drafts.
- ``throttle.py``: sign-in throttling and the browsers an account has signed in on.
- ``alerts.py``: clinical alerts, and the scores the alert rules read.
- ``backups.py``: online backup, backup checks, restore.
- ``followup.py``: patients' contacts and consent, the message outbox, one-tap links, call outcomes,
  reminder runs (the schedule's rules are :mod:`outcomes.followup`).

The field rules (``clean_patient``, ``clean_series``, ``clean_infusion``, ``clean_adverse_event``,
``clean_score``, ``clean_user``) are pure and live in :mod:`outcomes.validation`, shared by the write verbs
and the CSV import; they are re-exported here.

Example
-------
>>> db = connect(":memory:")
>>> add_patient(db, patient_id="P001", sex="F", birth_year=1980, entered_by="dr.lee")
1
>>> load_patients(db)["patient_id"].tolist()
['P001']
"""

from __future__ import annotations

import sys as _sys
import types as _types

from sqlite_utils import Database

from ..validation import (DOSE_RANGE, EARLIEST, EMAIL, EVENT_ACTIONS, EVENT_KINDS, FORM_KEY, METHODS, ROLES,
                          SEVERITIES, SEXES, SOURCES, USERNAME, VITALS, clean_adverse_event, clean_infusion,
                          clean_patient, clean_score, clean_series, clean_user)
from .accounts import (add_invitation, add_user, count_users, delete_draft, get_invitation, get_user,
                       get_user_by_identity, load_draft, load_users, patient_has_login, save_draft, update_user,
                       use_invitation)
from .alerts import (ALERT_CANDIDATE_COLUMNS, ALERT_COLUMNS, acknowledge_alert, acknowledge_alerts, add_alerts,
                     load_alert_candidates, load_alert_summary, load_alerts)
from .audit import AUDIT_COLUMNS, append_audit, load_audit_log
from .backups import BackupCheck, backup, check_backup, restore
from .bulk import ImportSummary, import_records, insert_cohort
from .connection import (PRIVATE_MODE, WRITE_WAIT_SECONDS, connect, data_version, get_meta,
                         is_synthetic, migrate, open_db, set_meta, transaction)
from .corrections import (CHANGE_COLUMNS, cancel_series, correct_record, load_record_changes, record_owner,
                          set_disposition, void_record)
from .followup import (CALL_COLUMNS, CONTACT_COLUMNS, LINK_COLUMNS, OUTBOX_COLUMNS, RUN_COLUMNS, add_call_outcome,
                       add_link, cancel_messages, claim_messages, finish_message, finish_run, give_up_interrupted,
                       load_call_outcomes, load_contacts, load_followup_inputs, load_links, load_outbox, load_runs,
                       load_sent_steps, opt_out, plan_messages, revoke_links, set_contact, start_run, use_link,
                       spend_link, save_link_draft, load_link_draft, delete_link_draft)
from .diagnoses import (add_diagnosis_code, code_patients_by_note, load_diagnosis_codes, load_diagnosis_notes,
                        load_patient_diagnoses, rename_diagnosis_code, retire_diagnosis_code, set_diagnosis_code)
from .reads import (ASSESSMENT_COLUMNS, COHORT_EPISODE_COLUMNS, COHORT_SCORE_COLUMNS, SCORE_SUMMARY_COLUMNS,
                    database_summary, first_patient_with_assessments, load_adverse_events, load_assessments,
                    load_baseline_candidates, load_cohort_episodes, load_cohort_scores, load_infusions,
                    load_item_responses, load_latest_scores, load_patient, load_patients, load_series,
                    series_patient)
from .records import (PLAN_AHEAD_DAYS, add_infusion, add_patient, add_series, plan_series,
                      save_assessment, save_checkin)
from .schema import (CALL_OUTCOMES, CHANNELS, LINK_PURPOSES, OUTBOX_STATUSES, STEPS, CHANGE_ACTIONS, COHORT_INDEX, CORRECTABLE, DIAGNOSIS_LABEL_MAX, DIAGNOSIS_SEED, DISPOSITIONS,
                     MIGRATIONS, PRIORITIES, RECORD_KINDS, SERIES_STATES, THROTTLE_SCOPES)
from .throttle import (MAX_THROTTLE_DELAY, Bucket, Claim, claim_attempt, clear_throttle, client_label,
                       known_browser, remember_browser, settle_attempt, throttled)

# Private names the tests read or replace (replacing one reaches the submodules: see _Package below).
from .backups import _check_copy as _check_copy
from .bulk import _values as _values
from .connection import _tighten as _tighten
from .records import _store_score as _store_score
from .rows import _now as _now

__all__ = [
    # connection and schema
    "Database", "connect", "open_db", "migrate", "transaction", "set_meta", "get_meta", "data_version",
    "is_synthetic", "PRIVATE_MODE", "WRITE_WAIT_SECONDS", "MIGRATIONS", "COHORT_INDEX",
    # vocabularies
    "SEXES", "METHODS", "SOURCES", "EVENT_KINDS", "SEVERITIES", "ROLES", "DOSE_RANGE", "FORM_KEY", "EARLIEST",
    "USERNAME", "EMAIL", "VITALS", "EVENT_ACTIONS", "PRIORITIES", "DISPOSITIONS", "SERIES_STATES", "CORRECTABLE",
    "RECORD_KINDS", "CHANGE_ACTIONS", "THROTTLE_SCOPES", "DIAGNOSIS_SEED", "DIAGNOSIS_LABEL_MAX", "PLAN_AHEAD_DAYS",
    # field rules (outcomes.validation)
    "clean_patient", "clean_series", "clean_infusion", "clean_adverse_event", "clean_score", "clean_user",
    # clinical writes and corrections
    "add_patient", "add_series", "plan_series", "add_infusion", "save_assessment", "save_checkin",
    "correct_record", "void_record", "cancel_series", "set_disposition", "record_owner", "load_record_changes",
    "CHANGE_COLUMNS",
    # diagnosis codes
    "load_diagnosis_codes", "add_diagnosis_code", "rename_diagnosis_code", "retire_diagnosis_code",
    "set_diagnosis_code", "code_patients_by_note", "load_diagnosis_notes", "load_patient_diagnoses",
    # import and bulk load
    "ImportSummary", "import_records", "insert_cohort",
    # reads
    "load_patients", "load_patient", "series_patient", "load_series", "load_infusions", "load_adverse_events",
    "load_assessments", "load_item_responses", "load_latest_scores", "load_baseline_candidates",
    "first_patient_with_assessments", "database_summary", "load_cohort_scores", "load_cohort_episodes",
    "ASSESSMENT_COLUMNS", "SCORE_SUMMARY_COLUMNS", "COHORT_SCORE_COLUMNS", "COHORT_EPISODE_COLUMNS",
    # audit log
    "append_audit", "load_audit_log", "AUDIT_COLUMNS",
    # accounts, invitations, drafts
    "count_users", "add_user", "get_user", "get_user_by_identity", "update_user", "patient_has_login",
    "load_users", "add_invitation", "get_invitation", "use_invitation", "save_draft", "load_draft", "delete_draft",
    # sign-in throttling
    "MAX_THROTTLE_DELAY", "Bucket", "Claim", "claim_attempt", "settle_attempt", "clear_throttle", "throttled",
    "client_label", "known_browser", "remember_browser",
    # alerts
    "add_alerts", "acknowledge_alert", "acknowledge_alerts", "load_alerts", "load_alert_summary",
    "load_alert_candidates", "ALERT_COLUMNS", "ALERT_CANDIDATE_COLUMNS",
    # backup and restore
    "BackupCheck", "backup", "check_backup", "restore",
    # follow-up: contacts, outbox, links, calls, reminder runs
    "CHANNELS", "STEPS", "OUTBOX_STATUSES", "CALL_OUTCOMES", "LINK_PURPOSES", "CONTACT_COLUMNS", "OUTBOX_COLUMNS",
    "LINK_COLUMNS", "CALL_COLUMNS", "RUN_COLUMNS", "set_contact", "opt_out", "load_contacts",
    "load_followup_inputs", "plan_messages", "claim_messages", "finish_message", "cancel_messages",
    "give_up_interrupted", "load_outbox", "load_sent_steps", "add_link", "use_link", "revoke_links", "load_links",
    "spend_link", "save_link_draft", "load_link_draft", "delete_link_draft",
    "add_call_outcome", "load_call_outcomes", "start_run", "finish_run", "load_runs",
]

_UNSET = object()


class _Package(_types.ModuleType):
    """The package as one namespace for code that replaces a name, as when storage was one module.

    Setting a name on the package (``monkeypatch.setattr(storage, "open_db", ...)`` in a test) also sets it
    in every storage submodule that holds the same object under that name, so the package's own code calls
    the replacement; setting it back restores them all.
    """

    def __setattr__(self, name: str, value: object) -> None:
        old = self.__dict__.get(name, _UNSET)
        if old is not _UNSET and not isinstance(old, _types.ModuleType):
            prefix = self.__name__ + "."
            for module_name, module in list(_sys.modules.items()):
                if module_name.startswith(prefix) and module is not None and \
                        module.__dict__.get(name, _UNSET) is old:
                    setattr(module, name, value)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
