"""Who is signed in, in this browser session, and what keeps a session to its own browser.

The identity lives in ``st.session_state`` (a reload starts a new session and asks to sign in again;
nothing a patient typed is lost, because check-in answers are kept as drafts in the database).
Every page calls :func:`require_roles` first, on top of the navigation only listing the pages of the
user's role, and every ``outcomes`` call re-checks the role itself.

**Sign-in bound to the browser** (docs/authentication.md, "Sessions: bound to the browser"). Streamlit
resumes a session for any client that presents the session's id, and that id travels in upload URLs that proxies log. So:

1. :class:`ServerGuard`, the ASGI middleware app.py puts in front of Streamlit's server (``st.App``), gives
   every browser an HttpOnly, SameSite=Lax cookie with a random value signed with a key derived from the
   installation's cookie secret (:data:`BROWSER_COOKIE`), on the app page's response. On every request and
   websocket it replaces any client-sent ``X-Outcomes-Browser`` header with a digest of that cookie (none
   without a valid cookie), and ``.streamlit/config.toml`` hands the header to Streamlit as a trusted user
   header: it becomes part of the session's identity (``st.user``), and Streamlit resumes a session only
   for a connection that presents the same identity. A script with a leaked session id but another (or no)
   cookie gets a new, empty session; nothing it sends reaches the signed-in one, not even a callback.
2. Signing in needs that cookie (:func:`browser_problem`), records its digest, and every script run signs
   the session out if the connection's cookie differs.

The middleware also refuses the ``clear_cache`` message (finding 11: any client could empty every user's
caches) and answers ``/_stcore/metrics`` with 404 (it was public).

Sessions end: after ``OUTCOMES_SESSION_IDLE_MINUTES`` without a script run, :data:`auth.MAX_SESSION_AGE`
after signing in, and when the account's password is changed or reset (finding 6); :func:`watchdog` wakes
just after the session's deadline while the page is open, so the screen is cleared on time (finding 7).

**One-tap links** (docs/authentication.md, "One-tap links"): :func:`open_link` takes ``?checkin=<token>`` or
``?stop=<token>`` out of the address at the first run, before anything else, and exchanges it
(``outcomes.link_access``): a check-in link becomes a session of an :class:`auth.LinkUser` that registers
only the check-in page and also ends when its link expires or is revoked; anything else opens the link page
(app_pages/link.py) with :data:`LINK_PAGE_KEY`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

import streamlit as st

from outcomes import auth, deployment, link_access, links, storage
from outcomes.auth import LinkUser, User
from outcomes.errors import OutcomesError, PermissionDenied

from . import data, widgets

USER_KEY = "auth.user"
LAST_SEEN_KEY = "auth.last_seen"
SIGNED_IN_AT_KEY = "auth.signed_in_at"
BROWSER_KEY = "auth.browser"
NOTICE_KEY = "auth.notice"
IDENTITY_REFUSED_KEY = "auth.identity_refused"
#: What app_pages/link.py shows: ``{"kind": "refused" | "stop" | "stopped", "message": ..., "stop": StopLink}``.
LINK_PAGE_KEY = "link.page"
#: The query parameters of one-tap links (outcomes.links.PARAMETERS).
LINK_PARAMETERS = tuple(links.PARAMETERS.values())

#: The browser's cookie, its digest's header (set only by ServerGuard) and the key of that digest in st.user
#: (``[server] trustedUserHeaders`` in .streamlit/config.toml maps the header to it).
BROWSER_COOKIE = "outcomes_browser"
BROWSER_HEADER = "X-Outcomes-Browser"
BROWSER_USER_KEY = "outcomes_browser"
BROWSER_COOKIE_DAYS = 400  # the longest browsers keep a cookie; the app's usual browsers are remembered
#: The watchdog wakes this long after the moment the session ends, and never sooner than WATCH_MIN_SECONDS.
WATCH_MARGIN_SECONDS = 2.0
WATCH_MIN_SECONDS = 5.0
WATCH_FLIP_KEY = "auth.watch_flip"

_LOG = logging.getLogger(__name__)


def now() -> datetime:
    return datetime.now(timezone.utc)


# The browser's cookie --------------------------------------------------------------------------------------


def _cookie_secret() -> str:
    """The installation's cookie secret: ``[auth] cookie_secret`` in .streamlit/secrets.toml (written by
    ``python -m outcomes secrets``), else Streamlit's ``server.cookieSecret`` (random per server process
    unless set, so a restart then issues new cookies, which costs nothing: sessions end with the process)."""
    try:
        table = st.secrets.get("auth")
    except FileNotFoundError:
        table = None
    if hasattr(table, "get") and table.get("cookie_secret"):
        return str(table.get("cookie_secret"))
    return str(st.get_option("server.cookieSecret"))


def _browser_key() -> bytes:
    return deployment.derive_key(_cookie_secret(), "browser cookie")


def _signature(key: bytes, token: str) -> str:
    return hmac.new(key, b"cookie\x00" + token.encode(), hashlib.sha256).hexdigest()[:32]


def new_browser_cookie() -> str:
    """A fresh cookie value: 256 random bits and their signature."""
    token = secrets.token_urlsafe(32)
    return f"{token}.{_signature(_browser_key(), token)}"


def browser_digest(cookie: str | None) -> str | None:
    """What identifies the browser that sent ``cookie``: a keyed digest, never the cookie itself; None when
    the cookie is missing or was not issued by this installation."""
    if not cookie or len(cookie) > 200 or "." not in cookie:
        return None
    key = _browser_key()
    token, signature = cookie.rsplit(".", 1)
    if not hmac.compare_digest(signature, _signature(key, token)):
        return None
    return hmac.new(key, b"browser\x00" + cookie.encode(), hashlib.sha256).hexdigest()[:40]


def served() -> bool:
    """True when this script runs in a Streamlit server for a browser connection (always in production).

    AppTest runs scripts against a stand-in runtime (a mock) with no connection, no cookies and no
    ServerGuard; there is no browser to bind a session to, and the page tests sign in without one.
    """
    from streamlit import runtime

    return runtime.exists() and type(runtime.get_instance()) is runtime.Runtime


def browser() -> str | None:
    """The digest of this connection's browser cookie, or None (no valid cookie, or no connection)."""
    if not served():
        return None
    return browser_digest(st.context.cookies.get(BROWSER_COOKIE))


def browser_problem() -> str | None:
    """Why this connection cannot sign in, or None when it can."""
    if not served():
        return None
    digest = browser()
    if digest is None:
        return ("This browser did not send the app's cookie, so signing in here cannot be kept to this browser. "
                "Allow cookies for this site in the browser's settings, then reload the page.")
    if st.user.get(BROWSER_USER_KEY) != digest:
        return ("The server is not set up to keep sessions to their browser (.streamlit/config.toml must map the "
                f"{BROWSER_HEADER} header in [server] trustedUserHeaders, and the app must be started with "
                "`streamlit run app.py`). Ask IT; until then nobody can sign in.")
    return None


def address() -> str:
    """The client's network address as Streamlit sees it (behind a reverse proxy, the forwarded one);
    "local" for the server itself and for tests."""
    ip = st.context.ip_address if served() else None
    return ip if isinstance(ip, str) and ip else "local"


# The middleware in front of Streamlit's server ----------------------------------------------------------------

_REFUSED_MESSAGES = frozenset({"clear_cache"})
_HEADER = BROWSER_HEADER.lower().encode()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _request_cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The value of :data:`BROWSER_COOKIE` in the request's Cookie headers (the first one), or None."""
    for name, value in headers:
        if name.lower() == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, _, val = pair.strip().partition("=")
                if key == BROWSER_COOKIE:
                    return val.strip().strip('"')
    return None


def _refused(frame: bytes) -> str | None:
    from streamlit.proto.BackMsg_pb2 import BackMsg

    msg = BackMsg()
    try:
        msg.ParseFromString(frame)
    except Exception:  # noqa: BLE001 - Streamlit itself closes the connection on a malformed frame
        return None
    kind = msg.WhichOneof("type")
    return kind if kind in _REFUSED_MESSAGES else None


class ServerGuard:
    """ASGI middleware in front of Streamlit's own routes (app.py: ``st.App(middleware=...)``).

    * Gives a browser without a valid :data:`BROWSER_COOKIE` a new one on the app page's (HTML) response:
      ``HttpOnly; SameSite=Lax; Path=/``, ``Secure`` when the request came over HTTPS.
    * Removes any ``X-Outcomes-Browser`` header a client sent and, for a valid cookie, sets it to the
      cookie's digest, on every HTTP request and websocket handshake.
    * Gives the app page's response ``Referrer-Policy: no-referrer`` (one-tap links' tokens, docs/authentication.md).
    * Drops ``clear_cache`` messages on the websocket and logs them.
    * Answers ``/_stcore/metrics`` with 404.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and path.rstrip("/").endswith("/_stcore/metrics"):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"Not found"})
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != _HEADER]
        digest = browser_digest(_request_cookie(headers))
        if digest is not None:
            headers.append((_HEADER, digest.encode()))
        scope = {**scope, "headers": headers}
        if scope["type"] == "websocket":
            await self.app(scope, self._filtered(receive, scope), send)
        else:
            await self.app(scope, receive, self._with_cookie(send, scope, cookie=digest is None))

    @staticmethod
    def _filtered(receive: Receive, scope: Scope) -> Receive:
        async def filtered() -> Message:
            while True:
                message = await receive()
                frame = message.get("bytes") if message.get("type") == "websocket.receive" else None
                refused = _refused(frame) if frame else None
                if refused is None:
                    return message
                client = scope.get("client") or ("?", 0)
                _LOG.warning("Refused a %r message from %s (finding 11: it would empty every user's caches)",
                             refused, client[0])
        return filtered

    @staticmethod
    def _with_cookie(send: Send, scope: Scope, *, cookie: bool = True) -> Send:
        """Add to the app page's (HTML) response ``Referrer-Policy: no-referrer`` (a one-tap link's token is in
        that page's address until its first script run removes it, and the page's own requests must not
        carry it to a proxy's log as their Referer) and, with ``cookie``, the browser's new cookie."""
        forwarded = dict(scope.get("headers", [])).get(b"x-forwarded-proto", b"").decode("latin-1")
        secure = scope.get("scheme") == "https" or forwarded.split(",")[0].strip() == "https"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    headers = [(k, v) for k, v in headers if k.lower() != b"referrer-policy"]
                    headers.append((b"referrer-policy", b"no-referrer"))
                    message = {**message, "headers": headers}
                if content_type.startswith(b"text/html") and cookie:
                    value = (f"{BROWSER_COOKIE}={new_browser_cookie()}; Path=/; HttpOnly; SameSite=Lax; "
                              f"Max-Age={BROWSER_COOKIE_DAYS * 86400}" + ("; Secure" if secure else ""))
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers += [(b"set-cookie", value.encode()), (b"cache-control", b"no-store")]
                    message = {**message, "headers": headers}
            await send(message)
        return sending


# Signing in and out ----------------------------------------------------------------------------------------


def current_user() -> User | None:
    """The signed-in user, or None; signs out a session that is idle, too old, on another browser than the
    one it signed in on, or whose account's password was changed or reset."""
    user = st.session_state.get(USER_KEY)
    if user is None:
        return _identity_user()
    moment = now()
    if _ended(user, moment):
        return None
    st.session_state[LAST_SEEN_KEY] = moment
    return user


def _ended(user: User, moment: datetime) -> bool:
    """Sign the session out with a notice if it must end; returns whether it did."""
    link = isinstance(user, LinkUser)
    if link and not _link_stands(user, moment):
        reason, notice = "check-in link expired or revoked", auth.LINK_ENDED
    elif served() and st.session_state.get(BROWSER_KEY) != browser():
        reason, notice = "another browser", ("You were signed out because this session was opened from another "
                                             "browser. Sign in again.")
    elif _expired(moment):
        reason, notice = "idle timeout", "You were signed out after a period of inactivity. Please sign in again."
        signed_in_at = st.session_state.get(SIGNED_IN_AT_KEY)
        if signed_in_at is not None and moment - signed_in_at > auth.MAX_SESSION_AGE:
            reason = "maximum session age"
            notice = (f"You were signed out because you signed in more than "
                      f"{auth.MAX_SESSION_AGE.total_seconds() / 3600:g} hours ago. Please sign in again.")
    elif _credentials_changed(user):
        reason, notice = "credentials changed", auth.CREDENTIALS_CHANGED
    else:
        return False
    with data.database() as db:
        auth.log_out(db, user, reason=reason)
    if oidc_configured() and st.user.get("is_logged_in", False):
        # Otherwise the identity provider's cookie would sign the person straight back in.
        st.logout()
    sign_out(notice=None if link else notice)
    if link:  # no sign-in page for someone who came by a link: the link page says what to do
        if notice != auth.LINK_ENDED:
            notice = f"{notice.split('.')[0]}. {auth.LINK_ENDED}"
        st.session_state[LINK_PAGE_KEY] = {"kind": "refused", "message": notice}
    return True


def _link_stands(user: LinkUser, moment: datetime) -> bool:
    """Whether a link session's link is still open: before its expiry, and not revoked since."""
    if user.expires_at is None or moment >= user.expires_at:
        return False
    with data.database() as db:
        return auth.link_session_open(db, user)


def _expired(moment: datetime) -> bool:
    last_seen = st.session_state.get(LAST_SEEN_KEY)
    if last_seen is None:
        return False
    return auth.session_expired(last_seen, moment, data.settings(),
                                signed_in_at=st.session_state.get(SIGNED_IN_AT_KEY))


def _credentials_changed(user: User) -> bool:
    if isinstance(user, LinkUser):
        return False  # no account behind it; its link is checked by _link_stands
    with data.database() as db:
        stored = storage.get_user(db, user_id=user.id)
    # Another account, a deactivated one or an unknown id are refused by every page (require_roles), which says
    # so; a reactivated account has a new credential version, so its old sessions end here.
    return (stored is not None and stored["active"] and stored["username"] == user.username
            and auth.credentials_changed(stored, user))


def sign_in(user: User) -> None:
    """Start a signed-in session on this browser. Check :func:`browser_problem` before signing in."""
    problem = browser_problem()
    if problem:
        raise PermissionDenied(problem)
    moment = now()
    st.session_state[USER_KEY] = user
    st.session_state[LAST_SEEN_KEY] = moment
    st.session_state[SIGNED_IN_AT_KEY] = moment
    st.session_state[BROWSER_KEY] = browser()


def update_user(user: User) -> None:
    """Replace the signed-in user of this session (after changing the password, say), keeping the session."""
    st.session_state[USER_KEY] = user


def sign_out(notice: str | None = None) -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if notice:
        st.session_state[NOTICE_KEY] = notice


def require_roles(*roles: str) -> User:
    """The signed-in user if their role may open this page; otherwise say so and stop the page."""
    user = current_user()
    if user is None:
        st.warning("Please sign in to see this page.")
        st.stop()
    try:
        with data.database() as db:
            return auth.require_role(db, user, *roles, action="open_page")
    except PermissionDenied as exc:
        st.error(str(exc))
        st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _watch() -> None:
    user = st.session_state.get(USER_KEY)
    if user is not None and _ended(user, now()):
        st.rerun(scope="app")


def watch_interval(moment: datetime) -> float:
    """Seconds until this session's :func:`auth.session_deadline`, plus :data:`WATCH_MARGIN_SECONDS`.

    A quarter second more at every other full run: the browser keeps its timer when a fragment's
    interval is unchanged, and it must restart at every run, which is the user's activity.
    """
    last_seen = st.session_state.get(LAST_SEEN_KEY, moment)
    deadline = auth.session_deadline(last_seen, data.settings(), signed_in_at=st.session_state.get(SIGNED_IN_AT_KEY))
    user = st.session_state.get(USER_KEY)
    if isinstance(user, LinkUser) and user.expires_at is not None:
        deadline = min(deadline, user.expires_at)
    flip = st.session_state[WATCH_FLIP_KEY] = not st.session_state.get(WATCH_FLIP_KEY, False)
    seconds = max(0.0, (deadline - moment).total_seconds()) + WATCH_MARGIN_SECONDS
    return round(max(seconds, WATCH_MIN_SECONDS), 3) + (0.25 if flip else 0.0)


def watchdog() -> None:
    """End the session on time while a signed-in page is open, not at the next click (finding 7).

    A fragment whose timer fires once, just after the moment the session would end (idle limit or maximum
    age), set again at every full run. Its runs are not activity (they do not move the idle clock); when the
    session must end, the whole page is run again and shows the sign-in page with the reason. It used to
    wake every 10 s; under load a tap that landed during one of those runs was lost (20 sessions at once,
    tests/browser/test_concurrent_sessions.py), so it now wakes only when there is something to do.
    Password changes and a session opened from another browser are caught at the next run.
    """
    st.fragment(_watch, run_every=watch_interval(now()))()


def sidebar(user: User) -> None:
    with st.sidebar:
        name = user.display_name or user.username
        if is_link_session(user):
            st.caption("Opened from the check-in link your clinic sent you.")
        else:
            st.caption(f"Signed in as **{widgets.literal(name)}** ({auth.ROLE_LABELS[user.role].lower()})")
        if st.button("Sign out", icon=":material/logout:", key="auth.sign_out"):
            with data.database() as db:
                auth.log_out(db, user)
            if oidc_configured() and st.user.get("is_logged_in", False):
                st.logout()
            sign_out(notice="You are signed out.")
            st.rerun()
        watchdog()


def oidc_configured() -> bool:
    """Whether a hospital identity provider is set up in ``.streamlit/secrets.toml``.

    That is an ``[auth]`` table naming the provider's ``client_id`` (directly, or in an
    ``[auth.<provider>]`` table). An ``[auth]`` table holding only the cookie secret written by
    ``python -m outcomes secrets`` at installation does not switch hospital sign-in on.
    """
    try:
        auth_table = st.secrets.get("auth")
    except FileNotFoundError:
        return False
    if not hasattr(auth_table, "get"):
        return False
    return bool(auth_table.get("client_id")) or any(
        hasattr(v, "get") and bool(v.get("client_id")) for v in auth_table.values())


def _identity_user() -> User | None:
    """Sign in the person a hospital identity provider has authenticated, once per session.

    A refusal (unknown email, sign-in too old...) is kept in the session for the sign-in page to show.
    """
    if not oidc_configured() or not st.user.get("is_logged_in", False):
        return None
    if IDENTITY_REFUSED_KEY in st.session_state:
        return None  # refused once in this session: not again (and not audited again) at every rerun
    problem = browser_problem()
    if problem:
        st.session_state[IDENTITY_REFUSED_KEY] = problem
        return None
    claims = {key: st.user.get(key) for key in st.user.to_dict() if key != BROWSER_USER_KEY}
    try:
        with data.database() as db:
            user = auth.user_for_identity(db, claims, now=now())
    except OutcomesError as exc:
        st.session_state[IDENTITY_REFUSED_KEY] = str(exc)
        return None
    sign_in(user)
    return user


# One-tap links (docs/authentication.md, "One-tap links") ----------------------------------------------------


def is_link_session(user: User | None) -> bool:
    """Whether this session was opened by a one-tap check-in link (no account; the check-in only)."""
    return isinstance(user, LinkUser)


def link_page() -> dict[str, Any] | None:
    """What the link page must show, or None when this session has no link to answer."""
    return st.session_state.get(LINK_PAGE_KEY)


def leave_link_page() -> None:
    """Back to the sign-in pages (a patient with an account), forgetting the link."""
    st.session_state.pop(LINK_PAGE_KEY, None)


def open_link() -> None:
    """At the start of every run: take a one-tap link's token out of the address bar and act on it.

    The token is removed from the URL first (``st.query_params``; the browser's address then changes without
    a reload), before any database work, and is never written anywhere: not logged, not stored in the
    session (a stop link keeps only its hash there, for the confirmation). A check-in link ends any session
    this tab had and signs in its :class:`LinkUser`, bound to this browser like any sign-in; anything else
    sets :data:`LINK_PAGE_KEY` for app_pages/link.py.
    """
    present = [p for p in LINK_PARAMETERS if p in st.query_params]
    if not present:
        return
    purpose = present[0]
    token = st.query_params.get(purpose)
    for parameter in present:
        del st.query_params[parameter]
    user = st.session_state.get(USER_KEY)
    if user is not None:  # a tab that was signed in: that session ends here, nothing of it carries over
        with data.database() as db:
            auth.log_out(db, user, reason="one-tap link opened")
    sign_out()
    if problem := browser_problem():
        # Checked before the link is looked at, so a browser that cannot keep a session does not use it up.
        st.session_state[LINK_PAGE_KEY] = {"kind": "refused", "message": problem}
        return
    moment = now()
    try:
        with data.database() as db:
            if purpose == "checkin":
                opened = link_access.open_checkin_link(db, token, now=moment, settings=data.settings(),
                                                       address=address(), browser=browser())
            else:
                stop = link_access.open_stop_link(db, token, now=moment, settings=data.settings(), address=address())
    except link_access.LinkRefused as exc:
        st.session_state[LINK_PAGE_KEY] = {"kind": "refused", "message": str(exc)}
        return
    if purpose == "checkin":
        sign_in(opened)
    else:
        st.session_state[LINK_PAGE_KEY] = {"kind": "stop", "stop": stop}


# The first administrator ----------------------------------------------------------------------------------

_setup_lock = threading.Lock()
_setup_tokens_shown: set[str] = set()


def announce_setup_token() -> None:
    """On a new installation, make a setup token once per server process and database, and print it to the
    server's log (standard error), where only the server's operator reads it (finding 15)."""
    path = data.active_db_path()
    with _setup_lock, data.database() as db:
        if storage.count_users(db):
            return
        if path in _setup_tokens_shown and deployment.setup_token_pending(db, now=now()):
            return
        token = deployment.issue_setup_token(db, now=now())
        _setup_tokens_shown.add(path)
    print(f"\n  {token.describe()}\n  (Or run `python -m outcomes setup-token` on the server for a new one.)\n",
          file=sys.stderr, flush=True)


def today():
    """The clinic's calendar day (setting OUTCOMES_TIMEZONE), which is what a check-in is dated by."""
    return now().astimezone(data.settings().zoneinfo).date()

