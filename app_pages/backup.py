"""Backup: a consistent copy of the whole database for the administrator to download (issue 7)."""

import streamlit as st

from outcomes import clinic
from outcomes.errors import OutcomesError
from ui import data, session, widgets

admin = session.require_roles("admin")
st.title("Backup")
st.caption("A complete, consistent copy of the clinic's database, made while everyone keeps working (SQLite's "
           "online backup). It is checked before you get it, and preparing it is recorded in the audit log.")
st.warning("The backup holds every patient's data and the secret behind the export pseudonyms: store it "
           "encrypted, like the database itself. Nightly backups on the server are set up by IT "
           "(docs/operations.md); restoring needs the command line (`python -m outcomes restore`).",
           icon=":material/lock:")

if st.button("Prepare a backup", type="primary", icon=":material/backup:", key="backup.prepare"):
    try:
        with st.spinner("Copying the database…"), data.database() as db:
            st.session_state["backup.file"] = clinic.backup_database(db, admin, now=session.now())
    except OutcomesError as exc:
        st.error(widgets.message(exc))

prepared = st.session_state.get("backup.file")
if prepared is not None:
    st.success(f"**{widgets.literal(prepared.filename)}** is ready: {len(prepared.data) / 1e6:,.1f} MB, integrity "
               f"check {widgets.literal(prepared.check.integrity)}; {prepared.check.contents()}.",
               icon=":material/check_circle:")
    st.download_button(f"Download {prepared.filename}", prepared.data, prepared.filename,
                       "application/vnd.sqlite3", on_click="ignore", type="primary", icon=":material/download:",
                       key="backup.download")
