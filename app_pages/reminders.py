"""Reminders: the outbox of invitations and reminders, the last runs of ``python -m outcomes remind``, what
failed or was given up, and a test message (docs/operations.md, Reminders). Admin only."""

import streamlit as st

from outcomes import followup, messaging
from outcomes.errors import OutcomesError
from ui import data, session, widgets

admin = session.require_roles("admin")
st.title("Reminders")
st.caption("Invitations and reminders go out when the server runs `python -m outcomes remind` (cron or a systemd "
           "timer). Every message is in the outbox before it is sent, so none is sent twice. Message texts are "
           "never stored or shown: their links open a patient's check-in.")

settings = data.settings()

# The filters are drawn further down but read first: one read (and one audit entry) per rerun.
state = st.session_state
filters = {"status": state.get("reminders.status"), "step": state.get("reminders.step"),
           "channel": state.get("reminders.channel"),
           "patient_id": (state.get("reminders.patient") or "").strip() or None, "day": state.get("reminders.day")}
try:
    with data.database() as db:
        view = messaging.read_outbox(db, admin, **filters)
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()
runs = view.runs
schedule = followup.Schedule.from_settings(settings)
for frame in (view.attention, view.outbox):  # slot names in words: "week_4" is "1 month"
    if "slot" in frame:
        frame["slot"] = frame["slot"].map(schedule.label)
attention = view.attention[view.attention["status"].eq("gave_up")]
failing = view.attention[view.attention["status"].eq("failed")]

RUN_COLUMNS = {"run_id": "Run", "started_at": st.column_config.DatetimeColumn("Started (UTC)",
                                                                               format="YYYY-MM-DD HH:mm"),
               "as_of": st.column_config.DateColumn("For day"), "planned": "Planned", "sent": "Sent",
               "failed": "Failed", "outcome": "Outcome", "error": "Error"}
MESSAGE_COLUMNS = {"message_id": "No.", "patient_id": "Patient", "slot": "Slot",
                   "due_on": st.column_config.DateColumn("Due"), "step": "Step", "channel": "Channel",
                   "recipient": "To", "status": "Status", "attempts": "Tries", "last_error": "Reason",
                   "provider_response": "Provider's answer",
                   "planned_at": st.column_config.DatetimeColumn("Planned (UTC)", format="YYYY-MM-DD HH:mm"),
                   "sent_at": st.column_config.DatetimeColumn("Sent (UTC)", format="YYYY-MM-DD HH:mm")}

st.subheader("Last runs")
real = runs[~runs["dry_run"]] if len(runs) else runs
if real.empty:
    st.warning("No reminder run is recorded. Ask IT to schedule `python -m outcomes remind` (docs/operations.md, "
               "Reminders); until then no invitation or reminder is sent.", icon=":material/warning:")
else:
    last = real.iloc[0]
    started = last["started_at"].to_pydatetime()
    ago = session.now() - started
    said = (f"The last run started on {started:%Y-%m-%d} at {started:%H:%M} UTC: {last['outcome'] or 'unfinished'}, "
            f"{int(last['planned'])} planned, {int(last['sent'])} sent, {int(last['failed'])} failed.")
    if ago.total_seconds() > 26 * 3600:
        st.warning(f"{said} That is {ago.days:,} day{'' if ago.days == 1 else 's'} ago: the scheduled run seems to "
                   "have stopped; ask IT to check the timer and its log.", icon=":material/warning:")
    elif last["outcome"] == "error":
        st.error(f"{said} It stopped with an error: {widgets.literal(last['error'] or '')}")
    else:
        st.info(said, icon=":material/schedule:")
    widgets.table(real[[c for c in RUN_COLUMNS if c in real.columns]], column_config=RUN_COLUMNS, hide_index=True,
                  key="reminders.runs")

st.subheader("Needs attention")
patients_messages = attention
if patients_messages.empty and failing.empty:
    st.success("No failed or given-up message.", icon=":material/check_circle:")
if len(patients_messages):
    st.error(f"**{len(patients_messages):,} message{'' if len(patients_messages) == 1 else 's'} given up**: tried "
             f"{settings.message_max_attempts} times, or left unfinished by a run that was interrupted (it may or "
             "may not have gone out). No run sends them again: check the reason, then reach the patient another way "
             "(the call list) if needed.", icon=":material/error:")
    widgets.table(patients_messages[[c for c in MESSAGE_COLUMNS if c in patients_messages.columns]],
                  column_config=MESSAGE_COLUMNS, hide_index=True, key="reminders.gave_up")
if len(failing):
    st.warning(f"**{len(failing):,} message{'' if len(failing) == 1 else 's'} failed** and will be tried again by "
               f"the next runs (up to {settings.message_max_attempts} tries).", icon=":material/warning:")
    widgets.table(failing[[c for c in MESSAGE_COLUMNS if c in failing.columns]], column_config=MESSAGE_COLUMNS,
                  hide_index=True, key="reminders.failed")

st.subheader("Outbox")
cols = st.columns(5)
cols[0].selectbox("Status", ("planned", "sending", "sent", "failed", "gave_up", "cancelled"), index=None,
                           placeholder="Any status", key="reminders.status")
cols[1].selectbox("Step", ("invitation", "reminder", "test"), index=None, placeholder="Any step",
                         key="reminders.step")
cols[2].selectbox("Channel", messaging.CHANNELS, index=None, placeholder="Any channel",
                            key="reminders.channel")
cols[3].text_input("Patient ID", key="reminders.patient")
cols[4].date_input("Planned on (UTC)", value=None, key="reminders.day")
box = view.outbox
st.write(f"{len(box):,} message{'' if len(box) == 1 else 's'}, newest first"
         + (" (the newest 5,000)." if len(box) >= 5000 else "."))
widgets.table(box[[c for c in MESSAGE_COLUMNS if c in box.columns]], column_config=MESSAGE_COLUMNS, hide_index=True,
              key="reminders.outbox")

st.subheader("Send a test message")
st.caption("Checks that email or text messages reach a phone or mailbox with the current settings. It says only "
           "that it is a test from the clinic, goes through the outbox as step *test*, is tried once, and is "
           "recorded in the audit log (without the address).")
with st.form("reminders.test", clear_on_submit=False):
    test_channel = st.radio("By", messaging.CHANNELS, horizontal=True, key="reminders.test_channel",
                            format_func={"email": "Email", "sms": "Text message (SMS)"}.get)
    address = st.text_input("Email address or mobile number", key="reminders.test_address",
                            help="A mobile number without + and country code is read as a number of the "
                                 "phone_region setting.")
    pressed = st.form_submit_button("Send the test message", icon=":material/send:")
if pressed:
    try:
        with data.database() as db:
            result = messaging.send_test(db, admin, channel=test_channel, recipient=address, settings=settings,
                                         now=session.now())
    except OutcomesError as exc:
        st.error(widgets.message(exc))
    else:
        if result.status == "sent":
            st.success(f"Sent (outbox message {result.message_id}). The provider answered: "
                       f"{widgets.literal(result.response or '')}", icon=":material/check_circle:")
        else:
            st.error(f"Not sent (outbox message {result.message_id}): {widgets.literal(result.error or '')}",
                     icon=":material/error:")
