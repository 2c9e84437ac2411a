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
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

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
