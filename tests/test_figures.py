"""Figure builders: trace counts and names, axis titles, what an empty or hidden input draws."""

import numpy as np
import pandas as pd
import pytest

from outcomes import figures, survival
from outcomes.analysis import trajectories


@pytest.fixture(scope="module")
def times() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 120
    event = rng.random(n) < 0.6
    time = np.round(rng.exponential(6, n), 1) + 0.1
    return pd.DataFrame({"domain": "depression", "time_weeks": time, "event": event,
                         "lower_weeks": np.maximum(time - 1, 0), "upper_weeks": np.where(event, time, np.inf),
                         "diagnosis": rng.choice(["CRPS", "Fibromyalgia"], n), "has_baseline": True})


def episodes_and_scores():
    episodes = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P2"], "series_number": [1, 1],
                             "first_infusion": pd.Timestamp("2025-01-06"),
                             "last_infusion": pd.Timestamp("2025-01-10")})
    days = pd.to_datetime(["2025-01-06", "2025-01-13", "2025-01-20", "2025-02-03"])
    scores = pd.DataFrame({"patient_id": ["P1"] * 4 + ["P2"] * 4, "domain": "depression",
                           "assessed_on": list(days) * 2, "t_score": [62, 58, 57, 55, 60, 61, 59, 60.0]})
    return episodes, scores


def test_empty_figure_says_why():
    fig = figures.empty_figure("Too few patients for this panel (n = 3)")
    assert fig.layout.title.text == "Too few patients for this panel (n = 3)" and len(fig.data) == 0


def test_trajectory_figure_draws_band_mean_and_counts():
    traj = trajectories(*episodes_and_scores(), as_of="2025-06-01", domains=["depression"])
    fig = figures.trajectory_figure(traj, "depression")
    assert [t.name for t in fig.data] == ["95 % CI", "Mean change from baseline", "Patients with a score"]
    assert fig.layout.yaxis.title.text == "Mean change in T (lower is better)"
    assert fig.layout.xaxis2.title.text == figures.WEEKS_X_TITLE
    assert fig.layout.shapes[0].x0 == -0.5  # the infusion week is marked
    assert dict(zip(fig.data[2].x, fig.data[2].y))[0] == 2  # both patients scored in week 0
    t_fig = figures.trajectory_figure(traj, "depression", measure="t")
    assert t_fig.data[1].name == "Mean T-score" and t_fig.layout.yaxis.title.text == "Mean T-score"


def test_trajectory_band_leaves_hidden_weeks_open():
    traj = trajectories(*episodes_and_scores(), as_of="2025-06-01", domains=["depression"], weeks=(0, 4))
    traj.loc[traj["week"] == 2, ["mean_change", "change_ci_low", "change_ci_high", "n_change"]] = np.nan
    band = figures.trajectory_figure(traj, "depression").data[0]
    assert None in band.x  # one polygon per stretch of known weeks, not a wedge across the gap


def test_trajectory_figure_of_nothing_is_empty_with_a_reason():
    fig = figures.trajectory_figure(pd.DataFrame(columns=["domain", "week", "n"]), "pain_interference")
    assert len(fig.data) == 0 and fig.layout.title.text.startswith("Pain interference: no scores")


def cdf_frame() -> pd.DataFrame:
    return pd.DataFrame({"domain": "depression", "window": ["end_of_series"] * 4 + ["month_3"] * 3,
                         "improvement": [-2.0, 1.0, 3.5, 6.0, -1.0, 2.0, 4.0],
                         "n_at_least": [40, 30, 20, 5, 30, 15, 6], "n": [40] * 4 + [30] * 3,
                         "pct_at_least": [100, 75, 50, 12.5, 100, 50, 20]})


def test_cdf_figure_marks_every_threshold_and_the_rate_at_the_one_in_use():
    fig = figures.change_cdf_figure(cdf_frame(), "depression", current=3.5,
                                    thresholds={"lenient": 3.0, "anchor-based": 3.5})
    assert [t.name for t in fig.data] == ["End of series (n = 40)", "3 months (n = 30)",
                                          "At the threshold in use"]
    assert fig.data[0].line.shape == "vh"
    assert list(fig.data[2].y) == [50.0, 20.0]  # share improving by at least 3.5 in each window
    assert [a.text for a in fig.layout.annotations] == ["lenient: 3", "anchor-based: 3.5"]
    assert [s.line.dash for s in fig.layout.shapes] == ["dot", "dash"]
    assert fig.layout.xaxis.title.text.startswith("Improvement from baseline")
    assert fig.layout.yaxis.title.text == "% improving by at least x"


def test_a_coarsened_cdf_joins_points_and_marks_only_published_rates():
    fig = figures.change_cdf_figure(cdf_frame(), "depression", current=3.0, steps=False)
    assert fig.data[0].mode == "lines+markers" and fig.data[0].line.dash == "dot"
    assert fig.data[-1].name == "At the threshold in use" and len(fig.data[-1].x) == 0


def test_cdf_figure_of_nothing_is_empty():
    fig = figures.change_cdf_figure(cdf_frame().iloc[0:0], "depression")
    assert len(fig.data) == 0 and "no patient has a baseline" in fig.layout.title.text


def test_km_figure_has_bands_curves_and_an_at_risk_row_per_group(times):
    km = survival.fit_km(times, group_col="diagnosis")
    fig = figures.km_figure(km.curve, km.at_risk, "depression", summary=km.summary)
    assert [t.name for t in fig.data] == ["CRPS: 95 % CI", "CRPS", "CRPS: at risk",
                                          "Fibromyalgia: 95 % CI", "Fibromyalgia", "Fibromyalgia: at risk"]
    assert fig.layout.yaxis.title.text == figures.KM_Y_TITLE
    assert list(fig.layout.xaxis2.tickvals) == [0, 4, 8, 13, 26]
    crps = km.at_risk.query("group == 'CRPS'")["at_risk"].astype(str).tolist()
    assert list(fig.data[2].text) == crps
    assert max(fig.data[1].y) <= 100 and fig.data[1].line.shape == "hv"


def test_km_figure_stops_each_curve_where_it_is_cut(times):
    km = survival.fit_km(times)
    cut = figures.at_risk_cutoff(times, min_at_risk=10)
    limit = cut[("depression", "all")]
    fig = figures.km_figure(km.curve, km.at_risk, "depression", cut_weeks={"all": limit})
    assert max(fig.data[1].x) == pytest.approx(limit)
    assert (times["time_weeks"] >= limit).sum() >= 10 > (times["time_weeks"] > limit).sum()


def test_durability_figure_marks_a_single_median(times):
    km = survival.fit_km(times, kind="survival")
    fig = figures.km_figure(km.curve, km.at_risk, "depression", kind="survival", summary=km.summary,
                            x_title="Weeks since the first meaningful improvement", all_label="Responders")
    assert fig.layout.yaxis.title.text == figures.DURABILITY_Y_TITLE
    assert fig.data[1].name == "Responders"
    assert any(a.text.startswith("median ") for a in fig.layout.annotations)
    assert fig.layout.xaxis2.title.text == "Weeks since the first meaningful improvement"


def test_km_figure_accepts_suppressed_at_risk_text(times):
    km = survival.fit_km(times)
    risk = km.at_risk.astype({"at_risk": object, "events": object, "censored": object})
    risk.loc[risk.index[-1], ["at_risk", "censored"]] = ["≤10", "*"]
    fig = figures.km_figure(km.curve, risk, "depression")
    assert fig.data[-1].text[-1] == "≤10" and "≤10 at risk" in fig.data[-1].hovertext[-1]


def test_km_figure_of_nothing_is_empty(times):
    km = survival.fit_km(times)
    fig = figures.km_figure(km.curve, km.at_risk, "pain_interference")
    assert len(fig.data) == 0 and "nothing to estimate" in fig.layout.title.text


def test_interval_censored_figure_shows_npmle_steps_and_the_weibull_band(times):
    ic = survival.fit_interval_censored(times)
    fig = figures.interval_censored_figure(ic.curve, ic.at_risk, "depression")
    assert [t.name for t in fig.data] == ["All patients: Weibull 95 % CI", "All patients: Weibull fit",
                                          "All patients: NPMLE", "All patients: at risk"]
    assert fig.data[2].line.shape == "hv" and fig.data[1].line.dash == "dash"


def test_completion_figure_has_a_bar_trace_per_domain():
    completion = pd.DataFrame({"domain": ["depression", "depression", "pain_interference"],
                               "window": ["end_of_series", "month_1", "end_of_series"],
                               "n_eligible": [40, "*", 40], "n_completed": [38, 30, "≤10"],
                               "pct_completed": [95.0, np.nan, np.nan]})
    fig = figures.completion_figure(completion)
    assert [t.name for t in fig.data] == ["Depression", "Pain interference"]
    assert list(fig.data[0].text) == ["38/40", "30/*"] and list(fig.data[1].text) == ["≤10/40"]
    assert fig.layout.yaxis.title.text == "% of eligible patients with a score"
    assert len(figures.completion_figure(completion.iloc[0:0]).data) == 0


BANDS = {"cut_points": (55, 60, 70), "band_labels": ("within normal limits", "mild", "moderate", "severe")}
DAY_MS = 86_400_000


def two_series_record():
    """Depression scores over two series, each with its own baseline (as clinic.patient_record gives them)."""
    series = pd.DataFrame({"series_id": [11, 12], "series_number": [1, 2],
                           "first_infusion": pd.to_datetime(["2025-01-06", "2025-04-07"]),
                           "last_infusion": pd.to_datetime(["2025-01-10", "2025-04-11"])})
    days = pd.to_datetime(["2025-01-03", "2025-01-20", "2025-03-03", "2025-04-04", "2025-04-21",
                           "2025-05-19"])
    scores = pd.DataFrame({"assessed_on": days, "domain": "depression",
                           "t_score": [66.0, 60.0, 63.0, 65.0, 58.0, 57.5],
                           "baseline_on": pd.to_datetime(["2025-01-03"] * 4 + ["2025-04-04"] * 2),
                           "baseline_t": [66.0] * 4 + [65.0] * 2})
    infusions = pd.DataFrame({"series_id": [11] * 5 + [12] * 5,
                              "infused_on": [*pd.date_range("2025-01-06", periods=5),
                                             *pd.date_range("2025-04-07", periods=5)]})
    return scores.assign(change=scores["t_score"] - scores["baseline_t"]), series, infusions


def test_patient_trajectory_figure_draws_bands_baseline_and_infusions():
    scores, series, infusions = two_series_record()
    fig = figures.patient_trajectory_figure(scores, "depression", mcid=3.5, infusions=infusions,
                                            series=series, **BANDS)
    assert [t.name for t in fig.data] == ["T-score", "Baseline", "Baseline",
                                         "Baseline ± 3.5: no meaningful change", "Infusion"]
    labels = [a.text for a in fig.layout.annotations]
    assert labels[:4] == ["within normal limits", "mild", "moderate", "severe"]
    assert {"Series 1", "Series 2"} <= set(labels)
    assert fig.layout.yaxis.title.text == "T-score (higher is worse)"
    assert fig.data[0].hovertext[0] == "03 Jan 2025: T 66.0 (moderate)<br>baseline score"
    assert fig.data[0].hovertext[1] == "20 Jan 2025: T 60.0 (moderate)<br>-6.0 since baseline"


def test_each_series_has_its_own_baseline_line_and_band():
    scores, series, infusions = two_series_record()
    fig = figures.patient_trajectory_figure(scores, "depression", mcid=3.5, infusions=infusions,
                                            series=series, **BANDS)
    lines = [t for t in fig.data if t.name == "Baseline"]
    # Series 1: its baseline from the day it was scored until series 2's baseline was scored (3 days
    # before series 2); series 2: from its baseline to the last score. Not the latest over the whole span.
    assert [list(t.y) for t in lines] == [[66.0, 66.0], [65.0, 65.0]]
    assert [[pd.Timestamp(x) for x in t.x] for t in lines] == [
        [pd.Timestamp("2025-01-03"), pd.Timestamp("2025-04-04")],
        [pd.Timestamp("2025-04-04"), pd.Timestamp("2025-05-19")]]
    assert [t.showlegend for t in lines] == [True, False]
    assert "Series 1 baseline: T 66.0, scored 03 Jan 2025" in lines[0].hovertext[0]
    assert "Series 2 baseline: T 65.0" in lines[1].hovertext[0]
    bands = [s for s in fig.layout.shapes if s.name == figures.BASELINE_BAND_NAME]
    assert [(s.y0, s.y1) for s in bands] == [(62.5, 69.5), (61.5, 68.5)]
    assert [(pd.Timestamp(s.x0), pd.Timestamp(s.x1)) for s in bands] == [
        (pd.Timestamp("2025-01-03"), pd.Timestamp("2025-04-04")),
        (pd.Timestamp("2025-04-04"), pd.Timestamp("2025-05-19"))]
    assert len([s for s in fig.layout.shapes if s.name == "series"]) == 2


def test_baseline_segments_end_where_the_next_series_starts():
    scores = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-01-06", "2025-02-03", "2025-03-10"]),
                           "t_score": [64.0, 58.0, 61.0],
                           # series 2 (from 2025-03-03) has no score in the 28 days before it: no baseline
                           "baseline_on": pd.to_datetime(["2025-01-06", "2025-01-06", None]),
                           "baseline_t": [64.0, 64.0, np.nan]})
    seg = figures.baseline_segments(scores, [("2025-01-06", "2025-01-10"), ("2025-03-03", "2025-03-07")])
    assert seg[["label", "baseline_t"]].values.tolist() == [["Series 1 baseline", 64.0]]
    assert (seg["x0"].iloc[0], seg["x1"].iloc[0]) == (pd.Timestamp("2025-01-06"), pd.Timestamp("2025-03-03"))
    # Before any series the first score is the baseline; series 1's own baseline takes over from its date.
    before = pd.DataFrame({"assessed_on": pd.to_datetime(["2024-11-01", "2024-12-20", "2025-01-20"]),
                           "t_score": [70.0, 66.0, 60.0],
                           "baseline_on": pd.to_datetime(["2024-11-01", "2024-11-01", "2024-12-20"]),
                           "baseline_t": [70.0, 70.0, 66.0]})
    seg = figures.baseline_segments(before, [("2025-01-06", "2025-01-10")])
    assert seg["label"].tolist() == ["Baseline (first score)", "Series 1 baseline"]
    assert seg["x1"].tolist() == [pd.Timestamp("2024-12-20"), pd.Timestamp("2025-01-20")]
    assert figures.baseline_segments(before.drop(columns=["baseline_on", "baseline_t"])).empty


def test_five_infusions_in_one_week_are_five_distinct_markers():
    scores, series, infusions = two_series_record()
    for span in (pd.Timedelta(days=180), pd.Timedelta(days=730)):  # a 6-month and a 2-year chart
        late = scores.assign(assessed_on=scores["assessed_on"].where(scores.index < 5,
                                                                     pd.Timestamp("2025-01-03") + span))
        fig = figures.patient_trajectory_figure(late, "depression", mcid=3.5, infusions=infusions,
                                                series=series, **BANDS)
        marks = next(t for t in fig.data if t.name == "Infusion")
        points = list(zip(pd.to_datetime(list(marks.x)), marks.y))
        assert len(points) == 10 and len(set(points)) == 10
        first = points[:5]
        assert len({x for x, _ in first}) == 5  # a day apart on the date axis ...
        assert [y for _, y in first] == [1, 2, 3, 4, 5]  # ... and a row apart on the strip: never one blob
        assert marks.yaxis == "y2" and fig.layout.yaxis2.domain[1] < fig.layout.yaxis.domain[0]
        assert list(marks.hovertext[:2]) == ["06 Jan 2025: infusion 1 of series 1 (5 in the series)",
                                             "07 Jan 2025: infusion 2 of series 1 (5 in the series)"]
        assert marks.hovertext[7] == "09 Apr 2025: infusion 3 of series 2 (5 in the series)"
    # Dates only, without series: numbered within runs of infusions no more than two weeks apart.
    fig = figures.patient_trajectory_figure(scores, "depression", infusions=list(infusions["infused_on"]))
    marks = next(t for t in fig.data if t.name == "Infusion")
    assert list(marks.y) == [1, 2, 3, 4, 5] * 2


def test_a_single_score_has_a_date_axis_of_whole_days():
    one = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-03-12"]), "t_score": [58.0],
                        "baseline_on": pd.to_datetime(["2025-03-12"]), "baseline_t": [58.0]})
    for fig in (figures.patient_trajectory_figure(one, "depression", mcid=3.5, **BANDS),
                figures.patient_trajectory_figure(one.iloc[:, :2], "depression")):
        axis = fig.layout.xaxis
        x0, x1 = (pd.Timestamp(x) for x in axis.range)
        assert x1 - x0 >= pd.Timedelta(days=14) and x0 < pd.Timestamp("2025-03-12") < x1
        # Two weeks of whole days (not 23:59:59.999 to 00:00:00.0005), half a day more each side.
        assert (x0, x1) == (pd.Timestamp("2025-03-04 12:00"), pd.Timestamp("2025-03-19 12:00"))
        assert axis.type == "date" and axis.tickformat == "%d %b %Y" and "%H" not in axis.tickformat
        assert axis.tickmode == "linear" and axis.dtick == 7 * DAY_MS and pd.Timestamp(axis.tick0) == \
            pd.Timestamp("2025-03-12")
        assert axis.minor.dtick == DAY_MS
    # Scores a few days apart: the same; a long span lets plotly choose ticks, but labels them by day at most.
    few = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-03-12", "2025-03-14", "2025-03-17"]),
                        "t_score": [58.0, 57.0, 55.0]})
    axis = figures.patient_trajectory_figure(few, "depression").layout.xaxis
    assert axis.dtick == 7 * DAY_MS and pd.Timestamp(axis.range[1]) - pd.Timestamp(axis.range[0]) >= \
        pd.Timedelta(days=14)
    scores, series, infusions = two_series_record()
    axis = figures.patient_trajectory_figure(scores, "depression", series=series).layout.xaxis
    assert axis.dtick is None and [s.value for s in axis.tickformatstops] == ["%d %b %Y", "%b %Y", "%Y"]
    assert axis.tickformatstops[0].dtickrange[0] is None  # even zoomed in to hours: dates, not times


def test_a_single_score_is_its_own_baseline_drawn_as_a_short_segment():
    one = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-03-12"]), "t_score": [58.0],
                        "baseline_on": pd.to_datetime(["2025-03-12"]), "baseline_t": [58.0]})
    fig = figures.patient_trajectory_figure(one, "depression", mcid=3.5, **BANDS)
    line = next(t for t in fig.data if t.name == "Baseline")
    assert [pd.Timestamp(x) for x in line.x] == [pd.Timestamp("2025-03-11 12:00"),
                                                 pd.Timestamp("2025-03-12 12:00")]


@pytest.mark.parametrize(("change", "higher_is_worse", "expected"), [
    (0.0, True, ("0.0 since baseline", "off", "off")),         # +0.0: no arrow, grey
    (0.04, False, ("0.0 since baseline", "off", "off")),       # rounds to 0.0
    (-0.04, True, ("0.0 since baseline", "off", "off")),       # never "-0.0"
    (-5.0, True, ("-5.0 since baseline", "inverse", "auto")),  # depression falls: green, arrow down
    (5.0, True, ("+5.0 since baseline", "inverse", "auto")),   # depression rises: red, arrow up
    (4.25, False, ("+4.3 since baseline", "normal", "auto")),  # function rises: green
    (-3.0, False, ("-3.0 since baseline", "normal", "auto")),  # function falls: red
    (None, True, (None, "off", "off")),                        # no baseline: no delta, never "None"
    (np.nan, False, (None, "off", "off")),
    (pd.NA, True, (None, "off", "off")),
])
def test_change_delta_text_arrow_and_colour(change, higher_is_worse, expected):
    assert tuple(figures.change_delta(change, higher_is_worse=higher_is_worse)) == expected


def test_change_delta_of_the_baseline_score_itself():
    delta = figures.change_delta(0.0, higher_is_worse=True, is_baseline=True)
    assert delta == ("baseline score", "off", "off")
    assert figures.change_delta(np.nan, higher_is_worse=True, is_baseline=True).text is None


def test_patient_trajectory_figure_for_function_and_for_no_scores():
    scores = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-01-06"]), "t_score": [38.0]})
    fig = figures.patient_trajectory_figure(scores, "physical_function", higher_is_worse=False,
                                            cut_points=(45, 40, 30),
                                            band_labels=("wnl", "mild", "moderate", "severe"))
    assert fig.layout.yaxis.title.text == "T-score (higher is better)"
    assert "(moderate)" in fig.data[0].hovertext[0]
    empty = figures.patient_trajectory_figure(scores.iloc[0:0], "physical_function")
    assert len(empty.data) == 0 and empty.layout.title.text == "Physical function: no scores recorded yet"


def test_at_risk_cutoff_per_group():
    t = pd.DataFrame({"domain": "depression", "time_weeks": [1.0, 2, 3, 4, 5, 6], "g": list("aaaabb")})
    assert figures.at_risk_cutoff(t, group_col="g", min_at_risk=3) == {("depression", "a"): 2.0,
                                                                      ("depression", "b"): -1.0}
