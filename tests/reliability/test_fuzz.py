"""Issue 7, hostile and bad input: property-based fuzzing (Hypothesis) of every parser and form handler.

Each input either gets a clear error (an :class:`~outcomes.errors.OutcomesError`, whose message the pages and
the command line show) and leaves the database exactly as it was, or is accepted and stored exactly: free
text (diagnosis, protocol, notes, names, reasons) reads back character for character, SQL metacharacters
and all. Nothing else may escape: a ``TypeError``, ``KeyError``, a pandas parser error or a raw ``sqlite3``
error is a crash the user would see as a traceback.

Targets: scoring (``score_response``, ``score_frame``, ``score_csv``, ``score_parquet``), the CSV import (bytes, then
well-formed files with hostile cells), the REDCap import (read, detect, preview, commit), dates and numbers
of every field, and the form handlers behind the pages (enrolment, series, infusions with adverse events,
check-ins and drafts, alert notes, sign-in, invitations, user accounts, audit filters, export reasons).
``OUTCOMES_FUZZ_EXAMPLES`` sets the examples per test (CI: 60; ``bench/soak.py fuzz``: thousands).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from outcomes import auth, clinic, exports, importing, redcap, scoring, storage
from outcomes.errors import OutcomesError
from outcomes.instruments import default_registry
from outcomes.settings import load_settings

EXAMPLES = int(os.environ.get("OUTCOMES_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])
REGISTRY = default_registry()
SETTINGS = load_settings({})
NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TODAY = date(2025, 6, 2)
FORMS = st.sampled_from(REGISTRY.forms)

# Hostile text: SQL and CSV metacharacters, Markdown/HTML, quotes, separators, controls, RTL marks, emoji,
# combining characters, surrogate-free Unicode of every category, long runs.
NASTY = ["'", '"', "''", "'; DROP TABLE patients; --", "\" OR 1=1 --", "%", "_", "*", "?", "[", "]", "\\",
         ";", ",", "\n", "\r\n", "\t", "\x00", "\x1b[31m", "\u202e", "\ufeff", "\u200b", "=HYPERLINK(\"x\")",
         "+1", "-1", "@SUM(A1)", "<img src=x onerror=alert(1)>", "**bold**", "[link](javascript:alert(1))",
         "$x$", ":red[x]", "🙂", "e\u0301", "Ω", "𝔘𝔫𝔦", "NULL", "None", "nan", "inf", "1e309", "-0", "０１"]
TEXT = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(NASTY), max_size=6).map("".join),
                 st.tuples(st.text(max_size=10), st.sampled_from(NASTY), st.text(max_size=10)).map("".join))
CELL = st.one_of(TEXT, st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(repr),
                 st.dates(date(1, 1, 1), date(9999, 12, 31)).map(str), st.just(""))
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                      TEXT, st.dates(), st.datetimes(timezones=st.just(UTC)), st.binary(max_size=8),
                      st.lists(st.integers(), max_size=3), st.dictionaries(TEXT, st.integers(), max_size=2),
                      st.decimals(allow_nan=True).map(lambda d: d), st.just(np.nan), st.just(pd.NA),
                      st.just(pd.NaT), st.sampled_from([np.int64(3), np.float32(2.5), "2024-02-30", "2024-13-01",
                                                        "0000-01-01", "2099-01-01", " 2024-01-05 ", "5,5", "½"]))

# What a page's widgets hand over: text of any kind, a number, a date, or nothing.
FORM_VALUE = st.one_of(st.none(), TEXT, st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                       st.dates(date(1, 1, 1), date(9999, 12, 31)), st.text(min_size=300, max_size=3000))


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy = ANY_VALUE) -> st.SearchStrategy:
    """``valid`` nine times in ten, else ``invalid`` (one_of(valid, valid, valid, invalid) does not weigh)."""
    return st.integers(0, 9).flatmap(lambda n: invalid if n == 0 else valid)


def dump(db) -> dict[str, list[tuple]]:
    return {t: db.conn.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall() for t in db.table_names()}


class Tally:
    """How many inputs were tried, accepted and refused (for docs/reliability.md)."""

    def __init__(self):
        self.counts = Counter()
        self.messages: list = []

    def __call__(self, outcome: str) -> None:
        self.counts[outcome] += 1


@pytest.fixture
def tally(figures):
    t = Tally()
    yield t
    figures(inputs_tried=sum(t.counts.values()), **dict(t.counts))
    if os.environ.get("OUTCOMES_FUZZ_DEBUG"):
        for m in t.messages[:12]:
            print("  refused:", m)


def attempt(db, tally: Tally, call, *, stored=None, audited: bool = False) -> Any:
    """Run one hostile call: an OutcomesError leaves ``db`` unchanged; anything else but success fails.

    ``audited``: a refusal that is itself recorded (a failed sign-in, a bad invitation code) may add audit
    entries and count the failure against the account and the client (``sign_in_throttle``), and change
    nothing else.
    """
    before = dump(db) if db is not None else None
    try:
        result = call()
    except OutcomesError as exc:
        assert str(exc).strip(), "an error without a message"
        if db is not None:
            assert not db.conn.in_transaction
            after = dump(db)
            if audited:
                assert after["audit_log"][:len(before["audit_log"])] == before["audit_log"]  # appended only
                for table in ("audit_log", "users", "sign_in_throttle"):
                    before.pop(table, None), after.pop(table, None)
            assert after == before, "a refused input changed the database"
        tally("refused")
        tally.messages.append(str(exc).split("\n")[:3])
        return None
    tally("accepted")
    if stored is not None:
        stored(result)
    return result


# A clinic to write into --------------------------------------------------------------------------------


class World:
    def __init__(self):
        auth.HASHER = __import__("argon2").PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        self.db = storage.connect(":memory:")
        self.admin = auth.create_first_admin(self.db, "root.admin", "correct horse battery", now=NOW)
        self.clinician = auth.create_user(self.db, self.admin, username="dr.lee", role="clinician",
                                          password="lee's long password", now=NOW)
        storage.update_user(self.db, self.clinician.id, must_change_password=False)
        storage.add_patient(self.db, patient_id="P001", entered_by="dr.lee", today=TODAY)
        self.series_id = clinic.log_series(self.db, self.clinician, patient_id="P001", first_infusion="2025-01-06",
                                           last_infusion="2025-03-30", infusions=30, today=TODAY)
        self.n = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"


@pytest.fixture(scope="module")
def world():
    from argon2 import PasswordHasher

    saved = auth.HASHER
    w = World()
    yield w
    auth.HASHER = saved if isinstance(saved, PasswordHasher) else saved


# Scoring --------------------------------------------------------------------------------------------------


@st.composite
def responses_to(draw: st.DrawFn, form) -> dict[str, Any]:
    """Mostly a response a patient could give (values in range or skipped), sometimes any values at all."""
    value = lambda i: st.one_of(st.none(), st.integers(i.min_value, i.max_value))  # noqa: E731
    answers = {i.item_id: draw(value(i)) for i in form.items}
    if draw(st.integers(0, 3)) == 0:
        answers.update(draw(st.dictionaries(st.one_of(TEXT, st.sampled_from(form.item_ids)), ANY_VALUE,
                                            max_size=4)))
    return answers


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_scoring_any_response(tally, data):
    form = data.draw(mostly(FORMS, TEXT))
    responses = data.draw(responses_to(form) if not isinstance(form, str) else st.dictionaries(TEXT, ANY_VALUE))
    result = attempt(None, tally, lambda: scoring.score_response(form, responses, REGISTRY))
    if result is not None and result.scorable:
        assert 0 <= result.t_score <= 100 and result.se > 0


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_score_frame_csv_and_parquet_never_crash(tally, tmp_path_factory, data):
    form = data.draw(FORMS)
    columns = ["form", *form.item_ids[: data.draw(st.integers(0, form.n_items))], *data.draw(
        st.lists(TEXT.filter(lambda c: c and "\x00" not in c), max_size=2))]
    rows = data.draw(st.lists(st.lists(CELL, min_size=len(columns), max_size=len(columns)), max_size=6))
    frame = pd.DataFrame(rows, columns=pd.Index(columns).drop_duplicates(), dtype=object) if len(set(columns)) == \
        len(columns) else pd.DataFrame({"form": [form.key]})
    frame["form"] = frame["form"].where(pd.Series(data.draw(st.lists(st.booleans(), min_size=len(frame),
                                                                     max_size=len(frame))), dtype=bool), form.key)
    scored = attempt(None, tally, lambda: scoring.score_frame(frame, REGISTRY))
    if scored is not None:
        assert len(scored) == len(frame)
        assert scored["t_score"].dropna().between(0, 100).all()
        assert (scored["t_score"].isna() | ~scored["note"].str.startswith("error")).all()
    raw = data.draw(st.one_of(st.binary(max_size=200), st.just(frame.to_csv(index=False).encode("utf-8",
                                                                                                  "surrogatepass"))))
    path = tmp_path_factory.mktemp("score") / "in.csv"
    path.write_bytes(raw)
    attempt(None, tally, lambda: scoring.score_csv(path, registry=REGISTRY))
    parquet = path.with_suffix(".parquet")
    parquet.write_bytes(raw)  # arbitrary bytes, or (mostly) the frame as Parquet when its cells have a type
    if data.draw(st.integers(0, 3)):
        with contextlib.suppress(Exception):
            frame.to_parquet(parquet)
    attempt(None, tally, lambda: scoring.score_parquet(parquet, registry=REGISTRY))


# The CSV import ----------------------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(files=st.fixed_dictionaries({}, optional={k: st.one_of(
    st.binary(max_size=300), st.text(max_size=300).map(str.encode),
    st.lists(st.lists(CELL, max_size=6), max_size=6).map(lambda rows: "\n".join(",".join(r) for r in rows).encode()),
    st.sampled_from([b"", b"\xff\xfe" + "patient_id\n".encode("utf-16-le"), b"patient_id;sex\nP1;F\n",
                     b'patient_id\n"unterminated\n', b"\xef\xbb\xbfpatient_id\nP9\n", b"a,a\n1,2\n"]))
    for k in ("patients", "series", "scores")}))
def test_csv_import_of_any_bytes(world, tally, files):
    assume(files)
    attempt(world.db, tally, lambda: importing.import_files(world.db, **files, entered_by="fuzz", today=TODAY))


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    import csv

    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue().encode("utf-8", "surrogatepass")


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_csv_import_of_hostile_cells_stores_exactly_or_refuses(world, tally, data):
    pid = world.fresh("CSV-") + data.draw(st.sampled_from(["", "'", " x", "é", "%_", "'; --"]))
    diagnosis, protocol, notes = (data.draw(TEXT) for _ in range(3))
    first = data.draw(mostly(st.dates(date(1950, 1, 1), TODAY).map(str), CELL))
    t_score = data.draw(mostly(st.floats(0, 100).map(lambda x: f"{x:.1f}"), CELL))
    files = {
        "patients": _csv(["patient_id", "diagnosis", "sex", "birth_year"],
                         [[pid, diagnosis, data.draw(mostly(st.sampled_from(["F", "m", "", " X"]), st.just("Q"))),
                           data.draw(mostly(st.integers(1900, 2025).map(str), CELL))]]),
        "series": _csv(["patient_id", "first_infusion", "last_infusion", "infusions", "protocol", "notes"],
                       [[pid, first, first, data.draw(mostly(st.just("5"), CELL)), protocol, notes]]),
        "scores": _csv(["patient_id", "assessed_on", "domain", "t_score"],
                       [[pid, first, data.draw(mostly(st.sampled_from(["depression", "pain_interference"]),
                                                      st.just("x"))), t_score]]),
    }

    def stored(summary) -> None:
        patient = storage.load_patient(world.db, pid.strip()).iloc[0]
        series = storage.load_series(world.db, pid.strip()).iloc[0]
        for got, given_ in ((patient["diagnosis"], diagnosis), (series["protocol"], protocol),
                            (series["notes"], notes)):
            expected = given_.strip() or None  # cells are stripped; an empty cell is no value
            assert (None if pd.isna(got) else got) == expected
        assert summary.added == 3

    attempt(world.db, tally, lambda: importing.import_files(world.db, **files, entered_by="fuzz", today=TODAY),
            stored=stored)


# The REDCap import --------------------------------------------------------------------------------------

REDCAP_COLUMNS = ["record_id", "redcap_event_name", "visit_date", "eddep04", "eddep06", "eddep29", "eddep41",
                  "pain_tscore", "pain_stderror"]


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_redcap_import_of_hostile_exports(world, tally, data):
    if data.draw(st.booleans()):
        raw = data.draw(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
    else:
        header = data.draw(st.permutations(REDCAP_COLUMNS).map(lambda c: c[: len(c) - 2])) + data.draw(
            st.lists(TEXT.filter(lambda c: "\x00" not in c and c.strip()), max_size=2))
        rows = data.draw(st.lists(st.lists(st.one_of(CELL, st.sampled_from(
            ["P001", "2025-05-01", "2025-05-01 10:30", "1", "5", "Never", "Always", "55.2", "2.3"])),
            min_size=len(header), max_size=len(header)), max_size=5))
        raw = _csv(header, rows)
    frame = attempt(None, tally, lambda: redcap.read(raw))
    if frame is None:
        return
    mapping = attempt(None, tally, lambda: redcap.detect(frame, REGISTRY))
    if mapping is None:
        return
    mapping = redcap.ColumnMapping(mapping.record_id, mapping.date, mapping.event, mapping.forms, mapping.t_scores,
                             add_patients=data.draw(st.booleans()))
    attempt(world.db, tally, lambda: redcap.preview(world.db, frame, mapping, registry=REGISTRY, today=TODAY))
    attempt(world.db, tally, lambda: redcap.commit(world.db, world.clinician, frame, mapping, registry=REGISTRY,
                                                   today=TODAY))


# Dates and numbers of every field ------------------------------------------------------------------------
# Each field is drawn from its valid values most of the time and from anything at all otherwise, so that
# both paths run: refusals that change nothing, and acceptances whose free text must read back exactly.


PAST = st.dates(date(1950, 1, 1), TODAY)
FREE_TEXT = mostly(st.one_of(st.none(), TEXT.filter(lambda t: "\x00" not in t)))
SERIES_DAYS = st.dates(date(2025, 1, 6), date(2025, 3, 30))


@pytest.mark.slow
@FUZZ
@given(values=st.fixed_dictionaries({
    "patient_id": mostly(TEXT.filter(lambda t: t.strip() and t.isprintable()).map(lambda t: f"F{t}"[:60])),
    "diagnosis": FREE_TEXT, "sex": mostly(st.sampled_from(["F", "m", " X ", None])),
    "birth_year": mostly(st.one_of(st.integers(1900, 2025), st.integers(1900, 2025).map(str))),
    "enrolled_on": mostly(st.one_of(PAST, PAST.map(str)))}))
def test_patient_fields(world, tally, values):
    def stored(_) -> None:
        back = storage.load_patient(world.db, values["patient_id"].strip()).iloc[0]
        diagnosis = values["diagnosis"]
        assert (None if pd.isna(back["diagnosis"]) else back["diagnosis"]) == (
            diagnosis if isinstance(diagnosis, str) and diagnosis.strip() else None)

    assume(not (isinstance(values["patient_id"], str) and values["patient_id"].strip() and
                not storage.load_patient(world.db, values["patient_id"].strip()).empty))
    attempt(world.db, tally, lambda: storage.add_patient(world.db, **values, entered_by="fuzz", today=TODAY),
            stored=stored)


@pytest.mark.slow
@FUZZ
@given(first=mostly(st.one_of(PAST, PAST.map(str))), length=st.integers(-3, 30),
       values=st.fixed_dictionaries({"infusions": mostly(st.integers(1, 40)), "protocol": FREE_TEXT,
                                     "dose_mg_per_kg": mostly(st.one_of(st.none(), st.floats(0.05, 2.0))),
                                     "notes": FREE_TEXT}))
def test_series_fields(world, tally, first, length, values):
    real_day = type(first) is date  # not a datetime, not NaT
    last = first + timedelta(days=length) if real_day and first + timedelta(days=length) <= TODAY else first

    def stored(series_id) -> None:
        back = storage.load_series(world.db, "P001").set_index("series_id").loc[series_id]
        for field in ("protocol", "notes"):
            given_ = values[field]
            assert (None if pd.isna(back[field]) else back[field]) == (
                given_ if isinstance(given_, str) and given_.strip() else None)

    attempt(world.db, tally, lambda: clinic.log_series(world.db, world.clinician, patient_id="P001",
                                                       first_infusion=first, last_infusion=last, **values,
                                                       today=TODAY), stored=stored)


EVENT = st.fixed_dictionaries({"kind": mostly(st.sampled_from(storage.EVENT_KINDS)),
                               "severity": mostly(st.sampled_from(storage.SEVERITIES)), "notes": FREE_TEXT})


@pytest.mark.slow
@FUZZ
@given(day=mostly(st.integers(0, 4), st.integers(-3, 9)), as_text=st.booleans(),
       values=st.fixed_dictionaries({"dose_mg_per_kg": mostly(st.floats(0.05, 2.0)),
                                     "duration_min": mostly(st.integers(1, 1440)), "notes": FREE_TEXT}),
       events=st.lists(mostly(EVENT), max_size=3))
def test_infusion_and_adverse_event_fields(world, tally, day, as_text, values, events):
    # A patient of its own for each example: a shared patient would need a new series date each time, and
    # after enough examples (the 1,000-example soak) those dates collided with other tests' series.
    patient_id = world.fresh("INF")
    storage.add_patient(world.db, patient_id=patient_id, entered_by="dr.lee", today=TODAY)
    first = date(2025, 1, 6)
    series_id = clinic.log_series(world.db, world.clinician, patient_id=patient_id, first_infusion=first,
                                  last_infusion=first + timedelta(days=4), infusions=5, today=TODAY)
    infused_on = first + timedelta(days=day)
    values = {**values, "infused_on": infused_on.isoformat() if as_text else infused_on}

    def stored(infusion_id) -> None:
        back = storage.load_adverse_events(world.db, patient_id)
        back = back[back["infusion_id"] == infusion_id]
        assert [None if pd.isna(n) else n for n in back["notes"]] == [
            e["notes"] if isinstance(e.get("notes"), str) and e["notes"].strip() else None for e in events]
        infusion = storage.load_infusions(world.db, patient_id).set_index("infusion_id").loc[infusion_id]
        assert (None if pd.isna(infusion["notes"]) else infusion["notes"]) == (
            values["notes"] if isinstance(values["notes"], str) and values["notes"].strip() else None)

    attempt(world.db, tally, lambda: clinic.log_infusion(world.db, world.clinician, patient_id=patient_id,
                                                         series_id=series_id, adverse_events=events,
                                                         **values, today=TODAY), stored=stored)


@pytest.mark.slow
@FUZZ
@given(values=st.fixed_dictionaries({
    "assessed_on": mostly(st.one_of(PAST, PAST.map(str))), "domain": mostly(st.just("depression")),
    "t_score": mostly(st.floats(0, 100)), "se": mostly(st.one_of(st.none(), st.floats(0.1, 50))),
    "form": mostly(st.one_of(st.none(), st.just("depression_sf6a_v1.0"))),
    "responses": mostly(st.none()), "raw_score": mostly(st.one_of(st.none(), st.integers(0, 40))),
    "n_answered": mostly(st.one_of(st.none(), st.integers(0, 8))), "method": mostly(st.just("imported")),
    "source": mostly(st.sampled_from(["import", "clinician", "patient"]))}))
def test_score_fields(world, tally, values):
    def stored(assessment_id) -> None:
        back = storage.load_assessments(world.db, patient_id="P001").set_index("assessment_id").loc[assessment_id]
        assert back["t_score"] == float(values["t_score"])

    attempt(world.db, tally, lambda: storage.save_assessment(world.db, patient_id="P001", entered_by="fuzz",
                                                             today=TODAY, **values), stored=stored)


# Form handlers behind the pages ------------------------------------------------------------------------

ITEM_IDS = [i.item_id for f in REGISTRY.forms for i in f.items]


@st.composite
def checkin_answers(draw: st.DrawFn) -> Any:
    """Mostly answers a check-in could send (values in range or skipped), sometimes anything at all."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.one_of(ANY_VALUE, st.dictionaries(st.one_of(st.sampled_from(SETTINGS.checkin_forms), TEXT),
                                                         st.one_of(ANY_VALUE, st.dictionaries(
                                                             st.one_of(st.sampled_from(ITEM_IDS), TEXT), ANY_VALUE,
                                                             max_size=8)), max_size=4)))
    out = {}
    for key in draw(st.lists(st.sampled_from(SETTINGS.checkin_forms), min_size=1, unique=True)):
        form = REGISTRY.form(key)
        out[key] = {i.item_id: draw(st.one_of(st.none(), st.integers(i.min_value, i.max_value),
                                              st.integers(i.min_value, i.max_value))) for i in form.items}
    return out


@pytest.mark.slow
@FUZZ
@given(answers=checkin_answers(), day=mostly(st.one_of(PAST, PAST.map(str))),
       source=mostly(st.sampled_from(["clinician", "patient"]), st.one_of(st.none(), TEXT)))
def test_checkin_and_draft(world, tally, answers, day, source):
    def stored(result) -> None:
        back = storage.load_item_responses(world.db, "P001")
        back = back[back["assessed_on"] == pd.Timestamp(result.assessed_on)]
        for d in result.domains:
            if d.scored:
                got = back.loc[back["form"] == d.form].set_index("item_id")["value"]
                assert {k: (None if pd.isna(v) else int(v)) for k, v in got.items()} == answers[d.form]

    attempt(world.db, tally, lambda: clinic.save_draft(world.db, world.clinician, "P001", answers, now=NOW))
    attempt(world.db, tally, lambda: clinic.submit_checkin(world.db, world.clinician, patient_id="P001",
                                                           answers=answers, assessed_on=day, today=TODAY, now=NOW,
                                                           settings=SETTINGS, source=source, replace=True),
            stored=stored)


@pytest.mark.slow
@FUZZ
@given(values=st.fixed_dictionaries({"diagnosis": FREE_TEXT, "sex": mostly(st.sampled_from(["F", "M", "X", None]),
                                                                           FORM_VALUE),
                                     "birth_year": mostly(st.one_of(st.none(), st.integers(1900, 2025)), FORM_VALUE),
                                     "enrolled_on": mostly(st.one_of(st.none(), PAST), FORM_VALUE)}),
       patient_id=mostly(TEXT.filter(lambda t: t.strip() and t.isprintable()).map(lambda t: f"E{t}"[:60]),
                         FORM_VALUE),
       note=mostly(st.one_of(st.none(), TEXT.filter(lambda t: "\x00" not in t)), FORM_VALUE))
def test_enrolment_and_alert_note(world, tally, values, patient_id, note):
    def stored(invitation) -> None:
        back = storage.load_patient(world.db, invitation.patient_id).iloc[0]
        assert back["patient_id"] == patient_id.strip()
        diagnosis = values["diagnosis"]
        assert (None if pd.isna(back["diagnosis"]) else back["diagnosis"]) == (
            diagnosis if isinstance(diagnosis, str) and diagnosis.strip() else None)

    assume(not (isinstance(patient_id, str) and not storage.load_patient(world.db, patient_id.strip()).empty))
    attempt(world.db, tally, lambda: clinic.enrol_patient(world.db, world.clinician, patient_id=patient_id,
                                                          **values, today=TODAY, now=NOW, settings=SETTINGS),
            stored=stored)
    alerts = storage.load_alerts(world.db, open_only=True)
    if len(alerts):
        alert_id = int(alerts["alert_id"].iloc[0])

        def note_stored(_) -> None:
            back = storage.load_alerts(world.db)
            assert back.loc[back["alert_id"] == alert_id, "note"].iloc[0] == (
                note if isinstance(note, str) and note.strip() else None)

        attempt(world.db, tally, lambda: clinic.acknowledge_alert(world.db, world.clinician, alert_id, now=NOW,
                                                                  note=note), stored=note_stored)
    else:  # raise one for the next example: a severe depression check-in
        form = REGISTRY.form(SETTINGS.checkin_forms[1])
        clinic.submit_checkin(world.db, world.clinician, patient_id="P001", answers={form.key: dict.fromkeys(
            form.item_ids, 5)}, assessed_on=TODAY - timedelta(days=world.n % 3000), today=TODAY, now=NOW,
            settings=SETTINGS, replace=True)


USERNAMES = st.from_regex(storage.USERNAME, fullmatch=True)
PASSWORDS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40).map(
    lambda t: f"Pw {t} 9x!Qz")  # any Unicode inside; long enough, no control character


@pytest.mark.slow
@FUZZ
@given(username=mostly(USERNAMES, FORM_VALUE), password=mostly(PASSWORDS, FORM_VALUE), code=FORM_VALUE,
       email=mostly(st.one_of(st.none(), st.emails()), FORM_VALUE), display=FREE_TEXT,
       role=mostly(st.sampled_from(("admin", "clinician", "qi")), FORM_VALUE))
def test_sign_in_invitation_and_accounts(world, tally, username, password, code, email, display, role):
    attempt(world.db, tally, lambda: auth.login(world.db, username, password, now=NOW, settings=SETTINGS),
            audited=True)
    attempt(world.db, tally, lambda: auth.redeem_invitation(world.db, code, username, password, now=NOW),
            audited=True)

    def stored(user) -> None:
        back = storage.get_user(world.db, user_id=user.id)
        assert back["display_name"] == (display if isinstance(display, str) and display.strip() else None)
        if password is not None:
            assert back["password_hash"].startswith("$argon2id$") and password not in back["password_hash"]
            # Earlier examples may have failed sign-ins as this name before it existed; unknown names wait
            # like real ones (nothing reveals which exist), so lift the wait as an administrator would.
            auth.unlock_user(world.db, world.admin, back["username"])
            assert auth.login(world.db, back["username"], password, now=NOW, settings=SETTINGS).id == user.id

    attempt(world.db, tally, lambda: auth.create_user(world.db, world.admin, username=username, role=role,
                                                      password=password, email=email, display_name=display,
                                                      patient_id=None, now=NOW), stored=stored)


@pytest.mark.slow
@FUZZ
@given(user=st.one_of(st.none(), TEXT, st.sampled_from(["dr.lee", "root.admin", "fuzz"])),
       patient=st.one_of(st.none(), TEXT, st.just("P001")), action=st.one_of(st.none(), TEXT, st.just("login")),
       first=st.one_of(st.none(), st.dates()), last=st.one_of(st.none(), st.dates()),
       reason=st.one_of(FORM_VALUE, st.text(min_size=490, max_size=600)))
def test_audit_filters_and_export_reasons(world, tally, user, patient, action, first, last, reason):
    log = attempt(world.db, tally, lambda: clinic.read_audit_log(world.db, world.admin, user=user, patient_id=patient,
                                                                 action=action, date_from=first, date_to=last))
    if log is not None and user is not None:
        assert set(log["actor"]) <= {user}
    attempt(None, tally, lambda: exports.check_reason(reason))


# Huge inputs ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_huge_files_are_imported_or_refused_whole(world, figures):
    rows = 20_000
    ids = [world.fresh("BIG-") for _ in range(rows)]
    patients = ("patient_id,diagnosis\n" + "".join(f"{p},CRPS\n" for p in ids)).encode()
    scores = ("patient_id,assessed_on,domain,t_score\n" + "".join(f"{p},2024-01-02,depression,55.5\n"
                                                                   for p in ids)).encode()
    summary = importing.import_files(world.db, patients=patients, scores=scores, entered_by="fuzz", today=TODAY)
    assert summary.patients_added == rows and summary.scores_added == rows
    before = dump(world.db)
    broken = scores + b"BIG-x,2024-01-02,depression,55.5\n"  # one bad line at the very end of 20,001
    with pytest.raises(OutcomesError, match="BIG-x"):
        importing.import_files(world.db, scores=broken, entered_by="fuzz", today=TODAY)
    for huge in (b"patient_id,diagnosis\nP-huge," + b"x" * 5_000_000 + b"\n",  # one 5 MB cell
                 b"patient_id,sex" + b",extra" * 200_000 + b"\nP-wide,Q\n",  # 200,000 columns
                 b"patient_id" + b"".join(b",c%d" % i for i in range(200_000)) + b"\nP-wide\n",
                 os.urandom(3_000_000)):  # 3 MB of noise
        with pytest.raises(OutcomesError):
            importing.import_files(world.db, patients=huge, entered_by="fuzz", today=TODAY)
    assert dump(world.db) == before
    figures(rows_imported=2 * rows, huge_files_refused=5)


def test_nan_and_infinity_never_reach_a_score(world):
    for bad in (math.nan, math.inf, -math.inf, "nan", "inf", "1e309", 1e309):
        with pytest.raises(OutcomesError):
            storage.save_assessment(world.db, patient_id="P001", assessed_on="2024-01-01", domain="depression",
                                    t_score=bad, method="imported", source="import", entered_by="fuzz", today=TODAY)
