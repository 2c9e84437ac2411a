"""Diagnosis codes (security issue, finding 2): the clinic's coded list (migration 0007_diagnosis_codes), the
storage and clinic API the enrolment form, corrections and imports use, and the administrators' page.

The free-text diagnosis stays the clinician's note; cohort filters and de-identified output use the code.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from outcomes import auth, clinic, reports, storage
from outcomes.errors import NotFound, PermissionDenied, ValidationError
from outcomes.settings import load_settings
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse)
from tests.page_helpers import seen

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TODAY = date(2025, 6, 2)
SETTINGS = load_settings({})
PAGE = "app_pages/diagnoses.py"


def _code(db, label: str) -> int:
    codes = storage.load_diagnosis_codes(db)
    return int(codes.loc[codes["label"] == label, "code"].iloc[0])


def test_the_migration_seeds_a_starter_list_and_codes_matching_notes(db):
    codes = storage.load_diagnosis_codes(db)
    assert sorted(codes["label"]) == sorted(storage.DIAGNOSIS_SEED) and (codes["patients"] == 0).all()
    storage.add_patient(db, patient_id="P1", diagnosis="  fibromyalgia ", entered_by="x")     # case, spaces
    storage.add_patient(db, patient_id="P2", diagnosis="Fibromyalgia, call Jane Roe 555-0100", entered_by="x")
    storage.add_patient(db, patient_id="P3", entered_by="x")
    got = storage.load_patient_diagnoses(db).set_index("patient_id")
    assert got.loc["P1", "diagnosis_label"] == "Fibromyalgia"
    assert got.loc["P1", "diagnosis_code"] == _code(db, "Fibromyalgia")
    assert got.loc[["P2", "P3"], "diagnosis_label"].isna().all()   # free text is never made a code
    notes = storage.load_patients(db).set_index("patient_id")["diagnosis"]
    assert notes["P2"].startswith("Fibromyalgia, call")
    storage.retire_diagnosis_code(db, _code(db, "Headache disorder"), by="x")
    storage.add_patient(db, patient_id="P4", diagnosis="Headache disorder", entered_by="x")
    assert pd.isna(storage.load_patient_diagnoses(db).set_index("patient_id").loc["P4", "diagnosis_code"])


def test_patients_enrolled_before_the_migration_are_coded_from_exact_notes(tmp_path):
    from sqlite_utils import Database

    path = tmp_path / "old.db"
    db = Database(path)
    pending = [m for m in storage.MIGRATIONS._migrations if m.name != "0007_diagnosis_codes"]
    for migration in pending:   # the schema as it was, then patients, then 0007
        migration.fn(db)
    db.execute("INSERT INTO patients (patient_id, diagnosis, entered_by, entered_at) VALUES "
               "('A', 'Neuropathic pain', 'x', '2024-01-01'), "
               "('B', 'neuropathic pain (Jane)', 'x', '2024-01-01')")
    next(m for m in storage.MIGRATIONS._migrations if m.name == "0007_diagnosis_codes").fn(db)
    got = dict(db.execute("SELECT patient_id, diagnosis_code FROM patients").fetchall())
    [neuropathic] = db.execute("SELECT id FROM diagnosis_codes WHERE label = 'Neuropathic pain'").fetchone()
    assert got["A"] == neuropathic
    assert got["B"] is None


@pytest.mark.parametrize("label, problem", [("", "label is required"), ("   ", "label is required"),
                                            ("x" * 81, "at most 80"), ("Fibro\u200bmyalgia", "invisible"),
                                            ("FIBROMYALGIA", "already exists")])
def test_a_bad_label_is_refused_with_what_to_do(db, label, problem):
    with pytest.raises(ValidationError) as info:
        storage.add_diagnosis_code(db, label, by="x")
    assert problem in str(info.value) and "nothing was saved" in str(info.value)


def test_rename_and_retire(db):
    code = storage.add_diagnosis_code(db, "  Erythromelalgia   syndrome ", by="x")
    assert storage.load_diagnosis_codes(db).set_index("code").loc[code, "label"] == "Erythromelalgia syndrome"
    assert storage.rename_diagnosis_code(db, code, "Erythromelalgia", by="x") == "Erythromelalgia syndrome"
    with pytest.raises(ValidationError, match="already exists"):
        storage.rename_diagnosis_code(db, code, "fibromyalgia", by="x")
    assert storage.retire_diagnosis_code(db, code, by="x") == "Erythromelalgia"
    assert code not in storage.load_diagnosis_codes(db, retired=False)["code"].tolist()
    with pytest.raises(ValidationError, match="already retired"):
        storage.retire_diagnosis_code(db, code, by="x")
    storage.retire_diagnosis_code(db, code, by="x", retired=False)
    assert code in storage.load_diagnosis_codes(db, retired=False)["code"].tolist()
    with pytest.raises(NotFound, match="reload the list"):
        storage.rename_diagnosis_code(db, 999, "x", by="x")
    with pytest.raises(Exception, match="retire a code instead"):
        db.execute("DELETE FROM diagnosis_codes WHERE id = ?", [code])


@pytest.fixture
def world(db, fast_hasher):
    admin = auth.create_first_admin(db, "ada.admin", "a long test password", now=NOW)
    users = {"admin": admin}
    for name, role in (("cleo.clinician", "clinician"), ("quinn.qi", "qi")):
        users[role] = auth.create_user(db, admin, username=name, role=role, password="a long test password",
                                       now=NOW)
    return db, users


def test_enrolment_takes_a_code_and_keeps_the_note(world):
    db, users = world
    crps = _code(db, "Complex regional pain syndrome")
    clinic.enrol_patient(db, users["clinician"], patient_id="P1", diagnosis="CRPS right foot after fracture",
                         diagnosis_code=crps, today=TODAY, now=NOW, settings=SETTINGS)
    # A note that reads as another code's label: the code chosen on the form wins.
    clinic.enrol_patient(db, users["clinician"], patient_id="P2", diagnosis="Fibromyalgia",
                         diagnosis_code=crps, today=TODAY, now=NOW, settings=SETTINGS)
    got = storage.load_patient_diagnoses(db).set_index("patient_id")["diagnosis_label"]
    assert got.to_dict() == {"P1": "Complex regional pain syndrome", "P2": "Complex regional pain syndrome"}
    notes = storage.load_patients(db).set_index("patient_id")["diagnosis"]
    assert notes["P1"] == "CRPS right foot after fracture"
    retired = _code(db, "Headache disorder")
    storage.retire_diagnosis_code(db, retired, by="x")
    with pytest.raises(ValidationError, match="is retired"):
        clinic.enrol_patient(db, users["clinician"], patient_id="P3", diagnosis_code=retired, today=TODAY,
                             now=NOW, settings=SETTINGS)
    assert "P3" not in storage.load_patients(db)["patient_id"].tolist()   # nothing of the enrolment was kept


def test_a_clinician_corrects_the_code_with_a_reason_in_the_trail(world):
    db, users = world
    clinic.enrol_patient(db, users["clinician"], patient_id="P1", diagnosis="Fibromyalgia", today=TODAY,
                         now=NOW, settings=SETTINGS)
    neuro = _code(db, "Neuropathic pain")
    with pytest.raises(ValidationError, match="reason is required"):
        clinic.set_diagnosis_code(db, users["clinician"], patient_id="P1", code=neuro, reason=" ")
    assert clinic.set_diagnosis_code(db, users["clinician"], patient_id="P1", code=neuro,
                                     reason="neuropathic on review") == "Neuropathic pain"
    change = storage.load_record_changes(db, "P1").iloc[-1]
    assert (change["action"], change["before"], change["after"]) == (
        "correct", {"diagnosis_code": "Fibromyalgia"}, {"diagnosis_code": "Neuropathic pain"})
    with pytest.raises(ValidationError, match="nothing was changed"):
        clinic.set_diagnosis_code(db, users["clinician"], patient_id="P1", code=neuro, reason="again")
    clinic.set_diagnosis_code(db, users["clinician"], patient_id="P1", code=None, reason="not sure yet")
    assert pd.isna(storage.load_patient_diagnoses(db)["diagnosis_code"].iloc[0])
    entry = storage.load_audit_log(db, action="correct_record").iloc[0]
    assert json.loads(entry["details"])["fields"] == ["diagnosis_code"] and entry["patient_id"] == "P1"


@pytest.mark.parametrize("role", ["clinician", "qi"])
def test_only_administrators_change_the_list(world, role):
    db, users = world
    calls = [lambda: clinic.add_diagnosis_code(db, users[role], label="Erythromelalgia"),
             lambda: clinic.rename_diagnosis_code(db, users[role], code=1, label="x"),
             lambda: clinic.retire_diagnosis_code(db, users[role], code=1),
             lambda: clinic.diagnosis_notes(db, users[role]),
             lambda: clinic.code_patients_by_note(db, users[role], note="x", code=1, reason="x")]
    for call in calls:
        with pytest.raises(PermissionDenied):
            call()
    assert len(storage.load_audit_log(db, action="access_denied")) == len(calls)
    if role == "qi":  # QI never reads the list with its patient counts, nor sets a patient's code
        with pytest.raises(PermissionDenied):
            clinic.diagnosis_codes(db, users["qi"])
        with pytest.raises(PermissionDenied):
            clinic.set_diagnosis_code(db, users["qi"], patient_id="P1", code=1, reason="x")
    else:
        assert len(clinic.diagnosis_codes(db, users[role])) == len(storage.DIAGNOSIS_SEED)


def test_administrators_change_the_list_and_every_change_is_audited(world):
    db, users = world
    admin = users["admin"]
    code = clinic.add_diagnosis_code(db, admin, label="Erythromelalgia")
    old = clinic.rename_diagnosis_code(db, admin, code=code, label="Primary erythromelalgia")
    assert old == "Erythromelalgia"
    clinic.retire_diagnosis_code(db, admin, code=code)
    clinic.retire_diagnosis_code(db, admin, code=code, retired=False)
    for pid, note in (("P1", "EM, Jane Roe"), ("P2", "em, jane roe "), ("P3", "Something else")):
        storage.add_patient(db, patient_id=pid, diagnosis=note, entered_by="x")
    notes = clinic.diagnosis_notes(db, admin)
    assert notes.set_index("note")["patients"].to_dict() == {"EM, Jane Roe": 2, "Something else": 1}
    assert clinic.code_patients_by_note(db, admin, note="EM, Jane Roe", code=code, reason="coding notes") == 2
    assert clinic.diagnosis_notes(db, admin)["note"].tolist() == ["Something else"]
    assert len(storage.load_record_changes(db, "P2")) == 1
    log = storage.load_audit_log(db, action="diagnosis_code")
    assert [json.loads(d)["change"] for d in log["details"]][::-1] == [
        "add", "rename", "retire", "restore", "code patients by note"]
    assert set(log["actor"]) == {"ada.admin"}


def test_cohort_episodes_carry_the_code_never_the_note(db):
    storage.add_patient(db, patient_id="P1", diagnosis="Fibromyalgia", entered_by="x")
    storage.add_patient(db, patient_id="P2", diagnosis="EM, call Jane Roe 555-0100", entered_by="x")
    for pid in ("P1", "P2"):
        storage.add_series(db, patient_id=pid, first_infusion="2024-01-08", last_infusion="2024-01-12",
                           infusions=5, entered_by="x", today=TODAY)
    episodes = reports.episodes(db)
    got = episodes.set_index("patient_id")["diagnosis"].to_dict()
    assert got == {"P1": "Fibromyalgia", "P2": "Not coded"}


@pytest.mark.slow
def test_the_page_adds_renames_retires_and_codes_from_notes(app_as, clinic_db):
    at = app_as("admin", PAGE)
    assert not at.exception and at.title[0].value == "Diagnosis codes"
    table = at.dataframe[0].value
    assert sorted(table["label"]) == sorted(storage.DIAGNOSIS_SEED)
    # The clinic's fixture enrolled P001 with the note "CRPS" (no code) and P002 "Fibromyalgia" (coded).
    assert table.set_index("label").loc["Fibromyalgia", "patients"] == 1

    at.text_input(key="diagnoses.new.label").input("CRPS type 1")
    at.button[0].click().run()
    assert not at.exception and seen(at, "Added “CRPS type 1”", "success")
    codes = at.dataframe[0].value.set_index("label")
    new = int(codes.loc["CRPS type 1", "code"])

    at.selectbox(key="diagnoses.rename.code").set_value(new)
    at.text_input(key="diagnoses.rename.label").input("CRPS type I").run()
    at.button(key="diagnoses.rename.go").click().run()
    assert seen(at, "Renamed “CRPS type 1” to “CRPS type I”", "success")

    at.selectbox(key="diagnoses.assign.note").set_value("CRPS")
    at.selectbox(key="diagnoses.assign.code").set_value(new).run()
    at.button(key="diagnoses.assign.go").click().run()
    assert seen(at, "Coded 1 patient(s) as “CRPS type I”", "success")
    assert seen(at, "Every patient with a diagnosis note has a code", "info")

    headache = int(at.dataframe[0].value.set_index("label").loc["Headache disorder", "code"])
    at.selectbox(key="diagnoses.retire.code").set_value(headache).run()
    at.button(key="diagnoses.retire.go").click().run()
    assert seen(at, "Retired “Headache disorder”", "success")
    assert at.dataframe[0].value.set_index("label").loc["Headache disorder", "status"] == "retired"

    at.text_input(key="diagnoses.new.label").input("crps TYPE i")
    at.button[0].click().run()
    assert at.error and "already exists" in at.error[0].value
    db = clinic_db.open()
    coded = storage.load_patient_diagnoses(db).set_index("patient_id")["diagnosis_label"]
    assert coded["P001"] == "CRPS type I"
    assert len(storage.load_audit_log(db, action="diagnosis_code")) == 4
