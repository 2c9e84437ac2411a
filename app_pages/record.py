"""Clinicians record: enrol a patient, plan or log a series and each infusion as it is given (vital signs,
adverse events), cancel a planned series, record a disposition, enter a paper questionnaire."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from outcomes import auth, clinic, storage
from outcomes.errors import CheckinExists, OutcomesError
from ui import data, session, widgets

user = session.require_roles("clinician")
settings = data.settings()
today = session.today()
st.title("Record")

EVENT_LABELS = {kind: kind.replace("_", " ").capitalize() for kind in storage.EVENT_KINDS}
SEVERITY_LABELS = {severity: severity.capitalize() for severity in storage.SEVERITIES}
ACTION_LABELS = {"none": "None", "slowed": "Infusion slowed", "stopped": "Infusion stopped",
                 "medication": "Medication given"}
ACTION_WORDS = {"none": "no action", "slowed": "infusion slowed", "stopped": "infusion stopped",
                "medication": "medication given"}
VITAL_LABELS = {"bp_systolic_before": "Systolic BP before (mmHg)",
                "bp_diastolic_before": "Diastolic BP before (mmHg)",
                "bp_systolic_after": "Systolic BP after (mmHg)",
                "bp_diastolic_after": "Diastolic BP after (mmHg)",
                "heart_rate": "Heart rate (beats/min)"}  # and sedation_rass, a choice of RASS levels
#: Richmond Agitation-Sedation Scale (Sessler et al. 2002), from +4 to -5 as it is printed.
RASS = {4: "Combative", 3: "Very agitated", 2: "Agitated", 1: "Restless", 0: "Alert and calm", -1: "Drowsy",
        -2: "Light sedation", -3: "Moderate sedation", -4: "Deep sedation", -5: "Unarousable"}
RASS_HELP = ("Richmond Agitation-Sedation Scale: +4 combative, +3 very agitated, +2 agitated, +1 restless, "
             "0 alert and calm, −1 drowsy (awake for more than 10 s to voice), −2 light sedation (briefly "
             "awake to voice), −3 moderate sedation (moves to voice, no eye contact), −4 deep sedation "
             "(moves to touch only), −5 unarousable. Leave empty if it was not assessed.")
SERIES_MODES = {"plan": "Plan a series (log infusions as they are given)",
                "record": "Record a completed series"}


def attempt(action):
    """Run one write; show the library's message (which says what to fix) when it is refused."""
    try:
        with data.database() as db:
            return action(db), None
    except OutcomesError as exc:
        st.error(widgets.message(exc))
        return None, exc


# Every form that saves starts empty after a successful save. Deleting its widgets' session-state keys is
# not enough: Chromium keeps what it showed for a widget id, shows it again and sends it back with the next
# run (the adverse events of one infusion were saved again with the next ones; the next patient inherited
# the previous one's diagnosis). So every widget key holds the form's generation, bumped after each save:
# the next run draws new widgets, which start at their defaults. A refused save keeps the generation, and
# with it everything typed.


def keys(form: str) -> str:
    """The key prefix of ``form``'s widgets: ``record.<form>.<generation>``."""
    return f"record.{form}.{st.session_state.get(f'record.{form}.generation', 0)}"


def renew(form: str) -> None:
    """New, empty widgets for ``form`` from the next run on (call after a successful save, then rerun)."""
    st.session_state[f"record.{form}.generation"] = st.session_state.get(f"record.{form}.generation", 0) + 1


def saved(form: str, message: str) -> None:
    """After a successful save: an empty ``form``, with ``message`` shown above it once."""
    renew(form)
    st.session_state[f"record.{form}.saved"] = message
    st.rerun()


def show_saved(form: str) -> None:
    """What :func:`saved` left to say, under the button that saved it (where the clinician is looking)."""
    if message := st.session_state.pop(f"record.{form}.saved", None):
        st.success(message)


with data.database() as db:
    patient_ids = clinic.patient_ids(db, user)


PICKERS = ("record.series.patient", "record.infusion.patient", "record.paper.patient",
           "record.disposition.patient", "record.invite.patient", "record.contacts.patient")


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


def event_words(event: dict) -> str:
    """ "nausea (moderate, infusion slowed)"; an "other" event by its description."""
    what = event["kind"].replace("_", " ")
    if what == "other":
        what = f"other: {event['description'].strip()}"
    action = f", {ACTION_WORDS[event['action']]}" if event["action"] else ""
    return f"{what} ({event['severity']}{action})"


def series_label(s, given: int) -> str:
    """ "Series 2: in progress from 3 March 2026, 2 of 5 given" (``given``: its infusions logged). A planned
    series has no number yet (numbers count the series given, as on the Patient page)."""
    if s.state == "planned":
        return f"Planned series from {widgets.long_date(s.planned_first)}, 0 of {s.planned_infusions} given"
    name = f"Series {s.series_number}"
    span = f"{widgets.long_date(s.first_infusion)} to {widgets.long_date(s.last_infusion)}"
    if not s.by_day:  # recorded after the fact: its infusions may be logged one by one afterwards
        return f"{name}: completed, {span}, {given} of {s.infusions} logged"
    if given < s.planned_infusions:
        return (f"{name}: in progress from {widgets.long_date(s.first_infusion)}, {given} of "
                f"{s.planned_infusions} given")
    return f"{name}: completed, {span}, {given} of {s.planned_infusions} given"


def open_series(patient_id: str) -> tuple[pd.DataFrame, dict[int, str]]:
    """The patient's series that can take an infusion (planned or given, not cancelled or voided), labelled
    with their state and how many infusions are logged."""
    with data.database() as db:
        series = storage.load_series(db, patient_id, every=True)
        infusions = storage.load_infusions(db, patient_id)
    series = series[(series["state"] != "cancelled") & ~series["voided"]]
    given = infusions["series_id"].value_counts()
    return series, {int(s.series_id): series_label(s, int(given.get(s.series_id, 0)))
                    for s in series.itertuples()}


def diagnosis_codes() -> dict[int, str]:
    """The clinic's current diagnosis codes, {code: label}, for the enrolment form."""
    with data.database() as db:
        return {int(c.code): c.label for c in clinic.diagnosis_codes(db, user).itertuples()}


enrol, series_tab, infusion_tab, paper_tab, disposition_tab, invite_tab, contacts_tab = st.tabs(
    ["Enrol a patient", "Plan or log a series", "Log an infusion", "Paper questionnaire", "Disposition",
     "New invitation code", "Contacts for reminders"])

with enrol:
    if invitation := st.session_state.get("record.invitation"):
        st.success(f"Enrolled {widgets.literal(invitation.patient_id)}. Give the patient this one-time invitation code; "
                   f"it works once and expires on {invitation.expires_at:%d %B %Y}:")
        st.code(invitation.code, language=None)
    # Not clear_on_submit: that would also empty the form when it is refused (duplicate ID...), and the
    # clinician would have to type everything again; it is emptied after a successful enrolment only.
    key = keys("enrol")
    with st.form(key):
        patient_id = st.text_input("Clinic patient ID", key=f"{key}.patient_id",
                                   help="The ID your clinic uses, e.g. the chart number.")
        codes = diagnosis_codes()
        diagnosis_code = st.selectbox("Diagnosis (the clinic's code; what QI sees)", list(codes),
                                      format_func=codes.get, index=None, placeholder="Not coded",
                                      key=f"{key}.diagnosis_code",
                                      help="The list is kept by an administrator on the Diagnosis codes page.")
        diagnosis = st.text_input("Diagnosis note (optional free text; never shown to QI)",
                                  placeholder="e.g. CRPS type 1, left foot, after fracture", key=f"{key}.diagnosis")
        sex = st.selectbox("Sex", ["F", "M", "X"], index=None, placeholder="Not recorded",
                           format_func={"F": "Female", "M": "Male", "X": "Other / not listed"}.get,
                           key=f"{key}.sex")
        birth_year = st.number_input("Birth year", min_value=1900, max_value=today.year, value=None, step=1,
                                     key=f"{key}.birth_year")
        enrolled_on = st.date_input("Enrolled on", value=today, max_value=today, key=f"{key}.enrolled_on")
        submitted = st.form_submit_button("Enrol and create invitation code", type="primary")
    if submitted:
        invitation, _ = attempt(lambda db: clinic.enrol_patient(
            db, user, patient_id=patient_id, diagnosis=diagnosis or None, sex=sex, birth_year=birth_year,
            enrolled_on=enrolled_on, today=today, now=session.now(), settings=settings,
            diagnosis_code=diagnosis_code))
        if invitation:
            st.session_state["record.invitation"] = invitation
            select_patient(invitation.patient_id)
            renew("enrol")
            st.rerun()

with series_tab:
    patient_id = patient_picker("record.series.patient")
    mode = st.radio("What to record", list(SERIES_MODES), format_func=SERIES_MODES.get, horizontal=True,
                    key="record.series.mode")
    key = f"{keys('series')}.{mode}"
    first_col, count_col, last_col = st.columns(3)
    if mode == "plan":
        first_infusion = first_col.date_input("First infusion", value=None, key=f"{key}.first",
                                              help="May be up to a year ahead.")
        infusions = count_col.number_input("Number of infusions", min_value=1, max_value=60, value=5, step=1,
                                           key=f"{key}.count")
        last_infusion = last_col.date_input("Last infusion", value=None, key=f"{key}.last",
                                            help="Leave empty for infusions on consecutive days.")
        if first_infusion and not last_infusion:
            # The library's default (storage.plan_series), shown before it is saved.
            last = first_infusion + timedelta(days=infusions - 1)
            st.caption(f"Last infusion: {widgets.long_date(last)} ({infusions} consecutive days). Choose a "
                       "last infusion to spread them out.")
    else:
        first_infusion = first_col.date_input("First infusion", value=None, max_value=today,
                                              key=f"{key}.first")
        infusions = count_col.number_input("Number of infusions", min_value=1, max_value=60, value=5, step=1,
                                           key=f"{key}.count")
        last_infusion = last_col.date_input("Last infusion", value=None, max_value=today, key=f"{key}.last")
    dose_col, protocol_col = st.columns([1, 2])
    dose_mg_per_kg = dose_col.number_input("Dose (mg/kg)", min_value=0.0, max_value=5.0, value=0.5,
                                           step=0.05, format="%.2f", key=f"{key}.dose")
    protocol = protocol_col.text_input("Protocol", value="5-day 0.5 mg/kg over 40 min",
                                       key=f"{key}.protocol")
    notes = st.text_area("Notes", key=f"{key}.notes")
    if st.button("Save series", type="primary") and require_patient(patient_id):
        if mode == "plan":
            series_id, _ = attempt(lambda db: clinic.plan_series(
                db, user, patient_id=patient_id, first_infusion=first_infusion, planned_infusions=infusions,
                planned_last=last_infusion, protocol=protocol or None, dose_mg_per_kg=dose_mg_per_kg,
                notes=notes or None, today=today))
            if series_id:
                with data.database() as db:  # the plan as stored (the library sets the default last day)
                    every = storage.load_series(db, patient_id, every=True)
                plan = every.set_index("series_id").loc[series_id]
                saved("series", f"Series saved for {widgets.literal(patient_id)}: {plan.planned_infusions} "
                                f"infusions planned from {widgets.long_date(plan.planned_first)} to "
                                f"{widgets.long_date(plan.planned_last)}. Log each infusion on the “Log an "
                                "infusion” tab as it is given.")
        else:
            series_id, _ = attempt(lambda db: clinic.log_series(
                db, user, patient_id=patient_id, first_infusion=first_infusion, last_infusion=last_infusion,
                infusions=infusions, protocol=protocol or None, dose_mg_per_kg=dose_mg_per_kg,
                notes=notes or None, today=today))
            if series_id:
                saved("series", f"Series saved for {widgets.literal(patient_id)}. Log each infusion on the "
                                "“Log an infusion” tab.")
    show_saved("series")

    st.subheader("Cancel a planned series")
    if patient_id is None:
        st.caption("Choose a patient to see their planned series.")
    else:
        series, labels = open_series(patient_id)
        planned = [int(s) for s in series.loc[series["state"] == "planned", "series_id"]]
        if not planned:
            st.caption("This patient has no planned series to cancel.")
        else:
            key = keys("cancel")
            with st.form(key):
                series_id = st.selectbox("Planned series", planned, format_func=labels.get,
                                         key=f"{key}.series")
                reason = st.text_input("Reason for cancelling", key=f"{key}.reason",
                                       placeholder="e.g. patient unwell, rescheduled")
                cancelled = st.form_submit_button("Cancel the planned series")
            st.caption("Only a series with no infusion given can be cancelled; the reason is kept in the "
                       "record.")
            if cancelled:
                _, refused = attempt(lambda db: clinic.cancel_series(db, user, patient_id=patient_id,
                                                                     series_id=series_id, reason=reason))
                if refused is None:
                    first = series.set_index("series_id").loc[series_id, "planned_first"]
                    saved("cancel", f"The series of {widgets.literal(patient_id)} planned from "
                                    f"{widgets.long_date(first)} is cancelled.")
    show_saved("cancel")

with infusion_tab:
    patient_id = patient_picker("record.infusion.patient")
    series, labels = open_series(patient_id) if patient_id else (None, {})
    if patient_id and not labels:
        st.info("This patient has no planned or given series: plan one on the “Plan or log a series” tab "
                "first.")
    elif patient_id:
        key = keys("infusion")
        series_id = st.selectbox("Series", list(labels), format_func=labels.get, index=len(labels) - 1,
                                 key=f"{key}.series.{patient_id}")
        planned_dose = series.set_index("series_id").loc[series_id, "dose_mg_per_kg"]
        day, dose, minutes = st.columns(3)
        infused_on = day.date_input("Date", value=None, max_value=today, key=f"{key}.date")
        dose_mg_per_kg = dose.number_input("Dose (mg/kg)", min_value=0.0, max_value=5.0, step=0.05,
                                           value=0.5 if pd.isna(planned_dose) else float(planned_dose),
                                           format="%.2f", key=f"{key}.dose.{series_id}")
        duration_min = minutes.number_input("Duration (min)", min_value=1, max_value=1440, value=40, step=5,
                                            key=f"{key}.duration")

        st.markdown("**Vital signs** (optional)")
        # No bounds on the inputs: the library checks them and says what is wrong.
        columns = st.columns(4) + st.columns(4)  # blood pressure before and after; heart rate and sedation
        vitals = {name: column.number_input(label, value=None, step=1, key=f"{key}.{name}")
                  for column, (name, label) in zip(columns, VITAL_LABELS.items())}
        vitals["sedation_rass"] = columns[5].selectbox(
            "Sedation (RASS)", list(RASS), index=None, placeholder="Not assessed", help=RASS_HELP,
            format_func=lambda v: f"{v:+d} {RASS[v]}" if v else f"0 {RASS[0]}",
            key=f"{key}.sedation_rass")

        st.markdown("**Adverse events**")
        events, no_severity = [], []
        for kind, label in EVENT_LABELS.items():
            if not st.checkbox(label, key=f"{key}.ae.{kind}"):
                continue
            # Shown once ticked, and empty: nothing is left set for an event that did not happen.
            _, severity_col, action_col = st.columns([0.3, 3, 5])
            event = {"kind": kind,
                     "severity": severity_col.radio(f"Severity of {label.lower()}", list(SEVERITY_LABELS),
                                                    index=None, format_func=SEVERITY_LABELS.get,
                                                    horizontal=True, key=f"{key}.ae.{kind}.severity"),
                     "action": action_col.radio(f"Action taken for {label.lower()}", list(ACTION_LABELS),
                                                index=None, format_func=ACTION_LABELS.get, horizontal=True,
                                                key=f"{key}.ae.{kind}.action")}
            if kind == "other":
                event["description"] = severity_col.text_input("Describe the other adverse event",
                                                               placeholder="e.g. tingling lips",
                                                               key=f"{key}.ae.other.description")
            events.append(event)
            if event["severity"] is None:
                no_severity.append(label.lower())
        notes = st.text_area("Notes", key=f"{key}.notes")
        if st.button("Save infusion", type="primary"):
            if no_severity:
                st.error(f"Choose the severity of each adverse event ticked ({', '.join(no_severity)}). "
                         "Nothing was saved.")
            else:
                infusion_id, _ = attempt(lambda db: clinic.log_infusion(
                    db, user, patient_id=patient_id, series_id=series_id, infused_on=infused_on,
                    dose_mg_per_kg=dose_mg_per_kg, duration_min=duration_min, adverse_events=events,
                    notes=notes or None, today=today, **vitals))
                if infusion_id:
                    said = ", ".join(event_words(e) for e in events)
                    saved("infusion", f"Infusion of {infused_on:%A} {widgets.long_date(infused_on)} saved "
                                      f"for {widgets.literal(patient_id)}. "
                                      + (f"Adverse events saved: {widgets.literal(said)}." if said else
                                         "No adverse events."))
        show_saved("infusion")

with paper_tab:
    st.caption("Enter the answers from a paper questionnaire on the patient's behalf (recorded as entered by "
               "the clinician). Leave unanswered questions empty.")
    patient_id = patient_picker("record.paper.patient")
    assessed_on = st.date_input("Date the patient filled it in", value=today, max_value=today,
                                key="record.paper.date")
    paper = st.session_state.setdefault("record.paper.answers", {})
    for form in clinic.checkin_forms(settings, data.registry()):
        with st.expander(f"{data.registry().domain(form.domain).label}: {form.title}", expanded=True):
            widgets.questionnaire(form, paper.setdefault(form.key, {}), key=keys("paper"))
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
            # Patient and date stay for the next paper; the answers start empty (new radios, see keys()).
            st.session_state.pop("record.paper.answers", None)
            st.session_state.pop("record.paper.replace", None)
            renew("paper")
            st.session_state["record.paper.saved"] = {
                "alerts": result.alerts_created, "domains": [(d.scored, d.message) for d in result.domains]}
            st.rerun()
    if result := st.session_state.pop("record.paper.saved", None):
        if alerts := result["alerts"]:
            st.warning(f"This entry raised {alerts} alert{'s' if alerts > 1 else ''} for clinician review: "
                       f"open the Alerts page to acknowledge {'them' if alerts > 1 else 'it'}.",
                       icon=":material/notifications:")
            st.page_link("app_pages/alerts.py", label="Open the Alerts page", icon=":material/notifications:")
        for scored, message in result["domains"]:
            (st.success if scored else st.warning)(message)

with disposition_tab:
    st.caption("Only active patients are expected to check in. Every change is kept in the record's trail, "
               "with who recorded it and why.")
    patient_id = patient_picker("record.disposition.patient")
    if patient_id:
        with data.database() as db:
            current = storage.load_patient(db, patient_id).iloc[0]
        words = clinic.DISPOSITION_LABELS.get(current["disposition"], current["disposition"])
        if pd.isna(current["disposition_on"]):  # as enrolled: never changed
            st.markdown(f"**Current disposition:** {words} since enrolment on "
                        f"{widgets.long_date(current['enrolled_on'])}; no change recorded")
        else:
            since = "since" if current["disposition"] == "active" else "on"
            by = current["disposition_by"]
            st.markdown(f"**Current disposition:** {words} {since} "
                        f"{widgets.long_date(current['disposition_on'])}"
                        + (f", recorded by {widgets.literal(by)}" if pd.notna(by) else ""))
            if pd.notna(current["disposition_reason"]):
                st.text(f"Reason: {current['disposition_reason']}")
        key = keys("disposition")
        with st.form(key):
            disposition = st.radio("New disposition", list(clinic.DISPOSITION_LABELS), index=None,
                                   format_func=clinic.DISPOSITION_LABELS.get, horizontal=True,
                                   key=f"{key}.disposition")
            on = st.date_input("Effective date", value=today, max_value=today, key=f"{key}.on")
            reason = st.text_input("Reason", key=f"{key}.reason",
                                   help="Required for a withdrawal, and to make a patient active again.")
            submitted = st.form_submit_button("Record the disposition", type="primary")
        if submitted:
            _, refused = attempt(lambda db: clinic.set_disposition(db, user, patient_id=patient_id,
                                                                   disposition=disposition, on=on,
                                                                   reason=reason or None, today=today))
            if refused is None:
                saved("disposition", f"Disposition of {widgets.literal(patient_id)} recorded: "
                                     f"{clinic.DISPOSITION_LABELS[disposition]} on {widgets.long_date(on)}.")
        show_saved("disposition")

with invite_tab:
    st.caption("A new code replaces any earlier unused code of the patient.")
    patient_id = patient_picker("record.invite.patient")
    if st.button("Create a new invitation code", disabled=patient_id is None):
        invitation, _ = attempt(lambda db: auth.issue_invitation(db, user, patient_id, now=session.now(),
                                                                 settings=settings))
        if invitation:
            st.success(f"Invitation code for {widgets.literal(patient_id)}, valid until {invitation.expires_at:%d %B %Y}:")
            st.code(invitation.code, language=None)

CONTACT_LABELS = {"email": "Email", "phone": "Mobile number", "channel": "Preferred channel",
                  "consent_on": "Consent date"}


def contact_problems(exc: OutcomesError) -> str:
    """A refused contact as a list, each problem under the field it concerns."""
    lines = []
    for problem in getattr(exc, "problems", []) or [str(exc)]:
        field = next((f for f in CONTACT_LABELS if problem.startswith(f + " ")), None)
        lines.append(f"- **{CONTACT_LABELS[field]}**: {widgets.literal(problem)}" if field
                     else f"- {widgets.literal(problem)}")
    return "Nothing was saved. Fix the following and try again:\n" + "\n".join(lines)


with contacts_tab:
    st.caption("Where the patient's questionnaire invitations and reminders go. Messages carry no health "
               "information (the clinic's name, “your questionnaire is ready”, the link, how to stop). Contact "
               "details never leave in de-identified exports; every change is in the audit log.")
    patient_id = patient_picker("record.contacts.patient")
    if patient_id:
        with data.database() as db:
            current = clinic.contact(db, user, patient_id, now=session.now())
        if not current.stored:
            st.markdown("**No contact details recorded**: the patient gets no messages.")
        else:
            consent = ("no consent recorded" if current.consent_on is None else
                       f"consent given on {widgets.long_date(current.consent_on)}, "
                       + (f"imported by {widgets.literal(current.consent_by)}" if current.consent_how == "imported"
                          else f"recorded by {widgets.literal(current.consent_by)}"))
            changed = widgets.clinic_times(pd.Series([current.updated_at]), settings).iloc[0]
            st.markdown(f"**Messages by:** {clinic.CHANNEL_LABELS[current.channel]} · {consent} · last changed "
                        f"{changed:%d %B %Y %H:%M} by {widgets.literal(current.updated_by)}")
        if current.opted_out:
            stopped = widgets.clinic_times(pd.Series([current.opted_out_at]), settings).iloc[0]
            st.warning(f"Messages stopped on {stopped:%d %B %Y at %H:%M} by {widgets.literal(current.opted_out_by)}. "
                       "Choosing a channel again and saving turns them back on: record the patient's new consent.")
        # Keyed by the patient and the form's generation: another patient's form never shows these values.
        key = f"{keys('contacts')}.{patient_id}"
        with st.form(key):
            email = st.text_input("Email", value=current.email or "", key=f"{key}.email",
                                  placeholder="name@example.org")
            phone = st.text_input("Mobile number", value=current.phone or "", key=f"{key}.phone",
                                  placeholder="+1 201 555 0123",
                                  help=f"With its country code; a number without one is read as a "
                                       f"{settings.phone_region} number.")
            channels = list(clinic.CHANNEL_LABELS)
            channel = st.radio("Preferred channel", channels, index=channels.index(current.channel),
                               format_func=clinic.CHANNEL_LABELS.get, horizontal=True, key=f"{key}.channel")
            consent_on = st.date_input("Consent date", value=current.consent_on, max_value=today,
                                       key=f"{key}.consent_on",
                                       help="The day the patient agreed to be contacted; required for email or "
                                            "text messages. You are recorded as who recorded it.")
            submitted = st.form_submit_button("Save contact details", type="primary")
        if submitted:
            try:
                with data.database() as db:
                    clinic.set_contact(db, user, patient_id=patient_id, email=email or None, phone=phone or None,
                                       channel=channel, consent_on=consent_on, now=session.now(), today=today,
                                       settings=settings)
            except OutcomesError as exc:
                st.error(contact_problems(exc))
            else:
                saved("contacts", f"Contact details of {widgets.literal(patient_id)} saved.")
        stop_col, revoke_col = st.columns(2)
        if stop_col.button("Stop all messages", key=f"{key}.stop", disabled=current.channel == "none",
                           help="The patient asked not to be messaged: no invitation or reminder is sent, planned "
                                "ones are cancelled. Addresses are kept."):
            _, refused = attempt(lambda db: clinic.stop_messages(db, user, patient_id=patient_id, now=session.now()))
            if refused is None:
                saved("contacts", f"Messages to {widgets.literal(patient_id)} stopped.")
        links = current.open_links
        if revoke_col.button(f"Revoke open check-in links ({links})", key=f"{key}.revoke", disabled=not links,
                             help="Links already sent stop working at once (e.g. a lost phone or a wrong address)."):
            n, refused = attempt(lambda db: clinic.revoke_links(db, user, patient_id=patient_id, now=session.now()))
            if refused is None:
                saved("contacts", f"{n} check-in link{'s' if n != 1 else ''} of {widgets.literal(patient_id)} "
                                  "revoked.")
        show_saved("contacts")
