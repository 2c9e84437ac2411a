"""My account: who I am, and changing my password."""

import dataclasses

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError
from ui import data, session, widgets

user = session.require_roles("admin", "clinician", "qi", "patient")
st.title("My account")
st.write(f"Username **{widgets.literal(user.username)}**, role **{auth.ROLE_LABELS[user.role].lower()}**"
         + (f", linked to patient record {widgets.literal(user.patient_id)}." if user.patient_id else "."))
if user.must_change_password:
    st.warning("Please choose a new password: the current one was set by an administrator. "
               "The rest of the app opens once you have.")

st.subheader("Change password")
with st.form("change_password", clear_on_submit=True):
    current = st.text_input("Current password", type="password", autocomplete="current-password")
    new = st.text_input("New password", type="password", autocomplete="new-password",
                        help=f"At least {auth.MIN_PASSWORD} characters, not containing your username.")
    repeat = st.text_input("Type the new password again", type="password", autocomplete="new-password")
    submitted = st.form_submit_button("Change password", type="primary")
if submitted:
    if new != repeat:
        st.error("The two new passwords are not the same. Type them again.")
    else:
        try:
            with data.database() as db:
                changed = auth.change_password(db, user, current, new, now=session.now(), settings=data.settings(),
                                               browser=session.browser(), address=session.address())
        except OutcomesError as exc:
            st.error(widgets.message(exc))
        else:
            forced = user.must_change_password
            # This session goes on with the new password; every other session of the account has ended.
            session.update_user(dataclasses.replace(user, must_change_password=False,
                                                    credential_version=changed.credential_version))
            if forced:  # the full navigation opens now
                st.session_state["app.toast"] = "Your password is changed."
                st.rerun()
            st.success("Your password is changed. Use the new one next time you sign in. Any other browser "
                       "signed in as you has been signed out.")
