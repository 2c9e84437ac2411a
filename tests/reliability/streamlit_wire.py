"""A Streamlit client at the wire: what an attacker with a script (not a browser) can send a running server.

It speaks the browser's protocol over ``/_stcore/stream``: the ``Sec-WebSocket-Protocol`` header carries
``streamlit``, an XSRF token and, to resume a session, that session's id (the id that appears in upload URLs,
``PUT /_stcore/upload_file/<session id>/…``); messages are ``BackMsg`` protobufs up and ``ForwardMsg`` down.
Cookies are sent only when given, so a test decides exactly what the attacker knows.

Used by tests/browser/test_browser_binding.py (findings 3 and 11 of the security issue).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from google.protobuf.json_format import MessageToDict
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect


def fetch_cookies(url: str) -> dict[str, str]:
    """The cookies a server sets on the app page (as a browser's first ``GET /`` would receive them)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        jar = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


@dataclass
class Run:
    """What the server sent for one script run."""

    messages: list[ForwardMsg] = field(default_factory=list)

    @property
    def session_id(self) -> str | None:
        for m in self.messages:
            if m.WhichOneof("type") == "new_session":
                return m.new_session.initialize.session_id
        return None

    @property
    def text(self) -> str:
        """Every string of every element drawn, as JSON: enough to search for what a user would read."""
        return "\n".join(json.dumps(MessageToDict(m.delta)) for m in self.messages
                         if m.WhichOneof("type") == "delta")

    @property
    def finished(self) -> bool:
        return any(m.WhichOneof("type") == "script_finished" for m in self.messages)


class WireClient:
    """One websocket connection to ``/_stcore/stream``, as a script would open it."""

    def __init__(self, base_url: str, *, cookies: Mapping[str, str] | None = None, session_id: str | None = None,
                 headers: Mapping[str, str] | None = None):
        uri = base_url.replace("http://", "ws://", 1) + "/_stcore/stream"
        protocols = ["streamlit", "PLACEHOLDER_AUTH_TOKEN"] + ([session_id] if session_id else [])
        extra = dict(headers or {})
        if cookies:
            extra["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self._connection = connect(uri, subprotocols=protocols, additional_headers=extra, max_size=2**26,
                                   open_timeout=30, proxy=None)
        self.ws = self._connection.__enter__()

    def send(self, msg: BackMsg) -> None:
        self.ws.send(msg.SerializeToString())

    def rerun(self, *, page_script_hash: str = "", query_string: str = "", widgets: Iterable[Any] = ()) -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = query_string
        state.page_script_hash = page_script_hash
        for w in widgets:
            state.widget_states.widgets.append(w)
        self.send(msg)

    def receive(self, timeout: float = 60, until_finished: bool = True) -> Run:
        """Messages until a whole script run has finished: one that started (``new_session``) after this
        call. Messages of a run already under way (say, a fragment run the browser asked for before this
        client took over) are kept too. With ``until_finished=False``: everything until ``timeout``."""
        run, deadline, started = Run(), time.monotonic() + timeout, False
        while time.monotonic() < deadline:
            try:
                data = self.ws.recv(timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            msg = ForwardMsg()
            msg.ParseFromString(data)
            run.messages.append(msg)
            started = started or msg.WhichOneof("type") == "new_session"
            if until_finished and started and msg.WhichOneof("type") == "script_finished":
                break
        return run

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
