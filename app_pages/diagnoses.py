"""Diagnosis codes: the clinic's coded list of diagnoses (administrators; docs/privacy.md, "Diagnosis codes
and filters").

Cohort filters for quality improvement and every de-identified file use a patient's diagnosis *code*,
pooled when rare; the clinician's free-text diagnosis is a note that only identified output carries.
Here an administrator adds, renames and retires codes, and codes existing patients from their notes.
Every change is audited (``outcomes.clinic``); coding a patient also goes into the record's trail.
"""

import streamlit as st

from outcomes import clinic
from outcomes.errors import OutcomesError
from ui import data, session, widgets

admin = session.require_roles("admin")
settings = data.settings()
cells = settings.small_cell_max
DONE = "diagnoses.done"

st.title("Diagnosis codes")
st.caption("The list clinicians choose a patient's diagnosis from. Cohort filters for quality improvement "
           f"and de-identified exports show a code's label, and pool codes held by 1 to {cells} patients "
           "into “Other (pooled)”; the diagnosis note a clinician types stays in the patient's record and in "
           "identified exports only. Labels are seen by every role: never put a name, a date or any other "
           "identifier in one. Every change is recorded in the audit log.")


def attempt(action, success: str, clear: str | None = None) -> None:
    """Run one change; on success rerun, so the list shows it at once."""
    try:
        with data.database() as db:
            result = action(db)
    except OutcomesError as exc:
        st.error(widgets.message(exc))
    else:
        st.session_state[DONE] = success.format(result=result)
        for key in [k for k in st.session_state if clear and str(k).startswith(clear)]:
            del st.session_state[key]
        st.rerun()


if done := st.session_state.pop(DONE, None):
    st.success(widgets.literal(done))

with data.database() as db:
    codes = clinic.diagnosis_codes(db, admin, retired=True)
    notes = clinic.diagnosis_notes(db, admin)

shown = codes.assign(status=codes["retired_at"].map(
    lambda r: "current" if r is None or r != r else "retired"))
st.dataframe(widgets.on_screen(shown[["code", "label", "patients", "status"]]), hide_index=True,
             key="diagnoses.codes", column_config={"code": "Code", "label": "Label", "patients": "Patients",
                                                   "status": "Status"})
labels = dict(zip(codes["code"].astype(int), codes["label"], strict=True))
current = [int(c) for c, r in zip(codes["code"], codes["retired_at"], strict=True) if r is None or r != r]
retired = [c for c in labels if c not in current]

add, rename, retire, assign = st.tabs(["Add a code", "Rename", "Retire or offer again",
                                      "Code patients from notes"])
with add:
    with st.form("diagnoses.add"):
        label = st.text_input("Label", max_chars=80, key="diagnoses.new.label",
                              placeholder="e.g. Complex regional pain syndrome")
        if st.form_submit_button("Add the code", type="primary"):
            attempt(lambda db: clinic.add_diagnosis_code(db, admin, label=label),
                    f"Added “{' '.join(label.split())}” (code {{result}}).", clear="diagnoses.new.")
with rename:
    st.caption("Every patient holding the code follows the new label, in the record and in later exports.")
    code = st.selectbox("Code", list(labels), format_func=lambda c: f"{labels[c]} (code {c})", index=None,
                        placeholder="Choose a code", key="diagnoses.rename.code")
    new = st.text_input("New label", max_chars=80, key="diagnoses.rename.label")
    if st.button("Rename", key="diagnoses.rename.go", disabled=code is None):
        attempt(lambda db: clinic.rename_diagnosis_code(db, admin, code=code, label=new),
                f"Renamed “{{result}}” to “{' '.join(new.split())}”.", clear="diagnoses.rename.")
with retire:
    st.caption("A retired code is no longer offered for new patients; patients who hold it keep it.")
    left, right = st.columns(2)
    gone = left.selectbox("Current code to retire", current, format_func=lambda c: labels[c], index=None,
                          placeholder="Choose a code", key="diagnoses.retire.code")
    if left.button("Retire", key="diagnoses.retire.go", disabled=gone is None):
        attempt(lambda db: clinic.retire_diagnosis_code(db, admin, code=gone),
                "Retired “{result}”.", clear="diagnoses.retire.")
    back = right.selectbox("Retired code to offer again", retired, format_func=lambda c: labels[c],
                           index=None, placeholder="Choose a code", key="diagnoses.restore.code")
    if right.button("Offer again", key="diagnoses.restore.go", disabled=back is None):
        attempt(lambda db: clinic.retire_diagnosis_code(db, admin, code=back, retired=False),
                "“{result}” is offered again.", clear="diagnoses.restore.")
with assign:
    st.caption("Patients enrolled before the list, or whose diagnosis was typed, are “not coded”. Choose a "
               "note as it was typed and the code it means: every patient not yet coded whose note reads "
               "exactly the same (ignoring capitals) gets the code, and each change goes into their record's "
               "history. The notes are identified data: they are shown here only.")
    if notes.empty:
        st.info("Every patient with a diagnosis note has a code.")
    else:
        counts = dict(zip(notes["note"], notes["patients"], strict=True))
        note = st.selectbox("Diagnosis note", list(counts), index=None, placeholder="Choose a note",
                            format_func=lambda n: f"{n} ({counts[n]} patient{'s' if counts[n] != 1 else ''})",
                            key="diagnoses.assign.note")
        target = st.selectbox("Code", current, format_func=lambda c: labels[c], index=None,
                              placeholder="Choose a code", key="diagnoses.assign.code")
        reason = st.text_input("Reason", value="coding the diagnosis from the clinician's note",
                               key="diagnoses.assign.reason")
        if st.button("Code these patients", type="primary", key="diagnoses.assign.go",
                     disabled=note is None or target is None):
            attempt(lambda db: clinic.code_patients_by_note(db, admin, note=note, code=target, reason=reason),
                    f"Coded {{result}} patient(s) as “{labels.get(target, '')}”.", clear="diagnoses.assign.")
