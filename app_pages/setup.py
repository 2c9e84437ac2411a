"""First run: create the first administrator, or look around a demo with synthetic patients."""

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError
from ui import data, session, widgets

st.title("Welcome to Infusion outcomes")
st.write("This installation has no accounts yet. Create the first administrator to start using it with "
         "your clinic's patients, or open a demo to look around first.")

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Create the administrator")
    with st.form("first_admin"):
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
                with data.database() as db:
                    user = auth.create_first_admin(db, username, password, now=session.now(),
                                                   email=email.strip() or None)
            except OutcomesError as exc:
                st.error(widgets.message(exc))
            else:
                session.sign_in(user)
                st.rerun()

with right:
    st.subheader("Open the demo")
    st.write("A separate database with about 1,000 synthetic patients, shaped like a published ketamine "
             "infusion registry, and one account per role. Nothing you do there touches the clinic's database.")
    if st.button("Open the demo", icon=":material/science:"):
        with st.spinner("Generating the synthetic cohort…"):
            data.open_demo()
        st.rerun()
