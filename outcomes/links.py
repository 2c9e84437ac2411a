"""One-tap links in invitations and reminders: a check-in link and a "stop these messages" link.

A link carries a random 256-bit token (``secrets.token_urlsafe(32)``); the database keeps only its
SHA-256 (``storage.add_link``), so a copy of the database opens no check-in. A check-in link is valid
until its slot closes (the end of that day in the clinic's time zone), opens only its patient's check-in
and result screen, is used once (exchanged for a session on first load), and is revocable by staff. A
stop link stays valid for a year and may be used again (stopping twice is harmless). What a link can
do is decided by ``outcomes.auth``/``ui.session``; this module makes and checks tokens.

Example
-------
>>> token = new_token()
>>> len(token) >= 43 and token_hash(token) != token and len(token_hash(token)) == 64
True
>>> link_url("https://outcomes.clinic.example", "checkin", "abc")
'https://outcomes.clinic.example/?checkin=abc'
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, date, datetime, time, timedelta, tzinfo

#: The query parameter of each kind of link.
PARAMETERS = {"checkin": "checkin", "stop": "stop"}
#: What a token looks like (``token_urlsafe(32)``: 43 characters); anything else is refused unread.
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
STOP_LINK_DAYS = 366


def new_token() -> str:
    """A random 256-bit token, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database stores of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def looks_like_token(text: object) -> bool:
    """Whether ``text`` has a token's shape (checked before any database look-up)."""
    return isinstance(text, str) and TOKEN.fullmatch(text) is not None


def link_url(public_url: str, purpose: str, token: str) -> str:
    """The address of a link: the app's ``public_url`` with the token as its query parameter."""
    return f"{public_url.rstrip('/')}/?{PARAMETERS[purpose]}={token}"


def end_of_day(day: date, zone: tzinfo | None) -> datetime:
    """The first moment after ``day`` in the clinic's time zone (None: the server's), as UTC: a slot's
    link expires then."""
    local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    if zone is None:
        local = local.astimezone()
    return local.astimezone(UTC)
