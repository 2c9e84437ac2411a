"""Sending invitations and reminders (outcomes/messaging.py) against a real SMTP server and a fake Twilio on
loopback: what arrives, what never does, failures and retries, quiet hours, two runs at once."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, date, datetime, timedelta

import pytest

from outcomes import auth, links, messaging, storage
from outcomes.errors import PermissionDenied, ValidationError
from outcomes.settings import load_settings
from tests.messaging_servers import (client_context, closed_port, fake_twilio, refused, smtp_server)
from tests.messaging_servers import smtp, tls_cert, twilio  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

TODAY = date(2025, 3, 31)  # "today" for the writes: every date below is in the past
FIRST, LAST = date(2025, 3, 3), date(2025, 3, 7)  # week_0 due 7 Mar, week_1 due 14 Mar (closes 20 Mar)
DUE = date(2025, 3, 14)
ZONE = "America/Chicago"


def at(day: date, hour: int = 10) -> datetime:
    """``hour`` o'clock at the clinic (Chicago: UTC-5 from 9 March 2025)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour + 5)


PEOPLE = {  # patient → (channel, consent, disposition)
    "MRN-40001": "email", "MRN-40002": "sms", "MRN-40003": "no consent", "MRN-40004": "opted out",
    "MRN-40005": "inactive", "MRN-40006": "done",
}


class _Address(dict):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, pid):
        return self.make(pid)


EMAIL = _Address(lambda pid: f"patient-{pid[4:]}@mail.example.org")
PHONE = _Address(lambda pid: f"+1201555{pid[-4:]}")


def settings(server=None, sms=None, **changes):
    base = load_settings({}).replace(
        clinic_name="Lakeside Pain Clinic", public_url="https://outcomes.lakeside.example", timezone=ZONE,
        quiet_hours=None, mail_from="reminders@lakeside.example", smtp_security="none",
        smtp_host=server.host if server else "", smtp_port=server.port if server else 25,
        sms_api_base=sms.url if sms else "https://api.twilio.com", sms_account_sid="AC" + "a1" * 16 if sms else "",
        sms_auth_token="token-of-the-test" if sms else "", sms_from="+15005550006" if sms else "")
    return base.replace(**changes)


def build(db, people=PEOPLE):
    for pid, kind in people.items():
        storage.add_patient(db, patient_id=pid, diagnosis="Complex regional pain syndrome", entered_by="dr.lee",
                            today=TODAY)
        storage.add_series(db, patient_id=pid, first_infusion=FIRST, last_infusion=LAST, infusions=5,
                           protocol="5-day ketamine 0.5 mg/kg", entered_by="dr.lee", today=TODAY)
        storage.save_assessment(db, patient_id=pid, assessed_on=FIRST - timedelta(days=2), domain="depression",
                                t_score=63.4, method="imported", source="import", entered_by="import", today=TODAY)
        channel = {"sms": "sms", "no consent": "none"}.get(kind, "email")
        storage.set_contact(db, pid, email=EMAIL[pid], phone=PHONE[pid], channel=channel,
                            consent_on=None if channel == "none" else FIRST, by="dr.lee", now=at(FIRST),
                            today=TODAY)
        if kind == "opted out":
            storage.opt_out(db, pid, by="dr.lee", now=at(FIRST))
        if kind == "inactive":
            storage.set_disposition(db, pid, disposition="withdrawn", on=DUE - timedelta(days=1),
                                    reason="moved away", by="dr.lee", today=TODAY)
        if kind == "done":
            storage.save_assessment(db, patient_id=pid, assessed_on=DUE, domain="depression", t_score=58.0,
                                    method="imported", source="import", entered_by="import", today=TODAY)


@pytest.fixture
def clinic(db):
    build(db)
    return db


def remind(db, day, s, hour=10, **kw):
    return messaging.run(db, as_of=day, settings=s, now=at(day, hour), **kw)


def outbox(db):
    return storage.load_outbox(db).sort_values("message_id").reset_index(drop=True)


# What arrives --------------------------------------------------------------------------------------------


def test_an_email_invitation_arrives_with_its_links_and_no_health_information(clinic, smtp, twilio):
    report = remind(clinic, DUE, settings(smtp, twilio))
    assert (report.sent, report.failed, report.gave_up, report.outcome) == (2, 0, 0, "ok")
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == [EMAIL["MRN-40001"]] and mail.message["To"] == EMAIL["MRN-40001"]
    assert mail.mail_from == "reminders@lakeside.example"
    assert mail.message["From"] == "Lakeside Pain Clinic <reminders@lakeside.example>"
    assert mail.message["Subject"] == "Lakeside Pain Clinic: your questionnaire is ready"
    assert mail.message["Message-ID"] and mail.message["Date"]
    body = mail.body
    checkin = re.search(r"https://outcomes\.lakeside\.example/\?checkin=([A-Za-z0-9_-]{43})\n", body)
    stop = re.search(r"To stop these messages: https://outcomes\.lakeside\.example/\?stop=([A-Za-z0-9_-]{43})", body)
    assert checkin and stop, body
    assert "until Thursday 20 March" in body  # the slot's last day
    for secret in ("MRN-", "40001", "63.4", "58", "regional", "ketamine", "mg/kg", "depress", "pain syndrome"):
        assert secret not in body and secret not in str(mail.message["Subject"]), secret
    # Only the hashes are stored; the check-in link ends with the slot's last day at the clinic.
    stored = storage.load_links(clinic, "MRN-40001").set_index("purpose")
    message_id = int(outbox(clinic).query("patient_id == 'MRN-40001'")["message_id"].iloc[0])
    assert stored.loc["checkin", "expires_at"] == datetime(2025, 3, 21, 5, tzinfo=UTC)  # midnight in Chicago
    assert stored.loc["checkin", "slot"] == "week_1" and stored.loc["checkin", "message_id"] == message_id
    assert stored.loc["stop", "expires_at"] == at(DUE) + timedelta(days=links.STOP_LINK_DAYS)
    used = storage.use_link(clinic, links.token_hash(checkin[1]), purpose="checkin", now=at(DUE, 11))
    assert used["patient_id"] == "MRN-40001" and used["slot"] == "week_1"
    assert storage.use_link(clinic, links.token_hash(stop[1]), purpose="stop", now=at(DUE, 11), single_use=False)


def test_an_sms_invitation_reaches_twilio_with_basic_auth_and_keeps_no_text(clinic, smtp, twilio):
    s = settings(smtp, twilio)
    remind(clinic, DUE, s)
    [request] = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{s.sms_account_sid}/Messages.json"
    assert (request.user, request.password) == (s.sms_account_sid, "token-of-the-test")
    assert request.form["To"] == PHONE["MRN-40002"] and request.form["From"] == "+15005550006"
    text = request.form["Body"]
    assert re.fullmatch(r"Lakeside Pain Clinic: your questionnaire is ready: "
                        r"https://outcomes\.lakeside\.example/\?checkin=[A-Za-z0-9_-]{43} Reply STOP to stop\.", text)
    assert len(text) <= 160
    row = outbox(clinic).query("patient_id == 'MRN-40002'").iloc[0]
    assert row["status"] == "sent" and row["provider_id"].startswith("SM")
    assert "status queued" in row["provider_response"] and "checkin" not in row["provider_response"]
    assert set(storage.load_links(clinic, "MRN-40002")["purpose"]) == {"checkin"}  # SMS: "Reply STOP"


def test_nobody_without_consent_opted_out_inactive_or_done_gets_anything(clinic, smtp, twilio):
    remind(clinic, DUE, settings(smtp, twilio))
    assert set(outbox(clinic)["patient_id"]) == {"MRN-40001", "MRN-40002"}
    for day in (DUE + timedelta(days=d) for d in range(1, 7)):
        remind(clinic, day, settings(smtp, twilio))
    assert set(outbox(clinic)["patient_id"]) == {"MRN-40001", "MRN-40002"}


def test_a_second_run_sends_nothing_new(clinic, smtp, twilio):
    s = settings(smtp, twilio)
    remind(clinic, DUE, s)
    again = remind(clinic, DUE, s, hour=14)
    assert (again.planned, again.sent, again.failed) == (0, 0, 0) and again.messages == []
    assert len(smtp.wait_for(1)) == 1 and len(twilio.requests) == 1
    assert storage.load_runs(clinic)["outcome"].tolist() == ["ok", "ok"]


def test_the_reminder_comes_two_days_after_the_invitation_once(clinic, smtp, twilio):
    s = settings(smtp, twilio)
    steps = {}
    for offset in range(0, 7):
        day = DUE + timedelta(days=offset)
        steps[offset] = sorted((m["patient_id"], m["step"]) for m in remind(clinic, day, s).messages)
    assert steps[0] == [("MRN-40001", "invitation"), ("MRN-40002", "invitation")]
    assert steps[1] == []
    assert steps[2] == [("MRN-40001", "reminder"), ("MRN-40002", "reminder")]
    assert steps[3] == steps[4] == steps[5] == steps[6] == []
    [_, reminder] = smtp.wait_for(2)
    assert reminder.message["Subject"] == "Lakeside Pain Clinic: a reminder, your questionnaire is waiting"
    assert "reminder, your questionnaire is waiting" in twilio.texts()[1]


def test_never_the_invitation_and_the_reminder_in_one_run(db, smtp):
    """A patient whose contact arrives on the reminder day gets the invitation then, the reminder the day after."""
    build(db, {"MRN-40001": "no consent"})
    s = settings(smtp)
    late = DUE + timedelta(days=3)
    assert remind(db, DUE, s).messages == []
    storage.set_contact(db, "MRN-40001", email=EMAIL["MRN-40001"], channel="email", consent_on=late, by="dr.lee",
                        now=at(late), today=TODAY)
    assert [m["step"] for m in remind(db, late, s).messages] == ["invitation"]
    assert remind(db, late, s, hour=16).messages == []
    assert [m["step"] for m in remind(db, late + timedelta(days=1), s).messages] == ["reminder"]


def test_nothing_is_sent_in_a_slot_that_closed(clinic, smtp, twilio):
    report = remind(clinic, DUE - timedelta(days=1), settings(smtp, twilio))  # week_0's last day
    assert {(m["slot"], m["step"]) for m in report.messages} == {("week_0", "invitation")}
    # (MRN-40006 answers only on 14 March: on the 13th it is owed its week_0 invitation too.)
    assert [m["patient_id"] for m in report.messages] == ["MRN-40001", "MRN-40002", "MRN-40006"]
    remind(clinic, DUE + timedelta(days=7), settings(smtp, twilio))  # week_2: a new slot, invitations
    assert set(outbox(clinic)["slot"]) == {"week_0", "week_2"}


# Failures --------------------------------------------------------------------------------------------------


def test_smtp_down_fails_with_the_reason_is_retried_and_given_up(clinic, twilio):
    s = settings(None, twilio, smtp_host="127.0.0.1", smtp_port=closed_port(), message_max_attempts=3)
    statuses = []
    for hour in (9, 10, 11):
        report = remind(clinic, DUE, s, hour=hour)
        row = outbox(clinic).query("patient_id == 'MRN-40001'").iloc[0]
        statuses.append((row["status"], int(row["attempts"])))
        assert report.outcome == "failures"
    assert statuses == [("failed", 1), ("failed", 2), ("gave_up", 3)]
    assert "SMTP server 127.0.0.1" in row["last_error"] and "cannot be reached" in row["last_error"]
    assert remind(clinic, DUE, s, hour=12).messages == []  # given up: not tried again
    assert storage.load_links(clinic, "MRN-40001")["revoked_at"].notna().all()  # never delivered, never usable
    assert "1 failed" in messaging.RunReport(DUE, failed=1).describe()


def test_a_failed_email_goes_out_once_the_server_is_back(clinic, twilio):
    remind(clinic, DUE, settings(None, twilio, smtp_host="127.0.0.1", smtp_port=closed_port()), hour=9)
    with smtp_server() as server:
        report = remind(clinic, DUE + timedelta(days=1), settings(server, twilio))
        assert [(m["patient_id"], m["step"], m["status"]) for m in report.messages] == [
            ("MRN-40001", "invitation", "sent")]
        assert len(server.wait_for(1)) == 1
    assert outbox(clinic).query("patient_id == 'MRN-40001'")["attempts"].tolist() == [2]


def test_a_refused_recipient_fails_with_the_servers_answer(clinic):
    with smtp_server() as server:
        server.refuse = lambda address: "550 5.1.1 <mailbox unavailable>"
        report = remind(clinic, DUE, settings(server))
    [line] = [m for m in report.messages if m["channel"] == "email"]
    assert line["status"] == "failed" and "refused the recipient (550 5.1.1 <mailbox unavailable>)" in line["error"]


def test_the_sms_provider_failing_leaves_the_message_failed(clinic, smtp):
    with fake_twilio(refused(500, None, "Internal Server Error")) as sms:
        report = remind(clinic, DUE, settings(smtp, sms))
        assert len(sms.requests) == 1
    [line] = [m for m in report.messages if m["channel"] == "sms"]
    assert line["status"] == "failed" and "HTTP 500" in line["error"] and "later run" in line["error"]
    assert report.sent == 1 and report.outcome == "failures"


def test_twilio_21610_stops_the_patients_messages(clinic, smtp):
    with fake_twilio(refused(400, 21610, "Attempt to send to unsubscribed recipient")) as sms:
        report = remind(clinic, DUE, settings(smtp, sms))
    assert report.opted_out == 1
    contact = storage.load_contacts(clinic, "MRN-40002").iloc[0]
    assert contact["channel"] == "none" and contact["opted_out_by"] == "remind"
    row = outbox(clinic).query("patient_id == 'MRN-40002'").iloc[0]
    assert row["status"] == "cancelled"
    with fake_twilio() as sms:
        remind(clinic, DUE + timedelta(days=2), settings(smtp, sms))
        assert sms.requests == []


def test_a_wrong_twilio_token_is_named(clinic, smtp):
    with fake_twilio(refused(401, 20003, "Authenticate")) as sms:
        report = remind(clinic, DUE, settings(smtp, sms))
    [line] = [m for m in report.messages if m["channel"] == "sms"]
    assert "OUTCOMES_SMS_AUTH_TOKEN" in line["error"] and "error 20003" in line["error"]


def test_missing_settings_fail_those_messages_and_say_what_to_set(clinic, twilio):
    report = remind(clinic, DUE, settings(None, twilio))  # no SMTP server
    by = {m["channel"]: m for m in report.messages}
    assert by["sms"]["status"] == "sent"
    assert by["email"]["status"] == "failed" and "OUTCOMES_SMTP_HOST" in by["email"]["error"]
    with smtp_server() as server:
        report = remind(clinic, DUE, settings(server, twilio, public_url=""), hour=12)
    assert [m["status"] for m in report.messages] == ["failed"]
    assert "OUTCOMES_PUBLIC_URL" in report.messages[0]["error"] and server.messages == []


def test_a_slot_done_after_planning_cancels_its_message(clinic, twilio):
    remind(clinic, DUE, settings(None, twilio, smtp_host="127.0.0.1", smtp_port=closed_port()))
    storage.save_assessment(clinic, patient_id="MRN-40001", assessed_on=DUE + timedelta(days=1), domain="depression",
                            t_score=60.0, method="imported", source="import", entered_by="import", today=TODAY)
    with smtp_server() as server:
        report = remind(clinic, DUE + timedelta(days=1), settings(server, twilio))
        assert server.messages == []
    assert report.cancelled == 1
    row = outbox(clinic).query("patient_id == 'MRN-40001'").iloc[0]
    assert (row["status"], row["last_error"]) == ("cancelled", "the questionnaire was done")


def test_a_run_that_died_while_sending_leaves_its_messages_given_up(clinic, smtp, twilio):
    storage.plan_messages(clinic, [{"patient_id": "MRN-40001", "series_id": 1, "slot": "week_1", "due_on": DUE,
                                    "step": "invitation", "channel": "email", "recipient": EMAIL["MRN-40001"]}],
                          by="remind", now=at(DUE, 8))
    storage.claim_messages(clinic, by="remind:dead", now=at(DUE, 8), max_attempts=3)
    report = remind(clinic, DUE, settings(smtp, twilio))
    assert report.interrupted == 1 and report.outcome == "failures"
    row = outbox(clinic).query("patient_id == 'MRN-40001'").iloc[0]
    assert row["status"] == "gave_up" and "interrupted" in row["last_error"]
    assert smtp.messages == []  # never sent twice


# Quiet hours, dry runs, audit ------------------------------------------------------------------------------


@pytest.mark.parametrize("hour, quiet", [(22, True), (3, True), (7, True), (8, False), (20, False)])
def test_quiet_hours_are_the_clinics(clinic, smtp, twilio, hour, quiet):
    report = remind(clinic, DUE, settings(smtp, twilio, quiet_hours=(21, 8)), hour=hour)
    assert (report.outcome == "quiet_hours") == quiet
    assert (len(outbox(clinic)) == 0) == quiet
    assert storage.load_runs(clinic)["outcome"].iloc[0] == ("quiet_hours" if quiet else "ok")
    assert storage.load_audit_log(clinic, action="remind_run").empty == quiet  # a quiet run read nothing


def test_a_dry_run_lists_what_it_would_send_and_writes_nothing(clinic, smtp, twilio, dump):
    before = dump(clinic)
    report = remind(clinic, DUE, settings(smtp, twilio), dry_run=True)
    assert dump(clinic) == before and smtp.messages == [] and twilio.requests == []
    listed = json.loads(json.dumps(report.to_json()))
    assert [(m["patient_id"], m["channel"], m["step"], m["due_on"]) for m in listed] == [
        ("MRN-40001", "email", "invitation", "2025-03-14"), ("MRN-40002", "sms", "invitation", "2025-03-14")]
    assert not any("@" in json.dumps(m) or "+1201" in json.dumps(m) for m in listed)
    assert "would send 2 invitations" in report.describe()
    # After a real run that failed for one of them, the dry run lists the retry.
    remind(clinic, DUE, settings(None, twilio))
    listed = remind(clinic, DUE, settings(smtp, twilio), hour=12, dry_run=True).to_json()
    assert [(m["patient_id"], m["step"], m["attempt"]) for m in listed] == [("MRN-40001", "invitation", 2)]


def test_each_run_is_audited_with_counts_only(clinic, smtp, twilio):
    remind(clinic, DUE, settings(smtp, twilio))
    [entry] = storage.load_audit_log(clinic, action="remind_run").to_dict("records")
    details = json.loads(entry["details"])
    assert entry["actor"] == "remind" and details["sent"] == 2 and details["planned"] == 2
    assert "@" not in entry["details"] and "+1" not in entry["details"] and "MRN" not in entry["details"]


def test_the_demo_database_sends_to_the_sink(clinic, smtp, twilio):
    storage.set_meta(clinic, "synthetic", "1")
    report = remind(clinic, DUE, settings(smtp, twilio))
    assert report.sent == 2 and smtp.messages == [] and twilio.requests == []
    assert set(outbox(clinic)["provider_response"]) == {"demo sink: not sent"}


# Two runs at once --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_at_once_send_each_step_once(tmp_path, twilio):
    path = tmp_path / "clinic.db"
    db = storage.connect(path)
    build(db, {f"MRN-5{i:04d}": "email" for i in range(40)})
    db.close()
    with smtp_server() as server:
        s = settings(server, twilio)
        barrier = threading.Barrier(3)
        reports, errors = [], []

        def one_run():
            conn = storage.connect(path)
            try:
                barrier.wait()
                reports.append(remind(conn, DUE, s))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=one_run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        mails = server.wait_for(40)
        assert sorted(m.rcpt_tos[0] for m in mails) == sorted(EMAIL[f"MRN-5{i:04d}"] for i in range(40))
    assert sum(r.sent for r in reports) == 40
    check = storage.connect(path)
    assert (storage.load_outbox(check)["status"] == "sent").sum() == 40
    check.close()


# SMTP security and login --------------------------------------------------------------------------------------


def test_smtp_login_over_plain_connection(clinic):
    with smtp_server(login=("mailer", "s3cret pass")) as server:
        remind(clinic, DUE, settings(server, smtp_user="mailer", smtp_password="s3cret pass"))
        [mail] = server.wait_for(1)
    assert mail.login == "mailer" and not mail.tls


def test_a_wrong_smtp_password_is_named(clinic):
    with smtp_server(login=("mailer", "s3cret pass")) as server:
        report = remind(clinic, DUE, settings(server, smtp_user="mailer", smtp_password="wrong"))
        assert server.messages == []
    [line] = [m for m in report.messages if m["channel"] == "email"]
    assert "refused the login of 'mailer'" in line["error"] and "OUTCOMES_SMTP_PASSWORD" in line["error"]


def test_starttls_then_login(clinic, tls_cert):
    with smtp_server(login=("mailer", "pw"), starttls=tls_cert) as server:
        sender = messaging.EmailSender(host=server.host, port=server.port, mail_from="reminders@lakeside.example",
                                       security="starttls", user="mailer", password="pw",
                                       ssl_context=client_context(tls_cert))
        report = remind(clinic, DUE, settings(server), senders={"email": sender})
        [mail] = server.wait_for(1)
    assert mail.tls and mail.login == "mailer"
    assert [m["status"] for m in report.messages if m["channel"] == "email"] == ["sent"]


def test_starttls_against_a_server_without_it_is_named(clinic):
    with smtp_server() as server:
        report = remind(clinic, DUE, settings(server, smtp_security="starttls"))
    [line] = [m for m in report.messages if m["channel"] == "email"]
    assert "does not offer STARTTLS" in line["error"]


def test_implicit_tls(clinic, tls_cert):
    with smtp_server(implicit_tls=tls_cert) as server:
        sender = messaging.EmailSender(host=server.host, port=server.port, mail_from="reminders@lakeside.example",
                                       security="ssl", ssl_context=client_context(tls_cert))
        remind(clinic, DUE, settings(server), senders={"email": sender})
        [mail] = server.wait_for(1)
    assert mail.tls


def test_an_untrusted_certificate_fails_the_message(clinic, tls_cert):
    with smtp_server(implicit_tls=tls_cert) as server:
        report = remind(clinic, DUE, settings(server, smtp_security="ssl"))  # the system's CAs: not ours
        assert server.messages == []
    [line] = [m for m in report.messages if m["channel"] == "email"]
    assert line["status"] == "failed" and "TLS failed" in line["error"]


# Texts, planning rules ------------------------------------------------------------------------------------------


def test_messages_say_only_clinic_link_and_how_to_stop():
    email = messaging.compose("reminder", "email", recipient="a@b.org", clinic_name="Lakeside",
                              checkin_url="https://x.example/?checkin=T", stop_url="https://x.example/?stop=S",
                              closes_on=date(2025, 3, 20))
    assert email.text.splitlines() == [
        "Hello,", "", "A reminder: your questionnaire from Lakeside is still waiting for you. The link works until "
        "Thursday 20 March.", "", "Open your questionnaire:", "https://x.example/?checkin=T", "",
        "This link is personal: please do not forward it.", "", "To stop these messages: https://x.example/?stop=S",
        "", "Lakeside"]
    assert "checkin" not in repr(email)  # a logged message never shows its link
    with pytest.raises(ValidationError, match="needs its check-in link"):
        messaging.compose("invitation", "email", recipient="a@b.org", clinic_name="Lakeside")


@pytest.mark.parametrize("hours, hour, inside", [((21, 8), 21, True), ((21, 8), 0, True), ((21, 8), 8, False),
                                                 ((1, 5), 1, True), ((1, 5), 5, False), ((1, 5), 0, False),
                                                 (None, 3, False)])
def test_quiet_hours_rule(hours, hour, inside):
    assert messaging.quiet(datetime(2025, 3, 3, hour, tzinfo=UTC), hours, UTC) is inside


# The Reminders page's functions -----------------------------------------------------------------------------------


@pytest.fixture
def admin(clinic, fast_hasher):
    root = auth.create_first_admin(clinic, "root.admin", "correct horse battery", now=at(DUE))
    lee = auth.create_user(clinic, root, username="dr.lee", role="clinician", password="lee's long password",
                           now=at(DUE))
    return root, lee


def test_a_test_message_goes_through_the_outbox_and_shows_the_answer(clinic, admin, smtp, twilio):
    root, _ = admin
    result = messaging.send_test(clinic, root, channel="email", recipient=" Desk@Lakeside.Example ",
                                 settings=settings(smtp, twilio), now=at(DUE))
    assert result.status == "sent" and result.response.startswith("250 2.0.0 Ok: queued as")
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["Desk@lakeside.example"] and "test message" in mail.body
    result = messaging.send_test(clinic, root, channel="sms", recipient="(201) 555-0123",
                                 settings=settings(smtp, twilio), now=at(DUE))
    assert result.status == "sent" and twilio.requests[0].form["To"] == "+12015550123"
    tests = storage.load_outbox(clinic, step="test")
    assert tests["status"].tolist() == ["sent", "sent"] and tests["patient_id"].isna().all()
    audit = storage.load_audit_log(clinic, action="send_test_message")
    assert len(audit) == 2 and "@" not in " ".join(audit["details"])


def test_a_failed_test_message_is_given_up_at_once_and_not_retried(clinic, admin, twilio):
    root, _ = admin
    s = settings(None, twilio, smtp_host="127.0.0.1", smtp_port=closed_port())
    result = messaging.send_test(clinic, root, channel="email", recipient="desk@lakeside.example", settings=s,
                                 now=at(DUE))
    assert result.status == "gave_up" and "cannot be reached" in result.error
    assert all(m["step"] != "test" for m in remind(clinic, DUE, s).messages)


def test_a_test_message_needs_a_valid_address_and_an_admin(clinic, admin, smtp):
    root, lee = admin
    with pytest.raises(ValidationError, match="email 'desk@' is not a valid email address"):
        messaging.send_test(clinic, root, channel="email", recipient="desk@", settings=settings(smtp), now=at(DUE))
    with pytest.raises(ValidationError, match="mobile number '555' is not"):
        messaging.send_test(clinic, root, channel="sms", recipient="555", settings=settings(smtp), now=at(DUE))
    with pytest.raises(PermissionDenied):
        messaging.send_test(clinic, lee, channel="email", recipient="a@b.org", settings=settings(smtp), now=at(DUE))
    with pytest.raises(PermissionDenied):
        messaging.read_outbox(clinic, lee)
    assert storage.load_outbox(clinic).empty and smtp.messages == []


def test_the_outbox_filters(clinic, admin, smtp):
    root, _ = admin
    remind(clinic, DUE, settings(smtp))  # no SMS settings: the SMS fails
    view = messaging.read_outbox(clinic, root)
    assert len(view.outbox) == 2 and view.runs["sent"].tolist() == [1]
    assert view.attention["patient_id"].tolist() == ["MRN-40002"]
    outbox = lambda **f: messaging.read_outbox(clinic, root, **f).outbox  # noqa: E731
    assert outbox(channel="sms")["patient_id"].tolist() == ["MRN-40002"]
    assert outbox(patient_id="MRN-40001")["channel"].tolist() == ["email"]
    assert len(outbox(day=DUE)) == 2 and outbox(day=DUE + timedelta(days=1)).empty
    assert outbox(status="failed")["patient_id"].tolist() == ["MRN-40002"]
    assert outbox(step="reminder").empty
    audit = storage.load_audit_log(clinic, action="view_outbox")
    assert len(audit) == 7 and audit["actor"].eq("root.admin").all()
