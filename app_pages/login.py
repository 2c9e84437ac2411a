"""Sign in: local username and password, or the hospital's identity provider when one is configured."""

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError, PermissionDenied
from ui import data, session, widgets

st.title("Sign in")
notice = st.session_state.pop(session.NOTICE_KEY, None)
if notice:
    st.info(notice)

if session.oidc_configured():
    if st.user.get("is_logged_in", False):
        refused = st.session_state.get(session.IDENTITY_REFUSED_KEY, "")
        st.error("You are signed in to your hospital account, but cannot use this app with it. "
                 + widgets.md(refused))
        st.button("Sign out of the hospital account", on_click=st.logout)
    else:
        st.button("Sign in with your hospital account", type="primary", on_click=st.login,
                  icon=":material/badge:")
    st.divider()
    st.caption("Or with a local account:")

with st.form("login"):
    username = st.text_input("Username", autocomplete="username")
    password = st.text_input("Password", type="password", autocomplete="current-password")
    submitted = st.form_submit_button("Sign in", type="primary")
if submitted:
    try:
        if problem := session.browser_problem():  # a session that could not be kept to this browser
            raise PermissionDenied(problem)
        with data.database() as db:
            user = auth.login(db, username, password, now=session.now(), settings=data.settings(),
                              browser=session.browser(), address=session.address())
        session.sign_in(user)
    except OutcomesError as exc:
        st.error(widgets.message(exc))
    else:
        st.rerun()

st.page_link("app_pages/invitation.py", label="First time here? Use the invitation code from your clinic.",
             icon=":material/mail:")

if data.demo_mode():
    accounts = data.demo_accounts()
    st.subheader("Demo accounts")
    if not accounts:  # a demo link opened before anyone prepared the demo on this machine
        st.info("The demo is not prepared on this machine yet: it needs a database of synthetic patients "
                "and its demo accounts.")
        if st.button("Prepare the demo", icon=":material/science:"):
            with st.spinner("Generating the synthetic cohort…"):
                data.open_demo()
            st.rerun()
    else:
        st.caption("Synthetic data only. These accounts exist in the demo database and nowhere else.")
        st.dataframe(accounts, hide_index=True, column_config={
            "username": "Username", "password": "Password", "role": "Role", "note": "What it can do"})
