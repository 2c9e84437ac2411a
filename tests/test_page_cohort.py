"""AppTest of the cohort outcomes page, run directly (app.py's navigation is being rebuilt elsewhere).

The page must show the numbers of the CLI report, empty states for tiny selections, suppressed counts
and no patient identifiers or dates of care for the QI role, and nothing at all for a patient.
"""

import json
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from outcomes import analysis, auth, disclosure, reports, storage, synthetic
from outcomes.settings import DEFAULT_WINDOWS, load_settings

DOMAINS = ("pain_interference", "depression", "physical_function")  # the domains the demo cohort has

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_changing_the_threshold_changes_the_table(clinic, monkeypatch):
    path, users = clinic
    at = open_page(path, users["clinician"], monkeypatch)
    at.selectbox(key="cohort.preset").set_value("half_sd").run()
    table = at.dataframe[0].value
    assert set(table["Threshold (T)"]) == {"5.0"}
    report = cli_report(path, mcid={"pain_interference": 5.0, "depression": 5.0, "physical_function": 5.0})
    assert table["Improved / observed"].tolist() == expected_table(report)["Improved / observed"].tolist()
    assert "Half an SD, 5 T points (Norman 2003)" in at.markdown[0].value

    at.selectbox(key="cohort.preset").set_value("custom").run()
    at.number_input(key="cohort.mcid.depression").set_value(4.5).run()
    table = at.dataframe[0].value
    assert set(table.loc[table["Domain"] == "Depression", "Threshold (T)"]) == {"4.5"}
    assert "Custom thresholds set by the clinic" in at.markdown[0].value


@pytest.mark.slow
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


@pytest.mark.slow
def test_qi_sees_suppressed_counts_and_no_patient_ids_or_dates_of_care(small_clinic, monkeypatch):
    path, users = small_clinic
    at = open_page(path, users["qi"], monkeypatch)
    assert not at.exception
    assert "Quality-improvement view" in at.info[0].value
    table = at.dataframe[0].value
    # The QI view is the released cohort at the last month end (docs/privacy.md): episodes whose follow-up
    # closed and whose patient's delay passed by then, worked out here from the stored series.
    s = load_settings({})
    cut = reports.month_end_cuts(TODAY)[0]
    db = storage.open_db(path)
    try:
        qi = reports.qi_cohort(db, cut=cut, settings=s)
        series, secret = storage.load_series(db), storage.get_meta(db, "secret")
    finally:
        db.close()
    follow_up = disclosure.follow_up_days(DEFAULT_WINDOWS)  # 224: the 6-month window's upper bound
    released = [r.series_id for r in series.itertuples() if r.series_number == 1 and r.last_infusion
                + pd.Timedelta(days=follow_up + disclosure.release_delay(secret, r.patient_id))
                <= pd.Timestamp(cut)]
    assert sorted(qi.episodes.loc[qi.episodes["series_number"] == 1, "series_id"]) == sorted(released)
    assert 0 < len(released) < (series["series_number"] == 1).sum()
    subsets = reports.qi_subsets(qi, series="first", filters={}, impaired_only=False, domains=DOMAINS,
                                 baseline_days=s.baseline_days)
    report = reports.cohort_table(subsets, qi.scores, panel="responders", as_of=qi.cut, mcid=s.mcid,
                                  series="first", windows=s.windows, baseline_days=s.baseline_days)
    expected = disclosure.suppress(report, disclosure.RESPONDER_SPEC, threshold=10)
    pd.testing.assert_frame_equal(table[expected_table(expected).columns].reset_index(drop=True),
                                  expected_table(expected))
    assert f"released by the end of {cut:%B %Y}" in at.markdown[0].value
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_qi_chooses_a_month_end_and_no_calendar_filter(small_clinic, monkeypatch):
    """Finding 1: the QI view is cut at a month end and has no first-infusion date filter (a day-by-day
    filter or cut would date episodes by differencing two views)."""
    path, users = small_clinic
    at = open_page(path, users["qi"], monkeypatch)
    assert not at.date_input  # neither "Data as of" by the day nor "First infusion between"
    cut = at.selectbox(key="cohort.as_of_month")
    ends = reports.month_end_cuts(TODAY)
    assert cut.value == ends[0] and cut.options[:2] == [f"{d:%B %Y}" for d in ends[:2]]
    assert all((d + timedelta(days=1)).day == 1 for d in ends) and ends[0] < TODAY
    clinician = open_page(path, users["clinician"], monkeypatch)
    assert [d.key for d in clinician.date_input] == ["cohort.as_of", "cohort.span"]


@pytest.mark.slow
def test_qi_filters_offer_pooled_codes_and_hide_a_view_that_leaves_a_few_out(tmp_path, monkeypatch):
    """Finding 2: the diagnosis filter lists the clinic's codes, pooled, never a note; "all but X" is hidden
    when X holds 1 to 10 patients, with what to do instead."""
    path = tmp_path / "clinic.db"
    db = storage.connect(path)
    start = TODAY - timedelta(days=3 * 365)
    groups = {"Fibromyalgia": 14, "Neuropathic pain": 13, "Headache disorder": 3, "EM - Jane Roe 555-0100": 1}
    n = 0
    for diagnosis, size in groups.items():
        for _ in range(size):
            n += 1
            storage.add_patient(db, patient_id=f"P{n}", diagnosis=diagnosis, sex="F", birth_year=1970,
                                entered_by="x")
            first = start + timedelta(days=n)
            storage.add_series(db, patient_id=f"P{n}", first_infusion=first, last_infusion=first, infusions=1,
                               entered_by="x")
            for day, t in ((0, 65.0), (30, 58.0 + n % 5)):
                storage.save_assessment(db, patient_id=f"P{n}", assessed_on=first + timedelta(days=day),
                                        domain="depression", t_score=t, method="imported", source="import",
                                        entered_by="x")
    uid = storage.add_user(db, username="qi.user", role="qi", password_hash=None, now=datetime.now(UTC))
    db.close()
    at = open_page(path, auth.User(id=uid, username="qi.user", role="qi"), monkeypatch)
    options = at.multiselect(key="cohort.diagnosis").options
    assert options == ["Fibromyalgia", "Neuropathic pain", "Other (pooled)"]   # 3 + 1 (not coded) pooled
    assert at.dataframe  # the whole cohort: shown
    at.multiselect(key="cohort.diagnosis").set_value(["Fibromyalgia", "Neuropathic pain"]).run()
    assert not at.exception and not at.dataframe and not at.tabs
    message = at.warning[-1].value
    assert "leaves out only 1 to 10 patients" in message and "clear that filter" in message
    at.multiselect(key="cohort.diagnosis").set_value(["Fibromyalgia", "Other (pooled)"]).run()
    assert at.dataframe   # leaves out 13: shown
    assert "Jane Roe" not in everything_shown(at)
