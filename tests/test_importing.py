"""CSV import: file structure, every bad line listed, all-or-nothing, idempotent re-import, supersede."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from outcomes import clinic, importing, storage
from outcomes.errors import ImportRejected, ValidationError
from outcomes.settings import load_settings
from outcomes.domains import load_domains

TODAY = date(2025, 6, 1)
PATIENTS = (
    "patient_id,diagnosis,sex,birth_year\n"
    "P001,Complex regional pain syndrome,F,1971\n"
    'P002,"Fibromyalgia, with ""flares""",M,1980\n'
    "P003,,,\n"
)
SERIES = """patient_id,first_infusion,last_infusion,infusions,protocol
P001,2025-01-06,2025-01-10,5,5-day 0.5 mg/kg
P001,2025-04-01,2025-04-01,1,booster
P002,2025-02-03,2025-02-07,5,
"""
SCORES = """patient_id,assessed_on,domain,t_score,se,form
P001,2025-01-06,pain_interference,66.2,2.1,pain_interference_sf6a_v1.0
P001,2025-01-10,pain_interference,60,,
P002,2025-02-03,depression,58.5,3,depression_sf8a_v1.0
"""


@pytest.fixture
def files(tmp_path):
    def write(patients=PATIENTS, series=SERIES, scores=SCORES, encoding="utf-8"):
        paths = {}
        for name, text in (("patients", patients), ("series", series), ("scores", scores)):
            if text is not None:
                paths[name] = tmp_path / f"{name}.csv"
                paths[name].write_bytes(text.encode(encoding) if isinstance(text, str) else text)
        return paths

    return write


def run(db, paths, **kw):
    return importing.import_files(db, entered_by="import", **{"today": TODAY, **kw}, **paths)


def test_import_writes_every_file(db, files):
    summary = run(db, files())
    assert (summary.patients_added, summary.series_added, summary.scores_added) == (3, 3, 3)
    assert summary.describe().startswith("9 added, 0 already present")
    patients = storage.load_patients(db).set_index("patient_id")
    assert patients.loc["P002", "diagnosis"] == 'Fibromyalgia, with "flares"'
    assert patients.loc["P003"].isna()[["diagnosis", "sex", "birth_year"]].all()
    assert storage.load_series(db)["series_number"].tolist() == [1, 2, 1]
    scores = storage.load_assessments(db)
    assert set(scores["method"]) == {"imported"} and set(scores["source"]) == {"import"}
    assert scores["form"].tolist() == ["pain_interference_sf6a_v1.0", None, "depression_sf8a_v1.0"]
    assert scores["se"].fillna(0).tolist() == [2.1, 0, 3.0]


def test_reimporting_the_same_files_adds_nothing(db, files, dump):
    paths = files()
    run(db, paths)
    before = dump(db)
    again = run(db, paths)
    assert again.added == 0 and again.present == 9
    assert str(again).startswith("0 added, 9 already present")
    assert dump(db) == before  # data_version included: a no-op import empties no cache


def test_a_reimport_never_undoes_a_void_or_a_correction(db, files, dump):
    paths = files()
    run(db, paths)
    scores = storage.load_assessments(db).set_index(["patient_id", "assessed_on"])["assessment_id"]
    storage.correct_record(db, "assessment", int(scores.loc[("P001", pd.Timestamp("2025-01-10"))]),
                           changes={"t_score": 61.5}, reason="transcription error", by="dr.lee", today=TODAY)
    storage.void_record(db, "assessment", int(scores.loc[("P002", pd.Timestamp("2025-02-03"))]),
                        reason="another patient's form", by="dr.lee")
    before = dump(db)
    again = run(db, paths)
    assert again.added == 0 and again.present == 9
    assert dump(db) == before
    active = storage.load_assessments(db)
    assert active[["patient_id", "t_score"]].values.tolist() == [["P001", 66.2], ["P001", 61.5]]


def test_a_changed_t_score_supersedes_the_imported_one(db, files):
    run(db, files())
    changed = SCORES.replace("58.5", "61")
    summary = run(db, files(scores=changed, patients=None, series=None))
    assert (summary.scores_added, summary.scores_present, summary.scores_superseded) == (1, 2, 1)
    assert summary.describe() == ("1 added, 2 already present (patients: 0 added, 0 already present; series: 0 added, "
                                  "0 already present; scores: 1 added, 2 already present; 1 of the scores replace "
                                  "an earlier T-score). No alert raised (only each patient's latest score "
                                  "per domain is checked against the alert rules).")
    active = storage.load_assessments(db, patient_id="P002")
    assert active["t_score"].tolist() == [61.0]
    everything = storage.load_assessments(db, patient_id="P002", include_superseded=True)
    assert everything["t_score"].tolist() == [58.5, 61.0]


def test_series_and_scores_may_name_patients_already_in_the_database(db, files):
    storage.add_patient(db, patient_id="P002", entered_by="dr.lee")
    summary = run(db, files(patients=None, scores=None, series="patient_id,first_infusion,last_infusion,infusions\n"
                                                              "P002,2025-02-03,2025-02-07,5\n"))
    assert summary.series_added == 1


BAD_PATIENTS = """patient_id,diagnosis,sex,birth_year
P001,CRPS,female,1971
P002,,M,80

P003,,F,2031
P001,,F,1971
"""
BAD_SERIES = """patient_id,first_infusion,last_infusion,infusions,protocol
P001,2025-01-10,2025-01-06,5,
P009,2025-01-06,2025-01-10,0,
P002,06/01/2025,2025-01-10,5,
"""
BAD_SCORES = """patient_id,assessed_on,domain,t_score,se,form
P001,2025-01-06,mood,66,,
P002,2025-01-06,depression,101,,
P003,2025-07-01,depression,50,,
P002,2025-01-07,depression,55,,pain_interference_sf6a_v1.0
P002,2025-01-08,depression,55,,phq9
P777,2025-01-08,depression,55,,
,2025-01-08,depression,55,,
"""


def test_any_bad_line_rejects_the_whole_import_and_every_line_is_listed(db, files, dump):
    storage.add_patient(db, patient_id="P000", entered_by="dr.lee")
    before = dump(db)
    with pytest.raises(ImportRejected) as caught:
        run(db, files(BAD_PATIENTS, BAD_SERIES, BAD_SCORES))
    assert isinstance(caught.value, ValidationError)
    assert caught.value.problems == [
        "patients.csv line 2: unknown sex code 'female': use F, M or X, or leave it empty",
        "patients.csv line 3: birth_year must be a four-digit year such as 1975, got '80'",
        "patients.csv line 5: birth_year 2031 is in the future",
        "patients.csv line 6: patient 'P001' already appears on line 2",
        "series.csv line 2: last_infusion 2025-01-06 is before first_infusion 2025-01-10; swap or correct the dates",
        "series.csv line 3: infusions must be a whole number of at least 1, got '0'",
        "series.csv line 3: patient 'P009' is not in the database or in patients.csv; add the patient first",
        ("series.csv line 4: first_infusion must be a date written YYYY-MM-DD (for example 2024-03-15), "
         "got '06/01/2025'"),
        "scores.csv line 2: domain must be one of " + ", ".join(load_domains()) + ", got 'mood'",
        "scores.csv line 3: t_score must be a number from 0 to 100, got '101'",
        "scores.csv line 4: assessed_on 2025-07-01 is in the future (today is 2025-06-01)",
        "scores.csv line 5: form pain_interference_sf6a_v1.0 does not belong to domain depression",
        "scores.csv line 6: form 'phq9' is not a form key <domain>_sf<form>_v<version> (such as the keys in forms.toml)",
        "scores.csv line 7: patient 'P777' is not in the database or in patients.csv; add the patient first",
        "scores.csv line 8: patient_id is required",
    ]
    assert str(caught.value).startswith("Nothing was imported: 15 problem(s) found.")
    assert dump(db) == before


def test_duplicate_rows_within_a_file_are_errors(db, files):
    series = SERIES + "P001,2025-01-06,2025-01-10,5,again\n"
    scores = SCORES + "P001,2025-01-10,pain_interference,61,,\n"
    with pytest.raises(ImportRejected) as caught:
        run(db, files(series=series, scores=scores))
    assert caught.value.problems == [
        "series.csv line 5: the series of 'P001' starting 2025-01-06 already appears on line 2",
        "scores.csv line 5: pain_interference of 'P001' on 2025-01-10 already appears on line 3",
    ]


def test_records_that_differ_from_the_database_are_errors_not_overwrites(db, files, dump):
    run(db, files())
    before = dump(db)
    patients = PATIENTS.replace("P001,Complex regional pain syndrome,F,1971", "P001,Complex regional pain syndrome,M,1971")
    with pytest.raises(ImportRejected) as caught:
        run(db, files(patients=patients, series=SERIES.replace("5-day 0.5 mg/kg", "ketamine 1 mg/kg")))
    assert caught.value.problems == [
        ("patients.csv line 2: patient 'P001' is already in the database with sex 'F' (file: 'M'); "
         "correct the file or edit the record in the app"),
        ("series.csv line 2: the series of 'P001' starting 2025-01-06 is already in the database with protocol "
         "'5-day 0.5 mg/kg' (file: 'ketamine 1 mg/kg'); correct the file or edit the record in the app"),
    ]
    assert dump(db) == before
    # Empty cells say nothing, so they never conflict.
    assert run(db, files(patients="patient_id,sex\nP001,\n", series=None, scores=None)).patients_present == 1


def test_known_forms_narrow_the_accepted_form_keys(db, files):
    with pytest.raises(ImportRejected) as caught:
        run(db, files(), known_forms={"pain_interference_sf6a_v1.0", "depression_sf6a_v1.0"})
    assert caught.value.problems == [
        ("scores.csv line 4: form depression_sf8a_v1.0 is not a known form; known forms: depression_sf6a_v1.0, "
         "pain_interference_sf6a_v1.0")]


def test_missing_required_columns_give_one_error_per_file(db, files):
    with pytest.raises(ImportRejected) as caught:
        run(db, files(series="patient_id,first_infusion,infusions\nP001,2025-01-06,5\n",
                      scores="patient_id,date,domain,t_score\nP001,2025-01-06,depression,50\n"))
    assert caught.value.problems == [
        ("series.csv is missing the required column last_infusion; its first line must name the columns "
         "patient_id, first_infusion, last_infusion, infusions (optional: protocol, dose_mg_per_kg, notes)"),
        ("scores.csv is missing the required column assessed_on; its first line must name the columns "
         "patient_id, assessed_on, domain, t_score (optional: se, form)"),
    ]


def test_bom_whitespace_header_case_and_blank_lines_are_tolerated(db, files):
    patients = "\ufeff Patient_ID , Sex ,BIRTH_YEAR\r\n  P001 ,  f , 1971 \r\n\r\n\r\nP002,M,1980\r\n"
    summary = run(db, files(patients=patients.encode("utf-8"), series=None, scores=None))
    assert summary.patients_added == 2
    assert storage.load_patients(db)[["patient_id", "sex"]].values.tolist() == [["P001", "F"], ["P002", "M"]]
    # Blank lines still count, so the line numbers match what a spreadsheet shows.
    with pytest.raises(ImportRejected, match="patients.csv line 5: unknown sex code 'Q'"):
        run(db, files(patients="patient_id,sex\nP004,F\n\n\nP005,Q\n", series=None, scores=None))


def test_unicode_and_sql_metacharacters_are_stored_exactly(db, files):
    text = "patient_id,diagnosis\n\"Zoë'; DROP TABLE patients; --\",\"Névralgie, 三叉神経痛 🙂\"\n"
    run(db, files(patients=text, series=None, scores=None))
    assert storage.load_patients(db)[["patient_id", "diagnosis"]].values.tolist() == [
        ["Zoë'; DROP TABLE patients; --", "Névralgie, 三叉神経痛 🙂"]]


@pytest.mark.parametrize("content, message", [
    ("patient_id,sex\nZoë,F\n".encode("latin-1"),
     "patients.csv is not UTF-8 text (first bad byte on line 2); save it again as 'CSV UTF-8"),
    ("patient_id,sex\nP1,F\n".encode("utf-16"), "patients.csv is saved as UTF-16"),
    (b"", "patients.csv is empty; its first line must name the columns: patient_id"),
    (b"patient_id;sex\nP1;F\n", "patients.csv uses ';' between values; save it as comma-separated CSV"),
    (b"patient_id,sex\nP1,F,extra\n", "patients.csv line 2: 3 values but the header names 2 columns"),
    (b"patient_id,sex,Sex\nP1,F,F\n", "patients.csv: column sex appears more than once"),
])
def test_unreadable_files_are_rejected_with_a_clear_message(db, files, dump, content, message):
    before = dump(db)
    with pytest.raises(ImportRejected) as caught:
        run(db, files(patients=content, series=None, scores=None))
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems
    assert dump(db) == before


def test_file_objects_and_missing_paths(db, tmp_path):
    upload = io.BytesIO(b"patient_id\nP001\n")
    upload.name = "clinic_export.csv"  # as a Streamlit UploadedFile carries it
    batch = importing.read_import_files(patients=upload)
    assert batch.patients.attrs["source"] == "clinic_export.csv" and batch.series is None
    with pytest.raises(ImportRejected, match="Cannot read the scores file"):
        importing.read_import_files(scores=tmp_path / "nope.csv")
    with pytest.raises(ImportRejected) as caught:
        storage.import_records(db, None, None, importing.read_csv(
            b"patient_id,assessed_on,domain,t_score\nP1,2025-01-01,depression,50\n", "scores")[0], entered_by="x")
    assert caught.value.problems == ["scores.csv line 2: patient 'P1' is not in the database; add the patient first"]


def test_dry_run_counts_without_writing(db, files, dump):
    before = dump(db)
    summary = run(db, files(), dry_run=True)
    assert summary.added == 9 and summary.describe().startswith("9 would be added")
    assert dump(db) == before


# Alerts: imported scores go through the clinic's alert rules, each patient's latest per domain only -----

NOW = datetime(2025, 6, 1, 9, tzinfo=UTC)
RULE = "(only each patient's latest score per domain is checked against the alert rules)"
SEVERE = "P003,2025-05-20,depression,72.4,,\n"  # P003's only score: severe depression
HISTORY = """patient_id,assessed_on,domain,t_score
P001,2025-01-06,depression,72
P001,2025-02-03,depression,75
P001,2025-03-03,depression,71
P001,2025-01-06,pain_interference,60
P001,2025-02-03,pain_interference,66
P001,2025-03-03,pain_interference,72
P001,2025-01-06,physical_function,40
P001,2025-02-03,physical_function,32
P001,2025-03-03,physical_function,41
"""


@pytest.fixture(params=["patient by patient", "whole database"])
def scope(request, monkeypatch):
    """Both ways of finding the new latest scores: the file's patients one by one, or all patients at once."""
    if request.param == "whole database":
        monkeypatch.setattr(importing, "PATIENT_BY_PATIENT_MAX", 0)
    return request.param


def alerting(db, paths, **kw):
    return run(db, paths, now=NOW, settings=load_settings({}), **kw)


def shown(alerts):
    return alerts[["patient_id", "domain", "assessed_on", "t_score", "priority"]].values.tolist()


def test_an_imported_severe_depression_score_raises_one_high_priority_alert(db, files, scope):
    result = alerting(db, files(scores=SCORES + SEVERE))
    alerts = storage.load_alerts(db)
    assert shown(alerts) == [["P003", "depression", pd.Timestamp("2025-05-20"), 72.4, "high"]]
    assert alerts.loc[0, "reason"] == "Depression T 72.4 is 70 or higher (severe)"
    assert alerts.loc[0, "created_at"] == pd.Timestamp(NOW) and pd.isna(alerts.loc[0, "acknowledged_at"])
    assert result.alerts_raised == 1
    assert result.describe().endswith("scores: 4 added, 0 already present). 1 alert raised for clinician "
                                      "review " + RULE + ".")


def test_a_history_import_alerts_only_on_each_patients_latest_score_per_domain(db, files, scope):
    result = alerting(db, files(series=None, scores=HISTORY))
    # Depression: only the latest severe score (71), not the two before it. Pain interference: the latest
    # worsened by at least the MCID. Physical function: the latest improved (the worsening before it is old).
    alerts = storage.load_alerts(db).sort_values("domain")
    assert shown(alerts) == [["P001", "depression", pd.Timestamp("2025-03-03"), 71.0, "high"],
                             ["P001", "pain_interference", pd.Timestamp("2025-03-03"), 72.0, "routine"]]
    assert alerts.iloc[1]["reason"] == ("Pain interference worsened by 6.0 T points since the previous score "
                                        "(66.0 on 2025-02-03), at least the meaningful change of 3")
    assert result.alerts_raised == 2 and "2 alerts raised for clinician review " + RULE in result.describe()
    # Still older scores leave the latest where it was: they are kept, and raise nothing.
    older = "patient_id,assessed_on,domain,t_score\nP001,2024-12-02,depression,80\n"
    older = alerting(db, files(patients=None, series=None, scores=older))
    assert (older.scores_added, older.alerts_raised) == (1, 0)
    assert older.describe().endswith("No alert raised " + RULE + ".")
    assert len(storage.load_alerts(db)) == 2


def test_a_dry_run_raises_no_alert_and_says_which_scores_will_be_checked(db, files, dump):
    paths = files(series=None, scores=HISTORY)
    before = dump(db)
    result = alerting(db, paths, dry_run=True)
    assert dump(db) == before and result.alerts_raised == 0
    assert result.describe().endswith("would be added, 0 already present). On import, only each patient's "
                                      "latest score per domain is checked against the alert rules.")
    assert alerting(db, paths).alerts_raised == 2  # the same files imported for real


def test_reimported_rows_raise_no_second_alert_and_a_replaced_latest_score_is_checked(db, files, scope):
    paths = files(scores=SCORES + SEVERE)
    alerting(db, paths)
    again = alerting(db, paths)
    assert (again.added, again.alerts_raised) == (0, 0) and "alert" not in again.describe()
    # The same rows plus a new one: only the new one is checked (P003's score is not raised again).
    more = alerting(db, files(scores=SCORES + SEVERE + "P002,2025-05-21,depression,66,,\n"))
    assert (more.scores_added, more.scores_present, more.alerts_raised) == (1, 4, 1)
    # A new T for P003's latest day replaces the stored score; the new score is checked.
    replaced = alerting(db, files(patients=None, series=None, scores=SCORES + SEVERE.replace("72.4", "74.0")))
    assert (replaced.scores_superseded, replaced.alerts_raised) == (1, 1)
    assert shown(storage.load_alerts(db)) == [
        ["P003", "depression", pd.Timestamp("2025-05-20"), 72.4, "high"],
        ["P003", "depression", pd.Timestamp("2025-05-20"), 74.0, "high"],
        ["P002", "depression", pd.Timestamp("2025-05-21"), 66.0, "routine"]]


def test_the_scores_and_their_alerts_are_stored_together_or_not_at_all(db, files, dump, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("the alerts could not be stored")

    monkeypatch.setattr(clinic, "raise_score_alerts", failing)
    before = dump(db)
    with pytest.raises(RuntimeError, match="could not be stored"):
        alerting(db, files(scores=SCORES + SEVERE))
    assert dump(db) == before


# Contacts in patients.csv and planned series in series.csv (issue 15) ---------------------------------

CONTACTS = (
    "patient_id,sex,email,phone,channel\n"
    "P001,F,ann@example.org,(201) 555-0123,sms\n"
    "P002,M,,,\n"
    "P003,,bob@example.com,,email\n"
    "P004,,,+1 201 555 0145,none\n"
)


def test_patients_csv_carries_contacts_with_imported_consent(db, files):
    summary = run(db, files(patients=CONTACTS, series=None, scores=None))
    assert (summary.patients_added, summary.contacts_added) == (4, 3)
    assert "contacts: 3 added, 0 already present" in summary.describe()
    c = storage.load_contacts(db).set_index("patient_id")
    assert c.index.tolist() == ["P001", "P003", "P004"]  # P002 gives no contact cell: no contact row
    assert c.loc["P001", ["email", "phone", "channel"]].tolist() == ["ann@example.org", "+12015550123", "sms"]
    assert c.loc["P003", ["channel", "consent_how", "consent_by"]].tolist() == ["email", "imported", "import"]
    assert c.loc["P001", "consent_on"] == pd.Timestamp(TODAY)  # the import day
    # Channel none: the number is kept, nothing is sent, and no consent is recorded.
    assert c.loc["P004", "channel"] == "none" and pd.isna(c.loc["P004", "consent_on"])
    assert c.loc["P004", "consent_how"] is None


def test_phone_numbers_without_country_code_read_in_the_phone_region(db, files):
    settings = load_settings({"OUTCOMES_PHONE_REGION": "GB"})
    run(db, files(patients="patient_id,phone,channel\nP001,07400 123456,sms\n", series=None, scores=None),
        settings=settings)
    assert storage.load_contacts(db)["phone"].tolist() == ["+447400123456"]


def test_bad_contact_cells_are_listed_by_line_and_field_and_nothing_is_stored(db, files, dump):
    before = dump(db)
    patients = ("patient_id,sex,email,phone,channel\n"
                "P001,F,ann@,,email\n"
                "P002,,,123,sms\n"
                "P003,,c@example.org,,fax\n"
                "P004,,,,email\n"
                "P005,,,+44 20 7946 0000,sms\n"
                "P006,female,d@example.org,,email\n")
    with pytest.raises(ImportRejected) as caught:
        run(db, files(patients=patients, series=None, scores=None))
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["patients.csv line " + n for n in "234567"]
    assert problems[0].startswith("patients.csv line 2: email 'ann@' is not a valid email address")
    assert problems[1].startswith("patients.csv line 3: phone '123' is not a valid phone number")
    assert problems[2] == "patients.csv line 4: channel must be one of email, sms, none, got 'fax'"
    assert problems[3] == ("patients.csv line 5: channel is email but no email address is given; add one or "
                           "choose another channel")
    assert "is not a mobile number" in problems[4]  # a landline cannot take text messages
    assert problems[5] == "patients.csv line 7: unknown sex code 'female': use F, M or X, or leave it empty"
    assert dump(db) == before


def test_reimporting_contacts_changes_nothing_and_a_different_contact_is_a_conflict(db, files, dump):
    run(db, files(patients=CONTACTS, series=None, scores=None))
    before = dump(db)
    again = run(db, files(patients=CONTACTS, series=None, scores=None), today=date(2025, 7, 1))
    assert (again.added, again.contacts_present) == (0, 3)
    assert dump(db) == before  # not even consent_on or updated_at moves
    changed = CONTACTS.replace("bob@example.com", "robert@example.com")
    with pytest.raises(ImportRejected) as caught:
        run(db, files(patients=changed, series=None, scores=None))
    assert caught.value.problems == [
        "patients.csv line 4: the contact details of 'P003' are already in the database with email "
        "'bob@example.com' (file: 'robert@example.com'); correct the file or edit the contact in the app"]
    assert dump(db) == before


def test_a_file_never_turns_messages_back_on_after_an_opt_out(db, files, dump):
    run(db, files(patients=CONTACTS, series=None, scores=None))
    storage.opt_out(db, "P001", by="dr.lee", now=datetime(2025, 6, 5, 9, tzinfo=UTC))
    before = dump(db)
    with pytest.raises(ImportRejected) as caught:
        run(db, files(patients=CONTACTS, series=None, scores=None))
    assert caught.value.problems == [
        "patients.csv line 2: patient 'P001' stopped messages on 2025-06-05; a file cannot turn them back on: "
        "record the patient's new consent on the Record page"]
    assert dump(db) == before


def test_a_contact_for_a_patient_already_enrolled_is_added(db, files):
    run(db, files(patients=PATIENTS, series=None, scores=None))
    summary = run(db, files(patients="patient_id,email,channel\nP002,p2@example.org,email\n", series=None,
                            scores=None))
    assert (summary.patients_present, summary.contacts_added) == (1, 1)
    assert storage.load_contacts(db)["patient_id"].tolist() == ["P002"]


PLANNED = """patient_id,first_infusion,last_infusion,infusions,protocol
P001,2025-06-10,2025-06-14,5,5-day 0.5 mg/kg
P002,2025-02-03,2025-02-07,5,
"""


def test_a_future_first_infusion_is_a_planned_series(db, files):
    summary = run(db, files(series=PLANNED, scores=None))
    assert (summary.series_added, summary.series_planned) == (2, 1)
    assert "1 of the series is planned (first infusion ahead)" in summary.describe()
    row = db.execute("SELECT first_infusion, last_infusion, infusions, planned_first, planned_last, "
                     "planned_infusions, by_day, state FROM series ORDER BY id").fetchall()
    assert row == [("2025-06-10", "2025-06-14", 5, "2025-06-10", "2025-06-14", 5, 1, "planned"),
                   ("2025-02-03", "2025-02-07", 5, None, None, None, 0, "given")]
    # Stored as clinic.plan_series stores one: its infusions are logged day by day.
    sid = db.execute("SELECT id FROM series WHERE state = 'planned'").fetchone()[0]
    storage.add_infusion(db, series_id=sid, infused_on="2025-06-10", dose_mg_per_kg=0.5, duration_min=40,
                         entered_by="nurse", today=date(2025, 6, 10))
    assert db.execute("SELECT state, infusions FROM series WHERE id = ?", [sid]).fetchone() == ("given", 1)


def test_reimporting_a_planned_series_after_it_began_or_ended_adds_nothing(db, files, dump):
    run(db, files(series=PLANNED, scores=None))
    sid = db.execute("SELECT id FROM series WHERE state = 'planned'").fetchone()[0]
    for day in ("2025-06-11", "2025-06-12"):  # begun a day late
        storage.add_infusion(db, series_id=sid, infused_on=day, dose_mg_per_kg=0.5, duration_min=40,
                             entered_by="nurse", today=date(2025, 6, 12))
    before = dump(db)
    for today in (date(2025, 6, 1), date(2025, 6, 12), date(2025, 7, 1)):  # planned, under way, over
        again = run(db, files(series=PLANNED, scores=None), today=today)
        assert (again.added, again.series_present) == (0, 2), today
    assert dump(db) == before


def test_a_series_under_way_or_planned_too_far_ahead_is_refused(db, files, dump):
    run(db, files(series=None, scores=None))
    before = dump(db)
    series = ("patient_id,first_infusion,last_infusion,infusions\n"
              "P001,2025-05-30,2025-06-03,5\n"
              "P002,2026-06-03,2026-06-07,5\n"
              "P003,2025-06-10,2025-06-05,5\n"
              "P003,2025-06-20,2025-06-24,0\n")
    with pytest.raises(ImportRejected) as caught:
        run(db, files(patients=None, series=series, scores=None))
    assert caught.value.problems == [
        "series.csv line 2: the series starting 2025-05-30 is under way (last_infusion 2025-06-03 is ahead, "
        "today is 2025-06-01): import it once its last infusion is given, or plan it in the app and log its "
        "infusions day by day",
        "series.csv line 3: first_infusion 2026-06-03 is more than 366 days ahead (today is 2025-06-01); "
        "a series can be planned at most 366 days ahead; check the year",
        "series.csv line 4: last_infusion 2025-06-05 is before first_infusion 2025-06-10; swap or correct "
        "the dates",
        "series.csv line 5: infusions must be a whole number from 1 to 60, got '0'",
    ]
    assert dump(db) == before
    # The limit itself is accepted.
    edge = "patient_id,first_infusion,last_infusion,infusions\nP002,2026-06-02,2026-06-06,5\n"
    assert run(db, files(patients=None, series=edge, scores=None)).series_planned == 1


def test_a_dry_run_counts_planned_series_and_contacts_without_storing(db, files, dump):
    before = dump(db)
    summary = run(db, files(patients=CONTACTS, series=PLANNED.replace("P002", "P003"), scores=None), dry_run=True)
    assert (summary.contacts_added, summary.series_planned, summary.dry_run) == (3, 1, True)
    assert dump(db) == before
