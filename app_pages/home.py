"""What is in the database: the landing page until the clinical pages exist."""

import os

import pandas as pd
import streamlit as st

from ui import data, session

session.require_roles("admin")
summary = data.summary()

st.title("Infusion outcomes")
if summary["synthetic"]:
    st.warning("**Synthetic data.** Every patient in this database was generated for demonstration.", icon=":material/science:")
path = data.active_db_path()
# Where the clinic's database lives is not the demo's business (docs/authentication.md, "The first
# administrator").
if data.demo_mode():
    st.caption(f"Database: the synthetic demo database (schema version {summary['schema_version']})")
else:
    st.caption(f"Database: `{path}` (schema version {summary['schema_version']})")
# The app makes the file 0600 and tightens it when it opens it (docs/operations.md); a file it could not
# tighten (owned by another account) is reported, since anybody on the server could read every patient.
try:
    others = os.stat(path).st_mode & 0o077
except OSError:
    others = 0
if others:
    mode = os.stat(path).st_mode & 0o777
    st.warning(f"Other accounts on the server can read the database file (mode {mode:o}), and the app could "
               "not change that. Ask IT to make the app's account its owner and run `chmod 600` on it and on "
               "its -wal and -shm files (docs/operations.md).", icon=":material/lock_open:")

cols = st.columns(5)
for col, (label, key) in zip(cols, [("Patients", "patients"), ("Infusion series", "series"),
                                    ("Infusions", "infusions"), ("Assessments", "assessments"),
                                    ("User accounts", "users")]):
    col.metric(label, f"{summary[key]:,}")

if summary["assessments"]:
    first, last = summary["first_assessment"], summary["last_assessment"]
    st.write(f"Assessments from **{first}** to **{last}**.")
    labels = {d.name: d.label for d in data.registry().domains.values()}
    by_domain = pd.DataFrame(
        [(labels.get(k, k), n) for k, n in summary["assessments_by_domain"].items()], columns=["Domain", "Assessments"]
    )
    st.dataframe(by_domain, hide_index=True)
else:
    st.info(
        "The database is empty. Import historical data with "
        "`python -m outcomes import --db PATH --patients patients.csv --series series.csv --scores scores.csv`, "
        "or fill a separate database with the synthetic demo cohort: "
        "`python -m outcomes seed-demo --db data/demo.db`, then start the app with "
        "`OUTCOMES_DB_PATH=data/demo.db`."
    )

st.subheader("Questionnaires this clinic can score")
forms = pd.DataFrame(
    [
        {"Form key": f.key, "Form": f.title, "Items": f.n_items, "Domain T-score LOINC": f.loinc or "—",
         "Missing items scored by": "response pattern (EAP)" if f.has_parameters else "proration"}
        for f in data.registry().forms
    ]
)
st.dataframe(forms, hide_index=True)
st.caption("PROMIS item wording is not shipped; items are shown with our own paraphrased descriptions "
           "unless the clinic loads its licensed wording (setting OUTCOMES_ITEM_WORDING_FILE).")
