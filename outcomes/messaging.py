"""Invitations and reminders by email and SMS: what they say, how they are sent, and the reminder run.

``python -m outcomes remind`` (cron or a systemd timer, docs/operations.md) calls :func:`run` once:

1. **Quiet hours.** When ``now`` in the clinic's time zone falls inside ``quiet_hours``, nothing is planned
   or sent; the run is recorded as ``quiet_hours``.
2. **Interrupted runs.** Messages left ``sending`` for :data:`INTERRUPTED_AFTER` by a run that died are
   given up (``storage.give_up_interrupted``): they may have gone out, and a step is never sent twice.
3. **Planning** (pure: :func:`plan_steps`, :func:`stale_messages`). For every open slot that is due or
   overdue and not done (``outcomes.followup.slots``), of an active patient whose contact channel is email
   or SMS with consent and who has not opted out: the **invitation** from the due day; the **reminder**
   from ``reminder_on`` (due + 2) once the invitation was sent on an earlier day, so never both in one
   run. The recipient is the contact's address at planning time. Messages planned or failed for a slot
   that got done or closed, or a patient who left follow-up or stopped messages, are cancelled with the
   reason. Planning writes the outbox with ``INSERT OR IGNORE`` on one row per patient, series, slot and
   step, so it is idempotent.
4. **Sending.** Messages are claimed in small batches (``planned``/``failed`` → ``sending``, attempts + 1,
   in a write transaction: two runs at once never claim the same one). Each gets a fresh one-tap check-in
   link (valid to the end of the slot's last day in the clinic's time zone) and, by email, a "stop these
   messages" link; only the tokens' hashes are stored. A transport error leaves it ``failed`` with the
   reason, tried again by later runs up to ``message_max_attempts``, then ``gave_up`` (the Reminders page
   shows both). Twilio error 21610 (the recipient replied STOP) stops the patient's messages.
5. One ``remind_run`` audit entry (counts only, never an address) and the ``remind_runs`` row (a run in
   quiet hours only the row).

Messages carry no health information: the clinic's name, "your questionnaire is ready", the link and how
to stop. A dry run (``dry_run=True``) computes what would be sent and writes nothing at all.

On the synthetic demo database every channel goes to :class:`SinkSender`, which sends nothing out.

Example
-------
>>> m = compose("invitation", "sms", recipient="+12015550123", clinic_name="Lakeside Pain Clinic",
...             checkin_url="https://outcomes.example/?checkin=abc")
>>> m.text
'Lakeside Pain Clinic: your questionnaire is ready: https://outcomes.example/?checkin=abc Reply STOP to stop.'
>>> quiet(datetime(2025, 3, 3, 22, 30, tzinfo=UTC), (21, 8), UTC), quiet(datetime(2025, 3, 3, 9, 0, tzinfo=UTC), (21, 8), UTC)
(True, False)
"""

from __future__ import annotations

import base64
import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from . import followup, links, storage
from .auth import User, require_role
from .errors import (MessageNotSent, MessageRefused, MessagingNotConfigured, RecipientOptedOut,
                     TransportUnavailable, ValidationError)
from .validation import _Fields, clean_email, clean_phone

if TYPE_CHECKING:
    from .settings import Settings

#: The actor of the reminder run in the outbox, the links and the audit log.
ACTOR = "remind"
#: A message still ``sending`` this long after it was claimed belongs to a run that died.
INTERRUPTED_AFTER = timedelta(minutes=30)
#: Messages claimed at a time: a long run keeps its claims fresh (see :data:`INTERRUPTED_AFTER`).
CLAIM_BATCH = 25
#: Twilio's error code for a recipient who replied STOP.
TWILIO_UNSUBSCRIBED = 21610
CHANNELS = ("email", "sms")
SMTP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0


# What a message says -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message as a transport sends it. ``text`` holds the one-tap links: never log or show it."""

    channel: str
    recipient: str
    subject: str
    text: str
    sender_name: str = ""

    def __repr__(self) -> str:  # the links are secrets
        return f"Message(channel={self.channel!r}, subject={self.subject!r})"


def compose(step: str, channel: str, *, recipient: str, clinic_name: str, checkin_url: str | None = None,
            stop_url: str | None = None, closes_on: date | None = None) -> Message:
    """The invitation, reminder or test message, by email or SMS.

    No health information: the clinic's name, that a questionnaire is ready, the personal link, until when
    it works, and how to stop (a stop link by email; "Reply STOP" by SMS, which the SMS provider honours).
    """
    if step not in storage.STEPS or channel not in CHANNELS:
        raise ValidationError(f"Cannot write a {step!r} message by {channel!r}: use invitation, reminder or "
                              "test by email or sms")
    if step == "test":
        text = (f"This is a test message from {clinic_name}. It shows that messages reach you; there is "
                "nothing to do.")
        if channel == "email":
            return Message(channel, recipient, f"{clinic_name}: test message", text + "\n", clinic_name)
        return Message(channel, recipient, "", text, clinic_name)
    if not checkin_url:
        raise ValidationError("An invitation or reminder needs its check-in link")
    if channel == "sms":
        lead = "reminder, your questionnaire is waiting" if step == "reminder" else "your questionnaire is ready"
        return Message(channel, recipient, "", f"{clinic_name}: {lead}: {checkin_url} Reply STOP to stop.",
                       clinic_name)
    until = f" The link works until {closes_on:%A %-d %B}." if closes_on else ""
    if step == "reminder":
        subject = f"{clinic_name}: a reminder, your questionnaire is waiting"
        opening = f"A reminder: your questionnaire from {clinic_name} is still waiting for you."
    else:
        subject = f"{clinic_name}: your questionnaire is ready"
        opening = f"Your questionnaire from {clinic_name} is ready. It takes a few minutes."
    lines = ["Hello,", "", opening + until, "", "Open your questionnaire:", checkin_url, "",
             "This link is personal: please do not forward it."]
    if stop_url:
        lines += ["", f"To stop these messages: {stop_url}"]
    lines += ["", clinic_name, ""]
    return Message(channel, recipient, subject, "\n".join(lines), clinic_name)


# How it is sent ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What the mail server or SMS provider answered when it accepted a message (no message text)."""

    provider_id: str | None
    response: str


class Sender(Protocol):
    """A transport for one channel: :meth:`send` returns a :class:`Delivery` or raises a subclass of
    :class:`~outcomes.errors.MessageNotSent`."""

    channel: str

    def send(self, message: Message) -> Delivery: ...


class EmailSender:
    """Email over SMTP with the standard library.

    ``security`` is ``starttls`` (port 587: the connection is upgraded before the login), ``ssl`` (port
    465: TLS from the start) or ``none`` (a relay on the same machine). A login is made when ``user`` is
    set. ``ssl_context`` defaults to the system's trusted certificates (tests pass their own).
    """

    channel = "email"

    def __init__(self, *, host: str, port: int, mail_from: str, security: str = "starttls", user: str = "",
                 password: str = "", timeout: float = SMTP_TIMEOUT_S, ssl_context: ssl.SSLContext | None = None):
        if security not in ("starttls", "ssl", "none"):
            raise ValidationError(f"smtp_security must be starttls, ssl or none, got {security!r}")
        self.host, self.port, self.mail_from, self.security = host, int(port), mail_from, security
        self.user, self._password, self.timeout = user, password, timeout
        self.ssl_context = ssl_context

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailSender:
        return cls(host=settings.smtp_host, port=settings.smtp_port, mail_from=settings.mail_from,
                   security=settings.smtp_security, user=settings.smtp_user, password=settings.smtp_password)

    def __repr__(self) -> str:
        return f"EmailSender({self.host}:{self.port}, {self.security})"

    def build(self, message: Message) -> EmailMessage:
        """The email as it goes out (headers and plain-text body)."""
        email = EmailMessage()
        email["Subject"] = message.subject
        email["From"] = formataddr((message.sender_name, self.mail_from)) if message.sender_name else self.mail_from
        email["To"] = message.recipient
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = make_msgid(domain=self.mail_from.rpartition("@")[2] or None)
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(message.text)
        return email

    def send(self, message: Message) -> Delivery:
        if not self.host or not self.mail_from:
            raise MessagingNotConfigured(
                "Email is not configured: set OUTCOMES_SMTP_HOST and OUTCOMES_MAIL_FROM (docs/operations.md, "
                "Reminders)")
        email = self.build(message)
        where = f"SMTP server {self.host}:{self.port}"
        context = self.ssl_context or ssl.create_default_context()
        try:
            if self.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=context)
                if self.user:
                    smtp.login(self.user, self._password)
                smtp.ehlo_or_helo_if_needed()
                utf8 = not (self.mail_from + message.recipient).isascii()
                options = ["SMTPUTF8"] if utf8 and smtp.has_extn("smtputf8") else []
                code, answer = smtp.mail(self.mail_from, options)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, answer, self.mail_from)
                code, answer = smtp.rcpt(message.recipient)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({message.recipient: (code, answer)})
                code, answer = smtp.data(email.as_bytes())
                if code != 250:
                    raise smtplib.SMTPDataError(code, answer)
        except smtplib.SMTPNotSupportedError:
            raise MessagingNotConfigured(f"{where} does not offer STARTTLS: set OUTCOMES_SMTP_SECURITY to ssl "
                                         "(port 465) or, for a relay on this machine only, none") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise MessageRefused(f"{where} refused the login of {self.user!r} ({_smtp_answer(exc)}): check "
                                 "OUTCOMES_SMTP_USER and OUTCOMES_SMTP_PASSWORD", code=exc.smtp_code) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code, answer = next(iter(exc.recipients.values()))
            raise _by_code(code, f"{where} refused the recipient ({code} {_text(answer)})") from None
        except smtplib.SMTPSenderRefused as exc:
            raise _by_code(exc.smtp_code, f"{where} refused the sender {self.mail_from!r} ({_smtp_answer(exc)}): "
                                          "check OUTCOMES_MAIL_FROM") from None
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"{where} did not accept the message ({_smtp_answer(exc)})") from None
        except ssl.SSLError as exc:
            raise TransportUnavailable(f"{where}: TLS failed ({exc.reason or exc}); check OUTCOMES_SMTP_SECURITY "
                                       "and the server's certificate") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportUnavailable(f"{where} cannot be reached ({_os_reason(exc)}); a later run tries again")\
                from None
        return Delivery(email["Message-ID"], f"{code} {_text(answer)}"[:500])


def _text(answer: bytes | str) -> str:
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)


def _smtp_answer(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _by_code(code: int, text: str) -> MessageNotSent:
    """SMTP 4xx is a temporary failure of the server's; 5xx refuses the message."""
    if 400 <= int(code) < 500:
        return TransportUnavailable(text + "; a later run tries again")
    return MessageRefused(text, code=code)


class TwilioSMS:
    """SMS through Twilio's REST API: ``POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json`` with the
    form fields ``To``, ``From`` and ``Body`` and HTTP basic auth (account SID, auth token).

    The answer's ``sid`` and ``status`` are kept, never its echo of the body (which holds the link).
    Error 21610 (the recipient replied STOP) raises :class:`~outcomes.errors.RecipientOptedOut`.
    """

    channel = "sms"

    def __init__(self, *, api_base: str, account_sid: str, auth_token: str, sender: str,
                 timeout: float = HTTP_TIMEOUT_S):
        self.api_base, self.account_sid, self._auth_token = api_base.rstrip("/"), account_sid, auth_token
        self.sender, self.timeout = sender, timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSMS:
        return cls(api_base=settings.sms_api_base, account_sid=settings.sms_account_sid,
                   auth_token=settings.sms_auth_token, sender=settings.sms_from)

    def __repr__(self) -> str:
        return f"TwilioSMS({self.api_base}, {self.account_sid})"

    @property
    def url(self) -> str:
        return f"{self.api_base}/2010-04-01/Accounts/{urllib.parse.quote(self.account_sid, safe='')}/Messages.json"

    def send(self, message: Message) -> Delivery:
        if not (self.account_sid and self._auth_token and self.sender):
            raise MessagingNotConfigured(
                "SMS is not configured: set OUTCOMES_SMS_ACCOUNT_SID, OUTCOMES_SMS_AUTH_TOKEN (environment or "
                ".streamlit/secrets.toml) and OUTCOMES_SMS_FROM (docs/operations.md, Reminders)")
        body = urllib.parse.urlencode({"To": message.recipient, "From": self.sender, "Body": message.text})
        auth = base64.b64encode(f"{self.account_sid}:{self._auth_token}".encode()).decode("ascii")
        request = urllib.request.Request(self.url, data=body.encode(), method="POST", headers={
            "Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json"})
        where = f"The SMS provider ({self.api_base})"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status, data = answer.status, _json(answer.read())
        except urllib.error.HTTPError as exc:
            status, data = exc.code, _json(exc.read())
            code, text = data.get("code"), data.get("message") or exc.reason
            said = f"HTTP {status}" + (f", error {code}" if code else "") + f": {text}"
            if code == TWILIO_UNSUBSCRIBED:
                raise RecipientOptedOut(f"{where} says the recipient unsubscribed ({said}); their messages are "
                                        "stopped", code=code) from None
            if status in (401, 403):
                raise MessageRefused(f"{where} refused our account ({said}): check OUTCOMES_SMS_ACCOUNT_SID and "
                                     "OUTCOMES_SMS_AUTH_TOKEN", code=code or status) from None
            if status == 429 or status >= 500:
                raise TransportUnavailable(f"{where} failed ({said}); a later run tries again") from None
            raise MessageRefused(f"{where} refused the message ({said})", code=code or status) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            said = _os_reason(reason) if isinstance(reason, BaseException) else str(reason)
            raise TransportUnavailable(f"{where} cannot be reached ({said}); a later run tries again") from None
        sid = data.get("sid")
        return Delivery(sid, f"HTTP {status}; sid {sid}; status {data.get('status')}")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class SinkSender:
    """The demo database's transport: sends nothing out, answers "demo sink" (``sent`` keeps the messages,
    for a test or a look)."""

    def __init__(self, channel: str):
        self.channel = channel
        self.sent: list[Message] = []

    def __repr__(self) -> str:
        return f"SinkSender({self.channel})"

    def send(self, message: Message) -> Delivery:
        self.sent.append(message)
        return Delivery(f"sink-{self.channel}-{len(self.sent)}", "demo sink: not sent")


def default_senders(db: storage.Database, settings: Settings) -> dict[str, Sender]:
    """The transports of this database: the sink on the synthetic demo database, else SMTP and Twilio from
    the settings (a channel without its settings fails its messages with the settings to set)."""
    if storage.is_synthetic(db):
        return {c: SinkSender(c) for c in CHANNELS}
    return {"email": EmailSender.from_settings(settings), "sms": TwilioSMS.from_settings(settings)}


# Planning (pure) ----------------------------------------------------------------------------------------

PLAN_COLUMNS = ("patient_id", "series_id", "slot", "due_on", "closes_on", "step", "channel", "recipient")


def clinic_day(now: datetime, settings: Settings) -> date:
    """The day it is at the clinic at ``now``: the default ``as_of`` of a run."""
    return now.astimezone(settings.clinic_zone).date()


def quiet(now: datetime, hours: tuple[int, int] | None, zone: tzinfo) -> bool:
    """Whether ``now`` falls in the quiet hours ``(start, end)`` of the clinic's zone (from ``start`` o'clock
    up to, not including, ``end`` o'clock; across midnight when ``start > end``)."""
    if not hours:
        return False
    start, end = hours
    hour = now.astimezone(zone).hour
    return (start <= hour or hour < end) if start > end else (start <= hour < end)


def eligible_contacts(contacts: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Contacts that may be messaged: active patient, channel email or sms, consent recorded, no opt-out.
    Columns ``patient_id, channel, recipient``."""
    active = set(patients.loc[patients["disposition"].eq("active"), "patient_id"])
    ok = (contacts["channel"].isin(CHANNELS) & contacts["consent_on"].notna() & contacts["opted_out_at"].isna()
          & contacts["patient_id"].isin(active))
    c = contacts[ok]
    recipient = c["email"].where(c["channel"].eq("email"), c["phone"])
    return pd.DataFrame({"patient_id": c["patient_id"].to_numpy(), "channel": c["channel"].to_numpy(),
                         "recipient": recipient.to_numpy()}).dropna(subset=["recipient"])


def plan_steps(open_slots: pd.DataFrame, contacts: pd.DataFrame, sent: pd.DataFrame, *, as_of: date,
               zone: tzinfo) -> pd.DataFrame:
    """The step each open, undone slot is owed on ``as_of``: :data:`PLAN_COLUMNS`, one row per message.

    ``open_slots`` is ``followup.slots(..., only_open=True)``; ``contacts`` is :func:`eligible_contacts`;
    ``sent`` is ``storage.load_sent_steps``. The invitation is owed from the due day until it is sent; the
    reminder from ``reminder_on``, only when the invitation went out on an earlier day (in the clinic's
    zone) and no reminder was sent yet. A slot owes at most one step per run.
    """
    s = open_slots[open_slots["status"].isin(("due", "overdue"))]
    m = s.merge(contacts, on="patient_id", how="inner")
    if len(sent):
        m = m.merge(sent, on=["patient_id", "series_id", "slot"], how="left")
    else:
        m = m.assign(invitation_sent=pd.NaT, reminder_sent=pd.NaT)
    day = pd.Timestamp(as_of)
    invited = pd.to_datetime(m["invitation_sent"], utc=True)
    invited_day = invited.dt.tz_convert(zone).dt.tz_localize(None).dt.normalize()
    invitation = invited.isna()
    reminder = (~invitation & (invited_day < day) & (m["reminder_on"] <= day)
                & pd.to_datetime(m["reminder_sent"], utc=True).isna())
    m = m.assign(step=pd.Series(None, index=m.index, dtype=object).mask(invitation, "invitation")
                 .mask(reminder, "reminder"))
    m = m[m["step"].notna()]
    out = m.loc[:, list(PLAN_COLUMNS)].reset_index(drop=True)
    out["series_id"] = out["series_id"].astype("int64")
    return out


def stale_messages(pending: pd.DataFrame, open_slots: pd.DataFrame, contacts: pd.DataFrame) -> pd.DataFrame:
    """Planned or failed messages that must not go out any more, with the reason: ``message_id, reason``.

    A message stays good while its slot is open and undone and its patient can be messaged (active, a
    channel with consent, no opt-out); otherwise it is cancelled: the questionnaire was done, the slot
    closed, the patient left active follow-up or has no channel with consent now.
    """
    p = pending[pending["step"].ne("test")]
    keyed = open_slots.set_index(["patient_id", "series_id", "slot"])["status"]
    index = pd.MultiIndex.from_arrays([p["patient_id"], p["series_id"].astype("int64"), p["slot"]])
    status = pd.Series(keyed.reindex(index).to_numpy(), index=p.index)
    reachable = p["patient_id"].isin(set(contacts["patient_id"]))
    reason = pd.Series(None, index=p.index, dtype=object)
    reason = reason.mask(~reachable, "the patient cannot be messaged now (not in active follow-up, or no "
                                     "channel with consent)")
    reason = reason.mask(status.eq("inactive"), "the patient left active follow-up")
    reason = reason.mask(status.isna() | status.isin(("upcoming", "missed")), "the slot is no longer open")
    reason = reason.mask(status.eq("done"), "the questionnaire was done")
    stale = reason.notna()
    return pd.DataFrame({"message_id": p.loc[stale, "message_id"].astype("int64").to_numpy(),
                         "reason": reason[stale].to_numpy()})


# The run ------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What planning found (and, unless a dry run, wrote): the open slots, the messages owed, the stale
    ones cancelled and the ids ready to claim."""

    open_slots: pd.DataFrame
    owed: pd.DataFrame
    stale: pd.DataFrame
    planned: int
    cancelled: int
    ready: list[int]
    closes_on: dict[tuple[str, int, str], date]


def plan(db: storage.Database, *, as_of: date, settings: Settings, now: datetime, dry_run: bool = False) -> Plan:
    """Read the schedule, contacts and outbox; cancel stale messages and plan owed ones (skipped when
    ``dry_run``). This is what ``python -m bench`` times on the L cohort."""
    zone = settings.clinic_zone
    schedule = followup.Schedule.from_settings(settings)
    inputs = storage.load_followup_inputs(db, days_since=schedule.open_since(as_of))
    open_slots = followup.slots(inputs, as_of=as_of, schedule=schedule, only_open=True)
    contacts = eligible_contacts(storage.load_contacts(db), inputs["patients"])
    owed = plan_steps(open_slots, contacts, storage.load_sent_steps(db), as_of=as_of, zone=zone)
    pending = storage.load_outbox(db, status=("planned", "failed"))
    stale = stale_messages(pending, open_slots, contacts)
    closes_on = {(p, int(s), k): c.date() for p, s, k, c in
                 zip(open_slots["patient_id"], open_slots["series_id"], open_slots["slot"], open_slots["closes_on"])}
    if dry_run:
        return Plan(open_slots, owed, stale, 0, 0, [], closes_on)
    cancelled = 0
    for reason, group in stale.groupby("reason"):
        cancelled += storage.cancel_messages(db, group["message_id"].tolist(), reason=str(reason))
    records = owed.drop(columns="closes_on").assign(due_on=owed["due_on"].dt.date).to_dict("records")
    planned = storage.plan_messages(db, records, by=ACTOR, now=now) if records else 0
    # What is ready to send: planned now or earlier (by this run or another), or failed and not given up,
    # for a slot still owed a message.
    pending = storage.load_outbox(db, status=("planned", "failed"))
    pending = pending[pending["step"].ne("test") & (pending["attempts"] < settings.message_max_attempts)]
    keys = set(zip(open_slots["patient_id"], open_slots["series_id"].astype("int64"), open_slots["slot"]))
    good = [k in keys for k in zip(pending["patient_id"], pending["series_id"].astype("int64"), pending["slot"])]
    ready = sorted(pending.loc[good, "message_id"].astype("int64").tolist()) if len(pending) else []
    return Plan(open_slots, owed, stale, planned, cancelled, ready, closes_on)


@dataclass
class RunReport:
    """What a reminder run did (lifelines style: results in attributes).

    ``outcome`` is ``ok``, ``failures`` (some messages failed or were given up), ``quiet_hours`` or
    ``dry_run``. ``messages`` lists each message sent or tried (or, in a dry run, that would be sent), without
    addresses or text: ``message_id, patient_id, series_id, slot, due_on, step, channel, status, error``.
    """

    as_of: date
    dry_run: bool = False
    run_id: int | None = None
    outcome: str = "ok"
    planned: int = 0
    cancelled: int = 0
    interrupted: int = 0
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    opted_out: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("planned", "cancelled", "interrupted", "sent", "failed", "gave_up",
                                              "opted_out")}

    def describe(self) -> str:
        """A short summary for the command line."""
        if self.outcome == "quiet_hours":
            return (f"Reminders for {self.as_of}: quiet hours in the clinic's time zone, nothing planned or sent "
                    "(the quiet_hours setting).")
        if self.dry_run:
            steps = pd.Series([m["step"] for m in self.messages], dtype=object).value_counts()
            detail = ", ".join(f"{n} {s}{'' if n == 1 else 's'}" for s, n in steps.items()) or "nothing"
            return f"Reminders for {self.as_of} (dry run, nothing written): would send {detail}."
        text = (f"Reminders for {self.as_of}: {self.planned} planned, {self.sent} sent, {self.failed} failed (tried "
                f"again by the next run), {self.gave_up} given up")
        extra = [f"{n} {what}" for n, what in ((self.cancelled, "cancelled"), (self.opted_out, "opted out by the "
                 "provider"), (self.interrupted, "left by an interrupted run, given up")) if n]
        text += ("; " + ", ".join(extra) if extra else "") + "."
        errors = sorted({m["error"] for m in self.messages if m.get("error")})
        for error in errors[:5]:
            text += f"\n  - {error}"
        if self.gave_up or self.interrupted:
            text += "\nGiven-up messages are listed on the Reminders page (docs/operations.md, Reminders)."
        return text

    def to_json(self) -> Any:
        """The dry run's list of messages, or the run's counts and messages, ready for ``json.dumps``."""
        messages = [{k: (v.isoformat() if isinstance(v, date) else v) for k, v in m.items()} for m in self.messages]
        if self.dry_run:
            return messages
        return {"run_id": self.run_id, "as_of": self.as_of.isoformat(), "outcome": self.outcome, **self.counts(),
                "messages": messages}


def run(db: storage.Database, *, as_of: date, settings: Settings, now: datetime,
        senders: Mapping[str, Sender] | None = None, dry_run: bool = False) -> RunReport:
    """Plan and send the invitations and reminders owed on ``as_of`` (module docstring); returns a
    :class:`RunReport`. Failures of single messages are in the report; an exception means the run could not
    work at all (the database), and is recorded in ``remind_runs`` when it can be."""
    report = RunReport(as_of=as_of, dry_run=dry_run)
    zone = settings.clinic_zone
    if quiet(now, settings.quiet_hours, zone):
        report.outcome = "quiet_hours"
        if not dry_run:
            report.run_id = storage.start_run(db, as_of=as_of, dry_run=False, now=now)
            # No audit entry: nothing was read or sent (a run every 15 minutes would fill the log each night).
            storage.finish_run(db, report.run_id, now=now, planned=0, sent=0, failed=0, outcome="quiet_hours")
        return report
    if dry_run:
        return _dry_run(db, report, settings=settings, now=now)

    report.run_id = storage.start_run(db, as_of=as_of, dry_run=False, now=now)
    try:
        report.interrupted = storage.give_up_interrupted(db, claimed_before=now - INTERRUPTED_AFTER)
        planned = plan(db, as_of=as_of, settings=settings, now=now)
        report.planned, report.cancelled = planned.planned, planned.cancelled
        senders = default_senders(db, settings) if senders is None else senders
        for start in range(0, len(planned.ready), CLAIM_BATCH):
            batch = storage.claim_messages(db, by=f"{ACTOR}:{report.run_id}", now=now,
                                           max_attempts=settings.message_max_attempts,
                                           ids=planned.ready[start:start + CLAIM_BATCH])
            for message in batch:
                report.messages.append(_send(db, message, planned.closes_on, senders, settings, now, report))
    except Exception as exc:
        report.outcome = "error"
        try:
            storage.finish_run(db, report.run_id, now=now, planned=report.planned, sent=report.sent,
                               failed=report.failed + report.gave_up, outcome="error", error=str(exc))
        except Exception:  # noqa: BLE001 - the database itself failed; the original error says why
            pass
        raise
    report.outcome = "failures" if report.failed or report.gave_up or report.interrupted else "ok"
    storage.finish_run(db, report.run_id, now=now, planned=report.planned, sent=report.sent,
                       failed=report.failed + report.gave_up, outcome=report.outcome)
    storage.append_audit(db, actor=ACTOR, action="remind_run",
                         details={"run_id": report.run_id, "as_of": as_of.isoformat(), "outcome": report.outcome,
                                  **report.counts()})
    return report


def _dry_run(db: storage.Database, report: RunReport, *, settings: Settings, now: datetime) -> RunReport:
    """What a run would send now, without writing: owed steps not yet in the outbox, then retries."""
    planned = plan(db, as_of=report.as_of, settings=settings, now=now, dry_run=True)
    outbox = storage.load_outbox(db)
    outbox = outbox[outbox["step"].ne("test")]
    known = set(zip(outbox["patient_id"], outbox["series_id"].astype("int64"), outbox["slot"], outbox["step"]))
    stale = set(planned.stale["message_id"])
    for m in planned.owed.itertuples(index=False):
        if (m.patient_id, int(m.series_id), m.slot, m.step) not in known:
            report.messages.append({"message_id": None, "patient_id": m.patient_id, "series_id": int(m.series_id),
                                    "slot": m.slot, "due_on": m.due_on.date(), "step": m.step,
                                    "channel": m.channel, "attempt": 1})
    retry = outbox[outbox["status"].isin(("planned", "failed"))
                   & (outbox["attempts"] < settings.message_max_attempts) & ~outbox["message_id"].isin(stale)]
    for m in retry.sort_values("message_id").itertuples(index=False):
        report.messages.append({"message_id": int(m.message_id), "patient_id": m.patient_id,
                                "series_id": int(m.series_id), "slot": m.slot, "due_on": m.due_on.date(),
                                "step": m.step, "channel": m.channel, "attempt": int(m.attempts) + 1})
    report.planned = len(report.messages)
    report.outcome = "dry_run"
    return report


def _send(db: storage.Database, message: Mapping[str, Any], closes_on: Mapping[tuple[str, int, str], date],
          senders: Mapping[str, Sender], settings: Settings, now: datetime, report: RunReport) -> dict[str, Any]:
    """Send one claimed message with fresh links and record the answer; returns its line of the report."""
    line = {k: message[k] for k in ("message_id", "patient_id", "series_id", "slot", "due_on", "step", "channel")}
    made: list[int] = []
    try:
        if not settings.public_url:
            raise MessagingNotConfigured("The links need the app's address: set OUTCOMES_PUBLIC_URL to the address "
                                         "patients open the app at (e.g. https://outcomes.clinic.example)")
        sender = senders.get(message["channel"])
        if sender is None:
            raise MessagingNotConfigured(f"No transport for {message['channel']} messages")
        key = (message["patient_id"], int(message["series_id"]), message["slot"])
        last_day = closes_on.get(key) or message["due_on"] + timedelta(days=settings.checkin_cadence_days - 1)
        zone = settings.clinic_zone
        checkin = links.new_token()
        made.append(storage.add_link(db, token_hash=links.token_hash(checkin), purpose="checkin",
                                     patient_id=message["patient_id"], expires_at=links.end_of_day(last_day, zone),
                                     by=ACTOR, now=now, series_id=key[1], slot=key[2],
                                     message_id=message["message_id"]))
        stop_url = None
        if message["channel"] == "email":
            stop = links.new_token()
            made.append(storage.add_link(db, token_hash=links.token_hash(stop), purpose="stop",
                                         patient_id=message["patient_id"],
                                         expires_at=now + timedelta(days=links.STOP_LINK_DAYS), by=ACTOR, now=now,
                                         series_id=key[1], slot=key[2], message_id=message["message_id"]))
            stop_url = links.link_url(settings.public_url, "stop", stop)
        text = compose(message["step"], message["channel"], recipient=message["recipient"],
                       clinic_name=settings.clinic_name, checkin_url=links.link_url(settings.public_url, "checkin",
                                                                                    checkin),
                       stop_url=stop_url, closes_on=last_day)
        delivery = sender.send(text)
    except MessageNotSent as exc:
        for link_id in made:  # never delivered: the links must not open anything
            storage.revoke_links(db, message["patient_id"], by=ACTOR, now=now, link_id=link_id)
        status = _finish(db, message, now=now, settings=settings, sent=False, error=exc.reason)
        if isinstance(exc, RecipientOptedOut) and storage.opt_out(db, message["patient_id"], by=ACTOR, now=now):
            report.opted_out += 1
        _count(report, status)
        return {**line, "status": status, "error": exc.reason}
    status = _finish(db, message, now=now, settings=settings, sent=True, provider_id=delivery.provider_id,
                     response=delivery.response)
    _count(report, status)
    return {**line, "status": status, "error": None}


def _finish(db: storage.Database, message: Mapping[str, Any], *, now: datetime, settings: Settings, sent: bool,
            provider_id: str | None = None, response: str | None = None, error: str | None = None) -> str:
    try:
        return storage.finish_message(db, message["message_id"], sent=sent, now=now,
                                      max_attempts=settings.message_max_attempts, provider_id=provider_id,
                                      provider_response=response, error=error)
    except ValidationError:  # another run gave it up as interrupted meanwhile: it stays given up
        return "gave_up"


def _count(report: RunReport, status: str) -> None:
    if status == "sent":
        report.sent += 1
    elif status == "failed":
        report.failed += 1
    else:
        report.gave_up += 1


# The Reminders page (admin only) ------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxView:
    """What the Reminders page shows: the last ``runs``, the messages that need ``attention`` (failed, to be
    tried again, or given up; test messages left out) and the ``outbox`` as filtered, newest first."""

    runs: pd.DataFrame
    attention: pd.DataFrame
    outbox: pd.DataFrame


def read_outbox(db: storage.Database, actor: User, *, status: str | None = None, step: str | None = None,
                channel: str | None = None, patient_id: str | None = None, day: date | None = None,
                limit: int = 5000, runs: int = 10) -> OutboxView:
    """The Reminders page's data (admin only); one ``view_outbox`` audit entry with the filters.

    Filters of the outbox: ``status``, ``step``, ``channel``, ``patient_id`` and ``day`` (the UTC day it was
    planned). Columns :data:`storage.OUTBOX_COLUMNS`: the recipient and the provider's answer are there for
    the administrator to check; a message's text (which holds its links) is never stored.
    """
    admin = require_role(db, actor, "admin", action="view_outbox")
    since = None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)
    frame = storage.load_outbox(db, status=status, patient_id=patient_id or None, step=step, since=since)
    if day is not None:
        frame = frame[frame["planned_at"] < pd.Timestamp(since + timedelta(days=1))]
    if channel is not None:
        frame = frame[frame["channel"].eq(channel)]
    attention = storage.load_outbox(db, status=("failed", "gave_up"))
    storage.append_audit(db, actor=admin.username, action="view_outbox", details={
        k: str(v) for k, v in (("status", status), ("step", step), ("channel", channel), ("patient_id", patient_id),
                               ("day", day)) if v})
    return OutboxView(storage.load_runs(db, limit=runs),
                      attention[attention["step"].ne("test")].reset_index(drop=True),
                      frame.head(limit).reset_index(drop=True))


@dataclass(frozen=True)
class TestResult:
    """How a test message went: its outbox row, status, and the provider's answer or the reason it failed."""

    message_id: int
    status: str
    provider_id: str | None
    response: str | None
    error: str | None


def clean_recipient(channel: Any, recipient: Any, *, region: str = "US") -> tuple[str, str]:
    """``(channel, address)`` for a test message: an email address (``email-validator``) or a mobile number
    (``phonenumbers``, E.164). Raises :class:`ValidationError` naming the field."""
    f = _Fields(None)
    if channel not in CHANNELS:
        raise ValidationError(f"Cannot send a test message by {channel!r}", ["channel must be email or sms"])
    value = (clean_email(f, "email", recipient) if channel == "email"
             else clean_phone(f, "mobile number", recipient, region=region))
    if value is None and not f.problems:
        f.problems.append(f"{'email' if channel == 'email' else 'mobile number'} is required")
    if f.problems:
        raise ValidationError("Cannot send the test message", f.problems)
    return channel, value


def send_test(db: storage.Database, actor: User, *, channel: str, recipient: str, settings: Settings,
              now: datetime, senders: Mapping[str, Sender] | None = None) -> TestResult:
    """Send a test message (admin only) through the outbox as step ``test``; returns the provider's answer.

    The address is checked first (:func:`clean_recipient`). The message says only that it is a test from
    the clinic. It is tried once: a failure is ``gave_up`` at once (no run retries a test). Audited as
    ``send_test_message`` with the channel and the outcome, never the address.
    """
    admin = require_role(db, actor, "admin", action="send_test_message")
    channel, address = clean_recipient(channel, recipient, region=settings.phone_region)
    by = f"{admin.username}:test"
    storage.plan_messages(db, [{"step": "test", "channel": channel, "recipient": address}], by=by, now=now)
    mine = storage.load_outbox(db, status="planned", step="test")
    mine = mine[mine["planned_by"].eq(by) & mine["recipient"].eq(address)]
    message_id = int(mine["message_id"].max())
    claimed = storage.claim_messages(db, by=by, now=now, max_attempts=1, ids=[message_id])
    if not claimed:  # another tab of the same administrator took it
        raise ValidationError("The test message was already being sent; look at the outbox below")
    sender = (default_senders(db, settings) if senders is None else senders).get(channel)
    try:
        if sender is None:
            raise MessagingNotConfigured(f"No transport for {channel} messages")
        delivery = sender.send(compose("test", channel, recipient=address, clinic_name=settings.clinic_name))
    except MessageNotSent as exc:
        status = storage.finish_message(db, message_id, sent=False, now=now, max_attempts=1, error=exc.reason)
        result = TestResult(message_id, status, None, None, exc.reason)
    else:
        status = storage.finish_message(db, message_id, sent=True, now=now, max_attempts=1,
                                        provider_id=delivery.provider_id, provider_response=delivery.response)
        result = TestResult(message_id, status, delivery.provider_id, delivery.response, None)
    storage.append_audit(db, actor=admin.username, action="send_test_message",
                         details={"message_id": message_id, "channel": channel, "status": status})
    return result
