"""My progress: the patient's own scores over time, with their infusion series marked."""

import streamlit as st

from outcomes import clinic, figures, instruments
from ui import data, session, widgets

user = session.require_roles("patient")
settings = data.settings()
registry = data.registry()
st.title("My progress")

with data.database() as db:
    record = clinic.patient_record(db, user, user.patient_id, settings=settings)
    due = clinic.checkin_due(db, user, user.patient_id, today=session.today(), settings=settings)
{"overdue": st.warning, "due": st.info}.get(due.status, st.success)(due.message)
if due.status != "done":
    st.page_link("app_pages/checkin.py", label="Do my check-in now", icon=":material/edit_note:")

scores = record.assessments
if scores.empty:
    st.info("Your scores will appear here after your first check-in.")
    st.stop()

st.subheader("Latest scores")
latest = scores.sort_values("assessed_on").groupby("domain").tail(1).set_index("domain")
shown = settings.reported_domains(scores["domain"].unique())  # asked at the check-in, or scored
cols = st.columns(len(shown))
for col, domain in zip(cols, shown):
    if domain not in latest.index:
        continue
    row = latest.loc[domain]
    label = registry.domain(domain).label
    delta = figures.change_delta(row["change"], higher_is_worse=registry.domain(domain).higher_is_worse,
                                 is_baseline=row["baseline_on"] == row["assessed_on"])
    col.metric(label, f"{row['t_score']:.1f}", delta.text, delta_color=delta.color, delta_arrow=delta.arrow,
               help=f"{instruments.severity_band(domain, row['t_score'], registry)} · measured "
                    f"{row['assessed_on']:%d %b %Y}")
lower = [registry.domain(d).display.lower() for d in shown if registry.domain(d).higher_is_worse]
higher = [registry.domain(d).display.lower() for d in shown if not registry.domain(d).higher_is_worse]
directions = "; ".join(f"for {' and '.join(names)} {word} is better"
                       for names, word in ((lower, "lower"), (higher, "higher")) if names)
thresholds = [settings.mcid[d] for d in shown]
st.caption("Scores are PROMIS T-scores: 50 is the average of the US population and 10 points is one standard "
           f"deviation. {directions[:1].upper() + directions[1:]}. A change of about "
           f"{min(thresholds):g}–{max(thresholds):g} points is the smallest that people usually notice.")

st.subheader("Over time")
st.caption("The dashed line is your score before each infusion series; the blue band around it is a "
           "change too small to count as meaningful. Shaded columns are infusion series; the triangles "
           "under the chart are your infusions, one per day.")
widgets.trajectory_charts(record, settings, registry, key="progress")

st.subheader("My answers, week by week")
widgets.item_answers(record, registry)
st.caption(clinic.PATIENT_CRISIS_TEXT)
