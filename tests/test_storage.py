"""Storage: schema and migrations, validation messages, atomic writes, supersede, audit log, reads."""

from __future__ import annotations

import math
import sqlite3
from datetime import date, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcomes import storage
from outcomes.errors import DuplicateRecord, NotFound, StorageUnavailable, ValidationError
from outcomes.domains import load_domains

DOMAINS = ("pain_interference", "depression", "physical_function")  # the domains these tests write

TODAY = date(2025, 6, 1)
FORMS = {"pain_interference": "pain_interference_sf6a_v1.0", "depression": "depression_sf6a_v1.0",
         "physical_function": "physical_function_sf6b_v1.2"}


def enrol(db, patient_id="P001", **kw):
    storage.add_patient(db, patient_id=patient_id, entered_by="dr.lee", **kw)
    return storage.add_series(db, patient_id=patient_id, first_infusion="2025-01-06", last_infusion="2025-01-10",
                              infusions=5, dose_mg_per_kg=0.5, entered_by="dr.lee")


def score(db, t=60.0, *, domain="depression", on="2025-02-01", patient_id="P001", **kw):
    kw.setdefault("method", "imported")
    kw.setdefault("source", "clinician")
    return storage.save_assessment(db, patient_id=patient_id, assessed_on=on, domain=domain, t_score=t,
                                   entered_by="dr.lee", **kw)


# Connections and migrations


def test_migrations_are_idempotent(db_path):
    with storage.connect(db_path) as db:
        schema = db.conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        secret = storage.get_meta(db, "secret")
        storage.migrate(db)
        storage.migrate(db)
        assert db.conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
        assert storage.get_meta(db, "secret") == secret
        assert [m.name for m in storage.MIGRATIONS.applied(db)] == ["0001_initial_schema",
                                                                      "0002_accounts_checkins_alerts",
                                                                      "0003_cohort_read_index",
                                                                      "0004_clinic_record",
                                                                      "0005_account_hardening",
                                                                      "0006_audit_hardening",
                                                                      "0007_diagnosis_codes",
                                                                      "0008_domains_as_data",
                                                                      "0009_followup"]
        assert storage.database_summary(db)["schema_version"] == 9


def test_every_database_gets_its_own_secret(tmp_path):
    secrets = set()
    for i in range(2):
        with storage.connect(tmp_path / f"{i}.db") as db:
            secrets.add(storage.get_meta(db, "secret"))
    assert len(secrets) == 2 and all(len(s) == 64 for s in secrets)


def test_connections_use_wal_busy_timeout_and_foreign_keys(db_path):
    with storage.open_db(db_path) as db:
        def pragma(name):
            return db.conn.execute(f"PRAGMA {name}").fetchone()[0]

        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 30000
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL


def test_connect_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "outcomes.db"
    storage.connect(path).close()
    assert path.exists()


def test_foreign_keys_are_enforced(db):
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("INSERT INTO series (patient_ref, first_infusion, last_infusion, infusions, entered_by, "
                   "entered_at) VALUES (99, '2025-01-01', '2025-01-02', 2, 'x', 'now')")


# Validation messages: one parametrized case per rule


PATIENT_ERRORS = [
    ({"patient_id": "  "}, "patient_id is required"),
    ({"patient_id": "P\u200b1"}, "control or invisible character"),
    ({"patient_id": "P" * 65}, "shorten it to at most 64"),
    ({"sex": "female"}, "unknown sex code 'female': use F, M or X"),
    ({"birth_year": 75}, "birth_year must be a four-digit year such as 1975, got 75"),
    ({"birth_year": "19a5"}, "four-digit year"),
    ({"birth_year": 2031}, "birth_year 2031 is in the future"),
    ({"birth_year": 1850}, "birth_year 1850 is before 1900"),
    ({"enrolled_on": "2025-07-01"}, "enrolled_on 2025-07-01 is in the future (today is 2025-06-01)"),
    ({"enrolled_on": "01/02/2024"}, "enrolled_on must be a date written YYYY-MM-DD"),
    ({"enrolled_on": "2024-02-30"}, "enrolled_on 2024-02-30 is not a real calendar date"),
    ({"diagnosis": "x" * 201}, "diagnosis is 201 characters long"),
    ({"diagnosis": "a\x00b"}, "NUL character"),
    ({"entered_by": ""}, "entered_by must name the person"),
]


@pytest.mark.parametrize("change, message", PATIENT_ERRORS, ids=[m for _, m in PATIENT_ERRORS])
def test_add_patient_rejects(db, dump, change, message):
    before = dump(db)
    args = {"patient_id": "P001", "entered_by": "dr.lee", "today": TODAY, **change}
    with pytest.raises(ValidationError, match="Cannot add patient") as caught:
        storage.add_patient(db, **args)
    assert any(message in p for p in caught.value.problems), caught.value.problems
    assert message in str(caught.value)
    assert dump(db) == before


def test_every_problem_is_listed_at_once(db):
    with pytest.raises(ValidationError) as caught:
        storage.add_patient(db, patient_id="", sex="?", birth_year="1", enrolled_on="tomorrow", entered_by="x")
    assert len(caught.value.problems) == 4


def test_patient_codes_are_normalised(db):
    storage.add_patient(db, patient_id="  P002 ", sex=" f", birth_year="1980", entered_by="x")
    row = storage.load_patients(db).iloc[0]
    assert (row["patient_id"], row["sex"], row["birth_year"]) == ("P002", "F", 1980)


def test_duplicate_patient_id(db, dump):
    storage.add_patient(db, patient_id="P001", entered_by="x")
    before = dump(db)
    with pytest.raises(DuplicateRecord, match="Patient ID 'P001' is already enrolled; use another ID"):
        storage.add_patient(db, patient_id="P001", entered_by="x")
    assert dump(db) == before


SERIES_ERRORS = [
    ({"first_infusion": "2025-07-01", "last_infusion": "2025-07-02"}, "first_infusion 2025-07-01 is in the future"),
    ({"last_infusion": "2025-01-01"}, "last_infusion 2025-01-01 is before first_infusion 2025-01-06; swap"),
    ({"infusions": 0}, "infusions must be a whole number of at least 1, got 0"),
    ({"infusions": 2.5}, "infusions must be a whole number"),
    ({"infusions": "six"}, "infusions must be a whole number of at least 1, got 'six'"),
    ({"dose_mg_per_kg": 5}, "dose_mg_per_kg must be a number from 0.05 to 2 mg/kg, got 5"),
    ({"dose_mg_per_kg": 0.01}, "from 0.05 to 2 mg/kg"),
    ({"dose_mg_per_kg": "0,5"}, "use a decimal point, not a comma"),
    ({"dose_mg_per_kg": math.inf}, "from 0.05 to 2 mg/kg, got inf"),
    ({"first_infusion": None}, "first_infusion is required"),
]


@pytest.mark.parametrize("change, message", SERIES_ERRORS, ids=[m for _, m in SERIES_ERRORS])
def test_add_series_rejects(db, dump, change, message):
    storage.add_patient(db, patient_id="P001", entered_by="x")
    before = dump(db)
    args = {"patient_id": "P001", "first_infusion": "2025-01-06", "last_infusion": "2025-01-10", "infusions": 5,
            "entered_by": "x", "today": TODAY, **change}
    with pytest.raises(ValidationError) as caught:
        storage.add_series(db, **args)
    assert any(message in p for p in caught.value.problems), caught.value.problems
    assert dump(db) == before


def test_series_needs_a_known_patient_and_a_distinct_start(db, dump):
    with pytest.raises(NotFound, match="No patient with ID 'P404'; check the ID or add the patient first"):
        storage.add_series(db, patient_id="P404", first_infusion="2025-01-06", last_infusion="2025-01-06",
                           infusions=1, entered_by="x")
    enrol(db)
    before = dump(db)
    with pytest.raises(DuplicateRecord, match="already has a series starting 2025-01-06"):
        storage.add_series(db, patient_id="P001", first_infusion="2025-01-06", last_infusion="2025-01-07",
                           infusions=2, entered_by="x")
    assert dump(db) == before


INFUSION_ERRORS = [
    ({"infused_on": "2025-02-01"}, "infused_on 2025-02-01 is outside the series (2025-01-06 to 2025-01-10)"),
    ({"duration_min": 0}, "duration_min must be a whole number from 1 to 1440 minutes, got 0"),
    ({"dose_mg_per_kg": 3}, "dose_mg_per_kg must be a number from 0.05 to 2 mg/kg, got 3"),
    ({"adverse_events": [{"kind": "headache", "severity": "mild"}]},
     "adverse event 1: kind must be one of dissociation, nausea, blood_pressure_rise, hallucination, other"),
    ({"adverse_events": [{"kind": "nausea"}]}, "adverse event 1: severity is required"),
    ({"adverse_events": ["nausea"]}, "adverse event 1 must be a mapping with kind and severity"),
]


@pytest.mark.parametrize("change, message", INFUSION_ERRORS, ids=[m for _, m in INFUSION_ERRORS])
def test_add_infusion_rejects(db, dump, change, message):
    series_id = enrol(db)
    before = dump(db)
    args = {"series_id": series_id, "infused_on": "2025-01-07", "dose_mg_per_kg": 0.5, "duration_min": 40,
            "entered_by": "x", **change}
    with pytest.raises(ValidationError) as caught:
        storage.add_infusion(db, **args)
    assert any(message in p for p in caught.value.problems), caught.value.problems
    assert dump(db) == before


def test_infusion_needs_a_known_series_and_a_free_day(db):
    with pytest.raises(NotFound, match="No infusion series with id 7"):
        storage.add_infusion(db, series_id=7, infused_on="2025-01-07", dose_mg_per_kg=0.5, duration_min=40,
                             entered_by="x")
    series_id = enrol(db)
    events = [{"kind": "dissociation", "severity": "moderate", "notes": "settled in 10 min"},
              {"kind": "blood_pressure_rise", "severity": "mild"}]
    storage.add_infusion(db, series_id=series_id, infused_on="2025-01-07", dose_mg_per_kg=0.5, duration_min=40,
                         adverse_events=events, entered_by="x")
    with pytest.raises(DuplicateRecord, match="already has an infusion on 2025-01-07"):
        storage.add_infusion(db, series_id=series_id, infused_on="2025-01-07", dose_mg_per_kg=0.5,
                             duration_min=40, entered_by="x")
    assert storage.load_infusions(db)["n_adverse_events"].tolist() == [2]
    assert storage.load_adverse_events(db)[["kind", "severity", "notes"]].values.tolist() == [
        ["dissociation", "moderate", "settled in 10 min"], ["blood_pressure_rise", "mild", None]]


SCORE_ERRORS = [
    ({"t": 101}, "t_score must be a number from 0 to 100, got 101"),
    ({"t": -0.5}, "t_score must be a number from 0 to 100"),
    ({"t": math.nan}, "t_score is required"),
    ({"t": "high"}, "t_score must be a number from 0 to 100, got 'high'"),
    ({"t": True}, "t_score must be a number"),
    ({"se": 0}, "se must be a number above 0 and at most 50, got 0"),
    ({"domain": "mood"}, "domain must be one of " + ", ".join(load_domains()) + ", got 'mood'"),
    ({"on": "2025-06-02"}, "assessed_on 2025-06-02 is in the future (today is 2025-06-01)"),
    ({"on": "2025-6-2"}, "assessed_on must be a date written YYYY-MM-DD"),
    ({"method": "guess"}, "method must be one of table, pattern, prorated, imported, got 'guess'"),
    ({"source": "email"}, "source must be one of patient, clinician, import, got 'email'"),
    ({"form": "phq9"}, "form 'phq9' is not a form key <domain>_sf<form>_v<version> (such as the keys in forms.toml)"),
    ({"form": "pain_interference_sf6a_v1.0"}, "form pain_interference_sf6a_v1.0 does not belong to domain depression"),
    ({"method": "table"}, "form is required when method is table"),
    ({"form": "depression_sf6a_v1.0", "responses": {"EDDEP04": 2.5}}, "response to EDDEP04 must be a whole number"),
    ({"responses": {"EDDEP04": 2}}, "responses were given without the form"),
    ({"n_answered": -1}, "n_answered must be a whole number of at least 0, got -1"),
    ({"raw_score": -3}, "raw_score must be a number of at least 0, got -3"),
]


@pytest.mark.parametrize("change, message", SCORE_ERRORS, ids=[m for _, m in SCORE_ERRORS])
def test_save_assessment_rejects(db, dump, change, message):
    enrol(db)
    before = dump(db)
    with pytest.raises(ValidationError, match="Cannot save the assessment") as caught:
        score(db, today=TODAY, **change)
    assert any(message in p for p in caught.value.problems), caught.value.problems
    assert dump(db) == before


def test_assessment_needs_a_known_patient(db, dump):
    before = dump(db)
    with pytest.raises(NotFound, match="No patient with ID 'P404'"):
        score(db, patient_id="P404")
    assert dump(db) == before


def test_checkin_saves_all_domains_or_none(db, dump):
    enrol(db)
    good = [{"domain": d, "t_score": 55, "form": FORMS[d], "method": "table"} for d in DOMAINS]
    before = dump(db)
    with pytest.raises(ValidationError) as caught:
        storage.save_checkin(db, patient_id="P001", assessed_on="2030-01-01", source="patient", entered_by="P001",
                             scores=good[:2] + [{**good[2], "t_score": 120, "colour": "red"}])
    assert caught.value.problems == [
        f"assessed_on 2030-01-01 is in the future (today is {date.today()})",
        "score 3 (physical_function): unknown field(s) colour",
        "score 3 (physical_function): t_score must be a number from 0 to 100, got 120",
    ]
    assert dump(db) == before
    ids = storage.save_checkin(db, patient_id="P001", assessed_on="2025-02-01", source="patient",
                               entered_by="P001", scores=good)
    assert sorted(storage.load_assessments(db)["assessment_id"]) == ids == [1, 2, 3]


def test_checkin_rejects_repeated_and_missing_domains(db):
    enrol(db)
    twice = [{"domain": "depression", "t_score": 50, "method": "imported"}] * 2
    with pytest.raises(ValidationError, match="domain depression appears more than once"):
        storage.save_checkin(db, patient_id="P001", assessed_on="2025-02-01", source="patient", entered_by="x",
                             scores=twice)
    with pytest.raises(ValidationError, match="needs at least one domain score"):
        storage.save_checkin(db, patient_id="P001", assessed_on="2025-02-01", source="patient", entered_by="x",
                             scores=[])


def test_a_failure_midway_rolls_the_whole_write_back(db, dump, monkeypatch):
    enrol(db)
    before = dump(db)
    real, calls = storage._store_score, []

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "_store_score", fail_on_third)
    # The SQLite error reaches the caller as StorageUnavailable, which pages show (issue 7).
    with pytest.raises(StorageUnavailable) as info:
        storage.save_checkin(db, patient_id="P001", assessed_on="2025-02-01", source="patient", entered_by="x",
                             scores=[{"domain": d, "t_score": 50, "method": "imported"} for d in DOMAINS])
    assert isinstance(info.value.__cause__, sqlite3.OperationalError) and info.value.reason == "unreachable"
    assert dump(db) == before
    assert not db.conn.in_transaction


# Supersede


def test_a_later_entry_for_the_same_day_supersedes_and_keeps_the_old_row(db):
    enrol(db)
    first = score(db, 60)
    second = score(db, 64, se=3.1, form="depression_sf6a_v1.0", method="pattern", source="patient",
                  responses={"EDDEP04": 3, "EDDEP06": None})
    third = score(db, 62)
    active = storage.load_assessments(db)
    assert active[["assessment_id", "t_score"]].values.tolist() == [[third, 62.0]]
    everything = storage.load_assessments(db, include_superseded=True).set_index("assessment_id")
    links = {k: None if pd.isna(v) else v for k, v in everything["superseded_by"].items()}
    assert links == {first: second, second: third, third: None}
    assert everything.loc[second, "form"] == "depression_sf6a_v1.0"
    other_day, other_domain = score(db, 58, on="2025-02-02"), score(db, 40, domain="physical_function")
    assert sorted(storage.load_assessments(db)["assessment_id"]) == [third, other_day, other_domain]


def test_the_partial_unique_index_allows_one_active_row(db):
    enrol(db)
    score(db)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute("INSERT INTO assessments (patient_ref, assessed_on, domain, t_score, method, source, entered_by, "
                   "entered_at) VALUES (1, '2025-02-01', 'depression', 50, 'imported', 'clinician', 'x', 'now')")


# Audit log, meta and data_version


def test_audit_log_is_append_only(db):
    enrol(db)
    entry = storage.append_audit(db, actor="dr.lee", action="view_patient", patient_id="P001",
                                 details={"page": "patient", "note": "Zoë's chart"})
    row = db.conn.execute("SELECT actor, action, patient_ref, json_extract(details, '$.note') FROM audit_log").fetchone()
    assert row == ("dr.lee", "view_patient", 1, "Zoë's chart")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: entries cannot be changed"):
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = ?", [entry])
    with pytest.raises(sqlite3.IntegrityError, match="append-only: entries cannot be deleted"):
        db.execute("DELETE FROM audit_log")
    with pytest.raises(NotFound):
        storage.append_audit(db, actor="dr.lee", action="view_patient", patient_id="P404")
    with pytest.raises(ValidationError, match="action must be non-empty"):
        storage.append_audit(db, actor="dr.lee", action=" ")
    assert db.conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1


def test_data_version_counts_writes_but_not_rejections_or_audit(db):
    start = storage.data_version(db)
    enrol(db)
    score(db)
    assert storage.data_version(db) == start + 3
    with pytest.raises(ValidationError):
        score(db, 200)
    with pytest.raises(NotFound):
        score(db, patient_id="nobody")
    storage.append_audit(db, actor="x", action="login")
    assert storage.data_version(db) == start + 3


def test_meta(db):
    assert storage.is_synthetic(db) is False
    storage.set_meta(db, "note", "demo")
    assert storage.get_meta(db, "note") == "demo" and storage.get_meta(db, "missing", "d") == "d"
    with pytest.raises(ValueError):
        storage.set_meta(db, "data_version", "0")


# Reads


def test_reads_have_tidy_dtypes_even_when_empty(db):
    for frame in (storage.load_assessments(db), storage.load_assessments(db, include_superseded=True)):
        assert list(frame.columns) == list(storage.ASSESSMENT_COLUMNS) and frame.empty
        assert frame["assessed_on"].dtype == "datetime64[ns]" and frame["t_score"].dtype == "float64"
    enrol(db, sex="F", birth_year=1970, enrolled_on=date(2024, 12, 1))
    score(db, 61.5, se=2.4, raw_score=20, n_answered=6, form="depression_sf6a_v1.0", method="table")
    a = storage.load_assessments(db)
    assert a.dtypes.astype(str).to_dict() == {
        "assessment_id": "Int64", "patient_id": "object", "assessed_on": "datetime64[ns]", "domain": "object",
        "form": "object", "t_score": "float64", "se": "float64", "raw_score": "float64", "n_answered": "Int64",
        "method": "object", "source": "object", "entered_by": "object", "entered_at": "datetime64[ns, UTC]",
        "superseded_by": "Int64", "voided_at": "datetime64[ns, UTC]", "voided_by": "object",
        "void_reason": "object"}
    assert a.loc[0, "assessed_on"] == pd.Timestamp("2025-02-01")
    p = storage.load_patients(db)
    assert p.loc[0, "enrolled_on"] == pd.Timestamp("2024-12-01") and p["birth_year"].dtype == "Int64"
    assert storage.load_series(db)["first_infusion"].dtype == "datetime64[ns]"


def test_series_are_numbered_per_patient_by_first_infusion(db):
    for pid in ("P001", "P002"):
        storage.add_patient(db, patient_id=pid, entered_by="x")
    for pid, first in [("P001", "2025-03-01"), ("P002", "2024-05-01"), ("P001", "2024-01-01")]:
        storage.add_series(db, patient_id=pid, first_infusion=first, last_infusion=first, infusions=1, entered_by="x")
    s = storage.load_series(db)
    assert s[["patient_id", "series_number"]].values.tolist() == [["P001", 1], ["P001", 2], ["P002", 1]]
    assert s.loc[0, "first_infusion"] == pd.Timestamp("2024-01-01")
    assert storage.load_series(db, "P002")["series_number"].tolist() == [1]


def test_assessment_filters_and_item_responses(db):
    enrol(db)
    enrol(db, "P002")
    score(db, 60, form="depression_sf6a_v1.0", responses={"EDDEP04": 3, "EDDEP05": None}, method="pattern")
    score(db, 45, domain="physical_function")
    score(db, 70, patient_id="P002")
    assert len(storage.load_assessments(db, patient_id="P001")) == 2
    assert storage.load_assessments(db, domains=["depression"])["patient_id"].tolist() == ["P001", "P002"]
    assert storage.load_assessments(db, patient_id="nobody").empty
    items = storage.load_item_responses(db, "P001")
    assert items[["item_id", "value"]].astype(object).values.tolist() == [["EDDEP04", 3], ["EDDEP05", pd.NA]]
    assert items["value"].dtype == "Int64" and items["assessed_on"].dtype == "datetime64[ns]"


def test_database_summary(db):
    enrol(db)
    score(db, 60, on="2025-01-20")
    score(db, 61, on="2025-01-20")
    score(db, 40, domain="physical_function", on="2025-03-01")
    s = storage.database_summary(db)
    assert {k: s[k] for k in ("patients", "series", "infusions", "assessments", "users", "synthetic")} == {
        "patients": 1, "series": 1, "infusions": 0, "assessments": 2, "users": 0, "synthetic": False}
    assert (s["first_assessment"], s["last_assessment"]) == (date(2025, 1, 20), date(2025, 3, 1))
    assert s["assessments_by_domain"] == {"depression": 1, "physical_function": 1}
    assert s["schema_version"] == len(storage.MIGRATIONS._migrations)
    assert s["data_version"] == storage.data_version(db)


# Bulk insert


def cohort(n=3):
    ids = [f"DEMO-{i}" for i in range(n)]
    patients = pd.DataFrame({"patient_id": ids, "sex": "F", "birth_year": 1970,
                             "enrolled_on": pd.Timestamp("2024-01-01")})
    series = pd.DataFrame({"patient_id": ids, "first_infusion": pd.Timestamp("2024-01-10"),
                           "last_infusion": pd.Timestamp("2024-01-11"), "infusions": 2, "dose_mg_per_kg": 0.5})
    infusions = pd.DataFrame({"patient_id": ids * 2, "series_first_infusion": pd.Timestamp("2024-01-10"),
                              "infused_on": [pd.Timestamp("2024-01-10")] * n + [pd.Timestamp("2024-01-11")] * n,
                              "dose_mg_per_kg": 0.5, "duration_min": 40,
                              "adverse_events": [["nausea"]] + [[]] * (2 * n - 1)})
    assessments = pd.DataFrame({"patient_id": ids, "assessed_on": pd.Timestamp("2024-01-09"), "domain": "depression",
                                "form": "depression_sf6a_v1.0", "responses": [{"EDDEP04": 2}] * n,
                                "t_score": 60.0, "se": 3.0, "n_answered": [6.0] * n, "raw_score": 18.0,
                                "method": "table", "source": "patient"})
    return patients, series, infusions, assessments


def test_insert_cohort_loads_everything_and_flags_the_database(db):
    counts = storage.insert_cohort(db, *cohort(3), synthetic=True)
    assert counts == {"patients": 3, "series": 3, "infusions": 6, "adverse_events": 1, "assessments": 3}
    assert storage.is_synthetic(db) and storage.database_summary(db)["synthetic"] is True
    inf = storage.load_infusions(db)
    assert len(inf) == 6 and inf["n_adverse_events"].sum() == 1
    assert storage.load_adverse_events(db)["severity"].isna().all()  # kinds only: severity not recorded
    a = storage.load_assessments(db)
    assert a["n_answered"].tolist() == [6, 6, 6]
    assert storage.load_item_responses(db, "DEMO-0")["value"].tolist() == [2]


def test_insert_cohort_never_mixes_real_and_synthetic_patients(db, dump):
    storage.add_patient(db, patient_id="P001", entered_by="x")
    before = dump(db)
    with pytest.raises(ValidationError, match="already holds real patients"):
        storage.insert_cohort(db, *cohort(), synthetic=True)
    assert dump(db) == before


@pytest.mark.parametrize("table, change, message", [
    (3, {"t_score": 120.0}, "CHECK constraint failed"),
    (1, {"patient_id": "ghost"}, "names patients not in the patients table"),
    (0, {"sex": "female"}, "CHECK constraint failed"),
    (2, {"series_first_infusion": pd.Timestamp("2023-01-01")}, "names series not in the series table"),
])
def test_insert_cohort_is_all_or_nothing(db, dump, table, change, message):
    frames = list(cohort())
    frames[table] = frames[table].assign(**change)
    before = dump(db)
    with pytest.raises(ValidationError) as caught:
        storage.insert_cohort(db, *frames, synthetic=True)
    assert message in str(caught.value)
    assert dump(db) == before


def test_insert_cohort_rejects_two_active_scores_for_one_day_and_keeps_the_indexes(db):
    frames = list(cohort())
    frames[3] = pd.concat([frames[3], frames[3].iloc[[0]]], ignore_index=True)
    indexes = db.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name").fetchall()
    with pytest.raises(ValidationError, match="UNIQUE constraint failed"):
        storage.insert_cohort(db, *frames, synthetic=True)
    assert db.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name").fetchall() == indexes
    assert storage.database_summary(db)["patients"] == 0


# Property tests

PRINTABLE = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
patient_ids = st.one_of(
    st.sampled_from(["'; DROP TABLE patients; --", 'Robert"); DELETE FROM assessments; --', "Zoë 患者 🙂", "%_\\"]),
    st.text(PRINTABLE, min_size=1, max_size=64).map(str.strip).filter(bool),
)
free_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=200)
days = st.dates(min_value=date(2000, 1, 1), max_value=TODAY)
domains = st.sampled_from(DOMAINS)


@st.composite
def valid_scores(draw):
    domain = draw(domains)
    with_form = draw(st.booleans())
    return {
        "domain": domain,
        "assessed_on": draw(days),
        "t_score": draw(st.floats(0, 100)),
        "se": draw(st.none() | st.floats(0.1, 50)),
        "form": FORMS[domain] if with_form else None,
        "responses": draw(st.none() | st.dictionaries(st.text(PRINTABLE, min_size=1, max_size=12).filter(str.strip),
                                                      st.none() | st.integers(0, 5), max_size=10))
        if with_form else None,
        "raw_score": draw(st.none() | st.floats(0, 200)),
        "n_answered": draw(st.none() | st.integers(0, 10)),
        "method": draw(st.sampled_from(storage.METHODS)) if with_form else "imported",
        "source": draw(st.sampled_from(storage.SOURCES)),
    }


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient_id=patient_ids, diagnosis=free_text, protocol=free_text, notes=free_text,
       scores=st.lists(valid_scores(), min_size=1, max_size=4))
def test_valid_records_round_trip_exactly(patient_id, diagnosis, protocol, notes, scores):
    with storage.connect(":memory:") as db:
        storage.add_patient(db, patient_id=patient_id, diagnosis=diagnosis, entered_by=patient_id, today=TODAY)
        storage.add_series(db, patient_id=patient_id, first_infusion="2024-01-01", last_infusion="2024-01-05",
                           infusions=5, protocol=protocol, notes=notes, entered_by="x", today=TODAY)
        s = storage.load_series(db).iloc[0]
        assert (s["protocol"], s["notes"]) == tuple(t if t.strip() else None for t in (protocol, notes))
        for s in scores:
            storage.save_assessment(db, patient_id=patient_id, entered_by="x", today=TODAY, **s)
        p = storage.load_patients(db).iloc[0]
        assert p["patient_id"] == patient_id and p["entered_by"] == patient_id
        assert p["diagnosis"] == (diagnosis if diagnosis.strip() else None)
        last = {(s["domain"], s["assessed_on"]): s for s in scores}  # a later same-day entry supersedes
        loaded = storage.load_assessments(db)
        assert len(loaded) == len(last)
        for row in loaded.itertuples():
            s = last[(row.domain, row.assessed_on.date())]
            assert row.t_score == s["t_score"] and row.method == s["method"] and row.form == s["form"]
            assert (row.se if not math.isnan(row.se) else None) == s["se"]
            assert (None if pd.isna(row.n_answered) else row.n_answered) == s["n_answered"]
        items = storage.load_item_responses(db, patient_id)
        expected = [(k, v) for s in last.values() for k, v in (s["responses"] or {}).items()]
        got = [(k, None if pd.isna(v) else int(v)) for k, v in zip(items["item_id"], items["value"])]
        assert sorted(got, key=repr) == sorted(expected, key=repr)


bad_dates = st.one_of(
    st.text(max_size=12).filter(lambda s: s.strip() != "" and not _is_iso_day(s)),
    st.dates(min_value=TODAY + timedelta(days=1)),
    st.dates(max_value=date(1899, 12, 31)),
    st.integers(),
)


def _is_iso_day(text):
    try:
        return len(text.strip()) == 10 and date.fromisoformat(text.strip()) <= TODAY
    except ValueError:
        return False


bad_t = st.one_of(st.floats().filter(lambda x: not 0 <= x <= 100), st.integers().filter(lambda x: not 0 <= x <= 100),
                  st.text(max_size=8).filter(lambda s: s.strip() and not _is_number_0_100(s)), st.booleans())


def _is_number_0_100(text):
    try:
        return 0 <= float(text) <= 100
    except ValueError:
        return False


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(assessed_on=bad_dates, t_score=st.one_of(st.just(50.0), bad_t), data=st.data())
def test_invalid_dates_and_numbers_are_rejected_and_change_nothing(assessed_on, t_score, data):
    with storage.connect(":memory:") as db:
        storage.add_patient(db, patient_id="P001", entered_by="x")
        version = storage.data_version(db)
        if data.draw(st.booleans()) and t_score != 50.0:
            assessed_on = "2025-01-01"
        with pytest.raises(ValidationError):
            storage.save_assessment(db, patient_id="P001", assessed_on=assessed_on, domain="depression",
                                    t_score=t_score, method="imported", source="clinician", entered_by="x",
                                    today=TODAY)
        assert storage.load_assessments(db, include_superseded=True).empty
        assert storage.data_version(db) == version


@settings(max_examples=60, deadline=None)
@given(code=st.text(max_size=6).filter(lambda s: s.strip().upper() not in ("F", "M", "X", "")),
       year=st.one_of(st.integers().filter(lambda y: not 1900 <= y <= TODAY.year),
                      st.text(max_size=6).filter(lambda s: s.strip() and not (s.strip().isascii() and s.strip().isdigit()
                                                                             and 1900 <= int(s) <= TODAY.year))))
def test_invalid_codes_and_years_are_rejected(code, year):
    _, problems = storage.clean_patient(patient_id="P1", sex=code, birth_year=year, today=TODAY)
    assert len(problems) == 2
    assert problems[0].startswith("unknown sex code")
    assert problems[1].startswith("birth_year")

