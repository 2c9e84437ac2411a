"""The Reminders page (app_pages/reminders.py): last runs, failures and given-up messages, the outbox with
filters, and a test message through a real SMTP server on loopback. Admin only (tests/test_app_navigation.py
walks the other roles)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outcomes import messaging, storage
from outcomes.settings import load_settings
from tests.messaging_servers import closed_port
from tests.messaging_servers import smtp  # noqa: F401  (fixture)
from tests.page_helpers import button, seen, table, text_input
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/reminders.py"


def failing_runs(clinic_db, runs: int) -> None:
    """P001 by email and P002 by SMS, both owed this week's invitation; the SMTP server is down and SMS has no
    settings, so every try fails."""
    db = clinic_db.open()
    now = datetime.now(UTC)
    storage.set_contact(db, "P001", email="ann@mail.example.org", channel="email", consent_on=clinic_db.today,
                        by="cleo.clinician", now=now, today=clinic_db.today)
    storage.set_contact(db, "P002", phone="+12015550123", channel="sms", consent_on=clinic_db.today,
                        by="cleo.clinician", now=now, today=clinic_db.today)
    s = load_settings({}).replace(public_url="https://outcomes.clinic.example", quiet_hours=None,
                                  smtp_host="127.0.0.1", smtp_port=closed_port(), smtp_security="none",
                                  mail_from="reminders@clinic.example")
    for _ in range(runs):
        report = messaging.run(db, as_of=clinic_db.today, settings=s, now=now)
        assert len(report.messages) == 2
    db.close()


@pytest.mark.slow
def test_before_any_run_the_page_says_to_schedule_one(app_as):
    at = app_as("admin", PAGE)
    assert not at.exception
    assert at.title[0].value == "Reminders"
    assert seen(at, "No reminder run is recorded", "warning")
    assert seen(at, "No failed or given-up message.", "success")


@pytest.mark.slow
def test_failures_and_given_up_messages_are_shown_first_without_any_text(app_as, clinic_db):
    failing_runs(clinic_db, 1)
    at = app_as("admin", PAGE)
    assert not at.exception
    assert seen(at, "2 messages failed", "warning") and seen(at, "0 sent, 2 failed", "info")
    failing_runs(clinic_db, 2)
    at = app_as("admin", PAGE)
    assert seen(at, "2 messages given up", "error")
    given_up = table(at, 1)
    assert sorted(given_up["patient_id"]) == ["P001", "P002"]
    assert given_up["status"].eq("gave_up").all() and given_up["attempts"].eq(3).all()
    reasons = " ".join(given_up["last_error"])
    assert "cannot be reached" in reasons and "OUTCOMES_SMS_ACCOUNT_SID" in reasons
    shown = " ".join(str(table(at, i).to_dict()) for i in range(len(at.dataframe)))
    assert "checkin=" not in shown and "stop=" not in shown and "text" not in table(at, 1).columns


@pytest.mark.slow
def test_the_outbox_filters(app_as, clinic_db):
    failing_runs(clinic_db, 1)
    at = app_as("admin", PAGE)
    outbox = table(at, len(at.dataframe) - 1)
    assert sorted(outbox["patient_id"]) == ["P001", "P002"]
    at.selectbox(key="reminders.channel").set_value("sms").run()
    assert not at.exception
    assert table(at, len(at.dataframe) - 1)["patient_id"].tolist() == ["P002"]
    at.selectbox(key="reminders.channel").set_value(None).run()
    text_input(at, "Patient ID").input("P001").run()
    assert table(at, len(at.dataframe) - 1)["patient_id"].tolist() == ["P001"]
    at.selectbox(key="reminders.status").set_value("sent").run()
    assert table(at, len(at.dataframe) - 1).empty and seen(at, "0 messages, newest first.")
    db = clinic_db.open()
    filters = storage.load_audit_log(db, action="view_outbox")["details"].tolist()
    db.close()
    assert any('"channel": "sms"' in f for f in filters) and any('"patient_id": "P001"' in f for f in filters)


@pytest.mark.slow
def test_a_test_message_reaches_the_smtp_server_and_shows_the_answer(app_as, clinic_db, smtp, monkeypatch):
    for key, value in {"OUTCOMES_SMTP_HOST": smtp.host, "OUTCOMES_SMTP_PORT": str(smtp.port),
                       "OUTCOMES_SMTP_SECURITY": "none", "OUTCOMES_MAIL_FROM": "reminders@clinic.example",
                       "OUTCOMES_CLINIC_NAME": "Lakeside Pain Clinic"}.items():
        monkeypatch.setenv(key, value)
    at = app_as("admin", PAGE)
    text_input(at, "Email address or mobile number").input("desk@clinic.example")
    button(at, "Send the test message").click().run()
    assert not at.exception
    assert seen(at, "Sent (outbox message 1). The provider answered: 250 2.0.0 Ok: queued as", "success")
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["desk@clinic.example"]
    assert mail.message["Subject"] == "Lakeside Pain Clinic: test message"
    db = clinic_db.open()
    audit = storage.load_audit_log(db, action="send_test_message")
    db.close()
    assert audit["actor"].tolist() == ["ada.admin"] and "desk@" not in audit["details"].iloc[0]


@pytest.mark.slow
def test_a_bad_address_is_refused_naming_the_field(app_as, clinic_db, smtp):
    at = app_as("admin", PAGE)
    at.radio(key="reminders.test_channel").set_value("sms")
    text_input(at, "Email address or mobile number").input("12")
    button(at, "Send the test message").click().run()
    assert seen(at, "mobile number", "error") and seen(at, "is not", "error")
    db = clinic_db.open()
    assert storage.load_outbox(db).empty
    db.close()
