"""Clinical writes: enrol a patient, record or plan an infusion series, log infusions, save scores.

Each verb checks its fields with :mod:`outcomes.validation` (a ValidationError lists every problem) and
writes in one transaction. Corrections, voids and dispositions are in ``corrections.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from sqlite_utils import Database

from ..errors import DuplicateRecord, NotFound
from ..validation import (DOSE_RANGE, _Fields, _missing, _raise_if, _who, clean_infusion, clean_patient,
                          clean_score, clean_series)
from .connection import _write
from .rows import _insert, _now, _patient_ref


def add_patient(db: Database, *, patient_id: str, diagnosis: str | None = None, sex: str | None = None,
                birth_year: int | str | None = None, enrolled_on: date | str | None = None,
                entered_by: str, today: date | None = None) -> int:
    """Enrol a patient.

    Returns
    -------
    int
        Internal row id.

    Raises
    ------
    ValidationError
        Listing every invalid field (unknown sex code, birth year not four digits or in the future...).
    DuplicateRecord
        When the patient ID is already enrolled.
    """
    values, problems = clean_patient(patient_id=patient_id, diagnosis=diagnosis, sex=sex,
                                     birth_year=birth_year, enrolled_on=enrolled_on, today=today)
    who = _who(problems, entered_by)
    _raise_if(problems, f"Cannot add patient {patient_id!r}")
    with _write(db) as conn:
        if conn.execute("SELECT 1 FROM patients WHERE patient_id = ?", [values["patient_id"]]).fetchone():
            raise DuplicateRecord(f"Patient ID {values['patient_id']!r} is already enrolled; "
                                  "use another ID or open the existing patient")
        return _insert(conn, "patients", {**values, "entered_by": who, "entered_at": _now()})


def add_series(db: Database, *, patient_id: str, first_infusion: date | str, last_infusion: date | str,
               infusions: int, protocol: str | None = None, dose_mg_per_kg: float | None = None,
               notes: str | None = None, entered_by: str, today: date | None = None) -> int:
    """Record an infusion series of an enrolled patient; returns its ``series_id``.

    Raises
    ------
    ValidationError
        Dates in the future, last infusion before first, fewer than one infusion, dose outside
        0.05–2.0 mg/kg.
    NotFound
        Unknown patient.
    DuplicateRecord
        The patient already has a series starting that day.
    """
    values, problems = clean_series(first_infusion=first_infusion, last_infusion=last_infusion,
                                    infusions=infusions, protocol=protocol, dose_mg_per_kg=dose_mg_per_kg,
                                    notes=notes, today=today)
    who = _who(problems, entered_by)
    _raise_if(problems, f"Cannot add the infusion series of patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, str(patient_id).strip())
        if conn.execute("SELECT 1 FROM series WHERE patient_ref = ? AND first_infusion = ?",
                        [ref, values["first_infusion"].isoformat()]).fetchone():
            raise DuplicateRecord(f"Patient {patient_id!r} already has a series starting "
                                  f"{values['first_infusion']}; edit that series instead")
        row = {"patient_ref": ref, **values, "entered_by": who, "entered_at": _now()}
        return _insert(conn, "series", row)


def plan_series(db: Database, *, patient_id: str, first_infusion: date | str, planned_infusions: int,
                planned_last: date | str | None = None, protocol: str | None = None,
                dose_mg_per_kg: float | None = None, notes: str | None = None, entered_by: str,
                today: date | None = None) -> int:
    """Plan a series whose infusions are then logged day by day as they are given; returns its id.

    The first infusion may be up to :data:`PLAN_AHEAD_DAYS` ahead. ``planned_last`` defaults to
    consecutive days (first + planned_infusions - 1). Until an infusion is logged the series is
    ``planned`` and no analysis counts it; afterwards its first and last infusion and count are those
    given (:func:`add_infusion` keeps them), and the plan stays in ``planned_first``, ``planned_last`` and
    ``planned_infusions``.

    Raises
    ------
    ValidationError, NotFound, DuplicateRecord
    """
    f = _Fields(today)
    first = f.day("first_infusion", first_infusion, required=True, future_days=PLAN_AHEAD_DAYS)
    count = f.number("planned_infusions", planned_infusions, 1, 60, integer=True, required=True)
    last = f.day("planned_last", planned_last, future_days=PLAN_AHEAD_DAYS + 366)
    if last is None and first is not None and count is not None and _missing(planned_last):
        last = first + timedelta(days=count - 1)
    if first and last and last < first:
        f.fail(f"planned_last {last} is before first_infusion {first}; correct the dates")
    values = {"first_infusion": first, "last_infusion": last, "infusions": count,
              "protocol": f.text("protocol", protocol, max_len=200),
              "dose_mg_per_kg": f.number("dose_mg_per_kg", dose_mg_per_kg, *DOSE_RANGE, unit=" mg/kg"),
              "notes": f.text("notes", notes)}
    who = _who(f.problems, entered_by)
    _raise_if(f.problems, f"Cannot plan the infusion series of patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, str(patient_id).strip())
        _check_series_start_free(conn, ref, first, patient_id)
        row = {"patient_ref": ref, **values, "planned_first": first, "planned_last": last,
               "planned_infusions": count, "by_day": 1, "state": "planned", "entered_by": who,
               "entered_at": _now()}
        return _insert(conn, "series", row)


#: How far ahead a series can be planned.
PLAN_AHEAD_DAYS = 366


def _check_series_start_free(conn: sqlite3.Connection, ref: int, first: date, patient_id: str,
                             series_id: int | None = None) -> None:
    clash = conn.execute("SELECT id FROM series WHERE patient_ref = ? AND first_infusion = ? AND id IS NOT ?",
                         [ref, first.isoformat(), series_id]).fetchone()
    if clash:
        raise DuplicateRecord(f"Patient {patient_id!r} already has a series starting {first}; "
                              "correct that series instead")


def add_infusion(db: Database, *, series_id: int, infused_on: date | str, dose_mg_per_kg: float,
                 duration_min: int, adverse_events: Iterable[Mapping[str, Any]] = (),
                 notes: str | None = None, entered_by: str, today: date | None = None, **vitals: Any) -> int:
    """Record one infusion of a series, with its vital signs and adverse events; returns the infusion id.

    ``adverse_events`` holds mappings ``{"kind", "severity", "action", "description", "notes"}`` (see
    :func:`clean_adverse_event`); ``vitals`` any of :data:`VITALS`. For a series recorded after the fact
    the date must fall inside it (first to last infusion); for a planned series (:func:`plan_series`) it
    must be on or after its first infusion and not in the future, and the series' given dates and count
    follow the infusions logged. A cancelled or voided series takes no infusion.
    """
    values, problems = clean_infusion(infused_on=infused_on, dose_mg_per_kg=dose_mg_per_kg,
                                      duration_min=duration_min, adverse_events=adverse_events, notes=notes,
                                      today=today, **vitals)
    who = _who(problems, entered_by)
    what = f"Cannot add the infusion to series {series_id}"
    _raise_if(problems, what)
    events = values.pop("adverse_events")
    with _write(db) as conn:
        series = conn.execute("SELECT first_infusion, last_infusion, by_day, state, voided_at, planned_first "
                              "FROM series WHERE id = ?", [series_id]).fetchone()
        if series is None:
            raise NotFound(f"No infusion series with id {series_id}; pick the series from the patient's list")
        first, last, by_day, state, voided, planned_first = series
        day = values["infused_on"].isoformat()
        if voided or state == "cancelled":
            _raise_if([f"the series was {'voided' if voided else 'cancelled'}; plan a new series instead"], what)
        if by_day and day < min(first, planned_first):
            _raise_if([f"infused_on {day} is before the series' first infusion ({min(first, planned_first)}); "
                       "correct the series' first infusion date first"], what)
        if not by_day and not first <= day <= last:
            _raise_if([f"infused_on {day} is outside the series ({first} to {last}); correct the date or "
                       "the series"], what)
        if conn.execute("SELECT 1 FROM infusions WHERE series_ref = ? AND infused_on = ? AND voided_at IS NULL",
                        [series_id, day]).fetchone():
            raise DuplicateRecord(f"Series {series_id} already has an infusion on {day}; correct that one "
                                  "instead")
        infusion = _insert(conn, "infusions",
                           {"series_ref": series_id, **values, "entered_by": who, "entered_at": _now()})
        for event in events:
            _insert(conn, "adverse_events", {"infusion_ref": infusion, **event})
        if by_day:
            _sync_given(conn, series_id)
        return infusion


def _sync_given(conn: sqlite3.Connection, series_id: int) -> None:
    """A day-by-day series' first and last infusion and count are those given (its plan when none is)."""
    first, last, given = conn.execute("SELECT min(infused_on), max(infused_on), count(*) FROM infusions "
                                      "WHERE series_ref = ? AND voided_at IS NULL", [series_id]).fetchone()
    if given:
        conn.execute("UPDATE series SET first_infusion = ?, last_infusion = ?, infusions = ?, state = 'given' "
                     "WHERE id = ?", [first, last, given, series_id])
    else:
        conn.execute("UPDATE series SET first_infusion = planned_first, last_infusion = planned_last, "
                     "infusions = planned_infusions, state = CASE state WHEN 'given' THEN 'planned' ELSE state "
                     "END WHERE id = ?", [series_id])


def _store_score(conn: sqlite3.Connection, ref: int, values: Mapping[str, Any], who: str,
                 at: str) -> tuple[int, bool]:
    """Insert an assessment, superseding the active one of the same patient, domain and day."""
    old = conn.execute("SELECT id FROM assessments WHERE patient_ref = ? AND domain = ? AND assessed_on = ? "
                       "AND superseded_by IS NULL", [ref, values["domain"], values["assessed_on"].isoformat()]
                       ).fetchone()
    if old:
        # The partial unique index is checked per statement: park the old row (a self-reference keeps
        # the foreign key valid) before the new one exists, then point it at the new row.
        conn.execute("UPDATE assessments SET superseded_by = id WHERE id = ?", [old[0]])
    new = _insert(conn, "assessments", {"patient_ref": ref, **values, "entered_by": who, "entered_at": at})
    if old:
        conn.execute("UPDATE assessments SET superseded_by = ? WHERE id = ?", [new, old[0]])
    return new, bool(old)


def save_assessment(db: Database, *, patient_id: str, assessed_on: date | str, domain: str, t_score: float,
                    se: float | None = None, form: str | None = None,
                    responses: Mapping[str, int | None] | None = None, raw_score: float | None = None,
                    n_answered: int | None = None, method: str, source: str, entered_by: str,
                    today: date | None = None) -> int:
    """Save one domain score; an active score of the same patient, domain and day is superseded.

    Returns
    -------
    int
        ``assessment_id`` of the new row.

    Raises
    ------
    ValidationError
        Any invalid field (T outside 0–100, date in the future, unknown domain or method...).
    NotFound
        Unknown patient.
    """
    return save_checkin(db, patient_id=patient_id, assessed_on=assessed_on, source=source,
                        entered_by=entered_by, today=today,
                        scores=[{"domain": domain, "t_score": t_score, "se": se, "form": form,
                                 "responses": responses, "raw_score": raw_score, "n_answered": n_answered,
                                 "method": method}])[0]


_SCORE_KEYS = frozenset({"domain", "t_score", "se", "form", "responses", "raw_score", "n_answered", "method"})


def save_checkin(db: Database, *, patient_id: str, assessed_on: date | str,
                 scores: Sequence[Mapping[str, Any]], source: str, entered_by: str,
                 today: date | None = None) -> list[int]:
    """Save the domain scores of one sitting atomically: all of them or none.

    Parameters
    ----------
    scores
        One mapping per domain with keys ``domain``, ``t_score``, ``method`` and optionally ``se``,
        ``form``, ``responses``, ``raw_score``, ``n_answered`` (as in :func:`save_assessment`).

    Returns
    -------
    list of int
        The new ``assessment_id`` of each score, in the order given.
    """
    problems: list[str] = []
    who = _who(problems, entered_by)
    cleaned = []
    if not scores:
        problems.append("a check-in needs at least one domain score")
    for i, score in enumerate(scores, 1):
        label = f"score {i} ({score.get('domain', '?')})" if len(scores) > 1 else "score"
        unknown = sorted(set(score) - _SCORE_KEYS)
        if unknown:
            problems.append(f"{label}: unknown field(s) {', '.join(unknown)}")
        values, errs = clean_score(assessed_on=assessed_on, source=source, today=today,
                                   **{k: score.get(k) for k in _SCORE_KEYS})
        # Fields shared by the sitting are reported once, not once per domain.
        problems += [e if len(scores) == 1 or e.startswith(("assessed_on", "source")) else f"{label}: {e}"
                     for e in errs]
        cleaned.append(values)
    domains = [v["domain"] for v in cleaned if v["domain"]]
    problems += [f"domain {d} appears more than once" for d in sorted(set(domains)) if domains.count(d) > 1]
    problems = list(dict.fromkeys(problems))
    _raise_if(problems, f"Cannot save the assessment of patient {patient_id!r}")
    with _write(db) as conn:
        ref = _patient_ref(conn, str(patient_id).strip())
        at = _now()
        return [_store_score(conn, ref, values, who, at)[0] for values in cleaned]
