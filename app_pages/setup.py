"""First run: create the first administrator (with the one-time setup token from the server's log), or look
around a demo with synthetic patients."""

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError, PermissionDenied
from ui import data, session, widgets

session.announce_setup_token()  # into the server's log, once per server start: only its operator reads it

st.title("Welcome to Infusion outcomes")
st.write("This installation has no accounts yet. Create the first administrator to start using it with "
         "your clinic's patients, or open a demo to look around first.")

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Create the administrator")
    st.caption("Creating the administrator needs the setup token that the server printed in its log when this "
               "page was first opened (a line starting \"Setup token for the first administrator\"). Whoever "
               "runs the server can also make a new one with `python -m outcomes setup-token`.")
    with st.form("first_admin"):
        token = st.text_input("Setup token", autocomplete="off", placeholder="XXXXX-XXXXX-XXXXX-XXXXX")
        username = st.text_input("Username", autocomplete="username")
        email = st.text_input("Email (optional; needed only for hospital sign-in)")
        password = st.text_input("Password", type="password", autocomplete="new-password",
                                 help=f"At least {auth.MIN_PASSWORD} characters, not containing the username.")
        repeat = st.text_input("Type the password again", type="password", autocomplete="new-password")
        submitted = st.form_submit_button("Create administrator", type="primary")
    if submitted:
        if password != repeat:
            st.error("The two passwords are not the same. Type them again.")
        else:
            try:
                if problem := session.browser_problem():  # a session that could not be kept to this browser
                    raise PermissionDenied(problem)
                with data.database() as db:
                    user = auth.create_first_admin(db, username, password, now=session.now(),
                                                   email=email.strip() or None, setup_token=token,
                                                   settings=data.settings(), address=session.address(),
                                                   browser=session.browser())
                session.sign_in(user)
            except OutcomesError as exc:
                st.error(widgets.message(exc))
            else:
                st.rerun()

with right:
    st.subheader("Open the demo")
    st.write("A separate database with about 1,000 synthetic patients, shaped like a published ketamine "
             "infusion registry, and one account per role. Nothing you do there touches the clinic's database.")
    if st.button("Open the demo", icon=":material/science:"):
        with st.spinner("Generating the synthetic cohort…"):
            data.open_demo()
        st.rerun()
