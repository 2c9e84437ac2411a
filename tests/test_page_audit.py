"""The audit log (app_pages/audit.py): sign-ins, views, writes and exports, with filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from outcomes import storage
from tests.conftest import PASSWORD
from tests.page_helpers import messages, new_session, sign_in, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/audit.py"


@pytest.fixture
def sign_ins(clinic_db):
    """One successful and one failed sign-in, through the sign-in page."""
    sign_in(new_session().run(), "cleo.clinician", PASSWORD)
    sign_in(new_session().run(), "cleo.clinician", "not my password")


@pytest.fixture
def audit_page(app_as, sign_ins):
    return app_as("admin", PAGE)


def log(at):
    return at.dataframe[0].value


@pytest.mark.slow
def test_sign_ins_successful_or_not_are_in_the_log(audit_page):
    at = audit_page
    assert not at.exception
    assert at.title[0].value == "Audit log"
    entries = log(at)
    assert entries.columns.tolist() == ["audit_id", "at", "actor", "action", "patient_id", "details"]
    cleo = entries[entries["actor"] == "cleo.clinician"]
    assert {"login", "login_failed"} <= set(cleo["action"])
    failed = cleo[cleo["action"] == "login_failed"].iloc[0]
    assert "reason: wrong password" in failed["details"]              # details read as words, not JSON
    assert not failed["details"].startswith("{")
    assert entries["at"].is_monotonic_decreasing                     # newest first
    assert messages(at, "markdown")[0] == f"{len(entries):,} entries, newest first."


@pytest.mark.slow
def test_record_views_and_writes_are_in_the_log(app_as, clinic_db):
    at = app_as("clinician", "app_pages/patient.py")
    at.selectbox[0].select("P002").run()
    at = app_as("admin", PAGE)
    actions = set(log(at)[log(at)["patient_id"] == "P002"]["action"])
    assert {"view_record", "enrol_patient", "log_series", "submit_checkin"} <= actions


@pytest.mark.slow
@pytest.mark.parametrize("field, value, column", [("User", "cleo.clinician", "actor"),
                                                  ("Action", "login_failed", "action"),
                                                  ("Patient ID", "P002", "patient_id")])
def test_filters(audit_page, field, value, column):
    at = audit_page
    everything = len(log(at))
    if field == "Action":  # chosen from a list, in words
        at.selectbox(key="audit.action").set_value(value).run()
    else:
        text_input(at, field).input(value).run()
    assert not at.exception
    entries = log(at)
    assert 0 < len(entries) < everything
    assert set(entries[column]) == {value}


@pytest.mark.slow
def test_filtering_by_dates(audit_page):
    at = audit_page
    today = datetime.now(UTC).date()
    at.date_input[0].set_value((today, today)).run()
    assert len(log(at)) > 0 and (log(at)["at"].dt.date == today).all()
    at.date_input[0].set_value((today - timedelta(days=30), today - timedelta(days=1))).run()
    assert log(at).empty
    assert messages(at, "markdown")[0] == "0 entries, newest first."


@pytest.mark.slow
def test_a_single_day_is_a_one_day_range(audit_page):
    at = audit_page
    today = datetime.now(UTC).date()
    at.date_input[0].set_value((today,)).run()
    assert not at.exception
    assert len(log(at)) > 0


@pytest.mark.slow
def test_the_action_filter_is_a_list_in_words_with_every_action_the_log_holds(audit_page, clinic_db):
    storage.append_audit(clinic_db.open(), actor="ada.admin", action="close_series_early")  # not known by name
    at = audit_page.run()
    box = at.selectbox(key="audit.action")
    assert box.value is None and box.placeholder == "Any action"
    assert "Sign-in failed (login_failed)" in box.options          # no internal name to type
    assert "Close series early (close_series_early)" in box.options
    box.set_value("access_denied").run()                          # a known action absent from this log
    assert not at.exception and not at.error
    assert log(at).empty


@pytest.mark.slow
def test_viewing_and_downloading_the_log_are_audited(audit_page, clinic_db):
    at = audit_page
    at.button(key="audit.download").click().run()
    assert not at.exception
    shown = len(log(at))  # the file is the log as read in the run of the click, as shown then
    db = clinic_db.open()
    export = storage.load_audit_log(db, action="export")
    assert export["actor"].tolist() == ["ada.admin"]
    assert json.loads(export["details"].iloc[0]) == {"what": "audit log", "rows": shown, "deidentified": False}
    assert "ada.admin" in set(storage.load_audit_log(db, action="view_audit_log")["actor"])


def test_the_log_cannot_be_changed(clinic_db):
    db = clinic_db.open()
    with pytest.raises(Exception, match="audit"):
        db.conn.execute("DELETE FROM audit_log")
    with pytest.raises(Exception, match="audit"):
        db.conn.execute("UPDATE audit_log SET actor = 'someone else'")
