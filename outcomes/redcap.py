"""Import a REDCap CSV export through a column mapping the user confirms.

A REDCap export has one row per record and event (``record_id``, ``redcap_event_name``...), and the
PROMIS questionnaires as item-level answers (a field per item, often named after the item ID, e.g.
``painin9``, coded 1–5, or the answer labels in a "labels" export) or as T-scores (``..._tscore``,
``..._stderror``). :func:`detect` proposes a :class:`ColumnMapping`; the page shows it for confirmation;
:func:`preview` scores the items with :mod:`outcomes.scoring` and checks every row (a dry run of
:func:`outcomes.storage.import_records`); :func:`commit` writes all rows or none, runs the clinic's alert
rules on each patient's new latest score per domain in the same transaction, and audits it.

Every score needs a date. A REDCap event name ("month_3_arm_1") is a plan, not a date, so it is never
turned into one: map a date field (visit date, or a survey timestamp such as
``promis_pain_interference_timestamp``). Rows without any mapped answer (a demographics event) are
skipped; a questionnaire with fewer than half its items answered cannot be scored and is skipped
with a note, not imported as a wrong score.

Example
-------
>>> from outcomes.instruments import shipped_registry
>>> frame = read(b"record_id,redcap_event_name,visit_date,eddep04,eddep06,eddep29,eddep41\\n"
...              b"P001,baseline_arm_1,2025-01-06,2,3,2,2\\n")
>>> m = detect(frame, shipped_registry())
>>> m.record_id, m.event, m.date, [f.form for f in m.forms]
('record_id', 'redcap_event_name', 'visit_date', ['depression_sf4a_v1.0'])
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

import pandas as pd

from . import auth, storage
from .errors import ImportRejected, InvalidResponse, ValidationError
from .importing import ImportResult, Source, import_with_alerts, read_table
from .instruments import Form, Registry
from .scoring import score_response
from .settings import Settings, load_settings
from .storage import ImportSummary

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")
_SCORE_SUFFIX = re.compile(r"(t_?score|std_?err(or)?|_se|qposition|_complete|timestamp)$", re.I)
_T_COLUMN = re.compile(r"t_?score$", re.I)
REDCAP_COLUMNS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance",
                  "redcap_data_access_group", "redcap_survey_identifier")


@dataclass(frozen=True)
class FormMapping:
    """Item-level answers of one short form: ``columns`` maps item IDs to the file's columns."""

    form: str
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class TScoreMapping:
    """A T-score field (and optionally its SE field and the form it came from) of one domain."""

    domain: str
    t_column: str
    se_column: str | None = None
    form: str | None = None


@dataclass(frozen=True)
class ColumnMapping:
    """How the columns of a REDCap export become scores; one source per domain."""

    record_id: str
    date: str | None
    event: str | None = None
    forms: tuple[FormMapping, ...] = ()
    t_scores: tuple[TScoreMapping, ...] = ()
    add_patients: bool = False

    def problems(self, columns: Sequence[str], registry: Registry) -> list[str]:
        """Everything wrong with this mapping for a file with ``columns`` (empty when usable)."""
        out = []
        known = set(columns)
        for role, column in (("record ID", self.record_id), ("date", self.date), ("event", self.event)):
            if column is not None and column not in known:
                out.append(f"The {role} column {column!r} is not in the file")
        if self.date is None:
            out.append("Choose the column that dates each row (a visit date or a survey timestamp): "
                       "REDCap event names are not dates")
        domains: list[str] = []
        for fm in self.forms:
            try:
                form = registry.form(fm.form)
            except KeyError:
                out.append(f"Unknown form {fm.form!r}")
                continue
            domains.append(form.domain)
            mapped = {i: c for i, c in fm.columns.items() if c}
            out += [f"{form.title}: item {i} is mapped to {c!r}, which is not in the file"
                    for i, c in mapped.items() if c not in known]
            out += [f"{form.title}: {i} is not an item of this form" for i in mapped
                    if i not in form.item_ids]
            if len(mapped) * 2 < form.n_items:
                out.append(f"{form.title}: only {len(mapped)} of its {form.n_items} items are mapped; at "
                           "least half are needed to score it")
        for ts in self.t_scores:
            domains.append(ts.domain)
            if ts.domain not in registry.domains:
                out.append(f"Unknown domain {ts.domain!r}")
            out += [f"The {ts.domain} T-score column {c!r} is not in the file"
                    for c in (ts.t_column, ts.se_column) if c is not None and c not in known]
        out += [f"{d} is mapped twice; choose one source per domain" for d in sorted(set(domains))
                if domains.count(d) > 1]
        if not domains:
            out.append("Nothing to import: map at least one questionnaire or T-score")
        return out


#: The largest export :func:`read` takes: the same 10 MB as the web server's upload limit
#: (``server.maxUploadSize``), and rows enough for 5 years of weekly questionnaires of 200 patients.
MAX_BYTES = 10_000_000
MAX_ROWS = 50_000


def read(source: Source) -> pd.DataFrame:
    """The export's rows as text with a ``line`` column.

    Raises
    ------
    ImportRejected
        The file cannot be read (encoding, separators, stray commas) or is larger than :data:`MAX_BYTES` or
        :data:`MAX_ROWS`, every problem listed.
    """
    frame, problems = read_table(source, "redcap.csv", what="the REDCap", max_bytes=MAX_BYTES, max_rows=MAX_ROWS)
    if frame is None:
        raise ImportRejected("Nothing was imported: the file cannot be read. Export it again from REDCap "
                             "as CSV (raw data or labels).", problems)
    return frame


def _item_column(item_id: str, columns: Sequence[str]) -> str | None:
    """The column named after the item (``painin9``, ``promis_painin9_x``), not a score field."""
    pattern = re.compile(rf"(^|[^a-z0-9]){re.escape(item_id.lower())}(?![0-9])")
    hits = [c for c in columns if pattern.search(c.lower()) and not _SCORE_SUFFIX.search(c)]
    return hits[0] if len(hits) == 1 else None


def _domain_of(column: str, registry: Registry) -> str | None:
    """The one domain whose REDCap field aliases (forms.toml ``redcap_fields``) match ``column``."""
    found = [d.name for d in registry.domains.values() if d.redcap and d.redcap.search(column)]
    return found[0] if len(found) == 1 else None


def _looks_like_dates(values: pd.Series) -> float:
    cells = values[values != ""]
    return float(cells.str.fullmatch(_DATE).mean()) if len(cells) else 0.0


def detect(frame: pd.DataFrame, registry: Registry) -> ColumnMapping:
    """A proposed mapping: record ID (``record_id`` or the first column, as REDCap writes it), the event
    column, the most date-like column, and per domain the short form whose items are best covered by
    columns named after them, else a ``..._tscore`` column."""
    columns = [c for c in frame.columns if c != "line"]
    lower = {c.lower(): c for c in columns}
    record_id = lower.get("record_id", columns[0] if columns else "")
    event = lower.get("redcap_event_name")
    candidates = [c for c in columns if c not in (record_id, event)]
    # A column named like a date needs a majority of dates (a few typos are reported row by row);
    # any other column nearly all dates.
    named = {c for c in candidates if re.search(r"date|timestamp|assessed", c, re.I)}
    scored = sorted(((_looks_like_dates(frame[c]), c in named, c) for c in candidates), reverse=True,
                    key=lambda t: (t[1], t[0]))
    date_column = next((c for share, is_named, c in scored if share >= (0.5 if is_named else 0.8)), None)

    forms: list[FormMapping] = []
    for domain in registry.domains:
        best: tuple[Any, ...] | None = None
        for form in registry.forms_for_domain(domain):
            hits = {i: _item_column(i, candidates) for i in form.item_ids}
            hits = {i: c for i, c in hits.items() if c}
            rank = (len(hits) == form.n_items, len(hits), form.n_items)
            if len(hits) * 2 >= form.n_items and (best is None or rank > best[0]):
                best = (rank, form, hits)
        if best:
            forms.append(FormMapping(best[1].key, MappingProxyType(best[2])))
    covered = {registry.form(f.form).domain for f in forms}
    t_scores = []
    for column in candidates:
        domain = _domain_of(column, registry) if _T_COLUMN.search(column) else None
        if domain and domain not in covered and not any(_item_column(i, [column]) for f in registry.forms
                                                        for i in f.item_ids):
            stem = _T_COLUMN.sub("", column)
            se = next((c for c in candidates if c != column and c.lower().startswith(stem.lower())
                       and re.search(r"(std_?err(or)?|_se)$", c, re.I)), None)
            t_scores.append(TScoreMapping(domain, column, se, _form_in_name(column, domain, registry)))
            covered.add(domain)
    return ColumnMapping(record_id, date_column, event, tuple(forms), tuple(t_scores))


def _form_in_name(column: str, domain: str, registry: Registry) -> str | None:
    """The form a T-score field's name gives away (``pi_sf6a_tscore``), when exactly one matches."""
    found = re.findall(r"(\d{1,2}[ab])(?![a-z])", column.lower())
    forms = [f.key for f in registry.forms_for_domain(domain) if f.short_form in found]
    return forms[0] if len(forms) == 1 else None


def _answer(form: Form, item_id: str, text: str) -> int | None:
    """A cell as an item value: a whole number, or an answer label of a "labels" export."""
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        item = next(i for i in form.items if i.item_id == item_id)
        labels = {label.casefold(): value for value, label in item.options}
        if text.casefold() in labels:
            return labels[text.casefold()]
        options = ", ".join(f"{v} {label}" for v, label in item.options)
        raise InvalidResponse(f"{item_id}: {text!r} is neither a number nor an answer of this item "
                              f"({options})") from None
    if not (math.isfinite(number) and number.is_integer()):
        raise InvalidResponse(f"{item_id}: {text!r} is not a whole number")
    return int(number)


@dataclass(frozen=True)
class Plan:
    """What the file would import: rows for ``storage.import_records`` and what the user must see."""

    patients: pd.DataFrame | None
    scores: pd.DataFrame
    errors: tuple[str, ...]
    skipped: tuple[str, ...]


_SCORE_COLUMNS = ["line", "patient_id", "event", "assessed_on", "domain", "form", "t_score", "se", "method",
                  "raw_score", "n_answered", "responses"]


def plan(frame: pd.DataFrame, mapping: Mapping, registry: Registry) -> Plan:
    """Score the mapped questionnaires row by row; collect every row's problem (nothing is written)."""
    problems = mapping.problems([c for c in frame.columns if c != "line"], registry)
    if problems:
        raise ValidationError("The mapping cannot be used yet:", problems)
    name = frame.attrs.get("source", "redcap.csv")
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    skipped: list[str] = []
    forms = [(registry.form(f.form), {i: c for i, c in f.columns.items() if c}) for f in mapping.forms]
    for record in frame.to_dict("records"):
        where = f"{name} line {record['line']}"
        if mapping.event and record.get(mapping.event):
            where += f" ({record[mapping.event]})"
        found: list[dict[str, Any]] = []
        for form, columns in forms:
            texts = {i: record[c] for i, c in columns.items()}
            if not any(texts.values()):
                continue  # this questionnaire was not given at this event
            try:
                answers = {i: _answer(form, i, t) for i, t in texts.items()}
                result = score_response(form, answers)
            except InvalidResponse as exc:
                errors.append(f"{where}: {form.title}: {str(exc).removeprefix(form.key + ': ')}")
                continue
            if result.t_score is None:
                skipped.append(f"{where}: {form.title} not scored: {result.n_answered} of {form.n_items} "
                               "items answered (at least half are needed)")
                continue
            found.append({"domain": form.domain, "form": form.key, "t_score": result.t_score, "se": result.se,
                          "method": result.method, "raw_score": result.raw_score,
                          "n_answered": result.n_answered, "responses": answers})
        for ts in mapping.t_scores:
            if record[ts.t_column]:
                found.append({"domain": ts.domain, "form": ts.form, "t_score": record[ts.t_column],
                              "se": record[ts.se_column] if ts.se_column else None})
        if not found:
            continue
        match = _DATE.fullmatch(str(record[mapping.date])) if mapping.date else None
        if not match:
            value = record[mapping.date] if mapping.date else ""
            errors.append(f"{where}: the date {value!r} is not a date written YYYY-MM-DD (a time after it "
                          "is ignored)" if value else f"{where}: no date in column {mapping.date!r}; every "
                          "score needs the day it was answered")
            continue
        patient = record[mapping.record_id]
        rows += [{"line": record["line"], "patient_id": patient, "assessed_on": match.group(1),
                  "event": record.get(mapping.event, "") if mapping.event else "", **s} for s in found]
    scores = pd.DataFrame(rows, columns=_SCORE_COLUMNS)
    scores.attrs["source"] = name
    patients = None
    if mapping.add_patients and len(scores):
        patients = scores.drop_duplicates("patient_id")[["patient_id", "line"]].reset_index(drop=True)
        patients.attrs["source"] = name
    return Plan(patients, scores, tuple(errors), tuple(skipped))


@dataclass(frozen=True)
class Preview:
    """The checked plan: ``summary`` is the dry run's count when there is no error."""

    plan: Plan
    errors: tuple[str, ...]
    summary: ImportResult | None

    @property
    def ok(self) -> bool:
        return not self.errors and self.summary is not None and self.summary.added > 0


def _import(db: Any, p: Plan, *, entered_by: str, registry: Registry, today: date | None,
            dry_run: bool) -> ImportSummary:
    return storage.import_records(db, p.patients, None, p.scores.drop(columns=["event"]),
                                  entered_by=entered_by, known_forms={f.key for f in registry.forms},
                                  today=today, dry_run=dry_run)


def preview(db: Any, frame: pd.DataFrame, mapping: Mapping, *, registry: Registry,
            today: date | None = None) -> Preview:
    """Plan and dry-run the import: every problem of the mapping, the rows and the database, listed."""
    p = plan(frame, mapping, registry)
    if p.errors or p.scores.empty:
        return Preview(p, p.errors, None)
    try:
        summary = _import(db, p, entered_by="preview", registry=registry, today=today, dry_run=True)
    except ImportRejected as exc:
        return Preview(p, tuple(exc.problems), None)
    return Preview(p, (), ImportResult(**dataclasses.asdict(summary)))  # its text names the alert rule


def commit(db: Any, actor: auth.User, frame: pd.DataFrame, mapping: Mapping, *, registry: Registry,
           today: date | None = None, now: datetime | None = None,
           settings: Settings | None = None) -> ImportResult:
    """Import every planned score or none (clinician or admin), with one ``import_redcap`` audit entry.

    In the same transaction the alert rules run on each patient's latest score per domain that the file
    added (:func:`outcomes.importing.import_with_alerts`), at ``now`` (default: the clock) with the
    thresholds of ``settings`` (default: :func:`outcomes.settings.load_settings`); the result counts them.

    Raises
    ------
    PermissionDenied, ValidationError, ImportRejected
        Nothing is written.
    """
    user = auth.require_role(db, actor, "clinician", "admin", action="import_redcap")
    p = plan(frame, mapping, registry)
    if p.errors:
        raise ImportRejected(f"Nothing was imported: {len(p.errors)} row(s) cannot be read. Fix them in "
                             "REDCap or in the file and upload it again.", list(p.errors))
    settings = load_settings() if settings is None else settings
    now = datetime.now(UTC) if now is None else now

    def write() -> ImportSummary:
        return _import(db, p, entered_by=user.username, registry=registry, today=today, dry_run=False)

    with storage.transaction(db):
        summary = import_with_alerts(db, write, p.scores["patient_id"], now=now, settings=settings)
        storage.append_audit(db, actor=user.username, action="import_redcap", details={
            "file": str(frame.attrs.get("source", "")), "rows": len(frame),
            "scores_added": summary.scores_added, "scores_present": summary.scores_present,
            "patients_added": summary.patients_added, "skipped": len(p.skipped),
            "alerts": summary.alerts_raised})
    return summary
