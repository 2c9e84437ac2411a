"""PROMIS-29 physical and mental health summary scores (outcomes/summary_scores.py, docs/methods.md)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import pytest

from outcomes.errors import InstrumentDefinitionError, MissingColumns, ValidationError
from outcomes.summary_scores import load_summary_weights, summary_scores

DAY = pd.Timestamp("2025-01-06")
DOMAINS = ["physical_function", "pain_interference", "ability_to_participate", "fatigue", "anxiety",
           "depression", "sleep_disturbance"]
MEANS = dict.fromkeys(DOMAINS, 50.0)


def frames(t_scores: dict[str, float], pain: float | None, *, patient="P1", day=DAY):
    scores = pd.DataFrame({"patient_id": patient, "assessed_on": day, "domain": list(t_scores),
                           "t_score": list(t_scores.values())})
    intensity = pd.DataFrame({"patient_id": [patient] * (pain is not None), "assessed_on": [day] * (pain is not None),
                              "value": [pain] * (pain is not None)})
    return scores, intensity


def by_hand_round(x: float) -> float:
    return float(Decimal(repr(x)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def test_a_person_at_every_population_mean_scores_50_50():
    out = summary_scores(*frames(MEANS, 2.31))
    assert out.columns.tolist() == ["patient_id", "assessed_on", "physical_health_t", "mental_health_t", "missing"]
    assert out[["patient_id", "physical_health_t", "mental_health_t", "missing"]].to_dict("records") == [
        {"patient_id": "P1", "physical_health_t": 50.0, "mental_health_t": 50.0, "missing": ""}]
    assert out.loc[0, "assessed_on"] == DAY


def test_a_worked_example_matches_the_formula_by_hand():
    t = {"physical_function": 38.2, "pain_interference": 64.1, "ability_to_participate": 43.8, "fatigue": 61.0,
         "anxiety": 57.3, "depression": 55.1, "sleep_disturbance": 58.9}
    pain = 7
    # Hays et al. 2018 weights, written out here (not read from the module or its CSV).
    pf = (38.2 - 50) / 10
    pain_composite = ((64.1 - 50) / 10 + (7 - 2.31) / 2.34) / 2
    social = (43.8 - 50) / 10
    fatigue = (61.0 - 50) / 10
    emotional = ((57.3 - 50) / 10 + (55.1 - 50) / 10) / 2
    sleep = (58.9 - 50) / 10
    phs = 50 + 10 * (0.872 * pf - 0.094 * pain_composite + 0.113 * social - 0.009 * fatigue
                     + 0.003 * emotional + 0.002 * sleep)
    mhs = 50 + 10 * (-0.015 * pf - 0.154 * pain_composite + 0.252 * social - 0.351 * fatigue
                     - 0.257 * emotional - 0.139 * sleep)
    # phs = 37.342..., mhs = 39.294...: neither is near a rounding boundary.
    assert (by_hand_round(phs), by_hand_round(mhs)) == (37.3, 39.3)
    out = summary_scores(*frames(t, pain))
    assert out.loc[0, "physical_health_t"] == pytest.approx(by_hand_round(phs), abs=1e-9)
    assert out.loc[0, "mental_health_t"] == pytest.approx(by_hand_round(mhs), abs=1e-9)
    assert out.loc[0, "missing"] == ""


@pytest.mark.parametrize("absent", [*DOMAINS, "pain_intensity"])
def test_any_single_missing_input_gives_no_score_and_is_named(absent):
    t = {d: v for d, v in MEANS.items() if d != absent}
    out = summary_scores(*frames(t, None if absent == "pain_intensity" else 2.31))
    assert len(out) == 1
    assert math.isnan(out.loc[0, "physical_health_t"]) and math.isnan(out.loc[0, "mental_health_t"])
    assert out.loc[0, "missing"] == absent


def test_a_nan_t_score_counts_as_missing_and_no_pain_frame_means_pain_missing():
    t = dict(MEANS, anxiety=float("nan"))
    scores, _ = frames(t, None)
    out = summary_scores(scores)
    assert out.loc[0, "missing"] == "anxiety, pain_intensity"
    assert math.isnan(out.loc[0, "physical_health_t"])


def test_several_missing_inputs_are_all_named_in_a_fixed_order():
    t = {"physical_function": 45.0, "sleep_disturbance": 55.0}
    out = summary_scores(*frames(t, None))
    assert out.loc[0, "missing"] == ("pain_interference, ability_to_participate, fatigue, anxiety, depression, "
                                     "pain_intensity")


def test_days_are_kept_apart():
    day2 = DAY + pd.Timedelta(days=7)
    s1, p1 = frames(MEANS, 2.31)
    s2, _ = frames({d: 60.0 for d in DOMAINS if d != "fatigue"}, None, day=day2)
    # The second day's pain answer is on the first day only: it must not fill day 2.
    out = summary_scores(pd.concat([s1, s2]), p1)
    assert out["assessed_on"].tolist() == [DAY, day2]
    assert out.loc[0, ["physical_health_t", "mental_health_t"]].tolist() == [50.0, 50.0]
    assert out.loc[0, "missing"] == ""
    assert math.isnan(out.loc[1, "physical_health_t"]) and math.isnan(out.loc[1, "mental_health_t"])
    assert out.loc[1, "missing"] == "fatigue, pain_intensity"


def test_times_of_day_fall_on_their_day_and_patients_are_kept_apart():
    s1, p1 = frames(MEANS, 2.31)
    s1["assessed_on"] = pd.Timestamp("2025-01-06 09:30")
    s2, p2 = frames(MEANS, 2.31, patient="P2")
    out = summary_scores(pd.concat([s1, s2]), pd.concat([p1, p2]))
    assert out["patient_id"].tolist() == ["P1", "P2"]
    assert out["physical_health_t"].tolist() == [50.0, 50.0]


def test_a_day_without_any_input_gives_no_row_and_other_domains_are_ignored():
    scores = pd.DataFrame({"patient_id": ["P1"], "assessed_on": [DAY], "domain": ["global_health"],
                           "t_score": [40.0]})
    assert summary_scores(scores).empty
    assert summary_scores(scores).columns.tolist() == ["patient_id", "assessed_on", "physical_health_t",
                                                       "mental_health_t", "missing"]


def test_only_pain_intensity_on_a_day_names_the_seven_domains():
    scores, pain = frames({}, 5)
    out = summary_scores(scores, pain)
    assert out.loc[0, "missing"] == ", ".join(DOMAINS)


@pytest.mark.parametrize("value", [-1, 10.5, 11])
def test_pain_intensity_outside_0_to_10_is_rejected(value):
    with pytest.raises(ValidationError, match="outside 0-10"):
        summary_scores(*frames(MEANS, value))


@pytest.mark.parametrize("value", [0, 10])
def test_pain_intensity_at_the_ends_of_the_scale_is_accepted(value):
    assert summary_scores(*frames(MEANS, value)).loc[0, "missing"] == ""


def test_missing_columns_and_unreadable_values_say_how_to_fix():
    scores, pain = frames(MEANS, 2.31)
    with pytest.raises(MissingColumns, match="lacks column\\(s\\) t_score.*needs patient_id, assessed_on"):
        summary_scores(scores.drop(columns="t_score"), pain)
    with pytest.raises(MissingColumns, match="pain_intensity frame lacks column\\(s\\) value"):
        summary_scores(scores, pain.rename(columns={"value": "score"}))
    with pytest.raises(ValidationError, match="not numbers"):
        summary_scores(scores.assign(t_score="high"), pain)
    with pytest.raises(ValidationError, match="not a date"):
        summary_scores(scores.assign(assessed_on="soon"), pain)


def test_two_different_values_for_one_patient_day_and_domain_are_rejected():
    scores, pain = frames(MEANS, 2.31)
    twice = pd.concat([scores, scores.head(1).assign(t_score=41.0)])
    with pytest.raises(ValidationError, match="more than one value"):
        summary_scores(twice, pain)
    # An exact repeat is harmless.
    assert summary_scores(pd.concat([scores, scores.head(1)]), pain).loc[0, "physical_health_t"] == 50.0


def test_the_shipped_weights_are_the_published_ones():
    w = load_summary_weights()
    assert dict(w.physical) == {"physical_function": 0.872, "pain_composite": -0.094, "ability_to_participate": 0.113,
                                "fatigue": -0.009, "emotional_distress_composite": 0.003, "sleep_disturbance": 0.002}
    assert dict(w.mental) == {"physical_function": -0.015, "pain_composite": -0.154, "ability_to_participate": 0.252,
                              "fatigue": -0.351, "emotional_distress_composite": -0.257, "sleep_disturbance": -0.139}


GOOD = """component,definition,weight_physical_health,weight_mental_health
physical_function,z = (PF T - 50)/10,0.872,-0.015
pain_composite,"z = mean of (PI T - 50)/10 and (Global07 raw - 2.31)/2.34",-0.094,-0.154
ability_to_participate,z = (social T - 50)/10,0.113,0.252
fatigue,z = (fatigue T - 50)/10,-0.009,-0.351
emotional_distress_composite,"z = mean of (anxiety T - 50)/10 and (depression T - 50)/10",0.003,-0.257
sleep_disturbance,z = (sleep T - 50)/10,0.002,-0.139
"""


def test_a_copy_of_the_shipped_file_loads_and_can_be_passed_in(tmp_path):
    path = tmp_path / "weights.csv"
    path.write_text(GOOD, encoding="utf-8")
    loaded, shipped = load_summary_weights(path), load_summary_weights()
    assert (dict(loaded.physical), dict(loaded.mental)) == (dict(shipped.physical), dict(shipped.mental))
    assert summary_scores(*frames(MEANS, 2.31), weights=path).loc[0, "mental_health_t"] == 50.0


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("-0.009,-0.351", "x,-0.351"), r"weights\.csv line 5: weight_physical_health 'x' is not a number"),
    (GOOD.replace("0.113,0.252", "0.113,"), r"weights\.csv line 4: weight_mental_health '' is not a number"),
    (GOOD.replace("sleep_disturbance,", "sleep,"), r"weights\.csv line 7: unknown component 'sleep'"),
    (GOOD.replace("fatigue,z = (fatigue", "physical_function,z = (fatigue"),
     r"weights\.csv line 5: component physical_function appears twice"),
    (GOOD.replace("weight_mental_health", "weight_mental"), r"weights\.csv line 1: missing column\(s\) weight_mental_health"),
    (GOOD.replace('"z = mean of (anxiety T - 50)/10 and (depression T - 50)/10"',
                  "z = mean of (anxiety T - 50)/10, (depression T - 50)/10"), r"weights\.csv line 6: more fields"),
    ("\n".join(GOOD.splitlines()[:-1]) + "\n", r"weights\.csv: no row for component\(s\) sleep_disturbance"),
])
def test_a_malformed_weights_file_is_rejected_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "weights.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InstrumentDefinitionError, match=message):
        load_summary_weights(path)
    with pytest.raises(InstrumentDefinitionError, match=message):
        summary_scores(*frames(MEANS, 2.31), weights=path)


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(InstrumentDefinitionError, match="nowhere.csv: file not found"):
        load_summary_weights(tmp_path / "nowhere.csv")


SHIPPED_COMPONENTS = (Path(__file__).resolve().parents[1] / "data" / "instruments"
                      / "promis29_summary_components.csv")


def test_the_components_file_says_what_each_component_is_made_of():
    w = load_summary_weights()
    assert w.components == ("physical_function", "pain_composite", "ability_to_participate", "fatigue",
                            "emotional_distress_composite", "sleep_disturbance")
    assert w.inputs["pain_composite"] == (("pain_interference", 50.0, 10.0), ("pain_intensity", 2.31, 2.34))
    assert w.inputs["emotional_distress_composite"] == (("anxiety", 50.0, 10.0), ("depression", 50.0, 10.0))
    assert w.raw_item == "pain_intensity" and sorted(w.domains) == sorted(DOMAINS)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace(",raw_item,", ",t_score,"), "exactly one input must be the raw_item"),
    (lambda t: t.replace("fatigue,fatigue,t_score", "fatigue,fatigue,score"), "line 6: kind 'score'"),
    (lambda t: t.replace("2.31,2.34", "2.31,0"), "line 4: sd 0 must be positive"),
    (lambda t: t.replace("sleep_disturbance,sleep_disturbance", "sleep_disturbance,depression"),
     "line 9: input depression appears twice"),
    (lambda t: t + "social_health,social,t_score,50,10,x\n", "no row for component(s) social_health"),
])
def test_a_malformed_components_file_is_rejected_with_file_and_line(tmp_path, edit, message):
    path = tmp_path / "promis29_summary_components.csv"
    path.write_text(edit(SHIPPED_COMPONENTS.read_text()))
    with pytest.raises(InstrumentDefinitionError, match=re.escape(message)):
        load_summary_weights(components=path)
