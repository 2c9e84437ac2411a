"""What the cohort page shows (``outcomes.cohort_view``): QI suppression and number formatting, per panel.

The page itself is tested end to end in tests/test_page_cohort.py; here each panel's display frame is checked
on small hand-made results, for a clinician and for the quality-improvement role.
"""

from datetime import date
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest

from outcomes import disclosure
from outcomes.cohort_view import MIN_AT_RISK, MIN_PATIENTS, CohortView, plain_label
from outcomes.settings import load_settings
from outcomes.survival import IntervalCensoredCurves, SurvivalCurves

SETTINGS = load_settings({})
CLINICIAN = CohortView.for_role("clinician", SETTINGS)
QI = CohortView.for_role("qi", SETTINGS)
DOMAINS = ("pain_interference", "depression", "physical_function")


# Viewer, thresholds and sentences ---------------------------------------------------------------------


def test_for_role_reads_the_settings():
    assert not CLINICIAN.qi and QI.qi and QI.small_cell_max == SETTINGS.small_cell_max == 10
    assert QI.window_labels == {w.name: w.label for w in SETTINGS.windows}
    shouting = CohortView.for_role("qi", SETTINGS, domain_label=str.upper)
    assert shouting.domain_label("depression") == "DEPRESSION"
    assert plain_label("pain_interference") == "Pain interference"


@pytest.mark.parametrize("view, patients, at_risk", [
    (CohortView(qi=False), MIN_PATIENTS, MIN_AT_RISK),
    (CohortView(qi=True), 11, 11),  # 1 to 10 would be hidden anyway
    (CohortView(qi=True, small_cell_max=5), 6, MIN_AT_RISK),
    (CohortView(qi=True, small_cell_max=0), MIN_PATIENTS, MIN_AT_RISK),
])
def test_minimums(view, patients, at_risk):
    assert (view.min_patients, view.min_at_risk) == (patients, at_risk)


def test_head_counts_are_exact_for_clinicians_and_rounded_or_marked_for_qi():
    assert [CLINICIAN.count(n) for n in (0, 3, 1234)] == ["0", "3", "1,234"]
    assert [QI.count(n) for n in (3, 10, 11, 44, 1234)] == ["≤10", "≤10", "about 10", "about 40",
                                                             "about 1,230"]


def test_too_few_names_the_count_unless_it_is_small_for_qi():
    assert CLINICIAN.too_few(5) is None and QI.too_few(11) is None
    assert CLINICIAN.too_few(3) == ("Too few patients for this panel (n = 3 with a baseline score; "
                                    "at least 5 needed)")
    assert QI.too_few(3, "Depression", "who responded") == ("Too few patients for Depression (n ≤ 10 who "
                                                            "responded; at least 11 needed)")
    assert QI.too_few(0) == ("Too few patients for this panel (n = 0 with a baseline score; "
                             "at least 11 needed)")


def test_the_qi_notice_names_both_markers():
    assert CLINICIAN.notice is None
    assert "“≤10”" in QI.notice and "“*”" in QI.notice and "more than 10 patients" in QI.notice


def test_threshold_text():
    text = CLINICIAN.threshold_text("Anchor-based", {"pain_interference": 3.0, "depression": 3.5,
                                                     "physical_function": 3.0}, DOMAINS)
    assert text == ("Meaningful change: Anchor-based: pain interference 3.0, depression 3.5, physical "
                    "function 3.0 T points (docs/methods.md §4).")


COUNTS = pd.DataFrame({"domain": ["pain_interference", "depression"], "episodes": [163, 163],
                       "patients": [147, 147], "with_baseline": [1204, 98]})


def test_headline_for_a_clinician_gives_exact_counts_and_baselines():
    h = CLINICIAN.headline(COUNTS, domains=DOMAINS, series="first", as_of=date(2025, 6, 30), impaired=False)
    assert h.text == ("**147 patients** (first series of each) with a first infusion up to 2025-06-30; with "
                      "a baseline score: pain interference 1,204, depression 98, physical function 0.")
    assert dict(h.with_baseline) == {"pain_interference": 1204, "depression": 98, "physical_function": 0}
    assert (h.n_any, h.n_series, h.n_patients) == (1204, 163, 147)


def test_headline_for_qi_rounds_and_leaves_out_the_baseline_counts():
    h = QI.headline(COUNTS, domains=DOMAINS, series="all", as_of=date(2025, 6, 30), impaired=True)
    assert h.text == ("**about 160 series of about 150 patients** (all series) released by the end of June "
                      "2025; each domain counts only patients impaired in it at baseline.")
    assert h.with_baseline["depression"] == 98  # for the empty states only


def test_notes_are_redacted_for_qi_only():
    notes = ("depression: 4 events; estimate unstable", "depression: 25 episode(s) without a baseline")
    assert CLINICIAN.notes(notes) == notes
    assert QI.notes(notes) == ("depression: ≤10 events; estimate unstable", notes[1])


# Responder table -----------------------------------------------------------------------------------------


REPORT = pd.DataFrame({
    "domain": ["depression", "depression", "physical_function"], "window": ["month_3", "month_6", "month_3"],
    "mcid": [3.5, 3.5, 3.0], "n_eligible": [120, 104, 0], "n_observed": [100, 100, 0],
    "n_improved": [7, 40, 0], "pct_observed": [7.0, 40.0, np.nan], "ci_low": [3.4, 30.9, np.nan],
    "ci_high": [13.7, 49.8, np.nan], "pct_missing_as_not_improved": [5.8, 38.5, np.nan],
    "mnni_ci_low": [2.9, 29.7, np.nan], "mnni_ci_high": [11.6, 48.0, np.nan]})


def test_responder_table_for_a_clinician():
    table = CLINICIAN.responders(REPORT)
    assert table.columns.tolist() == ["Domain", "Follow-up", "Threshold (T)", "Improved / observed",
                                      "% improved (95 % CI)", "Observed / eligible",
                                      "% if missing = not improved (95 % CI)"]
    assert table.iloc[0].tolist() == ["Depression", "3 months", "3.5", "7 / 100", "7.0 (3.4–13.7)",
                                      "100 / 120", "5.8 (2.9–11.6)"]
    assert table.iloc[2, 3:].tolist() == ["0 / 0", "–", "0 / 0", "–"]  # no denominator: no percentage


def test_responder_table_for_qi_goes_through_the_responder_spec():
    table = QI.responders(REPORT)
    expected = disclosure.suppress(REPORT, disclosure.RESPONDER_SPEC, threshold=10)
    assert table["Improved / observed"].tolist() == [f"{k} / {n}" for k, n in
                                                     zip(expected["n_improved"], expected["n_observed"])]
    assert table.iloc[0, 3:].tolist() == ["≤10 / 100", "*", "100 / 120", "*"]
    assert table.iloc[1, 3:].tolist() == ["40 / 100", "40.0 (30.9–49.8)", "100 / *", "*"]  # 4 missing
    assert table["Threshold (T)"].tolist() == ["3.5", "3.5", "3.0"]


# Trajectories, distribution of change, completion ------------------------------------------------------


TRAJ = pd.DataFrame({"domain": "depression", "week": [0, 1, 2], "n": [40, 8, 30],
                     "mean_t": [62.0, 60.0, 58.0], "sd_t": [6.0, 5.0, 7.0], "t_ci_low": [60.1, 55.8, 55.4],
                     "t_ci_high": [63.9, 64.2, 60.6],
                     "n_change": [40, 30, 3], "mean_change": [0.0, -2.0, -4.0],
                     "change_ci_low": [-0.5, -3.0, -9.0], "change_ci_high": [0.5, -1.0, 1.0]})


def test_trajectories_leave_out_small_weeks_of_the_measure_drawn_for_qi():
    assert CLINICIAN.trajectories(TRAJ, "t").data is TRAJ and CLINICIAN.trajectories(TRAJ, "t").caveat == ""
    t = QI.trajectories(TRAJ, "t")
    assert t.data["mean_t"].isna().tolist() == [False, True, False] and t.data["n"].isna().tolist()[1]
    change = QI.trajectories(TRAJ, "change")
    assert change.data["mean_change"].isna().tolist() == [False, False, True]
    assert change.caveat == "Weeks with 1 to 10 patients are not shown."


def test_change_cdf_is_coarsened_for_qi():
    x = np.arange(-10, 16, dtype=float)
    cdf = pd.DataFrame({"domain": "depression", "window": "3mo", "improvement": x,
                        "n_at_least": np.linspace(60, 1, len(x)).round().astype(int), "n": 60})
    cdf["pct_at_least"] = 100 * cdf["n_at_least"] / 60
    assert CLINICIAN.change_cdf(cdf, {"depression": 3.5}).data is cdf
    shown = QI.change_cdf(cdf, {"depression": 3.5})
    expected = disclosure.coarsen_cdf(cdf, threshold=10, pins={"depression": 3.5})
    pd.testing.assert_frame_equal(shown.data, expected)
    assert "1-point grid" in shown.caveat


COMPLETION = pd.DataFrame({
    "domain": ["depression", "depression"], "window": ["month_3", "month_6"], "n_eligible": [60, 50],
    "n_completed": [54, 30], "noncompleter_n": [6, 20], "completer_n": [54, 30], "n_not_due": [0, 10],
    "pct_completed": [90.0, 60.0], "completer_baseline_mean": [61.2, 60.0],
    "completer_baseline_sd": [6.1, 5.0],
    "noncompleter_baseline_mean": [64.0, 63.5], "noncompleter_baseline_sd": [7.2, np.nan]})


def test_completion_for_a_clinician_keeps_numbers_and_formats_the_percentage():
    shown = CLINICIAN.completion(COMPLETION)
    assert shown.drawn is COMPLETION and dict(shown.number_formats) == {"% with a score": "%.1f"}
    assert shown.table["% with a score"].tolist() == [90.0, 60.0]
    assert shown.table["Baseline T, without: mean (SD)"].tolist() == ["64.0 (7.2)", "63.5"]
    assert shown.table["Follow-up"].tolist() == ["3 months", "6 months"]


def test_completion_for_qi_hides_small_counts_in_the_table_and_the_bars():
    shown = QI.completion(COMPLETION)
    assert dict(shown.number_formats) == {}
    first = shown.table.iloc[0]
    # 6 without a score: their baseline goes, and the eligible count (54 + 6) with its percentage
    assert (first["Eligible"], first["With a score"], first["% with a score"]) == ("*", "54", "*")
    assert first["Baseline T, without: mean (SD)"] == "*"
    assert shown.table.iloc[1]["Baseline T, without: mean (SD)"] == "63.5 (–)"
    assert np.isnan(shown.drawn.loc[0, "pct_completed"]) and shown.drawn.loc[1, "pct_completed"] == 60.0
    assert shown.drawn.loc[0, "n_eligible"] == "*" and shown.drawn.loc[0, "n_completed"] == "54"  # labels


# Survival panels -----------------------------------------------------------------------------------------


def km_result(kind: str = "event") -> SurvivalCurves:
    groups = [("depression", "A", 40, 20), ("depression", "B", 30, 12), ("physical_function", "A", 4, 2)]
    curve = pd.DataFrame([(d, g, t, e) for d, g, _, _ in groups for t, e in ((0.0, 0.0), (4.0, 0.3))],
                         columns=["domain", "group", "time_weeks", "estimate"])
    curve = curve.assign(ci_low=0.1, ci_high=0.5)
    at_risk = pd.DataFrame([(d, g, w, n - k, k // 2, k - k // 2) for d, g, n, e in groups
                            for w, k in ((0, 0), (4, min(e, n)))],
                           columns=["domain", "group", "week", "at_risk", "events", "censored"])
    summary = pd.DataFrame({"domain": [d for d, *_ in groups], "group": [g for _, g, *_ in groups],
                            "n": [n for *_, n, _ in groups], "events": [e for *_, e in groups],
                            "median_weeks": [10.0, np.nan, 3.0], "median_ci_low": [7.9, 6.0, 1.0],
                            "median_ci_high": [13.0, np.nan, np.nan]})
    return SurvivalCurves(kind=kind, curve=curve, at_risk=at_risk, summary=summary,
                          p_values=MappingProxyType({"depression": 0.0312}),
                          notes=("depression, group B: 4 events; estimate unstable",))


CUT = {("depression", "A"): 20.0, ("depression", "B"): 15.0, ("physical_function", "A"): 6.0}
WITH_BASELINE = {"pain_interference": 3, "depression": 70, "physical_function": 50}


def test_a_km_panel_for_a_clinician():
    shown = CLINICIAN.survival(km_result(), CUT, estimate="km", domains=DOMAINS, with_baseline=WITH_BASELINE)
    pain, dep, pf = shown.domains
    assert pain.message == ("Too few patients for Pain interference (n = 3 with a baseline score; at least 5 "
                            "needed)") and pain.table is None and pain.log_rank is None
    assert dep.message is None and dict(dep.cut_weeks) == {"A": 20.0, "B": 15.0}
    assert dep.table.columns.tolist() == ["Group", "Patients", "Improved",
                                          "Median weeks to improvement (95 % CI)"]
    assert dep.table.values.tolist() == [["A", 40, 20, "10.0 (7.9 to 13.0)"], ["B", 30, 12, "not reached"]]
    assert dep.log_rank.startswith("Log-rank test across groups: p = 0.031 (descriptive")
    assert pf.table.values.tolist() == [["A", 4, 2, "3.0 (1.0 to not reached)"]]
    assert shown.hover_summary is not None and len(shown.curve) == 6 and shown.caveat == ""
    assert shown.notes == ("depression, group B: 4 events; estimate unstable",)


def test_a_km_panel_for_qi_hides_small_groups_and_adds_the_total():
    shown = QI.survival(km_result(), CUT, estimate="km", domains=DOMAINS, with_baseline=WITH_BASELINE)
    pain, dep, pf = shown.domains
    assert pain.message.startswith("Too few patients for Pain interference (n ≤ 10 with")
    assert dep.table.values.tolist() == [["A", "40", "20", "10.0 (7.9 to 13.0)"],
                                         ["B", "30", "12", "not reached"],
                                         ["All patients", "70", "32", ""]]  # the total row last, no median
    assert pf.message == ("Physical function: every group has 1 to 10 patients or would reveal one; "
                          "choose “All patients”") and pf.table is None
    assert set(shown.curve["domain"]) == {"depression"} and shown.hover_summary is None
    assert shown.caveat.startswith("Groups with 1 to 10 patients, and one more where needed")
    assert shown.notes == ("depression, group B: ≤10 events; estimate unstable",)
    assert "physical_function" not in set(shown.at_risk["domain"])
    assert shown.at_risk["at_risk"].map(type).eq(str).all()


def test_a_durability_panel_judges_each_domain_on_its_responders():
    shown = CLINICIAN.survival(km_result("survival"), CUT, estimate="durability", domains=DOMAINS,
                               with_baseline=WITH_BASELINE)
    pain, dep, pf = shown.domains
    assert pain.message == "Too few patients for Pain interference (n = 0 who responded; at least 5 needed)"
    assert pf.message == "Too few patients for Physical function (n = 4 who responded; at least 5 needed)"
    assert dep.table.columns.tolist() == ["Group", "Responders", "Lost response",
                                          "Median weeks in response (95 % CI)"]


def test_an_interval_censored_panel_shows_the_weibull_median_alone():
    parameters = pd.DataFrame({"domain": ["depression"] * 2, "group": ["all", "x"], "n": [70, 40],
                               "events": [30, 0], "median_weeks": [12.34, np.nan]})
    for column in ("scale_weeks", "scale_ci_low", "scale_ci_high", "shape", "shape_ci_low", "shape_ci_high",
                   "max_gap"):
        parameters[column] = 1.0
    curve = pd.DataFrame({"domain": "depression", "group": "all", "method": "npmle", "time_weeks": [0.0, 2.0],
                          "estimate": [0.0, 0.4], "ci_low": np.nan, "ci_high": np.nan})
    result = IntervalCensoredCurves(curve=curve, parameters=parameters, at_risk=km_result().at_risk.iloc[:0])
    shown = CLINICIAN.survival(result, {}, estimate="interval", domains=["depression"],
                               with_baseline=WITH_BASELINE)
    [dep] = shown.domains
    assert dep.table.columns.tolist()[-1] == "Weibull median weeks"
    assert dep.table.values.tolist() == [["x", 40, 0, "not reached"], ["All patients", 70, 30, "12.3"]]
    assert dep.log_rank is None


def test_an_unknown_estimate_is_refused():
    with pytest.raises(ValueError, match="estimate must be one of km, interval, durability"):
        CLINICIAN.survival(km_result(), CUT, estimate="cox", domains=DOMAINS, with_baseline=WITH_BASELINE)
