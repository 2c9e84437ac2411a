"""The append-only audit log: who signed in, viewed, wrote or exported what, and when."""

import streamlit as st

from outcomes import clinic, exports
from outcomes.errors import OutcomesError
from ui import data, session, widgets

admin = session.require_roles("admin")
st.title("Audit log")
st.caption("Every sign-in (successful or not), record view, write, import and export. Entries cannot be "
           "changed or deleted: the database refuses it, and the app has no way to ask.")

cols = st.columns(4)
user = cols[0].text_input("User", help="Exact username; command-line exports appear as cli:<login>.") or None
patient_id = cols[1].text_input("Patient ID") or None
action_box = cols[2].empty()  # the list of actions is the log's own, so it is drawn once the log is read
dates = cols[3].date_input("Dates (UTC)", value=(), help="Pick a first and a last day.")
date_from, date_to = (dates + (None, None))[:2] if isinstance(dates, tuple) else (dates, dates)

try:
    with data.database() as db:
        log = clinic.read_audit_log(db, admin, user=user, patient_id=patient_id,
                                    date_from=date_from, date_to=date_to or date_from)
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()

# Every action the page knows in words, and any other the log holds; no internal name to type.
chosen = {st.session_state.get("audit.action")} - {None}  # kept while other filters hide its entries
actions = sorted(set(widgets.AUDIT_ACTIONS) | set(log["action"].dropna()) | chosen, key=widgets.audit_action)
action = action_box.selectbox("Action", actions, index=None, placeholder="Any action",
                              format_func=widgets.audit_action, key="audit.action")
if action is not None:
    log = log[log["action"] == action].reset_index(drop=True)

st.write(f"{len(log):,} entries, newest first.")
# Stored text (a patient ID, a user name, a reason) is shown inert: a cell copied into a spreadsheet cannot
# run as a formula. The details read as words; the CSV keeps them as JSON, for machines.
st.dataframe(widgets.on_screen(log.assign(details=log["details"].map(widgets.audit_details))), hide_index=True,
             column_config={
                 "audit_id": "No.", "at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
                 "actor": "User", "action": "Action", "patient_id": "Patient", "details": "Details"})

filters = {k: v for k, v in (("user", user), ("patient_id", patient_id), ("action", action),
                             ("date_from", date_from), ("date_to", date_to or date_from)) if v is not None}

# The log identifies patients: its download is an identified export like any other. The file is made, and
# the export audited, only when the button is pressed, and handed to this browser only (ui.data.hand_over):
# nothing waits at a URL before or after. Text cells that could run as a formula are neutralised.
if st.button("Download as CSV", icon=":material/download:", key="audit.download",
             help="Records the download in this log, then your browser saves the file."):
    try:
        payload = exports.to_csv_bytes(log)
        data.check_hand_over(len(payload))  # refused before it is audited as exported
        with data.database() as db:
            clinic.record_export(db, admin, what="audit log", rows=len(log), deidentified=False, filters=filters)
        data.hand_over(payload, "audit-log.csv", "text/csv", key="audit.hand_over")
    except OutcomesError as exc:
        st.error(widgets.message(exc))
