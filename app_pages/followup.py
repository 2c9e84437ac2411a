"""Follow-up: the patients to phone today, with a form for each call's outcome (clinicians), and how follow-up
completion stands per time point and per week, by clinician and diagnosis (clinicians and QI; docs/followup.md).
"""

import pandas as pd
import streamlit as st

from outcomes import clinic, completion, figures
from outcomes.errors import OutcomesError
from ui import data, session, widgets

user = session.require_roles("clinician", "qi")
settings = data.settings()
today = session.today()
st.title("Follow-up")

if user.role == "clinician":
    calls_tab, completion_tab = st.tabs(["Call list", "Completion"])
else:
    calls_tab, (completion_tab,) = None, st.tabs(["Completion"])


def call_key(row) -> str:
    """The call list row's identity: patient, series and slot."""
    return f"{row.patient_id}|{row.series_id}|{row.slot}"


def last_call(row) -> str:
    if not row.calls:
        return "not called yet"
    when = widgets.clinic_times(pd.Series([row.last_called_at]), settings).iloc[0]
    return (f"{clinic.CALL_OUTCOME_LABELS.get(row.last_outcome, row.last_outcome).split(' (')[0]}, "
            f"{when:%d %b %H:%M} by {row.last_called_by}" + (f" ({row.calls} calls)" if row.calls > 1 else ""))


if calls_tab is not None:
    with calls_tab:
        with data.database() as db:
            listed = clinic.call_list(db, user, today=today, settings=settings)
        st.caption(f"Patients whose questionnaire is still not done on day {settings.call_list_after_days + 1} of "
                   "its slot (the invitation goes on the due day, the reminder "
                   f"{settings.reminder_after_days} days later), longest waiting first. A slot leaves the list "
                   "when a questionnaire is dated in it, when it closes, or when a call outcome other than “No "
                   "answer” is recorded. Patients who stopped messages are still called.")
        if message := st.session_state.pop("followup.call.saved", None):
            st.success(message)
            if st.session_state.pop("followup.call.paper", False):
                st.page_link("app_pages/record.py", label="Record → Paper questionnaire", icon=":material/add_notes:")
        if listed.empty:
            st.info("Nobody to phone today.")
        else:
            shown = pd.DataFrame({
                "Patient": listed["patient_id"], "Questionnaire": listed["label"],
                "Due": [widgets.long_date(d) for d in listed["due_on"]], "Days waiting": listed["days_waiting"],
                "Contact": listed["contact"], "Last call": [last_call(r) for r in listed.itertuples()]})
            widgets.table(shown, hide_index=True, height="content", key="followup.calls.table")

            st.subheader("Record a call")
            rows = {call_key(r): r for r in listed.itertuples()}
            generation = st.session_state.get("followup.call.generation", 0)
            chosen = st.selectbox(
                "Call about", list(rows), index=None, placeholder="Choose a patient from the list",
                format_func=lambda k: (f"{rows[k].patient_id} · {rows[k].label}, due "
                                       f"{widgets.long_date(rows[k].due_on)}"),
                key=f"followup.call.{generation}.row")
            if chosen is not None:
                row = rows[chosen]
                # Widgets keyed by the row and the generation: nothing typed for one call is shown for the next.
                key = f"followup.call.{generation}.{chosen}"
                with st.form(key):
                    outcome = st.radio("Outcome", list(clinic.CALL_OUTCOME_LABELS), index=None,
                                       format_func=clinic.CALL_OUTCOME_LABELS.get, key=f"{key}.outcome")
                    note = st.text_input("Note (optional)", key=f"{key}.note", max_chars=500,
                                         placeholder="e.g. will do it tonight; asked to call after 5 pm")
                    submitted = st.form_submit_button("Save the call outcome", type="primary")
                if submitted:
                    if outcome is None:
                        st.error("Choose the outcome of the call. Nothing was saved.")
                    else:
                        try:
                            with data.database() as db:
                                clinic.record_call(db, user, patient_id=row.patient_id, series_id=int(row.series_id),
                                                   slot=row.slot, due_on=row.due_on.date(), outcome=outcome,
                                                   note=note or None, now=session.now())
                        except OutcomesError as exc:
                            st.error(widgets.message(exc))
                        else:
                            said = clinic.CALL_OUTCOME_LABELS[outcome].split(" (")[0]
                            text = f"Call to {widgets.literal(row.patient_id)} about {row.label} saved: {said}."
                            if outcome == "completed_by_phone":
                                text += (" Enter the answers on the Record page (Paper questionnaire, dated today): "
                                         "that is what completes the questionnaire.")
                                st.session_state["followup.call.paper"] = True
                            st.session_state["followup.call.saved"] = text
                            st.session_state["followup.call.generation"] = generation + 1
                            st.rerun()

with completion_tab:
    with data.database() as db:
        result = clinic.followup_completion(db, user, as_of=today, settings=settings)
    if result.notice:
        st.info(result.notice + f" Counted at the end of the last whole month ({widgets.long_date(result.as_of)}).")
    st.caption(f"**Due**: follow-up slots whose due day is on or before {widgets.long_date(result.as_of)}, "
               "leaving out slots that fell due after the patient left active follow-up. **Completed**: a "
               "questionnaire is dated in the slot (check-in, paper form or import); **still open**: not yet, "
               "and the slot is open; **missed**: it closed undone. Completed / due is shown with its Wilson 95 % "
               "interval. **How**: by phone when a call recorded it as completed by phone; else after the "
               "reminder, or after the invitation, when that was sent on or before the day it was done; else "
               "before any message.")

    st.subheader("Per formal time point")
    widgets.table(completion.display(result.timepoints, group_label="Time point"), hide_index=True,
                  height="content", key="followup.timepoints")
    st.caption("Each formal time point is one slot per series: the baseline before it, and the weekly slots that "
               "hold the end of the series and the 1, 3 and 6 month targets of the cohort analyses.")

    st.subheader("Per week after the series")
    st.plotly_chart(figures.followup_weeks_figure(result.drawn_weeks), key="followup.weeks.figure",
                    config={"displaylogo": False})
    with st.expander("Table per week"):
        widgets.table(completion.display(result.weeks, group_label="Week"), hide_index=True, height="content",
                      key="followup.weeks")

    clinician_col, diagnosis_col = st.columns(2)
    with clinician_col:
        st.subheader("By clinician")
        st.caption("Formal time points of the series each clinician recorded.")
        widgets.table(completion.display(result.by_clinician, group_label="Clinician"), hide_index=True,
                      height="content", key="followup.clinicians")
    with diagnosis_col:
        st.subheader("By diagnosis")
        st.caption("Formal time points, by the patient's diagnosis code.")
        widgets.table(completion.display(result.by_diagnosis, group_label="Diagnosis"), hide_index=True,
                      height="content", key="followup.diagnoses")

    if not result.qi and len(result.slots):
        with st.expander("Every slot due, with its patient"):
            slots = result.slots
            widgets.table(pd.DataFrame({
                "Patient": slots["patient_id"], "Questionnaire": slots["label"],
                "Due": [widgets.long_date(d) for d in slots["due_on"]],
                "Outcome": slots["outcome"].str.capitalize(),
                "How": slots["how"].map(completion.HOW_LABELS).fillna(""),
                "Clinician": slots["entered_by"], "Diagnosis": slots["diagnosis"]}), hide_index=True,
                key="followup.slots")
