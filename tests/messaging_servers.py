"""Loopback servers for the messaging tests: a real SMTP server (aiosmtpd) and a fake Twilio REST API.

Both listen on 127.0.0.1 only and record what they received. Use them as context managers::

    with smtp_server(login=("mailer", "secret")) as smtp:      # or starttls=cert / implicit_tls=cert
        ... smtp.host, smtp.port, smtp.messages ...
    with fake_twilio() as sms:                                  # answer=callable for errors
        ... sms.url (the sms_api_base setting), sms.requests ...

or through the pytest fixtures ``smtp``, ``twilio`` and ``tls_cert`` (import them into a test module:
``from tests.messaging_servers import smtp, tls_cert, twilio  # noqa: F401``). ``closed_port()`` is a
port nothing listens on (connection refused), for "the server is down".
"""

from __future__ import annotations

import base64
import email
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd needs a number before it starts)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing listening: connecting is refused at once."""
    return free_port()


# SMTP ---------------------------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None
    tls: bool

    @property
    def body(self) -> str:
        return self.message.get_content()


@dataclass
class SMTPServer:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    #: A function of the recipient returning an SMTP reply ("550 ...") to refuse it, or None to accept.
    refuse: Callable[[str], str | None] | None = None

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """The messages once ``n`` have arrived (the server runs in its own thread)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.messages


class _Handler:
    def __init__(self, server: SMTPServer):
        self.server = server
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's name)
        if self.server.refuse and (reply := self.server.refuse(address)):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        login = session.auth_data.login.decode() if getattr(session, "auth_data", None) else None
        tls = session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None
        with self.lock:
            self.server.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, login,
                                                     tls))
        return f"250 2.0.0 Ok: queued as {secrets.token_hex(5).upper()}"


@contextmanager
def smtp_server(*, login: tuple[str, str] | None = None, starttls: Path | None = None,
                implicit_tls: Path | None = None) -> Iterator[SMTPServer]:
    """An aiosmtpd server on loopback. ``login=(user, password)`` requires that login (over plain text too,
    for the test); ``starttls`` / ``implicit_tls`` take the folder of :func:`make_cert` and require STARTTLS
    or speak TLS from the start."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    state = SMTPServer(HOST, free_port())
    kwargs: dict[str, Any] = {}
    if login is not None:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == login[0]
                  and auth_data.password.decode() == login[1])
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=starttls is not None)
    if starttls is not None:
        kwargs.update(tls_context=_server_context(starttls), require_starttls=True)
    if implicit_tls is not None:
        kwargs["ssl_context"] = _server_context(implicit_tls)
    controller = Controller(_Handler(state), hostname=HOST, port=state.port, **kwargs)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()


def make_cert(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (``cert.pem``, ``key.pem`` in ``folder``), made with openssl."""
    if shutil.which("openssl") is None:
        message = "openssl is not installed (apt-get install openssl): no certificate for the TLS tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI=true a missing tool is a failure")
        pytest.skip(message)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return folder


def _server_context(folder: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def client_context(folder: Path) -> ssl.SSLContext:
    """A client context that trusts the certificate of :func:`make_cert` (and only it)."""
    return ssl.create_default_context(cafile=str(folder / "cert.pem"))


# A fake Twilio --------------------------------------------------------------------------------------------


@dataclass
class SMSRequest:
    path: str
    form: dict[str, str]
    user: str | None
    password: str | None


@dataclass
class FakeTwilio:
    url: str
    requests: list[SMSRequest] = field(default_factory=list)
    #: ``answer(request) -> (HTTP status, JSON object)``; the default accepts like Twilio (201, queued).
    answer: Callable[[SMSRequest], tuple[int, dict[str, Any]]] | None = None

    def texts(self) -> list[str]:
        return [r.form.get("Body", "") for r in self.requests]


def accepted(request: SMSRequest) -> tuple[int, dict[str, Any]]:
    """Twilio's answer to a message it queued; like Twilio it echoes the body (which we must not keep)."""
    return 201, {"sid": "SM" + secrets.token_hex(16), "status": "queued", "to": request.form.get("To"),
                 "from": request.form.get("From"), "body": request.form.get("Body"), "error_code": None}


def refused(status: int, code: int | None, message: str) -> Callable[[SMSRequest], tuple[int, dict[str, Any]]]:
    """An answer refusing every message, in Twilio's error format."""
    return lambda request: (status, {"code": code, "message": message, "status": status,
                                     "more_info": f"https://www.twilio.com/docs/errors/{code}"})


@contextmanager
def fake_twilio(answer: Callable[[SMSRequest], tuple[int, dict[str, Any]]] | None = None) -> Iterator[FakeTwilio]:
    """A fake of Twilio's Messages API on loopback (http.server in a thread)."""
    state = FakeTwilio("", answer=answer)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            size = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(size).decode()).items()}
            user = password = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            request = SMSRequest(self.path, form, user, password)
            with lock:
                state.requests.append(request)
            status, body = (state.answer or accepted)(request)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    state.url = f"http://{HOST}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# Fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with fake_twilio() as server:
        yield server


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cert(tmp_path_factory.mktemp("tls"))
