"""Exports for quality improvement and registries (docs/privacy.md): every file that leaves the app is
audited.

A thin view over ``outcomes.exports.export`` (role check, build, audit entry). The file is built and
logged when the user presses "Prepare and download the file", and handed to that browser in the same run
(``ui.data.hand_over``: once, with no URL).

De-identified files are cut only at a year end (dataset, FHIR) or a month end (summary tables), and hold
only released episodes (docs/privacy.md, "Dates and differencing"); identified files keep any day.
"""

from __future__ import annotations

import streamlit as st

from outcomes import disclosure, exports
from outcomes.errors import OutcomesError
from ui import data, session, widgets

CHOICES = {
    "dataset": ("De-identified analysis dataset", "One row per episode and one per score, with pseudonyms "
                "and days since the first infusion instead of IDs and dates. For your own analysis."),
    "summary": ("Summary tables", "Responder rates, follow-up completion and baseline characteristics "
                "(Table 1), with small counts hidden. For reports and slides."),
    "fhir": ("FHIR R4 Observations, de-identified", "One Observation per T-score (LOINC-coded), with "
             "pseudonyms and days instead of dates. For registries and FHIR tools."),
    "identified": ("Identified dataset", "Patient IDs, birth years, dates of care, notes, dispositions and "
                   "the record's history of corrections (who changed what, when and why). Only for a "
                   "documented purpose; your reason is kept in the audit log."),
    "fhir_identified": ("FHIR R4 Observations, identified", "Patient IDs and questionnaire dates. Only for "
                        "a documented purpose; your reason is kept in the audit log."),
}
FORMAT_LABELS = {"csv": "CSV (a ZIP with one CSV per table)", "xlsx": "Excel workbook",
                 "parquet": "Parquet (a ZIP with one file per table)", "json": "FHIR JSON"}
SERIES_LABELS = {"first": "Each patient's first series (primary)", "all": "All series"}

user = session.require_roles("clinician", "qi", "admin")
settings = data.settings()
cells = settings.small_cell_max
marker = disclosure.small_marker(cells)
today = session.today()

st.title("Exports")
st.caption("Files for quality-improvement analysis and registries. Every file you prepare is recorded in the "
           "audit log: who, when, which export, its options and its number of rows.")

allowed = [c for c in CHOICES if user.role in exports.ROLES_IDENTIFIED or c in ("dataset", "summary", "fhir")]
choice = st.radio("What to export", allowed, format_func=lambda c: CHOICES[c][0],
                  captions=[CHOICES[c][1] for c in allowed], key="exports.choice")
kind = {"identified": "dataset", "fhir_identified": "fhir"}.get(choice, choice)
deidentified = choice in ("dataset", "summary", "fhir")

left, right = st.columns(2)
fmt = left.radio("Format", exports.FORMATS[kind], format_func=FORMAT_LABELS.get, key=f"exports.format.{kind}")
if deidentified:  # a cut chosen by the day would date episodes by differencing two files
    unit = exports.cut_unit(kind, True)
    as_of = right.selectbox(
        f"Data as of (end of {unit})", exports.cut_choices(kind, deidentified=True, today=today),
        key=f"exports.cut.{unit}", format_func=lambda d: f"{d:%Y}" if unit == "year" else f"{d:%B %Y}",
        help="Only episodes whose follow-up had closed, each after a further delay of up to a year, by the "
             f"end of this {unit} are in the file, with all their scores. Recent episodes come in a later "
             "file.")
else:
    as_of = right.date_input("Data as of", value=today, max_value=today, key="exports.as_of",
                             help="The data cut: scores after this day and series starting after it are "
                                  "left out.")
series = "first"
if kind == "summary":
    series = right.radio("Analysis set", list(SERIES_LABELS), format_func=SERIES_LABELS.get,
                         key="exports.series", help="Repeat series of one patient are not independent: "
                                                    "their intervals are too narrow.")
reason = None
if not deidentified:
    st.warning("This file identifies patients. Keep it inside the clinic's secure storage and delete it when "
               "the purpose is served.", icon=":material/warning:")
    reason = st.text_area("Reason for this identified export", key="exports.reason",
                          max_chars=exports.MAX_REASON,
                          placeholder="e.g. registry submission under the data use agreement of 2025-07")

with st.expander("What de-identified means here"):
    st.markdown(
        "* **Patients** appear as pseudonyms such as `ps_3fa94c1e0b7d2a58`: the same patient gets the same "
        "pseudonym in every export from this clinic, and nobody can compute it from the clinic's ID.\n"
        "* **Dates** become days since the first infusion of the episode (day 0; a baseline is day −7, "
        "say). The file is cut at the end of a year (the dataset and FHIR) or a month (summary tables), and "
        "holds an episode only once its follow-up has closed and a further delay of up to a year, fixed per "
        "patient and kept secret, has passed: files with different cuts then differ only by whole episodes, "
        "and when one appears dates nobody's care to better than a year. Recent episodes are not in these "
        "files yet; the identified dataset has them.\n"
        "* **Age** is a band (18–29 … 80–89, 90+) at the first infusion; the birth year is not exported.\n"
        f"* **Notes** and staff names are left out, the diagnosis note too: the diagnosis is the clinic's "
        f"code. Diagnoses and protocols of 1 to {cells} patients become '{exports.OTHER}'.\n"
        "* **Corrections** are applied: voided entries, planned or cancelled series and replaced scores are "
        "left out. A patient's disposition (withdrawn, lost to follow-up…) is kept without its date or "
        "reason; the history of corrections is only in the identified dataset.\n"
        f"* **Summary tables**: “{marker}” replaces a count from 1 to {cells}; “{disclosure.HIDDEN}” a value "
        "hidden so that such a count cannot be worked out from the others (its own value may be large). "
        "The README in each file repeats this, with the thresholds and the data cut.")

request = (choice, fmt, as_of, series, reason)
if st.button("Prepare and download the file", type="primary", icon=":material/download:", key="exports.prepare",
             help="Makes the file, records the export in the audit log, then your browser saves it."):
    try:
        with st.spinner("Preparing the file…"), data.database() as db:
            prepared = exports.export(db, user, kind, fmt, deidentified=deidentified, as_of=as_of,
                                      series=series, reason=reason, settings=settings,
                                      registry=data.registry(), now=session.now(),
                                      max_bytes=data.hand_over_limit())
        st.session_state["exports.file"] = (request, prepared)
        # Handed to this browser in this run, once, with no URL (a /media link would serve the file to
        # anybody holding it; docs/privacy.md, "Downloads, tables on screen, files at rest"): preparing is
        # downloading, and both are audited.
        data.hand_over(prepared.data, prepared.filename, prepared.mime, key="exports.hand_over")
    except OutcomesError as exc:
        st.error(widgets.message(exc))

ready = st.session_state.get("exports.file")
if ready and ready[0] == request:
    file: exports.ExportFile = ready[1]
    level = "de-identified" if file.deidentified else "identified"
    counts = ", ".join(f"{name} {len(table):,} rows" for name, table in file.tables.items())
    if kind == "fhir":
        counts = f"{file.rows:,} Observations"
    through = exports.cut_label(kind, as_of, deidentified=file.deidentified)
    st.success(f"**{file.filename}** is ready ({counts}; {level}; data as of {through}) and was handed to your "
               "browser, which saves it with its downloads. This export is recorded in the audit log; for "
               "another copy, prepare the file again.", icon=":material/check_circle:")
    for note in file.notes:
        st.info(note)
    st.subheader("What is in the file")
    if kind == "fhir":
        st.caption("The first Observations of the Bundle as a table. Each carries the LOINC code of its "
                   "domain's T-score, the value with unit {score}, the short form as its method, and "
                   "(de-identified) the day since the patient's first infusion instead of a date.")
    else:
        st.caption("The same tables as in the file, with the same column names; the README "
                   + ("sheet" if fmt == "xlsx" else "(README.txt)") + " in the file defines every column"
                   + (f". “{marker}”: a count from 1 to {cells}; “{disclosure.HIDDEN}”: hidden so that "
                      "such a count cannot be worked out." if kind == "summary" else "."))
    names = list(file.tables)
    for tab, name in zip(st.tabs(names), names):
        table = file.tables[name]
        with tab:
            shown = min(len(table), 500)
            more = f"; the first {shown} are shown" if shown < len(table) else ""
            st.caption(f"{len(table):,} rows{more}")
            widgets.table(table.head(shown), hide_index=True)
elif ready:
    st.caption("The options have changed since the last file was prepared: prepare it again.")
