"""Per-installation secrets: the cookie secret of a hospital sign-in (OIDC) deployment.

Streamlit signs its sign-in cookies with ``[auth] cookie_secret`` from ``.streamlit/secrets.toml``
(toolchain notes §5a). Anyone who knows it can forge a cookie, so every installation makes its own,
random one, and it is never committed: ``.streamlit/secrets.toml`` is git-ignored, and
``tests/reliability/test_sessions.py`` scans the tracked files for secrets.
``python -m outcomes secrets`` calls :func:`ensure_cookie_secret`.

An ``[auth]`` table that holds only the cookie secret does not switch hospital sign-in on: the app
offers it once the identity provider's ``client_id`` is there too (``ui.session.oidc_configured``).

Example
-------
>>> import tempfile, pathlib, tomllib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "secrets.toml"
>>> ensure_cookie_secret(path).action
'created'
>>> len(tomllib.loads(path.read_text())["auth"]["cookie_secret"])
64
>>> ensure_cookie_secret(path).action
'kept'

Per-purpose keys: each use of an installation's secrets gets its own key, derived with a label
(:func:`derive_key`), so that what one use reveals or lets an attacker choose can never serve another: the
browser cookie that binds a sign-in to its browser (``ui.session``), invitation codes (``outcomes.auth``) and
the one-time setup token below. Pseudonyms keep the database secret itself as their key, so that every
pseudonym already handed out stays the same (docs/privacy.md).

The setup token: on a new installation (no user at all) the first administrator can only be created with
a one-time token that is shown where only the server's operator can read it, the server's log or
``python -m outcomes setup-token`` (:func:`issue_setup_token`); a visitor of the web page cannot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import storage
from .errors import ConfigError, PermissionDenied

SECRETS_FILE = Path(".streamlit") / "secrets.toml"
SECRET_BYTES = 32  # 256 bits, written as 64 hex digits

_TEMPLATE = """
[auth]
# Signs the sign-in cookies. Random per installation, made by `python -m outcomes secrets`; never commit
# it (this file is git-ignored). Rotating it signs everybody out.
cookie_secret = "{secret}"
# Hospital sign-in starts working once the identity provider's details are filled in (docs/operations.md):
# redirect_uri = "https://pro.hospital.example/oauth2callback"
# client_id = "..."
# client_secret = "..."
# server_metadata_url = "https://idp.hospital.example/.well-known/openid-configuration"
"""


@dataclass(frozen=True)
class SecretResult:
    """``action`` is ``created`` (a new file or [auth] table), ``added`` (to an existing [auth] table),
    ``kept`` (one was there already) or ``rotated``."""

    path: Path
    action: str

    def describe(self) -> str:
        verb = {"created": "Wrote a new", "added": "Added a new", "rotated": "Replaced the",
                "kept": "Kept the existing"}[self.action]
        return f"{verb} random cookie secret in {self.path} (readable by its owner only)."


def _parse(text: str, path: Path) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it before adding the cookie secret") \
            from None


def ensure_cookie_secret(path: str | Path = SECRETS_FILE, *, rotate: bool = False) -> SecretResult:
    """Make sure ``[auth] cookie_secret`` in ``path`` is a random secret of this installation.

    An existing secret is kept unless ``rotate`` (which signs every hospital sign-in out). Everything
    else in the file is left as it is. The file is written atomically with mode 0600.

    Raises
    ------
    ConfigError
        The file is not valid TOML, or its ``auth`` entry is not a table.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    auth = _parse(text, path).get("auth")
    if auth is not None and not isinstance(auth, dict):
        raise ConfigError(f"{path}: 'auth' must be a table ([auth])")
    if auth and auth.get("cookie_secret") and not rotate:
        os.chmod(path, 0o600)
        return SecretResult(path, "kept")
    secret = secrets.token_hex(SECRET_BYTES)
    line = f'cookie_secret = "{secret}"'
    existing = re.compile(r"(?m)^[ \t]*cookie_secret[ \t]*=.*$")
    if auth is None:
        before = text.rstrip("\n") + ("\n" if text.strip() else "")
        action, new = "created", (before + _TEMPLATE.format(secret=secret)).lstrip("\n")
    else:
        header = re.search(r"(?m)^[ \t]*\[auth\][ \t]*(#.*)?$", text)
        if header is None:  # e.g. auth = { ... } inline: too unusual to edit safely
            raise ConfigError(f"{path}: write the auth settings as an [auth] table to add the cookie secret")
        section_end = re.search(r"(?m)^[ \t]*\[", text[header.end():])
        end = header.end() + section_end.start() if section_end else len(text)
        section = text[header.end():end]
        if existing.search(section):
            action, section = "rotated", existing.sub(line, section, count=1)
        else:
            action, section = "added", "\n" + line + section
        new = text[:header.end()] + section + text[end:]
    if _parse(new, path).get("auth", {}).get("cookie_secret") != secret:
        raise ConfigError(f"{path}: could not place the cookie secret in the [auth] table; add it by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(partial, path)
    return SecretResult(path, action)


# Per-purpose keys ------------------------------------------------------------------------------------------


def derive_key(secret: str | bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose`` from an installation's ``secret``.

    HKDF-Expand (RFC 5869) for one block: HMAC-SHA256(secret, ``outcomes`` NUL purpose 0x01). The label holds a
    NUL byte, which no patient ID may contain, so a derived key is never a pseudonym of the same secret.

    Example
    -------
    >>> derive_key("s" * 64, "invitation code") != derive_key("s" * 64, "setup token")
    True
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"outcomes\x00" + purpose.encode() + b"\x01", hashlib.sha256).digest()


# The one-time setup token of a new installation --------------------------------------------------------------

#: 20 characters of Crockford's base 32 (100 bits), shown in groups of 5 for reading off a log.
SETUP_TOKEN_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SETUP_TOKEN_LENGTH = 20
SETUP_TOKEN_HOURS = 24
_SETUP_META = "setup_token"


@dataclass(frozen=True)
class SetupToken:
    token: str
    expires_at: datetime

    def describe(self) -> str:
        return (f"Setup token for the first administrator: {self.token} (valid once, until "
                f"{self.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC; any earlier token no longer works).")


def _token_hash(db: storage.Database, token: str) -> str:
    normalised = "".join(token.split()).replace("-", "").upper() if isinstance(token, str) else ""
    key = derive_key(storage.get_meta(db, "secret") or "", "setup token")
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


def issue_setup_token(db: storage.Database, *, now: datetime, by: str = "(server start)") -> SetupToken:
    """A new one-time token to create the first administrator with (any earlier one stops working).

    Only its keyed hash is stored (``meta``); show the token where only the server's operator can read it.

    Raises
    ------
    PermissionDenied
        A user exists already: administrators create users on the Users page.
    """
    raw = "".join(secrets.choice(SETUP_TOKEN_ALPHABET) for _ in range(SETUP_TOKEN_LENGTH))
    token = "-".join(raw[i:i + 5] for i in range(0, SETUP_TOKEN_LENGTH, 5))
    expires_at = now + timedelta(hours=SETUP_TOKEN_HOURS)
    with storage.transaction(db, bump=False):
        if storage.count_users(db):
            raise PermissionDenied("This installation has users already, so it needs no setup token: sign in, "
                                   "and create users on the Users page.")
        storage.set_meta(db, _SETUP_META, json.dumps({"hash": _token_hash(db, token),
                                                      "expires_at": expires_at.isoformat()}))
        storage.append_audit(db, actor=by, action="issue_setup_token",
                             details={"expires_at": expires_at.isoformat()})
    return SetupToken(token, expires_at)


def setup_token_pending(db: storage.Database, *, now: datetime) -> bool:
    """Whether a setup token that has not expired is waiting to be used."""
    record = storage.get_meta(db, _SETUP_META)
    if not record:
        return False
    return datetime.fromisoformat(json.loads(record)["expires_at"]) > now


def setup_token_matches(db: storage.Database, token: object, *, now: datetime) -> bool:
    """Whether ``token`` is the pending setup token (not expired). Compared in constant time."""
    record = storage.get_meta(db, _SETUP_META)
    if not record or not isinstance(token, str):
        return False
    stored = json.loads(record)
    if datetime.fromisoformat(stored["expires_at"]) <= now:
        return False
    return hmac.compare_digest(stored["hash"], _token_hash(db, token))


def forget_setup_token(db: storage.Database) -> None:
    """The token was used: it can never be used again."""
    storage.set_meta(db, _SETUP_META, "")
