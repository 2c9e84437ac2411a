"""The four PROMIS-29 domains added as data (anxiety, fatigue, sleep disturbance, ability to participate):
published vectors, and every door a score goes through (CLI, REDCap, check-in, record, cohort, exports, FHIR)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from outcomes import analysis, auth, clinic, exports, redcap, reports, storage
from outcomes.cli import main
from outcomes.instruments import default_registry
from outcomes.scoring import score_response
from outcomes.settings import load_settings

DATA = Path(__file__).parent / "data"
REGISTRY = default_registry()
NEW = ("anxiety", "fatigue", "sleep_disturbance", "ability_to_participate")
FORMS = {"anxiety": "anxiety_sf4a_v1.0", "fatigue": "fatigue_sf4a_v1.0",
         "sleep_disturbance": "sleep_disturbance_sf4a_v1.0",
         "ability_to_participate": "ability_to_participate_sf4a_v2.0"}
TODAY = date(2025, 6, 1)
NOW = datetime(2025, 6, 1, 9, tzinfo=UTC)


def _vectors(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["instrument"] in NEW]


def _responses(row: dict[str, str]) -> dict[str, int | None]:
    form = REGISTRY.form(f"{row['instrument']}_sf{row['form']}_v{row['version']}")
    return {i: int(v) if v else None for i, v in zip(form.item_ids, row["responses"].split(";"))}


@pytest.mark.parametrize("row", _vectors("promis29_test_vectors.csv"),
                         ids=lambda r: f"{r['instrument']}-{r['responses']}")
def test_published_table_points(row):
    r = score_response(f"{row['instrument']}_sf{row['form']}_v{row['version']}", _responses(row))
    assert (r.raw_score, r.t_score, r.se, r.method) == (int(row["raw_score"]), float(row["expected_t"]),
                                                          float(row["expected_se"]), "table")


@pytest.mark.parametrize("row", _vectors("promis29_pattern_vectors.csv"),
                         ids=lambda r: f"{r['instrument']}-{r['responses']}")
def test_response_pattern_scoring_with_a_missing_item(row):
    r = score_response(f"{row['instrument']}_sf{row['form']}_v{row['version']}", _responses(row))
    assert (r.t_score, r.se, r.method) == (float(row["expected_t"]), float(row["expected_se"]), "pattern")


def test_the_profiles_hold_all_seven_domains_with_their_loincs():
    for version in ("2.0", "2.1"):
        profile = REGISTRY.profile(f"promis29_v{version}")
        assert {d: profile[d].key for d in NEW} == FORMS
        assert {d: profile.loinc[d] for d in NEW} == {"anxiety": "71967-4", "fatigue": "71963-3",
                                                       "sleep_disturbance": "71955-9",
                                                       "ability_to_participate": "71957-5"}


def test_directions_and_bands_come_from_the_data():
    assert REGISTRY.domain("ability_to_participate").higher_is_worse is False
    assert REGISTRY.domain("ability_to_participate").bands.label(40.0) == "moderate"
    assert REGISTRY.domain("sleep_disturbance").bands.label(55.0) == "mild"
    # Sleep109 is reverse-keyed: "Very good" sleep is the lowest value, so the best answers give the lowest T.
    best = score_response(FORMS["sleep_disturbance"], {"Sleep109": 1, "Sleep116": 1, "Sleep20": 1, "Sleep44": 1})
    worst = score_response(FORMS["sleep_disturbance"], {"Sleep109": 5, "Sleep116": 5, "Sleep20": 5, "Sleep44": 5})
    assert best.t_score < 50 < worst.t_score


def test_the_cli_scores_a_promis29_file(tmp_path, capsys):
    rows = [{"id": "a", "form": FORMS["fatigue"], "HI7": 3, "AN3": 3, "FATEXP41": 3, "FATEXP40": 3},
            {"id": "b", "form": FORMS["anxiety"], "EDANX01": 5, "EDANX40": 5, "EDANX41": 1, "EDANX53": 1}]
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    assert main(["score", str(source), "--out", str(out)]) == 0
    scored = pd.read_csv(out).set_index("id")
    assert scored.loc["b", "t_score"] == 63.4 and scored.loc["b", "se"] == 2.6
    assert scored.loc["a", "t_score"] == score_response(FORMS["fatigue"], dict.fromkeys(
        ("HI7", "AN3", "FATEXP41", "FATEXP40"), 3)).t_score


@pytest.fixture
def clinic_users(db, fast_hasher):
    admin = auth.create_first_admin(db, "ada.admin", "a long test password", now=NOW)
    users = {"admin": admin}
    for name, role in (("cleo.clinician", "clinician"), ("quinn.qi", "qi")):
        users[role] = auth.create_user(db, admin, username=name, role=role, password="a long test password",
                                       now=NOW)
    storage.add_patient(db, patient_id="P001", entered_by="x", today=TODAY)
    storage.add_series(db, patient_id="P001", first_infusion="2025-01-06", last_infusion="2025-01-10",
                       infusions=5, entered_by="x", today=TODAY)
    return users


# A PROMIS-29 REDCap export: one field per item, named after the item IDs as REDCap's shared instrument does.
ITEMS = {d: REGISTRY.form(k).item_ids for d, k in FORMS.items()}
EXPORT = ("record_id,redcap_event_name,visit_date," + ",".join(i.lower() for ids in ITEMS.values() for i in ids)
          + "\nP001,baseline_arm_1,2025-01-06," + ",".join(["4"] * 16)
          + "\nP001,month_1_arm_1,2025-02-10," + ",".join(["2"] * 16) + "\n")


def test_a_redcap_promis29_export_is_detected_scored_and_stored(db, clinic_users):
    frame = redcap.read(EXPORT.encode())
    frame.attrs["source"] = "promis29.csv"
    mapping = redcap.detect(frame, REGISTRY)
    assert {f.form for f in mapping.forms} == set(FORMS.values())
    summary = redcap.commit(db, clinic_users["clinician"], frame, mapping, registry=REGISTRY, today=TODAY)
    assert summary.scores_added == 8
    stored = storage.load_assessments(db).set_index(["domain", "assessed_on"])["t_score"]
    for domain, key in FORMS.items():
        expected = score_response(key, dict.fromkeys(ITEMS[domain], 4)).t_score
        assert stored[(domain, pd.Timestamp("2025-01-06"))] == expected


def test_a_clinic_that_configures_promis29_asks_it_at_the_check_in(db, clinic_users):
    settings = load_settings({"OUTCOMES_CHECKIN_FORMS": ",".join(FORMS.values())})
    forms = clinic.checkin_forms(settings, REGISTRY)
    assert [f.domain for f in forms] == list(NEW)
    answers = {f.key: dict.fromkeys(f.item_ids, 3) for f in forms}
    result = clinic.submit_checkin(db, clinic_users["clinician"], patient_id="P001", answers=answers,
                                   assessed_on=TODAY, today=TODAY, now=NOW, settings=settings, registry=REGISTRY)
    assert [d.domain for d in result.domains] == list(NEW) and all(d.scored for d in result.domains)
    record = clinic.patient_record(db, clinic_users["clinician"], "P001", settings=settings)
    assert set(record.assessments["domain"]) == set(NEW)


def test_cohort_reports_exports_and_fhir_carry_the_new_domains(db, clinic_users):
    settings = load_settings({})
    for day, t in (("2025-01-06", 62.0), ("2025-01-10", 55.0)):  # fatigue falls 7 points: improved
        storage.save_assessment(db, patient_id="P001", assessed_on=day, domain="fatigue", t_score=t,
                                method="imported", source="clinician", entered_by="x")
    table = reports.responders(db, as_of=TODAY, series="first", mcid=settings.mcid, settings=settings)
    fatigue = table[(table["domain"] == "fatigue") & (table["window"] == "end_of_series")].iloc[0]
    assert (fatigue["n_observed"], fatigue["n_improved"]) == (1, 1)
    assert "anxiety" not in set(table["domain"])  # neither asked nor measured: no empty rows
    source = exports.load_source(db)
    tables = exports.build(source, "dataset", "csv", deidentified=False, as_of=TODAY, settings=settings,
                           generated_at=NOW).tables
    assert set(tables["scores"]["domain"]) == {"fatigue"}
    bundle = json.loads(exports.build(source, "fhir", "json", deidentified=False, as_of=TODAY, settings=settings,
                                      generated_at=NOW).data)
    codes = {e["resource"]["code"]["text"] for e in bundle["entry"]}
    assert codes == {"PROMIS Fatigue T-score"}
    assert analysis.is_improved(-7.0, "fatigue", settings.mcid["fatigue"], settings.domains)
