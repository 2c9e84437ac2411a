"""AppTest: the landing page opens (creating and migrating) the database and shows what is in it."""

from datetime import date
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from outcomes import storage, synthetic

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()


def run_app(db_path: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("OUTCOMES_DB_PATH", str(db_path))
    return AppTest.from_file(APP, default_timeout=60).run()


def test_missing_database_is_created_and_shown_empty(tmp_path, monkeypatch):
    path = tmp_path / "new" / "clinic.db"
    at = run_app(path, monkeypatch)
    assert not at.exception
    assert path.exists()
    assert [m.value for m in at.metric] == ["0", "0", "0", "0", "0"]
    assert "The database is empty" in at.info[0].value
    assert not at.warning                                    # no synthetic banner on a real database


def test_demo_database_shows_counts_and_the_synthetic_banner(tmp_path, monkeypatch):
    path = tmp_path / "demo.db"
    db = storage.connect(path)
    synthetic.write_cohort(db, synthetic.generate_cohort(25, seed=4, end=date(2026, 10, 1)))
    summary = storage.database_summary(db)
    db.close()
    at = run_app(path, monkeypatch)
    assert not at.exception
    assert "Synthetic data" in at.warning[0].value
    assert at.metric[0].value == "25"
    assert at.metric[3].value == f"{summary['assessments']:,}"
    forms = at.dataframe[1].value
    assert "pain_interference_sf6a_v1.0" in set(forms["Form key"])
