"""The append-only audit log: who signed in, viewed, wrote or exported what, and when."""

import streamlit as st

from outcomes import clinic
from outcomes.errors import OutcomesError
from ui import data, session

admin = session.require_roles("admin")
st.title("Audit log")
st.caption("Every sign-in (successful or not), record view, write and export. Entries cannot be changed "
           "or deleted: the database refuses it.")

cols = st.columns(4)
user = cols[0].text_input("User") or None
patient_id = cols[1].text_input("Patient ID") or None
action = cols[2].text_input("Action", placeholder="e.g. login_failed") or None
dates = cols[3].date_input("Dates (UTC)", value=(), help="Pick a first and a last day.")
date_from, date_to = (dates + (None, None))[:2] if isinstance(dates, tuple) else (dates, dates)

try:
    with data.database() as db:
        log = clinic.read_audit_log(db, admin, user=user, patient_id=patient_id, action=action,
                                    date_from=date_from, date_to=date_to or date_from)
except OutcomesError as exc:
    st.error(str(exc))
    st.stop()

st.write(f"{len(log):,} entries, newest first.")
st.dataframe(log, hide_index=True, column_config={
    "audit_id": "No.", "at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "actor": "User", "action": "Action", "patient_id": "Patient", "details": "Details"})


def audit_the_download() -> None:
    with data.database() as db:
        clinic.record_export(db, admin, what="audit log", rows=len(log), deidentified=False)


st.download_button("Download as CSV", log.to_csv(index=False).encode("utf-8"), "audit-log.csv", "text/csv",
                   on_click=audit_the_download)
