"""CSV import and bulk load: :func:`import_records` (validated, all or nothing, re-import adds nothing) and
:func:`insert_cohort` (the demo generator's fast path, checked by the schema's constraints)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..errors import ImportRejected, ValidationError
from ..validation import (DOSE_RANGE, _Fields, _missing, _who, clean_contact, clean_patient, clean_score,
                          clean_series)
from .connection import _Rollback, _write, is_synthetic
from .records import PLAN_AHEAD_DAYS, _store_score
from .rows import _JSON_COMPACT, _insert, _now, _sql


@dataclass(frozen=True)
class ImportSummary:
    """What an import added and what was already present (``scores_superseded`` are among the added)."""

    patients_added: int = 0
    patients_present: int = 0
    series_added: int = 0
    series_present: int = 0
    scores_added: int = 0
    scores_present: int = 0
    scores_superseded: int = 0
    dry_run: bool = False
    #: Of the series added, those whose first infusion is ahead (stored as planned series).
    series_planned: int = 0
    contacts_added: int = 0
    contacts_present: int = 0

    @property
    def added(self) -> int:
        return self.patients_added + self.series_added + self.scores_added + self.contacts_added

    @property
    def present(self) -> int:
        return self.patients_present + self.series_present + self.scores_present + self.contacts_present

    def describe(self) -> str:
        """One line for the CLI and the import page, e.g. ``0 added, 12 already present``."""
        verb = "would be added" if self.dry_run else "added"
        kinds = ("patients", "series", "scores") + (
            ("contacts",) if self.contacts_added or self.contacts_present else ())
        parts = [f"{k}: {getattr(self, k + '_added')} {verb}, {getattr(self, k + '_present')} already present"
                 for k in kinds]
        if self.series_planned:
            parts.append(f"{self.series_planned} of the series {'are' if self.series_planned > 1 else 'is'} "
                         "planned (first infusion ahead)")
        if self.scores_superseded:
            parts.append(f"{self.scores_superseded} of the scores replace an earlier T-score")
        return f"{self.added} {verb}, {self.present} already present ({'; '.join(parts)})."

    __str__ = describe


def _file_rows(df: pd.DataFrame | None, kind: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(where, line, row) for each row; ``line`` counts the header as line 1, as a spreadsheet does."""
    if df is None:
        return
    source = df.attrs.get("source", f"{kind}.csv")
    lines = df["line"].tolist() if "line" in df.columns else range(2, len(df) + 2)
    for line, row in zip(lines, df.to_dict("records")):
        yield f"{source} line {line}", int(line), row


_PATIENT_FIELDS = ("patient_id", "diagnosis", "sex", "birth_year", "enrolled_on")
_SERIES_FIELDS = ("first_infusion", "last_infusion", "infusions", "protocol", "dose_mg_per_kg", "notes")
_IMPORTED_SCORE_FIELDS = ("domain", "assessed_on", "t_score", "se", "form")
# Item-level rows scored by the caller (the REDCap import) also carry these; without them: "imported".
_SCORED_FIELDS = ("responses", "raw_score", "n_answered")


def _plan(problems: list[str], rows: Iterable[tuple[str, int, dict[str, Any]]],
          clean: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]],
          key_of: Callable[[str, dict[str, Any], dict[str, Any]], tuple[Any, ...] | None],
          stored: Mapping[tuple[Any, ...], Mapping[str, Any]], label: Callable[[tuple[Any, ...]], str],
          *, supersede: bool = False, settled: Callable[[tuple[Any, ...], dict[str, Any]], bool] | None = None,
          ) -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], int, set[Any]]:
    """Check one file's rows against each other and the database.

    Returns the rows to add, how many are already present, and the keys seen. A row whose stored
    twin differs in a field the file gives is a conflict, unless ``supersede`` (scores). A row for which
    ``settled`` is true was stored once and later voided or corrected: it counts as present, so a
    re-import never undoes a documented void or correction.
    """
    new, present, seen = [], 0, {}
    for where, line, row in rows:
        values, errs = clean(row)
        problems += [f"{where}: {e}" for e in errs]
        key = key_of(where, row, values)
        if key is None:
            continue
        if key in seen:
            problems.append(f"{where}: {label(key)} already appears on line {seen[key]}")
            continue
        seen[key] = line
        old = stored.get(key)
        if settled is not None and not errs and settled(key, values) and (
                old is None or _sql(values["t_score"]) != old["t_score"]):
            present += 1
            continue
        # Empty cells say nothing, so they never conflict with a stored value. A key may have several
        # stored versions (a planned series: its plan, and what was given): matching any one is present.
        candidates = old if isinstance(old, list) else [old]
        differs = []
        for old in candidates:
            differs = [k for k in old or () if values[k] is not None and _sql(values[k]) != old[k]]
            if not differs:
                break
        if old is not None and not differs:
            present += 1
        elif differs and not supersede:
            shown = ", ".join(f"{k} {old[k]!r} (file: {_sql(values[k])!r})" for k in differs)
            problems.append(f"{where}: {label(key)} is already in the database with {shown}; "
                            "correct the file or edit the record in the app")
        elif not errs:
            new.append((key, values))
    return new, present, set(seen)


def import_records(db: Database, patients_df: pd.DataFrame | None = None,
                   series_df: pd.DataFrame | None = None, scores_df: pd.DataFrame | None = None, *,
                   entered_by: str, known_forms: Collection[str] | None = None, today: date | None = None,
                   dry_run: bool = False, region: str = "US") -> ImportSummary:
    """Import patients, series and T-scores in one all-or-nothing transaction.

    Rows already present are skipped: the same patient ID with no differing field, a series with the
    same patient and first infusion and no differing field, a score with the same patient, domain,
    date and T. A different T for an existing patient, domain and date supersedes the stored one.
    A patient or series stored with different details is an error (correct the file or edit the
    record in the app): nothing is overwritten, and re-importing the same files adds nothing.

    Parameters
    ----------
    patients_df, series_df, scores_df
        Columns as in ``patients.csv``, ``series.csv`` and ``scores.csv`` (values may be text); an
        optional ``line`` column and ``df.attrs["source"]`` name the file and line in messages.
        A score row scored from its items also gives ``method`` (table, pattern or prorated),
        ``responses`` (``{item_id: value}``), ``raw_score`` and ``n_answered``; otherwise it is an
        ``imported`` T-score.
    dry_run
        Validate and count, then roll back.
    region
        The country whose numbers a ``phone`` cell may give without ``+`` and country code (the
        ``phone_region`` setting).

    A series whose first infusion is ahead of ``today`` is stored as a planned series (as
    :func:`plan_series` stores one, up to :data:`PLAN_AHEAD_DAYS` ahead); one under way (first infusion
    given, last ahead) is refused. ``patients.csv`` may carry ``email, phone, channel``: the patient's
    contact for reminders, consent recorded as ``imported`` on ``today`` by ``entered_by`` when the
    channel is not ``none`` (docs/clinic-record.md, "Importing history").

    Raises
    ------
    ImportRejected
        With every problem, one per file line; nothing is written.
    """
    problems: list[str] = []
    who = _who(problems, entered_by)
    patients_file = None if patients_df is None else patients_df.attrs.get("source", "patients.csv")
    try:
        with _write(db) as conn:
            refs = dict(conn.execute("SELECT patient_id, id FROM patients").fetchall())
            stored = {(r[0],): dict(zip(_PATIENT_FIELDS[1:], r[1:])) for r in conn.execute(
                f"SELECT {', '.join(_PATIENT_FIELDS)} FROM patients")}
            patients, patients_present, in_file = _plan(
                problems, _file_rows(patients_df, "patients"),
                lambda row: _with_contact(clean_patient(**{k: row.get(k) for k in _PATIENT_FIELDS}, today=today),
                                          row, today=today or date.today(), region=region),
                lambda where, row, values: None if values["patient_id"] is None else (values["patient_id"],),
                stored, lambda key: f"patient {key[0]!r}")

            def known(where: str, pid: Any) -> str | None:
                """The row's patient, when it is in the database or in the patients file."""
                pid = pid.strip() if isinstance(pid, str) else pid
                if _missing(pid):
                    problems.append(f"{where}: patient_id is required")
                elif pid not in refs and (pid,) not in in_file:
                    also = f" or in {patients_file}" if patients_file else ""
                    problems.append(f"{where}: patient {pid!r} is not in the database{also}; "
                                    "add the patient first")
                else:
                    return str(pid)
                return None

            def keyed(*fields: str) -> Callable[..., tuple[Any, ...] | None]:
                def key_of(where: str, row: dict[str, Any], values: dict[str, Any]) -> tuple[Any, ...] | None:
                    key = (known(where, row.get("patient_id")), *(_sql(values[f]) for f in fields))
                    return None if None in key else key
                return key_of

            stored = {}
            plans = set()
            for r in conn.execute(f"SELECT p.patient_id, {', '.join('s.' + f for f in _SERIES_FIELDS)}, "
                                  "s.planned_first, s.planned_last, s.planned_infusions "
                                  "FROM series s JOIN patients p ON p.id = s.patient_ref"):
                stored.setdefault((r[0], r[1]), []).append(dict(zip(_SERIES_FIELDS[1:], r[2:7])))
                if r[7] is not None:  # a planned series: its plan is how a file names it, even once begun
                    plans.add((r[0], r[7]))
                    stored.setdefault((r[0], r[7]), []).append(
                        dict(zip(_SERIES_FIELDS[1:], (r[8], r[9], *r[4:7]))))
            day = today or date.today()
            series, series_present, _ = _plan(
                problems, _file_rows(series_df, "series"),
                lambda row: _clean_imported_series(row, today=day, plans=plans),
                keyed("first_infusion"), stored, lambda key: f"the series of {key[0]!r} starting {key[1]}")
            contacts, contacts_present = _plan_contacts(
                conn, problems, _file_rows(patients_df, "patients"), today=day, region=region)

            stored = {r[:3]: {"t_score": r[3]} for r in conn.execute(
                "SELECT p.patient_id, a.domain, a.assessed_on, a.t_score FROM assessments a "
                "JOIN patients p ON p.id = a.patient_ref WHERE a.superseded_by IS NULL")}
            # Scores a clinician voided or corrected (the trail says so): the file's copy is not news.
            retired = set(conn.execute(
                "SELECT p.patient_id, a.domain, a.assessed_on, a.t_score FROM record_changes c "
                "JOIN assessments a ON a.id = c.record_id JOIN patients p ON p.id = a.patient_ref "
                "WHERE c.record = 'assessment' AND c.action IN ('correct', 'void')"))
            scores, scores_present, _ = _plan(
                problems, _file_rows(scores_df, "scores"),
                lambda row: clean_score(**{k: row.get(k) for k in _IMPORTED_SCORE_FIELDS + _SCORED_FIELDS},
                                        method="imported" if _missing(row.get("method")) else row["method"],
                                        source="import", today=today, known_forms=known_forms),
                keyed("domain", "assessed_on"), stored, lambda key: f"{key[1]} of {key[0]!r} on {key[2]}",
                supersede=True, settled=lambda key, values: (*key, values["t_score"]) in retired)

            if problems:
                raise ImportRejected(f"Nothing was imported: {len(problems)} problem(s) found. "
                                     "Fix them and import the files again.", problems)
            at = _now()
            for _, values in patients:
                row = {**values, "entered_by": who, "entered_at": at}
                refs[values["patient_id"]] = _insert(conn, "patients", row)
            for (pid, _), values in series:
                row = {"patient_ref": refs[pid], **values, "entered_by": who, "entered_at": at}
                if values["first_infusion"] > day:  # stored as plan_series stores a plan
                    row.update(planned_first=values["first_infusion"], planned_last=values["last_infusion"],
                               planned_infusions=values["infusions"], by_day=1, state="planned")
                _insert(conn, "series", row)
            superseded = sum(_store_score(conn, refs[key[0]], values, who, at)[1] for key, values in scores)
            for pid, values in contacts:
                conn.execute(
                    "INSERT INTO contacts (patient_ref, email, phone, channel, consent_on, consent_by, consent_how, "
                    "updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [refs[pid], values["email"], values["phone"], values["channel"], _sql(values["consent_on"]),
                     None if values["consent_on"] is None else who,
                     None if values["consent_on"] is None else "imported", at, who])
            if dry_run or not (patients or series or scores or contacts):
                raise _Rollback  # nothing to keep: data_version stays, so no cache is emptied
    except _Rollback:
        pass
    return ImportSummary(len(patients), patients_present, len(series), series_present, len(scores),
                         scores_present, superseded, dry_run,
                         series_planned=sum(values["first_infusion"] > day for _, values in series),
                         contacts_added=len(contacts), contacts_present=contacts_present)


_CONTACT_FIELDS = ("email", "phone", "channel")


def _clean_imported_series(row: Mapping[str, Any], *, today: date,
                           plans: Collection[tuple[str, str]]) -> tuple[dict[str, Any], list[str]]:
    """A ``series.csv`` row: a series given (both infusions on or before ``today``), or a planned series
    (first infusion ahead, up to :data:`PLAN_AHEAD_DAYS`). A series under way (first infusion given, last
    ahead) is refused: its infusions are logged day by day in the app, unless the row is the plan a
    former import stored (``plans``: patient and planned first infusion), which a re-import finds present."""
    if _missing(row.get("first_infusion")) or _clean_day(row.get("first_infusion"), today) <= today:
        values, problems = clean_series(**{k: row.get(k) for k in _SERIES_FIELDS}, today=today)
        pid = row.get("patient_id").strip() if isinstance(row.get("patient_id"), str) else row.get("patient_id")
        first = values["first_infusion"]
        ahead = [p for p in problems if p.startswith("last_infusion") and "in the future" in p]
        if ahead:
            problems = [p for p in problems if p not in ahead]
            values["last_infusion"] = last = _clean_day(row.get("last_infusion"), today)
            if first is None or (pid, first.isoformat()) not in plans:
                problems.append(
                    f"the series starting {first or row.get('first_infusion')} is under way (last_infusion {last} "
                    f"is ahead, today is {today}): import it once its last infusion is given, or plan it in "
                    "the app and log its infusions day by day")
            # else: the plan of a series begun since a former import stored it, compared with that plan
        return values, problems
    # A planned series: the checks of plan_series.
    f = _Fields(today)
    first = f.day("first_infusion", row.get("first_infusion"), required=True, future_days=PLAN_AHEAD_DAYS)
    if f.problems:
        f.problems = [p.replace("check the year", f"a series can be planned at most {PLAN_AHEAD_DAYS} days "
                                "ahead; check the year") for p in f.problems]
    values = {
        "first_infusion": first,
        "last_infusion": f.day("last_infusion", row.get("last_infusion"), required=True,
                               future_days=PLAN_AHEAD_DAYS + 366),
        "infusions": f.number("infusions", row.get("infusions"), 1, 60, integer=True, required=True),
        "protocol": f.text("protocol", row.get("protocol"), max_len=200),
        "dose_mg_per_kg": f.number("dose_mg_per_kg", row.get("dose_mg_per_kg"), *DOSE_RANGE, unit=" mg/kg"),
        "notes": f.text("notes", row.get("notes")),
    }
    last = values["last_infusion"]
    if first and last and last < first:
        f.fail(f"last_infusion {last} is before first_infusion {first}; swap or correct the dates")
    return values, f.problems


def _clean_day(value: Any, today: date) -> date:
    """A cell's day when it is one (whatever its distance from today), else ``today`` (the field rules then
    report the cell)."""
    far = _Fields(today + timedelta(days=100 * 366))
    day = far.day("day", value)
    return today if day is None else day


def _contact(row: Mapping[str, Any], *, today: date, region: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The contact cells a ``patients.csv`` row gives, their checked values and problems."""
    given = {k: row.get(k) for k in _CONTACT_FIELDS if not _missing(row.get(k))}
    if not given:
        return given, {}, []
    channel = given.get("channel")
    channel = channel.strip().lower() if isinstance(channel, str) else channel
    values, errs = clean_contact(email=given.get("email"), phone=given.get("phone"), channel=channel,
                                 consent_on=today if channel in ("email", "sms") else None, region=region,
                                 today=today)
    return given, values, errs


def _with_contact(checked: tuple[dict[str, Any], list[str]], row: Mapping[str, Any], *, today: date,
                  region: str) -> tuple[dict[str, Any], list[str]]:
    """A patient row's checked fields, with the problems of its contact cells, so a line's problems are
    listed together."""
    values, problems = checked
    return values, problems + _contact(row, today=today, region=region)[2]


def _plan_contacts(conn: sqlite3.Connection, problems: list[str],
                   rows: Iterable[tuple[str, int, dict[str, Any]]], *, today: date,
                   region: str) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The contacts of ``patients.csv`` (optional columns ``email, phone, channel``): the new ones to store
    and how many are already stored with the same values.

    A channel other than ``none`` records consent as ``imported``, on ``today``, by the importing user. A
    patient whose stored contact differs in a cell the file gives is a conflict (edit the contact in the
    app), so a file never overrides what staff recorded, nor turns messages back on after an opt-out.
    """
    stored = {r[0]: dict(zip(_CONTACT_FIELDS + ("opted_out_at",), r[1:])) for r in conn.execute(
        "SELECT p.patient_id, c.email, c.phone, c.channel, c.opted_out_at FROM contacts c "
        "JOIN patients p ON p.id = c.patient_ref")}
    new, present = [], 0
    for where, _, row in rows:
        pid = row.get("patient_id").strip() if isinstance(row.get("patient_id"), str) else row.get("patient_id")
        given, values, errs = _contact(row, today=today, region=region)
        if not given or errs or _missing(pid):
            continue  # no contact cells, or errors the patients' rules reported (_with_contact)
        old = stored.get(pid)
        if old is None:
            new.append((pid, values))
            continue
        differs = [k for k in given if values[k] != old[k]]
        if not differs:
            present += 1
        elif "channel" in differs and old["opted_out_at"] is not None and values["channel"] != "none":
            problems.append(f"{where}: patient {pid!r} stopped messages on {old['opted_out_at'][:10]}; a file "
                            "cannot turn them back on: record the patient's new consent on the Record page")
        else:
            shown = ", ".join(f"{k} {old[k]!r} (file: {values[k]!r})" for k in differs)
            problems.append(f"{where}: the contact details of {pid!r} are already in the database with {shown}; "
                            "correct the file or edit the contact in the app")
    return new, present


def _values(df: pd.DataFrame, columns: Sequence[str], dates: Collection[str] = (),
            extra: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of plain Python values for ``executemany`` (NULL for NaN/NaT/NA, ISO dates, JSON dicts),
    each followed by the constant values ``extra``."""
    out = []
    for c in columns:
        if c not in df.columns:
            out.append([None] * len(df))
            continue
        col = _iso_days(df[c]) if c in dates else df[c]
        values = col.astype(object).where(col.notna(), None).tolist()  # column-wise: 10x faster than per cell
        if c == "responses":
            values = _json_column(values)
        out.append(values)
    out += [[value] * len(df) for value in extra]
    return list(zip(*out))


def _iso_days(column: pd.Series) -> pd.Series:
    """Dates as ``YYYY-MM-DD`` text (NaT stays missing), formatted by NumPy (faster than ``strftime``)."""
    stamps = pd.to_datetime(column)
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize(None)  # the wall-clock day, as strftime gives it
    days = stamps.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    return pd.Series(np.datetime_as_string(days, unit="D"), index=column.index, dtype=object).where(
        stamps.notna(), None)


def _json_column(values: Sequence[Any]) -> list[str | None]:
    """Item-response mappings as compact JSON text (without the spaces: 11 bytes less per score)."""
    encode = _JSON_COMPACT
    return [None if v is None else encode(v if isinstance(v, dict) else dict(v) if isinstance(v, Mapping) else v)
            for v in values]


def _require_columns(df: pd.DataFrame, name: str, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValidationError(f"The {name} table lacks column(s) {', '.join(missing)}")


_BULK_CHUNK = 250_000


_PATIENT_EXTRA = ("disposition", "disposition_on", "disposition_reason", "disposition_by")
_SERIES_EXTRA = ("planned_first", "planned_last", "planned_infusions", "by_day", "state")
_CONTACT_COLUMNS = ("email", "phone", "channel", "consent_on", "consent_by", "consent_how", "opted_out_at",
                    "opted_out_by", "updated_at", "updated_by")
_OUTBOX_COLUMNS = ("slot", "due_on", "step", "channel", "recipient", "status", "attempts", "last_error",
                   "provider_id", "provider_response", "planned_at", "planned_by", "claimed_at", "claimed_by",
                   "sent_at")
_CALL_COLUMNS = ("slot", "due_on", "outcome", "note", "recorded_at", "recorded_by")


def insert_cohort(db: Database, patients: pd.DataFrame, series: pd.DataFrame, infusions: pd.DataFrame,
                  assessments: pd.DataFrame, *, synthetic: bool, entered_by: str = "synthetic",
                  contacts: pd.DataFrame | None = None, outbox: pd.DataFrame | None = None,
                  call_outcomes: pd.DataFrame | None = None) -> dict[str, int]:
    """Bulk-insert a whole cohort in one transaction (the demo generator's fast path).

    Rows are checked by the schema's constraints rather than field by field, so this is for
    generated or already-validated data. Clinical entry goes through the single-record verbs.

    Parameters
    ----------
    patients
        ``patient_id`` and optionally ``diagnosis, sex, birth_year, enrolled_on`` and the disposition
        (``disposition, disposition_on, disposition_reason, disposition_by``).
    series
        ``patient_id, first_infusion, last_infusion, infusions`` and optionally
        ``protocol, dose_mg_per_kg, notes``, a plan (``planned_first, planned_last, planned_infusions,
        by_day, state``, as :func:`plan_series` stores one) and ``entered_at`` (a timestamp; default now).
    contacts, outbox, call_outcomes
        Optional follow-up rows, by ``patient_id`` (and ``series_first_infusion`` for the outbox and call
        outcomes), with the columns of the tables of the same names (timestamps as ISO text).
    infusions
        ``patient_id, series_first_infusion, infused_on, dose_mg_per_kg, duration_min`` and optionally
        ``notes`` and ``adverse_events`` (a list per row of kinds, or of ``{kind, severity, notes}``).
    assessments
        ``patient_id, assessed_on, domain, t_score, method, source`` and optionally
        ``form, responses (dict), raw_score, se, n_answered``.
    synthetic
        Flag the database as a demo database. A database that already holds patients cannot change
        its flag, so real and generated patients never mix.

    Returns
    -------
    dict
        Rows inserted per table.

    Raises
    ------
    ValidationError
        A missing column, an unknown patient or series, or a row that breaks a schema rule.
    """
    _require_columns(patients, "patients", ["patient_id"])
    _require_columns(series, "series", ["patient_id", "first_infusion", "last_infusion", "infusions"])
    _require_columns(infusions, "infusions", ["patient_id", "series_first_infusion", "infused_on",
                                              "dose_mg_per_kg", "duration_min"])
    _require_columns(assessments, "assessments", ["patient_id", "assessed_on", "domain", "t_score", "method",
                                                  "source"])
    at = _now()
    try:
        with _write(db) as conn:
            if conn.execute("SELECT count(*) FROM patients").fetchone()[0] and is_synthetic(db) != synthetic:
                raise ValidationError("This database already holds " + ("real" if synthetic else "synthetic")
                                      + " patients; load the cohort into a separate database")
            extra = tuple(c for c in _PATIENT_EXTRA if c in patients.columns)
            conn.executemany(
                f"INSERT INTO patients ({', '.join(_PATIENT_FIELDS + extra)}, entered_by, entered_at) "
                f"VALUES ({', '.join('?' * (len(_PATIENT_FIELDS) + len(extra) + 2))})",
                [r + (entered_by, at) for r in _values(patients, _PATIENT_FIELDS + extra,
                                                         {"enrolled_on", "disposition_on"})])
            refs = dict(conn.execute("SELECT patient_id, id FROM patients"))

            def ref_of(df: pd.DataFrame, name: str) -> pd.Series:
                mapped = df["patient_id"].map(refs)
                if mapped.isna().any():
                    unknown = sorted(set(df.loc[mapped.isna(), "patient_id"].astype(str)))
                    raise ValidationError(f"The {name} table names patients not in the patients table",
                                          unknown[:10])
                return mapped.astype("int64")

            s = series.assign(patient_ref=ref_of(series, "series"))
            if "entered_at" not in s.columns:
                s["entered_at"] = at
            if "by_day" in s.columns:  # INTEGER column: plain ints, not floats or booleans
                s["by_day"] = s["by_day"].astype("int64")
            if "planned_infusions" in s.columns:
                s["planned_infusions"] = s["planned_infusions"].astype("Int64")
            columns = ("patient_ref",) + _SERIES_FIELDS + tuple(c for c in _SERIES_EXTRA if c in s.columns)
            conn.executemany(
                f"INSERT INTO series ({', '.join(columns)}, entered_at, entered_by) "
                f"VALUES ({', '.join('?' * (len(columns) + 2))})",
                [r + (entered_by,) for r in _values(s, columns + ("entered_at",),
                                                    {"first_infusion", "last_infusion", "planned_first",
                                                     "planned_last"})])
            series_refs = {(p, f): i for i, p, f in conn.execute(
                "SELECT id, patient_ref, first_infusion FROM series")}
            inf = infusions.assign(patient_ref=ref_of(infusions, "infusions"))
            keys = _values(inf, ("patient_ref", "series_first_infusion"), {"series_first_infusion"})
            missing = [k for k in keys if k not in series_refs]
            if missing:
                raise ValidationError("The infusions table names series not in the series table",
                                      [f"patient ref {p}, series starting {f}" for p, f in missing[:10]])
            inf["series_ref"] = [series_refs[k] for k in keys]
            before = conn.execute("SELECT coalesce(max(id), 0) FROM infusions").fetchone()[0]
            conn.executemany(
                "INSERT INTO infusions (series_ref, infused_on, dose_mg_per_kg, duration_min, notes, "
                "entered_by, entered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [r + (entered_by, at) for r in _values(inf, ("series_ref", "infused_on", "dose_mg_per_kg",
                                                             "duration_min", "notes"), {"infused_on"})])
            events = []
            if "adverse_events" in inf.columns:
                # Under the write lock each new rowid is max(rowid) + 1, so ids follow the frame's order.
                for infusion_id, listed in enumerate(inf["adverse_events"], start=before + 1):
                    for e in listed if isinstance(listed, (list, tuple)) else ():
                        e = e if isinstance(e, Mapping) else {"kind": e}
                        events.append((infusion_id, e.get("kind"), e.get("severity"), e.get("notes")))
            conn.executemany("INSERT INTO adverse_events (infusion_ref, kind, severity, notes) "
                             "VALUES (?, ?, ?, ?)", events)
            a = assessments.assign(patient_ref=ref_of(assessments, "assessments"))
            if "n_answered" in a.columns:  # often float after a NaN-aware computation; INTEGER column
                a["n_answered"] = a["n_answered"].astype("Int64")
            columns = ("patient_ref", "assessed_on", "domain", "form", "responses", "raw_score", "t_score",
                       "se", "n_answered", "method", "source")
            # Building the indexes once after the load is about a third faster than updating them row by
            # row; the DDL is part of the transaction, so a failure restores them too.
            indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                   "AND tbl_name = 'assessments' AND sql IS NOT NULL").fetchall()
            for name, _ in indexes:
                conn.execute(f"DROP INDEX {name}")
            # The table's CHECK constraints cost about 10 us per row when evaluated row by row (each IN
            # list is rebuilt for every executemany row), four times the insert itself. They are checked
            # instead in one pass after the load (quick_check evaluates every CHECK of the table), which
            # rolls the whole load back on a failure, as the row-by-row check did. Chunks bound the memory
            # of the Python row tuples for a cohort of millions of scores.
            insert = (f"INSERT INTO assessments ({', '.join(columns)}, entered_by, entered_at) "
                      f"VALUES ({', '.join('?' * (len(columns) + 2))})")
            conn.execute("PRAGMA ignore_check_constraints = ON")
            try:
                for start in range(0, len(a), _BULK_CHUNK):
                    conn.executemany(insert, _values(a.iloc[start:start + _BULK_CHUNK], columns, {"assessed_on"},
                                                     extra=(entered_by, at)))
            finally:
                conn.execute("PRAGMA ignore_check_constraints = OFF")
            failed = [row[0] for row in conn.execute("PRAGMA quick_check(assessments)")]
            if failed != ["ok"]:
                raise ValidationError("The cohort was not inserted: a row breaks a database rule", failed[:10])
            for _, sql in indexes:
                conn.execute(sql)
            followup = {k: 0 for k, v in (("contacts", contacts), ("outbox", outbox),
                                          ("call_outcomes", call_outcomes)) if v is not None}
            if contacts is not None and len(contacts):
                c = contacts.assign(patient_ref=ref_of(contacts, "contacts"))
                columns = ("patient_ref",) + _CONTACT_COLUMNS
                conn.executemany(f"INSERT INTO contacts ({', '.join(columns)}) "
                                 f"VALUES ({', '.join('?' * len(columns))})",
                                 _values(c, columns, {"consent_on"}))
                followup["contacts"] = len(c)
            for name, frame, table_columns in (("outbox", outbox, _OUTBOX_COLUMNS),
                                               ("call_outcomes", call_outcomes, _CALL_COLUMNS)):
                if frame is None or not len(frame):
                    continue
                f = frame.assign(patient_ref=ref_of(frame, name))
                keys = _values(f, ("patient_ref", "series_first_infusion"), {"series_first_infusion"})
                if missing := [k for k in keys if k not in series_refs]:
                    raise ValidationError(f"The {name} table names series not in the series table",
                                          [f"patient ref {p}, series starting {d}" for p, d in missing[:10]])
                f["series_ref"] = [series_refs[k] for k in keys]
                if "attempts" in f.columns:
                    f["attempts"] = f["attempts"].astype("int64")
                columns = ("patient_ref", "series_ref") + tuple(c for c in table_columns if c in f.columns)
                conn.executemany(f"INSERT INTO {name} ({', '.join(columns)}) "
                                 f"VALUES ({', '.join('?' * len(columns))})", _values(f, columns, {"due_on"}))
                followup[name] = len(f)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('synthetic', ?)",
                         ["1" if synthetic else "0"])
    except (sqlite3.IntegrityError, ValueError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError("The cohort was not inserted: a row breaks a database rule",
                              [str(exc)]) from None
    return {"patients": len(patients), "series": len(series), "infusions": len(infusions),
            "adverse_events": len(events), "assessments": len(assessments), **followup}
