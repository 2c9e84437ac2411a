"""Reads: tidy DataFrames of patients, series, infusions, adverse events and scores, and the cohort reads.

Integer surrogate keys (``patient_ref``, ``series_ref``...) stay inside the storage package; reads expose
the clinic's own ``patient_id``. Active rows only unless asked (``every``, ``include_superseded``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..validation import VITALS
from .connection import data_version, get_meta, is_synthetic


def _frame(db: Database, sql: str, params: Sequence[Any] = (), *, dates: Iterable[str] = (),
           ints: Iterable[str] = (), floats: Iterable[str] = (), stamps: Iterable[str] = ()) -> pd.DataFrame:
    # What pd.read_sql_query does, without its wrapper's overhead (about 0.2 ms of the 0.45 ms it takes to
    # read one patient's scores; the check-in reads several such frames).
    cursor = db.conn.execute(sql, list(params))
    df = pd.DataFrame.from_records(cursor.fetchall(), columns=[d[0] for d in cursor.description],
                                   coerce_float=True)
    for c in dates:
        df[c] = pd.to_datetime(df[c], format="%Y-%m-%d").astype("datetime64[ns]")
    for c in ints:
        df[c] = df[c].astype("Int64")
    for c in floats:
        df[c] = df[c].astype("float64")
    for c in stamps:
        df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    return df


def _patient_filter(patient_id: str | None, alias: str = "p") -> tuple[str, list[Any]]:
    return ("", []) if patient_id is None else (f" AND {alias}.patient_id = ?", [patient_id])


_PATIENT_READ = ("SELECT patient_id, diagnosis, sex, birth_year, enrolled_on, disposition, disposition_on, "
                 "disposition_reason, disposition_by, entered_by, entered_at FROM patients")


def load_patients(db: Database) -> pd.DataFrame:
    """One row per patient: ``patient_id, diagnosis, sex, birth_year, enrolled_on, disposition,
    disposition_on, disposition_reason, disposition_by, entered_by, entered_at``."""
    return _frame(db, _PATIENT_READ + " ORDER BY patient_id",
                  dates=["enrolled_on", "disposition_on"], ints=["birth_year"], stamps=["entered_at"])


def load_patient(db: Database, patient_id: str) -> pd.DataFrame:
    """The one-row frame of :func:`load_patients` for this patient, with its ``diagnosis_code`` and
    ``diagnosis_label`` (:func:`load_patient_diagnoses`); empty when unknown."""
    return _frame(db, _PATIENT_READ.replace(" FROM patients", ", diagnosis_code, (SELECT label FROM diagnosis_codes c "
                                            "WHERE c.id = diagnosis_code) AS diagnosis_label FROM patients")
                  + " WHERE patient_id = ?", [patient_id], dates=["enrolled_on", "disposition_on"],
                  ints=["birth_year", "diagnosis_code"], stamps=["entered_at"])


def series_patient(db: Database, series_id: int) -> str | None:
    """The patient ID a series belongs to, or None for an unknown series."""
    row = db.conn.execute("SELECT p.patient_id FROM series s JOIN patients p ON p.id = s.patient_ref "
                          "WHERE s.id = ?", [series_id]).fetchone()
    return None if row is None else str(row[0])


#: A series that analyses count: infusions were given (not only planned), not cancelled, not voided.
_GIVEN = "s.state = 'given' AND s.voided_at IS NULL"


def load_series(db: Database, patient_id: str | None = None, *, every: bool = False) -> pd.DataFrame:
    """One row per series given, with ``series_number`` (1, 2... per patient by first infusion).

    Parameters
    ----------
    every
        Also planned, cancelled and voided series (``state`` planned/given/cancelled, ``voided``), for
        the patient's record and the roster; their ``series_number`` is <NA> (numbers count the series
        given, so a series has the same number with or without ``every``).

    Returns
    -------
    pandas.DataFrame
        ``series_id, patient_id, series_number, first_infusion, last_infusion, infusions`` (for a series
        logged day by day: the first and last infusion given and how many; its plan until one is),
        ``protocol, dose_mg_per_kg, notes, planned_first, planned_last, planned_infusions, by_day, state,
        cancel_reason, voided, voided_at, voided_by, void_reason, entered_by, entered_at``.
    """
    where, params = _patient_filter(patient_id)
    if not every:
        where += " AND " + _GIVEN
    # Series numbers count the series given (as analyses do), so a series keeps its number on every page;
    # a planned, cancelled or voided one has none.
    return _frame(db, "SELECT s.id AS series_id, p.patient_id, CASE WHEN " + _GIVEN + " THEN ROW_NUMBER() OVER "
                      "(PARTITION BY s.patient_ref, " + _GIVEN + " ORDER BY s.first_infusion) END AS series_number, "
                      "s.first_infusion, s.last_infusion, "
                      "s.infusions, s.protocol, s.dose_mg_per_kg, s.notes, s.planned_first, s.planned_last, "
                      "s.planned_infusions, s.by_day, s.state, s.cancel_reason, s.voided_at IS NOT NULL AS voided, "
                      "s.voided_at, s.voided_by, s.void_reason, s.entered_by, s.entered_at "
                      "FROM series s JOIN patients p ON p.id = s.patient_ref WHERE 1" + where +
                      " ORDER BY p.patient_id, s.first_infusion", params,
                  dates=["first_infusion", "last_infusion", "planned_first", "planned_last"],
                  ints=["series_id", "series_number", "infusions", "planned_infusions"],
                  floats=["dose_mg_per_kg"], stamps=["entered_at", "voided_at"]).astype(
                      {"by_day": bool, "voided": bool})


def load_infusions(db: Database, patient_id: str | None = None, *, every: bool = False) -> pd.DataFrame:
    """One row per infusion, with its vital signs (:data:`VITALS`) and ``n_adverse_events`` (details in
    :func:`load_adverse_events`). Infusions that were voided, or whose series was, only with ``every``
    (then ``voided`` says which)."""
    where, params = _patient_filter(patient_id)
    if not every:
        where += " AND i.voided_at IS NULL AND s.voided_at IS NULL"
    vitals = ", ".join("i." + v for v in VITALS)
    return _frame(db, "SELECT i.id AS infusion_id, s.id AS series_id, p.patient_id, i.infused_on, "
                      f"i.dose_mg_per_kg, i.duration_min, {vitals}, i.notes, (SELECT count(*) FROM adverse_events e "
                      "WHERE e.infusion_ref = i.id AND e.voided_at IS NULL) AS n_adverse_events, "
                      "(i.voided_at IS NOT NULL OR s.voided_at IS NOT NULL) AS voided, i.voided_at, i.voided_by, "
                      "i.void_reason, i.entered_by FROM infusions i "
                      "JOIN series s ON s.id = i.series_ref JOIN patients p ON p.id = s.patient_ref WHERE 1"
                      + where + " ORDER BY p.patient_id, i.infused_on, i.id", params,
                  dates=["infused_on"], ints=["infusion_id", "series_id", "duration_min", "n_adverse_events",
                                              *VITALS],
                  floats=["dose_mg_per_kg"], stamps=["voided_at"]).astype({"voided": bool})


def load_adverse_events(db: Database, patient_id: str | None = None, *, every: bool = False) -> pd.DataFrame:
    """One row per adverse event: ``event_id, infusion_id, patient_id, infused_on, kind, severity, action,
    description, notes``; voided ones (or of a voided infusion or series) only with ``every``."""
    where, params = _patient_filter(patient_id)
    if not every:
        where += " AND e.voided_at IS NULL AND i.voided_at IS NULL AND s.voided_at IS NULL"
    return _frame(db, "SELECT e.id AS event_id, i.id AS infusion_id, p.patient_id, i.infused_on, e.kind, "
                      "e.severity, e.action, e.description, e.notes, (e.voided_at IS NOT NULL OR "
                      "i.voided_at IS NOT NULL OR s.voided_at IS NOT NULL) AS voided, e.voided_at, e.voided_by, "
                      "e.void_reason FROM adverse_events e JOIN infusions i ON i.id = e.infusion_ref "
                      "JOIN series s ON s.id = i.series_ref JOIN patients p ON p.id = s.patient_ref WHERE 1"
                      + where + " ORDER BY p.patient_id, i.infused_on, e.id", params,
                  dates=["infused_on"], ints=["event_id", "infusion_id"], stamps=["voided_at"]).astype(
                      {"voided": bool})


ASSESSMENT_COLUMNS = ("assessment_id", "patient_id", "assessed_on", "domain", "form", "t_score", "se",
                      "raw_score", "n_answered", "method", "source", "entered_by", "entered_at",
                      "superseded_by", "voided_at", "voided_by", "void_reason")


def load_assessments(db: Database, *, patient_id: str | None = None, domains: Iterable[str] | None = None,
                     include_superseded: bool = False) -> pd.DataFrame:
    """Domain scores in long form, one row per patient, domain and day.

    Parameters
    ----------
    patient_id
        Only this patient (an unknown ID gives an empty frame).
    domains
        Only these domains.
    include_superseded
        Also rows replaced by a later entry for the same day or by a correction (``superseded_by`` names
        the replacement) and voided rows (``superseded_by`` is their own id, ``voided_at`` is set).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ASSESSMENT_COLUMNS`, sorted by patient, domain and date; ``assessed_on`` is
        ``datetime64[ns]`` at midnight, ``entered_at`` is UTC.
    """
    where, params = _patient_filter(patient_id)
    if not include_superseded:
        # "+" keeps the planner off the partial (domain, date) index: walking patients in ID order
        # through assessments_by_patient needs no sort and loads a full cohort about 40 % faster.
        where += " AND +a.superseded_by IS NULL"
    if domains is not None:
        domains = list(domains)
        where += f" AND a.domain IN ({', '.join('?' * len(domains))})"
        params += domains
    columns = ", ".join("a." + c for c in ASSESSMENT_COLUMNS[2:])
    return _frame(db, f"SELECT a.id AS assessment_id, p.patient_id, {columns} FROM assessments a "
                      "JOIN patients p ON p.id = a.patient_ref WHERE 1" + where +
                      " ORDER BY p.patient_id, a.domain, a.assessed_on, a.id", params,
                  dates=["assessed_on"], ints=["assessment_id", "n_answered", "superseded_by"],
                  floats=["t_score", "se", "raw_score"], stamps=["entered_at", "voided_at"])


def load_item_responses(db: Database, patient_id: str) -> pd.DataFrame:
    """Item answers of a patient's active assessments (long).

    Columns ``assessment_id, assessed_on, domain, form, item_id, value``; ``value`` is ``<NA>`` for a
    skipped item.
    """
    return _frame(db, "SELECT a.id AS assessment_id, a.assessed_on, a.domain, a.form, j.key AS item_id, "
                      "j.value AS value FROM assessments a JOIN patients p ON p.id = a.patient_ref, "
                      "json_each(a.responses) j WHERE p.patient_id = ? AND a.superseded_by IS NULL "
                      "ORDER BY a.assessed_on, a.domain, j.id", [patient_id],
                  dates=["assessed_on"], ints=["assessment_id", "value"])


SCORE_SUMMARY_COLUMNS = ("patient_id", "domain", "assessed_on", "t_score", "se")


def load_latest_scores(db: Database, *, patient_id: str | None = None,
                       before: date | None = None) -> pd.DataFrame:
    """The latest active score per patient and domain (optionally only scores dated before ``before``).

    One aggregate query whatever the number of patients. Columns :data:`SCORE_SUMMARY_COLUMNS`.
    """
    where, params = _patient_filter(patient_id)
    if before is not None:
        where += " AND a.assessed_on < ?"
        params.append(before.isoformat())
    # SQLite documents that with max() the other (bare) columns come from the row holding the maximum;
    # active rows are unique per patient, domain and day, so that row is the latest score.
    return _frame(db, "SELECT p.patient_id, a.domain, max(a.assessed_on) AS assessed_on, a.t_score, a.se "
                      "FROM assessments a JOIN patients p ON p.id = a.patient_ref "
                      "WHERE a.superseded_by IS NULL" + where + " GROUP BY a.patient_ref, a.domain "
                      "ORDER BY p.patient_id, a.domain", params,
                  dates=["assessed_on"], floats=["t_score", "se"])


def load_baseline_candidates(db: Database, baseline_days: int) -> pd.DataFrame:
    """Active scores that can be a baseline, for every patient in one query.

    These are the scores dated from ``baseline_days`` before the first infusion of any series up to
    that day, plus each patient's first score per domain (the baseline when there is no series).
    Columns :data:`SCORE_SUMMARY_COLUMNS`; which of them is the baseline is decided by the caller.
    """
    domains = stored_domains(db)
    offset = f"-{int(baseline_days)} days"
    # CROSS JOIN makes SQLite walk the series and range-scan assessments_by_patient for each (the IN
    # list lets it use the index past the domain column): 5x faster than its own plan on 10,000 patients.
    return _frame(db, "SELECT p.patient_id, c.domain, c.assessed_on, c.t_score, c.se FROM ("
                      "SELECT a.patient_ref, a.domain, a.assessed_on, a.t_score, a.se FROM series s "
                      "CROSS JOIN assessments a ON a.patient_ref = s.patient_ref AND " + _GIVEN + " "
                      f"AND a.domain IN ({', '.join('?' * len(domains))}) "
                      "AND a.assessed_on BETWEEN date(s.first_infusion, ?) AND s.first_infusion "
                      "WHERE a.superseded_by IS NULL "
                      "UNION SELECT a.patient_ref, a.domain, min(a.assessed_on), a.t_score, a.se "
                      "FROM assessments a WHERE a.superseded_by IS NULL GROUP BY a.patient_ref, a.domain"
                      ") c JOIN patients p ON p.id = c.patient_ref "
                      "ORDER BY p.patient_id, c.domain, c.assessed_on",
                  [*domains, offset], dates=["assessed_on"], floats=["t_score", "se"])


def first_patient_with_assessments(db: Database, prefix: str = "") -> str | None:
    """The first patient ID (in ID order) starting with ``prefix`` that has an active score."""
    row = db.conn.execute("SELECT min(p.patient_id) FROM patients p WHERE p.patient_id GLOB ? AND EXISTS "
                          "(SELECT 1 FROM assessments a WHERE a.patient_ref = p.id "
                          "AND a.superseded_by IS NULL)",
                          [re.sub(r"([*?\[])", r"[\1]", prefix) + "*"]).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def database_summary(db: Database) -> dict[str, Any]:
    """Counts and facts for the landing page and ``python -m outcomes init``.

    Keys: ``patients, series, infusions, assessments`` (active), ``users``, ``first_assessment`` and
    ``last_assessment`` (``datetime.date`` or ``None``), ``assessments_by_domain``, ``synthetic``,
    ``schema_version``, ``data_version``.
    """
    conn = db.conn
    count = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
             for t in ("patients", "series", "infusions", "users")}
    active = "FROM assessments WHERE superseded_by IS NULL"
    n, first, last = conn.execute(f"SELECT count(*), min(assessed_on), max(assessed_on) {active}").fetchone()
    by_domain = dict(conn.execute(f"SELECT domain, count(*) {active} GROUP BY domain ORDER BY domain"))
    return {**count, "assessments": n,
            "first_assessment": date.fromisoformat(first) if first else None,
            "last_assessment": date.fromisoformat(last) if last else None,
            "assessments_by_domain": by_domain, "synthetic": is_synthetic(db),
            "schema_version": int(get_meta(db, "schema_version", "0") or 0), "data_version": data_version(db)}


# Cohort reads: every patient at once, only the columns the cohort analyses use, compact dtypes. A
# health system's cohort has millions of scores; these read the covering index assessments_cohort
# (never the table rows with their item responses) and build each column as one NumPy array.

COHORT_SCORE_COLUMNS = ("patient_id", "domain", "assessed_on", "t_score")
COHORT_EPISODE_COLUMNS = ("series_id", "patient_id", "series_number", "first_infusion", "last_infusion",
                          "infusions", "protocol", "diagnosis", "sex", "birth_year")
_DAY_NS = 86_400_000_000_000


def _day_column(days: Any) -> Any:
    """Day numbers (days since 1970-01-01, from ``unixepoch(date) / 86400``) as datetime64[ns]."""
    return (np.asarray(days, dtype=np.int64) * _DAY_NS).view("datetime64[ns]")


def _patient_categories(conn: sqlite3.Connection) -> tuple[pd.Index, Any]:
    """Every patient ID in sorted order, and an array mapping ``patient_ref`` to its position."""
    rows = conn.execute("SELECT id, patient_id FROM patients ORDER BY patient_id").fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    lookup = np.full(int(ids.max()) + 1 if len(ids) else 1, -1, dtype=np.int32)
    lookup[ids] = np.arange(len(ids), dtype=np.int32)
    return pd.Index([r[1] for r in rows], dtype=object), lookup


def load_cohort_scores(db: Database, *, domains: Iterable[str] | None = None) -> pd.DataFrame:
    """Every active T-score in the compact form the cohort analyses read.

    The cohort page and ``report responders`` need four columns of every score and nothing else; this
    reads them from the covering index ``assessments_cohort``, one domain at a time in index order (no
    sort), straight from the cursor into NumPy arrays. :func:`load_assessments` gives every column.

    Parameters
    ----------
    domains
        Only these domains (default: all).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COHORT_SCORE_COLUMNS`: ``patient_id`` categorical over every enrolled patient's
        ID (sorted), ``domain`` categorical over the domains read (sorted),
        ``assessed_on`` datetime64[ns] at midnight, ``t_score`` float64. Rows are grouped by domain,
        then by patient and date; the same rows as ``load_assessments(db)`` (equal once sorted alike).
    """
    stored = stored_domains(db)
    wanted = stored if domains is None else [d for d in stored if d in set(domains)]
    scan = "FROM assessments INDEXED BY assessments_cohort WHERE domain = ? AND superseded_by IS NULL"
    conn = db.conn
    own = not conn.in_transaction
    if own:  # one read snapshot, so the counts below and the rows agree while others write
        conn.execute("BEGIN")
    try:
        categories, lookup = _patient_categories(conn)
        sizes = [conn.execute(f"SELECT count(*) {scan}", [d]).fetchone()[0] for d in wanted]
        # Filled chunk by chunk: row tuples for millions of scores would take five times the arrays' memory.
        codes = np.empty(sum(sizes), dtype=np.int32)
        days = np.empty(sum(sizes), dtype=np.int64)
        t_score = np.empty(sum(sizes), dtype=np.float64)
        at = 0
        for domain in wanted:
            cursor = conn.execute(f"SELECT patient_ref, unixepoch(assessed_on) / 86400, t_score {scan}", [domain])
            while rows := cursor.fetchmany(_READ_CHUNK):
                chunk = np.array(rows, dtype=np.float64)
                end = at + len(chunk)
                codes[at:end] = lookup[chunk[:, 0].astype(np.int64)]
                days[at:end] = chunk[:, 1]
                t_score[at:end] = chunk[:, 2]
                at = end
    finally:
        if own:
            conn.execute("COMMIT")
    days *= _DAY_NS
    return pd.DataFrame({
        "patient_id": pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories)),
        "domain": pd.Categorical.from_codes(np.repeat(np.arange(len(wanted), dtype=np.int8), sizes),
                                            dtype=pd.CategoricalDtype(wanted)),
        "assessed_on": days.view("datetime64[ns]"),
        "t_score": t_score,
    })


_READ_CHUNK = 65_536


def load_cohort_episodes(db: Database) -> pd.DataFrame:
    """Every infusion series with the patient fields the cohort filters and groups use, in one query.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COHORT_EPISODE_COLUMNS`, sorted by patient and first infusion: ``series_id``,
        ``series_number`` (1, 2... per patient), ``infusions`` int64; ``patient_id, protocol,
        diagnosis, sex`` text; ``first_infusion, last_infusion`` datetime64[ns]; ``birth_year`` Int64.
        The rows and values of ``load_series`` merged with ``load_patients`` on ``patient_id``.
    """
    rows = db.conn.execute(
        "SELECT s.id, p.patient_id, ROW_NUMBER() OVER (PARTITION BY s.patient_ref ORDER BY s.first_infusion), "
        "unixepoch(s.first_infusion) / 86400, unixepoch(s.last_infusion) / 86400, s.infusions, s.protocol, "
        "p.diagnosis, p.sex, p.birth_year FROM series s JOIN patients p ON p.id = s.patient_ref "
        f"WHERE {_GIVEN} ORDER BY p.patient_id, s.first_infusion").fetchall()
    columns = list(zip(*rows)) if rows else [()] * len(COHORT_EPISODE_COLUMNS)
    out = pd.DataFrame({name: np.array(values, dtype=object) for name, values in
                        zip(COHORT_EPISODE_COLUMNS, columns)}, columns=list(COHORT_EPISODE_COLUMNS))
    for c in ("series_id", "series_number", "infusions"):
        out[c] = out[c].astype(np.int64)
    for c in ("first_infusion", "last_infusion"):
        out[c] = _day_column(out[c].to_numpy(dtype=np.int64))
    out["birth_year"] = out["birth_year"].astype("Int64")
    return out


def stored_domains(db: Database) -> list[str]:
    """The domains that have active scores, sorted: a loose index scan of assessments_cohort (one seek per
    domain), so the database never needs to know the list of domains (forms.toml does)."""
    return [row[0] for row in db.execute(
        "WITH RECURSIVE d(domain) AS ("
        "SELECT min(domain) FROM assessments INDEXED BY assessments_cohort WHERE superseded_by IS NULL "
        "UNION ALL SELECT (SELECT min(a.domain) FROM assessments a INDEXED BY assessments_cohort "
        "WHERE a.domain > d.domain AND a.superseded_by IS NULL) FROM d WHERE d.domain IS NOT NULL) "
        "SELECT domain FROM d WHERE domain IS NOT NULL").fetchall()]
