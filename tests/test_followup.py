"""The follow-up schedule, rule by rule and boundary by boundary (docs/followup.md)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from outcomes import followup, storage
from outcomes.followup import Schedule, patient_status, slots
from outcomes.settings import load_settings

D = date.fromisoformat


def inputs(series, days=(), patients=None):
    """series: (patient, first, last[, state, planned_on]); days: (patient, day)."""
    rows = []
    for i, s in enumerate(series, start=1):
        pid, first, last, *rest = s
        state = rest[0] if rest else "given"
        planned_on = rest[1] if len(rest) > 1 else D(first) - timedelta(days=60)
        rows.append({"series_id": i, "patient_id": pid, "first_infusion": pd.Timestamp(first),
                     "last_infusion": pd.Timestamp(last), "planned_first": pd.Timestamp(first),
                     "planned_last": pd.Timestamp(last), "state": state, "planned_on": pd.Timestamp(planned_on),
                     "entered_by": "dr.lee"})
    ids = sorted({r["patient_id"] for r in rows} | {p for p, _ in days})
    if patients is None:
        patients = pd.DataFrame({"patient_id": ids, "disposition": "active", "disposition_on": pd.NaT})
    return {"patients": patients, "series": pd.DataFrame(rows),
            "days": pd.DataFrame({"patient_id": [p for p, _ in days],
                                  "assessed_on": pd.to_datetime([d for _, d in days])})}


def slot(frame, name, patient="P1", series_id=None):
    rows = frame[(frame["slot"] == name) & (frame["patient_id"] == patient)]
    if series_id is not None:
        rows = rows[rows["series_id"] == series_id]
    assert len(rows) == 1, rows
    return rows.iloc[0]


ONE = [("P1", "2025-03-03", "2025-03-07")]  # a Monday-to-Friday series


def test_weekly_slots_fall_due_on_the_last_infusion_plus_seven_k_and_stay_open_seven_days():
    s = slots(inputs(ONE), as_of=D("2025-01-01"))
    weekly = s[s["kind"] != "baseline"]
    assert len(weekly) == 27  # week 0 (end of series) to week 26 (182 days)
    for k in (0, 1, 13, 26):
        row = slot(s, f"week_{k}")
        assert row["due_on"] == pd.Timestamp("2025-03-07") + pd.Timedelta(days=7 * k)
        assert row["opens_on"] == row["due_on"]
        assert row["closes_on"] == row["due_on"] + pd.Timedelta(days=6)
    assert slot(s, "week_26")["due_on"] == pd.Timestamp("2025-03-07") + pd.Timedelta(days=182)


def test_formal_time_points_are_the_slots_holding_the_analysis_windows_target_days():
    s = slots(inputs(ONE), as_of=D("2025-01-01"))
    points = s[s["kind"] == "timepoint"].set_index("slot")["label"].to_dict()
    assert points == {"week_0": "End of series", "week_4": "1 month", "week_13": "3 months", "week_26": "6 months"}
    last = pd.Timestamp("2025-03-07")
    for name, target in (("week_4", 30), ("week_13", 91), ("week_26", 182)):
        row = slot(s, name)
        assert row["opens_on"] <= last + pd.Timedelta(days=target) <= row["closes_on"]
    assert slot(s, "week_5")["label"] == "Week 5" and slot(s, "week_5")["kind"] == "weekly"


def test_the_formal_time_points_follow_the_settings_windows():
    schedule = Schedule.from_settings(load_settings({}))
    assert schedule.timepoint_weeks() == {0: ("end_of_series", "End of series"), 4: ("month_1", "1 month"),
                                          13: ("month_3", "3 months"), 26: ("month_6", "6 months")}


@pytest.mark.parametrize("as_of, status", [
    ("2025-03-06", "upcoming"),   # the day before week 0 falls due (last infusion is 7 Mar)
    ("2025-03-07", "due"),        # day 1 of the slot: the due day
    ("2025-03-08", "due"),        # day 2
    ("2025-03-09", "overdue"),    # day 3: overdue from here
    ("2025-03-13", "overdue"),    # day 7: the last day it is open
    ("2025-03-14", "missed"),     # closed undone
])
def test_a_slot_is_upcoming_due_overdue_then_missed(as_of, status):
    assert slot(slots(inputs(ONE), as_of=D(as_of)), "week_0")["status"] == status


@pytest.mark.parametrize("scored, status", [
    ("2025-03-06", "missed"),  # the day before the slot opens counts for nothing here (it is the series)
    ("2025-03-07", "done"),    # its first day
    ("2025-03-13", "done"),    # its last day
    ("2025-03-14", "missed"),  # the next slot's first day: done is week 1, not week 0
])
def test_a_slot_is_done_by_any_score_dated_inside_it(scored, status):
    s = slots(inputs(ONE, days=[("P1", scored)]), as_of=D("2025-03-20"))
    assert slot(s, "week_0")["status"] == status
    if status == "done":
        assert slot(s, "week_0")["done_on"] == pd.Timestamp(scored)
    if scored == "2025-03-14":
        assert slot(s, "week_1")["status"] == "done"


def test_a_score_after_as_of_does_not_count():
    s = slots(inputs(ONE, days=[("P1", "2025-03-10")]), as_of=D("2025-03-09"))
    assert slot(s, "week_0")["status"] == "overdue" and pd.isna(slot(s, "week_0")["done_on"])


def test_reminder_and_call_list_days():
    row = slot(slots(inputs(ONE), as_of=D("2025-03-07")), "week_0")
    assert row["reminder_on"] == pd.Timestamp("2025-03-09")   # two days after the invitation
    assert row["call_from"] == pd.Timestamp("2025-03-10")     # day 4
    assert row["overdue_from"] == pd.Timestamp("2025-03-09")  # day 3


def test_baseline_is_due_seven_days_before_the_first_infusion_and_open_until_it():
    s = slots(inputs(ONE), as_of=D("2025-02-01"))
    row = slot(s, "baseline")
    assert (row["opens_on"], row["due_on"], row["closes_on"]) == (
        pd.Timestamp("2025-02-01"), pd.Timestamp("2025-02-24"), pd.Timestamp("2025-03-03"))
    for as_of, status in (("2025-02-23", "upcoming"), ("2025-02-24", "due"), ("2025-02-26", "overdue"),
                          ("2025-03-03", "overdue"), ("2025-03-04", "missed")):
        assert slot(slots(inputs(ONE), as_of=D(as_of)), "baseline")["status"] == status, as_of


@pytest.mark.parametrize("scored, done", [("2025-01-31", False), ("2025-02-01", True), ("2025-03-03", True)])
def test_baseline_is_done_by_any_score_in_the_baseline_window(scored, done):
    s = slots(inputs(ONE, days=[("P1", scored)]), as_of=D("2025-03-05"))
    assert (slot(s, "baseline")["status"] == "done") is done


def test_baseline_of_a_series_planned_late_falls_due_the_day_it_was_planned():
    late = [("P1", "2025-03-03", "2025-03-07", "planned", "2025-02-28")]
    assert slot(slots(inputs(late), as_of=D("2025-02-28")), "baseline")["due_on"] == pd.Timestamp("2025-02-28")
    after = [("P1", "2025-03-03", "2025-03-07", "given", "2025-04-01")]  # recorded after the fact
    assert slot(slots(inputs(after), as_of=D("2025-04-01")), "baseline")["due_on"] == pd.Timestamp("2025-03-03")


def test_a_booster_opens_a_new_window_and_ends_the_old_one():
    booster = ONE + [("P1", "2025-06-02", "2025-06-02")]
    s = slots(inputs(booster), as_of=D("2025-05-01"))
    old = s[s["series_id"] == 1]
    opens = pd.Timestamp("2025-06-02") - pd.Timedelta(days=30)  # the booster's window opens 30 days before it
    assert old["due_on"].max() < opens <= old["due_on"].max() + pd.Timedelta(days=7)
    assert "week_26" not in set(old["slot"])  # the six-month slot of series 1 now belongs to the booster's window
    new = s[s["series_id"] == 2]
    assert new["slot"].tolist()[:2] == ["baseline", "week_0"] and len(new) == 28
    assert slot(s, "baseline", series_id=2)["due_on"] == pd.Timestamp("2025-05-26")


def test_inactive_patients_owe_nothing_from_their_disposition_on():
    patients = pd.DataFrame({"patient_id": ["P1"], "disposition": ["withdrawn"],
                             "disposition_on": [pd.Timestamp("2025-03-20")]})
    s = slots(inputs(ONE, days=[("P1", "2025-03-10")], patients=patients), as_of=D("2025-04-30"))
    assert slot(s, "week_0")["status"] == "done"
    assert slot(s, "week_1")["status"] == "missed"        # due 14 Mar, before the withdrawal
    assert slot(s, "week_2")["status"] == "inactive"      # due 21 Mar, after it
    assert (s[s["due_on"] >= pd.Timestamp("2025-03-20")]["status"] == "inactive").all()
    st = patient_status(s, patients, as_of=D("2025-04-30"))
    assert st.loc[0, "status"] == "inactive" and not st.loc[0, "on_call_list"]


@pytest.mark.parametrize("as_of, days, status, on_call", [
    ("2024-12-01", [], "upcoming", False),              # before the baseline falls due
    ("2025-02-24", [], "due", False),                   # baseline due
    ("2025-02-27", [], "overdue", True),                # baseline day 4: on the call list
    ("2025-03-04", [("P1", "2025-02-25")], "upcoming", False),  # in the series, baseline done
    ("2025-03-04", [], "missed", False),                # in the series, baseline missed
    ("2025-03-07", [], "due", False),                   # end of series
    ("2025-03-10", [], "overdue", True),                # end of series, day 4
    ("2025-03-10", [("P1", "2025-03-08")], "done", False),
    ("2025-09-11", [], "overdue", True),                # week 26 (due 5 Sep), day 7: the last day of follow-up
    ("2025-09-12", [], "complete", False),              # every slot closed
])
def test_patient_status_today(as_of, days, status, on_call):
    data = inputs(ONE, days=days)
    st = patient_status(slots(data, as_of=D(as_of)), data["patients"], as_of=D(as_of))
    assert (st.loc[0, "status"], bool(st.loc[0, "on_call_list"])) == (status, on_call)
    assert st.loc[0, "status_label"] == followup.PATIENT_STATUS_LABELS[status]


def test_patient_status_without_a_series_and_when_inactive():
    patients = pd.DataFrame({"patient_id": ["P1", "P2"], "disposition": ["active", "deceased"],
                             "disposition_on": [pd.NaT, pd.Timestamp("2025-01-01")]})
    data = {"patients": patients, "series": inputs([])["series"], "days": inputs([])["days"]}
    st = patient_status(slots(data, as_of=D("2025-03-01")), patients, as_of=D("2025-03-01"))
    assert st.set_index("patient_id")["status"].to_dict() == {"P1": "no series", "P2": "inactive"}


def test_next_due_names_the_next_slot():
    data = inputs(ONE)
    st = patient_status(slots(data, as_of=D("2025-03-10")), data["patients"], as_of=D("2025-03-10"))
    assert (st.loc[0, "slot_label"], st.loc[0, "next_label"]) == ("End of series", "Week 1")
    assert st.loc[0, "next_due"] == pd.Timestamp("2025-03-14")
    assert st.loc[0, "window_ends"] == pd.Timestamp("2025-09-11")


@pytest.mark.parametrize("as_of", ["2025-01-15", "2025-02-24", "2025-03-03", "2025-03-05", "2025-03-07",
                                   "2025-04-11", "2025-09-11", "2025-09-12", "2025-05-30", "2025-06-02"])
def test_only_open_gives_exactly_the_open_slots_of_the_full_schedule(as_of):
    data = inputs(ONE + [("P1", "2025-06-02", "2025-06-02"), ("P2", "2025-02-10", "2025-02-14")],
                  days=[("P1", "2025-03-08"), ("P2", "2025-02-12"), ("P2", "2025-03-01")])
    full = slots(data, as_of=D(as_of))
    today = pd.Timestamp(as_of)
    expected = full[(full["due_on"] <= today) & (full["closes_on"] >= today)].reset_index(drop=True)
    assert_frame = pd.testing.assert_frame_equal
    assert_frame(slots(data, as_of=D(as_of), only_open=True).reset_index(drop=True), expected)


def test_slot_forms_per_kind_come_from_the_settings():
    settings = load_settings({"OUTCOMES_TIMEPOINT_FORMS": "depression_sf8a_v1.0"})
    assert settings.slot_forms("weekly") == settings.checkin_forms
    assert settings.slot_forms("timepoint") == ("depression_sf8a_v1.0",)
    with pytest.raises(ValueError, match="baseline, weekly or timepoint"):
        settings.slot_forms("monthly")


def test_the_schedule_reads_what_storage_gives(tmp_path):
    from datetime import UTC, datetime
    db = storage.connect(tmp_path / "c.db")
    storage.add_patient(db, patient_id="P1", entered_by="dr.lee")
    storage.add_series(db, patient_id="P1", first_infusion=D("2025-03-03"), last_infusion=D("2025-03-07"),
                       infusions=5, entered_by="dr.lee")
    storage.save_assessment(db, patient_id="P1", assessed_on=D("2025-03-08"), domain=load_settings().domains.names[0],
                            t_score=60.0, method="imported", source="clinician", entered_by="dr.lee")
    data = storage.load_followup_inputs(db)
    s = slots(data, as_of=D("2025-03-10"))
    assert slot(s, "week_0")["status"] == "done" and slot(s, "week_0")["entered_by"] == "dr.lee"
    assert slot(s, "baseline")["status"] == "missed"
    del datetime, UTC


def test_slot_names_in_words():
    schedule = Schedule()
    assert [schedule.label(s) for s in ("baseline", "week_0", "week_4", "week_5", "week_26", None, "x")] == [
        "Baseline", "End of series", "1 month", "Week 5", "6 months", "", ""]


@pytest.mark.parametrize("as_of", ["2025-01-15", "2025-03-04", "2025-03-10", "2025-06-03", "2025-09-12",
                                   "2025-12-01", "2026-02-01", "2026-09-01"])
def test_patient_status_is_the_same_from_the_recent_slots_and_score_days_only(as_of):
    """What the roster reads in a large clinic (clinic._followup_now) gives every patient the status the full
    schedule gives."""
    data = inputs(ONE + [("P1", "2025-06-02", "2025-06-02"), ("P2", "2025-02-10", "2025-02-14"),
                         ("P3", "2024-01-08", "2024-01-12"), ("P3", "2026-02-09", "2026-02-13")],
                  days=[("P1", "2025-03-08"), ("P1", "2025-05-20"), ("P2", "2025-02-12"), ("P2", "2025-03-01"),
                        ("P3", "2024-02-01"), ("P3", "2026-01-20")])
    day = D(as_of)
    full = patient_status(slots(data, as_of=day), data["patients"], as_of=day)
    since = day - timedelta(days=Schedule().status_days())
    recent = {**data, "days": data["days"][data["days"]["assessed_on"] >= pd.Timestamp(since)]}
    reduced = slots(recent, as_of=day, closed_before=since)
    assert len(reduced) <= len(slots(data, as_of=day))
    if as_of == "2026-09-01":  # every series but P3's booster closed long ago: its 28 slots, one slot of each
        assert len(reduced) == 28 + 3  # other series (P1's first lost its last slot to P1's booster window)
    pd.testing.assert_frame_equal(patient_status(reduced, data["patients"], as_of=day), full)
