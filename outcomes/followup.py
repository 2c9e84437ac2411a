"""The follow-up schedule: which questionnaire each patient owes, when, and how it stands (docs/followup.md).

Pure rules over three tidy frames (``storage.load_followup_inputs``): no database, no clock. ``as_of``
is always passed in (lifelines' style). The options live in :class:`Schedule`, built from the settings
by :meth:`Schedule.from_settings`.

A patient's **follow-up window** runs from ``baseline_days`` before the first infusion of a series
(planned or given) to ``followup_days`` after its last infusion; a later series (a booster) opens a new
window, and the slots of the earlier one that would fall due after the new window opens are dropped. In it:

* the **baseline** slot: due ``baseline_due_days`` (7) before the first infusion, or on the day the series
  was planned if that is later; open until the first infusion; done by any score in the baseline window
  (``baseline_days`` before the first infusion up to it), the same window the analyses use;
* **weekly** slots: slot *k* is due on the last infusion + 7·*k* days (*k* = 0 is the end of the series),
  open for ``slot_days`` (7), done by any score dated in it (a check-in, a paper form, an import); the
  slots whose days hold the target day of an analysis window (end of series, 1, 3, 6 months) are its
  formal **time points**.

A slot is ``upcoming`` before it falls due, ``due`` from its due day, ``overdue`` from
``overdue_after_days`` later (day 3), ``done`` once a score is dated in it, ``missed`` when it closed
undone, and ``inactive`` when it falls due after the patient left active follow-up (disposition).

Example
-------
>>> import pandas as pd
>>> from datetime import date
>>> inputs = {
...     "patients": pd.DataFrame({"patient_id": ["P1"], "disposition": ["active"], "disposition_on": [pd.NaT]}),
...     "series": pd.DataFrame({"series_id": [1], "patient_id": ["P1"],
...         "first_infusion": pd.to_datetime(["2025-03-03"]), "last_infusion": pd.to_datetime(["2025-03-07"]),
...         "planned_first": pd.to_datetime(["2025-03-03"]), "planned_last": pd.to_datetime(["2025-03-07"]),
...         "state": ["given"], "planned_on": pd.to_datetime(["2025-02-01"]), "entered_by": ["dr.lee"]}),
...     "days": pd.DataFrame({"patient_id": ["P1", "P1"],
...                           "assessed_on": pd.to_datetime(["2025-02-28", "2025-03-15"])}),
... }
>>> s = slots(inputs, as_of=date(2025, 3, 20))
>>> [(r.slot, f"{r.due_on:%d %b}", r.status) for r in s.head(4).itertuples()]
[('baseline', '24 Feb', 'done'), ('week_0', '07 Mar', 'missed'), ('week_1', '14 Mar', 'done'), ('week_2', '21 Mar', 'upcoming')]
>>> patient_status(s, inputs["patients"], as_of=date(2025, 3, 20)).loc[0, ["status", "slot_label"]].tolist()
['done', 'Week 1']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .settings import Settings, Window

#: Status of a slot, and of a patient today (a patient may also be ``complete``, ``inactive`` or ``no series``).
SLOT_STATUSES = ("upcoming", "due", "overdue", "done", "missed", "inactive")
PATIENT_STATUSES = ("upcoming", "due", "overdue", "done", "missed", "complete", "inactive", "no series")
PATIENT_STATUS_LABELS = {"upcoming": "Upcoming", "due": "Due", "overdue": "Overdue", "done": "Done",
                         "missed": "Missed", "complete": "Follow-up complete", "inactive": "Inactive",
                         "no series": "No series"}
#: Kinds of slot; which questionnaires each asks is the setting ``<kind>_forms``.
SLOT_KINDS = ("baseline", "weekly", "timepoint")

SLOT_COLUMNS = ("patient_id", "series_id", "slot", "week", "kind", "timepoint", "label", "opens_on", "due_on",
                "closes_on", "done_on", "status", "overdue_from", "reminder_on", "call_from", "entered_by")


#: A patient with no slot open is "missed" when their last slot closed undone at most this many days ago
#: (during the infusion days after a missed baseline, say); longer ago (between two windows) "upcoming".
MISSED_WITHIN_DAYS = 30


@dataclass(frozen=True)
class Schedule:
    """The schedule's options (settings of the same names; docs/followup.md)."""

    baseline_days: int = 30
    followup_days: int = 182
    baseline_due_days: int = 7
    slot_days: int = 7
    overdue_after_days: int = 2
    reminder_after_days: int = 2
    call_after_days: int = 3
    timepoints: tuple[tuple[str, str, int], ...] = (("end_of_series", "End of series", 0), ("month_1", "1 month", 30),
                                                    ("month_3", "3 months", 91), ("month_6", "6 months", 182))

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        return cls(baseline_days=settings.baseline_days, followup_days=settings.followup_days,
                   baseline_due_days=settings.baseline_due_days, slot_days=settings.checkin_cadence_days,
                   overdue_after_days=settings.checkin_overdue_days,
                   reminder_after_days=settings.reminder_after_days, call_after_days=settings.call_list_after_days,
                   timepoints=_timepoints(settings.windows))

    @property
    def weeks(self) -> int:
        """The last weekly slot: the one due on or before ``followup_days`` after the last infusion."""
        return self.followup_days // self.slot_days

    def label(self, slot: object) -> str:
        """A stored slot name in words: ``baseline`` → "Baseline", ``week_4`` → "1 month", ``week_5`` → "Week 5"
        (anything else, e.g. a test message's empty slot, as ""). Vectorise with ``Series.map``."""
        if slot == "baseline":
            return "Baseline"
        if isinstance(slot, str) and slot.startswith("week_") and slot[5:].isdigit():
            week = int(slot[5:])
            return self.timepoint_weeks().get(week, ("", f"Week {week}"))[1]
        return ""

    def open_since(self, as_of: date) -> date:
        """The first day a score can mark a slot open on ``as_of`` done: a slot opens at most
        ``baseline_days`` (the baseline) or ``slot_days`` (a week) before it; older score days need not be read
        for ``slots(only_open=True)``."""
        return as_of - timedelta(days=max(self.baseline_days, self.slot_days))

    def status_days(self) -> int:
        """How many days back a score can change a patient's status today (:func:`patient_status`): the open
        slot, or the last one closed in the last :data:`MISSED_WITHIN_DAYS` days, opened at most this long
        ago (a baseline slot is ``baseline_days`` long, a weekly one ``slot_days``)."""
        return MISSED_WITHIN_DAYS + max(self.baseline_days, self.slot_days)

    def timepoint_weeks(self) -> dict[int, tuple[str, str]]:
        """Slot number → (window name, label) of the formal time points: the slot whose days hold the
        window's target day."""
        return {target // self.slot_days: (name, label) for name, label, target in self.timepoints
                if target // self.slot_days <= self.weeks}


def _timepoints(windows: Sequence[Window]) -> tuple[tuple[str, str, int], ...]:
    return tuple((w.name, w.label, w.target) for w in windows)


def _days(values: pd.Series | np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as int64 (NaT → a very small number)."""
    out = pd.to_datetime(pd.Series(values)).to_numpy("datetime64[D]").astype("int64")
    return out


def _day_series(days: np.ndarray) -> pd.Series:
    return pd.Series(days.astype("datetime64[D]").astype("datetime64[ns]"))


_NAT = np.iinfo(np.int64).min


def slots(inputs: Mapping[str, pd.DataFrame], *, as_of: date, schedule: Schedule | None = None,
          only_open: bool = False, closed_before: date | None = None) -> pd.DataFrame:
    """Every follow-up slot of every series, with its status on ``as_of``.

    Parameters
    ----------
    inputs
        ``storage.load_followup_inputs``: ``patients`` (``patient_id, disposition`` and optionally
        ``disposition_on``), ``series`` and ``days``.
    only_open
        Only the slots open on ``as_of`` (the baseline slot from its due day to the first infusion, a
        weekly slot during its 7 days): what the reminder run and the call list need, far faster for
        a large clinic.
    closed_before
        A series whose last weekly slot closed before this day keeps only that slot: all that
        :func:`patient_status` needs of it (with ``as_of - schedule.status_days()``), at a tenth of the rows.

    Returns
    -------
    pandas.DataFrame
        :data:`SLOT_COLUMNS`, one row per slot, by patient, series and slot: ``slot`` (``baseline``,
        ``week_0``...), ``week`` (<NA> for the baseline), ``kind`` (``baseline``, ``weekly``,
        ``timepoint``), ``timepoint`` (the analysis window's name, else ""), ``label`` ("Baseline",
        "End of series", "Week 2", "1 month"...), ``opens_on, due_on, closes_on`` (the days a score
        counts), ``done_on`` (the first such day with a score, up to ``as_of``), ``status``,
        ``overdue_from, reminder_on, call_from`` and ``entered_by`` (who recorded the series).
    """
    schedule = schedule or Schedule()
    today = np.datetime64(as_of, "D").astype("int64")
    series = inputs["series"]
    if len(series) == 0:
        return _empty()
    series = series.sort_values(["patient_id", "first_infusion"], kind="stable").reset_index(drop=True)
    first = _days(series["first_infusion"])
    last = np.maximum(_days(series["last_infusion"]),
                      np.where(series["planned_last"].isna(), _NAT, _days(series["planned_last"])))
    # A series entered after as_of (a replay of an earlier day) counts as planned by then.
    planned_on = np.minimum(np.where(series["planned_on"].isna(), _NAT, _days(series["planned_on"])), today)
    pid = series["patient_id"].to_numpy()
    # The next series of the same patient opens its own window: slots due from then on belong to it.
    same_next = np.r_[pid[1:] == pid[:-1], False]
    next_opens = np.where(same_next, np.r_[first[1:], 0] - schedule.baseline_days, np.iinfo(np.int64).max)

    n = len(series)
    weeks = schedule.weeks
    if only_open:
        k_now = (today - last) // schedule.slot_days
        weekly_rows = np.flatnonzero((today >= last) & (k_now <= weeks))
        weekly_k = k_now[weekly_rows]
    else:
        weekly_rows = np.repeat(np.arange(n), weeks + 1)
        weekly_k = np.tile(np.arange(weeks + 1), n)
        if closed_before is not None:
            old = last + schedule.slot_days * weeks + schedule.slot_days - 1 < np.datetime64(closed_before, "D").astype(
                "int64")
            keep_row = ~old[weekly_rows] | (weekly_k == weeks)
            weekly_rows, weekly_k = weekly_rows[keep_row], weekly_k[keep_row]
    w_due = last[weekly_rows] + schedule.slot_days * weekly_k
    w_open, w_close = w_due, w_due + schedule.slot_days - 1

    b_due = np.clip(np.maximum(first - schedule.baseline_due_days, planned_on), None, first)
    b_rows = np.arange(n)
    if closed_before is not None and not only_open:
        b_rows = np.flatnonzero(~old)
    if only_open:
        b_rows = np.flatnonzero((today >= b_due) & (today <= first))
    b_open, b_close = first[b_rows] - schedule.baseline_days, first[b_rows]

    rows = np.r_[b_rows, weekly_rows]
    week = np.r_[np.full(len(b_rows), -1), weekly_k]
    opens = np.r_[b_open, w_open]
    due = np.r_[b_due[b_rows], w_due]
    closes = np.r_[b_close, w_close]
    keep = due < next_opens[rows]
    rows, week, opens, due, closes = rows[keep], week[keep], opens[keep], due[keep], closes[keep]
    order = np.lexsort((week, rows))
    rows, week, opens, due, closes = rows[order], week[order], opens[order], due[order], closes[order]

    # Done: the first day with a score from the slot's opening to its closing (and not after as_of).
    patients = pd.Index(inputs["patients"]["patient_id"]).union(pd.Index(series["patient_id"].unique()))
    days = inputs["days"]
    days = days[days["assessed_on"] <= pd.Timestamp(as_of)]
    shift = np.int64(1) << 32
    offset = np.int64(1) << 31  # days since 1970 may be negative
    day_keys = np.sort(patients.get_indexer(days["patient_id"]).astype(np.int64) * shift
                       + _days(days["assessed_on"]) + offset)
    code = patients.get_indexer(pid[rows]).astype(np.int64) * shift
    day_keys = np.r_[day_keys, np.iinfo(np.int64).max]  # a sentinel after every real day
    at = np.searchsorted(day_keys, code + opens + offset, side="left")
    hit = day_keys[at]
    found = at < len(day_keys) - 1
    done = found & (hit <= code + closes + offset)
    done_on = np.where(done, hit - code - offset, _NAT)

    overdue_from = due + schedule.overdue_after_days
    status = np.select([done, today < due, today > closes, today >= overdue_from],
                       ["done", "upcoming", "missed", "overdue"], "due").astype(object)
    disposition = inputs["patients"].set_index("patient_id")
    inactive_on = _inactive_from(disposition, pid[rows])
    status = np.where(~done & (due >= inactive_on), "inactive", status)

    tp = schedule.timepoint_weeks()
    tp_name = np.array([tp.get(int(k), ("", ""))[0] for k in range(-1, weeks + 1)], dtype=object)
    names = np.array(["baseline"] + [f"week_{k}" for k in range(weeks + 1)], dtype=object)
    labels = np.array([schedule.label(n) for n in names], dtype=object)
    idx = week + 1
    kind = np.where(week < 0, "baseline", np.where(tp_name[idx] != "", "timepoint", "weekly"))
    label = labels[idx]
    return pd.DataFrame({
        "patient_id": pid[rows], "series_id": series["series_id"].to_numpy()[rows],
        "slot": names[idx], "week": pd.array(np.where(week < 0, pd.NA, week), dtype="Int64"),
        "kind": kind, "timepoint": tp_name[idx], "label": label,
        "opens_on": _day_series(opens), "due_on": _day_series(due), "closes_on": _day_series(closes),
        "done_on": _day_series(np.where(done, done_on, np.iinfo(np.int64).min)).where(done),
        "status": status,
        "overdue_from": _day_series(overdue_from),
        "reminder_on": _day_series(due + schedule.reminder_after_days),
        "call_from": _day_series(due + schedule.call_after_days),
        "entered_by": series["entered_by"].to_numpy()[rows],
    })


def _inactive_from(patients: pd.DataFrame, pid: np.ndarray) -> np.ndarray:
    """Per row, the first day a slot may no longer fall due (the disposition's day, or the far past when it
    is not known), or the far future for an active patient."""
    far = np.iinfo(np.int64).max
    active = patients["disposition"].eq("active")
    if "disposition_on" in patients:
        since = np.where(patients["disposition_on"].isna(), np.iinfo(np.int64).min // 2,
                         _days(patients["disposition_on"]))
    else:
        since = np.full(len(patients), np.iinfo(np.int64).min // 2)
    per_patient = pd.Series(np.where(active.to_numpy(), far, since), index=patients.index)
    return per_patient.reindex(pid).fillna(far).to_numpy(np.int64)


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in SLOT_COLUMNS})
    for c in ("opens_on", "due_on", "closes_on", "done_on", "overdue_from", "reminder_on", "call_from"):
        frame[c] = pd.Series(dtype="datetime64[ns]")
    frame["series_id"] = pd.Series(dtype="Int64")
    frame["week"] = pd.Series(dtype="Int64")
    return frame


PATIENT_STATUS_COLUMNS = ("patient_id", "status", "status_label", "series_id", "slot", "kind", "slot_label", "due_on",
                          "closes_on", "next_due", "next_label", "on_call_list", "window_ends")


def patient_status(all_slots: pd.DataFrame, patients: pd.DataFrame, *, as_of: date) -> pd.DataFrame:
    """One row per patient: how their follow-up stands on ``as_of``.

    ``status``: ``inactive`` (disposition not active), ``no series``, ``complete`` (every slot closed),
    else the status of the slot open today (``due``, ``overdue``, ``done``), or when none is open
    ``missed`` (the last slot closed undone, at most :data:`MISSED_WITHIN_DAYS` ago) or ``upcoming``.
    Only the done-ness of slots that opened in the last :meth:`Schedule.status_days` days matters, so the
    score days read may start then. ``slot``/``kind``/``slot_label``/``due_on``/
    ``closes_on`` name the open slot; ``next_due``/``next_label`` the next slot not yet due;
    ``on_call_list``: an open slot undone from its ``call_from`` day; ``window_ends``: the day the last
    slot closes.

    Needs every slot (``slots(..., only_open=False)``).
    """
    today = pd.Timestamp(as_of)
    out = patients[["patient_id", "disposition"]].copy()
    s = all_slots[all_slots["status"] != "inactive"]
    open_ = s[(s["due_on"] <= today) & (s["closes_on"] >= today)].drop_duplicates("patient_id", keep="last")
    closed = s[s["closes_on"] < today].drop_duplicates("patient_id", keep="last")
    recent = closed[closed["closes_on"] >= today - pd.Timedelta(days=MISSED_WITHIN_DAYS)]
    upcoming = s[s["due_on"] > today].drop_duplicates("patient_id", keep="first")
    ends = all_slots.groupby("patient_id")["closes_on"].max()
    o = open_.set_index("patient_id")
    for column, source in (("series_id", "series_id"), ("slot", "slot"), ("kind", "kind"), ("slot_label", "label"),
                           ("due_on", "due_on"), ("closes_on", "closes_on"), ("_open_status", "status"),
                           ("call_from", "call_from")):
        out[column] = out["patient_id"].map(o[source])
    out["_closed_status"] = out["patient_id"].map(closed.set_index("patient_id")["status"])
    out["_recent_status"] = out["patient_id"].map(recent.set_index("patient_id")["status"])
    u = upcoming.set_index("patient_id")
    out["next_due"] = out["patient_id"].map(u["due_on"])
    out["next_label"] = out["patient_id"].map(u["label"])
    out["window_ends"] = out["patient_id"].map(ends)
    has_series = out["patient_id"].isin(all_slots["patient_id"])
    out["status"] = np.select(
        [out["disposition"] != "active", ~has_series, out["_open_status"].notna(), out["next_due"].notna()
         & out["_recent_status"].eq("missed"), out["next_due"].notna(), out["_closed_status"].notna()],
        [np.array("inactive", dtype=object), "no series", out["_open_status"], "missed", "upcoming", "complete"],
        "upcoming")
    out["status_label"] = out["status"].map(PATIENT_STATUS_LABELS)
    out["on_call_list"] = (out["status"].isin(["due", "overdue"]) & (out["call_from"] <= today)).fillna(False)
    out["series_id"] = out["series_id"].astype("Int64")
    for c in ("due_on", "closes_on", "next_due", "window_ends"):  # typed even when there is no row
        out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")
    for c in ("slot", "kind", "slot_label", "next_label"):
        out[c] = out[c].astype(object)
    out["on_call_list"] = out["on_call_list"].astype(bool)
    return out[list(PATIENT_STATUS_COLUMNS)].reset_index(drop=True)


def call_list(open_slots: pd.DataFrame, patients: pd.DataFrame, *, as_of: date) -> pd.DataFrame:
    """The slots staff should phone about on ``as_of``: open, undone, from their ``call_from`` day, of
    active patients; longest waiting first."""
    today = pd.Timestamp(as_of)
    active = patients.loc[patients["disposition"] == "active", "patient_id"]
    on = open_slots[open_slots["status"].isin(["due", "overdue"]) & (open_slots["call_from"] <= today)
                    & open_slots["patient_id"].isin(active)]
    return on.sort_values(["due_on", "patient_id"]).reset_index(drop=True)
