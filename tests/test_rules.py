"""The clinic's pure rules (``outcomes.rules``): alerts, reliable change, baselines, due dates, dates.

The vectorised baseline rule (check-in message, patient record, roster) is checked against a row-by-row
statement of the rule (docs/methods.md §2): issue 6 replaced pandas merges by binary search.
"""

import math
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcomes import clinic, rules
from outcomes.rules import baselines
from outcomes.settings import load_settings

SETTINGS = load_settings({})

# Alerts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain, t, previous, priority", [
    ("depression", 70.0, None, "high"),
    ("depression", 69.9, None, "routine"),
    ("depression", 65.0, None, "routine"),
    ("depression", 64.9, None, None),
    ("depression", 53.5, 50.0, "routine"),  # +3.5 = the depression threshold (anchor preset)
    ("depression", 53.4, 50.0, None),
    ("depression", 50.0, 53.5, None),  # improvement
    ("pain_interference", 58.0, 55.0, "routine"),
    ("pain_interference", 57.9, 55.0, None),
    ("pain_interference", 53.1, 50.1, "routine"),  # 3.0000000000000036 after rounding is 3.0
    ("physical_function", 42.0, 45.0, "routine"),  # function: a fall is a worsening
    ("physical_function", 48.0, 45.0, None),
    ("physical_function", 42.1, 45.0, None),
])
def test_alert_thresholds(domain, t, previous, priority):
    rule = rules.alert_rule(domain, t, previous, SETTINGS.mcid[domain])
    assert (rule[0] if rule else None) == priority


def test_a_high_score_that_also_worsened_gives_one_high_alert_with_both_reasons():
    priority, reason = rules.alert_rule("depression", 72.0, 60.0, 3.5, previous_on=date(2025, 5, 1))
    assert priority == "high"
    assert reason == ("Depression T 72.0 is 70 or higher (severe); Depression worsened by 12.0 T points since "
                      "the previous score (60.0 on 2025-05-01), at least the meaningful change of 3.5")


t_scores = st.floats(20.0, 80.0).map(lambda t: round(t, 1))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(sorted(SETTINGS.domains)), t_scores,
                               st.one_of(st.none(), t_scores)), max_size=30))
def test_may_alert_is_true_exactly_where_the_alert_rule_alerts(rows):
    """The vectorised pre-filter of raise_score_alerts must never drop a score the rule would alert on."""
    scores = pd.DataFrame(rows, columns=["domain", "t_score", "previous_t"]).astype(
        {"domain": object, "t_score": float, "previous_t": float})
    got = rules.may_alert(scores, SETTINGS.mcid)
    expected = [rules.alert_rule(d, t, None if p is None else p, SETTINGS.mcid[d]) is not None
                for d, t, p in rows]
    assert got.tolist() == expected


@pytest.mark.parametrize("t1, se1, t2, se2, rci, reliable", [
    (60.0, 2.0, 52.0, 2.5, -2.4988, True),
    (60.0, 2.0, 57.0, 2.0, -1.0607, False),
    (50.0, 1.0, 52.0, 0.5, 1.7889, False),
    (50.0, 1.0, 53.0, 1.0, 2.1213, True),
    (50.0, None, 60.0, 2.0, None, False),
    (50.0, 0.0, 60.0, 2.0, None, False),
    (float("nan"), 2.0, 60.0, 2.0, None, False),
])
def test_reliable_change(t1, se1, t2, se2, rci, reliable):
    got, is_reliable = rules.reliable_change(t1, se1, t2, se2)
    assert (got if got is None else round(got, 4)) == rci and is_reliable is reliable


def test_reliable_change_frame_agrees_with_the_scalar_rule():
    rows = [(60.0, 2.0, 52.0, 2.5), (60.0, 2.0, 57.0, 2.0), (50.0, np.nan, 60.0, 2.0), (50.0, 0.0, 60.0, 2.0),
            (np.nan, 2.0, 60.0, 2.0), (50.0, 1.0, 53.0, 1.0)]
    t1, se1, t2, se2 = (pd.Series(c, dtype=float) for c in zip(*rows))
    rci, reliable = rules.reliable_change_frame(t1, se1, t2, se2)
    for i, row in enumerate(rows):
        value, is_reliable = rules.reliable_change(*(None if math.isnan(v) else v for v in row))
        assert math.isnan(rci[i]) if value is None else rci[i] == pytest.approx(value)
        assert reliable[i] == is_reliable
    assert reliable.dtype == bool


# Baselines -------------------------------------------------------------------------------------------

F0 = pd.Timestamp("2025-03-01")
DOMAINS = ("pain_interference", "depression")


def reference(targets: pd.DataFrame, candidates: pd.DataFrame, series: pd.DataFrame, days: int) -> list:
    """For each target: (baseline_on, baseline_t, baseline_se, baseline_series) or None, one row at a time."""
    out = []
    for _, t in targets.iterrows():
        started = series[(series["patient_id"] == t["patient_id"]) & (series["first_infusion"] <= t["assessed_on"])]
        mine = candidates[(candidates["patient_id"] == t["patient_id"]) & (candidates["domain"] == t["domain"])]
        if len(started):
            last = started.sort_values("first_infusion").iloc[-1]
            first = last["first_infusion"]
            window = mine[(mine["assessed_on"] <= first) & (mine["assessed_on"] >= first - timedelta(days=days))]
            pick = window.sort_values("assessed_on").tail(1)
            number = int(last["series_number"])
        else:
            pick = mine[mine["assessed_on"] <= t["assessed_on"]].sort_values("assessed_on").head(1)
            number = None
        if pick.empty:
            out.append(None)
        else:
            row = pick.iloc[0]
            se = None if pd.isna(row["se"]) else float(row["se"])
            out.append((row["assessed_on"], float(row["t_score"]), se, number))
    return out


def as_tuples(frame: pd.DataFrame) -> list:
    return [None if pd.isna(r["baseline_on"]) else
            (r["baseline_on"], r["baseline_t"], None if pd.isna(r["baseline_se"]) else r["baseline_se"],
             None if pd.isna(r["baseline_series"]) else int(r["baseline_series"]))
            for r in frame.to_dict("records")]


patients = st.sampled_from(["P1", "P2", "P3"])
offsets = st.integers(-60, 200)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_rows=st.lists(st.tuples(patients, offsets), max_size=4, unique=True),
       score_rows=st.lists(st.tuples(patients, st.sampled_from(DOMAINS), offsets, st.integers(300, 800),
                                     st.booleans()), max_size=25, unique_by=lambda r: r[:3]),
       target_rows=st.lists(st.tuples(st.sampled_from(["P1", "P2", "P3", "P9"]), st.sampled_from(DOMAINS),
                                      offsets), max_size=6),
       days=st.sampled_from([0, 7, 30]))
def test_baselines_follow_the_rule_row_by_row(series_rows, score_rows, target_rows, days):
    series = pd.DataFrame([(p, F0 + timedelta(days=d)) for p, d in series_rows],
                          columns=["patient_id", "first_infusion"]).astype({"first_infusion": "datetime64[ns]"})
    series = series.sort_values(["patient_id", "first_infusion"], ignore_index=True)
    series["series_number"] = pd.array(series.groupby("patient_id").cumcount() + 1, dtype="Int64")
    candidates = pd.DataFrame(
        [(p, d, F0 + timedelta(days=o), t / 10, 3.0 if has_se else np.nan) for p, d, o, t, has_se in score_rows],
        columns=["patient_id", "domain", "assessed_on", "t_score", "se"]).astype({"assessed_on": "datetime64[ns]"})
    targets = pd.DataFrame([(p, d, F0 + timedelta(days=o)) for p, d, o in target_rows],
                           columns=["patient_id", "domain", "assessed_on"]).astype({"assessed_on": "datetime64[ns]"})
    targets.index = np.arange(len(targets)) * 3 + 7  # the result keeps the targets' index
    got = baselines(targets, candidates, series, days)
    assert list(got.index) == list(targets.index)
    assert list(got.columns) == ["baseline_on", "baseline_t", "baseline_se", "baseline_series"]
    assert got["baseline_on"].dtype == "datetime64[ns]" and got["baseline_series"].dtype == "Int64"
    assert as_tuples(got) == reference(targets, candidates, series, days)


@pytest.mark.parametrize("empty", ["series", "candidates", "targets"])
def test_baselines_with_an_empty_frame(empty):
    series = pd.DataFrame({"patient_id": ["P1"], "series_number": pd.array([1], dtype="Int64"),
                           "first_infusion": [F0]})
    candidates = pd.DataFrame({"patient_id": ["P1"], "domain": ["depression"], "assessed_on": [F0],
                               "t_score": [60.0], "se": [3.0]})
    targets = pd.DataFrame({"patient_id": ["P1"], "domain": ["depression"], "assessed_on": [F0 + timedelta(days=9)]})
    frames = {"series": series, "candidates": candidates, "targets": targets}
    frames[empty] = frames[empty].iloc[:0]
    got = baselines(frames["targets"], frames["candidates"], frames["series"], 30)
    assert len(got) == len(frames["targets"])
    if empty == "series":  # no series: the first score is the baseline
        assert got["baseline_t"].tolist() == [60.0] and got["baseline_series"].isna().all()
    elif empty == "candidates":
        assert got["baseline_t"].isna().all()


# The Today list --------------------------------------------------------------------------------------


def test_today_reasons_name_every_reason_and_rank_the_first():
    roster = pd.DataFrame({
        "patient_id": ["A", "B", "C", "D", "E"],
        "in_series_today": [True, False, False, False, False],
        "in_series_this_week": [True, True, False, False, False],
        "baseline_due": [False, False, True, False, False],
        "open_alerts": pd.array([1, 0, 0, 0, 0], dtype="Int64"), "top_priority": ["high", None, None, None, None],
        "followup": ["overdue", "done", "due", "complete", "due"],
        "followup_text": ["Week 3 overdue since 02 Jun", "Done · Next: Week 2 on 09 Jun", "Baseline due by 16 Jun",
                          "Follow-up complete", "1 month due since 09 Jun"],
        "on_call_list": [True, False, False, False, False],
        "overdue": [True, False, False, False, False]})
    reasons = rules.today_reasons(roster)
    assert reasons["today"].tolist() == ["In series today · Open alert (high) · Week 3 overdue since 02 Jun · call",
                                         "In series this week", "Baseline due by 16 Jun", "",
                                         "1 month due since 09 Jun"]
    assert reasons["today_rank"].tolist() == [1, 1, 2, pd.NA, 4]
    listed = rules.today_list(roster.assign(**reasons))
    assert listed["patient_id"].tolist() == ["A", "B", "C", "E"]


# Dates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (date(2025, 6, 1), date(2025, 6, 1)),
    (" 2025-06-02 ", date(2025, 6, 2)),
    (datetime(2025, 5, 1, 14, 30), date(2025, 5, 1)),
    (pd.Timestamp("2025-05-01"), date(2025, 5, 1)),
])
def test_parse_day_or_problem_accepts_days_up_to_today(value, expected):
    problems: list[str] = []
    assert rules.parse_day_or_problem(value, "assessed_on", date(2025, 6, 2), problems) == expected
    assert problems == []


@pytest.mark.parametrize("value, problem", [
    ("2025-06-03", "assessed_on 2025-06-03 is in the future (today is 2025-06-02)"),
    ("03/06/2025", "assessed_on must be a date written YYYY-MM-DD (for example 2025-03-15), got '03/06/2025'"),
    (pd.NaT, "assessed_on must be a date written YYYY-MM-DD, got None"),
    (None, "assessed_on must be a date written YYYY-MM-DD, got None"),
    (20250601, "assessed_on must be a date written YYYY-MM-DD, got 20250601"),
])
def test_parse_day_or_problem_appends_the_problem(value, problem):
    problems: list[str] = []
    assert rules.parse_day_or_problem(value, "assessed_on", date(2025, 6, 2), problems) is None
    assert problems == [problem]


@pytest.mark.parametrize("value, expected", [
    (pd.Timestamp("2025-06-02 09:30"), date(2025, 6, 2)), (np.datetime64("2025-06-02"), date(2025, 6, 2)),
    (date(2025, 6, 2), date(2025, 6, 2)), ("2025-06-02", date(2025, 6, 2)),
    (pd.NaT, None), (None, None), (float("nan"), None),
])
def test_as_date_or_none(value, expected):
    assert rules.as_date_or_none(value) == expected


def test_clinic_re_exports_the_rules_it_used_to_hold():
    for name in ("alert_rule", "reliable_change", "today_list", "SAFETY_NOTICE", "PATIENT_CRISIS_TEXT",
                 "ALERT_ACTIONS", "RELIABLE_Z"):
        assert getattr(clinic, name) is getattr(rules, name), name
