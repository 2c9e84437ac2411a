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


def test_patient_trajectory_figure_draws_bands_baseline_and_infusions():
    scores = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-01-06", "2025-01-13", "2025-02-10"]),
                           "domain": "depression", "t_score": [64.0, 58.5, 61.0]})
    fig = figures.patient_trajectory_figure(
        scores, "depression", baseline_t=64.0, mcid=3.5, cut_points=(55, 60, 70),
        band_labels=("within normal limits", "mild", "moderate", "severe"),
        infusion_dates=["2025-01-06", "2025-01-07"], series=[("2025-01-06", "2025-01-10")])
    assert [t.name for t in fig.data] == ["T-score", "Infusion"]
    labels = [a.text for a in fig.layout.annotations]
    assert labels[:4] == ["within normal limits", "mild", "moderate", "severe"]
    assert "baseline ± 3.5: no meaningful change" in labels and "Series 1" in labels
    assert len(fig.layout.shapes) == 4 + 1 + 1 + 1  # severity bands, change band, baseline line, series
    assert fig.layout.yaxis.title.text == "T-score (higher is worse)"
    assert "(mild)" in fig.data[0].hovertext[1]


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
