"""Small-cell suppression: the CMS rule on responder rows, group totals, cumulative curves and notes."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from outcomes import disclosure as D
from outcomes import disclosure
from outcomes.errors import ConfigError, MissingColumns

RESPONDER_ROW = {"n_eligible": 120, "n_observed": 100, "n_improved": 40, "pct_observed": 40.0,
                 "ci_low": 30.9, "ci_high": 49.8, "pct_missing_as_not_improved": 33.3, "mnni_ci_low": 25.5,
                 "mnni_ci_high": 42.2}


def responder(**changes) -> pd.DataFrame:
    return pd.DataFrame([{**RESPONDER_ROW, **changes}])


def shown(table: pd.DataFrame, spec=D.RESPONDER_SPEC, **kw) -> dict:
    return D.suppress(table, spec, **kw).iloc[0].to_dict()


def test_markers_and_single_counts():
    assert (D.small_marker(), D.small_marker(5), D.HIDDEN) == ("≤10", "≤5", "*")
    assert [D.is_small(v) for v in (0, 1, 10, 11, np.nan)] == [False, True, True, False, False]
    assert [D.show_count(v) for v in (0, 7, 10, 11, 2500)] == ["0", "≤10", "≤10", "11", "2,500"]


def test_a_row_without_small_counts_is_published_whole():
    row = shown(responder())
    assert row["n_improved"] == "40" and row["pct_observed"] == "40.0" and row["mnni_ci_high"] == "42.2"


def test_a_small_improved_count_hides_its_percentages_and_intervals():
    row = shown(responder(n_improved=7))
    assert row["n_improved"] == "≤10"
    assert {row[c] for c in ("pct_observed", "ci_low", "ci_high", "pct_missing_as_not_improved",
                             "mnni_ci_low", "mnni_ci_high")} == {"*"}
    assert (row["n_observed"], row["n_eligible"]) == ("100", "120")


def test_a_small_not_improved_remainder_hides_the_improved_count():
    row = shown(responder(n_improved=96))  # 100 - 96 = 4 did not improve
    assert row["n_improved"] == "*" and row["pct_observed"] == "*"
    assert row["n_observed"] == "100"


def test_a_small_observed_count_hides_the_whole_row_even_a_zero():
    row = shown(responder(n_observed=7, n_improved=0))
    assert row["n_observed"] == "≤10"
    assert row["n_improved"] == "*"  # "0 of ≤10 improved" would describe each of them
    assert row["pct_observed"] == row["ci_high"] == row["pct_missing_as_not_improved"] == "*"
    assert row["n_eligible"] == "120"


def test_a_small_missing_count_hides_the_eligible_count_not_the_primary_estimate():
    row = shown(responder(n_eligible=104))  # 104 - 100 = 4 without a score
    assert row["n_eligible"] == "*"
    assert row["pct_missing_as_not_improved"] == "*"
    assert (row["n_observed"], row["n_improved"], row["pct_observed"]) == ("100", "40", "40.0")


def test_zero_is_published():
    row = shown(responder(n_improved=0, pct_observed=0.0, ci_low=0.0, ci_high=3.7))
    assert row["n_improved"] == "0" and row["pct_observed"] == "0.0"


def test_a_threshold_of_zero_hides_nothing():
    assert shown(responder(n_improved=3), threshold=0)["n_improved"] == "3"


def test_a_custom_threshold_sets_the_marker():
    row = shown(responder(n_improved=4), threshold=5)
    assert row["n_improved"] == "≤5"
    assert shown(responder(n_improved=6), threshold=5)["n_improved"] == "6"


GROUP_SPEC = D.Spec(counts=("n",), row_totals=(D.RowTotal(("domain",), "group", "All", ("n",)),))


def groups(values: list[int]) -> pd.DataFrame:
    names = [f"G{i}" for i in range(len(values))]
    return pd.DataFrame({"domain": "d", "group": [*names, "All"], "n": [*values, sum(values)]})


def test_one_hidden_group_takes_a_second_one_with_it():
    mask = D.suppression_mask(groups([3, 50, 60]), GROUP_SPEC)
    assert mask["n"].tolist() == [True, True, False, False]  # the smallest other group goes too


def test_two_small_groups_whose_sum_is_small_take_a_third():
    mask = D.suppression_mask(groups([3, 4, 100, 200]), GROUP_SPEC)
    assert mask["n"].tolist() == [True, True, True, False, False]  # 3 + 4 = 7 would be known


def test_two_small_groups_whose_sum_is_large_are_enough():
    mask = D.suppression_mask(groups([9, 8, 100]), GROUP_SPEC)
    assert mask["n"].tolist() == [True, True, False, False]


def test_apply_mask_gives_nan_for_figures():
    table = responder(n_improved=7)
    numbers = D.suppress(table, D.RESPONDER_SPEC, as_text=False)
    assert np.isnan(numbers.loc[0, "n_improved"]) and np.isnan(numbers.loc[0, "pct_observed"])
    assert numbers.loc[0, "n_observed"] == 100


def test_bad_tables_are_refused():
    with pytest.raises(MissingColumns):
        D.suppression_mask(pd.DataFrame({"n_observed": [1]}), D.RESPONDER_SPEC)
    with pytest.raises(ConfigError, match="do not add up"):
        D.suppression_mask(responder(n_improved=101), D.RESPONDER_SPEC)
    with pytest.raises(ConfigError, match="whole non-negative"):
        D.suppression_mask(responder(n_improved=-1), D.RESPONDER_SPEC)
    with pytest.raises(ConfigError, match="threshold"):
        D.suppression_mask(responder(), D.RESPONDER_SPEC, threshold=-1)


def test_missing_counts_are_left_alone():
    table = responder(n_observed=np.nan, n_improved=np.nan, pct_observed=np.nan)
    assert shown(table)["n_improved"] == ""


def test_survival_summaries_hide_small_groups_and_their_complement():
    summary = pd.DataFrame({"domain": "d", "group": ["A", "B", "C"], "n": [59, 7, 40], "events": [30, 3, 20],
                            "median_weeks": [5.0, 2.0, 8.0]})
    risk = pd.DataFrame({"domain": "d", "group": list("AABBCC"), "week": [0, 4] * 3,
                         "at_risk": [59, 20, 7, 2, 40, 35], "events": [0, 30, 0, 3, 0, 5],
                         "censored": [0, 9, 0, 2, 0, 0]})
    table, at_risk, hidden = D.suppress_curves(summary, risk)
    assert hidden == {("d", "B"), ("d", "C")}
    assert table.set_index("group").loc["B", "n"] == "≤10" and table.set_index("group").loc["C", "n"] == "*"
    assert table.set_index("group").loc["All", "n"] == "106"
    assert set(at_risk["group"]) == {"A"}
    week4 = at_risk.set_index("week").loc[4]
    assert (week4["at_risk"], week4["censored"], week4["events"]) == ("20", "≤10", "*")


def test_publishable_cumulative_pins_the_threshold():
    counts = [100, 97, 80, 60, 55, 12, 3]
    assert D.publishable_cumulative(counts, 100).tolist() == [True, False, True, True, False, True, False]
    pinned = D.publishable_cumulative(counts, 100, pinned=[0, 0, 0, 0, 1, 0, 0])
    assert pinned.tolist() == [True, False, True, False, True, True, False]


def test_coarsen_cdf_keeps_the_threshold_and_drops_small_curves():
    cdf = pd.DataFrame({"domain": "depression", "window": "month_1",
                        "improvement": [-6.2, -2.0, 0.4, 1.1, 3.5, 3.9, 7.0, 12.3],
                        "n_at_least": [60, 52, 40, 33, 30, 21, 9, 2], "n": 60})
    tiny = pd.DataFrame({"domain": "depression", "window": "month_6", "improvement": [1.0, 4.0],
                         "n_at_least": [8, 2], "n": 8})
    out = D.coarsen_cdf(pd.concat([cdf, tiny]), pins={"depression": 3.5})
    assert set(out["window"]) == {"month_1"}
    assert 3.5 in out["improvement"].tolist()
    assert out.set_index("improvement").loc[3.5, "n_at_least"] == 30
    assert (out["improvement"] % 1 == 0).sum() == len(out) - 1  # the grid and the pinned threshold only
    for n in out["n_at_least"]:
        assert not D.is_small(n) and not D.is_small(60 - n) and 0 < n < 60


def test_notes_lose_their_small_counts():
    assert D.redact_text("depression, group X: 4 events; estimate unstable") == \
        "depression, group X: ≤10 events; estimate unstable"
    assert D.redact_text("pain: 3 episode(s) without a baseline score were excluded").startswith("pain: ≤10")
    kept = "pain: fewer than 10 episodes at risk after week 8.3; 25 events"
    assert D.redact_text(kept) == kept


# Properties -----------------------------------------------------------------------------------------

THRESHOLD = 10


@st.composite
def responder_tables(draw):
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        improved = draw(st.integers(0, 60))
        observed = improved + draw(st.integers(0, 60))
        eligible = observed + draw(st.integers(0, 40))
        rows.append({"n_eligible": eligible, "n_observed": observed, "n_improved": improved})
    table = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = 100 * table["n_improved"] / table["n_observed"]
        mnni = 100 * table["n_improved"] / table["n_eligible"]
    return table.assign(pct_observed=pct, ci_low=pct, ci_high=pct, pct_missing_as_not_improved=mnni,
                        mnni_ci_low=mnni, mnni_ci_high=mnni)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(responder_tables())
def test_responder_tables_never_reveal_a_small_count(table):
    mask = D.suppression_mask(table, D.RESPONDER_SPEC, threshold=THRESHOLD)
    for i, row in table.iterrows():
        hide = mask.loc[i]
        published = {c: row[c] for c in D.RESPONDER_SPEC.counts if not hide[c]}
        assert not any(D.is_small(v, THRESHOLD) for v in published.values())
        # Differences of published counts are counts too (missing, not improved): never small.
        if "n_eligible" in published and "n_observed" in published:
            assert not D.is_small(row["n_eligible"] - row["n_observed"], THRESHOLD)
        if "n_observed" in published and "n_improved" in published:
            assert not D.is_small(row["n_observed"] - row["n_improved"], THRESHOLD)
        # A percentage is published only with every count it is computed from.
        for column, sources in D.RESPONDER_SPEC.derived.items():
            if not hide[column]:
                assert all(not hide[s] for s in sources)
        if D.is_small(row["n_observed"], THRESHOLD):
            assert hide["n_improved"] and hide["pct_observed"]


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=2, max_size=7))
def test_no_hidden_group_is_a_total_minus_published_groups(values):
    table = groups(values)
    mask = D.suppression_mask(table, GROUP_SPEC, threshold=THRESHOLD)["n"].to_numpy()
    parts, total_hidden = mask[:-1], mask[-1]
    assert not any(D.is_small(v, THRESHOLD) for v, h in zip(table["n"], mask) if not h)
    if not total_hidden:
        hidden_values = [v for v, h in zip(values, parts) if h]
        # total - published groups = the sum of the hidden ones: never one group alone, never small.
        assert len(hidden_values) != 1
        assert not D.is_small(sum(hidden_values), THRESHOLD)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=25), st.integers(0, 30), st.data())
def test_published_cumulative_points_leave_no_small_gap(drops, extra, data):
    total = sum(drops) + extra
    assume(not D.is_small(total, THRESHOLD))  # a small total is never shown at all (coarsen_cdf drops it)
    at_least = total - np.cumsum(drops)  # falling counts, as x rises
    pinned = data.draw(st.lists(st.booleans(), min_size=len(drops), max_size=len(drops)))
    keep = D.publishable_cumulative(at_least, total, threshold=THRESHOLD, pinned=pinned)
    points = [total, *at_least[keep].tolist(), 0]
    assert not any(D.is_small(p, THRESHOLD) or D.is_small(total - p, THRESHOLD) for p in points)
    assert not any(D.is_small(a - b, THRESHOLD) for a, b in itertools.pairwise(points))
    for i in np.flatnonzero(pinned):  # a pinned point is published whenever its own counts allow
        if not D.is_small(at_least[i], THRESHOLD) and not D.is_small(total - at_least[i], THRESHOLD):
            assert keep[i] or any(pinned[i + 1:])


# Release of episodes and the complementary rule across filters (security issue, findings 1 and 2) ---------


def _episodes(rows):
    return pd.DataFrame(rows, columns=["series_id", "patient_id", "series_number", "first_infusion",
                                       "last_infusion"]).astype({"first_infusion": "datetime64[ns]",
                                                                 "last_infusion": "datetime64[ns]"})


def test_release_delay_is_keyed_spread_and_below_a_year():
    delays = [disclosure.release_delay("s" * 64, f"P{i}") for i in range(2000)]
    assert min(delays) >= 0 and max(delays) <= disclosure.RELEASE_DELAY_DAYS - 1 == 364
    assert len(set(delays)) > 300                                     # spread over the year
    assert disclosure.release_delay("another", "P1") != disclosure.release_delay("s" * 64, "P1") or \
        disclosure.release_delay("another", "P2") != disclosure.release_delay("s" * 64, "P2")


def test_an_episode_is_released_whole_and_only_after_its_follow_up_and_delay():
    from outcomes.settings import DEFAULT_WINDOWS

    secret = "k" * 64
    r = disclosure.release_delay(secret, "P1")
    eps = _episodes([(1, "P1", 1, "2023-01-02", "2023-01-06"), (2, "P1", 2, "2023-05-01", "2023-05-05")])
    days = ["2022-12-01", "2022-12-20", "2023-01-10", "2023-04-30", "2023-05-20", "2024-06-01"]
    scores = pd.DataFrame({"patient_id": "P1", "assessed_on": pd.to_datetime(days), "t_score": 60.0})
    opens = pd.Timestamp("2023-01-06") + pd.Timedelta(days=224 + r)
    args = dict(secret=secret, windows=DEFAULT_WINDOWS, baseline_days=30)
    none, _ = disclosure.released(eps, scores, cut=opens - pd.Timedelta(days=1), **args)
    assert none.empty
    one, held = disclosure.released(eps, scores, cut=opens, **args)
    # Episode 1 ends the day before episode 2 (which started within its follow-up); its scores from 30 days
    # before its first infusion: not 2022-12-01, nor anything after 2023-04-30.
    assert one["series_id"].tolist() == [1] and one["follow_up_end"].tolist() == [pd.Timestamp("2023-04-30")]
    assert held["assessed_on"].dt.strftime("%Y-%m-%d").tolist() == ["2022-12-20", "2023-01-10", "2023-04-30"]
    both, held = disclosure.released(eps, scores, cut="2030-01-01", **args)
    assert both["series_id"].tolist() == [1, 2]
    # Episode 2's span closes 224 days after its last infusion: the 2024 score is in no released span.
    assert held["assessed_on"].max() == pd.Timestamp("2023-05-20") and held["assessed_on"].is_unique


def test_complement_problem_finds_every_small_difference_across_filters():
    owners = np.arange(40)
    diagnosis = owners < 35           # 5 patients left out by "all but one diagnosis"
    sex = owners % 2 == 0
    assert disclosure.complement_problem({"diagnosis": diagnosis}, owners) == ("diagnosis",)
    assert disclosure.complement_problem({"sex": sex}, owners) is None
    # Widening sex alone leaves 13 out, widening diagnosis alone 3 (the even ones of 35..39): refused.
    assert disclosure.complement_problem({"sex": sex, "diagnosis": diagnosis}, owners) == ("diagnosis",)
    # Rows of one patient count once as a patient, but a few left-out rows are refused too.
    repeat = np.array([0] * 30 + list(range(1, 6)))
    assert disclosure.complement_problem({"first": np.arange(35) < 30}, repeat) == ("first",)
    assert disclosure.complement_problem({}, owners) is None


@given(st.lists(st.sampled_from("ABC"), min_size=1, max_size=60), st.data())
@settings(max_examples=80, deadline=None)
def test_a_shown_view_never_differs_from_a_wider_one_by_a_small_group(values, data):
    """Any view complement_problem allows differs from every wider view by 0 or more than 10 patients."""
    values = np.array(values)
    other = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    chosen = data.draw(st.sets(st.sampled_from("ABC"), min_size=1, max_size=3))
    filters = {"diagnosis": np.isin(values, list(chosen)), "other": other}
    owners = np.arange(len(values))
    if disclosure.complement_problem(filters, owners) is None:
        view = filters["diagnosis"] & other
        for wider in (filters["diagnosis"], other, np.ones(len(values), dtype=bool)):
            assert not 1 <= int((wider & ~view).sum()) <= 10


def test_pool_rare_counts_owners_not_rows():
    values = pd.Series(["A"] * 12 + ["B"] * 12)
    owners = pd.Series(list(range(12)) + [100] * 12)     # B: one patient with twelve episodes
    assert disclosure.pool_rare(values, owners, 10).tolist() == ["A"] * 12 + ["Other (pooled)"] * 12
