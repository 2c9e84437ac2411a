"""What a one-tap link opens when it is not a check-in: the same friendly page for every link that cannot be
used (used, expired, revoked or forged alike), and the "stop these messages" confirmation.

Registered only for a session that ``ui.session.open_link`` gave something to show here; nobody is signed in.
"""

import streamlit as st

from outcomes import link_access
from outcomes.errors import OutcomesError
from ui import data, session, widgets

state = session.link_page() or {"kind": "refused", "message": link_access.LINK_INVALID}
clinic_name = data.settings().clinic_name


def stop() -> None:
    try:
        with data.database() as db:
            link_access.stop_messages(db, state["stop"], now=session.now())
    except OutcomesError as exc:
        st.session_state[session.LINK_PAGE_KEY] = {"kind": "refused", "message": str(exc)}
    else:
        st.session_state[session.LINK_PAGE_KEY] = {"kind": "stopped"}


if state["kind"] == "stop":
    st.title("Stop these messages?")
    st.write(f"You will no longer get emails or text messages from {widgets.literal(clinic_name)} asking you to "
             "fill in your questionnaire. Your clinic can start them again if you ask.")
    st.button("Stop these messages", type="primary", icon=":material/notifications_off:", on_click=stop,
              width="stretch")
elif state["kind"] == "stopped":
    st.title("Messages stopped")
    st.success(widgets.literal(link_access.stopped_message(data.settings())))
else:
    st.title(widgets.literal(clinic_name))
    st.info(widgets.message(state["message"]), icon=":material/link_off:")
    st.caption("Have an account with the clinic's outcomes app? Sign in to do your check-in.")
    if st.button("Sign in", icon=":material/login:"):
        session.leave_link_page()
        st.rerun()
