"""The audit log page (app_pages/audit.py) and the log itself: filters, a safe CSV, an audited download, and
no way to change or delete an entry."""

from __future__ import annotations

import ast
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from outcomes import exports, storage
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)
from tests.page_helpers import text_input

PAGE = "app_pages/audit.py"
ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '=HYPERLINK("http://evil.example","x")'


@pytest.fixture
def hostile(clinic_db):
    """A patient whose ID is a spreadsheet formula, with an entry in the log."""
    db = clinic_db.open()
    storage.add_patient(db, patient_id=HOSTILE, entered_by="cleo.clinician")
    storage.append_audit(db, actor="cleo.clinician", action="enrol_patient", patient_id=HOSTILE,
                         details={"note": "@SUM(1+1)"})
    return clinic_db


@pytest.fixture
def downloads(monkeypatch):
    """The bytes the page hands to its download button."""
    made: list[bytes] = []
    original = exports.to_csv_bytes

    def record(df):
        made.append(original(df))
        return made[-1]

    monkeypatch.setattr(exports, "to_csv_bytes", record)
    return made


def test_filters_by_user_patient_action_and_date(app_as, hostile):
    at = app_as("admin", PAGE)
    everything = len(at.dataframe[0].value)
    for label, value, column in (("User", "cleo.clinician", "actor"), ("Patient ID", HOSTILE, "patient_id"),
                                 ("Action", "enrol_patient", "action")):
        text_input(at, label).input(value).run()
        log = at.dataframe[0].value
        assert 0 < len(log) < everything and set(log[column]) == {value}
    today = datetime.now(UTC).date()
    at.date_input[0].set_value((today, today)).run()
    assert len(at.dataframe[0].value) == 1                   # all four filters together


def test_the_csv_download_is_safe_from_formula_injection(app_as, hostile, downloads):
    at = app_as("admin", PAGE)
    text_input(at, "Patient ID").input(HOSTILE).run()
    data = downloads[-1]
    log = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert set(log["patient_id"]) == {"'" + HOSTILE}
    cells = log.to_numpy().ravel().tolist()
    assert not [c for c in cells if c.startswith(exports.FORMULA_TRIGGERS)]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", log["at"].iloc[0])   # time kept, UTC


def test_the_download_is_audited_with_its_filters(app_as, hostile):
    at = app_as("admin", PAGE)
    text_input(at, "Action").input("enrol_patient").run()
    shown = len(at.dataframe[0].value)
    at.get("download_button")[0].click().run()
    entry = storage.load_audit_log(hostile.open(), action="export").iloc[0]
    assert entry["actor"] == "ada.admin"
    assert json.loads(entry["details"]) == {"what": "audit log", "rows": shown, "deidentified": False,
                                            "filters": {"action": "enrol_patient"}}


def test_the_page_offers_no_way_to_change_the_log(app_as):
    at = app_as("admin", PAGE)
    assert [b.key for b in at.button] == ["auth.sign_out"]      # the sidebar's, nothing on the page
    assert not at.get("data_editor") and len(at.get("download_button")) == 1


def test_the_database_refuses_to_change_or_delete_an_entry(clinic_db):
    db = clinic_db.open()
    before = storage.load_audit_log(db)
    for sql in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log",
                "UPDATE audit_log SET details = NULL WHERE id = 1"):
        with pytest.raises(Exception, match="append-only"):
            db.conn.execute(sql)
    pd.testing.assert_frame_equal(storage.load_audit_log(db), before)


def test_no_code_path_updates_or_deletes_audit_entries():
    # Every statement that names the audit_log table, anywhere in the app, is an INSERT, a SELECT, or the
    # schema (CREATE TABLE/INDEX/TRIGGER); and only two storage functions touch the table at all.
    statements = []
    code = [*ROOT.glob("outcomes/*.py"), *ROOT.glob("ui/*.py"), *ROOT.glob("app_pages/*.py"), ROOT / "app.py"]
    for path in code:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"\baudit_log\b",
                                                                                               node.value):
                statements.append((path.name, node.value))
    verbs = r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|REPLACE)\b"
    sql = [(f, s) for f, s in statements if re.search(verbs, s, re.I)]
    assert sql and all(f == "storage.py" for f, _ in sql)
    for _, s in sql:
        if re.match(r"\s*CREATE TRIGGER", s):
            continue  # the triggers that refuse UPDATE and DELETE
        assert not re.search(r"\b(UPDATE|DELETE|DROP|ALTER|REPLACE)\b", s, re.I), s
    tree = ast.parse((ROOT / "outcomes" / "storage.py").read_text())
    touching = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                and any(isinstance(c, ast.Constant) and isinstance(c.value, str) and "audit_log" in c.value
                        for c in ast.walk(n))}
    # _insert is called with the table name by append_audit; load_audit_log reads it.
    assert touching <= {"append_audit", "load_audit_log"}, touching
