"""Diagnosis codes (docs/privacy.md, "Diagnosis codes and filters").

The diagnosis a cohort is filtered and pooled by is a code from a list the clinic maintains
(``diagnosis_codes``: add, rename, retire; app_pages/diagnoses.py). The patient's free-text ``diagnosis``
stays as the clinician's note: identified output only, never a filter or a de-identified value. A
patient may be "not coded" (NULL). A new patient whose note reads exactly an active code's label
(ignoring case and outer spaces) gets that code on insert, so imports and the demo are coded without
copying free text anywhere; anything else stays uncoded until a clinician or administrator codes it.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from typing import Any

import numpy as np
import pandas as pd
from sqlite_utils import Database

from ..errors import NotFound, ValidationError
from ..validation import _raise_if, _reason, _who
from .connection import _write
from .corrections import _log_change, _record_row
from .reads import _frame
from .rows import _insert, _now
from .schema import DIAGNOSIS_LABEL_MAX


def _clean_label(problems: list[str], label: Any) -> str:
    if not isinstance(label, str) or not label.strip():
        problems.append("label is required: type the diagnosis as it should appear in reports, for example "
                        "'Fibromyalgia'")
        return ""
    text = " ".join(label.split())
    if len(text) > DIAGNOSIS_LABEL_MAX:
        problems.append(f"label is {len(text)} characters long; shorten it to at most {DIAGNOSIS_LABEL_MAX}")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        problems.append("label contains a control or invisible character; retype it")
    return text


def _label_taken(conn: sqlite3.Connection, label: str, code: int | None = None) -> str | None:
    row = conn.execute("SELECT id FROM diagnosis_codes WHERE label = ? COLLATE NOCASE AND id IS NOT ?",
                       [label, code]).fetchone()
    return None if row is None else (f"a diagnosis code labelled {label!r} already exists (code {row[0]}); "
                                     "use it, or choose another label")


def _code_row(conn: sqlite3.Connection, code: Any) -> tuple[int, str, str | None]:
    if isinstance(code, bool) or not isinstance(code, (int, np.integer)):
        raise ValidationError(f"A diagnosis code is a number from the clinic's list, got {code!r}")
    row = conn.execute("SELECT id, label, retired_at FROM diagnosis_codes WHERE id = ?", [int(code)]).fetchone()
    if row is None:
        raise NotFound(f"No diagnosis code {code!r}; reload the list of diagnosis codes")
    return int(row[0]), str(row[1]), row[2]


def load_diagnosis_codes(db: Database, *, retired: bool = True) -> pd.DataFrame:
    """The clinic's diagnosis codes: ``code, label, retired_at, created_at, created_by, patients`` (how many
    patients hold it), by label; ``retired=False`` leaves retired codes out (what a form offers)."""
    where = "" if retired else " WHERE c.retired_at IS NULL"
    return _frame(db, "SELECT c.id AS code, c.label, c.retired_at, c.created_at, c.created_by, "
                      "(SELECT count(*) FROM patients p WHERE p.diagnosis_code = c.id) AS patients "
                      f"FROM diagnosis_codes c{where} ORDER BY c.label COLLATE NOCASE",
                  ints=["code", "patients"], stamps=["retired_at", "created_at"])


def add_diagnosis_code(db: Database, label: str, *, by: str) -> int:
    """Add a code to the clinic's list; returns its number. Raises ValidationError (empty, too long, taken)."""
    problems: list[str] = []
    who, text = _who(problems, by, "by"), _clean_label(problems, label)
    _raise_if(problems, "Cannot add the diagnosis code")
    with _write(db) as conn:
        _raise_if([p for p in [_label_taken(conn, text)] if p], "Cannot add the diagnosis code")
        return _insert(conn, "diagnosis_codes", {"label": text, "created_at": _now(), "created_by": who})


def rename_diagnosis_code(db: Database, code: int, label: str, *, by: str) -> str:
    """Change a code's label (every patient holding it follows); returns the old label."""
    problems: list[str] = []
    _who(problems, by, "by")
    text = _clean_label(problems, label)
    _raise_if(problems, "Cannot rename the diagnosis code")
    with _write(db) as conn:
        number, old, _ = _code_row(conn, code)
        if old == text:
            _raise_if([f"the label is already {text!r}; type the new label"], "Cannot rename the diagnosis code")
        _raise_if([p for p in [_label_taken(conn, text, number)] if p], "Cannot rename the diagnosis code")
        conn.execute("UPDATE diagnosis_codes SET label = ? WHERE id = ?", [text, number])
        return old


def retire_diagnosis_code(db: Database, code: int, *, by: str, retired: bool = True) -> str:
    """Retire a code (no longer offered for new patients; patients holding it keep it) or, with
    ``retired=False``, offer it again; returns its label."""
    problems: list[str] = []
    _who(problems, by, "by")
    _raise_if(problems, "Cannot change the diagnosis code")
    with _write(db) as conn:
        number, label, was = _code_row(conn, code)
        if bool(was) == retired:
            _raise_if([f"{label!r} is already {'retired' if retired else 'offered'}"],
                      "Cannot change the diagnosis code")
        conn.execute("UPDATE diagnosis_codes SET retired_at = ? WHERE id = ?", [_now() if retired else None, number])
        return label


def set_diagnosis_code(db: Database, patient_id: str, code: int | None, *, reason: str | None, by: str) -> str | None:
    """Give a patient a diagnosis code (None: not coded); returns the code's label.

    With a ``reason`` the change goes into the record's trail (a correction: before and after as labels);
    without one it is part of the enrolment that calls it (``clinic.enrol_patient``, in the same
    transaction as the new patient: the code chosen on the form replaces one matched from the note). A
    retired code cannot be given.
    """
    problems: list[str] = []
    who = _who(problems, by, "by")
    why = _reason(problems, reason) if reason is not None else None
    what = "Cannot set the diagnosis code"
    _raise_if(problems, what)
    with _write(db) as conn:
        row = _record_row(conn, "patient", patient_id)
        label = None
        if code is not None:
            number, label, retired = _code_row(conn, code)
            if retired and number != row["diagnosis_code"]:
                _raise_if([f"{label!r} is retired; choose a current code, or offer it again on the "
                           "Diagnosis codes page"], what)
        else:
            number = None
        before = (None if row["diagnosis_code"] is None else
                  conn.execute("SELECT label FROM diagnosis_codes WHERE id = ?", [row["diagnosis_code"]]).fetchone()[0])
        if number == row["diagnosis_code"]:
            if why is not None:
                _raise_if(["nothing was changed: the patient already has this diagnosis code"], what)
            return label
        conn.execute("UPDATE patients SET diagnosis_code = ? WHERE id = ?", [number, row["id"]])
        if why is not None:
            _log_change(conn, row, "patient", "correct", {"diagnosis_code": before}, {"diagnosis_code": label},
                        why, who)
        return label


def code_patients_by_note(db: Database, note: str, code: int, *, reason: str, by: str) -> int:
    """Give ``code`` to every patient not yet coded whose diagnosis note reads exactly ``note`` (ignoring case
    and outer spaces); each change goes into the record's trail. Returns how many patients were coded."""
    problems: list[str] = []
    who, why = _who(problems, by, "by"), _reason(problems, reason)
    if not isinstance(note, str) or not note.strip():
        problems.append("note is required: choose a diagnosis note as entered")
    _raise_if(problems, "Cannot code the patients")
    with _write(db) as conn:
        number, label, retired = _code_row(conn, code)
        if retired:
            _raise_if([f"{label!r} is retired; offer it again first"], "Cannot code the patients")
        ids = [r[0] for r in conn.execute("SELECT patient_id FROM patients WHERE diagnosis_code IS NULL AND "
                                          "trim(diagnosis) = trim(?) COLLATE NOCASE", [note])]
        for pid in ids:
            row = _record_row(conn, "patient", pid)
            conn.execute("UPDATE patients SET diagnosis_code = ? WHERE id = ?", [number, row["id"]])
            _log_change(conn, row, "patient", "correct", {"diagnosis_code": None}, {"diagnosis_code": label}, why, who)
        return len(ids)


def load_diagnosis_notes(db: Database) -> pd.DataFrame:
    """Diagnosis notes of patients not yet coded, with how many patients share each (identified: free text):
    ``note, patients``, most frequent first."""
    return _frame(db, "SELECT trim(diagnosis) AS note, count(*) AS patients FROM patients WHERE diagnosis_code "
                      "IS NULL AND diagnosis IS NOT NULL AND trim(diagnosis) <> '' GROUP BY trim(diagnosis) "
                      "COLLATE NOCASE ORDER BY patients DESC, note", ints=["patients"])


def load_patient_diagnoses(db: Database) -> pd.DataFrame:
    """Every patient's diagnosis code: ``patient_id, diagnosis_code`` (Int64, <NA>: not coded) and
    ``diagnosis_label`` (None when not coded), by patient ID."""
    return _frame(db, "SELECT p.patient_id, p.diagnosis_code, c.label AS diagnosis_label FROM patients p "
                      "LEFT JOIN diagnosis_codes c ON c.id = p.diagnosis_code ORDER BY p.patient_id",
                  ints=["diagnosis_code"])
