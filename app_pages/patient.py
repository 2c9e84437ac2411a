"""One patient for the clinician: disposition, alerts open and acknowledged, series and infusions,
trajectories, every assessment, and corrections and voids with the record's history."""

from datetime import timedelta

import pandas as pd
import streamlit as st

from outcomes import clinic, storage
from outcomes.errors import OutcomesError
from ui import data, session, widgets

user = session.require_roles("clinician")
settings = data.settings()
registry = data.registry()
today = session.today()

SEX_LABELS = {"F": "female", "M": "male", "X": "other / not listed"}
EVENT_ACTIONS = {"none": "no action", "slowed": "infusion slowed", "stopped": "infusion stopped",
                 "medication": "medication given"}
RECORD_CHOICES = {"patient": "Demographics", "series": "A series", "infusion": "An infusion",
                  "adverse_event": "An adverse event", "assessment": "An assessment (score)"}
CHANGE_ACTIONS = {"correct": "Corrected", "void": "Voided", "cancel": "Cancelled",
                  "disposition": "Disposition"}
MOMENT = "YYYY-MM-DD HH:mm"  # clinic time (widgets.clinic_times)
WRAPPED = 66  # row height (px): Streamlit wraps long cell text only in rows taller than 4rem (64 px)

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
        due = clinic.checkin_due(db, user, patient_id, today=today, settings=settings)
        schedule = clinic.followup_schedule(db, user, patient_id, today=today, settings=settings)
    history = record.changes  # the trail, with each change in words (one audited read: view_record)
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()


def disposition(info: pd.Series) -> str:
    """The patient's disposition in words: "Withdrawn on 3 March 2026 (moved away), recorded by dr.lee"."""
    words = clinic.DISPOSITION_LABELS.get(info["disposition"], info["disposition"])
    if pd.isna(info["disposition_on"]):
        return words  # as enrolled: never changed
    since = "since" if info["disposition"] == "active" else "on"
    words += f" {since} {widgets.long_date(info['disposition_on'])}"
    if pd.notna(info["disposition_reason"]):
        words += f" ({info['disposition_reason']})"
    if pd.notna(info["disposition_by"]):
        words += f", recorded by {info['disposition_by']}"
    return words


def series_status(s) -> str:
    """Planned (first infusion on …, n planned), In progress (k of n given), Completed, Cancelled (reason) or
    Voided (reason)."""
    if s.voided:
        return f"Voided ({s.void_reason})"
    if s.state == "cancelled":
        return f"Cancelled ({s.cancel_reason})"
    if s.state == "planned":
        return (f"Planned (first infusion on {widgets.long_date(s.planned_first)}, "
                f"{s.planned_infusions} planned)")
    if s.by_day and s.infusions < s.planned_infusions:
        return f"In progress ({s.infusions} of {s.planned_infusions} given)"
    return "Completed"


def event_text(e) -> str:
    """"nausea (mild, infusion slowed)"; an "other" event by its description; a voided one says so."""
    what = e.description if e.kind == "other" and pd.notna(e.description) else e.kind.replace("_", " ")
    action = f", {EVENT_ACTIONS[e.action]}" if e.action in EVENT_ACTIONS else ""
    return f"{what} ({e.severity}{action})" + (f" [voided: {e.void_reason}]" if pd.notna(e.voided_at) else "")


def pressure(systolic, diastolic) -> str | None:
    """Blood pressure as "142/88"."""
    return f"{systolic}/{diastolic}" if pd.notna(systolic) and pd.notna(diastolic) else None


def rass(value) -> str | None:
    """A RASS score with its sign ("+1", "0", "-2")."""
    return None if pd.isna(value) else f"{int(value):+d}" if value else "0"


def infusion_status(i) -> str:
    if pd.notna(i.voided_at):
        return f"Voided ({i.void_reason})"
    return "Voided with its series" if i.voided else "Given"


info = record.patient.iloc[0]
st.title(f"Patient {widgets.literal(patient_id)}")
coded = info.get("diagnosis_label") if isinstance(info.get("diagnosis_label"), str) else None
note = info["diagnosis"] if isinstance(info["diagnosis"], str) and info["diagnosis"].strip() else None
if coded and note and note.strip().casefold() != coded.casefold():
    diagnosis = f"{coded} (note: {note})"
else:
    diagnosis = coded or (f"{note} (not coded)" if note else "no diagnosis recorded")
facts = [diagnosis, SEX_LABELS.get(info["sex"], "sex not recorded"),
         f"born {int(info['birth_year'])}" if pd.notna(info["birth_year"]) else "birth year not recorded",
         disposition(info)]
st.text(" · ".join(facts))  # st.text: stored text never renders as Markdown or HTML
st.page_link("app_pages/record.py", icon=":material/how_to_reg:",
             label="Change the disposition (discharged, withdrawn…) on the Record page")

open_alerts = record.alerts[record.alerts["acknowledged_at"].isna()] if len(record.alerts) else record.alerts
if len(open_alerts):
    st.error(f"{len(open_alerts)} open alert(s): " + widgets.literal("; ".join(open_alerts["reason"])),
             icon=":material/notifications:")
    st.page_link("app_pages/alerts.py", label="Review on the Alerts page")
st.caption(clinic.SAFETY_NOTICE)  # with every depression score shown to clinicians, alerts open or not

st.subheader("Alert history")
if record.alerts.empty:
    st.caption("No alert has been raised for this patient.")
else:
    # Open ones first, in the Alerts page's order (high priority, then oldest); then the acknowledged ones,
    # newest first.
    acknowledged = record.alerts[record.alerts["acknowledged_at"].notna()]
    alerts = pd.concat([open_alerts, acknowledged.sort_values("created_at", ascending=False)])
    when = widgets.clinic_times(alerts["acknowledged_at"], settings).dt.strftime("%Y-%m-%d %H:%M")
    status = [("Open" if pd.isna(by) else f"Acknowledged by {by}, {at}")
              + (" (the score was since replaced)" if replaced else "")
              for by, at, replaced in zip(alerts["acknowledged_by"], when, alerts["entry_replaced"])]
    alerts = alerts.assign(created_at=widgets.clinic_times(alerts["created_at"], settings),
                           domain=alerts["domain"].map(lambda d: registry.domain(d).label),
                           priority=alerts["priority"].str.capitalize(), status=status)
    headers = {"created_at": "Raised", "priority": "Priority", "domain": "Domain", "t_score": "T",
               "reason": "Reason", "status": "Status", "note": "Note"}
    st.dataframe(widgets.on_screen(alerts[list(headers)].rename(columns=headers)), hide_index=True, placeholder="—",
                 row_height=WRAPPED, column_config={
                     "Raised": st.column_config.DatetimeColumn(format=MOMENT, width=125),
                     "Priority": st.column_config.TextColumn(width=70),
                     "Domain": st.column_config.TextColumn(width=120),
                     "T": st.column_config.NumberColumn(format="%.1f", width=45),
                     "Reason": st.column_config.TextColumn(width=230),
                     "Status": st.column_config.TextColumn(width=170),
                     "Note": st.column_config.TextColumn(width=140)})
    st.caption("Times are the clinic's local time.")

st.subheader("Follow-up")
{"overdue": st.warning, "due": st.info}.get(due.status, st.caption)(
    due.message + (" On today's call list: phone the patient (Follow-up page)." if due.on_call_list else ""))
if len(schedule):
    SLOT_STATUS = {"upcoming": "Upcoming", "due": "Due", "overdue": "Overdue", "done": "Done", "missed": "Missed",
                   "inactive": "Not due (inactive)"}
    latest = schedule[schedule["series_id"] == schedule["series_id"].iloc[0]]
    shown = latest[(latest["due_on"] <= pd.Timestamp(today) + pd.Timedelta(days=7)) | (latest["kind"] != "weekly")]
    shown = shown.assign(status=shown["status"].map(SLOT_STATUS),
                         invitation_sent=widgets.clinic_times(shown["invitation_sent"], settings),
                         reminder_sent=widgets.clinic_times(shown["reminder_sent"], settings))
    headers = {"label": "Questionnaire", "due_on": "Due", "closes_on": "Open until", "status": "Status",
               "done_on": "Done on", "invitation_sent": "Invited", "reminder_sent": "Reminded", "call": "Call"}
    st.dataframe(widgets.on_screen(shown[list(headers)].rename(columns=headers)), hide_index=True, placeholder="—",
                 column_config={c: st.column_config.DateColumn(format="D MMM YYYY", width=100)
                                for c in ("Due", "Open until", "Done on")}
                 | {c: st.column_config.DatetimeColumn(format=MOMENT, width=125) for c in ("Invited", "Reminded")})
    st.caption(f"The latest series' questionnaires up to next week, and its formal time points "
               f"({len(shown)} of {len(latest)}). A slot is done by any score dated in it; overdue from day "
               f"{settings.checkin_overdue_days + 1}, on the call list from day {settings.call_list_after_days + 1}. "
               "Contacts for reminders are on the Record page.")

st.subheader("Series and infusions")
if record.all_series.empty:
    st.info("No infusion series recorded.")
else:
    every = record.all_series
    given = every["state"] == "given"  # a planned or cancelled series has no infusion given
    headers = {"series_number": "Series", "status": "Status", "first_infusion": "First infusion",
               "last_infusion": "Last infusion", "infusions": "Infusions given",
               "planned_last": "Planned end", "protocol": "Protocol", "dose_mg_per_kg": "Dose (mg/kg)",
               "notes": "Notes"}
    series = every.assign(status=[series_status(s) for s in every.itertuples()],
                          first_infusion=every["first_infusion"].where(given),
                          last_infusion=every["last_infusion"].where(given),
                          infusions=every["infusions"].where(given, 0))
    config = {"Series": st.column_config.NumberColumn(width=60),
              "Status": st.column_config.TextColumn(width=190),
              "First infusion": st.column_config.DateColumn(width=100),
              "Last infusion": st.column_config.DateColumn(width=100),
              "Planned end": st.column_config.DateColumn(
                  width=100, help="Last infusion of the plan (a series planned ahead and logged day by day)"),
              "Protocol": st.column_config.TextColumn(width=130)}
    st.dataframe(widgets.on_screen(series[list(headers)].rename(columns=headers)), hide_index=True, placeholder="—",
                 row_height=WRAPPED, column_config=config)
    if len(record.all_infusions):
        events = record.all_adverse_events
        per_infusion = (events.assign(text=[event_text(e) for e in events.itertuples()])
                        .groupby("infusion_id")["text"].agg(", ".join) if len(events) else pd.Series(dtype=str))
        every_infusion = record.all_infusions
        infusions = every_infusion.assign(
            series=every_infusion["series_id"].map(dict(zip(every["series_id"], every["series_number"]))),
            bp_before=[pressure(s, d) for s, d in zip(every_infusion["bp_systolic_before"],
                                                       every_infusion["bp_diastolic_before"])],
            bp_after=[pressure(s, d) for s, d in zip(every_infusion["bp_systolic_after"],
                                                      every_infusion["bp_diastolic_after"])],
            rass=[rass(v) for v in every_infusion["sedation_rass"]],
            adverse=every_infusion["infusion_id"].map(per_infusion).fillna("none"),
            status=[infusion_status(i) for i in every_infusion.itertuples()])
        voided = int(every_infusion["voided"].sum())
        label = f"{len(record.infusions)} infusions, {len(record.adverse_events)} adverse events"
        with st.expander(label + (f" ({voided} voided infusion(s) listed too)" if voided else "")):
            blood_pressure = "Systolic/diastolic, mmHg"
            st.dataframe(widgets.on_screen(infusions[["infused_on", "status", "series", "dose_mg_per_kg",
                                                      "duration_min", "bp_before", "bp_after", "heart_rate", "rass",
                                                      "adverse", "notes"]]),
                         hide_index=True, placeholder="—", row_height=WRAPPED, column_config={
                             "infused_on": st.column_config.DateColumn("Date"), "series": "Series",
                             "dose_mg_per_kg": "Dose (mg/kg)", "duration_min": "Minutes",
                             "bp_before": st.column_config.TextColumn("BP before", help=blood_pressure),
                             "bp_after": st.column_config.TextColumn("BP after", help=blood_pressure),
                             "heart_rate": st.column_config.NumberColumn("HR", help="Beats per minute"),
                             "rass": st.column_config.TextColumn("RASS", help=(
                                 "Richmond Agitation-Sedation Scale: -5 unarousable, 0 alert and calm, "
                                 "+4 combative")),
                             "adverse": st.column_config.TextColumn("Adverse events", width="medium"),
                             "notes": "Notes", "status": st.column_config.TextColumn("Status", width=130)})

st.subheader("Trajectories")
st.caption(f"Dashed line: baseline (latest score from {settings.baseline_days} days before the first infusion "
           "up to that day). Band: ± the meaningful-change threshold "
           f"({settings.mcid_label}). Shaded: severity bands (HealthMeasures cut points). Triangles: infusions.")
widgets.trajectory_charts(record, settings, registry, key="patient")

if not record.summary_scores.empty:
    st.subheader("PROMIS-29 summary scores")
    st.caption("Physical and mental health summary T-scores (Hays et al. 2018) of each day with all seven "
               "PROMIS-29 domains. They also need the pain-intensity item (0–10) that day; without it no "
               "score is computed rather than a biased one (docs/methods.md §13).")
    in_words = record.summary_scores.assign(missing=record.summary_scores["missing"].map(
        lambda names: ", ".join(settings.domains.display(n).lower() for n in names.split(", ") if n)))
    st.dataframe(widgets.on_screen(in_words.sort_values("assessed_on", ascending=False)),
                 hide_index=True, placeholder="—", column_order=["assessed_on", "physical_health_t",
                                                                 "mental_health_t", "missing"],
                 column_config={"assessed_on": st.column_config.DateColumn("Date"),
                                "physical_health_t": st.column_config.NumberColumn("Physical health T",
                                                                                   format="%.1f"),
                                "mental_health_t": st.column_config.NumberColumn("Mental health T", format="%.1f"),
                                "missing": "Missing"})

st.subheader("Every assessment")
st.caption("**Meaningful change** compares the change from baseline with the group threshold; **reliable "
           "change** asks whether that change is larger than the measurement error of the two scores "
           "(RCI = ΔT / √(SE₁² + SE₂²), |RCI| ≥ 1.96; Jacobson & Truax 1991). A change can be one without the other.")
scores = record.assessments.sort_values(["assessed_on", "domain"], ascending=[False, True])
scores = scores.assign(domain=scores["domain"].map(lambda d: registry.domain(d).label))
st.dataframe(
    widgets.on_screen(scores[["assessed_on", "domain", "form", "t_score", "se", "method", "n_answered", "source",
                              "entered_by", "change", "improved", "rci", "reliable"]]),
    hide_index=True, placeholder="—",  # no baseline: a dash, not "None"
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

scores_ever = pd.concat([record.assessments, record.replaced_assessments], ignore_index=True)
#: Every record of the patient in words, for the record picker and the history.
record_names = {
    "series": {s.series_id: f"Series {s.series_number}: {widgets.long_date(s.first_infusion)} to "
                            f"{widgets.long_date(s.last_infusion)}" for s in record.all_series.itertuples()},
    "infusion": {i.infusion_id: f"Infusion of {widgets.long_date(i.infused_on)}, {i.dose_mg_per_kg:g} mg/kg "
                                f"over {i.duration_min} min" for i in record.all_infusions.itertuples()},
    "adverse_event": {e.event_id: f"Adverse event of {widgets.long_date(e.infused_on)}: {event_text(e)}"
                      for e in record.all_adverse_events.itertuples()},
    "assessment": {a.assessment_id: f"{registry.domain(a.domain).label} score of "
                                    f"{widgets.long_date(a.assessed_on)}: T {a.t_score:.1f}"
                   for a in scores_ever.itertuples()},
}
#: Where each kind of record is, and its id column.
record_rows = {"series": (record.all_series, "series_id"), "infusion": (record.all_infusions, "infusion_id"),
               "adverse_event": (record.all_adverse_events, "event_id"),
               "assessment": (record.assessments, "assessment_id")}


def choices(kind: str) -> dict[int, str]:
    """The records of this kind that can still be corrected or voided (not voided, not replaced), newest first
    (series in their order)."""
    if kind == "series":
        return {int(s.series_id): record_names[kind][s.series_id] + ("" if s.state == "given" else
                                                                     f" ({s.state})")
                for s in record.all_series[~record.all_series["voided"]].itertuples()}
    if kind == "assessment":
        newest = record.assessments.sort_values(["assessed_on", "domain"], ascending=[False, True])
        ids = newest["assessment_id"]
    else:
        rows, column = record_rows[kind]
        ids = rows.loc[~rows["voided"], column][::-1]
    return {i: record_names[kind][i] for i in ids.tolist()}


def stored(value):
    """A stored value, None when missing (NaN, NaT, NA), as an input's ``value``."""
    return None if pd.isna(value) else value


def diagnosis_code_list() -> pd.DataFrame:
    """The clinic's diagnosis codes, retired ones included (a patient may still have one)."""
    with data.database() as db:
        return clinic.diagnosis_codes(db, user, retired=True)


def correction_inputs(kind: str, row: pd.Series, key: str) -> dict:
    """One input per correctable field (``storage.CORRECTABLE``), pre-filled with what is stored.

    Keyed by the record, so nothing typed for one record carries over to another.
    """

    def day(label: str, field: str, column: str | None = None, ahead: int = 0):
        value = stored(row[column or field])
        value = value and value.date()
        return st.date_input(label, value=value, min_value=storage.EARLIEST, key=f"{key}.{field}",
                             max_value=max(today + timedelta(days=ahead), value or today))

    def text(label: str, field: str, area: bool = False):
        return (st.text_area if area else st.text_input)(label, value=stored(row[field]) or "",
                                                          key=f"{key}.{field}")

    def whole(label: str, field: str, column: str | None = None, **limits):
        value = stored(row[column or field])
        return st.number_input(label, value=None if value is None else int(value), step=1,
                               key=f"{key}.{field}", **limits)

    def decimal(label: str, field: str, low: float, high: float, step: float, shown: str, **options):
        value = stored(row[field])
        return st.number_input(label, value=None if value is None else float(value), min_value=low,
                               max_value=high, step=step, format=shown, key=f"{key}.{field}", **options)

    def choice(label: str, field: str, options: list[str], words: dict[str, str] | None = None):
        value = stored(row[field])
        return st.selectbox(label, options, index=options.index(value) if value in options else None,
                            format_func=lambda o: (words or {}).get(o) or o.replace("_", " ").capitalize(),
                            placeholder="Not recorded", key=f"{key}.{field}")

    if kind == "patient":
        current = stored(row.get("diagnosis_code"))
        codes = {int(c.code): c.label for c in diagnosis_code_list().itertuples()
                 if pd.isna(c.retired_at) or int(c.code) == current}
        return {"diagnosis_code": st.selectbox(
                    "Diagnosis (the clinic's code; what QI sees)", list(codes), format_func=codes.get,
                    index=list(codes).index(current) if current in codes else None, placeholder="Not coded",
                    key=f"{key}.diagnosis_code"),
                "diagnosis": text("Diagnosis note (free text; never shown to QI)", "diagnosis"),
                "sex": choice("Sex", "sex", list(storage.SEXES),
                              {s: words.capitalize() for s, words in SEX_LABELS.items()}),
                "birth_year": whole("Birth year", "birth_year", min_value=1900, max_value=today.year),
                "enrolled_on": day("Enrolled on", "enrolled_on")}
    if kind == "series":
        if planned := bool(row["by_day"]):
            st.caption("This series is planned and logged day by day: the dates and number below are its "
                       "plan; the infusions logged give the dates and number given.")
        ahead = storage.PLAN_AHEAD_DAYS if planned else 0
        first, last = st.columns(2)
        with first:
            values = {"first_infusion": day("Planned first infusion" if planned else "First infusion",
                                            "first_infusion", "planned_first" if planned else None, ahead)}
        with last:
            values["last_infusion"] = day("Planned last infusion" if planned else "Last infusion",
                                          "last_infusion", "planned_last" if planned else None, 2 * ahead)
        values["infusions"] = whole("Planned infusions" if planned else "Number of infusions", "infusions",
                                    "planned_infusions" if planned else None, min_value=1, max_value=60)
        return {**values, "protocol": text("Protocol", "protocol"),
                "dose_mg_per_kg": decimal("Dose (mg/kg)", "dose_mg_per_kg", 0.0, 5.0, 0.05, "%.2f"),
                "notes": text("Notes", "notes", area=True)}
    if kind == "infusion":
        when, amount, minutes = st.columns(3)
        with when:
            values = {"infused_on": day("Date", "infused_on")}
        with amount:
            values["dose_mg_per_kg"] = decimal("Dose (mg/kg)", "dose_mg_per_kg", 0.0, 5.0, 0.05, "%.2f")
        with minutes:
            values["duration_min"] = whole("Duration (min)", "duration_min", min_value=1, max_value=1440)
        columns = [*st.columns(3), *st.columns(3)]  # blood pressure before and after; heart rate and RASS
        for column, (name, (label, _, _, unit)) in zip(columns, storage.VITALS.items()):
            with column:  # "Systolic blood pressure before (mmHg)"
                values[name] = whole(label[0].upper() + label[1:] + (f" ({unit.strip()})" if unit else ""),
                                     name)
        return {**values, "notes": text("Notes", "notes", area=True)}
    if kind == "adverse_event":
        return {"kind": choice("Kind", "kind", list(storage.EVENT_KINDS)),
                "severity": choice("Severity", "severity", list(storage.SEVERITIES)),
                "action": choice("Action taken", "action", list(storage.EVENT_ACTIONS),
                                 {a: words.capitalize() for a, words in EVENT_ACTIONS.items()}),
                "description": text("Description (required for “other”)", "description"),
                "notes": text("Notes", "notes", area=True)}
    imported = row["method"] == "imported"  # an assessment
    if not imported:
        st.caption("The T-score of a scored questionnaire comes from its answers: to change it, void this "
                   "assessment and enter the questionnaire again on the Record page.")
    return {"assessed_on": day("Date", "assessed_on"),
            "t_score": decimal("T-score", "t_score", 0.0, 100.0, 0.1, "%.1f", disabled=not imported),
            "se": decimal("SE", "se", 0.0, 50.0, 0.1, "%.1f", disabled=not imported)}


def forget(prefix: str) -> None:
    """Drop the inputs of one record's forms: the next run fills them in from what is now stored."""
    for name in [k for k in st.session_state if str(k).startswith(prefix + ".")]:
        del st.session_state[name]


def correct_or_void() -> None:
    """Pick a record, correct it with a reason (clinic.correct_record) or void it (clinic.void_record)."""
    if done := st.session_state.pop("patient.fix.done", None):
        st.success(done)
    kind = st.selectbox("What to correct or void", list(storage.RECORD_KINDS), format_func=RECORD_CHOICES.get,
                        key="patient.fix.kind")
    picker = f"patient.fix.{patient_id}.{kind}"
    noun = kind.replace("_", " ")
    if kind == "patient":
        record_id, name, row = patient_id, "the demographics", info
    else:
        options = choices(kind)
        if not options:
            st.info(f"This patient has no {noun} to correct.")
            return
        if (pending := st.session_state.pop("patient.fix.next", None)) and pending[0] == picker:
            st.session_state[picker] = pending[1]  # a corrected assessment is a new row: keep it chosen
        record_id = st.selectbox(noun.capitalize(), list(options), format_func=options.get, index=None,
                                 placeholder=f"Choose the {noun}", key=picker)
        if record_id is None:
            return
        rows, column = record_rows[kind]
        name, row = options[record_id], rows[rows[column] == record_id].iloc[0]
    key = f"patient.fix.{kind}.{record_id}"
    with st.form(f"{key}.correct"):
        changes = correction_inputs(kind, row, key)
        reason = st.text_input("Reason for the correction (required)", key=f"{key}.reason",
                               placeholder="e.g. typed the wrong dose")
        corrected = st.form_submit_button("Save correction", type="primary")
    if corrected:
        try:
            with data.database() as db:
                new_id = clinic.correct_record(
                    db, user, patient_id=patient_id, record=kind, record_id=record_id, reason=reason,
                    changes={field: None if value == "" else value for field, value in changes.items()},
                    today=today, now=session.now(), settings=settings)
        except OutcomesError as exc:
            st.error(widgets.message(exc))
        else:
            forget(key)
            if kind == "assessment":
                st.session_state["patient.fix.next"] = (picker, new_id)
            st.session_state["patient.fix.done"] = (f"Saved the correction of {widgets.literal(name)}. The "
                                                    "old values are kept in the history below.")
            st.rerun()
    if kind == "patient":
        st.caption("A patient cannot be voided: correct the demographics, or record a disposition on the "
                   "Record page.")
        return
    with st.form(f"{key}.void"):
        st.markdown(f"**Void this {noun}** if it was entered in error: it stays listed, marked voided with "
                    "who, when and why, and leaves every analysis and export."
                    + (" Its infusions are voided with it." if kind == "series" else ""))
        void_reason = st.text_input("Reason for voiding (required)", key=f"{key}.void_reason",
                                    placeholder="e.g. entered for the wrong patient")
        voided = st.form_submit_button(f"Void this {noun}")
    if voided:
        try:
            with data.database() as db:
                clinic.void_record(db, user, patient_id=patient_id, record=kind, record_id=record_id,
                                   reason=void_reason)
        except OutcomesError as exc:
            st.error(widgets.message(exc))
        else:
            forget(key)
            del st.session_state[picker]
            st.session_state["patient.fix.done"] = f"Voided {widgets.literal(name)}."
            st.rerun()


st.subheader("Correct or void a record")
st.caption("Every correction and void needs a reason; the old values stay in the history below, with who and "
           "when.")
correct_or_void()


def what(change) -> str:
    """The changed record in words."""
    if change.record == "patient":
        return "Disposition" if change.action == "disposition" else "Demographics"
    return record_names[change.record].get(change.record_id,
                                           f"{change.record.replace('_', ' ')} {change.record_id}")


st.subheader("History of this record")
if history.empty:
    st.caption("No correction, void, cancellation or disposition recorded yet.")
else:
    trail = history.assign(at=widgets.clinic_times(history["at"], settings),
                           what=[what(c) for c in history.itertuples()],
                           action=history["action"].map(CHANGE_ACTIONS)).iloc[::-1]  # newest first
    headers = {"at": "When", "actor": "Who", "what": "Record", "action": "Action", "summary": "Change",
               "reason": "Reason"}
    st.dataframe(widgets.on_screen(trail[list(headers)].rename(columns=headers)), hide_index=True, row_height=WRAPPED,
                 column_config={"When": st.column_config.DatetimeColumn(format=MOMENT, width=125),
                                "Who": st.column_config.TextColumn(width=100),
                                "Record": st.column_config.TextColumn(width=220),
                                "Action": st.column_config.TextColumn(width=95),
                                "Change": st.column_config.TextColumn(width=220),
                                "Reason": st.column_config.TextColumn(width=140)})
    st.caption("Newest first; times are the clinic's local time.")

corrected = set(history.loc[(history["record"] == "assessment") & (history["action"] == "correct"),
                            "record_id"])


def fate(a) -> str:
    """Why a score is no longer counted."""
    if pd.notna(a.voided_at):
        return f"Voided by {a.voided_by}, {a.voided_at:%Y-%m-%d %H:%M} ({a.void_reason})"
    if a.assessment_id in corrected:
        return "Corrected (see the history above)"
    return "Replaced by a later entry"


replaced = record.replaced_assessments
with st.expander(f"Replaced or voided scores ({len(replaced)})"):
    if replaced.empty:
        st.caption("No score has been replaced or voided.")
    else:
        old = replaced.sort_values(["assessed_on", "domain"], ascending=[False, True])
        old = old.assign(domain=old["domain"].map(lambda d: registry.domain(d).label),
                         entered_at=widgets.clinic_times(old["entered_at"], settings),
                         voided_at=widgets.clinic_times(old["voided_at"], settings))
        old = old.assign(status=[fate(a) for a in old.itertuples()])
        headers = {"assessed_on": "Date", "domain": "Domain", "t_score": "T", "se": "SE", "source": "Source",
                   "entered_by": "Entered by", "entered_at": "Entered at", "status": "Status"}
        config = {"Date": st.column_config.DateColumn(), "T": st.column_config.NumberColumn(format="%.1f"),
                  "SE": st.column_config.NumberColumn(format="%.1f"),
                  "Entered at": st.column_config.DatetimeColumn(format=MOMENT),
                  "Status": st.column_config.TextColumn(width="large")}
        st.dataframe(widgets.on_screen(old[list(headers)].rename(columns=headers)), hide_index=True, placeholder="—",
                     column_config=config)


st.page_link("app_pages/record.py", label="Record a series, an infusion or a paper questionnaire",
             icon=":material/add_notes:")
