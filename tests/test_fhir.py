"""FHIR R4 export (outcomes/fhir.py): validated against the R4 (4.0.1) structure with fhir.resources 6.4.

fhir.resources 6.5 and later default to R4B (4.3.0) or R5; 6.4.0 is the last release whose default
models are FHIR R4 4.0.1 (``fhir.resources.__fhir_version__``), hence the pin in requirements-dev.txt.
The models check structure, cardinality and data types, not terminology bindings, so the codes
(status, category, LOINC, UCUM) are asserted here directly.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from outcomes import exports, fhir, storage
from outcomes.instruments import default_registry
from outcomes.settings import load_settings
from tests.export_helpers import END, NOW, PLANT, PLANT_DAYS, SECRET

fhir_resources = pytest.importorskip("fhir.resources")
from fhir.resources.bundle import Bundle  # noqa: E402
from fhir.resources.observation import Observation  # noqa: E402

SETTINGS = load_settings({})
REGISTRY = default_registry()
VOIDED_ON = PLANT["first_infusion"] + timedelta(days=60)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    db = storage.connect(tmp_path_factory.mktemp("fhir") / "fhir.db")
    storage.set_meta(db, "secret", SECRET)
    storage.add_patient(db, patient_id=PLANT["patient_id"], sex="F", birth_year=1970, entered_by="x",
                        today=END)
    storage.add_series(db, patient_id=PLANT["patient_id"], first_infusion=PLANT["first_infusion"],
                       last_infusion=PLANT["last_infusion"], infusions=5, entered_by="x", today=END)
    # Earlier series that are no first infusion: a plan called off, a plan never given, one voided.
    pid, first = PLANT["patient_id"], PLANT["first_infusion"]
    cancelled = storage.plan_series(db, patient_id=pid, first_infusion=first - timedelta(days=7),
                                    planned_infusions=5, entered_by="x", today=END)
    storage.cancel_series(db, cancelled, reason="rescheduled", by="x")
    storage.plan_series(db, patient_id=pid, first_infusion=first - timedelta(days=20), planned_infusions=5,
                        entered_by="x", today=END)
    voided = storage.add_series(db, patient_id=pid, first_infusion=first - timedelta(days=30),
                                last_infusion=first - timedelta(days=30), infusions=1, entered_by="x",
                                today=END)
    storage.void_record(db, "series", voided, reason="another patient's series", by="x")
    forms = {"pain_interference": "pain_interference_sf6a_v1.0", "depression": "depression_sf8a_v1.0",
             "physical_function": "physical_function_sf4a_v1.0"}  # PF v1.0 4a: no verified LOINC
    for i, day in enumerate(PLANT_DAYS):
        storage.save_checkin(db, patient_id=PLANT["patient_id"],
                             assessed_on=PLANT["first_infusion"] + timedelta(days=day), source="patient",
                             entered_by="x", today=END,
                             scores=[{"domain": d, "t_score": 60.0 - i, "se": 2.0, "method": "table",
                                      "form": f} for d, f in forms.items()])
    typo = storage.save_assessment(db, patient_id=PLANT["patient_id"], assessed_on="2023-06-01",
                                   domain="depression", t_score=50.5, method="imported", source="import",
                                   entered_by="x", today=END)
    storage.correct_record(db, "assessment", typo, changes={"t_score": 55.5}, reason="typo", by="x",
                           today=END)
    wrong = storage.save_assessment(db, patient_id=PLANT["patient_id"], assessed_on=VOIDED_ON,
                                    domain="depression", t_score=44.4, method="imported", source="import",
                                    entered_by="x", today=END)
    storage.void_record(db, "assessment", wrong, reason="another patient's score", by="x")
    storage.add_patient(db, patient_id="NO-SERIES", entered_by="x", today=END)
    plan = storage.plan_series(db, patient_id="NO-SERIES", first_infusion="2023-12-01", planned_infusions=3,
                               entered_by="x", today=END)
    storage.cancel_series(db, plan, reason="declined", by="x")  # still no first infusion: no day 0
    storage.save_assessment(db, patient_id="NO-SERIES", assessed_on="2024-01-01", domain="physical_function",
                            t_score=41.0, form="physical_function_sf6b_v1.2", method="table",
                            source="patient", entered_by="x", today=END)
    yield exports.load_source(db)
    db.close()


def build(source, deidentified=True, as_of=END):
    return exports.build(source, "fhir", "json", deidentified=deidentified, as_of=as_of, settings=SETTINGS,
                         generated_at=NOW)


def observations(file):
    return [e["resource"] for e in json.loads(file.data)["entry"]]


def test_the_validator_is_fhir_r4_and_it_rejects_a_broken_observation():
    assert fhir_resources.__fhir_version__ == "4.0.1"
    with pytest.raises(ValueError):
        Observation.parse_obj({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                               "valueQuantity": {"value": "not a number"}})
    with pytest.raises(ValueError):
        Observation.parse_obj({"resourceType": "Observation", "status": "final"})  # code is required


@pytest.mark.parametrize("deidentified", [True, False])
def test_the_bundle_validates_against_fhir_r4(source, deidentified):
    file = build(source, deidentified)
    bundle = Bundle.parse_raw(file.data)
    assert bundle.type == "collection" and len(bundle.entry) == file.rows
    for entry in bundle.entry:
        assert isinstance(entry.resource, Observation)
        assert entry.fullUrl == f"urn:uuid:{entry.resource.id}"
    assert file.filename.endswith(".json") and file.mime == "application/fhir+json"


def test_one_observation_per_score_with_loinc_survey_category_and_score_unit(source):
    obs = observations(build(source))
    assert len(obs) == 3 * len(PLANT_DAYS) + 1            # the patient without a series is left out
    for o in obs:
        assert o["status"] == "final"
        assert o["category"] == [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                              "code": "survey", "display": "Survey"}]}]
        assert o["valueQuantity"]["unit"] == "{score}" and o["valueQuantity"]["code"] == "{score}"
        assert o["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    by_method = {o.get("method", {}).get("text"): o["code"] for o in obs}
    assert by_method["PROMIS SF v1.0 Pain Interference 6a"]["coding"] == [
        {"system": "http://loinc.org", "code": "77865-4",
         "display": "PROMIS pain interference - version 1.0 Tscore"}]
    assert by_method["PROMIS SF v1.0 Depression 8a"]["coding"][0]["code"] == "77861-3"
    # No verified LOINC: code.text only, never an invented code.
    assert by_method["PROMIS SF v1.0 Physical Function 4a"] == {"text": "PROMIS Physical Function T-score"}
    assert by_method[None] == {"text": "PROMIS Depression T-score"}   # imported without its form


def test_every_form_with_a_loinc_codes_its_observations_with_it():
    for form in REGISTRY.forms:
        o = fhir.observation(resource_id="x", domain_label="D", t_score=50, loinc=form.loinc,
                             loinc_display=form.loinc_display, form_title=form.title, subject_system="s", subject="p",
                             effective=date(2025, 1, 1))
        Observation.parse_obj(o)
        assert ("coding" in o["code"]) == (form.loinc is not None)
        if form.loinc:
            assert o["code"]["coding"][0].get("display") == form.loinc_display


def test_deidentified_observations_carry_the_pseudonym_and_a_day_not_a_date(source):
    file = build(source)
    text = file.data.decode()
    assert PLANT["patient_id"] not in text and "NO-SERIES" not in text and "effectiveDateTime" not in text
    first = PLANT["first_infusion"]
    for day in PLANT_DAYS:
        assert (first + timedelta(days=day)).isoformat() not in text
    obs = observations(file)
    subjects = {o["subject"]["identifier"]["value"] for o in obs}
    assert subjects == {exports.pseudonym(SECRET, PLANT["patient_id"])}
    assert {o["subject"]["identifier"]["system"] for o in obs} == {fhir.PSEUDONYM_SYSTEM}
    days = sorted({o["extension"][0]["valueInteger"] for o in obs})
    assert days == sorted({*PLANT_DAYS, (date(2023, 6, 1) - first).days})
    # Scores outside a released episode (the patient with no series among them) are not Observations.
    assert any(n.startswith("Data through the end of 2024: only episodes whose follow-up had closed")
               for n in file.notes)
    assert file.filename == "outcomes-fhir-deidentified-2024.json"
    assert any("carry no LOINC code" in n and n.startswith(f"{len(PLANT_DAYS) + 1} ") for n in file.notes)


def test_identified_observations_carry_the_patient_id_and_the_date(source):
    obs = observations(build(source, deidentified=False))
    assert len(obs) == 3 * len(PLANT_DAYS) + 2
    mine = [o for o in obs if o["subject"]["identifier"]["value"] == PLANT["patient_id"]]
    dates = sorted({o["effectiveDateTime"] for o in mine})
    expected = [(PLANT["first_infusion"] + timedelta(days=d)).isoformat() for d in PLANT_DAYS]
    assert dates[:len(PLANT_DAYS)] == expected
    assert all("extension" not in o for o in obs)


def test_the_bundle_follows_the_corrected_record(source):
    # A replaced and a voided score are not Observations; the corrected score is one, with its new value.
    mine = [o for o in observations(build(source, deidentified=False))
            if o["subject"]["identifier"]["value"] == PLANT["patient_id"] and o["code"]["text"].endswith(
                "Depression T-score")]
    values = {o["effectiveDateTime"]: o["valueQuantity"]["value"] for o in mine}
    assert len(mine) == len(values) == len(PLANT_DAYS) + 1 and values["2023-06-01"] == 55.5
    assert VOIDED_ON.isoformat() not in values and 44.4 not in values.values() and 50.5 not in values.values()
    # Day 0 is the first infusion given: not the cancelled plan, the plan never given or the voided series
    # before it; a patient with only a cancelled plan has no day 0 and is left out.
    obs = observations(build(source))
    assert min(o["extension"][0]["valueInteger"] for o in obs) == min(PLANT_DAYS)
    subjects = {o["subject"]["identifier"]["value"] for o in obs}
    assert subjects == {exports.pseudonym(SECRET, PLANT["patient_id"])}


def test_resource_ids_are_stable_keyed_and_reveal_no_row_numbers(source):
    ids = [o["id"] for o in observations(build(source))]
    assert ids == [o["id"] for o in observations(build(source))]          # a re-export gives the same ids
    assert len(set(ids)) == len(ids)
    other = exports.Source(source.patients, source.series, source.assessments, "another secret")
    assert not set(ids) & {o["id"] for o in observations(build(other))}


def test_resource_ids_have_a_key_of_their_own_not_the_pseudonym_secret(source):
    """Security issue (suspected, proved): the ids were HMAC(secret, "observation:<id>"), the pseudonyms
    HMAC(secret, patient ID): one key for both, so a patient whose ID read "observation:7" had a pseudonym
    equal to the start of an Observation's id."""
    import hashlib
    import hmac
    import uuid

    def with_secret_itself(assessment_id):
        digest = hmac.new(SECRET.encode(), f"observation:{assessment_id}".encode(), hashlib.sha256).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    ids = {o["id"] for o in observations(build(source, deidentified=False))}
    assert not ids & {with_secret_itself(a) for a in source.assessments["assessment_id"]}


def test_scores_after_the_data_cut_are_left_out(source):
    cut = PLANT["first_infusion"] + timedelta(days=4)
    obs = observations(build(source, deidentified=False, as_of=cut))
    assert max(o["effectiveDateTime"] for o in obs) == cut.isoformat()


def test_preview_is_a_flat_table(source):
    table = build(source).tables["observations"]
    assert table.columns.tolist() == ["subject", "loinc", "code", "value", "method", "effective", "day"]
    assert isinstance(table, pd.DataFrame) and len(table) == 3 * len(PLANT_DAYS) + 1
