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


def handed_over(at) -> bytes | None:
    """The file this run handed to the browser (ui.data.hand_over), or None; fails on two."""
    import base64

    parts = [e for e in at.get("bidi_component") if e.proto.component_name == "outcomes_hand_over_file"]
    assert len(parts) <= 1
    return base64.b64decode(json.loads(parts[0].proto.json)["b64"]) if parts else None


def test_filters_by_user_patient_action_and_date(app_as, hostile):
    at = app_as("admin", PAGE)
    everything = len(at.dataframe[0].value)
    for label, value, column in (("User", "cleo.clinician", "actor"), ("Patient ID", HOSTILE, "patient_id"),
                                 ("Action", "enrol_patient", "action")):
        if label == "Action":
            at.selectbox(key="audit.action").set_value(value).run()
        else:
            text_input(at, label).input(value).run()
        log = at.dataframe[0].value
        shown = {"'" + value if value == HOSTILE else value}     # a formula is shown inert (below)
        assert 0 < len(log) < everything and set(log[column]) == shown
    today = datetime.now(UTC).date()
    at.date_input[0].set_value((today, today)).run()
    assert len(at.dataframe[0].value) == 1                   # all four filters together


def test_the_csv_download_is_safe_from_formula_injection(app_as, hostile, downloads):
    at = app_as("admin", PAGE)
    text_input(at, "Patient ID").input(HOSTILE).run()
    at.button(key="audit.download").click().run()
    data = downloads[-1]
    assert handed_over(at) == data                               # the very bytes the browser gets
    log = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert set(log["patient_id"]) == {"'" + HOSTILE}
    cells = log.to_numpy().ravel().tolist()
    assert not [c for c in cells if c.startswith(exports.FORMULA_TRIGGERS)]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", log["at"].iloc[0])   # time kept, UTC


def test_the_download_is_audited_with_its_filters(app_as, hostile):
    at = app_as("admin", PAGE)
    at.selectbox(key="audit.action").set_value("enrol_patient").run()
    shown = len(at.dataframe[0].value)
    at.button(key="audit.download").click().run()
    entry = storage.load_audit_log(hostile.open(), action="export").iloc[0]
    assert entry["actor"] == "ada.admin"
    assert json.loads(entry["details"]) == {"what": "audit log", "rows": shown, "deidentified": False,
                                            "filters": {"action": "enrol_patient"}}


def test_the_page_offers_no_way_to_change_the_log(app_as):
    at = app_as("admin", PAGE)
    assert sorted(b.key for b in at.button) == ["audit.download", "auth.sign_out"]  # the download, sign out
    assert not at.get("data_editor") and not at.get("download_button")


def test_the_database_refuses_to_change_or_delete_an_entry(clinic_db):
    db = clinic_db.open()
    before = storage.load_audit_log(db)
    for sql in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log",
                "UPDATE audit_log SET details = NULL WHERE id = 1"):
        with pytest.raises(Exception, match="append-only"):
            db.conn.execute(sql)
    pd.testing.assert_frame_equal(storage.load_audit_log(db), before)


@pytest.mark.slow
def test_no_code_path_updates_or_deletes_audit_entries():
    # Every statement that names the audit_log table, anywhere in the app, is an INSERT, a SELECT, or the
    # schema (CREATE TABLE/INDEX/TRIGGER); and only two storage functions touch the table at all.
    statements = []
    code = [*ROOT.glob("outcomes/**/*.py"), *ROOT.glob("ui/*.py"), *ROOT.glob("app_pages/*.py"), ROOT / "app.py"]
    for path in code:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"\baudit_log\b",
                                                                                               node.value):
                statements.append((path.relative_to(ROOT).parent.as_posix(), node.value))
    verbs = r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|REPLACE)\b"
    sql = [(f, s) for f, s in statements if re.search(verbs, s, re.I)]
    assert sql and all(f == "outcomes/storage" for f, _ in sql)
    for _, s in sql:
        if re.match(r"\s*CREATE TRIGGER", s):
            continue  # the triggers that refuse UPDATE and DELETE
        assert not re.search(r"\b(UPDATE|DELETE|DROP|ALTER|REPLACE)\b", s, re.I), s
    trees = [ast.parse(p.read_text()) for p in (ROOT / "outcomes" / "storage").glob("*.py")]
    touching = {n.name for tree in trees for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                and any(isinstance(c, ast.Constant) and isinstance(c.value, str) and "audit_log" in c.value
                        for c in ast.walk(n))}
    # _insert is called with the table name by append_audit; load_audit_log reads it; a restore reads the
    # replaced log and appends (INSERT only) the entries the backup lacked.
    assert touching <= {"append_audit", "load_audit_log", "_audit_entries", "_append_missing_audit_entries"}, \
        touching


# Security issue, finding 10: the table showed live formulas; finding 12: the CSV sat at a /media URL before
# any click, so fetching it there was never audited.


def test_the_log_on_screen_shows_stored_formulas_inert_and_details_in_words(app_as, hostile):
    at = app_as("admin", PAGE)
    log = at.dataframe[0].value
    entry = log[log["action"] == "enrol_patient"].iloc[0]
    assert entry["patient_id"] == "'" + HOSTILE                   # copied into a spreadsheet, it stays text
    assert entry["details"] == "note: @SUM(1+1)"                 # words, not {"note": ...}
    cells = [c for c in log.select_dtypes(include="object").to_numpy().ravel() if isinstance(c, str)]
    assert not [c for c in cells if c.startswith(exports.FORMULA_TRIGGERS)]


@pytest.mark.slow
def test_nothing_is_at_a_url_before_the_click_and_the_click_hands_the_file_over_once(app_as, hostile):
    at = app_as("admin", PAGE)
    # No st.download_button: its bytes would sit at /media/<hash>.csv, fetched by the browser on render
    # and by anyone holding the URL, with no audit entry.
    assert not at.get("download_button") and handed_over(at) is None
    assert storage.load_audit_log(hostile.open(), action="export").empty
    at.button(key="audit.download").click().run()
    data = handed_over(at)
    csv = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert len(csv) == len(at.dataframe[0].value)
    assert len(storage.load_audit_log(hostile.open(), action="export")) == 1
    at.run()                                                      # the next run sends nothing again
    assert handed_over(at) is None and len(storage.load_audit_log(hostile.open(), action="export")) == 1


@pytest.mark.slow
def test_no_file_is_handed_over_when_the_export_cannot_be_audited(app_as, hostile, monkeypatch):
    from outcomes import clinic
    from outcomes.errors import StorageUnavailable

    at = app_as("admin", PAGE)

    def refuse(*args, **kwargs):
        raise StorageUnavailable("The server's disk is full, so nothing from this action was stored. Ask the "
                                 "clinic's IT to free disk space, then try again.", reason="disk_full")

    monkeypatch.setattr(clinic, "record_export", refuse)
    at.button(key="audit.download").click().run()
    assert handed_over(at) is None                               # fail closed: no audit entry, no file
    assert "disk is full" in at.error[0].value and "try again" in at.error[0].value


def test_every_action_the_library_audits_has_words_on_the_audit_page():
    import re
    from pathlib import Path

    from ui import widgets

    root = Path(__file__).resolve().parents[1] / "outcomes"
    written = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in re.finditer(r"(?:append_audit|_audit_attempt)\((.*?)\)\n", text, re.DOTALL):
            written.update(re.findall(r'action="([a-z_]+)"', call.group(1)))
    assert len(written) > 40  # the scan finds the calls
    assert sorted(written - set(widgets.AUDIT_ACTIONS)) == []
