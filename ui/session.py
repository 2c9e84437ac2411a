"""Who is signed in, in this browser session.

The identity lives in ``st.session_state`` (a reload starts a new session and asks to sign in again;
nothing a patient typed is lost, because check-in answers are kept as drafts in the database).
Every page calls :func:`require_roles` first, on top of the navigation only listing the pages of the
user's role, and every ``outcomes`` call re-checks the role itself.
"""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError, PermissionDenied
from outcomes.auth import User

from . import data, widgets

USER_KEY = "auth.user"
LAST_SEEN_KEY = "auth.last_seen"
NOTICE_KEY = "auth.notice"
IDENTITY_REFUSED_KEY = "auth.identity_refused"


def now() -> datetime:
    return datetime.now(timezone.utc)


def current_user() -> User | None:
    """The signed-in user, or None; signs out a session idle for longer than the setting allows."""
    user = st.session_state.get(USER_KEY)
    if user is None:
        return _identity_user()
    last_seen = st.session_state.get(LAST_SEEN_KEY)
    moment = now()
    if last_seen is not None and auth.session_expired(last_seen, moment, data.settings()):
        with data.database() as db:
            auth.log_out(db, user, reason="idle timeout")
        if oidc_configured() and st.user.get("is_logged_in", False):
            # Otherwise the identity provider's cookie would sign the person straight back in.
            st.logout()
        sign_out(notice="You were signed out after a period of inactivity. Please sign in again.")
        return None
    st.session_state[LAST_SEEN_KEY] = moment
    return user


def sign_in(user: User) -> None:
    st.session_state[USER_KEY] = user
    st.session_state[LAST_SEEN_KEY] = now()


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


def sidebar(user: User) -> None:
    with st.sidebar:
        name = user.display_name or user.username
        st.caption(f"Signed in as **{widgets.literal(name)}** ({auth.ROLE_LABELS[user.role].lower()})")
        if st.button("Sign out", icon=":material/logout:", key="auth.sign_out"):
            with data.database() as db:
                auth.log_out(db, user)
            if oidc_configured() and st.user.get("is_logged_in", False):
                st.logout()
            sign_out(notice="You are signed out.")
            st.rerun()


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
    claims = {key: st.user.get(key) for key in st.user.to_dict()}
    try:
        with data.database() as db:
            user = auth.user_for_identity(db, claims, now=now())
    except OutcomesError as exc:
        st.session_state[IDENTITY_REFUSED_KEY] = str(exc)
        return None
    sign_in(user)
    return user


def today():
    """The clinic's calendar day (setting OUTCOMES_TIMEZONE), which is what a check-in is dated by."""
    return now().astimezone(data.settings().zoneinfo).date()
