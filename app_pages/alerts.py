"""Open alerts from check-in scores, highest priority first; a clinician acknowledges each one."""

import streamlit as st

from outcomes import clinic
from outcomes.errors import OutcomesError
from ui import data, session, widgets

user = session.require_roles("clinician")
st.title("Alerts")
st.warning(clinic.SAFETY_NOTICE, icon=":material/health_and_safety:")
st.caption("Depression T ≥ 70 raises a high-priority alert; T 65–69.9, or a worsening of at least the "
           "meaningful-change threshold since the previous score, a routine one.")

with data.database() as db:
    alerts = clinic.open_alerts(db, user)
if alerts.empty:
    st.success("No open alerts.")
    st.stop()

for row in alerts.itertuples(index=False):
    with st.container(border=True, key=f"alert-{row.alert_id}"):
        badge = ":red-badge[High priority]" if row.priority == "high" else ":orange-badge[Routine]"
        st.markdown(f"{badge} **{widgets.md(row.patient_id)}** · {row.created_at:%Y-%m-%d}")
        st.text(row.reason)  # st.text: stored text is never rendered as Markdown or HTML
        st.caption(row.action)
        open_col, note_col, ack_col = st.columns([1, 3, 1])
        if open_col.button("Open patient", key=f"alerts.open.{row.alert_id}"):
            st.session_state["patient.selected"] = row.patient_id
            st.switch_page("app_pages/patient.py")
        note = note_col.text_input("Note (optional)", key=f"alerts.note.{row.alert_id}", label_visibility="collapsed",
                                   placeholder="Note (optional), e.g. called patient, safety plan reviewed")
        if ack_col.button("Acknowledge", key=f"alerts.ack.{row.alert_id}", type="primary"):
            try:
                with data.database() as db:
                    clinic.acknowledge_alert(db, user, int(row.alert_id), now=session.now(), note=note or None)
            except OutcomesError as exc:
                st.error(widgets.message(exc))
            else:
                st.rerun()
