"""Administrators manage accounts: create, deactivate, reactivate, unlock, reset a password."""

import streamlit as st

from outcomes import auth
from outcomes.errors import OutcomesError
from ui import data, session, widgets

admin = session.require_roles("admin")
st.title("Users")


DONE = "users.done"


def attempt(action, success: str, clear: str | None = None) -> None:
    """Run one change; on success rerun, so the list and the buttons show the change at once."""
    try:
        with data.database() as db:
            action(db)
    except OutcomesError as exc:
        st.error(widgets.message(exc))
    else:
        st.session_state[DONE] = success
        if clear:  # an empty form for the next user (not clear_on_submit: a refused form keeps its values)
            for key in [k for k in st.session_state if str(k).startswith(clear)]:
                del st.session_state[key]
        st.rerun()


if done := st.session_state.pop(DONE, None):
    st.success(widgets.literal(done))

with data.database() as db:
    users = auth.list_users(db, admin, now=session.now())

search = st.text_input("Search", placeholder="Part of a username, name, email or patient ID",
                       key="users.search").strip().casefold()
COLUMNS = {"username": "Username", "role": "Role", "display_name": "Name", "email": "Email (hospital sign-in)",
           "patient_id": "Patient", "active": "Active", "locked": "Locked", "last_login_at": "Last sign-in (UTC)"}
found = users
if search:
    text = users[["username", "display_name", "email", "patient_id"]].fillna("").astype(str)
    found = users[text.apply(lambda column: column.str.casefold().str.contains(search, regex=False)).any(axis=1)]
staff, patients = found[found["role"] != "patient"], found[found["role"] == "patient"]
staff_tab, patients_tab = st.tabs([f"Staff ({len(staff):,})", f"Patients ({len(patients):,})"])
with staff_tab:  # names and emails are stored text: shown inert if copied into a spreadsheet
    st.dataframe(widgets.on_screen(staff[[c for c in COLUMNS if c != "patient_id"]]), hide_index=True,
                 column_config=COLUMNS, key="users.staff")
with patients_tab:
    st.dataframe(widgets.on_screen(patients[list(COLUMNS)].drop(columns="role")), hide_index=True,
                 column_config=COLUMNS, key="users.patients")
if search and found.empty:
    st.info(f"No user matches \u201c{widgets.literal(search)}\u201d. Clear the search to see everyone.")

create, manage = st.tabs(["Create a user", "Change a user"])
with create:
    st.caption("Patients normally create their own login with the invitation code a clinician gives them "
               "(Record → Enrol a patient). A new user must change the initial password at first sign-in.")
    with st.form("create_user"):
        username = st.text_input("Username", key="users.new.username")
        # No default role: a forgotten choice must not create an administrator.
        role = st.selectbox("Role", list(auth.ROLE_LABELS), format_func=auth.ROLE_LABELS.get, index=None,
                            placeholder="Choose a role", key="users.new.role")
        display_name = st.text_input("Name (optional)", key="users.new.display_name")
        email = st.text_input(
            "Email (optional; lets the person sign in through the hospital's identity provider)",
            key="users.new.email")
        patient_id = st.text_input("Patient ID (patient role only)", key="users.new.patient_id")
        password = st.text_input("Initial password (leave empty for hospital sign-in only)", type="password",
                                 key="users.new.password")
        if st.form_submit_button("Create user", type="primary"):
            attempt(lambda db: auth.create_user(
                db, admin, username=username, role=role, password=password or None,
                patient_id=patient_id.strip() or None, email=email.strip() or None,
                display_name=display_name.strip() or None, now=session.now()),
                f"User {username.strip()} created.", clear="users.new.")

with manage:
    target = st.selectbox("User", users["username"], index=None, placeholder="Choose a user")
    if target:
        row = users.set_index("username").loc[target]
        cols = st.columns(3)
        if row["active"]:
            if cols[0].button("Deactivate", help="The user can no longer sign in; the account is kept for the audit trail."):
                attempt(lambda db: auth.deactivate_user(db, admin, target), f"{target} is deactivated.")
        elif cols[0].button("Reactivate"):
            attempt(lambda db: auth.reactivate_user(db, admin, target), f"{target} can sign in again.")
        if row["locked"] and cols[1].button("Unlock"):
            attempt(lambda db: auth.unlock_user(db, admin, target), f"{target} is unlocked.")
        with st.form("reset_password", clear_on_submit=True):
            new = st.text_input("Temporary password", type="password",
                                help="The user must choose a new password at the next sign-in.")
            if st.form_submit_button("Reset password"):
                attempt(lambda db: auth.reset_password(db, admin, target, new),
                        f"{target}'s password is reset; they will be asked to change it.")
