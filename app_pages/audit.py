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
action = cols[2].text_input(
    "Action", placeholder="e.g. login_failed",
    help="e.g. login, login_failed, access_denied, view_record, export, import_redcap") or None
dates = cols[3].date_input("Dates (UTC)", value=(), help="Pick a first and a last day.")
date_from, date_to = (dates + (None, None))[:2] if isinstance(dates, tuple) else (dates, dates)

try:
    with data.database() as db:
        log = clinic.read_audit_log(db, admin, user=user, patient_id=patient_id, action=action,
                                    date_from=date_from, date_to=date_to or date_from)
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()

st.write(f"{len(log):,} entries, newest first.")
st.dataframe(log, hide_index=True, column_config={
    "audit_id": "No.", "at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "actor": "User", "action": "Action", "patient_id": "Patient", "details": "Details"})

filters = {k: v for k, v in (("user", user), ("patient_id", patient_id), ("action", action),
                             ("date_from", date_from), ("date_to", date_to or date_from)) if v is not None}


def audit_the_download() -> None:
    # The log identifies patients; its download is an identified export like any other.
    with data.database() as db:
        clinic.record_export(db, admin, what="audit log", rows=len(log), deidentified=False, filters=filters)


# Text cells (a patient ID, a reason) could start with "=" and run as a formula in a spreadsheet.
st.download_button("Download as CSV", exports.to_csv_bytes(log), "audit-log.csv", "text/csv",
                   on_click=audit_the_download, icon=":material/download:")
