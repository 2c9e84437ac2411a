"""REDCap import (outcomes/redcap.py): mapping detection, scoring, per-row errors, all or none, round trip."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from outcomes import auth, exports, redcap, storage
from outcomes import clinic as clinic_module
from outcomes.errors import ImportRejected, PermissionDenied, ValidationError
from outcomes.instruments import default_registry
from outcomes.scoring import score_response
from outcomes.settings import load_settings

REGISTRY = default_registry()
TODAY = date(2025, 6, 1)
NOW = datetime(2025, 6, 1, 9, tzinfo=UTC)
PI = ("painin9", "painin22", "painin31", "painin34", "painin12", "painin36")  # PI 6a item fields
DEP = ("eddep04", "eddep06", "eddep29", "eddep41")                           # Depression 4a
HEADER = ("record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,visit_date,"
          + ",".join(PI) + ",promis_pain_interference_complete," + ",".join(DEP)
          + ",promis_pf_tscore,promis_pf_stderror\n")
# A raw export (codes) with one labels-style answer, one event without questionnaires, a skipped item,
# and T-scores computed elsewhere for physical function.
EXPORT = HEADER + (
    "P001,screening_arm_1,,,,,,,,,,0,,,,,,,\n"
    "P001,baseline_arm_1,,,2025-01-06,4,4,3,4,3,4,2,Often,3,2,2,38.5,2.1\n"
    "P001,month_1_arm_1,,,2025-02-10 10:22,2,2,2,,2,2,2,1,1,1,1,41.0,\n"
    "P002,baseline_arm_1,,,2025-01-08,3,3,3,3,3,3,2,,,,,,\n"
)


def upload(text: str, name: str = "redcap_export.csv") -> pd.DataFrame:
    frame = redcap.read(text.encode())
    frame.attrs["source"] = name
    return frame


@pytest.fixture
def clinic(db, fast_hasher):
    admin = auth.create_first_admin(db, "ada.admin", "a long test password", now=NOW)
    users = {"admin": admin}
    for name, role in (("cleo.clinician", "clinician"), ("quinn.qi", "qi")):
        users[role] = auth.create_user(db, admin, username=name, role=role, password="a long test password",
                                       now=NOW)
    for pid in ("P001", "P002"):
        storage.add_patient(db, patient_id=pid, entered_by="x", today=TODAY)
    return users


def test_detect_proposes_the_mapping_a_redcap_export_implies():
    m = redcap.detect(upload(EXPORT), REGISTRY)
    assert (m.record_id, m.event, m.date) == ("record_id", "redcap_event_name", "visit_date")
    assert [(f.form, dict(f.columns)) for f in m.forms] == [
        ("pain_interference_sf6a_v1.0", {i.upper(): i for i in PI}),
        ("depression_sf4a_v1.0", {i.upper(): i for i in DEP})]
    assert m.t_scores == (redcap.TScoreMapping("physical_function", "promis_pf_tscore",
                                               "promis_pf_stderror"),)
    assert m.problems(list(upload(EXPORT).columns), REGISTRY) == []


def test_detect_prefers_the_form_whose_items_are_all_there_and_reads_the_form_in_a_field_name():
    pi8 = ("painin9", "painin22", "painin31", "painin34", "painin12", "painin36", "painin3", "painin13")
    frame = upload("studyid,survey_date," + ",".join(f"promis_{i}" for i in pi8)
                   + ",dep_sf8a_tscore,dep_sf8a_std_error\nP1,2025-01-01," + ",".join("1" * 8) + ",50,3\n")
    m = redcap.detect(frame, REGISTRY)
    assert m.record_id == "studyid" and m.date == "survey_date" and m.event is None
    assert [f.form for f in m.forms] == ["pain_interference_sf8a_v1.0"]
    assert m.t_scores == (redcap.TScoreMapping("depression", "dep_sf8a_tscore", "dep_sf8a_std_error",
                                               "depression_sf8a_v1.0"),)


def test_plan_scores_items_with_the_scoring_engine():
    frame = upload(EXPORT)
    plan = redcap.plan(frame, redcap.detect(frame, REGISTRY), REGISTRY)
    assert plan.errors == ()
    scores = plan.scores.set_index(["line", "domain"])
    base = scores.loc[(3, "pain_interference")]
    expected = score_response("pain_interference_sf6a_v1.0", {"PAININ9": 4, "PAININ22": 4, "PAININ31": 3,
                                                               "PAININ34": 4, "PAININ12": 3, "PAININ36": 4})
    assert (base["t_score"], base["se"], base["method"]) == (expected.t_score, expected.se, "table")
    assert scores.loc[(3, "depression"), "responses"]["EDDEP04"] == 4          # "Often", a labels export
    assert scores.loc[(4, "pain_interference"), "method"] == "pattern"           # one item skipped
    assert scores.loc[(4, "pain_interference"), "assessed_on"] == "2025-02-10"   # the time is dropped
    assert scores.loc[(3, "physical_function"), "t_score"] == "38.5"             # checked by storage
    assert 2 not in plan.scores["line"].tolist()                                 # screening: nothing mapped


def test_round_trip_through_the_database_and_back_out(db, clinic):
    frame = upload(EXPORT)
    mapping = redcap.detect(frame, REGISTRY)
    preview = redcap.preview(db, frame, mapping, registry=REGISTRY, today=TODAY)
    assert preview.ok and preview.summary.scores_added == 7 and preview.summary.dry_run
    assert storage.load_assessments(db).empty                                     # a preview writes nothing
    summary = redcap.commit(db, clinic["clinician"], frame, mapping, registry=REGISTRY, today=TODAY)
    assert summary.scores_added == 7 and not summary.dry_run
    stored = storage.load_assessments(db).set_index(["patient_id", "domain", "assessed_on"])
    row = stored.loc[("P001", "pain_interference", pd.Timestamp("2025-01-06"))]
    assert (row["t_score"], row["method"], row["source"], row["entered_by"]) == (64.8, "table", "import",
                                                                                 "cleo.clinician")
    pf = stored.loc[("P001", "physical_function", pd.Timestamp("2025-01-06"))]
    assert (pf["t_score"], pf["se"], pf["method"], pf["form"]) == (38.5, 2.1, "imported", None)
    answers = storage.load_item_responses(db, "P001")
    assert answers[answers["form"] == "depression_sf4a_v1.0"]["value"].tolist()[:4] == [4, 3, 2, 2]
    audit = storage.load_audit_log(db, action="import_redcap").iloc[0]
    assert audit["actor"] == "cleo.clinician"
    assert json.loads(audit["details"]) == {"file": "redcap_export.csv", "rows": 4, "scores_added": 7,
                                            "scores_present": 0, "patients_added": 0, "skipped": 0,
                                            "alerts": 0}
    # Re-importing the same file adds nothing; the identified export shows the scores as imported.
    again = redcap.preview(db, frame, mapping, registry=REGISTRY, today=TODAY)
    assert again.summary.added == 0 and again.summary.scores_present == 7 and not again.ok
    tables = exports.build(exports.load_source(db), "dataset", "csv", deidentified=False, as_of=TODAY,
                           settings=load_settings({}), generated_at=NOW).tables
    assert len(tables["scores"]) == 0  # no infusion series yet: scores belong to no episode
    storage.add_series(db, patient_id="P001", first_infusion="2025-01-06", last_infusion="2025-01-10",
                       infusions=5, entered_by="x", today=TODAY)
    tables = exports.build(exports.load_source(db), "dataset", "csv", deidentified=False, as_of=TODAY,
                           settings=load_settings({}), generated_at=NOW).tables
    got = tables["scores"].set_index(["domain", "day"])["t_score"].to_dict()
    assert got[("pain_interference", 0)] == 64.8 and got[("physical_function", 35)] == 41.0


def test_every_bad_row_is_listed_and_nothing_is_written(db, clinic, dump):
    bad = HEADER + (
        "P001,baseline_arm_1,,,2025-01-06,9,4,3,4,3,4,2,,,,,,\n"                 # 9 is not an answer
        "P001,month_1_arm_1,,,02/10/2025,2,2,2,2,2,2,2,,,,,,\n"                  # not ISO
        "P001,month_3_arm_1,,,,2,2,2,2,2,2,2,,,,,,\n"                            # no date (event only)
        "P009,baseline_arm_1,,,2025-01-08,3,3,3,3,3,3,2,,,,,,\n"                 # unknown record
        "P002,baseline_arm_1,,,2026-01-08,3,3,3,3,3,3,2,,,,,,\n"                 # in the future
        "P002,month_1_arm_1,,,2025-02-08,,,,,,,,Maybe,1,1,1,,\n"                 # an unknown label
        "P002,month_3_arm_1,,,2025-04-08,,,,,,,,,,,,101,\n"                      # T out of range
    )
    frame = upload(bad)
    mapping = redcap.detect(frame, REGISTRY)
    before = dump(db)
    plan = redcap.plan(frame, mapping, REGISTRY)
    assert [e.split(":")[0] for e in plan.errors] == [
        "redcap_export.csv line 2 (baseline_arm_1)", "redcap_export.csv line 3 (month_1_arm_1)",
        "redcap_export.csv line 4 (month_3_arm_1)", "redcap_export.csv line 7 (month_1_arm_1)"]
    assert "PAININ9=9 is not an allowed answer" in plan.errors[0]
    assert "'02/10/2025' is not a date written YYYY-MM-DD" in plan.errors[1]
    assert "every score needs the day it was answered" in plan.errors[2]
    assert "'Maybe' is neither a number nor an answer" in plan.errors[3] and "4 Often" in plan.errors[3]
    with pytest.raises(ImportRejected) as caught:
        redcap.commit(db, clinic["clinician"], frame, mapping, registry=REGISTRY, today=TODAY)
    assert len(caught.value.problems) == 4
    # Once the rows that cannot be read are fixed, the database's own checks list the rest, by line.
    fixed = upload(bad.replace(",9,4,3", ",1,4,3").replace("02/10/2025", "2025-02-10")
                   .replace(",,2,2,2,2,2,2,2,,,,,,", ",2025-04-10,2,2,2,2,2,2,2,,,,,,").replace("Maybe", "2"))
    preview = redcap.preview(db, fixed, mapping, registry=REGISTRY, today=TODAY)
    assert not preview.ok and len(preview.errors) == 3
    assert any("line 5: patient 'P009' is not in the database" in e for e in preview.errors)
    assert any("line 6: assessed_on 2026-01-08 is in the future" in e for e in preview.errors)
    assert any("line 8: t_score must be a number from 0 to 100" in e for e in preview.errors)
    with pytest.raises(ImportRejected):
        redcap.commit(db, clinic["clinician"], fixed, mapping, registry=REGISTRY, today=TODAY)
    after = dump(db)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in before.items()
                                                                     if k != "audit_log"}


def test_unknown_records_can_be_added_as_patients(db, clinic):
    frame = upload(HEADER + "P777,baseline_arm_1,,,2025-01-08,3,3,3,3,3,3,2,,,,,,\n")
    mapping = redcap.detect(frame, REGISTRY)
    assert not redcap.preview(db, frame, mapping, registry=REGISTRY, today=TODAY).ok
    mapping = redcap.ColumnMapping(**{**mapping.__dict__, "add_patients": True})
    summary = redcap.commit(db, clinic["admin"], frame, mapping, registry=REGISTRY, today=TODAY)
    assert summary.patients_added == 1 and "P777" in storage.load_patients(db)["patient_id"].tolist()


def test_a_questionnaire_with_too_few_answers_is_skipped_not_imported(db, clinic):
    frame = upload(HEADER + "P001,baseline_arm_1,,,2025-01-06,4,4,,,,,2,1,1,1,1,,\n")
    preview = redcap.preview(db, frame, redcap.detect(frame, REGISTRY), registry=REGISTRY, today=TODAY)
    assert preview.plan.skipped == ("redcap_export.csv line 2 (baseline_arm_1): PROMIS SF v1.0 Pain "
                                    "Interference 6a not scored: 2 of 6 items answered (at least half are "
                                    "needed)",)
    assert preview.plan.scores["domain"].tolist() == ["depression"] and preview.ok


def test_columns_named_otherwise_are_mapped_by_hand(db, clinic):
    frame = upload("id,when,q1,q2,q3,q4\nP001,2025-03-03,1,2,1,1\n")
    detected = redcap.detect(frame, REGISTRY)
    assert detected.forms == () and detected.t_scores == ()
    assert "Nothing to import" in " ".join(detected.problems(list(frame.columns), REGISTRY))
    mapping = redcap.ColumnMapping("id", "when", forms=(redcap.FormMapping(
        "depression_sf4a_v1.0", {"EDDEP04": "q1", "EDDEP06": "q2", "EDDEP29": "q3", "EDDEP41": "q4"}),))
    redcap.commit(db, clinic["clinician"], frame, mapping, registry=REGISTRY, today=TODAY)
    stored = storage.load_assessments(db)
    assert stored["t_score"].tolist() == [score_response("depression_sf4a_v1.0", {
        "EDDEP04": 1, "EDDEP06": 2, "EDDEP29": 1, "EDDEP41": 1}).t_score]


def test_mapping_problems_are_spelled_out():
    frame = upload(EXPORT)
    columns = list(frame.columns)
    m = redcap.detect(frame, REGISTRY)
    assert redcap.ColumnMapping("record_id", None, forms=m.forms).problems(columns, REGISTRY) == [
        "Choose the column that dates each row (a visit date or a survey timestamp): REDCap event names are "
        "not dates"]
    twice = redcap.ColumnMapping("record_id", "visit_date", forms=m.forms[:1],
                           t_scores=(redcap.TScoreMapping("pain_interference", "promis_pf_tscore"),))
    assert twice.problems(columns, REGISTRY) == [
        "pain_interference is mapped twice; choose one source per domain"]
    half = redcap.ColumnMapping("record_id", "visit_date", forms=(redcap.FormMapping(
        "pain_interference_sf6a_v1.0", {"PAININ9": "painin9", "PAININ22": "nope"}),))
    assert half.problems(columns, REGISTRY) == [
        "PROMIS SF v1.0 Pain Interference 6a: item PAININ22 is mapped to 'nope', which is not in the file",
        "PROMIS SF v1.0 Pain Interference 6a: only 2 of its 6 items are mapped; at least half are needed to "
        "score it"]
    with pytest.raises(ValidationError, match="cannot be used yet"):
        redcap.plan(frame, half, REGISTRY)


def test_only_clinicians_and_admins_import(db, clinic):
    frame = upload(EXPORT)
    with pytest.raises(PermissionDenied):
        redcap.commit(db, clinic["qi"], frame, redcap.detect(frame, REGISTRY), registry=REGISTRY, today=TODAY)
    assert storage.load_assessments(db).empty
    assert storage.load_audit_log(db, action="access_denied")["actor"].tolist() == ["quinn.qi"]


@pytest.mark.parametrize("data, message", [
    ("record_id;visit_date\nP1;2025-01-01\n".encode(), "uses ';' between values"),
    ("record_id,visit_date\nP1,2025-01-01\n".encode("utf-16"), "UTF-16"),
    (b"", "is empty"),
])
def test_unreadable_files_are_refused(data, message):
    with pytest.raises(ImportRejected) as caught:
        redcap.read(data)
    assert message in caught.value.problems[0]


def test_a_field_named_line_does_not_clash_with_the_line_numbers():
    frame = upload("record_id,line,visit_date\nP1,A,2025-01-01\n")
    assert frame.to_dict("records") == [{"record_id": "P1", "line (column)": "A", "visit_date": "2025-01-01",
                                         "line": 2}]


# Every score of a severe depression row, answered in REDCap: the 4a form's items all at 5 (T 79.4).
SEVERE = ",".join(["P002", "month_3_arm_1", "", "", "2025-05-20"] + [""] * 7 + ["5"] * 4 + ["", ""]) + "\n"
RULE = "only each patient's latest score per domain is checked against the alert rules"


def test_a_severe_depression_score_raises_a_high_priority_alert_with_the_import(db, clinic):
    frame = upload(EXPORT + SEVERE)
    mapping = redcap.detect(frame, REGISTRY)
    preview = redcap.preview(db, frame, mapping, registry=REGISTRY, today=TODAY)
    assert preview.summary.describe().endswith(f"On import, {RULE}.")
    assert storage.load_alerts(db).empty                                          # a preview raises nothing
    summary = redcap.commit(db, clinic["clinician"], frame, mapping, registry=REGISTRY, today=TODAY, now=NOW,
                            settings=load_settings({}))
    alerts = storage.load_alerts(db)
    assert alerts[["patient_id", "domain", "assessed_on", "t_score", "priority"]].values.tolist() == [
        ["P002", "depression", pd.Timestamp("2025-05-20"), 79.4, "high"]]
    assert alerts.loc[0, "created_at"] == pd.Timestamp(NOW)
    assert summary.alerts_raised == 1
    assert summary.describe().endswith(f"1 alert raised for clinician review ({RULE}).")
    assert json.loads(storage.load_audit_log(db, action="import_redcap").iloc[0]["details"])["alerts"] == 1
    # The same file again adds nothing and raises nothing.
    again = redcap.commit(db, clinic["clinician"], frame, mapping, registry=REGISTRY, today=TODAY, now=NOW,
                          settings=load_settings({}))
    assert (again.added, again.alerts_raised) == (0, 0) and len(storage.load_alerts(db)) == 1


def test_the_scores_their_alerts_and_the_audit_entry_are_stored_together(db, clinic, dump, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("the alerts could not be stored")

    monkeypatch.setattr(clinic_module, "raise_score_alerts", failing)
    frame = upload(EXPORT + SEVERE)
    before = dump(db)
    with pytest.raises(RuntimeError, match="could not be stored"):
        redcap.commit(db, clinic["clinician"], frame, redcap.detect(frame, REGISTRY), registry=REGISTRY,
                      today=TODAY, now=NOW, settings=load_settings({}))
    assert dump(db) == before


@pytest.mark.slow
def test_an_export_larger_than_the_limits_is_refused_before_it_is_parsed():
    """Security issue, finding 8: a 42 MB upload cost 100-124 s of CPU and 1.5-1.8 GB."""
    header = "record_id,visit_date,eddep04\n"
    rows = header + "".join(f"P{i},2024-01-01,2\n" for i in range(redcap.MAX_ROWS + 1))
    with pytest.raises(ImportRejected) as caught:
        redcap.read(rows.encode())
    assert caught.value.problems == [f"redcap.csv has {redcap.MAX_ROWS + 1:,} rows; at most "
                                     f"{redcap.MAX_ROWS:,} can be imported at once. Export fewer records (for "
                                     "example one year at a time) and import the parts one after the other"]
    assert len(redcap.read((header + "P1,2024-01-01,2\n" * redcap.MAX_ROWS).encode())) == redcap.MAX_ROWS
    wide = header.strip() + ",note\n" + f"P1,2024-01-01,2,{'x' * redcap.MAX_BYTES}\n"
    with pytest.raises(ImportRejected) as caught:
        redcap.read(wide.encode())
    assert caught.value.problems[0].startswith("redcap.csv is 10.0 MB; at most 10 MB can be imported at once.")
