"""Responder analysis: every boundary of the rules in docs/methods.md, a hand-counted cohort, properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from outcomes.analysis import (
    REPORT_COLUMNS,
    age_band,
    change_cdf,
    cohort_counts,
    filter_episodes,
    follow_up_completion,
    is_improved,
    responder_report,
    round_half_away,
    trajectories,
    wilson_interval,
    window_scores,
    with_follow_up_end,
)
from outcomes.errors import ConfigError, MissingColumns, ValidationError
from outcomes.settings import DEFAULT_WINDOWS, Window

ANCHOR = {"pain_interference": 3.0, "depression": 3.5, "physical_function": 3.0}  # the anchor preset
F0 = pd.Timestamp("2025-01-06")  # first infusion of most test episodes
L0 = F0 + pd.Timedelta(days=4)  # last infusion (a 5-day series)
LATE = "2027-01-01"  # an as_of after every window has closed


def day(n: int, anchor: pd.Timestamp = F0) -> pd.Timestamp:
    return anchor + pd.Timedelta(days=n)


def make_episodes(*rows: tuple, **extra: list) -> pd.DataFrame:
    """Rows of (series_id, patient_id, series_number, first_infusion, last_infusion)."""
    columns = ["series_id", "patient_id", "series_number", "first_infusion", "last_infusion"]
    df = pd.DataFrame(rows, columns=columns)
    df[["first_infusion", "last_infusion"]] = df[["first_infusion", "last_infusion"]].astype("datetime64[ns]")
    df["infusions"], df["protocol"] = 5, "0.5 mg/kg x 5"
    return df.assign(**extra)


def make_scores(*rows: tuple) -> pd.DataFrame:
    """Rows of (patient_id, assessed_on, domain, t_score)."""
    df = pd.DataFrame(rows, columns=["patient_id", "assessed_on", "domain", "t_score"])
    df["assessed_on"] = df["assessed_on"].astype("datetime64[ns]")
    df["t_score"] = df["t_score"].astype(float)
    df["se"] = np.nan
    return df


ONE = make_episodes((1, "P1", 1, F0, L0))


def cell(report: pd.DataFrame, domain: str, window: str) -> dict:
    return report.set_index(["domain", "window"]).loc[(domain, window)].to_dict()


def picked(ws: pd.DataFrame, domain: str, window: str, column: str = "day"):
    row = ws[(ws["domain"] == domain) & (ws["window"] == window)]
    assert len(row) == 1
    return row.iloc[0][column]


# Input contract and errors ------------------------------------------------------------------------


def test_missing_columns_are_listed_with_what_was_given():
    scores = make_scores(("P1", F0, "depression", 60)).drop(columns=["t_score"])
    with pytest.raises(MissingColumns) as exc:
        responder_report(ONE, scores, as_of=LATE, mcid=ANCHOR)
    assert "t_score" in str(exc.value) and "it has: patient_id, assessed_on, domain, se" in str(exc.value)
    with pytest.raises(MissingColumns, match="last_infusion"):
        window_scores(ONE.drop(columns="last_infusion"), make_scores(), as_of=LATE)


@pytest.mark.parametrize("kwargs, match", [
    ({"series": "second"}, "series must be"),
    ({"mcid": {"mood": 3.0}}, "unknown domain"),
    ({"mcid": {"depression": 0}}, "above 0"),
    ({"mcid": {}}, "mcid is empty"),
    ({"as_of": "not a date"}, "as_of must be a date"),
    ({"windows": (Window("a", "A", 10, 0, 20), Window("b", "B", 25, 20, 30))}, "overlap"),
    ({"windows": (Window("a", "A", 30, 0, 20),)}, "low <= target <= high"),
])
def test_bad_options_raise_config_error(kwargs, match):
    options = {"as_of": LATE, "mcid": ANCHOR} | kwargs
    with pytest.raises(ConfigError, match=match):
        responder_report(ONE, make_scores(("P1", F0, "depression", 60)), **options)


def test_inverted_series_dates_are_rejected_with_the_series_named():
    bad = make_episodes((7, "P1", 1, F0, F0 - pd.Timedelta(days=1)))
    with pytest.raises(ValidationError, match="series 7: last infusion before the first"):
        responder_report(bad, make_scores(), as_of=LATE, mcid=ANCHOR)


def test_inputs_are_not_mutated():
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P1", 2, day(100), day(104)))
    scores = make_scores(("P1", F0, "depression", 60), ("P1", day(5), "depression", 50),
                         ("P1", day(101), "depression", 52))
    before = episodes.copy(), scores.copy()
    for fn in (window_scores, change_cdf, follow_up_completion, trajectories):
        fn(episodes, scores, as_of=LATE)
    responder_report(episodes, scores, as_of=LATE, mcid=ANCHOR, series="all")
    filter_episodes(episodes, scores, as_of=LATE, impaired_at_baseline={"depression": True})
    pd.testing.assert_frame_equal(episodes, before[0])
    pd.testing.assert_frame_equal(scores, before[1])


# Rounding, thresholds and direction ----------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (50.1 - 53.1, -3.0),  # -3.0000000000000036
    (57.0 - 59.9, -2.9),  # -2.8999999999999986
    (-2.95, -3.0),  # half away from zero
    (2.95, 3.0),
    (2.25, 2.3),
    (-2.94, -2.9),
    (-0.04, 0.0),  # and never "-0.0"
    (float("nan"), float("nan")),
])
def test_round_half_away(value, expected):
    result = round_half_away(value)
    assert (math.isnan(result) and math.isnan(expected)) or result == expected
    assert math.copysign(1, result) == 1 or result < 0 or math.isnan(result)


@pytest.mark.parametrize("domain, baseline, follow_up, improved", [
    ("pain_interference", 53.0, 50.0, True),  # -3.0: inclusive
    ("pain_interference", 53.0, 50.1, False),  # -2.9
    ("pain_interference", 53.1, 50.1, True),  # float -3.0000000000000036 still -3.0
    ("pain_interference", 53.0, 50.05, True),  # -2.95 rounds half away from zero to -3.0
    ("pain_interference", 53.0, 50.06, False),  # -2.94 -> -2.9
    ("pain_interference", 50.0, 55.0, False),  # worse
    ("depression", 60.0, 56.5, True),  # -3.5
    ("depression", 60.0, 56.6, False),  # -3.4
    ("depression", 62.0, 58.6, False),  # float -3.3999999999999986 -> -3.4
    ("physical_function", 35.0, 38.0, True),  # +3.0: improvement is a rise
    ("physical_function", 35.0, 37.9, False),
    ("physical_function", 38.0, 35.0, False),  # a fall is not an improvement of function
])
def test_improvement_thresholds(domain, baseline, follow_up, improved):
    scores = make_scores(("P1", F0, domain, baseline), ("P1", L0, domain, follow_up))
    report = responder_report(ONE, scores, as_of=LATE, mcid=ANCHOR)
    c = cell(report, domain, "end_of_series")
    assert (c["n_observed"], c["n_improved"]) == (1, int(improved))
    assert bool(is_improved(follow_up - baseline, domain, ANCHOR[domain])) is improved


def test_custom_thresholds_are_per_domain_and_only_listed_domains_are_reported():
    scores = make_scores(("P1", F0, "depression", 60.0), ("P1", L0, "depression", 58.0))
    report = responder_report(ONE, scores, as_of=LATE, mcid={"depression": 2.0})
    assert report["domain"].unique().tolist() == ["depression"]
    assert cell(report, "depression", "end_of_series")["n_improved"] == 1
    assert cell(report, "depression", "end_of_series")["mcid"] == 2.0
    lenient = responder_report(ONE, scores, as_of=LATE, mcid={"pain_interference": 5.0, "depression": 5.0, "physical_function": 5.0})
    assert cell(lenient, "depression", "end_of_series")["n_improved"] == 0


# Baseline -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset, is_baseline", [
    (0, True), (-1, True), (-30, True), (-31, False), (1, False),
])
def test_baseline_window_is_f_minus_30_to_f(offset, is_baseline):
    scores = make_scores(("P1", day(offset), "depression", 60.0))
    ws = window_scores(ONE, scores, as_of=LATE, domains=["depression"])
    assert bool(ws["has_baseline"].iloc[0]) is is_baseline


def test_baseline_is_the_latest_score_up_to_f():
    scores = make_scores(("P1", day(-20), "depression", 70.0), ("P1", day(0), "depression", 60.0),
                         ("P1", day(-3), "depression", 65.0))
    ws = window_scores(ONE, scores, as_of=LATE, domains=["depression"])
    assert ws["baseline_t"].iloc[0] == 60.0 and ws["baseline_on"].iloc[0] == F0


def test_baseline_days_option():
    scores = make_scores(("P1", day(-31), "depression", 60.0))
    ws = window_scores(ONE, scores, as_of=LATE, domains=["depression"], baseline_days=45)
    assert ws["has_baseline"].iloc[0]


# Windows --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window, days_after_l, inside", [
    ("end_of_series", 0, True), ("end_of_series", 7, True), ("end_of_series", 8, False),
    ("month_1", 15, False), ("month_1", 16, True), ("month_1", 44, True), ("month_1", 45, False),
    ("month_3", 62, False), ("month_3", 63, True), ("month_3", 119, True), ("month_3", 120, False),
    ("month_6", 139, False), ("month_6", 140, True), ("month_6", 224, True), ("month_6", 225, False),
])
def test_window_bounds_are_inclusive(window, days_after_l, inside):
    scores = make_scores(("P1", F0, "pain_interference", 60.0),
                         ("P1", day(days_after_l, L0), "pain_interference", 55.0))
    ws = window_scores(ONE, scores, as_of=LATE, domains=["pain_interference"])
    got = picked(ws, "pain_interference", window)
    assert (got == days_after_l) if inside else math.isnan(got)
    report = responder_report(ONE, scores, as_of=LATE, mcid=ANCHOR)
    assert cell(report, "pain_interference", window)["n_observed"] == int(inside)


def test_a_score_before_the_last_infusion_is_in_no_window():
    scores = make_scores(("P1", F0, "depression", 60.0), ("P1", day(2), "depression", 50.0))
    ws = window_scores(ONE, scores, as_of=LATE, domains=["depression"])
    assert not ws["observed"].any()


@pytest.mark.parametrize("days, expected", [
    ((89, 93), 89),  # equally near day 91: the earlier one
    ((93, 89), 89),  # whatever the row order
    ((85, 92), 92),  # otherwise the nearest
    ((91, 90, 92), 91),
])
def test_nearest_score_to_the_target_and_earlier_on_a_tie(days, expected):
    rows = [("P1", F0, "depression", 60.0)]
    rows += [("P1", day(d, L0), "depression", 50.0 + i) for i, d in enumerate(days)]
    ws = window_scores(ONE, make_scores(*rows), as_of=LATE, domains=["depression"])
    assert picked(ws, "depression", "month_3") == expected


def test_one_day_series_day_f_score_is_baseline_not_end_of_series():
    one_day = make_episodes((1, "P1", 1, F0, F0))
    scores = make_scores(("P1", F0, "depression", 60.0))
    ws = window_scores(one_day, scores, as_of=LATE, domains=["depression"])
    assert ws["has_baseline"].all() and not ws["observed"].any()
    # A later score inside 0..7 days still fills end_of_series.
    scores = make_scores(("P1", F0, "depression", 60.0), ("P1", day(3), "depression", 55.0))
    ws = window_scores(one_day, scores, as_of=LATE, domains=["depression"])
    assert picked(ws, "depression", "end_of_series") == 3
    assert picked(ws, "depression", "end_of_series", "change") == -5.0


def test_a_score_fills_at_most_one_window():
    scores = make_scores(("P1", F0, "depression", 60.0), ("P1", L0, "depression", 55.0))
    ws = window_scores(ONE, scores, as_of=LATE, domains=["depression"])
    assert ws["observed"].sum() == 1
    assert ws.loc[ws["observed"], "window"].tolist() == ["end_of_series"]


def test_next_series_ends_follow_up_the_day_before_it_starts():
    f2 = day(80, L0)  # second series starts 80 days after the first one ended
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P1", 2, f2, f2 + pd.Timedelta(days=4)))
    scores = make_scores(
        ("P1", F0, "depression", 60.0),
        ("P1", day(79, L0), "depression", 57.0),  # last day of series 1's follow-up: month_3 (day 79)
        ("P1", f2, "depression", 50.0),  # first day of series 2: its baseline, not series 1's day 80
        ("P1", day(91, L0), "depression", 45.0),  # on target, but after the next series started
    )
    ws = window_scores(episodes, scores, as_of=LATE, domains=["depression"], series="all")
    first = ws[ws["series_id"] == 1]
    assert picked(first, "depression", "month_3") == 79
    assert first["follow_up_end"].iloc[0] == f2 - pd.Timedelta(days=1)
    second = ws[ws["series_id"] == 2]
    assert second["baseline_t"].iloc[0] == 50.0
    # The default analysis set is each patient's first series only.
    default = window_scores(episodes, scores, as_of=LATE, domains=["depression"])
    assert default["series_id"].unique().tolist() == [1]


def test_scores_after_as_of_are_ignored():
    scores = make_scores(("P1", F0, "depression", 60.0), ("P1", day(30, L0), "depression", 50.0))
    ws = window_scores(ONE, scores, as_of=day(29, L0), domains=["depression"])
    assert not ws["observed"].any()


# Denominators ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of_days_after_l, month_1_eligible, month_3_eligible", [
    (43, 0, 0),  # month_1 still open on day 43
    (44, 1, 0),  # closed on L + 44 (inclusive)
    (119, 1, 1),
])
def test_eligible_counts_closed_windows_without_a_score(as_of_days_after_l, month_1_eligible,
                                                        month_3_eligible):
    scores = make_scores(("P1", F0, "pain_interference", 60.0))
    report = responder_report(ONE, scores, as_of=day(as_of_days_after_l, L0), mcid=ANCHOR)
    m1, m3 = cell(report, "pain_interference", "month_1"), cell(report, "pain_interference", "month_3")
    assert (m1["n_eligible"], m1["n_observed"]) == (month_1_eligible, 0)
    assert (m3["n_eligible"], m3["n_observed"]) == (month_3_eligible, 0)
    assert math.isnan(m1["pct_observed"]) and math.isnan(m1["ci_low"])
    if month_1_eligible:
        assert m1["pct_missing_as_not_improved"] == 0.0
    else:
        assert math.isnan(m1["pct_missing_as_not_improved"])


def test_an_observed_score_in_an_open_window_is_eligible():
    scores = make_scores(("P1", F0, "pain_interference", 60.0),
                         ("P1", day(63, L0), "pain_interference", 50.0))
    report = responder_report(ONE, scores, as_of=day(70, L0), mcid=ANCHOR)
    m3 = cell(report, "pain_interference", "month_3")
    assert (m3["n_eligible"], m3["n_observed"], m3["n_improved"]) == (1, 1, 1)


def test_episodes_without_baseline_are_not_counted():
    scores = make_scores(("P1", day(-31), "pain_interference", 60.0), ("P1", L0, "pain_interference", 50.0))
    c = cell(responder_report(ONE, scores, as_of=LATE, mcid=ANCHOR), "pain_interference", "end_of_series")
    assert (c["n_eligible"], c["n_observed"], c["n_improved"]) == (0, 0, 0)


# Wilson ---------------------------------------------------------------------------------------------


def test_wilson_205_of_500():
    low, high = wilson_interval(205, 500)
    assert (round_half_away(100 * low), round_half_away(100 * high)) == (36.8, 45.4)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 10), (3, 7), (10, 10), (413, 890), (84, 400)])
def test_wilson_matches_scipy(k, n):
    expected = stats.binomtest(k, n).proportion_ci(method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-9) and high == pytest.approx(expected.high, abs=1e-9)


def test_wilson_is_nan_without_denominator():
    low, high = wilson_interval(np.array([0, 1]), np.array([0, 2]))
    assert math.isnan(low[0]) and math.isnan(high[0]) and 0 < low[1] < high[1] < 1


# A hand-counted cohort ------------------------------------------------------------------------------

AS_OF = "2025-05-20"  # L0 + 130 days: end_of_series, month_1 and month_3 closed for L0; month_6 open
F6 = pd.Timestamp("2025-04-07")  # a late starter
L6 = F6 + pd.Timedelta(days=4)  # 2025-04-11: its end_of_series closed (04-18), month_1 open (05-25)
F1B = pd.Timestamp("2025-05-01")  # P1's second series: ends P1's first follow-up on 2025-04-30

COHORT_EPISODES = make_episodes(
    (1, "P1", 1, F0, L0), (2, "P2", 1, F0, L0), (3, "P3", 1, F0, L0), (4, "P4", 1, F0, L0),
    (5, "P5", 1, F0, L0), (6, "P6", 1, F6, L6), (8, "P8", 1, F0, L0),
    (9, "P1", 2, F1B, F1B + pd.Timedelta(days=4)),
)
PI, DEP = "pain_interference", "depression"
COHORT_SCORES = make_scores(
    # E1: PI baseline 60; EOS 56.9 (-3.1, improved); M1 58 (-2); M3 on day 91 57.0 (-3.0, improved).
    ("P1", F0, PI, 60.0), ("P1", day(0, L0), PI, 56.9), ("P1", day(30, L0), PI, 58.0),
    ("P1", day(91, L0), PI, 57.0),
    #     depression baseline 62; EOS 58.6 (-3.4: not improved).
    ("P1", F0, DEP, 62.0), ("P1", day(1, L0), DEP, 58.6),
    #     P1's second series: EOS 50.0; its baseline (series="all") is the day-91 score of series 1, 57.0.
    ("P1", F1B + pd.Timedelta(days=4), PI, 50.0),
    # E2: PI baseline 65; EOS day 3 63 (-2); only other score on day 62, in no window.
    ("P2", F0, PI, 65.0), ("P2", day(3, L0), PI, 63.0), ("P2", day(62, L0), PI, 55.0),
    #     depression baseline 60; EOS 56.5 (-3.5: improved).
    ("P2", day(-2), DEP, 60.0), ("P2", day(2, L0), DEP, 56.5),
    # E3: PI score on F - 31 is no baseline, so its EOS score does not count anywhere.
    ("P3", day(-31), PI, 70.0), ("P3", day(1, L0), PI, 60.0),
    # E4: PI baseline on F - 30 58; EOS day 7 55 (-3.0, improved); M1 day 16 54 (-4, improved);
    #     M3 day 119 56 (-2).
    ("P4", day(-30), PI, 58.0), ("P4", day(7, L0), PI, 55.0), ("P4", day(16, L0), PI, 54.0),
    ("P4", day(119, L0), PI, 56.0),
    # E5: PI baselines 62 (F - 5) and 64 (F): the latest, 64, counts; EOS 61 (-3.0, improved);
    #     M3 tie between day 89 (60, -4) and day 93 (63, -1): the earlier, improved.
    ("P5", day(-5), PI, 62.0), ("P5", F0, PI, 64.0), ("P5", day(2, L0), PI, 61.0),
    ("P5", day(93, L0), PI, 63.0), ("P5", day(89, L0), PI, 60.0),
    # E6 (starts 2025-04-07): PI baseline 59; EOS 55.5 (-3.5, improved); M1 (open) 57 (-2).
    ("P6", F6 - pd.Timedelta(days=1), PI, 59.0), ("P6", L6 + pd.Timedelta(days=5), PI, 55.5),
    ("P6", L6 + pd.Timedelta(days=20), PI, 57.0),
    # E8: PI baseline 55 and nothing after.
    ("P8", day(-7), PI, 55.0),
    # P9 has no series: ignored.
    ("P9", F0, PI, 50.0), ("P9", L0, PI, 40.0),
)


def test_hand_counted_cohort_first_series():
    report = responder_report(COHORT_EPISODES, COHORT_SCORES, as_of=AS_OF, mcid=ANCHOR)
    assert list(report.columns) == list(REPORT_COLUMNS)
    assert report[["domain", "window"]].apply(tuple, axis=1).tolist() == [
        (d, w.name) for d in (PI, DEP, "physical_function") for w in DEFAULT_WINDOWS]
    counts = {(r.domain, r.window): (r.n_eligible, r.n_observed, r.n_improved) for r in report.itertuples()}
    # PI end_of_series: all windows closed (E6's on 04-18). Baseline: E1 E2 E4 E5 E6 E8 (E3 has none).
    #   observed E1 E2 E4 E5 E6 (E8 has no score) -> 5; improved E1 E4 E5 E6 -> 4 (E2 is -2).
    assert counts[(PI, "end_of_series")] == (6, 5, 4)
    # PI month_1: closed for L0 (day 44 = 02-23), open for E6 (05-25) but E6 is observed.
    #   eligible E1 E2 E4 E5 E6 E8 = 6; observed E1 (-2) E4 (-4) E6 (-2) = 3; improved E4 = 1.
    assert counts[(PI, "month_1")] == (6, 3, 1)
    # PI month_3: closed for L0 (day 119 = 05-09), open and empty for E6 -> not eligible.
    #   eligible E1 E2 E4 E5 E8 = 5; observed E1 (-3.0) E4 (-2) E5 (-4, the earlier tie) = 3; improved 2.
    assert counts[(PI, "month_3")] == (5, 3, 2)
    # PI month_6: open for everyone and empty.
    assert counts[(PI, "month_6")] == (0, 0, 0)
    # Depression: E1 (-3.4, not) and E2 (-3.5, improved) at EOS; later windows closed and empty.
    assert counts[(DEP, "end_of_series")] == (2, 2, 1)
    assert counts[(DEP, "month_1")] == counts[(DEP, "month_3")] == (2, 0, 0)
    assert counts[(DEP, "month_6")] == (0, 0, 0)
    # Physical function: no scores at all.
    assert all(counts[("physical_function", w.name)] == (0, 0, 0) for w in DEFAULT_WINDOWS)

    eos = cell(report, PI, "end_of_series")
    # 4/5 = 80.0 % (Wilson 37.6-96.4); missing as not improved 4/6 = 66.7 % (30.0-90.3).
    assert (eos["pct_observed"], eos["ci_low"], eos["ci_high"]) == (80.0, 37.6, 96.4)
    assert (eos["pct_missing_as_not_improved"], eos["mnni_ci_low"], eos["mnni_ci_high"]) == (66.7, 30.0, 90.3)
    m1 = cell(report, PI, "month_1")
    assert (m1["pct_observed"], m1["pct_missing_as_not_improved"]) == (33.3, 16.7)
    m3 = cell(report, PI, "month_3")
    assert (m3["pct_observed"], m3["pct_missing_as_not_improved"]) == (66.7, 40.0)
    assert cell(report, DEP, "end_of_series")["pct_observed"] == 50.0
    m6 = cell(report, PI, "month_6")
    assert all(math.isnan(m6[k]) for k in ("pct_observed", "ci_low", "ci_high", "pct_missing_as_not_improved",
                                           "mnni_ci_low", "mnni_ci_high"))


def test_hand_counted_cohort_all_series():
    report = responder_report(COHORT_EPISODES, COHORT_SCORES, as_of=AS_OF, mcid=ANCHOR, series="all")
    # P1's second series (F 05-01, L 05-05; EOS closed 05-12): baseline 57.0 from 04-11, EOS 50.0 (-7).
    eos = cell(report, PI, "end_of_series")
    assert (eos["n_eligible"], eos["n_observed"], eos["n_improved"]) == (7, 6, 5)
    # P1's first series is cut on 04-30, so the 05-05 score (day 115) is not its month_3 score.
    m3 = cell(report, PI, "month_3")
    assert (m3["n_eligible"], m3["n_observed"], m3["n_improved"]) == (5, 3, 2)


def test_filtered_episodes_keep_the_cut_from_a_removed_next_series():
    kept = filter_episodes(COHORT_EPISODES, as_of=AS_OF, series_number=1)
    assert 9 not in kept["series_id"].tolist()
    assert kept.set_index("series_id").loc[1, "follow_up_end"] == F1B - pd.Timedelta(days=1)
    # A frame without the second series and without follow_up_end would not know about the cut.
    plain = COHORT_EPISODES[COHORT_EPISODES["series_id"] != 9]
    assert with_follow_up_end(plain).set_index("series_id").loc[1, "follow_up_end"] is pd.NaT


# Property tests -------------------------------------------------------------------------------------


@st.composite
def cohorts(draw):
    n_patients = draw(st.integers(1, 6))
    ep_rows, sc_rows, sid = [], [], 0
    for p in range(n_patients):
        start = draw(st.integers(0, 200))
        for number in range(1, draw(st.integers(1, 2)) + 1):
            sid += 1
            length = draw(st.integers(0, 6))
            ep_rows.append((sid, f"P{p}", number, day(start), day(start + length)))
            start += length + draw(st.integers(1, 300))
        for _ in range(draw(st.integers(0, 25))):
            domain = draw(st.sampled_from([PI, DEP, "physical_function"]))
            when = day(draw(st.integers(-40, 800)))
            sc_rows.append((f"P{p}", when, domain, draw(st.integers(300, 800)) / 10))
    scores = make_scores(*sc_rows).drop_duplicates(["patient_id", "domain", "assessed_on"])
    return make_episodes(*ep_rows), scores, day(draw(st.integers(0, 900)))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(), st.randoms(use_true_random=False), st.sampled_from(["first", "all"]))
def test_report_ignores_row_order_and_counts_nest(cohort, rnd, series):
    episodes, scores, as_of = cohort
    report = responder_report(episodes, scores, as_of=as_of, mcid=ANCHOR, series=series)
    ep_order, sc_order = list(range(len(episodes))), list(range(len(scores)))
    rnd.shuffle(ep_order)
    rnd.shuffle(sc_order)
    shuffled = responder_report(episodes.iloc[ep_order], scores.iloc[sc_order], as_of=as_of, mcid=ANCHOR,
                                series=series)
    pd.testing.assert_frame_equal(report, shuffled)
    assert (report["n_improved"] <= report["n_observed"]).all()
    assert (report["n_observed"] <= report["n_eligible"]).all()
    # Observed counts agree with the per-episode table.
    ws = window_scores(episodes, scores, as_of=as_of, series=series)
    observed = ws[ws["observed"]].groupby(["domain", "window"], observed=True).size()
    for r in report.itertuples():
        assert r.n_observed == observed.get((r.domain, r.window), 0)


# Trajectories, CDF, completion ----------------------------------------------------------------------


def test_trajectory_weeks_means_and_t_intervals():
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P2", 1, F0, L0), (3, "P3", 1, F0, L0))
    rows = []
    for pid, base, later in (("P1", 60.0, 55.0), ("P2", 62.0, 60.0), ("P3", 64.0, 56.0)):
        rows += [(pid, day(-1), DEP, base), (pid, day(14), DEP, later)]
    rows += [("P1", day(-29), DEP, 70.0),  # week -5: outside -4..26
             ("P1", day(-28), DEP, 66.0),  # week -4
             ("P1", day(15), DEP, 57.0)]  # second score in week 2: averaged with day 14 (56.0)
    tr = trajectories(episodes, make_scores(*rows), as_of=LATE, domains=[DEP])
    assert tr["week"].min() == -4 and tr["week"].max() == 26 and len(tr) == 31
    w = tr.set_index("week")
    assert w.loc[-1, "n"] == 3 and w.loc[-1, "mean_t"] == 62.0 and w.loc[-1, "mean_change"] == 0.0
    assert w.loc[-4, "n"] == 1 and w.loc[-4, "mean_t"] == 66.0 and math.isnan(w.loc[-4, "t_ci_low"])
    changes = np.array([56.0 - 60.0, 60.0 - 62.0, 56.0 - 64.0])
    assert w.loc[2, "n_change"] == 3 and w.loc[2, "mean_change"] == pytest.approx(changes.mean())
    half = stats.t.ppf(0.975, 2) * changes.std(ddof=1) / math.sqrt(3)
    assert w.loc[2, "change_ci_low"] == pytest.approx(changes.mean() - half)
    assert w.loc[2, "change_ci_high"] == pytest.approx(changes.mean() + half)
    assert w.loc[5, "n"] == 0 and math.isnan(w.loc[5, "mean_t"])


def test_change_cdf_is_share_improving_at_least_x():
    episodes = make_episodes(*[(i, f"P{i}", 1, F0, L0) for i in range(1, 5)])
    rows = []
    for i, after in zip(range(1, 5), (36.0, 38.0, 38.0, 41.0)):  # PF: improvement = +change
        rows += [(f"P{i}", F0, "physical_function", 35.0), (f"P{i}", L0, "physical_function", after)]
    cdf = change_cdf(episodes, make_scores(*rows), as_of=LATE, domains=["physical_function"])
    eos = cdf[cdf["window"] == "end_of_series"]
    assert eos["improvement"].tolist() == [1.0, 3.0, 6.0]
    assert eos["n_at_least"].tolist() == [4, 3, 1]
    assert eos["pct_at_least"].tolist() == [100.0, 75.0, 25.0]
    assert (eos["n"] == 4).all()
    assert cdf["window"].unique().tolist() == ["end_of_series"]  # empty windows give no rows


def test_change_cdf_flips_sign_for_symptoms():
    scores = make_scores(("P1", F0, PI, 60.0), ("P1", L0, PI, 55.0))
    cdf = change_cdf(ONE, scores, as_of=LATE, domains=[PI])
    assert cdf["improvement"].tolist() == [5.0]


def test_follow_up_completion_compares_baselines():
    episodes = make_episodes(*[(i, f"P{i}", 1, F0, L0) for i in range(1, 5)])
    scores = make_scores(
        ("P1", F0, DEP, 60.0), ("P1", L0, DEP, 58.0),
        ("P2", F0, DEP, 64.0), ("P2", L0, DEP, 60.0),
        ("P3", F0, DEP, 70.0),  # non-completer
        ("P4", F0, DEP, 72.0),  # non-completer
    )
    comp = follow_up_completion(episodes, scores, as_of=day(10, L0), domains=[DEP])
    eos = comp.set_index("window").loc["end_of_series"]
    assert (eos["n_eligible"], eos["n_completed"], eos["pct_completed"]) == (4, 2, 50.0)
    assert (eos["completer_n"], eos["completer_baseline_mean"]) == (2, 62.0)
    assert eos["completer_baseline_sd"] == pytest.approx(math.sqrt(8))
    assert (eos["noncompleter_n"], eos["noncompleter_baseline_mean"]) == (2, 71.0)
    m1 = comp.set_index("window").loc["month_1"]
    assert (m1["n_eligible"], m1["n_not_due"], m1["completer_n"]) == (0, 4, 0)
    assert math.isnan(m1["pct_completed"]) and math.isnan(m1["completer_baseline_mean"])


# Filters --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("birth_year, band", [
    (2008, None), (2007, "18–29"), (1996, "18–29"), (1995, "30–39"), (1936, "80–89"), (1935, "90+"),
])
def test_age_band_boundaries(birth_year, band):
    assert age_band(birth_year, "2025-12-31") == band


def test_age_band_vectorised_keeps_missing():
    bands = age_band(pd.Series([1990, None, 1950]), "2025-01-01")
    assert bands.astype(object).where(bands.notna(), None).tolist() == ["30–39", None, "70–79"]


def test_filter_episodes_by_each_option():
    episodes = make_episodes(
        (1, "P1", 1, F0, L0), (2, "P2", 1, day(40), day(44)), (3, "P2", 2, day(200), day(204)),
        diagnosis=["CRPS", "Fibromyalgia", "Fibromyalgia"], sex=["F", "M", "M"],
        birth_year=[1960, 1990, 1990],
    )
    ids = lambda **kw: filter_episodes(episodes, as_of="2025-12-31", **kw)["series_id"].tolist()  # noqa: E731
    assert ids() == [1, 2, 3]
    assert ids(diagnosis="Fibromyalgia") == [2, 3]
    assert ids(diagnosis=["CRPS", "Fibromyalgia"], sex="F") == [1]
    assert ids(age_band="60–69") == [1] and ids(age_band=["30-39"]) == [2, 3]
    assert ids(series_number=2) == [3]
    assert ids(first_infusion_from=day(40), first_infusion_to=day(200)) == [2, 3]
    assert ids(first_infusion_to=day(39)) == [1]
    with pytest.raises(ConfigError, match="unknown age band"):
        ids(age_band="20-25")
    with pytest.raises(MissingColumns, match="protocol"):
        filter_episodes(episodes.drop(columns="protocol"), as_of=LATE, protocol="x")


@pytest.mark.parametrize("domain, t, impaired", [
    (DEP, 55.0, True), (DEP, 54.9, False), (PI, 60.0, True),
    ("physical_function", 45.0, True), ("physical_function", 45.1, False),
])
def test_impaired_at_baseline_cut_points(domain, t, impaired):
    episodes = make_episodes((1, "P1", 1, F0, L0), (2, "P2", 1, F0, L0))
    scores = make_scores(("P1", F0, domain, t))  # P2 has no baseline: dropped either way
    def kept(wanted: bool) -> list[int]:
        return filter_episodes(episodes, scores, as_of=LATE,
                               impaired_at_baseline={domain: wanted})["series_id"].tolist()

    assert kept(True) == ([1] if impaired else [])
    assert kept(False) == ([] if impaired else [1])
    with pytest.raises(ConfigError, match="needs the scores"):
        filter_episodes(episodes, as_of=LATE, impaired_at_baseline={domain: True})


# Scale ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vectorised_report_handles_a_larger_cohort_quickly():
    """20,000 patients × 35 weekly scores × 3 domains (2.1 M rows) well under the 100k budget."""
    import time

    rng = np.random.default_rng(7)
    n, weeks = 20_000, 35
    pids = np.array([f"P{i:06d}" for i in range(n)], dtype=object)
    first = F0 + pd.to_timedelta(rng.integers(0, 400, n), "D")
    episodes = pd.DataFrame({"series_id": np.arange(n), "patient_id": pids, "series_number": 1,
                             "first_infusion": first, "last_infusion": first + pd.Timedelta(days=4)})
    rep = np.repeat(np.arange(n), weeks)
    when = first.values[rep] + (np.tile(np.arange(-1, weeks - 1) * 7, n)).astype("timedelta64[D]")
    scores = pd.concat([pd.DataFrame({"patient_id": pids[rep], "assessed_on": when, "domain": d,
                                      "t_score": np.round(rng.normal(60, 8, n * weeks), 1)})
                        for d in (PI, DEP)])
    start = time.perf_counter()
    report = responder_report(episodes, scores, as_of="2026-06-30", mcid=ANCHOR)
    elapsed = time.perf_counter() - start
    assert report.loc[report["domain"] == PI, "n_observed"].iloc[0] == n
    assert elapsed < 5  # about 0.3 s when the machine is idle; generous for shared CI


def test_trajectory_can_look_back_beyond_the_baseline_window_without_moving_the_baseline():
    scores = make_scores(("P1", day(-50), DEP, 70.0), ("P1", day(14), DEP, 60.0))
    tr = trajectories(ONE, scores, as_of=LATE, domains=[DEP], weeks=(-8, 2)).set_index("week")
    assert tr.loc[-8, "n"] == 1 and tr.loc[-8, "mean_t"] == 70.0
    # Day -50 is outside F-30..F, so there is no baseline and no change.
    assert tr.loc[2, "n"] == 1 and tr.loc[2, "n_change"] == 0


def test_two_series_starting_the_same_day_are_rejected():
    clash = make_episodes((1, "P1", 1, F0, L0), (2, "P1", 2, F0, L0))
    with pytest.raises(ValidationError, match="same day"):
        responder_report(clash, make_scores(), as_of=LATE, mcid=ANCHOR, series="all")


def test_cohort_counts_agree_with_the_episode_and_window_tables():
    # P1: baseline in both domains; P2: a depression baseline only; P3: starts after the data cut;
    # P1's second series is left out of the primary analysis and counted with series="all".
    eps = make_episodes((1, "P1", 1, F0, L0), (2, "P2", 1, F0, L0), (3, "P3", 1, day(400), day(404)),
                        (4, "P1", 2, day(200), day(204)))
    scores = make_scores(("P1", day(0), PI, 66.0), ("P1", day(-3), DEP, 60.0), ("P2", day(-1), DEP, 58.0),
                         ("P2", day(-40), PI, 70.0), ("P1", day(199), PI, 62.0))
    as_of = day(300)
    counts = cohort_counts(eps, scores, as_of=as_of, domains=[PI, DEP]).set_index("domain")
    assert counts.loc[PI].tolist() == [2, 2, 1] and counts.loc[DEP].tolist() == [2, 2, 2]
    for series in ("first", "all"):
        ws = window_scores(eps, scores, as_of=as_of, domains=[PI, DEP], windows=DEFAULT_WINDOWS[:1], series=series)
        got = cohort_counts(eps, scores, as_of=as_of, domains=[PI, DEP], series=series).set_index("domain")
        for d in (PI, DEP):
            rows = ws[ws["domain"] == d]
            assert got.loc[d].tolist() == [len(rows), rows["patient_id"].nunique(), int(rows["has_baseline"].sum())]
    empty = cohort_counts(eps, scores, as_of=day(-100), domains=[PI])
    assert empty.to_dict("records") == [{"domain": PI, "episodes": 0, "patients": 0, "with_baseline": 0}]
