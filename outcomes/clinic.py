"""The clinic's daily work: enrolment, infusions, weekly check-ins, alerts, roster, records, audit log.

Every function takes the database and the acting :class:`~outcomes.auth.User` first and checks the
user's role (and, for a patient, that the record is their own) before reading or writing; a refusal
raises :class:`PermissionDenied` and leaves an ``access_denied`` entry in the audit log. Record
views, writes and exports are audited too. Moments (``now``) and days (``today``) come from the
caller, never from the clock. Results are frozen dataclasses or DataFrames, ready for a thin page.

The rules these functions apply (the alert rule, reliable change, baselines, the Today
list, date parsing) are pure functions in :mod:`outcomes.rules`; ``alert_rule``, ``reliable_change``,
``today_list``, ``SAFETY_NOTICE``, ``PATIENT_CRISIS_TEXT``, ``ALERT_ACTIONS`` and the alert thresholds
are re-exported here.

Quality-improvement users get nothing from this module: the cohort page calls
:func:`outcomes.auth.require_role` and the analysis module, which never returns identifiers.

Example
-------
>>> from datetime import UTC, date, datetime
>>> from outcomes import auth, storage
>>> from outcomes.settings import load_settings
>>> db, settings = storage.connect(":memory:"), load_settings({})
>>> now, today = datetime(2025, 6, 2, 9, tzinfo=UTC), date(2025, 6, 2)
>>> admin = auth.create_first_admin(db, "root.admin", "correct horse battery", now=now)
>>> lee = auth.create_user(db, admin, username="dr.lee", role="clinician", password="long enough pw 1",
...                        now=now)
>>> invitation = enrol_patient(db, lee, patient_id="P001", today=today, now=now, settings=settings)
>>> checkin_due(db, lee, "P001", today=today, settings=settings).status
'no series'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from . import storage
from .analysis import round_half_away
from .auth import Invitation, LinkUser, User, issue_invitation, require_patient_access, require_role
from .errors import (
    CheckinExists,
    CheckinNotScorable,
    ConfigError,
    InvalidResponse,
    NotFound,
    UnknownForm,
    ValidationError,
)
from .instruments import Form, Registry
# The pure rules live in outcomes.rules; the names imported "as" themselves are re-exported, so callers keep
# using clinic.alert_rule, clinic.SAFETY_NOTICE and the like.
from .rules import (
    ALERT_ACTIONS as ALERT_ACTIONS,
    PATIENT_CRISIS_TEXT as PATIENT_CRISIS_TEXT,
    PRIORITY_RANK,
    RELIABLE_Z as RELIABLE_Z,
    SAFETY_NOTICE as SAFETY_NOTICE,
    alert_rule as alert_rule,
    as_date_or_none,
    baselines,
    may_alert,
    parse_day_or_problem,
    reliable_change as reliable_change,
    reliable_change_frame,
    today_list as today_list,
    today_reasons,
)
from .scoring import ScoreResult, min_answered, score_response
from .summary_scores import load_summary_weights, summary_scores
from .settings import Settings
from . import completion as completion_, followup

def roster_columns(domains: Iterable[str]) -> tuple[str, ...]:
    """The roster's columns: the patient's status, then ``<domain>_t/_change/_improved`` per domain."""
    return ("patient_id", "diagnosis", "disposition", "today", "today_rank", "series_status", "in_series_today",
            "in_series_this_week", "series_number", "last_infusion", "next_infusion", "followup", "followup_text",
            "baseline_due", "last_checkin", "next_due", "overdue", "on_call_list",
            *(f"{d}_{c}" for d in domains for c in ("t", "change", "improved")),
            "open_alerts", "top_priority")


# Results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainResult:
    """One questionnaire of a check-in, scored or not, with its change since baseline.

    ``change`` is T minus the baseline T, rounded half away from zero to 0.1; ``improved`` and
    ``worsened`` say whether it reaches the meaningful-change threshold ``mcid`` in that direction
    (None without a baseline to compare with). ``message`` says it all in plain words.
    """

    domain: str
    label: str
    form: str
    scored: bool
    t_score: float | None
    se: float | None
    severity: str | None
    method: str | None
    n_answered: int
    n_items: int
    note: str
    baseline_on: date | None = None
    baseline_t: float | None = None
    change: float | None = None
    mcid: float | None = None
    improved: bool | None = None
    worsened: bool | None = None
    message: str = ""


@dataclass(frozen=True)
class CheckinResult:
    """What :func:`submit_checkin` stored. ``alerts_created`` is for clinicians' eyes only."""

    patient_id: str
    assessed_on: date
    source: str
    replaced: bool
    domains: tuple[DomainResult, ...]
    alerts_created: int

    @property
    def messages(self) -> list[str]:
        """One plain sentence or two per questionnaire, in check-in order."""
        return [d.message for d in self.domains]


@dataclass(frozen=True)
class DueStatus:
    """Where a patient's follow-up stands today (:mod:`outcomes.followup`, docs/followup.md).

    ``status``: ``upcoming``, ``due``, ``overdue``, ``done``, ``missed``, ``complete``, ``inactive`` or
    ``no series``. ``slot_label``, ``kind``, ``due_on`` and ``closes_on`` describe the slot open today
    (None when none is); ``next_label`` names the next slot not yet due, and ``next_due`` is the open slot's
    due day while it is due or overdue, else the next slot's; ``overdue_from`` is the open slot's first
    overdue day; ``kind`` decides which questionnaires the check-in asks (``weekly`` when no slot is open);
    ``message`` says it in plain words.
    """

    status: str
    last_checkin: date | None
    next_due: date | None
    overdue_from: date | None
    message: str
    slot_label: str | None = None
    kind: str = "weekly"
    due_on: date | None = None
    closes_on: date | None = None
    next_label: str | None = None
    on_call_list: bool = False


@dataclass(frozen=True)
class Draft:
    """Unsent check-in answers, ``{form_key: {item_id: value or None}}``."""

    answers: dict[str, dict[str, int | None]]
    saved_at: datetime


@dataclass(frozen=True)
class PatientRecord:
    """Everything about one patient, as tidy frames (the storage read contracts, plus extras).

    ``assessments`` adds ``baseline_on, baseline_t, change, improved`` (meaningful change) and
    ``rci, reliable`` (reliable change against the baseline, shown separately). ``alerts`` holds every
    alert, open and acknowledged (who, when, note). ``series``, ``infusions`` and ``adverse_events`` are
    what was given and not voided (what analyses count); ``all_series`` adds planned, cancelled and voided
    series (``state``, ``voided``), ``all_infusions`` and ``all_adverse_events`` the voided ones,
    ``replaced_assessments`` the scores replaced by a later entry or correction or voided, and
    ``changes`` the trail of corrections with ``summary`` in words (as :func:`record_history`).
    ``summary_scores`` holds the PROMIS-29 physical and mental health summary scores of every day with all
    seven PROMIS-29 domains (:func:`outcomes.summary_scores.summary_scores`; NaN, with ``missing`` saying
    why, until the pain-intensity item is collected too). For a patient viewing their own
    record, ``alerts``, ``changes`` and the voided rows are empty: patients' screens never hint at triage.
    """

    patient: pd.DataFrame
    series: pd.DataFrame
    infusions: pd.DataFrame
    adverse_events: pd.DataFrame
    assessments: pd.DataFrame
    item_responses: pd.DataFrame
    alerts: pd.DataFrame = field(repr=False)
    all_series: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    all_infusions: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    all_adverse_events: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    replaced_assessments: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    changes: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    summary_scores: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


# Alerts ---------------------------------------------------------------------------------------------


def raise_score_alerts(db: storage.Database, assessment_ids: Iterable[int] | None, *, now: datetime,
                       settings: Settings, latest_only: bool = False) -> int:
    """Run :func:`alert_rule` on newly stored scores and store the alerts they raise; returns how many.

    Every path that stores a score calls this inside its own transaction: the check-in and the paper
    form, a corrected assessment, the CSV and REDCap imports and the demo generator. Each score is
    compared with the patient's previous active score in its domain.

    Parameters
    ----------
    assessment_ids
        The new scores; None: every patient's latest score per domain (the demo generator).
    latest_only
        Only scores that are now the patient's latest in their domain: an import of old data raises at
        most one alert per patient and domain, so a history import does not flood the list.
    """
    candidates = storage.load_alert_candidates(db, None if assessment_ids is None else list(assessment_ids))
    if latest_only:
        candidates = candidates[candidates["latest"]]
    # Only rows that can meet a rule go through alert_rule (which words the reason): a bulk load checks
    # hundreds of thousands of scores.
    candidates = candidates[may_alert(candidates, settings.mcid, settings.domains)]
    alerts = []
    for row in candidates.itertuples(index=False):
        previous = None if pd.isna(row.previous_t) else float(row.previous_t)
        rule = alert_rule(settings.domains[row.domain], float(row.t_score), previous,
                          float(settings.mcid[row.domain]), previous_on=as_date_or_none(row.previous_on))
        if rule:
            alerts.append({"patient_id": row.patient_id, "assessment_id": int(row.assessment_id),
                           "domain": row.domain, "t_score": float(row.t_score), "priority": rule[0],
                           "reason": rule[1]})
    storage.add_alerts(db, alerts, now=now)
    return len(alerts)


def _require_patient(db: storage.Database, patient_id: str) -> pd.DataFrame:
    patient = storage.load_patient(db, patient_id)
    if patient.empty:
        raise NotFound(f"No patient with ID {patient_id!r}; check the ID or enrol the patient first")
    return patient


# Enrolment and treatment ---------------------------------------------------------------------------


def enrol_patient(db: storage.Database, actor: User, *, patient_id: str, diagnosis: str | None = None,
                  sex: str | None = None, birth_year: int | str | None = None,
                  enrolled_on: date | str | None = None, today: date, now: datetime,
                  settings: Settings, diagnosis_code: int | None = None) -> Invitation:
    """Enrol a patient (clinician) and issue their one-time invitation code.

    Returns
    -------
    Invitation
        ``code`` to hand to the patient (shown once; only its hash is stored) and ``expires_at``.

    Raises
    ------
    PermissionDenied, ValidationError (every bad field listed), DuplicateRecord (ID already enrolled)
    """
    user = require_role(db, actor, "clinician", action="enrol_patient")
    with storage.transaction(db):
        storage.add_patient(db, patient_id=patient_id, diagnosis=diagnosis, sex=sex, birth_year=birth_year,
                            enrolled_on=enrolled_on, entered_by=user.username, today=today)
        pid = str(patient_id).strip()
        if diagnosis_code is not None:  # the coded diagnosis; ``diagnosis`` stays the clinician's free-text note
            storage.set_diagnosis_code(db, pid, diagnosis_code, reason=None, by=user.username)
        storage.append_audit(db, actor=user.username, action="enrol_patient", patient_id=pid)
        return issue_invitation(db, user, pid, now=now, settings=settings)


def log_series(db: storage.Database, actor: User, *, patient_id: str, first_infusion: date | str,
               last_infusion: date | str, infusions: int, protocol: str | None = None,
               dose_mg_per_kg: float | None = None, notes: str | None = None, today: date) -> int:
    """Record an infusion series (clinician); returns its ``series_id``.

    Raises
    ------
    PermissionDenied, ValidationError (future dates, last before first, dose outside 0.05-2.0 mg/kg...),
    NotFound, DuplicateRecord
    """
    user = require_patient_access(db, actor, patient_id, action="log_series", patient_self=False)
    with storage.transaction(db):
        series_id = storage.add_series(db, patient_id=patient_id, first_infusion=first_infusion,
                                       last_infusion=last_infusion, infusions=infusions, protocol=protocol,
                                       dose_mg_per_kg=dose_mg_per_kg, notes=notes, entered_by=user.username,
                                       today=today)
        storage.append_audit(db, actor=user.username, action="log_series", patient_id=patient_id,
                             details={"series_id": series_id})
    return series_id


def plan_series(db: storage.Database, actor: User, *, patient_id: str, first_infusion: date | str,
                planned_infusions: int, planned_last: date | str | None = None, protocol: str | None = None,
                dose_mg_per_kg: float | None = None, notes: str | None = None, today: date) -> int:
    """Plan a series (clinician) whose infusions are then logged day by day; returns its ``series_id``.

    The first infusion may be in the future; ``planned_last`` defaults to consecutive days. See
    :func:`outcomes.storage.plan_series`.
    """
    user = require_patient_access(db, actor, patient_id, action="plan_series", patient_self=False)
    with storage.transaction(db):
        series_id = storage.plan_series(db, patient_id=patient_id, first_infusion=first_infusion,
                                        planned_infusions=planned_infusions, planned_last=planned_last,
                                        protocol=protocol, dose_mg_per_kg=dose_mg_per_kg, notes=notes,
                                        entered_by=user.username, today=today)
        storage.append_audit(db, actor=user.username, action="plan_series", patient_id=patient_id,
                             details={"series_id": series_id})
    return series_id


def log_infusion(db: storage.Database, actor: User, *, patient_id: str, series_id: int,
                 infused_on: date | str, dose_mg_per_kg: float, duration_min: int,
                 adverse_events: Iterable[Mapping[str, Any]] = (),
                 notes: str | None = None, today: date, **vitals: Any) -> int:
    """Record one infusion of a patient's series with its vital signs and adverse events (clinician).

    ``adverse_events``: mappings ``{"kind", "severity", "action", "description", "notes"}``, kind one of
    ``storage.EVENT_KINDS`` (``other`` needs a description), severity one of ``storage.SEVERITIES``,
    action one of ``storage.EVENT_ACTIONS``. ``vitals``: any of ``storage.VITALS`` (blood pressure before
    and after, heart rate, RASS). Returns the infusion id.
    """
    user = require_patient_access(db, actor, patient_id, action="log_infusion", patient_self=False)
    adverse_events = list(adverse_events)
    owner = storage.series_patient(db, series_id)
    if owner != patient_id:
        raise NotFound(f"Patient {patient_id!r} has no infusion series with id {series_id}; pick the series "
                       "from the patient's list")
    with storage.transaction(db):
        infusion_id = storage.add_infusion(db, series_id=series_id, infused_on=infused_on,
                                           dose_mg_per_kg=dose_mg_per_kg, duration_min=duration_min,
                                           adverse_events=adverse_events, notes=notes,
                                           entered_by=user.username, today=today, **vitals)
        storage.append_audit(db, actor=user.username, action="log_infusion", patient_id=patient_id,
                             details={"series_id": series_id, "infusion_id": infusion_id,
                                      "adverse_events": len(adverse_events)})
    return infusion_id


# Corrections, voids, cancellations, dispositions ------------------------------------------------------


def cancel_series(db: storage.Database, actor: User, *, patient_id: str, series_id: int, reason: str) -> None:
    """Cancel a planned series before any infusion (clinician); the reason is kept in the record's trail."""
    user = require_patient_access(db, actor, patient_id, action="cancel_series", patient_self=False)
    _require_own_record(db, patient_id, "series", series_id)
    with storage.transaction(db):
        storage.cancel_series(db, series_id, reason=reason, by=user.username)
        storage.append_audit(db, actor=user.username, action="cancel_series", patient_id=patient_id,
                             details={"series_id": series_id, "reason": reason})


def _require_own_record(db: storage.Database, patient_id: str, record: str, record_id: int | str) -> None:
    """NotFound unless the record belongs to the patient (a page never edits another patient's row)."""
    if record == "patient":
        _require_patient(db, patient_id)
        return
    if storage.record_owner(db, record, record_id) != patient_id:
        raise NotFound(f"Patient {patient_id!r} has no {record.replace('_', ' ')} with id {record_id}; reload "
                       "the patient's record")


def correct_record(db: storage.Database, actor: User, *, patient_id: str, record: str,
                   record_id: int | str | None = None, changes: Mapping[str, Any], reason: str, today: date,
                   now: datetime, settings: Settings) -> int:
    """Correct a patient's demographics, a series, an infusion, an adverse event or an assessment (clinician).

    The old values are kept in the record's trail (:func:`record_history`) with who, when and ``reason``,
    and the correction is audited. A corrected assessment is a new row superseding the old one; it goes
    through the alert rules like any new score. Returns the record's id after the correction.

    Raises
    ------
    PermissionDenied, ValidationError (reason missing, nothing changed, an invalid value), NotFound
    """
    user = require_patient_access(db, actor, patient_id, action="correct_record", patient_self=False)
    record_id = patient_id if record == "patient" else record_id
    _require_own_record(db, patient_id, record, record_id)
    changes = dict(changes)
    recode = record == "patient" and "diagnosis_code" in changes
    code = changes.pop("diagnosis_code", None)
    if recode:
        stored = storage.load_patient(db, patient_id)["diagnosis_code"].iloc[0]
        recode = (None if code is None else int(code)) != (None if pd.isna(stored) else int(stored))
    with storage.transaction(db):
        if recode:  # the clinic's code (QI sees it), beside the note; one trail entry each, one transaction
            storage.set_diagnosis_code(db, patient_id, code, reason=reason, by=user.username)
        _, new_id = storage.correct_record(db, record, record_id, changes=changes, reason=reason,
                                           by=user.username, today=today, unchanged_ok=recode)
        if recode:
            changes["diagnosis_code"] = code
        alerts = 0
        if record == "assessment":
            alerts = raise_score_alerts(db, [new_id], now=now, settings=settings)
        storage.append_audit(db, actor=user.username, action="correct_record", patient_id=patient_id,
                             details={"record": record, "record_id": str(record_id), "new_id": str(new_id),
                                      "fields": sorted(changes), "reason": reason, "alerts": alerts})
    return new_id


def void_record(db: storage.Database, actor: User, *, patient_id: str, record: str, record_id: int,
                reason: str) -> None:
    """Void a series, infusion, adverse event or assessment entered in error (clinician).

    It stays in the record, marked voided with who, when and why, and leaves every analysis and export.
    """
    user = require_patient_access(db, actor, patient_id, action="void_record", patient_self=False)
    _require_own_record(db, patient_id, record, record_id)
    with storage.transaction(db):
        storage.void_record(db, record, record_id, reason=reason, by=user.username)
        storage.append_audit(db, actor=user.username, action="void_record", patient_id=patient_id,
                             details={"record": record, "record_id": str(record_id), "reason": reason})


def set_disposition(db: storage.Database, actor: User, *, patient_id: str, disposition: str, on: date | str,
                    reason: str | None = None, today: date) -> None:
    """Record a patient's disposition (clinician): active, discharged (follow-up complete), withdrawn (reason
    required), lost to follow-up or deceased; dated, with who recorded it. Only active patients are expected
    to check in."""
    user = require_patient_access(db, actor, patient_id, action="set_disposition", patient_self=False)
    with storage.transaction(db):
        storage.set_disposition(db, patient_id, disposition=disposition, on=on, reason=reason, by=user.username,
                                today=today)
        storage.append_audit(db, actor=user.username, action="set_disposition", patient_id=patient_id,
                             details={"disposition": disposition, "on": str(on), "reason": reason})


#: Plain words for the trail's record kinds and actions.
DISPOSITION_LABELS = {"active": "Active", "discharged": "Discharged (follow-up complete)", "withdrawn": "Withdrawn",
                      "lost_to_follow_up": "Lost to follow-up", "deceased": "Deceased"}


def record_history(db: storage.Database, actor: User, patient_id: str, *, record: str | None = None,
                   record_id: int | None = None) -> pd.DataFrame:
    """The trail of a patient's record (clinician): every correction, void, cancellation and disposition.

    Returns
    -------
    pandas.DataFrame
        ``storage.CHANGE_COLUMNS`` plus ``summary``, the change in words ("dose_mg_per_kg: 0.5 → 0.35"),
        oldest first. Audited as ``view_record_history``.
    """
    user = require_patient_access(db, actor, patient_id, action="view_record_history", patient_self=False)
    _require_patient(db, patient_id)
    changes = _with_summary(storage.load_record_changes(db, patient_id, record=record, record_id=record_id))
    storage.append_audit(db, actor=user.username, action="view_record_history", patient_id=patient_id,
                         details={"record": record, "record_id": record_id})
    return changes


#: Field names in words, for the record's history.
FIELD_LABELS = {
    "diagnosis": "diagnosis note", "diagnosis_code": "diagnosis code", "sex": "sex", "birth_year": "birth year", "enrolled_on": "enrolled on",
    "first_infusion": "first infusion", "last_infusion": "last infusion", "infusions": "infusions",
    "protocol": "protocol", "dose_mg_per_kg": "dose (mg/kg)", "notes": "notes", "infused_on": "date",
    "duration_min": "duration (min)", "kind": "event", "severity": "severity", "action": "action taken",
    "description": "description", "assessed_on": "date", "t_score": "T-score", "se": "SE",
    "state": "status", "voided": "voided", "disposition": "disposition", "disposition_on": "since",
    "disposition_reason": "reason",
    **{name: label for name, (label, *_rest) in storage.VITALS.items()},
}


def _with_summary(changes: pd.DataFrame) -> pd.DataFrame:
    """The trail with ``summary``: each change in words ("dose (mg/kg): 0.5 → 0.35")."""
    summary = [", ".join(f"{FIELD_LABELS.get(k, k)}: {_shown(b.get(k))} → {_shown(v)}" for k, v in a.items())
               for b, a in zip(changes["before"], changes["after"])]
    return changes.assign(summary=pd.Series(summary, index=changes.index, dtype=object))


def _shown(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("_", " ")


# Check-ins -----------------------------------------------------------------------------------------


def checkin_forms(settings: Settings, registry: Registry | None = None, *, kind: str = "weekly") -> tuple[Form, ...]:
    """The questionnaires a check-in asks, in order: ``settings.slot_forms(kind)`` for the kind of the slot
    open today (``baseline``, ``weekly`` or ``timepoint``; see :func:`checkin_due`).

    Raises
    ------
    ConfigError
        A configured form key is not in the registry, or two forms share a domain.
    """
    registry = registry or settings.registry
    keys = settings.slot_forms(kind)
    name = "checkin_forms" if keys == settings.checkin_forms else f"{kind}_forms"
    try:
        forms = tuple(registry.form(key) for key in keys)
    except UnknownForm as exc:
        raise ConfigError(f"setting {name}: {exc}") from None
    domains = [f.domain for f in forms]
    if len(set(domains)) < len(domains):
        raise ConfigError(f"setting {name}: name at most one form per domain, got " + ", ".join(keys))
    return forms


def _unscored_message(form: Form, result: ScoreResult, label: str, you: bool) -> str:
    need = min_answered(form)
    whose = "Your" if you else "The"
    return (f"{whose} {label.lower()} answers were not scored: answer at least {need} of the {form.n_items} "
            f"questions ({result.n_answered} answered). This part was not saved.")


def _change_message(label: str, t: float, severity: str, change: float | None, baseline_on: date | None,
                    assessed_on: date, series_number: Any, improved: bool | None, worsened: bool | None,
                    mcid: float, you: bool) -> str:
    subject = f"Your {label.lower()} score" if you else f"The {label.lower()} score"
    text = f"{subject} is {t:.1f} ({severity})."
    if change is None:
        return text + " There is no earlier score to compare it with yet."
    if baseline_on == assessed_on:
        return text + " This is the starting score that later check-ins are compared with."
    if pd.isna(series_number):
        when = "at your first check-in" if you else "at the first check-in"
    elif int(series_number) == 1:
        when = "before your infusions" if you else "before the infusions"
    else:
        when = f"before infusion series {int(series_number)}"
    if change == 0:
        return text + f" That is the same as {when}."
    direction = "lower" if change < 0 else "higher"
    verdict = ("a meaningful improvement" if improved else "a meaningful worsening" if worsened
               else f"less than the {mcid:g} points that count as a meaningful change")
    return text + f" That is {abs(change):.1f} points {direction} than {when} — {verdict}."


def _check_answers(answers: Any, problems: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``[(form_key, responses)]`` of a well-shaped answers mapping; problems otherwise."""
    if not isinstance(answers, Mapping) or not answers:
        problems.append("there are no answers: answer at least one questionnaire")
        return []
    out = []
    for key, responses in answers.items():
        if not isinstance(key, str) or not isinstance(responses, Mapping):
            problems.append(f"answers must map each form key to {{item_id: value}}, "
                            f"got {key!r}: {responses!r}")
            continue
        if len(responses) > 200 or any(not isinstance(i, str) for i in responses):
            problems.append(f"the answers to {key} must map at most 200 item IDs to values")
            continue
        out.append((key, dict(responses)))
    if len(answers) > 20:
        problems.append(f"{len(answers)} questionnaires were sent; a check-in has at most 20")
    return out


def submit_checkin(db: storage.Database, actor: User, *, patient_id: str,
                   answers: Mapping[str, Mapping[str, int | None]], assessed_on: date | str, today: date,
                   now: datetime, settings: Settings, source: str | None = None, replace: bool = False,
                   registry: Registry | None = None) -> CheckinResult:
    """Score and store a check-in, raise alerts, discard the draft and audit it, all in one transaction.

    Parameters
    ----------
    answers
        ``{form_key: {item_id: value or None}}``; usually the :func:`checkin_forms`. A questionnaire
        with fewer than half its items answered is reported as not scored and not stored.
    assessed_on
        The day answered; a patient can only send today's check-in.
    source
        ``patient`` or ``clinician`` (paper form entered by a clinician); by default the actor's role.
    replace
        Replace the patient's existing entry of that day (the earlier one is kept, superseded).

    Returns
    -------
    CheckinResult
        Per questionnaire: T, SE, severity, change since baseline and whether it is meaningful, and a
        plain-words ``message`` for the patient.

    Raises
    ------
    PermissionDenied
        Not a clinician, nor the patient themselves.
    ValidationError
        Unknown form key, an answer outside an item's range, a date in the future (all listed).
    CheckinNotScorable
        No questionnaire has enough answers to be scored.
    CheckinExists
        The patient already has an entry that day and ``replace`` is False: ask "replace it?".
    """
    user = require_patient_access(db, actor, patient_id, action="submit_checkin")
    registry = registry or settings.registry
    you = user.role == "patient"
    problems: list[str] = []
    day = parse_day_or_problem(assessed_on, "assessed_on", today, problems)
    if you and day is not None and day != today:
        problems.append(f"your check-in is dated today ({today}); it cannot be dated {day}")
    source = source or ("patient" if you else "clinician")
    if source not in ("patient", "clinician") or (you and source != "patient"):
        problems.append(f"source must be {'patient' if you else 'patient or clinician'}, got {source!r}")
    order = {key: i for i, key in enumerate(settings.checkin_forms)}
    results: list[tuple[Form, dict[str, Any], ScoreResult]] = []
    seen: dict[str, str] = {}
    given = sorted(_check_answers(answers, problems), key=lambda kv: order.get(kv[0], len(order)))
    for key, responses in given:
        try:
            form = registry.form(key)
            result = score_response(form, responses)
        except (UnknownForm, InvalidResponse) as exc:
            problems.append(str(exc))
            continue
        if form.domain in seen:
            problems.append(f"{seen[form.domain]} and {key} both measure {form.domain}; send one of them")
            continue
        seen[form.domain] = key
        results.append((form, {i: responses.get(i) for i in form.item_ids}, result))
    if problems:
        raise ValidationError("Cannot save the check-in: nothing was saved. Fix the following and try again:",
                              problems)
    _require_patient(db, patient_id)
    labels = {form.domain: registry.domain(form.domain).label for form, _, _ in results}
    if not any(r.scorable for _, _, r in results):
        raise CheckinNotScorable("None of the questionnaires has enough answers to be scored, so nothing was "
                                 "saved. Answer more questions and send again:",
                                 [_unscored_message(f, r, labels[f.domain], you) for f, _, r in results])
    assert day is not None
    scored = [(f, resp, r) for f, resp, r in results if r.scorable]
    with storage.transaction(db):
        history = storage.load_assessments(db, patient_id=patient_id)
        same_day = history["assessed_on"] == pd.Timestamp(day)
        if same_day.any() and not replace:
            when = "today" if day == today else f"on {day}"
            message = (f"You already sent a check-in {when}. Replace it with these answers?" if you else
                       f"Patient {patient_id} already has a check-in {when}. Replace it with this one?")
            raise CheckinExists(message, patient_id=patient_id, assessed_on=day)
        ids = storage.save_checkin(db, patient_id=patient_id, assessed_on=day, source=source,
                                   entered_by=user.username, today=today, scores=[
                                       {"domain": f.domain, "form": f.key, "responses": resp,
                                        "t_score": r.t_score, "se": r.se, "raw_score": r.raw_score,
                                        "n_answered": r.n_answered, "method": r.method}
                                       for f, resp, r in scored])
        alerts = raise_score_alerts(db, ids, now=now, settings=settings)
        if isinstance(user, LinkUser):  # sent through a one-tap link: the link cannot be opened again
            storage.spend_link(db, user.link_id, now=now)
        else:
            storage.delete_draft(db, patient_id=patient_id, user_id=user.id)
        storage.append_audit(db, actor=user.username, action="submit_checkin", patient_id=patient_id,
                             details={"assessed_on": day.isoformat(), "source": source,
                                      "replaced": bool(same_day.any()),
                                      "domains": [f.domain for f, _, _ in scored], "alerts": alerts})
        after = storage.load_assessments(db, patient_id=patient_id)
        series = storage.load_series(db, patient_id)

    targets = pd.DataFrame({"patient_id": patient_id, "domain": [f.domain for f, _, _ in scored],
                            "assessed_on": pd.Timestamp(day)})
    base = baselines(targets, after, series, settings.baseline_days).set_index(targets["domain"])
    domains = []
    for form, _, r in results:
        label = labels[form.domain]
        common = dict(domain=form.domain, label=label, form=form.key, scored=r.scorable, t_score=r.t_score,
                      se=r.se, severity=r.severity, method=r.method, n_answered=r.n_answered,
                      n_items=r.n_items, note=r.note)
        if not r.scorable:
            domains.append(DomainResult(**common, message=_unscored_message(form, r, label, you)))
            continue
        b = base.loc[form.domain]
        mcid = float(settings.mcid[form.domain])
        change = None if pd.isna(b["baseline_t"]) else float(round_half_away(r.t_score - b["baseline_t"]))
        sign = settings.domains[form.domain].improvement_sign
        improved = None if change is None else sign * change >= mcid
        worsened = None if change is None else -sign * change >= mcid
        domains.append(DomainResult(
            **common, baseline_on=as_date_or_none(b["baseline_on"]),
            baseline_t=None if change is None else float(b["baseline_t"]), change=change, mcid=mcid,
            improved=improved, worsened=worsened,
            message=_change_message(label, r.t_score, r.severity, change, as_date_or_none(b["baseline_on"]), day,
                                    b["baseline_series"], improved, worsened, mcid, you)))
    return CheckinResult(patient_id=patient_id, assessed_on=day, source=source, replaced=bool(same_day.any()),
                         domains=tuple(domains), alerts_created=alerts)


def save_draft(db: storage.Database, actor: User, patient_id: str,
               answers: Mapping[str, Mapping[str, int | None]], *, now: datetime) -> None:
    """Save unsent answers as the user goes (cheap upsert; one draft per patient and author).

    Not audited and not counted as a data change: a draft is not part of the record until sent.
    """
    user = require_patient_access(db, actor, patient_id, action="save_draft")
    problems: list[str] = []
    cleaned = _check_answers(answers, problems)
    for key, responses in cleaned:
        bad = [i for i, v in responses.items()
               if v is not None and (isinstance(v, bool) or not isinstance(v, int))]
        if bad:
            problems.append(f"the answers to {key} must be whole numbers or empty; check {', '.join(bad)}")
    if problems:
        raise ValidationError("Cannot save the draft:", problems)
    if isinstance(user, LinkUser):  # a check-in opened with a one-tap link keeps its draft with the link
        storage.save_link_draft(db, user.link_id, answers=dict(cleaned), now=now)
    else:
        storage.save_draft(db, patient_id=patient_id, user_id=user.id, answers=dict(cleaned), now=now)


def load_draft(db: storage.Database, actor: User, patient_id: str) -> Draft | None:
    """The user's unsent answers for the patient (to restore after signing in again), or None."""
    user = require_patient_access(db, actor, patient_id, action="load_draft")
    found = (storage.load_link_draft(db, user.link_id) if isinstance(user, LinkUser)
             else storage.load_draft(db, patient_id=patient_id, user_id=user.id))
    return None if found is None else Draft(answers=found[0], saved_at=found[1])


def discard_draft(db: storage.Database, actor: User, patient_id: str) -> bool:
    """Throw away the user's unsent answers for the patient; True when there were some."""
    user = require_patient_access(db, actor, patient_id, action="discard_draft")
    if isinstance(user, LinkUser):
        return storage.delete_link_draft(db, user.link_id)
    return storage.delete_draft(db, patient_id=patient_id, user_id=user.id)


def _followup_now(db: storage.Database, today: date, settings: Settings,
                  patient_id: str | None = None) -> pd.DataFrame:
    """:func:`outcomes.followup.patient_status` of one patient or all, on ``today``."""
    schedule = followup.Schedule.from_settings(settings)
    # Older score days cannot change anyone's status today (followup.patient_status); reading them would
    # double the roster's time in a large clinic.
    since = today - timedelta(days=schedule.status_days())
    inputs = storage.load_followup_inputs(db, patient_id, days_since=since)
    every = followup.slots(inputs, as_of=today, schedule=schedule, closed_before=since)
    return followup.patient_status(every, inputs["patients"], as_of=today)


def checkin_due(db: storage.Database, actor: User, patient_id: str, *, today: date,
                settings: Settings) -> DueStatus:
    """Where the patient's follow-up stands today: the slot open now, or the next one (docs/followup.md).

    The message speaks to the patient when the actor is the patient. A patient can check in whether or
    not a slot is open; the check-in asks the questionnaires of the open slot's kind.
    """
    user = require_patient_access(db, actor, patient_id, action="checkin_due")
    _require_patient(db, patient_id)
    row = _followup_now(db, today, settings, patient_id).iloc[0]
    latest = storage.load_latest_scores(db, patient_id=patient_id)
    last = latest["assessed_on"].max() if len(latest) else pd.NaT
    status = row["status"]
    you = user.role == "patient"
    your = "Your" if you else "The"
    label = row["slot_label"] if isinstance(row["slot_label"], str) else None
    what = f"{label.lower()} questionnaire" if label else "questionnaire"
    due_on, closes_on, next_due = (as_date_or_none(row[c]) for c in ("due_on", "closes_on", "next_due"))
    next_text = (f" The next one ({row['next_label']}) is due on {next_due:%A %d %B %Y}."
                 if next_due is not None else "")
    if status == "due":
        message = f"{your} {what} is due. It is open until {closes_on:%A %d %B}."
    elif status == "overdue":
        message = f"{your} {what} is overdue: it was due on {due_on:%d %B} and is open until {closes_on:%A %d %B}."
    elif status == "done":
        message = f"{'Thank you: your' if you else 'The'} {what} is done.{next_text}"
    elif status == "missed":
        message = f"{'You have' if you else 'The patient has'} no questionnaire open today.{next_text}"
    elif status == "upcoming":
        message = (f"{your} next questionnaire ({row['next_label']}) is due on {next_due:%A %d %B %Y}."
                   if next_due is not None else "No questionnaire is due yet.")
    elif status == "complete":
        message = (f"{'Your' if you else 'The'} follow-up after the last infusion series is complete."
                   + (" You can still check in whenever you like." if you else ""))
    else:
        message = "No questionnaire is due." + (" You can still check in whenever you like." if you else "")
    kind = row["kind"] if isinstance(row["kind"], str) else "weekly"
    return DueStatus(status=status, last_checkin=as_date_or_none(last), next_due=next_due if status not in (
                         "due", "overdue") else due_on,
                     overdue_from=None if due_on is None else due_on + pd.Timedelta(
                         days=settings.checkin_overdue_days).to_pytimedelta(),
                     message=message, slot_label=label, kind=kind, due_on=due_on, closes_on=closes_on,
                     next_label=row["next_label"] if isinstance(row["next_label"], str) else None,
                     on_call_list=bool(row["on_call_list"]))


def followup_schedule(db: storage.Database, actor: User, patient_id: str, *, today: date,
                      settings: Settings) -> pd.DataFrame:
    """The patient's follow-up slots with their status today, how each was chased, newest series first
    (clinician); audited as ``view_followup``.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`outcomes.followup.slots` plus ``invitation_sent`` and ``reminder_sent``
        (UTC; NaT when not sent) and ``call`` (the latest call outcome of the slot, in words, or "").
    """
    user = require_role(db, actor, "clinician", action="view_followup")
    _require_patient(db, patient_id)
    inputs = storage.load_followup_inputs(db, patient_id)
    slots = followup.slots(inputs, as_of=today, schedule=followup.Schedule.from_settings(settings))
    sent = storage.load_sent_steps(db, patient_id).drop(columns="patient_id")
    calls = storage.load_call_outcomes(db, patient_id).drop_duplicates(["series_id", "slot"], keep="last")
    calls = calls.assign(call=calls["outcome"].str.replace("_", " ").str.capitalize() + " ("
                         + calls["recorded_by"] + ")")[["series_id", "slot", "call"]]
    out = (slots.merge(sent, on=["series_id", "slot"], how="left").merge(calls, on=["series_id", "slot"], how="left")
           .assign(call=lambda f: f["call"].fillna("")))
    storage.append_audit(db, actor=user.username, action="view_followup", patient_id=patient_id)
    order = out.groupby("series_id")["due_on"].transform("min")
    return out.assign(_o=order).sort_values(["_o", "due_on"], ascending=[False, True]).drop(
        columns="_o").reset_index(drop=True)


# Clinician views -----------------------------------------------------------------------------------


def patient_record(db: storage.Database, actor: User, patient_id: str, *,
                   settings: Settings) -> PatientRecord:
    """Everything about one patient (clinician, or the patient themselves); audited as ``view_record``."""
    user = require_patient_access(db, actor, patient_id, action="view_record")
    patient = _require_patient(db, patient_id)
    series = storage.load_series(db, patient_id)
    assessments = storage.load_assessments(db, patient_id=patient_id)
    base = baselines(assessments, assessments, series, settings.baseline_days)
    mcid = assessments["domain"].map(settings.mcid).astype(float)
    sign = assessments["domain"].map(settings.domains.signs()).astype(float)
    change = pd.Series(round_half_away(assessments["t_score"] - base["baseline_t"]), index=assessments.index)
    rci, reliable = reliable_change_frame(base["baseline_t"], base["baseline_se"], assessments["t_score"],
                                          assessments["se"])
    assessments = assessments.assign(
        baseline_on=base["baseline_on"], baseline_t=base["baseline_t"], change=change,
        improved=(sign * change >= mcid).where(change.notna()).astype("boolean"), rci=rci, reliable=reliable)
    alerts = storage.load_alerts(db, patient_id=patient_id)
    every = storage.load_series(db, patient_id, every=True)
    infusions = storage.load_infusions(db, patient_id, every=True)
    events = storage.load_adverse_events(db, patient_id, every=True)
    replaced = storage.load_assessments(db, patient_id=patient_id, include_superseded=True)
    replaced = replaced[replaced["superseded_by"].notna()].reset_index(drop=True)
    changes = _with_summary(storage.load_record_changes(db, patient_id))
    if user.role == "patient":
        alerts, changes, replaced = alerts.iloc[0:0], changes.iloc[0:0], replaced.iloc[0:0]
        every = every[~every["voided"] & (every["state"] != "cancelled")]
        infusions, events = infusions[~infusions["voided"]], events[~events["voided"]]
    storage.append_audit(db, actor=user.username, action="view_record", patient_id=patient_id)
    return PatientRecord(patient=patient, series=series,
                         infusions=infusions[~infusions["voided"]].reset_index(drop=True),
                         adverse_events=events[~events["voided"]].reset_index(drop=True), assessments=assessments,
                         item_responses=storage.load_item_responses(db, patient_id), alerts=alerts,
                         all_series=every, all_infusions=infusions, all_adverse_events=events,
                         replaced_assessments=replaced, changes=changes,
                         summary_scores=_profile_days(assessments))


def _profile_days(assessments: pd.DataFrame) -> pd.DataFrame:
    """Summary scores of the days on which every PROMIS-29 domain was scored (days with fewer are not
    PROMIS-29 administrations and would only list what is missing)."""
    weights = load_summary_weights()
    scored = summary_scores(assessments[["patient_id", "assessed_on", "domain", "t_score"]], weights=weights)
    lacks_a_domain = scored["missing"].map(lambda m: bool(set(filter(None, m.split(", "))) - {weights.raw_item}))
    return scored[~lacks_a_domain].reset_index(drop=True)


def patient_ids(db: storage.Database, actor: User) -> list[str]:
    """Every enrolled patient ID, sorted, for a clinician's patient picker (not audited: IDs only)."""
    require_role(db, actor, "clinician", action="list_patients")
    return storage.load_patients(db)["patient_id"].tolist()


def roster(db: storage.Database, actor: User, *, today: date, settings: Settings) -> pd.DataFrame:
    """One row per patient for the clinic's daily list (clinician); audited as ``view_roster``.

    A fixed handful of aggregate queries, whatever the number of patients.

    Returns
    -------
    pandas.DataFrame
        Columns :func:`roster_columns` of ``settings.domains``:

        * ``disposition`` (active, discharged...); ``series_status`` in words ("No series", "Series
          planned from 9 Jun 2025", "In series (day 3 of 5)", "Week 6 after series 1");
          ``in_series_today`` and ``in_series_this_week`` (Monday to Sunday; planned series count);
          ``next_infusion`` (first infusion of the next planned series).
        * ``followup``: the patient's follow-up status today (:func:`outcomes.followup.patient_status`:
          upcoming, due, overdue, done, missed, complete, inactive, no series) and ``followup_text`` in
          words ("1 month overdue since 3 Mar", "Next: Week 2 on 14 Mar"); ``baseline_due`` (the baseline
          slot is open and undone); ``next_due`` (the open slot's due day, else the next slot's);
          ``overdue``; ``on_call_list`` (undone from day 4 of the slot: staff phone);
          ``last_checkin`` (the latest score's day).
        * per domain the latest ``<domain>_t``, its ``<domain>_change`` from baseline and
          ``<domain>_improved``; ``open_alerts`` and ``top_priority``.
        * ``today`` (why the patient is on today's list, in words) and ``today_rank`` (1 in a series
          today or this week, 2 baseline due, 3 open alert, 4 a follow-up slot due or overdue; <NA> when
          not on the list): see :func:`today_list`.

        Sorted by alert priority, then overdue first, then patient ID.
    """
    user = require_role(db, actor, "clinician", action="view_roster")
    patients = storage.load_patients(db)[["patient_id", "diagnosis", "disposition"]]
    series = storage.load_series(db, every=True)
    latest = storage.load_latest_scores(db)
    candidates = storage.load_baseline_candidates(db, settings.baseline_days)
    alerts = storage.load_alert_summary(db)

    now = pd.Timestamp(today)
    week_start = now - pd.Timedelta(days=today.weekday())
    week_end = week_start + pd.Timedelta(days=6)
    series = series[(series["state"] != "cancelled") & ~series["voided"]].copy()
    # A series runs from its first infusion to the later of its last given and its planned last infusion.
    series["end"] = series[["last_infusion", "planned_last"]].max(axis=1)
    current = series[series["first_infusion"] <= now].drop_duplicates("patient_id", keep="last")
    upcoming = series[series["first_infusion"] > now].drop_duplicates("patient_id", keep="first")
    given = series[(series["state"] == "given") & (series["first_infusion"] <= now)].drop_duplicates(
        "patient_id", keep="last")
    week = series[(series["first_infusion"] <= week_end) & (series["end"] >= week_start)]

    out = patients.merge(current[["patient_id", "series_number", "first_infusion", "end"]], on="patient_id",
                         how="left")
    out["last_infusion"] = out["patient_id"].map(given.set_index("patient_id")["last_infusion"])
    out["next_infusion"] = out["patient_id"].map(upcoming.set_index("patient_id")["first_infusion"])
    active = out["disposition"] == "active"
    in_today = out["first_infusion"].notna() & (now <= out["end"])
    out["in_series_today"] = in_today
    out["in_series_this_week"] = out["patient_id"].isin(week["patient_id"])
    day = (now - out["first_infusion"]).dt.days + 1
    length = (out["end"] - out["first_infusion"]).dt.days + 1
    weeks = np.ceil((now - out["last_infusion"]).dt.days / 7).clip(lower=1)
    out["series_status"] = np.select(
        [in_today, out["next_infusion"].notna(), out["last_infusion"].notna()],
        ["In series (day " + day.astype("Int64").astype("string") + " of "
         + length.astype("Int64").astype("string") + ")",
         "Planned from " + out["next_infusion"].dt.strftime("%d %b %Y"),
         "Week " + weeks.astype("Int64").astype("string") + " after series "
         + out["series_number"].astype("Int64").astype("string")],
        "No series")

    status = _followup_now(db, today, settings).set_index("patient_id").reindex(out["patient_id"])
    out["followup"] = status["status"].to_numpy()
    due_text = (status["slot_label"].fillna("").astype(str) + " " + status["status"].astype(str) + " since "
                + status["due_on"].dt.strftime("%d %b").fillna("")).where(
        status["slot"].ne("baseline"),
        "Baseline " + status["status"].astype(str) + " by " + status["closes_on"].dt.strftime("%d %b").fillna(""))
    next_text = ("Next: " + status["next_label"].fillna("").astype(str) + " on "
                 + status["next_due"].dt.strftime("%d %b").fillna(""))
    out["followup_text"] = np.select(  # (astype: an empty clinic's frames have no string columns)
        [status["status"].isin(["due", "overdue"]), status["status"].eq("done") & status["next_due"].notna(),
         status["status"].isin(["upcoming", "missed"]) & status["next_due"].notna()],
        [due_text.to_numpy(), ("Done · " + next_text).to_numpy(), next_text.to_numpy()],
        status["status_label"].fillna("").astype(str).to_numpy())
    open_now = status["status"].isin(["due", "overdue"]).to_numpy()
    out["baseline_due"] = open_now & status["slot"].eq("baseline").to_numpy()
    out["overdue"] = status["status"].eq("overdue").to_numpy()
    out["on_call_list"] = status["on_call_list"].fillna(False).astype(bool).to_numpy()
    out["next_due"] = status["due_on"].where(open_now, status["next_due"]).to_numpy()
    last = latest.groupby("patient_id")["assessed_on"].max().rename("last_checkin")
    out = out.merge(last, left_on="patient_id", right_index=True, how="left")

    base = baselines(latest, candidates, series[series["state"] == "given"], settings.baseline_days)
    change = pd.Series(round_half_away(latest["t_score"] - base["baseline_t"]), index=latest.index)
    sign = latest["domain"].map(settings.domains.signs()).astype(float)
    improved = (sign * change >= latest["domain"].map(settings.mcid).astype(float)).where(change.notna())
    wide = latest.assign(t=latest["t_score"], change=change, improved=improved.astype(float)).pivot(
        index="patient_id", columns="domain", values=["t", "change", "improved"])
    for d in settings.domains:
        for c in ("t", "change", "improved"):
            column = wide[(c, d)] if (c, d) in wide.columns else pd.Series(dtype="float64")
            out[f"{d}_{c}"] = out["patient_id"].map(column).astype("float64")
        out[f"{d}_improved"] = out[f"{d}_improved"].astype("boolean")
    out = out.merge(alerts, on="patient_id", how="left")
    out["open_alerts"] = out["open_alerts"].fillna(0).astype("Int64")
    out = out.assign(**today_reasons(out))
    rank = out["top_priority"].map(PRIORITY_RANK).fillna(len(PRIORITY_RANK))
    out = out.assign(_rank=rank).sort_values(["_rank", "overdue", "patient_id"],
                                             ascending=[True, False, True])
    storage.append_audit(db, actor=user.username, action="view_roster", details={"patients": len(out)})
    return out[list(roster_columns(settings.domains))].reset_index(drop=True)


def open_alerts(db: storage.Database, actor: User) -> pd.DataFrame:
    """Unacknowledged alerts, high priority first (clinician); audited as ``view_alerts``.

    Columns ``storage.ALERT_COLUMNS`` plus ``action`` (who acts and by when). Show
    :data:`SAFETY_NOTICE` with them.
    """
    user = require_role(db, actor, "clinician", action="view_alerts")
    alerts = storage.load_alerts(db, open_only=True)
    storage.append_audit(db, actor=user.username, action="view_alerts", details={"open": len(alerts)})
    return alerts.assign(action=alerts["priority"].map(ALERT_ACTIONS))


def acknowledge_alert(db: storage.Database, actor: User, alert_id: int, *, now: datetime,
                      note: str | None = None) -> None:
    """Acknowledge an alert (clinician): who and when are stored with it and in the audit log.

    Raises
    ------
    PermissionDenied, NotFound, ValidationError (already acknowledged: by whom and when)
    """
    user = require_role(db, actor, "clinician", action="acknowledge_alert")
    with storage.transaction(db):
        patient_id = storage.acknowledge_alert(db, alert_id, by=user.username, now=now, note=note)
        storage.append_audit(db, actor=user.username, action="acknowledge_alert", patient_id=patient_id,
                             details={"alert_id": alert_id,  # the note as stored (none for a blank or a NaN)
                                      "note": note if isinstance(note, str) and note.strip() else None})


def read_audit_log(db: storage.Database, actor: User, *, user: str | None = None,
                   patient_id: str | None = None, action: str | None = None, date_from: date | None = None,
                   date_to: date | None = None) -> pd.DataFrame:
    """Audit entries, newest first, filtered (admin only); days are UTC days, both inclusive.

    Returns
    -------
    pandas.DataFrame
        Columns ``storage.AUDIT_COLUMNS``: ``audit_id, at, actor, action, patient_id, details``.
    """
    admin = require_role(db, actor, "admin", action="view_audit_log")
    if date_from and date_to and date_to < date_from:
        raise ValidationError(f"The date range ends ({date_to}) before it starts ({date_from}); "
                              "swap the dates")
    log = storage.load_audit_log(db, actor=user, patient_id=patient_id, action=action, date_from=date_from,
                                 date_to=date_to)
    storage.append_audit(db, actor=admin.username, action="view_audit_log", details={
        k: str(v) for k, v in (("user", user), ("patient_id", patient_id), ("action", action),
                               ("date_from", date_from), ("date_to", date_to)) if v is not None})
    return log


def _export_details(what: str, rows: int, deidentified: bool, fmt: str | None,
                    filters: Mapping[str, Any] | None, reason: str | None) -> dict[str, Any]:
    """Which export, how many rows, the de-identification level, and (when given) format, filters, reason."""
    details: dict[str, Any] = {"what": what, "rows": int(rows), "deidentified": bool(deidentified)}
    if fmt is not None:
        details["format"] = fmt
    if filters:
        details["filters"] = {str(k): str(v) for k, v in filters.items()}
    if reason is not None:
        details["reason"] = reason
    return details


def record_export(db: storage.Database, actor: User, *, what: str, rows: int, deidentified: bool,
                  patient_id: str | None = None, fmt: str | None = None,
                  filters: Mapping[str, Any] | None = None, reason: str | None = None) -> None:
    """Check and audit an export before the page hands over the file: one ``export`` entry.

    De-identified exports: clinician, QI or admin. Identified exports: clinician or admin; a
    patient may export only their own record. The entry holds who and when (the log's own columns),
    ``what``, ``rows``, ``deidentified`` and, when given, ``format``, ``filters`` and ``reason``.
    """
    roles = ("clinician", "qi", "admin") if deidentified else ("clinician", "admin")
    if patient_id is not None:
        user = require_patient_access(db, actor, patient_id, action="export", roles=roles)
    else:
        user = require_role(db, actor, *roles, action="export")
    storage.append_audit(db, actor=user.username, action="export", patient_id=patient_id,
                         details=_export_details(what, rows, deidentified, fmt, filters, reason))


def record_operator_export(db: storage.Database, operator: str, *, what: str, rows: int, deidentified: bool,
                           fmt: str | None = None, filters: Mapping[str, Any] | None = None,
                           reason: str | None = None) -> None:
    """Audit an export made on the command line by ``operator`` (logged as ``cli:<operator>``).

    Not role-checked: whoever can open the database file can read all of it; the entry records it.
    """
    storage.append_audit(db, actor=f"cli:{operator}", action="export",
                         details=_export_details(what, rows, deidentified, fmt, filters, reason))


@dataclass(frozen=True)
class BackupFile:
    """A consistent copy of the whole database for an administrator to download (identified data)."""

    filename: str
    data: bytes
    check: storage.BackupCheck


def backup_database(db: storage.Database, actor: User, *, now: datetime) -> BackupFile:
    """A consistent online backup of the whole database (admin only); audited as ``backup``.

    The copy is made with SQLite's backup API from one snapshot while others keep writing, and checked
    (``PRAGMA integrity_check``) before it is returned. It holds every identifier and the pseudonym
    secret: it is identified data (docs/privacy.md, docs/operations.md).
    """
    import tempfile
    from pathlib import Path

    admin = require_role(db, actor, "admin", action="backup")
    filename = f"outcomes-backup-{now:%Y%m%d-%H%M%S}.db"
    with tempfile.TemporaryDirectory(prefix="outcomes-backup-") as folder:
        check = storage.backup(db, Path(folder) / filename)
        data = check.path.read_bytes()
    storage.append_audit(db, actor=admin.username, action="backup",
                         details={"file": filename, "bytes": len(data), "counts": dict(check.counts)})
    return BackupFile(filename, data, check)


# Diagnosis codes (docs/privacy.md, "Diagnosis codes and filters") -------------------------------------------
# The clinic's coded list of diagnoses (storage.DIAGNOSIS_SEED to start with). QI filters and de-identified
# output use the code's label, pooled when rare; the free-text ``diagnosis`` stays the clinician's note
# (identified output only). Administrators maintain the list; clinicians choose from it.


def diagnosis_codes(db: storage.Database, actor: User, *, retired: bool = False) -> pd.DataFrame:
    """The clinic's diagnosis codes (clinician or admin): ``code, label, retired_at, created_at, created_by,
    patients``, by label; retired codes only with ``retired=True`` (forms offer current codes)."""
    require_role(db, actor, "clinician", "admin", action="diagnosis_codes")
    return storage.load_diagnosis_codes(db, retired=retired)


def add_diagnosis_code(db: storage.Database, actor: User, *, label: str) -> int:
    """Add a code to the list (admin); audited as ``diagnosis_code``. Returns its number."""
    admin = require_role(db, actor, "admin", action="add_diagnosis_code")
    with storage.transaction(db):
        code = storage.add_diagnosis_code(db, label, by=admin.username)
        storage.append_audit(db, actor=admin.username, action="diagnosis_code",
                             details={"change": "add", "code": code, "label": " ".join(label.split())})
    return code


def rename_diagnosis_code(db: storage.Database, actor: User, *, code: int, label: str) -> str:
    """Rename a code (admin): every patient holding it follows. Audited with both labels; returns the old one."""
    admin = require_role(db, actor, "admin", action="rename_diagnosis_code")
    with storage.transaction(db):
        old = storage.rename_diagnosis_code(db, code, label, by=admin.username)
        storage.append_audit(db, actor=admin.username, action="diagnosis_code",
                             details={"change": "rename", "code": int(code), "before": old,
                                      "label": " ".join(label.split())})
    return old


def retire_diagnosis_code(db: storage.Database, actor: User, *, code: int, retired: bool = True) -> str:
    """Retire a code, or offer a retired one again (admin); audited. Returns its label."""
    admin = require_role(db, actor, "admin", action="retire_diagnosis_code")
    with storage.transaction(db):
        label = storage.retire_diagnosis_code(db, code, by=admin.username, retired=retired)
        storage.append_audit(db, actor=admin.username, action="diagnosis_code",
                             details={"change": "retire" if retired else "restore", "code": int(code),
                                      "label": label})
    return label


def set_diagnosis_code(db: storage.Database, actor: User, *, patient_id: str, code: int | None,
                       reason: str) -> str | None:
    """Correct a patient's diagnosis code (clinician; None: not coded), with a reason kept in the record's
    trail. Returns the new label."""
    user = require_patient_access(db, actor, patient_id, action="set_diagnosis_code", patient_self=False)
    with storage.transaction(db):
        label = storage.set_diagnosis_code(db, patient_id, code, reason=reason, by=user.username)
        storage.append_audit(db, actor=user.username, action="correct_record", patient_id=patient_id,
                             details={"record": "patient", "record_id": patient_id, "fields": ["diagnosis_code"],
                                      "reason": reason})
    return label


def diagnosis_notes(db: storage.Database, actor: User) -> pd.DataFrame:
    """Free-text diagnosis notes of patients not yet coded, with how many share each (admin; identified)."""
    require_role(db, actor, "admin", action="diagnosis_notes")
    return storage.load_diagnosis_notes(db)


def code_patients_by_note(db: storage.Database, actor: User, *, note: str, code: int, reason: str) -> int:
    """Code every uncoded patient whose note reads exactly ``note`` (admin; each change in the record's
    trail, one audit entry). Returns how many patients were coded."""
    admin = require_role(db, actor, "admin", action="code_patients_by_note")
    with storage.transaction(db):
        n = storage.code_patients_by_note(db, note, code, reason=reason, by=admin.username)
        storage.append_audit(db, actor=admin.username, action="diagnosis_code",
                             details={"change": "code patients by note", "code": int(code), "patients": n})
    return n


# Follow-up: contacts, calls, completion ---------------------------------------------------------------------
# The staff side of follow-up (docs/followup.md): each patient's contact details for reminders (Record page),
# the call list (slots still undone from their call day), the outcome of each call, and how completion stands
# (Follow-up page). Audit entries name the fields changed, never an address or a number.

#: The contact fields staff edit, in the order the Record page shows them.
CONTACT_FIELDS = ("email", "phone", "channel", "consent_on")
#: Call outcomes that take a slot off the call list (``no_answer`` keeps it there, to try again).
FINAL_CALL_OUTCOMES = ("completed_by_phone", "declined", "wrong_number")
CALL_OUTCOME_LABELS = {"completed_by_phone": "Reached: completed by phone (enter the paper form)",
                       "no_answer": "No answer", "declined": "Declined", "wrong_number": "Wrong number"}
CHANNEL_LABELS = {"email": "Email", "sms": "Text message (SMS)", "none": "No messages"}
CALL_LIST_COLUMNS = ("patient_id", "series_id", "slot", "label", "kind", "due_on", "closes_on", "days_waiting",
                     "status", "channel", "phone", "email", "contact", "calls", "last_outcome", "last_called_at",
                     "last_called_by")


@dataclass(frozen=True)
class ContactDetails:
    """A patient's contact details for reminders (``channel`` ``none`` and no addresses when none are stored).

    ``consent_how`` is ``recorded`` (by staff) or ``imported``; ``opted_out_at``/``opted_out_by`` say when
    and by whom messages were stopped (None while they are on); ``open_links`` counts the one-tap links neither
    revoked nor expired (a used one is a check-in session that may still be open): what revoking ends."""

    patient_id: str
    email: str | None = None
    phone: str | None = None
    channel: str = "none"
    consent_on: date | None = None
    consent_by: str | None = None
    consent_how: str | None = None
    opted_out_at: datetime | None = None
    opted_out_by: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    open_links: int = 0

    @property
    def stored(self) -> bool:
        return self.updated_at is not None

    @property
    def opted_out(self) -> bool:
        return self.opted_out_at is not None


def _none(value: Any) -> Any:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _contact_details(db: storage.Database, patient_id: str, now: datetime) -> ContactDetails:
    rows = storage.load_contacts(db, patient_id)
    links = storage.load_links(db, patient_id)
    open_links = int((links["revoked_at"].isna() & (links["expires_at"] > pd.Timestamp(now))).sum()) \
        if len(links) else 0
    if rows.empty:
        return ContactDetails(patient_id, open_links=open_links)
    r = rows.iloc[0]
    stamp = (lambda v: None if pd.isna(v) else v.to_pydatetime())
    return ContactDetails(patient_id, email=_none(r["email"]), phone=_none(r["phone"]), channel=r["channel"],
                          consent_on=as_date_or_none(r["consent_on"]), consent_by=_none(r["consent_by"]),
                          consent_how=_none(r["consent_how"]), opted_out_at=stamp(r["opted_out_at"]),
                          opted_out_by=_none(r["opted_out_by"]), updated_at=stamp(r["updated_at"]),
                          updated_by=_none(r["updated_by"]), open_links=open_links)


def contact(db: storage.Database, actor: User, patient_id: str, *, now: datetime) -> ContactDetails:
    """A patient's contact details for reminders (clinician); audited as ``view_contact``."""
    user = require_patient_access(db, actor, patient_id, action="view_contact", patient_self=False)
    _require_patient(db, patient_id)
    details = _contact_details(db, patient_id, now)
    storage.append_audit(db, actor=user.username, action="view_contact", patient_id=patient_id)
    return details


def set_contact(db: storage.Database, actor: User, *, patient_id: str, email: Any = None, phone: Any = None,
                channel: Any = None, consent_on: Any = None, now: datetime, today: date,
                settings: Settings) -> ContactDetails:
    """Store a patient's email, mobile number, preferred channel and consent date (clinician), replacing what
    was there; consent is recorded as given to ``actor`` (``consent_how='recorded'``). A number written without
    a country code is read as one of ``settings.phone_region``. Choosing a channel again after an opt-out
    turns messages back on. Audited as ``set_contact`` with the names of the fields changed.

    Raises
    ------
    PermissionDenied, NotFound, ValidationError (every bad field named; nothing is saved)
    """
    user = require_patient_access(db, actor, patient_id, action="set_contact", patient_self=False)
    _require_patient(db, patient_id)
    before = _contact_details(db, patient_id, now)
    with storage.transaction(db):
        storage.set_contact(db, patient_id, email=email, phone=phone, channel=channel, consent_on=consent_on,
                            consent_how="recorded", by=user.username, now=now, region=settings.phone_region,
                            today=today)
        after = _contact_details(db, patient_id, now)
        changed = [f for f in CONTACT_FIELDS if getattr(before, f) != getattr(after, f)]
        details: dict[str, Any] = {"fields": changed}
        if before.opted_out and not after.opted_out:
            details["messages"] = "turned back on"
        storage.append_audit(db, actor=user.username, action="set_contact", patient_id=patient_id, details=details)
    return after


def stop_messages(db: storage.Database, actor: User, *, patient_id: str, now: datetime) -> bool:
    """Stop every reminder to the patient (clinician): channel ``none``, the addresses kept, planned messages
    cancelled, who and when recorded. True when messages were on. Audited as ``stop_messages``."""
    user = require_patient_access(db, actor, patient_id, action="stop_messages", patient_self=False)
    _require_patient(db, patient_id)
    with storage.transaction(db):
        if storage.load_contacts(db, patient_id).empty:  # nothing stored yet: record "no messages" first
            storage.set_contact(db, patient_id, channel="none", by=user.username, now=now)
        changed = storage.opt_out(db, patient_id, by=user.username, now=now)
        storage.append_audit(db, actor=user.username, action="stop_messages", patient_id=patient_id,
                             details={"changed": changed})
    return changed


def revoke_links(db: storage.Database, actor: User, *, patient_id: str, now: datetime) -> int:
    """Revoke the patient's open one-tap check-in links (clinician); returns how many. Audited as
    ``revoke_links``."""
    user = require_patient_access(db, actor, patient_id, action="revoke_links", patient_self=False)
    _require_patient(db, patient_id)
    with storage.transaction(db):
        n = storage.revoke_links(db, patient_id, by=user.username, now=now)
        storage.append_audit(db, actor=user.username, action="revoke_links", patient_id=patient_id,
                             details={"links": n})
    return n


def _contact_summary(channel: Any, phone: Any, email: Any, opted_out: bool) -> str:
    """ "SMS · +12015550123" for a call list row; says when messages are stopped or nothing is stored."""
    parts = []
    if opted_out:
        parts.append("messages stopped")
    elif isinstance(channel, str):
        parts.append(CHANNEL_LABELS.get(channel, channel))
    else:
        parts.append("no contact details")
    parts += [v for v in (phone, email) if isinstance(v, str) and v]
    return " · ".join(parts)


def call_list(db: storage.Database, actor: User, *, today: date, settings: Settings) -> pd.DataFrame:
    """The patients to phone today (clinician), longest waiting first; audited as ``view_call_list``.

    A slot is on the list from its ``call_list_after_days`` day (day 4) while it is open and undone, for an
    active patient (:func:`outcomes.followup.call_list`), until a call outcome other than ``no_answer`` is
    recorded for it (:data:`FINAL_CALL_OUTCOMES`). Patients who stopped messages stay on it (a call is not a
    message); their contact says so.

    Returns
    -------
    pandas.DataFrame
        :data:`CALL_LIST_COLUMNS`: the slot (``series_id, slot, label, kind, due_on, closes_on``),
        ``days_waiting`` (today minus the due day), ``status`` (``due``/``overdue``), the contact (``channel``,
        ``phone``, ``email``, ``contact`` in words), and the calls about this slot (``calls``, ``last_outcome``,
        ``last_called_at``, ``last_called_by``).
    """
    user = require_role(db, actor, "clinician", action="view_call_list")
    schedule = followup.Schedule.from_settings(settings)
    inputs = storage.load_followup_inputs(db, days_since=schedule.open_since(today))
    open_slots = followup.slots(inputs, as_of=today, schedule=schedule, only_open=True)
    listed = followup.call_list(open_slots, inputs["patients"], as_of=today)
    calls = storage.load_call_outcomes(db)
    key = ["patient_id", "series_id", "slot"]
    listed = listed.astype({"series_id": "Int64"})
    if len(calls):
        final = calls[calls["outcome"].isin(FINAL_CALL_OUTCOMES)][key].drop_duplicates().assign(_final=True)
        listed = listed.merge(final, on=key, how="left")
        listed = listed[listed["_final"].isna()].drop(columns="_final")
        per_slot = calls.groupby(key).agg(calls=("call_id", "size"), last_outcome=("outcome", "last"),
                                          last_called_at=("recorded_at", "last"),
                                          last_called_by=("recorded_by", "last")).reset_index()
        listed = listed.merge(per_slot, on=key, how="left")
    else:
        listed = listed.assign(calls=0, last_outcome=None, last_called_at=pd.NaT, last_called_by=None)
    contacts = storage.load_contacts(db)
    listed = listed.merge(contacts[["patient_id", "channel", "phone", "email", "opted_out_at"]], on="patient_id",
                          how="left")
    listed["calls"] = listed["calls"].fillna(0).astype("int64")
    listed["days_waiting"] = (pd.Timestamp(today) - listed["due_on"]).dt.days.astype("int64")
    listed["contact"] = [_contact_summary(c, p, e, pd.notna(o)) for c, p, e, o in
                         zip(listed["channel"], listed["phone"], listed["email"], listed["opted_out_at"])]
    out = listed.sort_values(["due_on", "patient_id", "series_id"], kind="stable").reset_index(drop=True)
    out = out[list(CALL_LIST_COLUMNS)]
    storage.append_audit(db, actor=user.username, action="view_call_list", details={"slots": len(out)})
    return out


def record_call(db: storage.Database, actor: User, *, patient_id: str, series_id: int, slot: str,
                due_on: date | str, outcome: str, note: str | None = None, now: datetime) -> int:
    """Record the outcome of a follow-up call about one slot (clinician): ``completed_by_phone`` (the patient
    answered on the phone; enter the paper form too, which is what completes the slot), ``no_answer``,
    ``declined`` or ``wrong_number``. Returns its id; audited as ``record_call`` (the note's text is not in
    the audit log: it may hold a number).

    Raises
    ------
    PermissionDenied, NotFound (not a series of the patient), ValidationError (unknown outcome, long note)
    """
    user = require_patient_access(db, actor, patient_id, action="record_call", patient_self=False)
    _require_patient(db, patient_id)
    due = due_on if isinstance(due_on, date) else date.fromisoformat(str(due_on))
    with storage.transaction(db):
        call_id = storage.add_call_outcome(db, patient_id, series_id=int(series_id), slot=slot, due_on=due,
                                           outcome=outcome, note=note or None, by=user.username, now=now)
        storage.append_audit(db, actor=user.username, action="record_call", patient_id=patient_id,
                             details={"series_id": int(series_id), "slot": slot, "outcome": outcome,
                                      "note": bool(note)})
    return call_id


def followup_completion(db: storage.Database, actor: User, *, as_of: date,
                        settings: Settings) -> completion_.Completion:
    """Follow-up completion on ``as_of`` (clinician or QI): per formal time point and per week, completed /
    due and how each completion came, by clinician and by diagnosis (:mod:`outcomes.completion`).

    A clinician sees it on ``as_of`` with every due slot and its patient. A QI user sees it at the end of
    the last whole month up to ``as_of`` (so the view changes once a month, not with each patient's
    check-in), small cells suppressed, rare clinicians and diagnoses pooled, and no patient identifiers.
    Audited as ``view_followup_completion``.
    """
    user = require_role(db, actor, "clinician", "qi", action="view_followup_completion")
    qi = user.role == "qi"
    if qi:
        day = pd.Timestamp(as_of)
        as_of = (day if day.is_month_end else day - pd.offsets.MonthEnd(1)).date()
    zone = settings.clinic_zone
    inputs = storage.load_followup_inputs(db)
    every = followup.slots(inputs, as_of=as_of, schedule=followup.Schedule.from_settings(settings))
    calls = storage.load_call_outcomes(db)
    if len(calls):  # calls recorded after as_of did not happen yet on that day
        called_on = calls["recorded_at"].dt.tz_convert(zone).dt.tz_localize(None).dt.normalize()
        calls = calls[called_on <= pd.Timestamp(as_of)]
    result = completion_.completion(every, storage.load_sent_steps(db), calls, storage.load_patient_diagnoses(db),
                                    as_of=as_of, zone=zone, qi=qi, small_cell_max=settings.small_cell_max)
    storage.append_audit(db, actor=user.username, action="view_followup_completion",
                         details={"as_of": as_of.isoformat(), "suppressed": qi})
    return result


