"""Import PROMIS answers or T-scores from a REDCap CSV export (docs/privacy.md), through a mapping the user
confirms.

A thin view over ``outcomes.redcap``: detect a mapping, let the user correct it, preview every row (a dry
run), and commit all rows or none.
"""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from outcomes import redcap
from outcomes.errors import ImportRejected, OutcomesError
from ui import data, session, widgets

SOURCES = {"none": "Not in this file", "items": "Item answers (scored here)", "tscore": "T-score field"}
NONE = "(none)"

user = session.require_roles("clinician", "admin")
registry = data.registry()

st.title("Import from REDCap")
st.caption("Bring PROMIS questionnaires collected in REDCap into the clinic's record. In REDCap: *Data "
           "Exports → Export data → CSV (raw data)*, with the record ID, the event and a date field (visit "
           "date or survey timestamp). Item answers are scored here with the same PROMIS tables as the "
           "check-ins.")

upload = st.file_uploader("REDCap export (CSV)", type="csv", key="redcap.file")
if upload is None:
    st.session_state.pop("redcap.parsed", None)
    st.stop()
# Parsed once per uploaded file, not at every rerun (each choice below reruns the page; docs/reliability.md,
# "Hostile and bad input"). Kept in this session only: the file holds identified data.
parsed = st.session_state.get("redcap.parsed")
if parsed is None or parsed[0] != upload.file_id:
    buffer = io.BytesIO(upload.getvalue())
    buffer.name = upload.name
    try:
        parsed = (upload.file_id, redcap.read(buffer), None)
    except ImportRejected as exc:
        parsed = (upload.file_id, None, exc)
    st.session_state["redcap.parsed"] = parsed
_, frame, rejected = parsed
if rejected is not None:
    st.error(widgets.message(rejected))
    st.markdown("\n".join(f"* {widgets.literal(p)}" for p in rejected.problems))
    st.stop()
columns = [c for c in frame.columns if c != "line"]
detected = redcap.detect(frame, registry)
st.write(f"{len(frame):,} rows and {len(columns):,} columns in **{widgets.literal(upload.name)}**.")

st.subheader("1. Check the mapping")
st.caption("The columns below were recognised automatically; correct anything that is wrong.")


def pick(label: str, options: list, current, key: str, *, titles: bool = False, **kwargs):
    def show(c) -> str:
        return NONE if c is None else registry.form(c).title if titles else str(c)

    return st.selectbox(label, options, index=options.index(current) if current in options else 0, key=key,
                        format_func=show, **kwargs)


cols = st.columns(3)
with cols[0]:
    record_id = pick("Record ID = the clinic's patient ID", columns, detected.record_id, "redcap.record_id")
with cols[1]:
    date_column = pick("Date of each row", [None, *columns], detected.date, "redcap.date",
                       help="Visit date or survey timestamp (YYYY-MM-DD, a time after it is ignored). REDCap "
                            "event names are not dates.")
with cols[2]:
    event = pick("Event (optional, shown in messages)", [None, *columns], detected.event, "redcap.event")

forms, t_scores = [], []
found_forms = {registry.form(f.form).domain: f for f in detected.forms}
found_t = {t.domain: t for t in detected.t_scores}
for domain in registry.domains:
    default = "items" if domain in found_forms else "tscore" if domain in found_t else "none"
    with st.container(border=True):
        source = st.radio(registry.domains.display(domain), list(SOURCES), index=list(SOURCES).index(default), horizontal=True,
                          format_func=SOURCES.get, key=f"redcap.source.{domain}")
        if source == "items":
            keys = [f.key for f in registry.forms_for_domain(domain)]
            guess = found_forms.get(domain)
            form_key = pick("Short form", keys, guess.form if guess else None, f"redcap.form.{domain}",
                            titles=True, help="Pick the form the REDCap instrument administered.")
            form = registry.form(form_key)
            known = dict(guess.columns) if guess and guess.form == form_key else {}
            table = pd.DataFrame({"item": list(form.item_ids),
                                  "description": [i.description for i in form.items],
                                  "column": [known.get(i) for i in form.item_ids]})
            choose_column = st.column_config.SelectboxColumn("Column in the file", options=columns)
            edited = st.data_editor(table, hide_index=True, disabled=["item", "description"],
                                    key=f"redcap.items.{domain}.{form_key}",
                                    column_config={"column": choose_column,
                                                   "description": "Item (paraphrase)"})
            forms.append(redcap.FormMapping(form_key, {i: c for i, c in zip(edited["item"], edited["column"])
                                                       if isinstance(c, str) and c}))
        elif source == "tscore":
            guess = found_t.get(domain)
            c1, c2, c3 = st.columns(3)
            with c1:
                t_col = pick("T-score column", columns, guess.t_column if guess else None,
                             f"redcap.t.{domain}")
            with c2:
                se_col = pick("Standard error column", [None, *columns], guess.se_column if guess else None,
                              f"redcap.se.{domain}")
            with c3:
                keys = [None, *(f.key for f in registry.forms_for_domain(domain))]
                form_key = pick("Short form (if known)", keys, guess.form if guess else None,
                                f"redcap.tform.{domain}", titles=True)
            t_scores.append(redcap.TScoreMapping(domain, t_col, se_col, form_key))

add_patients = st.checkbox("Add record IDs that are not in the database as new patients (ID only; add "
                           "diagnosis, sex and birth year later)", key="redcap.add_patients")
mapping = redcap.ColumnMapping(record_id, date_column, event, tuple(forms), tuple(t_scores), add_patients)
problems = mapping.problems(columns, registry)
if problems:
    st.warning("The mapping is not complete yet:\n" + "\n".join(f"* {widgets.literal(p)}" for p in problems))
    st.stop()

st.subheader("2. Preview")
try:
    with data.database() as db:
        preview = redcap.preview(db, frame, mapping, registry=registry, today=session.today())
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()
plan = preview.plan
m = st.columns(4)
m[0].metric("Rows in the file", f"{len(frame):,}")
m[1].metric("Scores found", f"{len(plan.scores):,}")
m[2].metric("Problems", f"{len(preview.errors):,}")
m[3].metric("Not scorable (skipped)", f"{len(plan.skipped):,}")
if preview.errors:
    st.error(f"{len(preview.errors):,} problem(s): nothing can be imported until they are fixed in REDCap or "
             "in the file. Upload it again afterwards.")
    st.code("\n".join(preview.errors[:200]) + ("\n…" if len(preview.errors) > 200 else ""), language=None)
if plan.skipped:
    with st.expander(f"{len(plan.skipped):,} questionnaire(s) with fewer than half the items answered are "
                     "skipped"):
        st.code("\n".join(plan.skipped[:200]), language=None)
shown = plan.scores.drop(columns=["responses"])
shown = shown.assign(method=shown["method"].fillna("imported T-score"))
shown = shown.rename(columns={"line": "line in file", "patient_id": "record"})
st.dataframe(widgets.on_screen(shown.head(500)), hide_index=True)

st.subheader("3. Import")
if done := st.session_state.pop("redcap.done", None):
    st.success(widgets.literal(done), icon=":material/check_circle:")
    st.session_state["redcap.confirm"] = False  # before the checkbox exists in this run: allowed
if preview.summary is not None:
    st.write(preview.summary.describe())
if preview.summary is not None and not preview.ok:
    st.info("Everything in this file is already in the database: there is nothing new to import.")
confirm = st.checkbox("I have checked the mapping and the preview", key="redcap.confirm",
                      disabled=not preview.ok)
if st.button("Import all rows", type="primary", disabled=not (preview.ok and confirm), key="redcap.import"):
    try:
        with data.database() as db:
            summary = redcap.commit(db, user, frame, mapping, registry=registry, today=session.today(),
                                    now=session.now(), settings=data.settings())
        # The summary says how many alerts the new scores raised (each patient's latest per domain).
        st.session_state["redcap.done"] = f"Imported from {upload.name}: {summary.describe()}"
        st.rerun()  # the preview above now shows the rows as already present
    except ImportRejected as exc:
        st.error(widgets.message(exc))
        st.code("\n".join(exc.problems[:200]), language=None)
    except OutcomesError as exc:
        st.error(widgets.message(exc))
