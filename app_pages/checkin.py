"""The patient's weekly check-in: one questionnaire at a time, saved as a draft at every tap."""

from __future__ import annotations

import streamlit as st

from outcomes import clinic, scoring
from outcomes.errors import CheckinExists, OutcomesError
from ui import data, session, widgets

user = session.require_roles("patient")
settings = data.settings()
with data.database() as db:
    due = clinic.checkin_due(db, user, user.patient_id, today=session.today(), settings=settings)
# The questionnaires of the slot open today (baseline, weekly, or a formal time point: docs/followup.md).
forms = clinic.checkin_forms(settings, data.registry(), kind=due.kind)
ANSWERS, STEP, RESULT, REPLACE = "checkin.answers", "checkin.step", "checkin.result", "checkin.confirm_replace"

if ANSWERS not in st.session_state:
    # First visit in this browser session: bring back whatever was answered before a reload or sign-out.
    with data.database() as db:
        draft = clinic.load_draft(db, user, user.patient_id)
    st.session_state[ANSWERS] = {f.key: dict((draft.answers if draft else {}).get(f.key, {})) for f in forms}
    st.session_state[STEP] = 0
    if draft:
        st.session_state["checkin.restored"] = draft.saved_at
answers: dict[str, dict[str, int | None]] = st.session_state[ANSWERS]
for f in forms:  # the open slot changed while the page was open (midnight): its questionnaires start empty
    answers.setdefault(f.key, {})
st.session_state[STEP] = min(st.session_state[STEP], len(forms) - 1)


def save_draft() -> None:
    widgets.sync_answers(forms, answers, key="checkin")
    try:
        with data.database() as db:
            clinic.save_draft(db, user, user.patient_id, answers, now=session.now())
    except OutcomesError as exc:  # e.g. the account was deactivated meanwhile: say so, do not crash
        st.session_state["checkin.error"] = str(exc)


def submit(replace: bool) -> None:
    widgets.sync_answers(forms, answers, key="checkin")  # a tap just before "Send" counts, callback or not
    try:
        with data.database() as db:
            result = clinic.submit_checkin(db, user, patient_id=user.patient_id, answers=answers,
                                           assessed_on=session.today(), today=session.today(),
                                           now=session.now(), settings=settings, replace=replace,
                                           registry=data.registry())
    except CheckinExists:
        st.session_state[REPLACE] = True
        return
    except OutcomesError as exc:
        st.session_state["checkin.error"] = str(exc)
        return
    for key in (ANSWERS, STEP, REPLACE):
        st.session_state.pop(key, None)
    st.session_state[RESULT] = result


st.title("Weekly check-in")
result = st.session_state.get(RESULT)
if result is not None:
    st.success("Thank you. Your answers are saved." + (" They replace today's earlier check-in." if result.replaced else ""))
    for domain in result.domains:
        (st.info if domain.scored else st.warning)(domain.message)
    if session.is_link_session(user):  # a check-in link opens the check-in and this result, nothing else
        st.caption("You can close this page now.")
    else:
        st.page_link("app_pages/progress.py", label="See my progress", icon=":material/show_chart:")
        if st.button("Start another check-in"):
            del st.session_state[RESULT]
            st.rerun()
    st.caption(clinic.PATIENT_CRISIS_TEXT)
    st.stop()

{"overdue": st.warning, "due": st.info}.get(due.status, st.success)(due.message)
if restored := st.session_state.pop("checkin.restored", None):
    st.info(f"Welcome back: your unsent answers from {restored:%d %B, %H:%M} UTC are filled in below.")

step = st.session_state[STEP]
form = forms[step]
label = data.registry().domain(form.domain).label
st.progress((step + 1) / len(forms), text=f"Questionnaire {step + 1} of {len(forms)}: {label}")
st.caption(data.registry().domain(form.domain).recall + " Answer what you can; you may leave a question out.")
widgets.questionnaire(form, answers[form.key], key="checkin", on_change=save_draft)
n_answered, need = widgets.answered(form, answers[form.key]), scoring.min_answered(form)
st.caption(f"{n_answered} of {form.n_items} answered · saved as you go")
if n_answered < need:
    st.caption(f"This part can only be scored if at least {need} of the {form.n_items} questions are answered.")

back, forward = st.columns(2)
if step > 0 and back.button("Back", icon=":material/arrow_back:", width="stretch"):
    st.session_state[STEP] = step - 1
    st.rerun()
if step < len(forms) - 1:
    if forward.button("Next", type="primary", icon=":material/arrow_forward:", width="stretch"):
        st.session_state[STEP] = step + 1
        st.rerun()
elif st.session_state.get(REPLACE):
    st.warning("You already sent a check-in today. Replace it with these answers?")
    yes, no = st.columns(2)
    yes.button("Replace today's check-in", type="primary", on_click=submit, args=(True,), width="stretch")
    if no.button("Keep the earlier one", width="stretch"):
        st.session_state.pop(REPLACE)
        st.rerun()
else:
    forward.button("Send my answers", type="primary", icon=":material/send:", on_click=submit, args=(False,),
                   width="stretch")
if error := st.session_state.pop("checkin.error", None):
    st.error(widgets.message(error))

with st.expander("Start again"):
    st.write("Throw away the answers you have not sent yet.")
    if st.button("Discard my unsent answers"):
        with data.database() as db:
            clinic.discard_draft(db, user, user.patient_id)
        for key in list(st.session_state.keys()):
            if str(key).startswith("checkin."):
                del st.session_state[key]
        st.rerun()
st.caption(clinic.PATIENT_CRISIS_TEXT)
