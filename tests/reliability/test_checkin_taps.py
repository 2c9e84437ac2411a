"""Issue 7: a tapped answer counts even when its on_change callback never runs, and runs never overlap.

Under load (tests/browser/test_concurrent_sessions.py) a radio's on_change can be skipped: a rerun that is
stopped for the next tap may take the radio's new value into session state and stop before its callback
runs, and the next run then sees no change. The check-in used to collect answers only in that callback, so
the radio showed an answer the saved check-in did not have (4 to 5 of 12 patients checking in at once lost
one; docs/reliability.md bug 1). Here the callback is skipped on purpose: the widget's value is set in the
session state directly, which never calls on_change.

The same test later lost answers and "Next" clicks to Streamlit's fast reruns, which let two runs of one
session change its state at once (bug 8); the last test here checks they are off for the served app.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from outcomes import clinic, storage
from outcomes.settings import load_settings
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse)
from tests.page_helpers import button

FORMS = clinic.checkin_forms(load_settings())


@pytest.mark.slow
def test_answers_whose_callback_was_skipped_are_saved(app_as, clinic_db):
    at = app_as("patient", "app_pages/checkin.py")
    for step, form in enumerate(FORMS):
        for item in form.items:
            at.session_state[f"checkin.{form.key}.{item.item_id}"] = 2  # shown as chosen; no on_change
        at.run()
        assert all(r.value == 2 for r in at.radio)
        if step < len(FORMS) - 1:
            button(at, "Next").click().run()
    button(at, "Send my answers").click().run()
    assert not at.exception and not at.error
    with storage.open_db(clinic_db.path) as db:
        items = storage.load_item_responses(db, "P001")
    today = items[items["assessed_on"] == items["assessed_on"].max()]
    assert len(today) == sum(f.n_items for f in FORMS) and (today["value"] == 2).all()


@pytest.mark.slow
def test_the_last_tap_before_send_counts(app_as, clinic_db):
    at = app_as("patient", "app_pages/checkin.py")
    for step, form in enumerate(FORMS):
        for item in form.items[:-1]:
            at.radio(key=f"checkin.{form.key}.{item.item_id}").set_value(3).run()
        if step < len(FORMS) - 1:
            at.radio(key=f"checkin.{form.key}.{form.items[-1].item_id}").set_value(3).run()
            button(at, "Next").click().run()
    last = FORMS[-1]
    # The tap on the last question and "Send" arrive together (one merged rerun; the tap's callback lost).
    at.session_state[f"checkin.{last.key}.{last.items[-1].item_id}"] = 3
    button(at, "Send my answers").click().run()
    assert not at.exception and not at.error
    with storage.open_db(clinic_db.path) as db:
        saved = storage.load_assessments(db, patient_id="P001")
    newest = saved[saved["assessed_on"] == saved["assessed_on"].max()]
    assert (newest["n_answered"] == newest["form"].map({f.key: f.n_items for f in FORMS})).all()
    assert pd.api.types.is_integer_dtype(newest["n_answered"])


def test_the_served_app_runs_one_script_run_at_a_time_per_session():
    """``streamlit run app.py`` from the checkout (README, docs/operations.md) reads .streamlit/config.toml,
    which must turn fast reruns off; the browser tests' probe checks the effect (tests/browser/conftest.py)."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}  # the file alone decides
    shown = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=root, env=env,
                           capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    assert "fastReruns = false" in shown, "set [runner] fastReruns = false in .streamlit/config.toml (bug 8)"
    source = shown[shown.index("fastReruns = false") - 1]
    assert source.endswith(str(root / ".streamlit" / "config.toml")), source
