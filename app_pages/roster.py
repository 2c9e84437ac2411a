"""The clinic's daily list: every patient, their series, check-ins, latest scores and alerts."""

import streamlit as st

from outcomes import clinic
from ui import data, session

user = session.require_roles("clinician")
settings = data.settings()
st.title("Roster")

with data.database() as db:
    roster = clinic.roster(db, user, today=session.today(), settings=settings)
if roster.empty:
    st.info("No patients yet. Enrol the first one on the Record page.")
    st.page_link("app_pages/record.py", label="Record → Enrol a patient", icon=":material/add_notes:")
    st.stop()

search, status, alerts_only, diagnosis = st.columns([2, 2, 1, 2])
query = search.text_input("Search patient ID or diagnosis", placeholder="e.g. P0012 or CRPS")
statuses = status.multiselect("Check-in", ["overdue", "due", "never", "done"], placeholder="Any status")
with_alerts = alerts_only.toggle("Open alerts only")
diagnoses = diagnosis.multiselect("Diagnosis", sorted(roster["diagnosis"].dropna().unique()), placeholder="Any")

shown = roster
if query:
    text = shown["patient_id"] + " " + shown["diagnosis"].fillna("")
    shown = shown[text.str.contains(query, case=False, regex=False)]
if statuses:
    shown = shown[shown["checkin_status"].isin(statuses)]
if with_alerts:
    shown = shown[shown["open_alerts"] > 0]
if diagnoses:
    shown = shown[shown["diagnosis"].isin(diagnoses)]

overdue = int(roster["overdue"].sum())
high = int((roster["top_priority"] == "high").sum())
m1, m2, m3 = st.columns(3)
m1.metric("Patients", f"{len(roster):,}")
m2.metric("Check-in overdue", f"{overdue:,}")
m3.metric("Patients with a high-priority alert", f"{high:,}")

labels = {"pain_interference": "PI", "depression": "Dep", "physical_function": "PF"}
config = {
    "patient_id": "Patient", "diagnosis": "Diagnosis", "series_status": "Series",
    "last_checkin": st.column_config.DateColumn("Last check-in"),
    "checkin_status": "Check-in", "overdue": st.column_config.CheckboxColumn("Overdue"),
    "open_alerts": "Open alerts", "top_priority": "Priority",
}
for domain, short in labels.items():
    config[f"{domain}_t"] = st.column_config.NumberColumn(f"{short} T", format="%.1f")
    config[f"{domain}_change"] = st.column_config.NumberColumn(f"{short} Δ", format="%+.1f",
                                                               help="Change from the series baseline")
columns = list(config)
st.caption(f"{len(shown):,} of {len(roster):,} patients. Δ is the change from baseline in T points "
           f"(lower is better for PI and depression, higher for PF). Select a row to open the patient.")
event = st.dataframe(shown[columns], hide_index=True, column_config=config, on_select="rerun",
                     selection_mode="single-row", key="roster.table")
st.caption(clinic.SAFETY_NOTICE)  # the roster shows depression scores
if event.selection.rows:
    st.session_state["patient.selected"] = shown.iloc[event.selection.rows[0]]["patient_id"]
    st.switch_page("app_pages/patient.py")
