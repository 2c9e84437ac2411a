"""Quality-improvement exports: analysis datasets, summary tables and FHIR, in the formats QI tools read.

The builders are pure (frames in, frames or bytes out); :func:`export` is the one entry point that checks
the role, loads, builds and writes the audit entry, for the exports page and ``python -m outcomes export``.

De-identification (``docs/privacy.md``, HIPAA Safe Harbor): patient IDs become :func:`pseudonym`\\ s
(HMAC-SHA256 keyed with the database's own secret, so nobody can recompute them from the clinic's IDs);
dates become days since the episode's first infusion; the birth year becomes an age band with 90+
collapsed; free-text notes (the diagnosis note included), staff names and internal row ids are dropped;
the diagnosis is the clinic's code, sex and protocol stay, with categories of 1 to ``small_cell_max``
patients pooled into "Other (pooled)"; a patient's disposition stays as its category only (no date, no
reason). Summary tables go through the small-cell rules of :mod:`outcomes.disclosure`. Text written to
CSV or Excel is neutralised against formula injection (:func:`neutralise`).

Dates by differencing (docs/privacy.md, "Dates and differencing"): de-identified files hold only *released*
episodes (:func:`outcomes.disclosure.released`: follow-up closed, then a secret per-patient delay of up to a
year), each with all of its scores, and are cut only at a year end (row-level: dataset, FHIR) or a month end
(summary tables; :func:`release_cut`). So files with different cuts differ only by whole episodes, and when
one appears says nothing finer than a year about its dates.

Every export follows the corrected record (the storage reads' defaults): voided records, planned and
cancelled series (no infusion given) and replaced scores are left out, corrected values go in. The
identified dataset also carries the trail of corrections, voids, cancellations and dispositions
(``record_changes``); a de-identified file never does.

Example
-------
>>> pseudonym("0" * 64, "P001")
'ps_56df45747cb77777'
>>> neutralise("=1+1"), neutralise("-3.5"), neutralise("P001")
("'=1+1", '-3.5', 'P001')
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from . import analysis, auth, clinic, disclosure, fhir, storage
from .deployment import derive_key
from .domains import load_domains
from .errors import ConfigError, ValidationError
from .instruments import Registry
from .settings import Settings

KINDS: tuple[str, ...] = ("dataset", "summary", "fhir")
#: Formats per kind. Summary tables hold suppression markers (text), so they are not offered as Parquet.
FORMATS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"dataset": ("csv", "xlsx", "parquet"), "summary": ("csv", "xlsx"), "fhir": ("json",)})
MIME = MappingProxyType({
    "csv": "application/zip", "parquet": "application/zip", "json": "application/fhir+json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"})
SUFFIX = MappingProxyType({"csv": "csv.zip", "parquet": "parquet.zip", "json": "json", "xlsx": "xlsx"})
#: Who may export what (clinic.record_export enforces the same).
ROLES_DEIDENTIFIED = ("clinician", "qi", "admin")
ROLES_IDENTIFIED = ("clinician", "admin")

# A letter first: Excel would turn an all-digit or "12e34..." hex string into a number.
PSEUDONYM_PREFIX = "ps_"
PSEUDONYM_HEX = 16  # 64 bits: a collision among 100,000 patients has a probability of about 3e-10
#: OWASP "CSV injection": a spreadsheet may run a cell that starts with one of these as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
OTHER = disclosure.POOLED  # "Other (pooled)"
NOT_CODED = "Not coded"
MAX_REASON = 500
#: The data cut of de-identified output: row-level files at a year end, summary tables at a month end.
CUT_UNITS: Mapping[str, str] = MappingProxyType({"dataset": "year", "fhir": "year", "summary": "month"})

#: Column dictionary, written into every README.
DEFINITIONS: Mapping[str, str] = MappingProxyType({
    "pseudonym": "stable pseudonym of the patient: HMAC-SHA256 of the clinic's patient ID keyed with a "
                 "secret kept in this database, truncated to 16 hex digits; the same patient gets the same "
                 "pseudonym in every export from this database, and nobody without the secret can compute it",
    "patient_id": "the clinic's own patient ID (identified exports only)",
    "episode": "the patient's infusion series number: 1 for the first series, 2 for the next...",
    "diagnosis": f"the diagnosis code from the clinic's list ('{NOT_CODED}': none given); in de-identified "
                 f"exports a code held by 1 to the small-cell maximum patients is pooled into '{OTHER}'",
    "diagnosis_note": "the diagnosis as the clinician typed it, free text (identified exports only)",
    "sex": "F, M or X as entered (empty: not recorded)",
    "age_band": "age at the episode's first infusion (year of the infusion minus birth year, so possibly "
                "a year high): 18–29 … 80–89, 90+ (ages above 89 are collapsed, as Safe Harbor requires)",
    "protocol": f"infusion protocol as entered; rare protocols are pooled into '{OTHER}' like diagnoses",
    "infusions": "number of infusions in the series",
    "dose_mg_per_kg": "ketamine dose of the series, mg/kg (empty: not recorded)",
    "last_infusion_day": "days from the first to the last infusion of the series",
    "next_episode_day": "days from this series' first infusion to the next series' first infusion (empty: "
                        "no next series by the data cut; de-identified: none in this file); follow-up of "
                        "this episode ends the day before",
    "day": "days since the episode's first infusion (negative: before it, e.g. a baseline)",
    "domain": "the PROMIS domain (data/instruments/forms.toml [domains]; e.g. depression)",
    "t_score": "PROMIS T-score (mean 50, SD 10 in the reference population); higher = more of the domain, "
               "so worse for symptoms (such as pain interference or depression), better for function",
    "se": "standard error of the T-score (empty: not recorded, e.g. an imported T-score)",
    "form": "PROMIS short form that produced the score (empty: T-score imported without its form)",
    "method": "table (all items answered), pattern (response-pattern scoring with items missing), "
              "prorated, or imported",
    "source": "who entered the score: patient, clinician or import",
    "used_as": "how the responder analysis uses this score: baseline, or the follow-up window it fills "
               "(empty: neither)",
    "birth_year": "year of birth (identified exports only)",
    "first_infusion": "date of the first infusion of the series (identified exports only)",
    "last_infusion": "date of the last infusion of the series (identified exports only)",
    "assessed_on": "date of the questionnaire (identified exports only)",
    "notes": "free-text notes of the series (identified exports only)",
    "disposition": "the patient's disposition when the file was made (identified) or as released by the data "
                   "cut, with the patient's delay (de-identified): active, discharged (follow-up complete), "
                   "withdrawn, lost_to_follow_up or deceased; the same on each of the patient's episodes",
    "disposition_on": "date of the disposition (identified exports only; empty: never changed from active)",
    "disposition_reason": "free-text reason of the disposition (identified exports only)",
    "at": "when the change was made (UTC)",
    "actor": "user name of whoever made the change",
    "record": "the kind of record changed: patient, series, infusion, adverse_event or assessment",
    "record_id": "the clinic database's id of the record changed, linking the changes of one record (for a "
                 "patient an internal number; patient_id names the patient); a corrected assessment is a new "
                 "row, so a later change of it has the new row's id",
    "action": "correct (fields changed), void (entered in error: left out of every analysis and export), "
              "cancel (a planned series called off before any infusion) or disposition",
    "before": "the changed fields before the change, as JSON ({\"field\": value}; dates as YYYY-MM-DD)",
    "after": "the same fields after the change, as JSON",
    "reason": "why the change was made, as entered (free text)",
})

#: The tables of the analysis dataset, for the README (``record_changes`` only in the identified one).
TABLES: Mapping[str, str] = MappingProxyType({
    "episodes": "one row per infusion series given, not voided (planned and cancelled series, with no "
                "infusion given, are not episodes)",
    "scores": "one row per episode and active score (replaced and voided scores are left out; a corrected "
              "score appears once, with its corrected values)",
    "record_changes": "the trail of every correction, void, cancellation and disposition, oldest first: "
                      "complete up to the moment the file was made, not cut at as_of, since corrections "
                      "change the exported values whatever the cut",
})
#: What a record change holds, in file order (``storage.CHANGE_COLUMNS`` without the trail's own row id).
CHANGE_COLUMNS = ("at", "actor", "patient_id", "record", "record_id", "action", "before", "after", "reason")


@dataclass(frozen=True)
class Source:
    """Everything an export reads, as the storage read contracts return it.

    ``series`` holds only series given and not voided, ``assessments`` only active scores (their
    reads' defaults); ``changes`` is ``storage.load_record_changes`` (none by default).
    """

    patients: pd.DataFrame
    series: pd.DataFrame
    assessments: pd.DataFrame
    secret: str
    changes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=storage.CHANGE_COLUMNS))


def load_source(db: Any) -> Source:
    """Read patients, series given, active scores, the record's trail and the pseudonym secret of ``db``."""
    secret = storage.get_meta(db, "secret")
    if not secret:
        raise ConfigError("This database has no pseudonym secret; run `python -m outcomes init` on it")
    patients = storage.load_patients(db).merge(
        storage.load_patient_diagnoses(db)[["patient_id", "diagnosis_label"]], on="patient_id", how="left")
    return Source(patients, storage.load_series(db), storage.load_assessments(db), secret,
                  storage.load_record_changes(db))


@dataclass(frozen=True)
class ExportFile:
    """One file ready to hand over, with what the audit entry and the page need to know about it."""

    kind: str
    format: str
    deidentified: bool
    filename: str
    mime: str
    data: bytes = field(repr=False)
    rows: int
    tables: Mapping[str, pd.DataFrame] = field(repr=False)  # what went into the file, for a preview
    notes: tuple[str, ...] = ()


# Small rules ------------------------------------------------------------------------------------


def pseudonym(secret: str, patient_id: str) -> str:
    """``ps_`` + the first 16 hex digits of HMAC-SHA256(secret, patient ID)."""
    digest = hmac.new(secret.encode(), str(patient_id).encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]


def _pseudonyms(ids: pd.Series, secret: str) -> pd.Series:
    unique = {pid: pseudonym(secret, pid) for pid in pd.unique(ids)}
    return ids.map(unique)


def neutralise(value: Any) -> Any:
    """Text a spreadsheet could run as a formula, prefixed with ``'`` (OWASP); anything else unchanged.

    Plain numbers such as ``-3.5`` are left alone: a number cannot call anything.
    """
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`neutralise` on every text cell and on the column names."""
    out = df.rename(columns=lambda c: neutralise(str(c)))
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(neutralise, na_action="ignore")
    return out


def pool_rare(values: pd.Series, owners: pd.Series, threshold: int) -> pd.Series:
    """Values shared by 1 to ``threshold`` distinct owners (patients) replaced by ``"Other (pooled)"``.

    A rare diagnosis or protocol singles a patient out, and free text may even hold a name.
    """
    return disclosure.pool_rare(values, owners, threshold, OTHER)


def diagnosis_labels(patients: pd.DataFrame) -> pd.Series:
    """Each patient's diagnosis code label (``"Not coded"`` when none), indexed like ``patients``; never the
    free-text note."""
    if "diagnosis_label" not in patients:
        return pd.Series(NOT_CODED, index=patients.index, dtype=object)
    return patients["diagnosis_label"].astype(object).where(patients["diagnosis_label"].notna(), NOT_CODED)


def _age_bands(birth_year: pd.Series, on: pd.Series) -> pd.Series:
    """Age band at ``on`` (per row), via analysis.age_band per calendar year; "under 18" below its bands."""
    out = pd.Series(pd.NA, index=birth_year.index, dtype=object)
    years = pd.to_datetime(on).dt.year
    for year, index in birth_year.groupby(years).groups.items():
        out.loc[index] = analysis.age_band(birth_year.loc[index], f"{int(year)}-12-31").astype(object)
    under = (years - birth_year < 18).fillna(False).astype(bool)
    return out.mask(under, "under 18").where(birth_year.notna(), pd.NA)


def _required_day(value: date | str | None, name: str) -> pd.Timestamp:
    """``value`` as a midnight Timestamp; None raises (an export is never cut at an implicit "today")."""
    if value is None:
        raise ValidationError(f"{name} is required: exports are cut at an explicit date, never 'today'")
    return pd.Timestamp(value).normalize()


def cut_unit(kind: str, deidentified: bool) -> str:
    """``year``, ``month`` or ``day``: how finely the data cut of this export can be chosen."""
    return CUT_UNITS.get(kind, "year") if deidentified else "day"


def release_cut(kind: str, as_of: date | str | None, *, deidentified: bool) -> pd.Timestamp:
    """The data cut an export uses for ``as_of``: for de-identified files the last year end (dataset, FHIR)
    or month end (summary tables) on or before it; identified files keep the day.

    Examples
    --------
    >>> [release_cut(kind, day, deidentified=True).date().isoformat() for kind, day in (
    ...     ("dataset", "2025-06-01"), ("summary", "2025-06-01"), ("summary", "2025-05-31"))]
    ['2024-12-31', '2025-05-31', '2025-05-31']
    """
    day = _required_day(as_of, "as_of")
    unit = cut_unit(kind, deidentified)
    if unit == "year":
        return day if (day.month, day.day) == (12, 31) else pd.Timestamp(day.year - 1, 12, 31)
    if unit == "month":
        return day if day.is_month_end else (day - pd.offsets.MonthEnd(1)).normalize()
    return day


def cut_choices(kind: str, *, deidentified: bool, today: date, years: int = 10) -> list[date]:
    """The data cuts the exports page offers, newest first: full past years' ends (row-level), the ends of
    past months (summary), or nothing for identified exports (any day up to today)."""
    unit = cut_unit(kind, deidentified)
    if unit == "day":
        return []
    latest = release_cut(kind, today, deidentified=deidentified)
    if unit == "year":
        return [date(latest.year - i, 12, 31) for i in range(years)]
    ends = pd.date_range(end=latest, periods=12 * years, freq="ME")
    return [d.date() for d in reversed(ends)]


def cut_label(kind: str, cut: date | pd.Timestamp, *, deidentified: bool) -> str:
    """The cut as files and pages name it: ``2024`` (a year end), ``2025-05`` (a month end) or the day."""
    unit = cut_unit(kind, deidentified)
    return f"{cut:%Y}" if unit == "year" else f"{cut:%Y-%m}" if unit == "month" else f"{cut:%Y-%m-%d}"


def released(source: Source, cut: pd.Timestamp, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The series and scores a de-identified file holds at ``cut`` (:func:`outcomes.disclosure.released`)."""
    return disclosure.released(source.series, source.assessments, cut=cut, secret=source.secret,
                               windows=settings.windows, baseline_days=settings.baseline_days)


# Datasets -----------------------------------------------------------------------------------------


def dataset_tables(source: Source, *, as_of: date, deidentified: bool,
                   settings: Settings) -> dict[str, pd.DataFrame]:
    """The analysis dataset: ``episodes`` (one row per series) and ``scores`` (episode × domain × score),
    and for the identified dataset ``record_changes`` (:func:`change_table`).

    A score belongs to an episode from ``baseline_days`` before its first infusion to the end of its
    follow-up (the day before the next series), so a score may appear under two episodes.

    Identified: series starting after ``as_of`` and scores dated after it are left out, follow-up ends at
    ``as_of`` too, and ``<window>_closed`` says which windows had closed by then; the disposition is the
    current one, with its date and reason.

    De-identified: only the episodes released by ``as_of`` (:func:`released`), each with every score of
    its fixed span (baseline period to the close of follow-up), whatever the cut; no ``_closed`` flags
    (every window has closed); the disposition's category as released by the cut; the diagnosis code's
    label, pooled when rare. Nothing in a released episode's rows changes with the cut.
    """
    cut = _required_day(as_of, "as_of")
    patients = source.patients.set_index("patient_id")
    labels = diagnosis_labels(patients)
    if deidentified:
        eps, scores = released(source, cut, settings)
        eps = eps.sort_values(["patient_id", "first_infusion"], kind="stable").reset_index(drop=True)
        following = eps.groupby("patient_id", sort=False)["first_infusion"].shift(-1)
        ends = eps["follow_up_end"]
    else:
        eps = analysis.with_follow_up_end(source.series)
        eps = eps[eps["first_infusion"] <= cut].reset_index(drop=True)
        scores = source.assessments[source.assessments["assessed_on"] <= cut]
        nxt = eps["follow_up_end"] + pd.Timedelta(days=1)
        following = nxt.where(nxt <= cut)
        ends = eps["follow_up_end"].where(eps["follow_up_end"] < cut, cut)  # NaT (no next series): the cut
    first, last = eps["first_infusion"], eps["last_infusion"]
    eps = eps.assign(
        diagnosis=eps["patient_id"].map(labels), diagnosis_note=eps["patient_id"].map(patients["diagnosis"]),
        sex=eps["patient_id"].map(patients["sex"]),
        birth_year=eps["patient_id"].map(patients["birth_year"]).astype("Int64"),
        disposition=eps["patient_id"].map(patients["disposition"]),
        disposition_on=eps["patient_id"].map(patients["disposition_on"]),
        disposition_reason=eps["patient_id"].map(patients["disposition_reason"]),
        last_infusion_day=(last - first).dt.days.astype("Int64"),
        next_episode_day=(following - first).dt.days.astype("Int64"),
        episode=eps["series_number"].astype("Int64"))
    windows = [] if deidentified else [f"{w.name}_closed" for w in settings.windows]
    for w in settings.windows[:len(windows)]:
        eps[f"{w.name}_closed"] = last + pd.Timedelta(days=w.high) <= cut

    joined = scores.merge(eps[["series_id", "patient_id", "episode", "first_infusion"]].assign(_end=ends),
                          on="patient_id")
    day = (joined["assessed_on"] - joined["first_infusion"]).dt.days
    joined = joined[(day >= -settings.baseline_days) & (joined["assessed_on"] <= joined["_end"])]
    joined = joined.assign(day=(joined["assessed_on"] - joined["first_infusion"]).dt.days.astype("Int64"))
    joined = joined.merge(_uses(eps, scores, cut, settings), how="left",
                          on=["series_id", "domain", "assessed_on"])
    joined = joined.assign(used_as=joined["used_as"].fillna("")).sort_values(
        ["patient_id", "episode", "domain", "assessed_on"], kind="stable")

    if deidentified:
        threshold = settings.small_cell_max
        delay = pd.to_timedelta(eps["patient_id"].map(
            lambda pid: disclosure.release_delay(source.secret, pid)).astype("int64"), unit="D")
        # The disposition as of the cut minus the patient's delay: when it changes says nothing finer either.
        known = eps["disposition_on"].isna() | (eps["disposition_on"] + delay <= cut)
        eps = eps.assign(pseudonym=_pseudonyms(eps["patient_id"], source.secret),
                         age_band=_age_bands(eps["birth_year"], eps["first_infusion"]),
                         diagnosis=pool_rare(eps["diagnosis"], eps["patient_id"], threshold),
                         protocol=pool_rare(eps["protocol"], eps["patient_id"], threshold),
                         disposition=eps["disposition"].where(known, "active"))
        episodes = eps[["pseudonym", "episode", "diagnosis", "sex", "age_band", "disposition", "protocol",
                        "infusions", "dose_mg_per_kg", "last_infusion_day", "next_episode_day"]]
        joined = joined.assign(pseudonym=_pseudonyms(joined["patient_id"], source.secret))
        long = joined[["pseudonym", "episode", "domain", "day", "t_score", "se", "form", "method", "source",
                       "used_as"]]
        # In the clinic's ID order, row positions would rank the IDs (often issued in enrolment order).
        episodes = episodes.sort_values(["pseudonym", "episode"], kind="stable")
        long = long.sort_values(["pseudonym", "episode", "domain", "day"], kind="stable")
    else:
        episodes = eps[["patient_id", "episode", "birth_year", "diagnosis", "diagnosis_note", "sex",
                        "disposition", "disposition_on", "disposition_reason", "protocol", "first_infusion",
                        "last_infusion",
                        "infusions", "dose_mg_per_kg", "notes", "last_infusion_day", "next_episode_day",
                        *windows]]
        long = joined[["patient_id", "episode", "assessed_on", "day", "domain", "t_score", "se", "form",
                       "method", "source", "used_as"]]
    tables = {"episodes": episodes.reset_index(drop=True), "scores": long.reset_index(drop=True)}
    if not deidentified:
        tables["record_changes"] = change_table(source.changes)
    return tables


def change_table(changes: pd.DataFrame) -> pd.DataFrame:
    """The record's trail as exported (identified only): :data:`CHANGE_COLUMNS`, ``before`` and ``after``
    as JSON text, oldest first. It holds staff names, free-text reasons and exact dates and moments."""
    out = changes.loc[:, list(CHANGE_COLUMNS)].copy()
    for column in ("before", "after"):
        out[column] = out[column].map(lambda v: json.dumps(v, ensure_ascii=False), na_action="ignore")
    return out.reset_index(drop=True)


def _uses(eps: pd.DataFrame, scores: pd.DataFrame, cut: pd.Timestamp, settings: Settings) -> pd.DataFrame:
    """``series_id, domain, assessed_on, used_as``: the baseline and window scores the analysis picks."""
    picked = analysis.window_scores(eps, scores, as_of=cut, windows=settings.windows,
                                    baseline_days=settings.baseline_days, series="all")
    base = picked[["series_id", "domain", "baseline_on"]].dropna().drop_duplicates()
    base = base.rename(columns={"baseline_on": "assessed_on"}).assign(used_as="baseline")
    win = picked.loc[picked["assessed_on"].notna(), ["series_id", "domain", "assessed_on", "window"]]
    win = win.rename(columns={"window": "used_as"}).astype({"used_as": str})
    out = pd.concat([base, win], ignore_index=True).astype({"domain": str, "series_id": "Int64"})
    # Baseline first: a score fills one role.
    return out.drop_duplicates(["series_id", "domain", "assessed_on"])


# Summary tables -----------------------------------------------------------------------------------

#: Table 1: each characteristic's rows add up to its "All" row. Means and SDs are not derived from
#: the count for the engine: a mean does not reveal how many it averages, so it goes only with a
#: small count (see :func:`summary_tables`), not with a large count hidden as a complement.
TABLE1_SPEC = disclosure.Spec(
    counts=("n",),
    derived=MappingProxyType({"percent": ("n",)}),
    row_totals=(disclosure.RowTotal(("characteristic",), "value", "All", ("n",), complete=True),),
)
_TOTAL, _NOT_RECORDED = "All", "not recorded"


def table_one(episodes: pd.DataFrame, baselines: pd.DataFrame, *, threshold: int,
              domains: Iterable[str] | None = None) -> pd.DataFrame:
    """Baseline characteristics ("Table 1") of the analysis set, before suppression.

    Every characteristic is a block of rows that add up to its ``All`` row (so the suppression engine
    sees the arithmetic): ``characteristic, value, n, percent, mean, sd``. Diagnoses of 1 to
    ``threshold`` episodes are pooled into "Other" first.
    """
    n_all = len(episodes)
    rows: list[dict[str, Any]] = []

    def block(name: str, parts: Sequence[tuple[str, int, float, float]]) -> None:
        for value, n, mean, sd in parts:
            rows.append({"characteristic": name, "value": value, "n": n, "mean": mean, "sd": sd})
        rows.append({"characteristic": name, "value": _TOTAL, "n": n_all, "mean": np.nan, "sd": np.nan})

    def numeric(name: str, values: pd.Series, present: str, absent: str) -> None:
        v = values.dropna().astype(float)
        mean = v.mean() if len(v) else np.nan
        sd = v.std(ddof=1) if len(v) > 1 else np.nan
        block(name, [(present, len(v), mean, sd), (absent, n_all - len(v), np.nan, np.nan)])

    def categories(name: str, values: pd.Series, order: Sequence[str] | None = None) -> None:
        counts = values.fillna(_NOT_RECORDED).value_counts()
        keys = list(order or sorted(k for k in counts.index if k not in (_NOT_RECORDED, OTHER)))
        keys += [k for k in (OTHER, _NOT_RECORDED) if k in counts.index and k not in keys]
        block(name, [(k, int(counts.get(k, 0)), np.nan, np.nan) for k in keys])

    ages = (episodes["first_infusion"].dt.year - episodes["birth_year"].astype("Float64")).astype(float)
    # The size of the analysis set: a count of its own, not a total of parts.
    rows.append({"characteristic": "Episodes", "value": "analysis set", "n": n_all, "mean": np.nan,
                 "sd": np.nan})
    numeric("Age, years", ages, "with a birth year", "birth year not recorded")
    categories("Age band", _age_bands(episodes["birth_year"].astype("Int64"), episodes["first_infusion"]),
               ["under 18", *analysis.AGE_BANDS])
    categories("Sex", episodes["sex"], ["F", "M", "X"])
    categories("Diagnosis", pool_rare(episodes["diagnosis"], episodes["series_id"], threshold))
    order = list(load_domains() if domains is None else domains)  # None: the shipped display order
    present = set(baselines["domain"])
    for domain in [d for d in order if d in present] + sorted(present - set(order)):
        t = baselines.loc[baselines["domain"] == domain, "baseline_t"]
        numeric(f"Baseline T, {domain}", t, "with a baseline score", "no baseline score")
    table = pd.DataFrame(rows, columns=["characteristic", "value", "n", "mean", "sd"])
    with np.errstate(divide="ignore", invalid="ignore"):
        table.insert(3, "percent", np.where(n_all > 0, 100 * table["n"] / n_all, np.nan))
    return table.astype({"n": "int64"})


def summary_tables(source: Source, *, as_of: date, series: analysis.SeriesChoice,
                   settings: Settings) -> dict[str, pd.DataFrame]:
    """Responder table, follow-up completion and Table 1 of the episodes released by ``as_of``
    (:func:`released`: the same population as the row-level files, so a month's tables differ from the
    last month's only by whole released episodes), suppressed for de-identified release (text).
    Diagnoses are the codes' labels, never the free-text note."""
    cut = _required_day(as_of, "as_of")
    threshold = settings.small_cell_max
    given, scores = released(source, cut, settings)
    repeats = int((given["series_number"] > 1).sum())
    if series == "all" and disclosure.is_small(repeats, threshold):
        # The all-series tables minus the first-series tables would be those few repeat series' results.
        raise ValidationError(f"Only 1 to {threshold} repeat series had been released by then, so the "
                              "all-series tables would reveal them next to the first-series tables; export "
                              "each patient's first series, or a later month")
    patients = source.patients.assign(diagnosis=diagnosis_labels(source.patients))
    episodes = given.merge(patients[["patient_id", "diagnosis", "sex", "birth_year"]], on="patient_id",
                            how="left")
    scores = scores[["patient_id", "assessed_on", "domain", "t_score", "se"]]
    common: dict[str, Any] = {"as_of": cut, "windows": settings.windows,
                              "baseline_days": settings.baseline_days, "series": series}
    # The domains asked at the check-in or with released scores: no empty rows for an unmeasured domain.
    domains = list(settings.reported_domains(scores["domain"].unique()))

    def publish(table: pd.DataFrame, spec: disclosure.Spec) -> pd.DataFrame:
        formats = {c: "{:.0f}" for c in spec.counts}  # no thousands separator: it would split a CSV cell
        return disclosure.suppress(table, spec, threshold=threshold, formats=formats)

    responders = analysis.responder_report(episodes, scores, mcid={d: settings.mcid[d] for d in domains},
                                           registry=settings.domains, **common)
    completion = analysis.follow_up_completion(episodes, scores, domains=domains, **common)
    # One window is enough to read each episode's baseline.
    picked = analysis.window_scores(episodes, scores, domains=domains,
                                    **{**common, "windows": settings.windows[:1]})
    analysed = picked.drop_duplicates("series_id")[["series_id"]].merge(episodes, on="series_id")
    table1 = publish_table_one(table_one(analysed, picked, threshold=threshold, domains=settings.domains),
                               threshold=threshold)
    return {"responders": publish(responders, disclosure.RESPONDER_SPEC),
            "completion": publish(completion, disclosure.COMPLETION_SPEC), "table1": table1}


def publish_table_one(table: pd.DataFrame, *, threshold: int) -> pd.DataFrame:
    """:func:`table_one` as it may be published: :data:`TABLE1_SPEC`, means and SDs of small counts hidden,
    and everything hidden when the analysis set itself has 1 to ``threshold`` episodes (text)."""
    mask = disclosure.suppression_mask(table, TABLE1_SPEC, threshold=threshold)
    small = table["n"].between(1, threshold)
    for column in ("mean", "sd"):  # the mean of 1 to 10 people is nearly their own values
        mask[column] = small & table[column].notna()
    size = table.loc[table["characteristic"] == "Episodes", "n"]
    if len(size) and disclosure.is_small(size.iloc[0], threshold):
        mask[:] = True  # every count is out of a small total: nothing about these few patients is shown
    return disclosure.apply_mask(table, mask, counts=("n",), threshold=threshold, formats={"n": "{:.0f}"})


# Serialisation ------------------------------------------------------------------------------------


def _text_frame(df: pd.DataFrame) -> pd.DataFrame:
    """ISO 8601 text for dates (``2025-06-01``) and moments (``2025-06-01T09:30:00.000123+00:00``)."""
    out = df.copy()
    for column in out.columns:
        values = out[column]
        if not pd.api.types.is_datetime64_any_dtype(values):
            continue
        if values.dt.tz is None and (values.dropna() == values.dropna().dt.normalize()).all():
            out[column] = values.dt.strftime("%Y-%m-%d")
        else:
            out[column] = values.map(lambda v: v.isoformat(), na_action="ignore")
    return out


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """UTF-8 CSV (no byte-order mark, CRLF), ISO dates, text cells neutralised against formula injection."""
    # CRLF as RFC 4180 says; it also makes the writer quote a cell holding a bare carriage return.
    return neutralise_frame(_text_frame(df)).to_csv(index=False, lineterminator="\r\n").encode("utf-8")


def _zip(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            # A fixed timestamp: the archive says nothing about when (or on which day) it was made.
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _readme_text(readme: Sequence[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\n" if k else f"\n{v}\n" for k, v in readme).encode("utf-8")


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def to_xlsx(tables: Mapping[str, pd.DataFrame], readme: Sequence[tuple[str, str]]) -> bytes:
    """A workbook: a README sheet, then one sheet per table (bold frozen header, column widths).

    Written in openpyxl's write-only mode (a 16,000-row dataset takes under a second instead of
    several). Text that reads as a plain number (a shown count of a suppressed table) becomes a
    number, markers stay text, dates are dates; text is neutralised, so no cell is ever a formula.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill

    book = Workbook(write_only=True)
    sheet = book.create_sheet("README")
    sheet.column_dimensions["A"].width = 28
    sheet.column_dimensions["B"].width = 110
    wrap = Alignment(wrap_text=True, vertical="top")
    for key, value in readme:
        cells = [WriteOnlyCell(sheet, neutralise(key)), WriteOnlyCell(sheet, neutralise(value))]
        for cell in cells:
            cell.alignment = wrap
        cells[1].font = Font(bold=not key)
        sheet.append(cells)
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDE6F0")
    for name, df in tables.items():
        sheet = book.create_sheet(name[:31])
        sheet.freeze_panes = "A2"
        for index, column in enumerate(df.columns, start=1):
            sample = [len(str(v)) for v in df[column].head(200).tolist()]
            dates = pd.api.types.is_datetime64_any_dtype(df[column])
            width = 12 if dates else max([len(str(column)), *sample])
            sheet.column_dimensions[_column_letter(index)].width = min(max(width + 2, 8), 50)
        header = []
        for column in df.columns:
            cell = WriteOnlyCell(sheet, neutralise(str(column)))
            cell.font, cell.fill = bold, fill
            header.append(cell)
        sheet.append(header)
        for record in df.itertuples(index=False):
            sheet.append([_xlsx_value(v) for v in record])
    book.properties.creator = "outcomes"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index)


def _xlsx_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is not None:  # Excel has no time zones: UTC, as the column name says
            return value.tz_convert("UTC").tz_localize(None).to_pydatetime()
        return value.date() if value == value.normalize() else value.to_pydatetime()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value):
        number = float(value)
        return int(number) if number.is_integer() and "." not in value else number
    return neutralise(value)


def _readme(kind: str, *, deidentified: bool, as_of: date, series: str, settings: Settings,
            tables: Mapping[str, pd.DataFrame], generated_at: datetime) -> list[tuple[str, str]]:
    """(key, value) lines; a key of "" starts a section titled by the value."""
    cells = settings.small_cell_max
    marker = disclosure.small_marker(cells)
    lines: list[tuple[str, str]] = [
        ("", "Infusion outcomes export"),
        ("export", {"dataset": "analysis dataset", "summary": "summary tables", "fhir": "FHIR R4"}[kind]),
        ("de-identification", "de-identified (HIPAA Safe Harbor; see docs/privacy.md)" if deidentified
         else "IDENTIFIED: contains patient IDs and dates of care; handle as protected health information"),
        ("as_of", _as_of_text(kind, as_of, deidentified, settings)),
        ("generated", f"{generated_at:%Y-%m-%d %H:%M} UTC"),
        ("caveat", "Observed outcomes of an uncontrolled cohort, not treatment effects (docs/methods.md)."),
        ("records", "as corrected: voided records, planned and cancelled series (no infusion given) and "
                    "replaced scores are left out; corrected values are used"),
        ("", "Thresholds and windows"),
        ("meaningful change", f"{settings.mcid_label}: " +
         ", ".join(f"{d} {v:.1f}" for d, v in settings.mcid.items()) + " T points; improved = a change "
         "from baseline at least this large in the better direction (" +
         ", ".join(f"{d.display.lower()} {d.direction_text}" for d in settings.domains.values()
                   if d.name in settings.mcid) + "), on the change rounded half away from zero to 0.1"),
        ("baseline", f"the latest score from {settings.baseline_days} days before the first infusion to "
                     "that day"),
        ("windows", "; ".join(f"{w.name}: days {w.low} to {w.high} after the last infusion (target "
                              f"{w.target})" for w in settings.windows)
         + "; the score nearest the target, earlier on a tie"),
    ]
    if kind == "summary":
        lines += [
            ("analysis set", "each patient's first series" if series == "first" else
             "all series (repeat series of one patient are not independent: intervals are too narrow)"),
            ("", "Small-cell suppression (CMS cell-size rule)"),
            (marker, f"a count from 1 to {cells} (zero is shown as 0)"),
            (disclosure.HIDDEN, f"a value hidden so that a count of 1 to {cells} cannot be worked out from "
             "it (a complementary count, or a percentage, interval or mean of a hidden count); its own "
             "value may be large"),
            ("", "Tables"),
            ("responders", "one row per domain and window: n_eligible (baseline and window closed, or "
             "observed), n_observed (baseline and a score in the window), n_improved; pct_observed = "
             "improved/observed with its Wilson 95% CI (ci_low, ci_high), the primary estimate; "
             "pct_missing_as_not_improved = improved/eligible with mnni_ci_low/high, a conservative bound"),
            ("completion", "one row per domain and window: n_eligible, n_completed, pct_completed, n_not_due "
             "(window still open), and the baseline mean and SD of completers and non-completers"),
            ("table1", "baseline characteristics of the analysis set: each characteristic is a block whose "
             "rows add up to its 'All' row; percent of all episodes; age mean and SD from the birth year; "
             "baseline T mean and SD among episodes with a baseline score; diagnoses of 1 to "
             f"{cells} episodes are pooled into '{OTHER}'"),
        ]
    if kind == "dataset":
        lines.append(("", "Tables"))
        lines += [(name, TABLES.get(name, "")) for name in tables]
        lines.append(("", "Columns"))
        seen: set[str] = set()
        for df in tables.values():
            for column in df.columns:
                if column in seen:
                    continue
                seen.add(column)
                text = DEFINITIONS.get(column)
                if column == "diagnosis" and deidentified:
                    text = (f"the diagnosis code from the clinic's list ('{NOT_CODED}': none given); a "
                            f"code held by 1 to {cells} patients is pooled into '{OTHER}'. The clinician's "
                            "free-text note is never in a de-identified file")
                if text is None and column.endswith("_closed"):
                    text = (f"whether the {column.removesuffix('_closed')} window had closed by the data cut "
                            "(last infusion + the window's upper bound <= as_of)")
                lines.append((column, text or ""))
    return lines


def _as_of_text(kind: str, as_of: date, deidentified: bool, settings: Settings) -> str:
    """The README's data-cut line: the day (identified), or the year or month with the release rule."""
    if not deidentified:
        return f"{as_of:%Y-%m-%d}: data cut; scores after it and series starting after it are left out"
    label = cut_label(kind, as_of, deidentified=True)
    span = f"the end of {as_of:%Y}" if cut_unit(kind, True) == "year" else f"the end of {as_of:%B %Y}"
    return (f"{label}: data through {span}. An episode is in this file once its follow-up has closed (last "
            f"infusion + {disclosure.follow_up_days(settings.windows)} days) and a further delay of 0 to "
            f"{disclosure.RELEASE_DELAY_DAYS - 1} days, fixed per patient and kept secret, has passed by "
            f"then; it comes with all its scores from {settings.baseline_days} days before its first "
            "infusion to the close of its follow-up, whatever the cut. Recent episodes are therefore not "
            "here yet, and no date finer than this is in the file (docs/privacy.md)")


# The entry points ---------------------------------------------------------------------------------


def build(source: Source, kind: str, fmt: str, *, deidentified: bool = True, as_of: date,
          series: analysis.SeriesChoice = "first", settings: Settings, registry: Registry | None = None,
          generated_at: datetime) -> ExportFile:
    """Build one export file (pure: no database, no audit).

    Parameters
    ----------
    kind
        ``dataset`` (episodes and scores), ``summary`` (responders, completion, Table 1; always
        de-identified and suppressed) or ``fhir`` (a Bundle of Observations).
    fmt
        One of :data:`FORMATS` for the kind. CSV and Parquet datasets come as a ZIP of one file per
        table plus ``README.txt``; Excel holds a README sheet and one sheet per table.
    deidentified
        False only for the identified dataset or FHIR (the caller checks the role and reason).
    as_of, series
        Data cut, and the analysis set of the summary tables. De-identified files use the last year end
        (dataset, FHIR) or month end (summary) on or before ``as_of`` (:func:`release_cut`) and hold only
        the episodes released by then (:func:`released`).
    """
    if kind not in KINDS:
        raise ValidationError(f"Unknown export {kind!r}; choose one of {', '.join(KINDS)}")
    if fmt not in FORMATS[kind]:
        raise ValidationError(f"The {kind} export comes as {', '.join(FORMATS[kind])}, not {fmt!r}")
    if kind == "summary" and not deidentified:
        raise ValidationError("Summary tables are always de-identified; export the identified dataset "
                              "instead")
    cut = release_cut(kind, as_of, deidentified=deidentified)
    as_of = cut.date()
    level = "deidentified" if deidentified else "IDENTIFIED"
    stem = f"outcomes-{kind}-{level}-{cut_label(kind, as_of, deidentified=deidentified)}"
    notes: list[str] = []
    if kind == "fhir":
        subject = (lambda pid: pseudonym(source.secret, pid)) if deidentified else None
        series, scores = (released(source, cut, settings) if deidentified
                          else (source.series, source.assessments))
        # The resource ids' own key, derived from the secret (docs/privacy.md, "FHIR decisions": one secret
        # keyed pseudonyms, invitation codes and FHIR ids alike); ids from before this change differ.
        bundle, notes = fhir.bundle(scores, series, as_of=as_of,
                                    key=derive_key(source.secret, "fhir resource id").hex(),
                                    registry=registry or settings.registry, pseudonym=subject,
                                    generated_at=generated_at)
        data = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        tables = {"observations": fhir.preview(bundle)}
        rows = len(bundle.get("entry", []))
    else:
        if kind == "dataset":
            tables = dataset_tables(source, as_of=as_of, deidentified=deidentified, settings=settings)
        else:
            tables = summary_tables(source, as_of=as_of, series=series, settings=settings)
        readme = _readme(kind, deidentified=deidentified, as_of=as_of, series=series, settings=settings,
                         tables=tables, generated_at=generated_at)
        if fmt == "xlsx":
            data = to_xlsx(tables, readme)
        else:
            writer = to_csv_bytes if fmt == "csv" else to_parquet_bytes
            data = _zip({f"{name}.{fmt}": writer(df) for name, df in tables.items()}
                        | {"README.txt": _readme_text(readme)})
        rows = sum(len(df) for df in tables.values())
        if kind == "dataset" and deidentified:
            pooled = int((tables["episodes"]["diagnosis"] == OTHER).sum())
            if pooled:
                notes.append(f"Diagnoses shared by 1 to {settings.small_cell_max} patients are pooled "
                             f"into '{OTHER}' ({pooled} episodes).")
    if deidentified:
        through = f"{as_of:%Y}" if cut_unit(kind, True) == "year" else f"{as_of:%B %Y}"
        notes.append(f"Data through the end of {through}: only episodes whose follow-up had closed, and "
                     "whose patient's release delay (up to a year) had passed, are included; recent episodes "
                     "come in a later file.")
    return ExportFile(kind, fmt, deidentified, f"{stem}.{SUFFIX[fmt]}", MIME[fmt], data, rows,
                      MappingProxyType(dict(tables)), tuple(notes))


def check_reason(reason: Any) -> str:
    """The reason for an identified export, stripped; raises when missing or too long."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise ValidationError("An identified export needs a reason (for example 'registry submission, "
                              "data use agreement 2025-07'); it is kept in the audit log")
    if len(text) > MAX_REASON:
        raise ValidationError(f"The reason is {len(text)} characters long; keep it to {MAX_REASON}")
    return text


def export(db: Any, actor: auth.User | str, kind: str, fmt: str, *, deidentified: bool = True, as_of: date,
           series: analysis.SeriesChoice = "first", reason: str | None = None, settings: Settings,
           registry: Registry | None = None, now: datetime, max_bytes: int | None = None) -> ExportFile:
    """Check, build and audit one export: the function behind the exports page and the CLI.

    Parameters
    ----------
    actor
        The signed-in user (de-identified: clinician, QI or admin; identified: clinician or admin),
        or, for ``python -m outcomes export``, the operator's name: whoever can open the database
        file can read all of it, so the command line is audited but not role-checked.
    reason
        Required for an identified export; recorded in the audit entry.
    max_bytes
        The largest file the caller can hand over (the web page: what one message to the browser carries);
        a larger one is refused before it is audited.

    Raises
    ------
    PermissionDenied, ValidationError
    """
    roles = ROLES_DEIDENTIFIED if deidentified else ROLES_IDENTIFIED
    if isinstance(actor, auth.User):  # refuse before reading anything; record_export checks again
        auth.require_role(db, actor, *roles, action="export")
    reason = None if deidentified else check_reason(reason)
    cut = (release_cut(kind, as_of, deidentified=deidentified) if kind in KINDS
           else _required_day(as_of, "as_of"))
    if deidentified and cut.date() > now.date():  # a future cut would release episodes before their time
        raise ValidationError(f"The data cut {cut:%Y-%m-%d} is in the future; choose a "
                              f"{cut_unit(kind, True)} that has ended")
    file = build(load_source(db), kind, fmt, deidentified=deidentified, as_of=as_of, series=series,
                 settings=settings, registry=registry, generated_at=now)
    if max_bytes is not None and len(file.data) > max_bytes:
        raise ValidationError(f"The file is {len(file.data) / 1e6:,.1f} MB, more than this page can hand to the "
                              f"browser ({max_bytes / 1e6:,.0f} MB). Choose another format (Parquet is the "
                              "smallest), or ask IT to run `python -m outcomes export` on the server.")
    filters = {"as_of": f"{cut:%Y-%m-%d}"}
    if kind == "summary":
        filters["series"] = series
    what = f"{kind} ({'de-identified' if deidentified else 'identified'})"
    record = clinic.record_export if isinstance(actor, auth.User) else clinic.record_operator_export
    record(db, actor, what=what, rows=file.rows, deidentified=deidentified, fmt=fmt, filters=filters,
           reason=reason)
    return file
