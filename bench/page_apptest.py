"""The cohort page through Streamlit's AppTest: cold render and warm reruns after a filter change.

Run in its own process by ``python -m bench`` (``python -m bench.page_apptest DB_PATH``); prints one
JSON object. The page runs as in ``tests/test_page_cohort.py``: the page script directly, a clinician
in the session, the default tab (responder rates) open.

* ``first_run``: the very first run in the process, including importing the page's modules.
* ``cold``: a new AppTest after ``st.cache_data.clear()`` and ``st.cache_resource.clear()`` (modules
  imported, caches empty: what the first viewer after a server start or a new check-in waits for).
* ``warm``: reruns of one session after changing a filter to a combination not seen before: the raw
  frames are cached (same ``data_version``), the page's tables are computed for the new query.
* ``hit``: a rerun after going back to a query already computed (``st.cache_data`` hit).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "app_pages" / "cohort.py")


def main(db_path: str, repeats: int = 3) -> dict[str, object]:
    os.environ["OUTCOMES_DB_PATH"] = db_path
    sys.path.insert(0, str(ROOT))
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from bench.datasets import CLINICIAN
    from outcomes import auth, storage

    db = storage.connect(db_path)
    stored = storage.get_user(db, username=CLINICIAN)
    db.close()
    user = auth.User(id=stored["id"], username=stored["username"], role=stored["role"])

    def new_page() -> AppTest:
        at = AppTest.from_file(PAGE, default_timeout=900)
        at.session_state["auth.user"] = user
        return at

    def timed_run(at: AppTest) -> float:
        started = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - started
        if at.exception:
            raise RuntimeError(f"the cohort page failed: {at.exception[0].value}")
        return elapsed

    first = timed_run(new_page())
    cold = []
    for _ in range(repeats):
        st.cache_data.clear()
        st.cache_resource.clear()
        at = new_page()
        cold.append(timed_run(at))
    rows = len(at.dataframe[0].value)
    options = at.multiselect(key="cohort.diagnosis").options

    # Each change makes a query not computed before in this process.
    changes = [
        ("sex F", lambda: at.multiselect(key="cohort.sex").select("F")),
        ("sex F or M", lambda: at.multiselect(key="cohort.sex").select("M")),
        ("one diagnosis", lambda: at.multiselect(key="cohort.diagnosis").select(options[0])),
        ("age band 50-59", lambda: at.multiselect(key="cohort.age_band").select("50–59")),
        ("lenient thresholds", lambda: at.selectbox(key="cohort.preset").set_value("lenient")),
        ("all series", lambda: at.radio(key="cohort.series").set_value("all")),
        ("impaired at baseline", lambda: at.checkbox(key="cohort.impaired").check()),
    ]
    warm = {}
    for name, change in changes:
        change()
        warm[name] = timed_run(at)
    at.checkbox(key="cohort.impaired").uncheck()
    hit = timed_run(at)  # the "all series" query again: computed above
    return {"first_run": first, "cold": cold, "cold_median": statistics.median(cold), "warm": warm,
            "warm_median": statistics.median(warm.values()), "warm_max": max(warm.values()), "hit": hit,
            "responder_rows": rows}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
