"""Time to improvement and durability: event rules, hand-computed Kaplan–Meier, interval censoring."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from outcomes.errors import ConfigError, InsufficientData, MissingColumns
from outcomes.survival import (
    SUMMARY_COLUMNS,
    IntervalCensoredCurves,
    SurvivalCurves,
    fit_interval_censored,
    fit_km,
    improvement_times,
    response_durations,
)

ANCHOR = {"pain_interference": 3.0, "depression": 3.5, "physical_function": 3.0}  # the anchor preset
F0 = pd.Timestamp("2025-01-06")
L0 = F0 + pd.Timedelta(days=4)
LATE = "2027-01-01"
DEP = "depression"


def day(n: int, anchor: pd.Timestamp = F0) -> pd.Timestamp:
    return anchor + pd.Timedelta(days=n)


def make_episodes(*rows: tuple, **extra: list) -> pd.DataFrame:
    columns = ["series_id", "patient_id", "series_number", "first_infusion", "last_infusion"]
    df = pd.DataFrame(rows, columns=columns)
    df[["first_infusion", "last_infusion"]] = df[["first_infusion", "last_infusion"]].astype("datetime64[ns]")
    return df.assign(**extra)


def dep_scores(patient: str, by_day: dict[int, float], anchor: pd.Timestamp = F0) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": patient, "domain": DEP, "t_score": list(by_day.values()),
                         "assessed_on": [day(d, anchor) for d in by_day]})


ONE = make_episodes((1, "P1", 1, F0, L0))


def times_for(by_day: dict[int, float], episodes: pd.DataFrame = ONE, mcid=ANCHOR) -> dict:
    t = improvement_times(episodes, dep_scores("P1", by_day), as_of=LATE, mcid={DEP: mcid[DEP]})
    return t.iloc[0][["has_baseline", "event", "time_weeks", "lower_weeks", "upper_weeks"]].to_dict()


# Time to first improvement: event rules -------------------------------------------------------------


def test_event_at_the_first_improved_score_after_f_interval_from_the_previous_score():
    # Baseline is the latest score up to F (62, on F); -3.0 at day 7 is not enough for depression (3.5).
    got = times_for({-3: 60.0, 0: 62.0, 7: 59.0, 14: 58.5, 21: 50.0})
    assert got == {"has_baseline": True, "event": True, "time_weeks": 2.0, "lower_weeks": 1.0,
                   "upper_weeks": 2.0}


def test_improved_first_score_after_f_has_lower_bound_zero():
    got = times_for({0: 62.0, 10: 55.0})
    assert list(got.values())[1:] == [True, 10 / 7, 0.0, 10 / 7]


def test_never_improved_is_censored_at_the_last_score():
    got = times_for({0: 62.0, 7: 61.0, 14: 63.0, 35: 60.0})
    assert list(got.values())[1:] == [False, 5.0, 5.0, math.inf]


def test_no_score_after_f_is_censored_at_zero():
    got = times_for({-5: 62.0})
    assert (got["event"], got["time_weeks"], got["lower_weeks"]) == (False, 0.0, 0.0)


def test_a_day_f_score_is_the_baseline_never_the_event():
    # 55 on F would be -7 against the score 5 days earlier, but it is the baseline itself.
    got = times_for({-5: 62.0, 0: 55.0, 7: 54.0})
    assert (got["event"], got["time_weeks"]) == (False, 1.0)


def test_next_series_ends_follow_up_for_time_to_improvement():
    f2 = day(21)
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P1", 2, f2, day(25)))
    # The improved score falls on series 2's first day: it belongs to series 2, so series 1 is censored
    # at its last score (day 14).
    got = times_for({0: 62.0, 7: 61.0, 14: 61.0, 21: 50.0}, episodes)
    assert (got["event"], got["time_weeks"]) == (False, 2.0)


def test_no_baseline_is_kept_flagged_and_counted_in_notes():
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P2", 1, F0, L0))
    scores = pd.concat([dep_scores("P1", {0: 62.0, 7: 55.0}), dep_scores("P2", {-31: 62.0, 7: 55.0})])
    times = improvement_times(episodes, scores, as_of=LATE, mcid={DEP: 3.5})
    assert times["has_baseline"].tolist() == [True, False]
    assert math.isnan(times["time_weeks"].iloc[1]) and not times["event"].iloc[1]
    km = fit_km(times)
    assert km.summary["n"].tolist() == [1]
    assert "depression: 1 episode(s) without a baseline score were excluded" in km.notes


def test_improvement_times_passes_episode_columns_through():
    episodes = ONE.assign(diagnosis="CRPS")
    times = improvement_times(episodes, dep_scores("P1", {0: 62.0, 7: 55.0}), as_of=LATE, mcid=ANCHOR)
    assert times["diagnosis"].tolist() == ["CRPS"] * 3  # one row per domain in mcid
    assert times["domain"].tolist() == ["pain_interference", DEP, "physical_function"]
    assert times["improved_on"].iloc[1] == day(7)


# Kaplan–Meier ---------------------------------------------------------------------------------------


HAND = pd.DataFrame({"domain": DEP, "time_weeks": [1.0, 2.0, 3.0, 3.0, 5.0],
                     "event": [True, False, True, True, False]})


def test_km_hand_computed():
    # n = 5. Week 1: 5 at risk, 1 event -> S = 4/5. Week 2: censored. Week 3: 3 at risk, 2 events
    # -> S = 4/5 * 1/3 = 0.2667, so 1 - S = 0.7333. Week 5: censored. Median: first S <= 0.5 -> 3.
    km = fit_km(HAND)
    curve = km.curve.set_index("time_weeks")["estimate"]
    assert curve.loc[0.0] == 0.0
    assert curve.loc[1.0] == pytest.approx(0.2)
    assert curve.loc[2.0] == pytest.approx(0.2)
    assert curve.loc[3.0] == pytest.approx(1 - 0.8 / 3)
    assert km.summary.iloc[0][["n", "events", "median_weeks"]].tolist() == [5, 3, 3.0]
    assert (km.curve["ci_low"] <= km.curve["estimate"] + 1e-12).all()
    assert (km.curve["estimate"] <= km.curve["ci_high"] + 1e-12).all()
    # lifelines' band (Greenwood variance on the log(-log) scale) contains 0.2 and stays inside [0, 1].
    row = km.curve.set_index("time_weeks").loc[1.0]
    assert 0 <= row["ci_low"] < 0.2 < row["ci_high"] <= 1
    # At risk: time >= week; events and censored strictly before the week; they add up to n.
    risk = km.at_risk.set_index("week")
    assert risk.loc[0].tolist()[2:] == [5, 0, 0]
    assert risk.loc[4].tolist()[2:] == [1, 3, 1]
    assert risk.loc[26].tolist()[2:] == [0, 3, 2]
    assert km.kind == "event"


def test_km_survival_kind_reports_s():
    km = fit_km(HAND, kind="survival")
    curve = km.curve.set_index("time_weeks")["estimate"]
    assert curve.loc[1.0] == pytest.approx(0.8) and curve.loc[3.0] == pytest.approx(0.8 / 3)


def test_km_groups_notes_and_logrank():
    rng = np.random.default_rng(3)
    big = pd.DataFrame({"domain": DEP, "time_weeks": rng.exponential(5, 60).round(1) + 0.1,
                        "event": rng.random(60) < 0.8, "diagnosis": "CRPS"})
    small = pd.DataFrame({"domain": DEP, "time_weeks": [2.0, 4.0, 6.0, 8.0],
                          "event": [True, True, True, False],
                          "diagnosis": "Fibromyalgia"})
    missing = pd.DataFrame({"domain": DEP, "time_weeks": [3.0], "event": [True], "diagnosis": [None]})
    km = fit_km(pd.concat([big, small, missing], ignore_index=True), group_col="diagnosis")
    assert set(km.summary["group"]) == {"CRPS", "Fibromyalgia", "(missing)"}
    assert "depression, group Fibromyalgia: 3 events; estimate unstable" in km.notes
    assert "1 episode(s) with no diagnosis are shown as '(missing)'" in km.notes
    assert 0 <= km.p_values[DEP] <= 1
    assert set(km.at_risk["group"]) == set(km.summary["group"])


def test_km_median_not_reached_is_nan_with_a_note():
    times = pd.DataFrame({"domain": DEP, "time_weeks": [1.0, 2.0, 3.0, 4.0],
                          "event": [True, False, False, False]})
    km = fit_km(times)
    assert math.isnan(km.summary["median_weeks"].iloc[0])
    assert any("median not reached" in n for n in km.notes)


def test_km_validates_options_and_input():
    with pytest.raises(ConfigError, match="alpha"):
        fit_km(HAND, alpha=1.5)
    with pytest.raises(ConfigError, match="kind"):
        fit_km(HAND, kind="hazard")  # type: ignore[arg-type]
    with pytest.raises(MissingColumns, match="event"):
        fit_km(HAND.drop(columns="event"))
    with pytest.raises(MissingColumns, match="diagnosis"):
        fit_km(HAND, group_col="diagnosis")
    with pytest.raises(InsufficientData):
        fit_km(HAND.assign(has_baseline=False))


def test_results_hold_no_lifelines_objects():
    ic = fit_interval_censored(HAND.assign(lower_weeks=HAND["time_weeks"] - 1,
                                           upper_weeks=np.where(HAND["event"], HAND["time_weeks"], np.inf)))
    for result in (fit_km(HAND), ic):
        assert isinstance(result, (SurvivalCurves, IntervalCensoredCurves))
        for f in dataclasses.fields(result):
            value = getattr(result, f.name)
            assert "lifelines" not in type(value).__module__
            assert isinstance(value, (pd.DataFrame, tuple, str)) or hasattr(value, "keys")
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.notes = ()  # type: ignore[misc]


@pytest.mark.slow
def test_importing_survival_does_not_import_lifelines():
    code = "import sys, outcomes.survival, outcomes.analysis; print('lifelines' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Interval censoring ---------------------------------------------------------------------------------


def test_npmle_hand_example_and_at_risk():
    # Intervals (0,1], (1,2], (1,2], (2,3], (3,inf), (4,inf): Turnbull masses 1/6, 2/6, 1/6 and 2/6
    # beyond week 4 (both censored episodes outlast week 3), so 1 - S = 1/6, 1/2, 2/3 at weeks 1, 2, 3.
    times = pd.DataFrame({"domain": DEP, "event": [True, True, True, True, False, False],
                          "lower_weeks": [0.0, 1.0, 1.0, 2.0, 3.0, 4.0],
                          "upper_weeks": [1.0, 2.0, 2.0, 3.0, np.inf, np.inf]})
    ic = fit_interval_censored(times)
    npmle = ic.curve[ic.curve["method"] == "npmle"]
    assert npmle["time_weeks"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert npmle["estimate"].to_numpy() == pytest.approx([0, 1 / 6, 1 / 2, 2 / 3], abs=1e-4)
    assert npmle["ci_low"].isna().all()
    risk = ic.at_risk.set_index("week")
    # Week 4: not yet improved and still followed = lower bound >= 4 (one); improved by week 4 = four;
    # never improved and last seen before week 4 = one.
    assert risk.loc[4].tolist()[2:] == [1, 4, 1]
    assert risk.loc[0].tolist()[2:] == [6, 0, 0]


def simulate_weekly(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weibull(shape 1.3, scale 10 weeks) improvement, weekly visits until drop-out (4-40 weeks, max 26)."""
    rng = np.random.default_rng(seed)
    true_time = 10 * rng.weibull(1.3, n)
    last_visit = np.minimum(rng.integers(4, 41, n), 26)
    first_seen = np.ceil(true_time)  # the first weekly visit on or after the improvement
    event = first_seen <= last_visit
    lower = np.where(event, first_seen - 1, last_visit).astype(float)
    upper = np.where(event, first_seen, np.inf)
    return event, lower, upper


def test_interval_censored_weibull_recovers_shape_and_scale():
    event, lower, upper = simulate_weekly(3000, seed=11)
    times = pd.DataFrame({"domain": "pain_interference", "event": event, "lower_weeks": lower,
                          "upper_weeks": upper})
    ic = fit_interval_censored(times)
    p = ic.parameters.iloc[0]
    assert p["shape_ci_low"] < 1.3 < p["shape_ci_high"] and abs(p["shape"] - 1.3) < 0.1
    assert p["scale_ci_low"] < 10 < p["scale_ci_high"] and abs(p["scale_weeks"] - 10) < 0.7
    assert p["median_weeks"] == pytest.approx(10 * math.log(2) ** (1 / 1.3), rel=0.08)
    # NPMLE at visit weeks vs the true 1 - S(t) = 1 - exp(-(t/10)^1.3): 0.262, 0.527, 0.718 at 4, 8, 12.
    npmle = ic.curve[ic.curve["method"] == "npmle"].set_index("time_weeks")["estimate"]
    for week in (4.0, 8.0, 12.0):
        assert npmle.loc[week] == pytest.approx(1 - math.exp(-((week / 10) ** 1.3)), abs=0.04)
    weib = ic.curve[ic.curve["method"] == "weibull"].set_index("time_weeks")
    assert (weib["ci_low"] <= weib["estimate"] + 1e-9).all()
    assert (weib["estimate"] <= weib["ci_high"] + 1e-9).all()
    assert p["max_gap"] < 0.05 and not any("departs" in n for n in ic.notes)


@pytest.mark.slow
def test_weekly_scores_give_the_same_intervals_end_to_end():
    n = 300
    event, lower, upper = simulate_weekly(n, seed=5)
    true_week = np.where(event, upper, np.inf)
    # Responders keep answering for 0-2 more weeks; the others stop at their last visit.
    last_visit = np.where(event, upper + np.random.default_rng(5).integers(0, 3, n), lower)
    episodes = make_episodes(*[(i, f"P{i}", 1, F0, L0) for i in range(n)], diagnosis="CRPS")
    frames = []
    for i in range(n):  # building test data only; the code under test is vectorised
        weeks = np.arange(1, int(last_visit[i]) + 1)
        t = np.where(weeks >= true_week[i], 55.0, 61.0)  # -7 once improved, -1 before
        frames.append(dep_scores(f"P{i}", {0: 62.0, **{int(7 * w): float(v) for w, v in zip(weeks, t)}}))
    times = improvement_times(episodes, pd.concat(frames), as_of=LATE, mcid={DEP: 3.5})
    times = times.sort_values("series_id")  # results come sorted by patient ID ("P10" before "P2")
    assert times["event"].to_numpy().tolist() == event.tolist()
    assert times["lower_weeks"].to_numpy() == pytest.approx(lower)
    assert np.array_equal(times["upper_weeks"].to_numpy(), upper)
    ic = fit_interval_censored(times, group_col="diagnosis")
    assert ic.parameters["group"].tolist() == ["CRPS"] and ic.parameters["n"].tolist() == [n]


def test_interval_censored_notes_for_sparse_groups_and_no_events():
    times = pd.DataFrame({"domain": DEP, "event": [True, True, False, False], "group": ["a", "a", "b", "b"],
                          "lower_weeks": [0.0, 1.0, 2.0, 3.0], "upper_weeks": [1.0, 2.0, np.inf, np.inf]})
    ic = fit_interval_censored(times, group_col="group")
    assert "depression, group a: 2 events; estimate unstable" in ic.notes
    assert "depression, group b: no improvement observed; nothing to estimate" in ic.notes
    with pytest.raises(ConfigError, match="upper_weeks <= lower_weeks"):
        fit_interval_censored(times.assign(upper_weeks=0.0))


def test_interval_censored_summary_has_the_columns_of_the_km_summary():
    """The cohort page reads ``summary`` from either kind of result (issue 14)."""
    times = pd.DataFrame({"domain": DEP, "event": [True, True, False, False, True, True],
                          "group": ["a", "a", "b", "b", "a", "a"],
                          "lower_weeks": [0.0, 1.0, 2.0, 3.0, 1.0, 2.0],
                          "upper_weeks": [1.0, 2.0, np.inf, np.inf, 2.0, 3.0]})
    ic = fit_interval_censored(times, group_col="group")
    km = fit_km(times.assign(time_weeks=np.where(times["event"], times["upper_weeks"], times["lower_weeks"])),
                group_col="group")
    assert ic.summary.columns.tolist() == km.summary.columns.tolist() == list(SUMMARY_COLUMNS)
    assert ic.summary[["group", "n", "events"]].values.tolist() == [["a", 4, 4], ["b", 2, 0]]
    assert ic.summary["median_weeks"].tolist()[0] == ic.parameters["median_weeks"].tolist()[0]
    assert ic.summary["median_weeks"].isna().tolist() == [False, True]  # group b: no fit
    assert ic.summary[["median_ci_low", "median_ci_high"]].isna().all().all()  # no CI for the Weibull median


# Durability -----------------------------------------------------------------------------------------


def durations_for(by_day: dict[int, float], episodes: pd.DataFrame = ONE) -> pd.DataFrame:
    return response_durations(episodes, dep_scores("P1", by_day), as_of=LATE, mcid={DEP: 3.5})


def test_loss_is_the_first_of_two_consecutive_non_improved_scores():
    # Responds on day 7; day 14 dips (59, -1) but day 21 is improved again; days 28 and 35 both miss:
    # loss on day 28, three weeks after the response began.
    d = durations_for({0: 60.0, 7: 55.0, 14: 59.0, 21: 55.0, 28: 58.0, 35: 58.0, 42: 50.0})
    assert d[["event", "time_weeks"]].iloc[0].tolist() == [True, 3.0]
    assert d["responded_on"].iloc[0] == day(7) and d["lost_on"].iloc[0] == day(28)


def test_one_dip_is_not_a_loss_and_censoring_is_at_the_last_score():
    d = durations_for({0: 60.0, 7: 55.0, 14: 59.0, 21: 55.0})
    assert d[["event", "time_weeks"]].iloc[0].tolist() == [False, 2.0] and d["lost_on"].isna().all()
    # A single miss at the very end is unconfirmed: censored at that last score.
    d = durations_for({0: 60.0, 7: 55.0, 14: 58.0})
    assert d[["event", "time_weeks"]].iloc[0].tolist() == [False, 1.0]


def test_durability_is_censored_before_the_next_series():
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P1", 2, day(25), day(29)))
    d = durations_for({0: 60.0, 7: 55.0, 14: 55.0, 21: 56.0, 28: 59.0, 35: 59.0}, episodes)
    # Days 28 and 35 belong to series 2: series 1 is censored at day 21, two weeks after responding.
    assert d[["series_id", "event", "time_weeks"]].iloc[0].tolist() == [1, False, 2.0]


def test_non_responders_have_no_duration_and_km_gives_still_in_response():
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P2", 1, F0, L0), (3, "P3", 1, F0, L0))
    scores = pd.concat([
        dep_scores("P1", {0: 60.0, 7: 55.0, 14: 58.0, 21: 58.0}),  # loss at day 14: 1 week
        dep_scores("P2", {0: 60.0, 7: 55.0, 14: 55.0, 21: 55.0, 28: 55.0}),  # censored at 3 weeks
        dep_scores("P3", {0: 60.0, 7: 59.0}),  # never responds
    ])
    d = response_durations(episodes, scores, as_of=LATE, mcid={DEP: 3.5})
    assert d["series_id"].tolist() == [1, 2]
    km = fit_km(d, kind="survival")
    curve = km.curve.set_index("time_weeks")["estimate"]
    assert curve.loc[1.0] == pytest.approx(0.5)
    assert km.summary["median_weeks"].iloc[0] == 1.0
