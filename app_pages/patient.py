"""One patient for the clinician: series and infusions, trajectories, every assessment, alerts."""

import pandas as pd
import streamlit as st

from outcomes import clinic
from outcomes.errors import OutcomesError
from ui import data, session, widgets

user = session.require_roles("clinician")
settings = data.settings()
registry = data.registry()

with data.database() as db:
    patient_ids = clinic.patient_ids(db, user)
selected = st.session_state.get("patient.selected")
patient_id = st.selectbox("Patient", patient_ids, placeholder="Choose a patient",
                          index=patient_ids.index(selected) if selected in patient_ids else None)
if patient_id is None:
    st.info("Choose a patient, or select one on the Roster.")
    st.stop()
st.session_state["patient.selected"] = patient_id

try:
    with data.database() as db:
        record = clinic.patient_record(db, user, patient_id, settings=settings)
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()

info = record.patient.iloc[0]
st.title(f"Patient {widgets.literal(patient_id)}")
facts = [info["diagnosis"] or "no diagnosis recorded",
         {"F": "female", "M": "male", "X": "other / not listed"}.get(info["sex"], "sex not recorded"),
         f"born {int(info['birth_year'])}" if pd.notna(info["birth_year"]) else "birth year not recorded"]
st.text(" · ".join(facts))  # st.text: stored text never renders as Markdown or HTML

open_alerts = record.alerts[record.alerts["acknowledged_at"].isna()] if len(record.alerts) else record.alerts
if len(open_alerts):
    st.error(f"{len(open_alerts)} open alert(s): " + widgets.literal("; ".join(open_alerts["reason"])),
             icon=":material/notifications:")
    st.page_link("app_pages/alerts.py", label="Review on the Alerts page")
st.caption(clinic.SAFETY_NOTICE)  # with every depression score shown to clinicians, alerts open or not

st.subheader("Series and infusions")
if record.series.empty:
    st.info("No infusion series recorded.")
else:
    series = record.series.rename(columns={
        "series_number": "Series", "first_infusion": "First infusion", "last_infusion": "Last infusion",
        "infusions": "Infusions", "protocol": "Protocol", "dose_mg_per_kg": "Dose (mg/kg)", "notes": "Notes"})
    st.dataframe(series[["Series", "First infusion", "Last infusion", "Infusions", "Protocol", "Dose (mg/kg)", "Notes"]],
                 hide_index=True, column_config={"First infusion": st.column_config.DateColumn(),
                                                 "Last infusion": st.column_config.DateColumn()})
    if len(record.infusions):
        events = record.adverse_events
        per_infusion = (events.assign(text=events["kind"].str.replace("_", " ")
                                      + events["severity"].fillna("").map(lambda s: f" ({s})" if s else ""))
                        .groupby("infusion_id")["text"].agg(", ".join) if len(events) else pd.Series(dtype=str))
        infusions = record.infusions.assign(adverse=record.infusions["infusion_id"].map(per_infusion).fillna("none"))
        with st.expander(f"{len(infusions)} infusions, {len(events)} adverse events"):
            st.dataframe(infusions[["infused_on", "dose_mg_per_kg", "duration_min", "adverse", "notes"]],
                         hide_index=True, column_config={
                             "infused_on": st.column_config.DateColumn("Date"), "dose_mg_per_kg": "Dose (mg/kg)",
                             "duration_min": "Minutes", "adverse": "Adverse events", "notes": "Notes"})

st.subheader("Trajectories")
st.caption(f"Dashed line: baseline (latest score from {settings.baseline_days} days before the first infusion "
           "up to that day). Band: ± the meaningful-change threshold "
           f"({settings.mcid_label}). Shaded: severity bands (HealthMeasures cut points). Triangles: infusions.")
widgets.trajectory_charts(record, settings, registry, key="patient")

st.subheader("Every assessment")
st.caption("**Meaningful change** compares the change from baseline with the group threshold; **reliable "
           "change** asks whether that change is larger than the measurement error of the two scores "
           "(RCI = ΔT / √(SE₁² + SE₂²), |RCI| ≥ 1.96; Jacobson & Truax 1991). A change can be one without the other.")
scores = record.assessments.sort_values(["assessed_on", "domain"], ascending=[False, True])
scores = scores.assign(domain=scores["domain"].map(lambda d: registry.domain(d).label))
st.dataframe(
    scores[["assessed_on", "domain", "form", "t_score", "se", "method", "n_answered", "source", "entered_by",
            "change", "improved", "rci", "reliable"]],
    hide_index=True,
    column_config={
        "assessed_on": st.column_config.DateColumn("Date"), "domain": "Domain", "form": "Form",
        "t_score": st.column_config.NumberColumn("T", format="%.1f"),
        "se": st.column_config.NumberColumn("SE", format="%.1f"), "method": "Scored by",
        "n_answered": "Items", "source": "Source", "entered_by": "Entered by",
        "change": st.column_config.NumberColumn("Δ baseline", format="%+.1f"),
        "improved": st.column_config.CheckboxColumn("Meaningful improvement"),
        "rci": st.column_config.NumberColumn("RCI", format="%+.2f"),
        "reliable": st.column_config.CheckboxColumn("Reliable change"),
    },
)
st.subheader("Item-level answers")
widgets.item_answers(record, registry)

st.page_link("app_pages/record.py", label="Record a series, an infusion or a paper questionnaire",
             icon=":material/add_notes:")
