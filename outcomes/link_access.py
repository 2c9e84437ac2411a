"""What a one-tap link opens: a check-in link becomes a check-in session, a stop link stops the messages.

docs/authentication.md, "One-tap links". The tokens themselves are made and hashed in ``outcomes.links``;
this module decides what presenting one does, and audits it:

* A token is checked by its shape first (``links.looks_like_token``), then counted against the client's
  address in the sign-in throttle (``auth``'s address bucket: the same allowance and one-a-minute leak as
  failed sign-ins, invitation codes and setup tokens) *before* it is looked up, so guessing from one client
  is slowed and then refused however many tokens it tries at once. A good link gives its count back.
* A good check-in link is used once (``storage.use_link``) and exchanged for an :class:`auth.LinkUser`, which
  ``auth.require_role`` lets do :data:`auth.LINK_ACTIONS` for the link's patient only, until the link
  expires or is revoked. No patient account is needed.
* A used, expired, revoked, forged or malformed link gets :data:`LINK_INVALID`, the same for all (the
  storage cannot tell them apart either), so the answer says nothing about which it was.
* Every presentation is audited: ``link_used`` (with the patient and the link's id), ``link_refused``
  (no patient, a keyed digest of the client address; refusals past the address's allowance are summed up
  like failed sign-ins). The token is never written anywhere, not even its hash in the audit log.

Example
-------
>>> from datetime import UTC, datetime, timedelta
>>> from outcomes import storage
>>> db = storage.connect(":memory:")
>>> now = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
>>> try:
...     open_checkin_link(db, "not a token", now=now)
... except LinkRefused as exc:
...     print(exc)
This link can't be used any more. Ask your clinic for a new link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import links, storage
from .auth import LINK_ENDED, LinkUser, _address_buckets, _audit_attempt, _client
from .errors import OutcomesError
from .settings import Settings

#: The one answer to a link that cannot be used, whatever the reason.
LINK_INVALID = LINK_ENDED
#: Who stopped the messages, in the contacts and the audit log.
STOP_BY = "patient (stop link)"
#: The audit log's actor for refused links (nobody is known).
REFUSED_ACTOR = "(link)"


class LinkRefused(OutcomesError):
    """The link cannot be used (:data:`LINK_INVALID`), or this client must wait after too many bad ones."""


@dataclass(frozen=True)
class StopLink:
    """A valid stop link, waiting for the patient to confirm. ``token_hash`` re-checks it at confirmation."""

    link_id: int
    patient_id: str
    token_hash: str


def link_user(link: dict[str, Any]) -> LinkUser:
    """The session user of a check-in link that ``storage.use_link`` accepted."""
    link_id = int(link["link_id"])
    return LinkUser(id=-link_id, username=f"link:{link_id}", role="patient", patient_id=link["patient_id"],
                    display_name="Check-in link", link_id=link_id, expires_at=link["expires_at"])


def _wait(until: datetime, now: datetime) -> str:
    minutes = max(1, math.ceil((until - now).total_seconds() / 60))
    return (f"Too many links that cannot be used were opened from here. Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''} (after {until.astimezone(UTC):%H:%M} UTC), or ask your clinic.")


def _use(db: storage.Database, token: Any, purpose: str, *, now: datetime, settings: Settings | None,
         address: str | None, single_use: bool, browser: str | None = None) -> dict[str, Any]:
    """Throttle, look up and use a link; audit a refusal and raise :class:`LinkRefused`."""
    buckets = _address_buckets(address, settings)
    claim = storage.claim_attempt(db, buckets, now=now)
    if not claim.allowed:
        _audit_attempt(db, claim, actor=REFUSED_ACTOR, action="link_refused",
                       details={"purpose": purpose, "reason": "throttled", **_client(db, address)})
        raise LinkRefused(_wait(claim.until, now))
    shaped = links.looks_like_token(token)
    link = storage.use_link(db, links.token_hash(token), purpose=purpose, now=now, single_use=single_use,
                            browser=browser) if shaped else None
    if link is None:
        _audit_attempt(db, claim, actor=REFUSED_ACTOR, action="link_refused",
                       details={"purpose": purpose,
                                "reason": "unknown, used, expired or revoked" if shaped else "malformed",
                                **_client(db, address)})
        raise LinkRefused(LINK_INVALID)
    if buckets:  # a good link: not a failure of this address
        storage.settle_attempt(db, give_back=buckets)
    return link


def open_checkin_link(db: storage.Database, token: Any, *, now: datetime, settings: Settings | None = None,
                      address: str | None = None, browser: str | None = None) -> LinkUser:
    """Exchange a check-in link's token for the session user of its patient.

    The first use binds the link to ``browser`` (the digest of the browser's cookie, ``ui.session.browser``):
    until the check-in is sent through it, that browser may open it again (a reload, a tab the phone
    discarded) and finds its unsent answers; any other browser, and any browser once the check-in was sent,
    gets :data:`LINK_INVALID` (``storage.use_link``). Without a ``browser`` (a notebook, tests) a link
    opens once.

    ``address`` (with ``settings``) is the client's network address, whose bucket of the sign-in throttle
    counts the attempt before the look-up; without it (a notebook, tests) nothing is throttled.

    Raises
    ------
    LinkRefused
        :data:`LINK_INVALID` for a malformed, unknown, used, expired or revoked token alike; a wait message
        when this address has presented too many of them.
    """
    link = _use(db, token, "checkin", now=now, settings=settings, address=address, single_use=True,
                browser=browser)
    user = link_user(link)
    storage.append_audit(db, actor=user.username, action="link_used", patient_id=user.patient_id,
                         details={"purpose": "checkin", "link_id": user.link_id, "slot": link.get("slot"),
                                  "reopened": bool(link.get("reopened")),
                                  "expires_at": link["expires_at"].isoformat(), **_client(db, address)})
    return user


def open_stop_link(db: storage.Database, token: Any, *, now: datetime, settings: Settings | None = None,
                   address: str | None = None) -> StopLink:
    """Check a "stop these messages" link when it is opened (it may be opened again: it is not used up).

    Nothing is stopped yet: :func:`stop_messages` does that once the patient confirms.

    Raises
    ------
    LinkRefused
        As :func:`open_checkin_link`.
    """
    link = _use(db, token, "stop", now=now, settings=settings, address=address, single_use=False)
    storage.append_audit(db, actor=f"link:{link['link_id']}", action="link_used", patient_id=link["patient_id"],
                         details={"purpose": "stop", "link_id": int(link["link_id"]), **_client(db, address)})
    return StopLink(link_id=int(link["link_id"]), patient_id=link["patient_id"],
                    token_hash=links.token_hash(token))


def stop_messages(db: storage.Database, stop: StopLink, *, now: datetime) -> bool:
    """Stop every message to the stop link's patient (contact channel ``none``, planned messages cancelled),
    after checking the link again (it may have been revoked since it was opened). Harmless to repeat.

    Returns
    -------
    bool
        True when messages were on until now, False when they already were off.

    Raises
    ------
    LinkRefused
        :data:`LINK_INVALID`: the link is no longer valid.
    """
    link = storage.use_link(db, stop.token_hash, purpose="stop", now=now, single_use=False)
    if link is None or int(link["link_id"]) != stop.link_id:
        storage.append_audit(db, actor=REFUSED_ACTOR, action="link_refused",
                             details={"purpose": "stop", "reason": "revoked or expired before confirming"})
        raise LinkRefused(LINK_INVALID)
    with storage.transaction(db):
        changed = storage.opt_out(db, link["patient_id"], by=STOP_BY, now=now)
        storage.append_audit(db, actor=STOP_BY, action="opt_out", patient_id=link["patient_id"],
                             details={"link_id": stop.link_id, "messages_were_on": changed})
    return changed


def stopped_message(settings: Settings) -> str:
    """What the patient reads once messages are stopped."""
    return f"You will get no more messages from {settings.clinic_name}."
