"""The vectorised baseline rule of ``outcomes.clinic`` (check-in message, patient record, roster) against a
row-by-row statement of the rule (docs/methods.md §2): issue 6 replaced pandas merges by binary search."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcomes.clinic import _baselines

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
    got = _baselines(targets, candidates, series, days)
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
    got = _baselines(frames["targets"], frames["candidates"], frames["series"], 30)
    assert len(got) == len(frames["targets"])
    if empty == "series":  # no series: the first score is the baseline
        assert got["baseline_t"].tolist() == [60.0] and got["baseline_series"].isna().all()
    elif empty == "candidates":
        assert got["baseline_t"].isna().all()
