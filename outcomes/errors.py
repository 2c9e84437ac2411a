"""One exception per failure mode. Every message says what is wrong, where, and how to fix it.

Pages catch :class:`OutcomesError` and show ``str(exc)``; anything else is a bug and propagates.
"""

from __future__ import annotations


class OutcomesError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(OutcomesError, ValueError):
    """A setting has a value of the wrong type or outside its allowed range."""


class InstrumentDefinitionError(OutcomesError):
    """A file under ``data/instruments`` is missing, malformed or inconsistent."""


class UnknownForm(OutcomesError, KeyError):
    """A form key that is not defined in the instrument registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidResponse(OutcomesError, ValueError):
    """An item response that cannot be scored: unknown item, wrong type or out of range."""


class ValidationError(OutcomesError, ValueError):
    """Input rejected before any write; ``problems`` lists every reason, one per line."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        full = message if not self.problems else message + "\n" + "\n".join(f"- {p}" for p in self.problems)
        super().__init__(full)


class ImportRejected(ValidationError):
    """A CSV import with at least one bad row; nothing was written."""


class NotFound(OutcomesError, LookupError):
    """A patient, series or other record that does not exist."""


class PermissionDenied(OutcomesError, PermissionError):
    """The acting user may not read or write this record."""


class DuplicateRecord(OutcomesError, ValueError):
    """A record that would violate a uniqueness rule (for example a patient ID already enrolled)."""


class MissingColumns(OutcomesError, ValueError):
    """A DataFrame handed to an analysis function lacks columns it needs."""


class InsufficientData(OutcomesError):
    """Too few observations to compute a result at all (not a caveat: caveats go in ``notes``)."""


# Accounts, sign-in and the clinic's daily work (outcomes/auth.py, outcomes/clinic.py) -------------


class LoginFailed(OutcomesError):
    """A sign-in that did not succeed; one generic message whatever the reason, so that it never
    reveals whether a username exists or an account is locked."""


class WeakPassword(ValidationError):
    """A new password that breaks the password rules; ``problems`` lists every rule broken."""


class WrongPassword(OutcomesError):
    """The current password given to confirm a change is not the account's password."""


class InvitationInvalid(OutcomesError):
    """An invitation code that is unknown, expired, replaced or already used."""


class IdentityNotRegistered(PermissionDenied):
    """A signed-in identity (OIDC email) that matches no active user of this clinic."""


class SessionExpired(OutcomesError):
    """A session that was idle too long or whose identity-provider sign-in is too old."""


class CheckinExists(DuplicateRecord):
    """The patient already has a check-in on that day; submit again with ``replace=True`` to replace it."""

    def __init__(self, message: str, *, patient_id: str = "", assessed_on: object = None):
        super().__init__(message)
        self.patient_id = patient_id
        self.assessed_on = assessed_on


class CheckinNotScorable(ValidationError):
    """A check-in in which no questionnaire has enough answers to be scored; nothing was saved."""


class NotADemoDatabase(OutcomesError):
    """Demo-only actions (demo accounts) asked of a database not flagged as synthetic."""


class StorageUnavailable(OutcomesError):
    """The database cannot be written (disk full, read-only file or disk, busy far too long) or reached.

    Raised instead of ``sqlite3.OperationalError`` by every write, after its transaction has been rolled
    back: nothing of the attempted change is stored. ``reason`` is ``disk_full``, ``read_only``, ``busy``
    or ``unreachable``. The condition is outside the app; once it clears, the same action works again.
    """

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


# Sending invitations and reminders (outcomes/messaging.py) ----------------------------------------------


class MessageNotSent(OutcomesError):
    """A message that was not handed over to the mail server or SMS provider; ``reason`` is what the outbox
    records and the Reminders page shows. The reminder run retries it up to ``message_max_attempts``."""

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class MessagingNotConfigured(MessageNotSent):
    """A channel whose settings are missing (SMTP server and sender, SMS account, token and sender number, or
    the public address for links); the message names the settings to set."""


class TransportUnavailable(MessageNotSent):
    """The mail server or SMS provider could not be reached, timed out or failed on its side (SMTP 4xx,
    HTTP 5xx): nothing is wrong with the message, a later run tries again."""


class MessageRefused(MessageNotSent):
    """The mail server or SMS provider refused this message (its address, the sender, or our login)."""

    def __init__(self, message: str, *, reason: str | None = None, code: int | str | None = None):
        super().__init__(message, reason=reason)
        self.code = code


class RecipientOptedOut(MessageRefused):
    """The SMS provider says the recipient unsubscribed (replied STOP; Twilio error 21610): the patient's
    messages are stopped, as if staff had recorded the opt-out."""
