"""Backup: a consistent copy of the whole database for the administrator to download (docs/operations.md)."""

from pathlib import Path

import streamlit as st

from outcomes import clinic
from outcomes.errors import OutcomesError
from ui import data, session, widgets

admin = session.require_roles("admin")
st.title("Backup")
st.caption("A complete, consistent copy of the clinic's database, made while everyone keeps working (SQLite's "
           "online backup). It is checked before you get it, and every download is recorded in the audit log.")
last = data.last_server_backup()
now = session.now()
if last is None:
    st.warning("No backup made on the server is recorded in the audit log. Ask IT to set up the nightly "
               "backup (`python -m outcomes backup` from cron or a systemd timer, docs/operations.md): a "
               "download from this page is no substitute.", icon=":material/warning:")
else:
    at = last["at"].to_pydatetime()
    ago = now - at
    made = (f"The last backup on the server was made on {at:%Y-%m-%d} at {at:%H:%M} UTC "
            f"({widgets.literal(last['actor'])}"
            + (f", {last['bytes'] / 1e6:,.1f} MB" if isinstance(last["bytes"], int | float) else "") + ")")
    if ago.total_seconds() > 36 * 3600:
        st.warning(f"{made}, {ago.days:,} day{'' if ago.days == 1 else 's'} ago. The nightly backup seems to "
                   "have stopped: ask IT to check the backup job and its log (docs/operations.md).",
                   icon=":material/warning:")
    else:
        st.info(f"{made}.", icon=":material/schedule:")

st.warning("The download holds every patient's data, the audit log and the secret behind the export "
           "pseudonyms, **unencrypted**: save it straight to encrypted storage (an encrypted disk or the "
           "hospital's secure share), never to a shared folder or a USB stick, and delete it when it is no "
           "longer needed. The app cannot encrypt it for you yet (docs/operations.md says why). Restoring "
           "needs the command line (`python -m outcomes restore`).", icon=":material/lock:")

TOO_LARGE = ("Make the backup on the server instead: `python -m outcomes backup` (docs/operations.md).")

if st.button("Download a backup", type="primary", icon=":material/download:", key="backup.prepare",
             help="Copies the database, checks the copy, records it in the audit log and hands the file to "
                  "this browser. Nothing stays on the server."):
    try:
        # Refused before the copy is made and audited: the copy is about the size of the database file.
        data.check_hand_over(Path(data.active_db_path()).stat().st_size, TOO_LARGE)
        with st.spinner("Copying the database…"), data.database() as db:
            prepared = clinic.backup_database(db, admin, now=now)
        data.hand_over(prepared.data, prepared.filename, "application/vnd.sqlite3", key="backup.hand_over",
                       too_large=TOO_LARGE)
    except OutcomesError as exc:
        st.error(widgets.message(exc))
    except OSError as exc:
        st.error(f"The database file cannot be read ({widgets.literal(exc.strerror or exc)}). Ask IT to check "
                 "the database path and its permissions.")
    else:
        # Only what it was, never the bytes: the file is in the browser now, not in this session.
        st.session_state["backup.done"] = (prepared.filename, len(prepared.data), prepared.check.integrity,
                                           prepared.check.contents())

if done := st.session_state.get("backup.done"):
    filename, size, integrity, contents = done
    st.success(f"**{widgets.literal(filename)}** was handed to your browser: {size / 1e6:,.1f} MB, integrity "
               f"check {widgets.literal(integrity)}; {contents}. Your browser saves it to its downloads "
               "folder; nothing is kept on the server. Press the button again for a fresh copy.",
               icon=":material/check_circle:")
