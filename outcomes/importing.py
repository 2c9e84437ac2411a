"""Reading historical CSV files for import: encoding, header and row structure.

Field rules (dates, ranges, codes) are the ones the app's own entry uses
(:func:`outcomes.storage.clean_patient` and friends); :func:`outcomes.storage.import_records` applies
them, checks references and duplicates against the database, and writes all rows or none. The imported
scores go through the clinic's alert rules in the same transaction (:func:`import_with_alerts`), for each
patient's latest score per domain only, so a history import does not flood the alert list.

Files (UTF-8, comma-separated, a header line; surrounding spaces and a BOM are ignored, header names
are case-insensitive, extra columns are ignored):

- ``patients.csv``: ``patient_id`` and optionally ``diagnosis, sex, birth_year, enrolled_on`` and the
  contact for reminders ``email, phone, channel`` (``email``, ``sms`` or ``none``; a channel other than
  ``none`` records the patient's consent as ``imported``, by the importing user, on the import day)
- ``series.csv``: ``patient_id, first_infusion, last_infusion, infusions`` and optionally
  ``protocol, dose_mg_per_kg, notes``; a first infusion ahead of today makes a planned series (at most
  ``storage.PLAN_AHEAD_DAYS`` ahead), whose infusions are logged day by day; a series under way (first
  infusion given, last ahead) is refused
- ``scores.csv``: ``patient_id, assessed_on, domain, t_score`` and optionally ``se, form``

Line numbers in messages are the ones a spreadsheet shows: the header is line 1.

Example
-------
>>> import io
>>> batch = read_import_files(patients=io.BytesIO(b"patient_id,sex\\nP001,F\\n"))
>>> batch.patients[["patient_id", "sex", "line"]].values.tolist()
[['P001', 'F', 2]]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from . import clinic, storage
from .errors import ImportRejected
from .settings import Settings, load_settings
from .storage import ImportSummary

__all__ = ["ALERT_SCOPE", "COLUMNS", "ImportBatch", "ImportResult", "ImportSummary", "import_files",
           "import_with_alerts", "read_csv", "read_import_files", "read_table"]

#: Required and optional columns of each file.
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "patients": (("patient_id",), ("diagnosis", "sex", "birth_year", "enrolled_on", "email", "phone", "channel")),
    "series": (("patient_id", "first_infusion", "last_infusion", "infusions"),
               ("protocol", "dose_mg_per_kg", "notes")),
    "scores": (("patient_id", "assessed_on", "domain", "t_score"), ("se", "form")),
}

Source = str | os.PathLike[str] | bytes | IO[bytes]

#: Widest file read: REDCap exports of a few instruments have tens to a few thousand columns.
MAX_COLUMNS = 10_000


@dataclass(frozen=True)
class ImportBatch:
    """The parsed files: text cells (stripped), a ``line`` column, and ``attrs["source"]`` = file name."""

    patients: pd.DataFrame | None = None
    series: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None


#: Which imported scores the alert rules see; the import summary says so.
ALERT_SCOPE = "only each patient's latest score per domain is checked against the alert rules"


@dataclass(frozen=True)
class ImportResult(ImportSummary):
    """An :class:`ImportSummary` with the number of alerts the imported scores raised (none on a dry run)."""

    alerts_raised: int = 0

    def describe(self) -> str:
        """The summary line, then the alerts, e.g. "... 1 alert raised for clinician review (only ...)"."""
        text = super().describe()
        if not self.scores_added:
            return text
        if self.dry_run:
            return f"{text} On import, {ALERT_SCOPE}."
        n = self.alerts_raised
        raised = f"{n} alert{'' if n == 1 else 's'} raised for clinician review" if n else "No alert raised"
        return f"{text} {raised} ({ALERT_SCOPE})."

    __str__ = describe


#: Up to this many patients in an import, their latest scores are read patient by patient (about 10 ms
#: each, whatever the size of the database); above it, every patient's at once, in two queries whose time
#: grows with the database (0.4 s at 1,000 patients, about 50 s at 100,000), while the write lock is held.
PATIENT_BY_PATIENT_MAX = 200
_KEY = ["patient_id", "domain", "assessed_on", "t_score"]


def _latest_scores(db: Any, patients: list[str] | None, *, ids: bool) -> pd.DataFrame:
    """Each patient's latest active score per domain (every patient's when ``patients`` is None), with its
    ``assessment_id`` when ``ids``."""
    if patients is None:
        return storage.load_alert_candidates(db, None) if ids else storage.load_latest_scores(db)
    if ids:  # sorted by patient, domain and date: the last row of each domain is the latest
        frames = [storage.load_assessments(db, patient_id=p).groupby("domain").tail(1) for p in patients]
    else:
        frames = [storage.load_latest_scores(db, patient_id=p) for p in patients]
    return pd.concat(frames, ignore_index=True)


def import_with_alerts(db: Any, write: Callable[[], ImportSummary], patients: Collection[Any], *,
                       now: datetime, settings: Settings) -> ImportResult:
    """Run ``write`` (a :func:`outcomes.storage.import_records` call), then the alert rules on the scores it
    made a patient's latest in their domain. Call it inside the caller's ``storage.transaction(db)``, so
    the scores and their alerts are stored together or not at all.

    A patient's latest score in a domain is new when its date or T differs from the latest before the
    import: a score already present is not stored again, and one that replaces a stored score of the same
    day has another T. So a history import alerts at most once per patient and domain, and re-importing a
    file (or any of its rows) raises nothing again.

    Parameters
    ----------
    patients
        The ``patient_id`` cells of the score rows: only these patients' scores are read, when there are
        at most :data:`PATIENT_BY_PATIENT_MAX` of them.
    """
    named = sorted({p.strip() for p in patients if isinstance(p, str) and p.strip()})
    if not named:  # no score rows: nothing to check
        return ImportResult(**dataclasses.asdict(write()))
    scope = named if len(named) <= PATIENT_BY_PATIENT_MAX else None
    before = _latest_scores(db, scope, ids=False)[_KEY]
    summary = write()
    alerts = 0
    if summary.scores_added and not summary.dry_run:
        latest = _latest_scores(db, scope, ids=True)
        changed = latest[_KEY].merge(before, how="left", on=_KEY, indicator=True)["_merge"].eq("left_only")
        new = latest.loc[changed.to_numpy(), "assessment_id"].tolist()
        if new:
            alerts = clinic.raise_score_alerts(db, new, now=now, settings=settings, latest_only=True)
    return ImportResult(**dataclasses.asdict(summary), alerts_raised=alerts)


def _load(source: Source, default_name: str) -> tuple[bytes, str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.read_bytes(), path.name
    if isinstance(source, bytes):
        return source, default_name
    name = getattr(source, "name", None)  # a Streamlit UploadedFile or an open file
    return source.read(), Path(name).name if isinstance(name, str) and name else default_name


def read_table(source: Source, default_name: str = "upload.csv", *, what: str = "the",
               max_bytes: int | None = None, max_rows: int | None = None) -> tuple[pd.DataFrame | None, list[str]]:
    """Parse any CSV export: UTF-8 text cells (stripped), the header as written, and a ``line`` column.

    ``max_bytes`` and ``max_rows`` refuse a larger file before it is parsed (the web's upload door: a
    42 MB file tied up a server for two minutes and 1.8 GB; docs/reliability.md, "Hostile and bad input").

    Returns
    -------
    (frame, problems)
        ``frame.attrs["source"]`` is the file name; ``None`` and the file-level problems (not UTF-8,
        ';' separators, doubled or stray columns) when the file cannot be read.
    """
    try:
        data, name = _load(source, default_name)
    except OSError as exc:
        return None, [f"Cannot read {what} file: {exc.strerror or exc}"]
    if max_bytes is not None and len(data) > max_bytes:
        return None, [f"{name} is {len(data) / 1e6:.1f} MB; at most {max_bytes / 1e6:g} MB can be imported at "
                      "once. Export fewer records (for example one year at a time) or only the columns needed, "
                      "and import the parts one after the other"]
    if max_rows is not None and data.count(b"\n") > max_rows + 1:  # a cheap upper bound before parsing
        rows = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8-sig", "replace"), newline=""))) - 1
        if rows > max_rows:
            return None, [f"{name} has {rows:,} rows; at most {max_rows:,} can be imported at once. Export "
                          "fewer records (for example one year at a time) and import the parts one after the "
                          "other"]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, [f"{name} is saved as UTF-16; save it again as 'CSV UTF-8 (comma delimited)'"]
    try:
        text = data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [(f"{name} is not UTF-8 text (first bad byte on line {line}); save it again as "
                       "'CSV UTF-8 (comma delimited)' and import it again")]
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return None, [f"{name} cannot be read as CSV: {exc}"]
    if not records or not any(cell.strip() for cell in records[0]):
        return None, [f"{name} is empty; its first line must name the columns"]
    # "line" holds the line numbers; a column of that name in the file is kept under another name.
    header = [f"{h} (column)" if h.lower() == "line" else h for h in (cell.strip() for cell in records[0])]
    if len(header) == 1 and ";" in header[0]:
        return None, [f"{name} uses ';' between values; save it as comma-separated CSV"]
    if len(header) > MAX_COLUMNS:  # a hostile or runaway file would tie up the import for minutes
        return None, [f"{name} has {len(header):,} columns; at most {MAX_COLUMNS:,} can be read. Export "
                      "only the columns needed (the IDs, dates and questionnaires)"]
    counts = Counter(h.lower() for h in header)  # not list.count per column: 200,000 columns took minutes
    problems = [f"{name}: column {h} appears more than once" for h in sorted(h for h, n in counts.items()
                                                                             if h and n > 1)]
    if problems:
        return None, problems
    rows: list[list[str]] = []
    lines: list[int] = []
    for number, record in enumerate(records[1:], start=2):
        cells = [cell.strip() for cell in record]
        if not any(cells):
            continue  # a blank line still counts, so later line numbers match the spreadsheet
        if any(cells[len(header):]):
            problems.append(f"{name} line {number}: {len(cells)} values but the header names {len(header)} "
                            "columns; check for a stray comma (quote text that contains commas)")
            continue
        cells += [""] * (len(header) - len(cells))
        rows.append(cells[:len(header)])
        lines.append(number)
    if problems:
        return None, problems
    # One 2-D block, then the line numbers: per-column construction took minutes for a 200,000-column file.
    cells = np.array(rows, dtype=object).reshape(len(rows), len(header))
    frame = pd.DataFrame(cells, columns=pd.Index(header, dtype=object))
    frame["line"] = np.array(lines, dtype=np.int64)
    frame.attrs["source"] = name
    return frame, []


def read_csv(source: Source, kind: str) -> tuple[pd.DataFrame | None, list[str]]:
    """Parse one file of ``kind`` (``patients``, ``series`` or ``scores``).

    Returns
    -------
    (frame, problems)
        The rows as text with a ``line`` column, or ``None`` and the file-level problems (not UTF-8,
        missing columns, unreadable quoting) that stop it from being read.
    """
    required, optional = COLUMNS[kind]
    frame, problems = read_table(source, f"{kind}.csv", what=f"the {kind}")
    if frame is None:
        empty = [p for p in problems if p.endswith("its first line must name the columns")]
        return None, [p + ": " + ", ".join(required) for p in empty] + [p for p in problems if p not in empty]
    name = frame.attrs["source"]
    frame.columns = [c if c == "line" else c.lower() for c in frame.columns[:-1]] + ["line"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        return None, [f"{name} is missing the required column{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(missing)}; its first line must name the columns "
                      f"{', '.join(required)} (optional: {', '.join(optional)})"]
    wanted = [c for c in required + optional if c in frame.columns]
    frame = frame[[*wanted, "line"]].copy()
    frame.attrs["source"] = name
    return frame, []


def read_import_files(patients: Source | None = None, series: Source | None = None,
                      scores: Source | None = None) -> ImportBatch:
    """Parse the given files; each may be a path, bytes or a binary file object.

    Raises
    ------
    ImportRejected
        Listing the file-level problems of every file (rows are checked by :func:`import_files`).
    """
    frames: dict[str, pd.DataFrame | None] = {}
    problems: list[str] = []
    for kind, source in (("patients", patients), ("series", series), ("scores", scores)):
        if source is not None:
            frames[kind], errs = read_csv(source, kind)
            problems += errs
    if problems:
        raise ImportRejected("Nothing was imported: the files cannot be read. Fix them and import again.",
                             problems)
    return ImportBatch(**frames)


def import_files(db: Any, patients: Source | None = None, series: Source | None = None,
                 scores: Source | None = None, *, entered_by: str = "import",
                 known_forms: Collection[str] | None = None, today: date | None = None,
                 dry_run: bool = False, now: datetime | None = None,
                 settings: Settings | None = None) -> ImportResult:
    """Read and import the files in one all-or-nothing transaction, with the alerts the scores raise.

    Parameters
    ----------
    db
        An open, migrated ``sqlite_utils.Database`` (see :func:`outcomes.storage.connect`).
    patients, series, scores
        Paths, bytes or binary file objects; any may be omitted.
    known_forms
        Form keys a ``form`` cell may name; without it only the key's shape and domain are checked.
    dry_run
        Check everything and count what would be added, without writing (and without alerts).
    now, settings
        When the alerts are raised (default: the clock) and the settings whose thresholds they use, and
        whose ``phone_region`` reads numbers without a country code (default:
        :func:`outcomes.settings.load_settings`).

    Returns
    -------
    ImportResult
        ``result.describe()`` reads e.g. "0 added, 12 already present (...)" on a re-import, and says how
        many alerts were raised when scores were added (see :func:`import_with_alerts`).

    Raises
    ------
    ImportRejected
        With every problem, by file and line; nothing is written.
    """
    batch = read_import_files(patients, series, scores)
    settings = load_settings() if settings is None else settings

    def write() -> ImportSummary:
        return storage.import_records(db, batch.patients, batch.series, batch.scores, entered_by=entered_by,
                                      known_forms=known_forms, today=today, dry_run=dry_run,
                                      region=settings.phone_region)

    if dry_run:
        return ImportResult(**dataclasses.asdict(write()))
    scored = [] if batch.scores is None else batch.scores["patient_id"]
    # No data_version bump of its own: a re-import that adds nothing changes nothing (the import and the
    # alerts bump it when they write).
    with storage.transaction(db, bump=False):
        return import_with_alerts(db, write, scored, now=datetime.now(UTC) if now is None else now,
                                  settings=settings)
