"""AppTest of the cohort outcomes page, run directly (app.py's navigation is being rebuilt elsewhere).

The page must show the numbers of the CLI report, empty states for tiny selections, suppressed counts
and no patient identifiers or dates of care for the QI role, and nothing at all for a patient.
"""

import json
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from outcomes import analysis, auth, disclosure, reports, storage, synthetic
from outcomes.settings import DEFAULT_WINDOWS, MCID_PRESETS, load_settings

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "app_pages" / "cohort.py")
TABS = ("Responder rates", "Trajectories", "Distribution of change", "Time to improvement", "Durability",
        "Follow-up completion")
TODAY = date.today()  # the page's default data cut


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()


def seeded(path: Path, n_patients: int, seed: int) -> dict[str, auth.User]:
    db = storage.connect(path)
    cohort = synthetic.generate_cohort(n_patients, seed=seed, end=TODAY)
    synthetic.write_cohort(db, cohort)
    now = datetime.now(UTC)
    users = {}
    first_patient = cohort.patients["patient_id"].iloc[0]
    for role, patient in (("clinician", None), ("qi", None), ("patient", first_patient)):
        uid = storage.add_user(db, username=f"test_{role}", role=role, password_hash=None, patient_id=patient,
                               now=now)
        users[role] = auth.User(id=uid, username=f"test_{role}", role=role, patient_id=patient)
    db.close()
    return users


@pytest.fixture(scope="module")
def clinic(tmp_path_factory) -> tuple[Path, dict[str, auth.User]]:
    path = tmp_path_factory.mktemp("cohort") / "clinic.db"
    return path, seeded(path, 150, seed=11)


@pytest.fixture(scope="module")
def small_clinic(tmp_path_factory) -> tuple[Path, dict[str, auth.User]]:
    """40 patients: many cells from 1 to 10, as in a small clinic's first year."""
    path = tmp_path_factory.mktemp("small") / "small.db"
    return path, seeded(path, 40, seed=7)


def open_page(db_path: Path, user: auth.User | None, monkeypatch) -> AppTest:
    monkeypatch.setenv("OUTCOMES_DB_PATH", str(db_path))
    monkeypatch.syspath_prepend(str(ROOT))  # the page imports ui/, which lives next to app.py
    at = AppTest.from_file(PAGE, default_timeout=60)
    if user is not None:
        at.session_state["auth.user"] = user
    return at.run()


def show_tab(at: AppTest, tab: str) -> AppTest:
    at.session_state["cohort.tab"] = tab
    return at.run()


def cli_report(db_path: Path, **changes) -> pd.DataFrame:
    s = load_settings({})
    db = storage.open_db(db_path)
    try:
        return reports.responders(db, as_of=TODAY, series="first", mcid=changes.get("mcid", s.mcid),
                                  settings=s)
    finally:
        db.close()


def ratio(a, b) -> str:
    return f"{a if isinstance(a, str) else f'{a:,}'} / {b if isinstance(b, str) else f'{b:,}'}"


def percent(p, low, high) -> str:
    if isinstance(p, str):
        return p if p in ("*", "") else f"{p} ({low}–{high})"
    return "–" if pd.isna(p) else f"{p:.1f} ({low:.1f}–{high:.1f})"


def expected_table(report: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Improved / observed": [ratio(k, n) for k, n in zip(report["n_improved"], report["n_observed"])],
        "% improved (95 % CI)": [percent(*v) for v in zip(report["pct_observed"], report["ci_low"],
                                                           report["ci_high"])],
        "Observed / eligible": [ratio(n, e) for n, e in zip(report["n_observed"], report["n_eligible"])],
    })


def everything_shown(at: AppTest) -> str:
    """Every text, table cell, chart spec and widget of the element tree, as one string."""
    parts: list[str] = []

    def walk(node) -> None:
        for child in getattr(node, "children", {}).values():
            walk(child)
        if type(node).__name__ == "Dataframe":
            parts.append(node.value.to_csv())
        elif hasattr(node, "proto"):
            parts.append(str(node.proto))

    walk(at._tree)
    return "\n".join(parts)


def test_clinician_sees_the_responder_table_of_the_cli_report(clinic, monkeypatch):
    path, users = clinic
    at = open_page(path, users["clinician"], monkeypatch)
    assert not at.exception
    assert "not treatment effects" in at.warning[0].value
    table = at.dataframe[0].value
    report = cli_report(path)
    pd.testing.assert_frame_equal(table[expected_table(report).columns].reset_index(drop=True),
                                  expected_table(report))
    assert table["Threshold (T)"].tolist() == [f"{m:.1f}" for m in report["mcid"]]
    assert "DEMO-" not in everything_shown(at)


def test_changing_the_threshold_changes_the_table(clinic, monkeypatch):
    path, users = clinic
    at = open_page(path, users["clinician"], monkeypatch)
    at.selectbox(key="cohort.preset").set_value("half_sd").run()
    table = at.dataframe[0].value
    assert set(table["Threshold (T)"]) == {"5.0"}
    report = cli_report(path, mcid=MCID_PRESETS["half_sd"])
    assert table["Improved / observed"].tolist() == expected_table(report)["Improved / observed"].tolist()
    assert "Half an SD, 5 T points (Norman 2003)" in at.markdown[0].value

    at.selectbox(key="cohort.preset").set_value("custom").run()
    at.number_input(key="cohort.mcid.depression").set_value(4.5).run()
    table = at.dataframe[0].value
    assert set(table.loc[table["Domain"] == "Depression", "Threshold (T)"]) == {"4.5"}
    assert "Custom thresholds set by the clinic" in at.markdown[0].value


def test_a_selection_with_too_few_patients_shows_empty_states(clinic, monkeypatch):
    path, users = clinic
    db = storage.open_db(path)
    try:
        episodes, scores = reports.episodes(db), reports.scores(db)
    finally:
        db.close()
    firsts = episodes.loc[episodes["series_number"] == 1, "first_infusion"].sort_values().dt.date.tolist()
    span = (firsts[0], firsts[2])  # the three earliest patients
    chosen = analysis.filter_episodes(episodes, as_of=TODAY, first_infusion_from=span[0],
                                      first_infusion_to=span[1])
    n = int(analysis.window_scores(chosen, scores, as_of=TODAY, windows=DEFAULT_WINDOWS[:1])
            .groupby("domain", observed=True)["has_baseline"].sum().max())
    assert n < 5
    at = open_page(path, users["clinician"], monkeypatch)
    at.date_input(key="cohort.span").set_value(span).run()
    message = (f"Too few patients for this panel (n = {n} with a baseline score; at least 5 needed). "
               "Widen the filters in the sidebar.")
    for tab in TABS:
        show_tab(at, tab)
        assert not at.exception
        assert [i.value for i in at.info] == [message], tab
        assert not at.get("plotly_chart") and not at.dataframe


def test_qi_sees_suppressed_counts_and_no_patient_ids_or_dates_of_care(small_clinic, monkeypatch):
    path, users = small_clinic
    at = open_page(path, users["qi"], monkeypatch)
    assert not at.exception
    assert "Quality-improvement view" in at.info[0].value
    table = at.dataframe[0].value
    expected = disclosure.suppress(cli_report(path), disclosure.RESPONDER_SPEC, threshold=10)
    pd.testing.assert_frame_equal(table[expected_table(expected).columns].reset_index(drop=True),
                                  expected_table(expected))
    cells = " ".join(table.astype(str).to_numpy().ravel())
    assert "≤10" in cells
    counts = " ".join(table[["Improved / observed", "Observed / eligible"]].to_numpy().ravel())
    numbers = [int(x) for x in re.findall(r"(?<![\d.])\d+(?![\d.])", counts.replace("≤10", ""))]
    assert not [x for x in numbers if 1 <= x <= 10]

    db = storage.open_db(path)
    try:
        series, scores = storage.load_series(db), storage.load_assessments(db)
    finally:
        db.close()
    care_dates = set(pd.concat([series["first_infusion"], series["last_infusion"], scores["assessed_on"]])
                     .dt.date) - {TODAY, date(series["first_infusion"].min().year, 1, 1)}
    shown = []
    for tab in TABS:
        show_tab(at, tab)
        assert not at.exception, tab
        shown.append(everything_shown(at))
        for chart in at.get("plotly_chart"):  # the at-risk rows hold counts too
            for trace in json.loads(chart.proto.spec)["data"]:
                if trace.get("mode") == "text":
                    assert not [t for t in trace["text"] if t.isdigit() and 1 <= int(t) <= 10], tab
    text = "\n".join(shown)
    assert "DEMO-" not in text
    leaked = [d for d in care_dates if d.isoformat() in text or d.strftime("%Y/%m/%d") in text]
    assert leaked == []


def test_a_patient_is_refused_and_so_is_a_visitor(clinic, monkeypatch):
    path, users = clinic
    at = open_page(path, users["patient"], monkeypatch)
    assert "Only a user with the clinician or quality improvement role" in at.error[0].value
    assert not at.dataframe and not at.tabs and not at.get("plotly_chart")
    visitor = open_page(path, None, monkeypatch)
    assert visitor.warning[0].value == "Please sign in to see this page." and not visitor.tabs


def test_every_tab_renders_for_a_clinician(clinic, monkeypatch):
    path, users = clinic
    at = open_page(path, users["clinician"], monkeypatch)
    show_tab(at, "Trajectories")
    assert len(at.get("plotly_chart")) == 3
    show_tab(at, "Distribution of change")
    spec = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert any(a["text"] == "anchor-based: 3.5" for a in spec["layout"]["annotations"])
    show_tab(at, "Time to improvement")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["yaxis"]["title"]["text"] == "% reaching meaningful improvement"
    assert "Kaplan–Meier, right-censored" in " ".join(m.value for m in at.markdown)
    assert at.dataframe[0].value.columns.tolist() == ["Group", "Patients", "Improved",
                                                      "Median weeks to improvement (95 % CI)"]
    at.radio(key="cohort.estimate").set_value("interval").run()
    names = [t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert any(name.endswith(": NPMLE") for name in names)
    assert "Interval-censored" in " ".join(m.value for m in at.markdown)
    show_tab(at, "Durability")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["yaxis"]["title"]["text"] == "% still responding"
    show_tab(at, "Follow-up completion")
    assert len(at.dataframe[0].value) == 12
    assert not at.exception


def test_impaired_at_baseline_counts_each_domain_on_its_own_patients(clinic, monkeypatch):
    path, users = clinic
    at = open_page(path, users["clinician"], monkeypatch)
    at.checkbox(key="cohort.impaired").check().run()
    table = at.dataframe[0].value
    db = storage.open_db(path)
    try:
        episodes, scores = reports.episodes(db), reports.scores(db)
    finally:
        db.close()
    chosen = analysis.filter_episodes(episodes, scores, as_of=TODAY,
                                      impaired_at_baseline={"depression": True})
    report = analysis.responder_report(chosen, scores, as_of=TODAY, mcid={"depression": 3.5})
    shown = table[table["Domain"] == "Depression"].reset_index(drop=True)
    assert shown["Improved / observed"].tolist() == expected_table(report)["Improved / observed"].tolist()
    at.radio(key="cohort.series").set_value("all").run()
    at.multiselect(key="cohort.series_number").select(2).run()
    assert not at.exception


def test_lifelines_loads_only_with_a_survival_tab(clinic):
    path, users = clinic
    user = users["clinician"]
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
os.environ["OUTCOMES_DB_PATH"] = {str(path)!r}
from streamlit.testing.v1 import AppTest
from outcomes.auth import User
at = AppTest.from_file({PAGE!r}, default_timeout=60)
at.session_state["auth.user"] = User(id={user.id}, username={user.username!r}, role="clinician")
for tab in ("Responder rates", "Trajectories", "Time to improvement"):
    at.session_state["cohort.tab"] = tab
    at.run()
    print(tab, "lifelines" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=False)
    expected = ["Responder rates False", "Trajectories False", "Time to improvement True"]
    assert out.stdout.splitlines() == expected, out.stderr[-2000:]
