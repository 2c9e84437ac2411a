"""Clinicians record: enrol a patient, log a series and each infusion, enter a paper questionnaire."""


import streamlit as st

from outcomes import auth, clinic, storage
from outcomes.errors import CheckinExists, OutcomesError
from ui import data, session, widgets

user = session.require_roles("clinician")
settings = data.settings()
today = session.today()
st.title("Record")


def attempt(action):
    """Run one write; show the library's message (which says what to fix) when it is refused."""
    try:
        with data.database() as db:
            return action(db), None
    except OutcomesError as exc:
        st.error(widgets.message(exc))
        return None, exc


with data.database() as db:
    patient_ids = clinic.patient_ids(db, user)


PICKERS = ("record.series.patient", "record.infusion.patient", "record.paper.patient", "record.invite.patient")


def select_patient(patient_id: str) -> None:
    """Make ``patient_id`` the patient of every tab (and of the Patient page)."""
    st.session_state["patient.selected"] = patient_id
    for key in PICKERS:
        st.session_state[key] = patient_id


def patient_picker(key: str) -> str | None:
    selected = st.session_state.get("patient.selected")
    if key not in st.session_state and selected in patient_ids:
        st.session_state[key] = selected
    return st.selectbox("Patient", patient_ids, key=key, index=None, placeholder="Choose a patient")


def require_patient(patient_id: str | None) -> bool:
    if patient_id is None:
        st.error("Choose a patient first.")
    return patient_id is not None


enrol, series_tab, infusion_tab, paper_tab, invite_tab = st.tabs(
    ["Enrol a patient", "Log a series", "Log an infusion", "Paper questionnaire", "New invitation code"])

with enrol:
    if invitation := st.session_state.get("record.invitation"):
        st.success(f"Enrolled {widgets.literal(invitation.patient_id)}. Give the patient this one-time invitation code; "
                   f"it works once and expires on {invitation.expires_at:%d %B %Y}:")
        st.code(invitation.code, language=None)
    # Not clear_on_submit: that would also empty the form when it is refused (duplicate ID...), and the
    # clinician would have to type everything again; it is emptied after a successful enrolment only.
    with st.form("record.enrol"):
        patient_id = st.text_input("Clinic patient ID", key="record.enrol.patient_id",
                                   help="The ID your clinic uses, e.g. the chart number.")
        diagnosis = st.text_input("Diagnosis", placeholder="e.g. Complex regional pain syndrome",
                                  key="record.enrol.diagnosis")
        sex = st.selectbox("Sex", ["F", "M", "X"], index=None, placeholder="Not recorded",
                           format_func={"F": "Female", "M": "Male", "X": "Other / not listed"}.get,
                           key="record.enrol.sex")
        birth_year = st.number_input("Birth year", min_value=1900, max_value=today.year, value=None, step=1,
                                     key="record.enrol.birth_year")
        enrolled_on = st.date_input("Enrolled on", value=today, max_value=today,
                                    key="record.enrol.enrolled_on")
        submitted = st.form_submit_button("Enrol and create invitation code", type="primary")
    if submitted:
        invitation, _ = attempt(lambda db: clinic.enrol_patient(
            db, user, patient_id=patient_id, diagnosis=diagnosis or None, sex=sex, birth_year=birth_year,
            enrolled_on=enrolled_on, today=today, now=session.now(), settings=settings))
        if invitation:
            st.session_state["record.invitation"] = invitation
            for key in [k for k in st.session_state if str(k).startswith("record.enrol.")]:
                del st.session_state[key]  # an empty form for the next patient
            select_patient(invitation.patient_id)
            st.rerun()

with series_tab:
    with st.form("record.series"):
        patient_id = patient_picker("record.series.patient")
        first, last = st.columns(2)
        first_infusion = first.date_input("First infusion", value=None, max_value=today)
        last_infusion = last.date_input("Last infusion", value=None, max_value=today)
        count, dose = st.columns(2)
        infusions = count.number_input("Number of infusions", min_value=1, max_value=60, value=5, step=1)
        dose_mg_per_kg = dose.number_input("Dose (mg/kg)", min_value=0.0, max_value=5.0, value=0.5, step=0.05,
                                           format="%.2f")
        protocol = st.text_input("Protocol", value="5-day 0.5 mg/kg over 40 min")
        notes = st.text_area("Notes")
        submitted = st.form_submit_button("Save series", type="primary")
    if submitted and require_patient(patient_id):
        series_id, _ = attempt(lambda db: clinic.log_series(
            db, user, patient_id=patient_id, first_infusion=first_infusion, last_infusion=last_infusion,
            infusions=infusions, protocol=protocol or None, dose_mg_per_kg=dose_mg_per_kg, notes=notes or None,
            today=today))
        if series_id:
            st.success(f"Series saved for {widgets.literal(patient_id)}. Log each infusion on the next tab.")

with infusion_tab:
    patient_id = patient_picker("record.infusion.patient")
    series = None
    if patient_id:
        with data.database() as db:
            series = storage.load_series(db, patient_id)
    if patient_id and series is not None and series.empty:
        st.info("This patient has no series yet: log the series first.")
    elif patient_id:
        labels = {int(r.series_id): f"Series {r.series_number}: {r.first_infusion:%Y-%m-%d} to {r.last_infusion:%Y-%m-%d}"
                  for r in series.itertuples()}
        with st.form("record.infusion"):
            series_id = st.selectbox("Series", list(labels), format_func=labels.get, index=len(labels) - 1)
            day, dose, minutes = st.columns(3)
            infused_on = day.date_input("Date", value=None, max_value=today)
            dose_mg_per_kg = dose.number_input("Dose (mg/kg)", min_value=0.0, max_value=5.0, value=0.5, step=0.05,
                                               format="%.2f")
            duration_min = minutes.number_input("Duration (min)", min_value=1, max_value=1440, value=40, step=5)
            st.markdown("**Adverse events**")
            events = []
            for kind in storage.EVENT_KINDS:
                left, right = st.columns([2, 3])
                if left.checkbox(kind.replace("_", " ").capitalize(), key=f"record.ae.{kind}"):
                    events.append({"kind": kind, "severity": right.radio(
                        "Severity", storage.SEVERITIES, horizontal=True, key=f"record.ae.{kind}.severity",
                        label_visibility="collapsed")})
                else:
                    right.radio("Severity", storage.SEVERITIES, horizontal=True, key=f"record.ae.{kind}.severity",
                                label_visibility="collapsed")
            notes = st.text_area("Notes", key="record.infusion.notes")
            submitted = st.form_submit_button("Save infusion", type="primary")
        if submitted and require_patient(patient_id):
            infusion_id, _ = attempt(lambda db: clinic.log_infusion(
                db, user, patient_id=patient_id, series_id=series_id, infused_on=infused_on,
                dose_mg_per_kg=dose_mg_per_kg, duration_min=duration_min, adverse_events=events,
                notes=notes or None, today=today))
            if infusion_id:
                st.success(f"Infusion saved for {widgets.literal(patient_id)}"
                           + (f" with {len(events)} adverse event(s)." if events else ", no adverse events."))

with paper_tab:
    st.caption("Enter the answers from a paper questionnaire on the patient's behalf (recorded as entered by "
               "the clinician). Leave unanswered questions empty.")
    patient_id = patient_picker("record.paper.patient")
    assessed_on = st.date_input("Date the patient filled it in", value=today, max_value=today, key="record.paper.date")
    paper = st.session_state.setdefault("record.paper.answers", {})
    for form in clinic.checkin_forms(settings, data.registry()):
        with st.expander(f"{data.registry().domain(form.domain).label}: {form.title}", expanded=True):
            widgets.questionnaire(form, paper.setdefault(form.key, {}), key="record.paper")
    # Asked for this patient and day only: changing either takes the question back.
    replace = st.session_state.get("record.paper.replace") == (patient_id, assessed_on)
    if replace:
        st.warning("This patient already has an entry on that day. Saving again replaces it (the earlier one "
                   "is kept in the record as superseded).")
    if st.button("Replace the entry" if replace else "Save paper questionnaire", type="primary",
                 disabled=patient_id is None):
        try:
            with data.database() as db:
                result = clinic.submit_checkin(db, user, patient_id=patient_id, answers=paper,
                                               assessed_on=assessed_on, today=today, now=session.now(),
                                               settings=settings, source="clinician", replace=replace,
                                               registry=data.registry())
        except CheckinExists:
            st.session_state["record.paper.replace"] = (patient_id, assessed_on)
            st.rerun()
        except OutcomesError as exc:
            st.error(widgets.message(exc))
        else:
            for key in [k for k in st.session_state if str(k).startswith("record.paper")]:
                del st.session_state[key]
            st.session_state["record.paper.saved"] = [(d.scored, d.message) for d in result.domains]
            st.rerun()
    for scored, message in st.session_state.pop("record.paper.saved", []):
        (st.success if scored else st.warning)(message)

with invite_tab:
    st.caption("A new code replaces any earlier unused code of the patient.")
    patient_id = patient_picker("record.invite.patient")
    if st.button("Create a new invitation code", disabled=patient_id is None):
        invitation, _ = attempt(lambda db: auth.issue_invitation(db, user, patient_id, now=session.now(),
                                                                 settings=settings))
        if invitation:
            st.success(f"Invitation code for {widgets.literal(patient_id)}, valid until {invitation.expires_at:%d %B %Y}:")
            st.code(invitation.code, language=None)
