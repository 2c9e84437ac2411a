"""The clinic's daily list: today's patients first (in a series, baseline due, alerts, questionnaires due), or
every patient, with series, follow-up, latest scores and alerts."""

import streamlit as st

from outcomes import clinic, followup
from ui import data, session, widgets

user = session.require_roles("clinician")
settings = data.settings()
st.title("Roster")

with data.database() as db:
    roster = clinic.roster(db, user, today=session.today(), settings=settings)
if roster.empty:
    st.info("No patients yet. Enrol the first one on the Record page.")
    st.page_link("app_pages/record.py", label="Record → Enrol a patient", icon=":material/add_notes:")
    st.stop()

VIEWS = {"today": "Today", "all": "All patients"}
view_column, series_toggle, alerts_toggle = st.columns([3, 1, 1], vertical_alignment="bottom")
view = view_column.radio("View", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="roster.view",
                         help="Today: patients in a series today or this week, baselines due before a "
                              "series, open alerts, then follow-up questionnaires due or overdue (from day 4 "
                              "undone, the patient is on the call list).")
in_series = series_toggle.toggle("In series",
                                 help="In an infusion series this week (Monday to Sunday), planned ones too")
with_alerts = alerts_toggle.toggle("Open alerts only")
base = clinic.today_list(roster) if view == "today" else roster

search, status, diagnosis = st.columns([3, 2, 2])
query = search.text_input("Search patient ID or diagnosis", placeholder="e.g. P0012 or CRPS")
statuses = status.multiselect("Follow-up", list(followup.PATIENT_STATUS_LABELS),
                              format_func=followup.PATIENT_STATUS_LABELS.get, placeholder="Any status")
diagnoses = diagnosis.multiselect("Diagnosis", sorted(roster["diagnosis"].dropna().unique()), placeholder="Any")

shown = base
if query:
    text = shown["patient_id"] + " " + shown["diagnosis"].fillna("")
    shown = shown[text.str.contains(query, case=False, regex=False)]
if statuses:
    shown = shown[shown["followup"].isin(statuses)]
if diagnoses:
    shown = shown[shown["diagnosis"].isin(diagnoses)]
if in_series:
    shown = shown[shown["in_series_this_week"]]
if with_alerts:
    shown = shown[shown["open_alerts"] > 0]

# Headline counts follow the view and the filters: they count the rows below.
counts = st.columns(5)
counts[0].metric("Patients shown", f"{len(shown):,}")
counts[1].metric("In a series this week", f"{int(shown['in_series_this_week'].sum()):,}")
counts[2].metric("Baseline due", f"{int(shown['baseline_due'].sum()):,}")
counts[3].metric("High-priority alert", f"{int((shown['top_priority'] == 'high').sum()):,}")
counts[4].metric("Overdue · to call", f"{int(shown['overdue'].sum()):,} · {int(shown['on_call_list'].sum()):,}",
                 help="Follow-up questionnaires overdue (from day 3 of the slot) · patients on the call list "
                      "(from day 4 undone)")

domains = settings.domains
# A domain the clinic does not measure would be an empty pair of columns: show those with a score.
shown_domains = [d for d in domains if f"{d}_t" in roster.columns and roster[f"{d}_t"].notna().any()]
labels = {d: domains[d].short_label for d in shown_domains}
# Widths in pixels: the key columns (patient to priority) fit beside the sidebar at 1366 x 768; the patient
# stays pinned when the scores are scrolled into view.
config = {"patient_id": st.column_config.TextColumn("Patient", width=105, pinned=True)}
if view == "today":
    config["today"] = st.column_config.TextColumn("Today", width=265)
config.update({
    "series_status": st.column_config.TextColumn("Series", width=160),
    "followup_text": st.column_config.TextColumn("Follow-up", width=190,
                                                 help="The questionnaire open today and since when, or the next "
                                                      "one (docs/followup.md)"),
    "open_alerts": st.column_config.NumberColumn("Alerts", width=60, help="Open alerts"),
    "top_priority": st.column_config.TextColumn("Priority", width=70),
})
for domain, short in labels.items():
    config[f"{domain}_t"] = st.column_config.NumberColumn(f"{short} T", format="%.1f", width=65)
    config[f"{domain}_change"] = st.column_config.NumberColumn(f"{short} Δ", format="%+.1f", width=65,
                                                               help="Change from the series baseline")
config["diagnosis"] = st.column_config.TextColumn("Diagnosis", width="medium")
if view == "all":
    config["last_checkin"] = st.column_config.DateColumn("Last check-in", format="D MMM YYYY")
    config["next_due"] = st.column_config.DateColumn("Next due", format="D MMM YYYY", width=100)
    config["disposition"] = "Disposition"
columns = list(config)
directions = "; ".join(f"{labels[d]}: {domains[d].direction_text}" for d in shown_domains)
directions = f" ({directions})" if directions else ""
head = (f"{len(shown):,} of {len(base):,} on today's list ({len(roster):,} patients in the clinic)."
        if view == "today" else f"{len(shown):,} of {len(base):,} patients.")
st.caption(f"{head} Δ is the change "
           f"from baseline in T points{directions}. Questionnaires fall due for active patients from "
           f"{settings.baseline_due_days} days before a series to {settings.followup_days} days after its last "
           "infusion, weekly after it. Select a row to open the patient.")
if view == "today" and base.empty:
    st.success("Nobody needs attention today: no series this week, no baseline due, no open alert and no "
               "questionnaire due. Choose All patients to see everyone.")
event = st.dataframe(widgets.on_screen(shown[columns]), hide_index=True, column_config=config, placeholder="—",
                     on_select="rerun",
                     selection_mode="single-row", key=f"roster.table.{view}")
st.caption(clinic.SAFETY_NOTICE)  # the roster shows depression scores
if event.selection.rows:
    st.session_state["patient.selected"] = shown.iloc[event.selection.rows[0]]["patient_id"]
    st.switch_page("app_pages/patient.py")
