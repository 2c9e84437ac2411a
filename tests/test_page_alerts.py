"""Open alerts (app_pages/alerts.py): listed by priority with the safety notice; acknowledged with who/when."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from outcomes import clinic, storage
from outcomes.settings import load_settings
from tests.page_helpers import messages, seen
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/alerts.py"
DEP = next(f for f in clinic.checkin_forms(load_settings()) if f.domain == "depression")


@pytest.fixture
def severe_p002(clinic_db):
    """P002 reports severe depression yesterday: a high-priority alert."""
    now = datetime.now(UTC)
    clinic.submit_checkin(clinic_db.open(), clinic_db.users["clinician"], patient_id="P002",
                          answers={DEP.key: {i.item_id: 5 for i in DEP.items}},
                          assessed_on=now.date() - timedelta(days=1), today=now.date(), now=now,
                          settings=load_settings())


def open_alerts(clinic_db):
    return storage.load_alerts(clinic_db.open(), open_only=True)


def cards(at) -> list[str]:
    """The first line of each alert card: priority badge, patient, date."""
    return [m for m in messages(at, "markdown") if "-badge[" in m]


def test_the_safety_notice_is_always_shown(app_as):
    at = app_as("clinician", PAGE)
    assert not at.exception
    assert at.title[0].value == "Alerts"
    assert at.warning[0].value == clinic.SAFETY_NOTICE
    assert "no question about suicide or self-harm" in at.warning[0].value
    assert "no substitute for a validated suicide-risk screen" in at.warning[0].value


@pytest.mark.slow
def test_open_alerts_are_listed_high_priority_first_with_reason_and_action(app_as, clinic_db, severe_p002):
    at = app_as("clinician", PAGE)
    shown = cards(at)
    assert len(shown) == 3
    assert shown[0].startswith(":red-badge[High priority] **P002**")
    assert all(c.startswith(":orange-badge[Routine]") for c in shown[1:])
    reasons = [t.value for t in at.text]
    assert reasons[0].startswith("Depression T ") and "70 or higher (severe)" in reasons[0]
    assert seen(at, clinic.ALERT_ACTIONS["high"], "caption")
    assert seen(at, clinic.ALERT_ACTIONS["routine"], "caption")
    assert storage.load_audit_log(clinic_db.open(), action="view_alerts")["actor"].iloc[0] == "cleo.clinician"


@pytest.mark.slow
def test_acknowledging_removes_the_alert_and_records_who_when_and_the_note(app_as, clinic_db, severe_p002):
    alert = open_alerts(clinic_db).iloc[0]
    assert alert["priority"] == "high"
    at = app_as("clinician", PAGE)
    at.text_input(key=f"alerts.note.{alert['alert_id']}").input("Called patient; safety plan reviewed").run()
    before = datetime.now(UTC)
    at.button(key=f"alerts.ack.{alert['alert_id']}").click().run()
    assert not at.exception
    assert len(cards(at)) == 2 and not any("**P002**" in c and "red-badge" in c for c in cards(at))
    stored = storage.load_alerts(clinic_db.open(), patient_id="P002").set_index("alert_id").loc[alert["alert_id"]]
    assert stored["acknowledged_by"] == "cleo.clinician"
    assert before - timedelta(seconds=5) <= stored["acknowledged_at"] <= datetime.now(UTC)
    assert stored["note"] == "Called patient; safety plan reviewed"
    log = storage.load_audit_log(clinic_db.open(), action="acknowledge_alert")
    assert log[["actor", "patient_id"]].values.tolist() == [["cleo.clinician", "P002"]]
    assert json.loads(log["details"].iloc[0]) == {"alert_id": int(alert["alert_id"]),
                                                  "note": "Called patient; safety plan reviewed"}


@pytest.mark.slow
def test_when_every_alert_is_acknowledged_the_page_says_so(app_as, clinic_db):
    at = app_as("clinician", PAGE)
    for alert_id in open_alerts(clinic_db)["alert_id"]:
        at.button(key=f"alerts.ack.{alert_id}").click().run()
    assert not at.exception
    assert messages(at, "success") == ["No open alerts."]
    assert at.warning[0].value == clinic.SAFETY_NOTICE
    assert open_alerts(clinic_db).empty


def test_an_alert_acknowledged_meanwhile_by_a_colleague_just_disappears(app_as, clinic_db):
    at = app_as("clinician", PAGE)
    alert_id = int(open_alerts(clinic_db)["alert_id"].iloc[0])
    clinic.acknowledge_alert(clinic_db.open(), clinic_db.users["clinician"], alert_id, now=datetime.now(UTC))
    at.button(key=f"alerts.ack.{alert_id}").click().run()
    assert not at.exception and not at.error
    assert len(cards(at)) == 1


@pytest.mark.slow
def test_open_patient_goes_to_the_patient_page(app_as, clinic_db):
    alert = open_alerts(clinic_db).iloc[-1]
    at = app_as("clinician", PAGE)
    at.button(key=f"alerts.open.{alert['alert_id']}").click().run()
    assert not at.exception
    assert at.title[0].value == f"Patient {alert['patient_id']}"


def test_stored_text_is_shown_literally(app_as, clinic_db):
    # A patient ID with Markdown characters is shown as typed, not as formatting.
    now = datetime.now(UTC)
    db = clinic_db.open()
    clinic.enrol_patient(db, clinic_db.users["clinician"], patient_id="**X_1**", today=now.date(), now=now,
                         settings=load_settings())
    clinic.submit_checkin(db, clinic_db.users["clinician"], patient_id="**X_1**",
                          answers={DEP.key: {i.item_id: 5 for i in DEP.items}}, assessed_on=now.date(),
                          today=now.date(), now=now, settings=load_settings())
    at = app_as("clinician", PAGE)
    assert any(r"**\*\*X\_1\*\***" in c for c in cards(at))
