"""Follow-up completion (outcomes/completion.py; docs/followup.md): which slots are due, which are completed,
and how each completion came, row by row on a small clinic built through storage."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from outcomes import completion, disclosure, followup, storage
from outcomes.settings import load_settings

SETTINGS = load_settings({})
SCHEDULE = followup.Schedule.from_settings(SETTINGS)
AS_OF = date(2025, 4, 20)
TODAY = date(2025, 4, 20)
CHICAGO = ZoneInfo("America/Chicago")
D = date.fromisoformat


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def score(db, pid: str, day: str) -> None:
    storage.save_assessment(db, patient_id=pid, assessed_on=day, domain=next(iter(SETTINGS.domains)), t_score=60.0,
                            method="imported", source="clinician", entered_by="dr.lee", today=TODAY)


def send(db, pid: str, series_id: int, slot: str, due: str, step: str, when: str) -> None:
    """A message planned, claimed and sent at ``when`` (UTC)."""
    storage.plan_messages(db, [{"patient_id": pid, "series_id": series_id, "slot": slot, "due_on": D(due),
                                "step": step, "channel": "email", "recipient": "x@example.org"}],
                          by="remind", now=at(when))
    (claimed,) = storage.claim_messages(db, by="remind", now=at(when), max_attempts=3)
    assert storage.finish_message(db, claimed["message_id"], sent=True, now=at(when), max_attempts=3) == "sent"


@pytest.fixture
def clinic(db):
    """P1 (dr.lee, code 1): a series 3-7 March 2025, completions of every kind; P2 (dr.kim, code 2): a series
    10-14 March, withdrawn on 25 March; P3: a series planned for May (nothing due yet)."""
    codes = storage.load_diagnosis_codes(db)
    first_code, second_code = (int(c) for c in codes["code"].iloc[:2])
    for pid, code in (("P1", first_code), ("P2", second_code), ("P3", first_code)):
        storage.add_patient(db, patient_id=pid, entered_by="dr.lee", today=TODAY)
        storage.set_diagnosis_code(db, pid, code, reason=None, by="dr.lee")
    s1 = storage.add_series(db, patient_id="P1", first_infusion="2025-03-03", last_infusion="2025-03-07",
                            infusions=5, entered_by="dr.lee", today=TODAY)
    s2 = storage.add_series(db, patient_id="P2", first_infusion="2025-03-10", last_infusion="2025-03-14",
                            infusions=5, entered_by="dr.kim", today=TODAY)
    storage.plan_series(db, patient_id="P3", first_infusion="2025-05-05", planned_infusions=5, entered_by="dr.lee",
                        today=TODAY)
    storage.set_disposition(db, "P2", disposition="withdrawn", on="2025-03-25", reason="moved away", by="dr.kim",
                            today=TODAY)
    # P1: baseline before any message; week 0 after the invitation; week 1 after the reminder; week 2 missed;
    # week 3 by phone (reminder sent too); week 4 (1 month) with the invitation sent at 03:00 UTC the next day,
    # 22:00 the same day in Chicago; week 5 missed; week 6 open (due 18 April).
    score(db, "P1", "2025-02-28")
    send(db, "P1", s1, "week_0", "2025-03-07", "invitation", "2025-03-07T14:00:00")
    score(db, "P1", "2025-03-09")
    send(db, "P1", s1, "week_1", "2025-03-14", "invitation", "2025-03-14T14:00:00")
    send(db, "P1", s1, "week_1", "2025-03-14", "reminder", "2025-03-16T14:00:00")
    score(db, "P1", "2025-03-17")
    send(db, "P1", s1, "week_3", "2025-03-28", "invitation", "2025-03-28T14:00:00")
    send(db, "P1", s1, "week_3", "2025-03-28", "reminder", "2025-03-30T14:00:00")
    storage.add_call_outcome(db, "P1", series_id=s1, slot="week_3", due_on=D("2025-03-28"), outcome="no_answer",
                             by="dr.lee", now=at("2025-03-31T15:00:00"))
    storage.add_call_outcome(db, "P1", series_id=s1, slot="week_3", due_on=D("2025-03-28"),
                             outcome="completed_by_phone", by="dr.lee", now=at("2025-04-01T15:00:00"))
    score(db, "P1", "2025-04-01")
    score(db, "P1", "2025-04-05")
    send(db, "P1", s1, "week_4", "2025-04-04", "invitation", "2025-04-06T03:00:00")
    # P2: no baseline (missed); week 0 before any message; week 1 missed; from week 2 (due 28 March) inactive.
    score(db, "P2", "2025-03-15")
    return db, s1, s2


def classified(db, zone=None, as_of=AS_OF):
    every = followup.slots(storage.load_followup_inputs(db), as_of=as_of, schedule=SCHEDULE)
    return completion.classify(every, storage.load_sent_steps(db), storage.load_call_outcomes(db), as_of=as_of,
                               zone=zone)


def test_every_due_slot_is_classified_row_by_row(clinic):
    db, s1, s2 = clinic
    rows = classified(db, zone=CHICAGO)
    got = [(r.patient_id, r.slot, r.outcome, r.how) for r in rows.itertuples()]
    assert got == [
        ("P1", "baseline", "completed", "before_message"),
        ("P1", "week_0", "completed", "after_invitation"),
        ("P1", "week_1", "completed", "after_reminder"),
        ("P1", "week_2", "missed", ""),
        ("P1", "week_3", "completed", "by_phone"),
        ("P1", "week_4", "completed", "after_invitation"),  # sent 22:00 in Chicago on the day it was done
        ("P1", "week_5", "missed", ""),
        ("P1", "week_6", "open", ""),  # due 18 April, open until 24 April
        ("P2", "baseline", "missed", ""),
        ("P2", "week_0", "completed", "before_message"),
        ("P2", "week_1", "missed", ""),
        # P2's weeks 2+ fell due after the withdrawal (inactive); P3's planned series is not due yet
    ]
    assert rows.loc[1, "invitation_sent_on"] == pd.Timestamp("2025-03-07")
    assert rows.loc[2, "reminder_sent_on"] == pd.Timestamp("2025-03-16")


def test_the_day_a_message_was_sent_is_read_in_the_clinics_time_zone(clinic):
    db, *_ = clinic
    utc = classified(db, zone=None).set_index("slot").loc[lambda f: f["patient_id"] == "P1"]
    assert utc.loc["week_4", "how"] == "before_message"  # 03:00 UTC on 6 April: after the 5 April score
    assert utc.loc["week_4", "invitation_sent_on"] == pd.Timestamp("2025-04-06")


def test_a_slot_counts_from_its_due_day(clinic):
    db, *_ = clinic
    before = classified(db, as_of=D("2025-04-17"))
    assert "week_6" not in before.loc[before["patient_id"] == "P1", "slot"].tolist()  # due on 18 April
    on_the_day = classified(db, as_of=D("2025-04-18"))
    assert on_the_day.loc[on_the_day["slot"] == "week_6", "outcome"].tolist() == ["open"]


def test_a_call_without_a_score_is_not_a_completion(clinic):
    db, s1, _ = clinic
    storage.add_call_outcome(db, "P1", series_id=s1, slot="week_5", due_on=D("2025-04-11"),
                             outcome="completed_by_phone", by="dr.lee", now=at("2025-04-14T15:00:00"))
    rows = classified(db).set_index("slot").loc[lambda f: f["patient_id"] == "P1"]
    assert (rows.loc["week_5", "outcome"], rows.loc["week_5", "how"]) == ("missed", "")


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927; z for 95 %), in percent."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def row_of(table, group):
    rows = table[table["group"] == group]
    assert len(rows) == 1, (group, table)
    return rows.iloc[0]


COUNTS = list(completion.COUNT_COLUMNS)


def test_per_formal_time_point(clinic):
    db, *_ = clinic
    diagnoses = storage.load_patient_diagnoses(db)
    every = followup.slots(storage.load_followup_inputs(db), as_of=AS_OF, schedule=SCHEDULE)
    result = completion.completion(every, storage.load_sent_steps(db), storage.load_call_outcomes(db), diagnoses,
                                   as_of=AS_OF, zone=CHICAGO)
    t = result.timepoints
    assert t["label"].tolist() == ["Baseline", "End of series", "1 month", "3 months", "6 months",
                                   "All formal time points"]
    # n_due, n_completed, n_open, n_missed, before message, after invitation, after reminder, by phone
    assert t[COUNTS].values.tolist() == [
        [2, 1, 0, 1, 1, 0, 0, 0],  # baseline: P1 before any message, P2 missed
        [2, 2, 0, 0, 1, 1, 0, 0],  # end of series: P2 before any message, P1 after the invitation
        [1, 1, 0, 0, 0, 1, 0, 0],  # 1 month: P1 (P2 inactive)
        [0, 0, 0, 0, 0, 0, 0, 0],  # 3 months: not due yet
        [0, 0, 0, 0, 0, 0, 0, 0],
        [5, 4, 0, 1, 2, 2, 0, 0],
    ]
    total = row_of(t, completion.TOTAL)
    assert total["pct_completed"] == pytest.approx(80.0)
    assert (total["ci_low"], total["ci_high"]) == pytest.approx(wilson(4, 5))
    assert math.isnan(row_of(t, "week_13")["pct_completed"])  # nothing due: no percentage
    assert result.n_due == 5


def test_per_week(clinic):
    db, *_ = clinic
    every = followup.slots(storage.load_followup_inputs(db), as_of=AS_OF, schedule=SCHEDULE)
    result = completion.completion(every, storage.load_sent_steps(db), storage.load_call_outcomes(db),
                                   storage.load_patient_diagnoses(db), as_of=AS_OF, zone=CHICAGO)
    w = result.weeks
    assert w["group"].tolist() == list(range(27))  # week 0 to week 26, no total row
    assert w.loc[:7, COUNTS].values.tolist() == [
        [2, 2, 0, 0, 1, 1, 0, 0],
        [2, 1, 0, 1, 0, 0, 1, 0],  # week 1: P1 after the reminder, P2 missed
        [1, 0, 0, 1, 0, 0, 0, 0],  # week 2: P1 missed (P2 inactive from here)
        [1, 1, 0, 0, 0, 0, 0, 1],  # week 3: P1 by phone
        [1, 1, 0, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0, 0, 0],  # week 6: still open
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert w.loc[4, "label"] == "1 month" and w.loc[5, "label"] == "Week 5"
    assert w.loc[1, "pct_completed"] == pytest.approx(50.0)
    assert (w.loc[1, "ci_low"], w.loc[1, "ci_high"]) == pytest.approx(wilson(1, 2))


def test_by_clinician_and_diagnosis_over_the_formal_time_points(clinic):
    db, *_ = clinic
    diagnoses = storage.load_patient_diagnoses(db)
    labels = diagnoses.set_index("patient_id")["diagnosis_label"]
    every = followup.slots(storage.load_followup_inputs(db), as_of=AS_OF, schedule=SCHEDULE)
    result = completion.completion(every, storage.load_sent_steps(db), storage.load_call_outcomes(db), diagnoses,
                                   as_of=AS_OF, zone=CHICAGO)
    c = result.by_clinician
    assert c["group"].tolist() == ["dr.lee", "dr.kim", completion.TOTAL]  # largest first, the total last
    assert c[COUNTS].values.tolist() == [[3, 3, 0, 0, 1, 2, 0, 0], [2, 1, 0, 1, 1, 0, 0, 0],
                                         [5, 4, 0, 1, 2, 2, 0, 0]]
    d = result.by_diagnosis
    assert d["group"].tolist() == [labels["P1"], labels["P2"], completion.TOTAL]
    assert d["n_completed"].tolist() == [3, 1, 4]
    # the clinician's detail: every due slot with its patient and diagnosis
    assert len(result.slots) == 11 and set(result.slots["diagnosis"]) == {labels["P1"], labels["P2"]}


def test_the_display_table_states_completed_over_due_and_the_interval():
    table = completion.summarise(pd.DataFrame({"outcome": ["completed", "missed"], "how": ["by_phone", ""]}),
                                 pd.Series(["a", "a"]), total=None)
    shown = completion.display(table, group_label="Group")
    low, high = wilson(1, 2)
    assert shown.iloc[0].tolist() == ["a", "1 / 2", f"50.0 ({low:.1f}–{high:.1f})", "0", "1", "0", "0", "0", "1"]


def test_an_empty_clinic_has_zero_rows_not_errors(db):
    every = followup.slots(storage.load_followup_inputs(db), as_of=AS_OF, schedule=SCHEDULE)
    result = completion.completion(every, storage.load_sent_steps(db), storage.load_call_outcomes(db),
                                   storage.load_patient_diagnoses(db), as_of=AS_OF)
    assert result.timepoints["n_due"].tolist() == [0]  # the total row only
    assert result.weeks.empty and result.by_clinician["n_due"].tolist() == [0]


# The quality-improvement view ---------------------------------------------------------------------------------


def synthetic_slots(n_done: int, n_missed: int, clinicians=("dr.lee",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Patients with one series each ending 7 March 2025; ``n_done`` have every score, ``n_missed`` none."""
    n = n_done + n_missed
    ids = [f"P{i:03d}" for i in range(n)]
    series = pd.DataFrame({"series_id": range(1, n + 1), "patient_id": ids,
                           "first_infusion": pd.Timestamp("2025-03-03"), "last_infusion": pd.Timestamp("2025-03-07"),
                           "planned_first": pd.Timestamp("2025-03-03"), "planned_last": pd.Timestamp("2025-03-07"),
                           "state": "given", "planned_on": pd.Timestamp("2025-01-01"),
                           "entered_by": [clinicians[i % len(clinicians)] for i in range(n)]})
    days = pd.date_range("2025-02-20", "2025-09-30", freq="D")
    scores = pd.DataFrame({"patient_id": [p for p in ids[:n_done] for _ in days],
                           "assessed_on": list(days) * n_done})
    inputs = {"patients": pd.DataFrame({"patient_id": ids, "disposition": "active", "disposition_on": pd.NaT}),
              "series": series, "days": scores}
    diagnoses = pd.DataFrame({"patient_id": ids, "diagnosis_label": ["CRPS" if i < n - 3 else "Rare"
                                                                     for i in range(n)]})
    return followup.slots(inputs, as_of=date(2025, 10, 31), schedule=SCHEDULE), diagnoses


def shown_small_counts(table: pd.DataFrame, threshold: int) -> list:
    """Cells of count columns that show a number from 1 to ``threshold``."""
    out = []
    for column in completion.COUNT_COLUMNS:
        for value in table[column]:
            if isinstance(value, str) and value.replace(",", "").isdigit() and 1 <= int(value.replace(",", "")) \
                    <= threshold:
                out.append((column, value))
    return out


def test_qi_sees_no_small_cell_no_patient_and_pooled_groups():
    every, diagnoses = synthetic_slots(40, 5, clinicians=("dr.lee", "dr.lee", "dr.lee", "dr.kim"))
    result = completion.completion(every, None, None, diagnoses, as_of=date(2025, 10, 31), qi=True,
                                   small_cell_max=10)
    assert result.qi and result.slots.empty and "No patient identifiers" in result.notice
    for table in (result.timepoints, result.weeks, result.by_clinician, result.by_diagnosis):
        assert shown_small_counts(table, 10) == []
    end = row_of(result.timepoints, "week_0")
    # 5 missed is small: hidden, and so is the due count it could be worked out from (45 - 40)
    assert (end["n_due"], end["n_completed"], end["n_missed"]) == ("*", "40", disclosure.small_marker(10))
    assert end["pct_completed"] == disclosure.HIDDEN
    # the week row of a time point shows what the time point's row shows
    assert result.weeks.iloc[0][COUNTS].tolist() == end[COUNTS].tolist()
    assert set(result.by_diagnosis["group"]) == {"CRPS", disclosure.POOLED, completion.TOTAL}
    assert "dr.kim" in set(result.by_clinician["group"])  # 11 patients: not pooled
    assert result.drawn_weeks["n_missed"].isna().iloc[0]  # hidden values are not drawn


def test_qi_pools_a_clinician_of_few_patients():
    every, diagnoses = synthetic_slots(40, 5, clinicians=("dr.lee",) * 9 + ("dr.kim",))
    result = completion.completion(every, None, None, diagnoses, as_of=date(2025, 10, 31), qi=True,
                                   small_cell_max=10)
    assert result.by_clinician["group"].tolist() == ["dr.lee", disclosure.POOLED, completion.TOTAL]
    assert shown_small_counts(result.by_clinician, 10) == []
    clinician = completion.completion(every, None, None, diagnoses, as_of=date(2025, 10, 31))
    assert clinician.by_clinician["group"].tolist() == ["dr.lee", "dr.kim", completion.TOTAL]


def test_the_weekly_figure_stacks_how_completions_came_as_shares_of_the_slots_due():
    from outcomes import figures

    weeks = completion.summarise(pd.DataFrame({"outcome": ["completed", "completed", "missed", "completed"],
                                               "how": ["by_phone", "before_message", "", "after_reminder"]}),
                                 pd.Series([0, 0, 0, 1]), labels={0: "End of series", 1: "Week 1"}, total=None)
    fig = figures.followup_weeks_figure(weeks)
    assert [t.name for t in fig.data] == ["Before any message", "After the invitation", "After the reminder",
                                          "By phone"]
    assert [y for t in fig.data for y in t.y] == pytest.approx([100 / 3, 0, 0, 0, 0, 100, 100 / 3, 0])
    assert fig.layout.barmode == "stack"
    hidden = weeks.astype({"n_by_phone": float})
    hidden.loc[0, "n_by_phone"] = float("nan")  # a QI-hidden value draws no bar
    assert math.isnan(figures.followup_weeks_figure(hidden).data[3].y[0])
    assert figures.followup_weeks_figure(weeks.iloc[:0]).layout.title.text == "No follow-up slot has fallen due yet"


def test_qi_counts_only_slots_closed_before_the_cut(clinic):
    db, *_ = clinic
    every = followup.slots(storage.load_followup_inputs(db), as_of=AS_OF, schedule=SCHEDULE)
    args = (every, storage.load_sent_steps(db), storage.load_call_outcomes(db), storage.load_patient_diagnoses(db))
    qi = completion.completion(*args, as_of=AS_OF, zone=CHICAGO, qi=True, small_cell_max=0)  # nothing hidden
    clinician = completion.completion(*args, as_of=AS_OF, zone=CHICAGO)
    assert clinician.weeks.loc[6, "n_open"] == 1  # P1's week 6, open until 24 April
    assert qi.weeks.loc[6, "n_due"] == "0" and qi.weeks.loc[5, "n_due"] == "1"
    assert set(qi.weeks["n_open"]) == {"0"}
    assert qi.timepoints["n_due"].tolist() == ["2", "2", "1", "0", "0", "5"]  # every formal slot had closed
