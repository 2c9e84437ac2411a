"""A patient turns the one-time invitation code from the clinic into their own login."""

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError, PermissionDenied
from ui import data, session, widgets

st.title("Create your login")
st.write("Your clinic gave you an invitation code (10 letters and digits, such as `K7QF-M2XD-9P`). "
         "Choose a username and a password to create your login.")

with st.form("redeem"):
    code = st.text_input("Invitation code")
    username = st.text_input("Choose a username", autocomplete="username")
    password = st.text_input("Choose a password", type="password", autocomplete="new-password",
                             help=f"At least {auth.MIN_PASSWORD} characters; a few words you will remember work well.")
    repeat = st.text_input("Type the password again", type="password", autocomplete="new-password")
    submitted = st.form_submit_button("Create my login", type="primary")
if submitted:
    if password != repeat:
        st.error("The two passwords are not the same. Type them again.")
    else:
        try:
            if problem := session.browser_problem():  # a session that could not be kept to this browser
                raise PermissionDenied(problem)
            with data.database() as db:
                user = auth.redeem_invitation(db, code, username, password, now=session.now(),
                                              settings=data.settings(), address=session.address(),
                                              browser=session.browser())
            session.sign_in(user)
        except OutcomesError as exc:
            st.error(widgets.message(exc))
        else:
            st.rerun()

st.page_link("app_pages/login.py", label="I already have a login", icon=":material/login:")
