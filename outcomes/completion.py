"""Follow-up completion: of the slots that fell due, how many were completed, and how (docs/followup.md).

Pure: tidy frames in, tidy frames out; no database, no clock (``as_of`` is passed in). The inputs are
every slot of the schedule (:func:`outcomes.followup.slots` with ``only_open=False``), the sent steps
(``storage.load_sent_steps``), the call outcomes (``storage.load_call_outcomes``) and, for the breakdowns,
each patient's diagnosis label.

Definitions
-----------
* A slot is **due** on ``as_of`` when its due day is on or before ``as_of`` (``due_on <= as_of``) and it is
  not ``inactive`` (it fell due after the patient left active follow-up). Slots not yet due (``upcoming``)
  are not counted, even when a score already lies in them (a baseline done early counts from its due day).
* A due slot is **completed** when a score is dated in it (status ``done``: a check-in, a paper form entered
  by staff, an import), **open** while it is still open and undone (``due``/``overdue``), **missed** once it
  closed undone. ``n_due = n_completed + n_open + n_missed``.
* **How** a completion came, one answer per completed slot, the first rule that holds:

  1. ``by_phone``: a call outcome ``completed_by_phone`` was recorded for that patient, series and slot;
  2. ``after_reminder``: the reminder was sent on or before the day of completion (``done_on``);
  3. ``after_invitation``: the invitation was sent on or before ``done_on``;
  4. ``before_message``: otherwise (no message was sent before the patient completed it).

  The day a message was sent is its UTC moment read in the clinic's time zone (``zone``; UTC when None).
  A call recorded as ``completed_by_phone`` whose paper answers were never entered leaves the slot open or
  missed: completion is a score in the slot, not a call.
* The **formal time points** are the baseline and the weekly slots that hold an analysis window's target
  day (end of series, 1, 3 and 6 months). The breakdowns by clinician (who recorded the series,
  ``entered_by``) and by diagnosis count those formal time points.
* Percentages are completed / due with Wilson 95 % intervals (:func:`outcomes.analysis.wilson_interval`).

For the quality-improvement role only slots closed before ``as_of`` are counted (final results), and
:func:`suppress` hides counts from 1 to ``small_cell_max`` and every value
from which one could be worked out (:mod:`outcomes.disclosure`), with one total row per table so that a
hidden cell cannot be recovered from a total.

Example
-------
>>> import pandas as pd
>>> slots_ = pd.DataFrame({"patient_id": ["P1", "P1"], "series_id": [1, 1], "slot": ["week_0", "week_1"],
...     "week": [0, 1], "kind": ["timepoint", "weekly"], "timepoint": ["end_of_series", ""],
...     "label": ["End of series", "Week 1"], "due_on": pd.to_datetime(["2025-03-07", "2025-03-14"]),
...     "closes_on": pd.to_datetime(["2025-03-13", "2025-03-20"]),
...     "done_on": pd.to_datetime(["2025-03-10", None]), "status": ["done", "overdue"],
...     "entered_by": ["dr.lee", "dr.lee"]})
>>> sent = pd.DataFrame({"patient_id": ["P1"], "series_id": [1], "slot": ["week_0"],
...     "invitation_sent": pd.to_datetime(["2025-03-07 08:00"], utc=True), "reminder_sent": [pd.NaT]})
>>> rows = classify(slots_, sent, None, as_of=date(2025, 3, 17))
>>> rows[["slot", "outcome", "how"]].values.tolist()
[['week_0', 'completed', 'after_invitation'], ['week_1', 'open', '']]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, tzinfo
from types import MappingProxyType

import numpy as np
import pandas as pd

from . import disclosure
from .analysis import wilson_interval

#: How a completion came, in the order the rule is applied (last first): see the module's docstring.
HOW = ("before_message", "after_invitation", "after_reminder", "by_phone")
HOW_LABELS: Mapping[str, str] = MappingProxyType({
    "before_message": "Before any message", "after_invitation": "After the invitation",
    "after_reminder": "After the reminder", "by_phone": "By phone"})
OUTCOMES = ("completed", "open", "missed")
COUNT_COLUMNS = ("n_due", "n_completed", "n_open", "n_missed", *(f"n_{h}" for h in HOW))
SUMMARY_COLUMNS = ("group", "label", *COUNT_COLUMNS, "pct_completed", "ci_low", "ci_high")
#: The label of each table's total row.
TOTAL = "All"
NOT_CODED = "Not coded"

#: The arithmetic of a summary table, for :mod:`outcomes.disclosure`: due = completed + open + missed,
#: completed = the four ways, and the total row (``group == TOTAL``) = the sum of the other rows.
SPEC = disclosure.Spec(
    counts=COUNT_COLUMNS,
    derived=MappingProxyType({c: ("n_completed", "n_due") for c in ("pct_completed", "ci_low", "ci_high")}),
    sums=(disclosure.Sum("n_due", ("n_completed", "n_open", "n_missed"), complete=True),
          disclosure.Sum("n_completed", tuple(f"n_{h}" for h in HOW), complete=True)),
    row_totals=(disclosure.RowTotal(by=(), label_column="group", total_label=TOTAL, columns=COUNT_COLUMNS),),
    denominators=MappingProxyType({"n_completed": "n_due", "n_open": "n_due", "n_missed": "n_due",
                                   **{f"n_{h}": "n_completed" for h in HOW}}),
    prefer=("n_due", "n_open", "n_missed"),  # as the cohort page: hide "due" before the completions it counts
)
#: A table without a total row (the weekly table): the same arithmetic within each row.
ROW_SPEC = disclosure.Spec(counts=SPEC.counts, derived=SPEC.derived, sums=SPEC.sums,
                           denominators=SPEC.denominators, prefer=SPEC.prefer)

CLASSIFIED_COLUMNS = ("patient_id", "series_id", "slot", "week", "kind", "timepoint", "label", "due_on",
                      "closes_on", "done_on", "status", "entered_by", "invitation_sent_on", "reminder_sent_on",
                      "outcome", "how")


def _sent_day(stamps: pd.Series, zone: tzinfo | None) -> pd.Series:
    """UTC moments as the clinic's calendar day (midnight timestamps, NaT kept)."""
    moments = pd.to_datetime(stamps, utc=True)
    if zone is not None:
        moments = moments.dt.tz_convert(zone)
    return moments.dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")


def classify(all_slots: pd.DataFrame, sent_steps: pd.DataFrame | None, calls: pd.DataFrame | None, *,
             as_of: date, zone: tzinfo | None = None) -> pd.DataFrame:
    """The slots due on ``as_of``, one row each, with how each stands.

    Parameters
    ----------
    all_slots
        :func:`outcomes.followup.slots` on the same ``as_of`` with ``only_open=False``.
    sent_steps
        ``storage.load_sent_steps``: ``patient_id, series_id, slot, invitation_sent, reminder_sent``.
    calls
        ``storage.load_call_outcomes``: ``patient_id, series_id, slot, outcome`` (others ignored).
    zone
        The clinic's time zone, which dates a message's sending (None: UTC).

    Returns
    -------
    pandas.DataFrame
        :data:`CLASSIFIED_COLUMNS`: the slot's columns, ``invitation_sent_on``/``reminder_sent_on`` (the clinic day the
        step was sent, NaT if never), ``outcome`` (``completed``, ``open``, ``missed``) and ``how`` (one of
        :data:`HOW` for a completed slot, "" otherwise).
    """
    today = pd.Timestamp(as_of)
    keep = [c for c in CLASSIFIED_COLUMNS if c in all_slots.columns]
    due = all_slots.loc[(all_slots["due_on"] <= today) & (all_slots["status"] != "inactive"), keep].copy()
    key = ["patient_id", "series_id", "slot"]
    due["series_id"] = due["series_id"].astype("Int64")
    if sent_steps is not None and len(sent_steps):
        sent = sent_steps[key].copy()
        sent["series_id"] = sent["series_id"].astype("Int64")
        sent["invitation_sent_on"] = _sent_day(sent_steps["invitation_sent"], zone).to_numpy()
        sent["reminder_sent_on"] = _sent_day(sent_steps["reminder_sent"], zone).to_numpy()
        due = due.merge(sent.drop_duplicates(key), on=key, how="left")
    else:
        due["invitation_sent_on"] = pd.Series(pd.NaT, index=due.index, dtype="datetime64[ns]")
        due["reminder_sent_on"] = pd.Series(pd.NaT, index=due.index, dtype="datetime64[ns]")
    by_phone = np.zeros(len(due), dtype=bool)
    if calls is not None and len(calls):
        phoned = calls.loc[calls["outcome"] == "completed_by_phone", key].astype({"series_id": "Int64"})
        phoned = set(map(tuple, phoned.astype(object).to_numpy().tolist()))
        by_phone = np.array([(p, s, k) in phoned for p, s, k in
                             zip(due["patient_id"], due["series_id"].astype(object), due["slot"])], dtype=bool)
    done = (due["status"] == "done").to_numpy()
    due["outcome"] = np.select([done, due["status"].isin(["due", "overdue"]).to_numpy()],
                               ["completed", "open"], "missed")
    done_on = due["done_on"]
    after_reminder = (due["reminder_sent_on"] <= done_on).fillna(False).to_numpy(dtype=bool)
    after_invitation = (due["invitation_sent_on"] <= done_on).fillna(False).to_numpy(dtype=bool)
    how = np.select([by_phone, after_reminder, after_invitation], ["by_phone", "after_reminder", "after_invitation"],
                    "before_message")
    due["how"] = np.where(done, how, "")
    return due[list(CLASSIFIED_COLUMNS)].reset_index(drop=True)


def _counts(rows: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Per group value: the counts of :data:`COUNT_COLUMNS` (an int64 frame indexed by group)."""
    frame = pd.DataFrame({"group": groups.to_numpy(), "outcome": rows["outcome"].to_numpy(),
                          "how": rows["how"].to_numpy()})
    out = pd.DataFrame(index=pd.Index(pd.unique(frame["group"]), name="group"))
    out["n_due"] = frame.groupby("group").size()
    for outcome in OUTCOMES:
        out[f"n_{outcome}"] = frame[frame["outcome"] == outcome].groupby("group").size()
    for h in HOW:
        out[f"n_{h}"] = frame[frame["how"] == h].groupby("group").size()
    return out.fillna(0).astype("int64")[list(COUNT_COLUMNS)]


def _with_rates(table: pd.DataFrame, confidence: float) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(table["n_due"] > 0, 100 * table["n_completed"] / table["n_due"], np.nan)
    low, high = wilson_interval(table["n_completed"].to_numpy(), table["n_due"].to_numpy(), confidence=confidence)
    return table.assign(pct_completed=pct, ci_low=np.asarray(low) * 100, ci_high=np.asarray(high) * 100)


def summarise(rows: pd.DataFrame, groups: pd.Series, *, labels: Mapping[object, str] | None = None,
              order: Sequence[object] | None = None, total: str | None = TOTAL,
              confidence: float = 0.95) -> pd.DataFrame:
    """Counts and completion per group of ``rows`` (:func:`classify`), one row per group.

    ``groups`` holds each row's group (aligned with ``rows``); ``order`` lists the groups to show, in order
    (default: sorted; a group in ``order`` with no row gets zeros); ``labels`` their labels (default: the
    group as text); ``total``: the label of a last row summing every row (None: no total row).

    Returns :data:`SUMMARY_COLUMNS`; ``pct_completed``, ``ci_low`` and ``ci_high`` are percentages (NaN
    when nothing was due).
    """
    counts = _counts(rows, pd.Series(groups).reset_index(drop=True))
    keys = list(order) if order is not None else sorted(counts.index, key=str)
    table = counts.reindex(keys, fill_value=0).reset_index().rename(columns={"index": "group"})
    table["group"] = keys
    table.insert(1, "label", [(labels or {}).get(k, str(k)) for k in keys])
    if total is not None:
        sums = table[list(COUNT_COLUMNS)].sum().to_dict() if len(table) else dict.fromkeys(COUNT_COLUMNS, 0)
        table = pd.concat([table, pd.DataFrame([{"group": TOTAL, "label": total, **sums}])], ignore_index=True)
    table[list(COUNT_COLUMNS)] = table[list(COUNT_COLUMNS)].astype("int64")
    return _with_rates(table, confidence)[list(SUMMARY_COLUMNS)]


def timepoint_order(rows: pd.DataFrame) -> tuple[list[object], dict[object, str]]:
    """The formal time points present or expected: ``baseline`` then each time point by week, with labels."""
    formal = rows[rows["kind"].isin(["baseline", "timepoint"])]
    weeks = formal.assign(w=formal["week"].astype("Float64").fillna(-1)).drop_duplicates("slot")
    weeks = weeks.sort_values("w")
    return weeks["slot"].tolist(), dict(zip(weeks["slot"], weeks["label"]))


def by_timepoint(rows: pd.DataFrame, *, slots_shown: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """One row per formal time point (baseline, end of series, 1, 3, 6 months) and a total row."""
    formal = rows[rows["kind"].isin(["baseline", "timepoint"])]
    order, found = timepoint_order(rows)
    return summarise(formal, formal["slot"], order=list(slots_shown or order), labels={**found, **(labels or {})},
                     total="All formal time points", confidence=confidence)


def by_week(rows: pd.DataFrame, *, weeks: int | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """One row per weekly slot (week 0 = end of series ... the last week), no total row; ``group`` is the
    week number and ``label`` says "Week 2" or the time point ("1 month")."""
    weekly = rows[rows["kind"] != "baseline"]
    numbers = weekly["week"].astype("int64") if len(weekly) else pd.Series([], dtype="int64")
    last = weeks if weeks is not None else (int(numbers.max()) if len(numbers) else -1)
    names = dict(zip(numbers, weekly["label"]))
    order = list(range(0, last + 1))
    return summarise(weekly, numbers, order=order, labels={k: names.get(k, f"Week {k}") for k in order},
                     total=None, confidence=confidence)


def by_group(rows: pd.DataFrame, groups: pd.Series, *, confidence: float = 0.95) -> pd.DataFrame:
    """The formal time points by another column (``groups``, aligned with ``rows``: the clinician or the
    diagnosis), largest group first, and a total row."""
    formal = (rows["kind"].isin(["baseline", "timepoint"])).to_numpy()
    values = pd.Series(groups).reset_index(drop=True)[formal].astype(object).fillna(NOT_CODED)
    sizes = values.value_counts()
    order = sorted(sizes.index, key=lambda g: (g == disclosure.POOLED, -sizes[g], str(g)))
    return summarise(rows[formal], values, order=order, total=TOTAL, confidence=confidence)


# The quality-improvement view ---------------------------------------------------------------------------


def pooled(values: pd.Series, patients: pd.Series, threshold: int) -> pd.Series:
    """``values`` held by 1 to ``threshold`` patients become :data:`outcomes.disclosure.POOLED`."""
    return disclosure.pool_rare(values.astype(object).fillna(NOT_CODED), patients, threshold)


def suppress(table: pd.DataFrame, *, threshold: int, with_total: bool = True, as_text: bool = True) -> pd.DataFrame:
    """A summary table as the QI role may see it (:mod:`outcomes.disclosure`; :data:`SPEC`, or
    :data:`ROW_SPEC` without a total row). Text with markers, or NaN for hidden values (``as_text=False``)."""
    spec = SPEC if with_total else ROW_SPEC
    return disclosure.suppress(table, spec, threshold=threshold, as_text=as_text,
                               formats={c: "{:.1f}" for c in ("pct_completed", "ci_low", "ci_high")})


def suppression_mask(table: pd.DataFrame, *, threshold: int, with_total: bool = True) -> pd.DataFrame:
    return disclosure.suppression_mask(table, SPEC if with_total else ROW_SPEC, threshold=threshold)


# What the page shows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """Follow-up completion on ``as_of``, ready for a page.

    ``timepoints``, ``weeks``, ``by_clinician`` and ``by_diagnosis`` are :func:`summarise` tables (for QI
    suppressed: text, with markers); ``drawn_weeks`` the weekly table with numbers for a figure (hidden
    values NaN); ``slots`` every due slot with the patient (clinicians only; empty for QI). ``notice``: what
    the QI view hides ("" for clinicians).
    """

    as_of: date
    qi: bool
    timepoints: pd.DataFrame
    weeks: pd.DataFrame
    drawn_weeks: pd.DataFrame
    by_clinician: pd.DataFrame
    by_diagnosis: pd.DataFrame
    slots: pd.DataFrame
    notice: str = ""

    @property
    def n_due(self) -> object:
        """Slots due at the formal time points (the total row; a marker for QI when hidden)."""
        return self.timepoints["n_due"].iloc[-1]


def completion(all_slots: pd.DataFrame, sent_steps: pd.DataFrame | None, calls: pd.DataFrame | None,
               diagnoses: pd.DataFrame, *, as_of: date, zone: tzinfo | None = None, weeks: int | None = None,
               qi: bool = False, small_cell_max: int = disclosure.DEFAULT_THRESHOLD) -> Completion:
    """Every table of the completion view.

    ``diagnoses``: ``patient_id, diagnosis_label`` (``storage.load_patient_diagnoses``; None: not coded).
    For QI (``qi=True``) only the slots closed before ``as_of`` count (``closes_on < as_of``: completed or
    missed, none still open), clinicians and diagnoses held by 1 to ``small_cell_max`` patients are pooled, every
    table is suppressed, the rows of the weekly table that are formal time points take the time-point
    table's suppression (the same counts), and no slot-level rows are returned.
    """
    rows = classify(all_slots, sent_steps, calls, as_of=as_of, zone=zone)
    if qi:  # final results only: a slot still open on the cut would move, and its small counts reveal little
        rows = rows[rows["closes_on"] < pd.Timestamp(as_of)].reset_index(drop=True)
    labels = diagnoses.set_index("patient_id")["diagnosis_label"]
    diagnosis = rows["patient_id"].map(labels).astype(object).fillna(NOT_CODED)
    clinician = rows["entered_by"].astype(object).fillna("not recorded")
    if qi:
        diagnosis = pooled(diagnosis, rows["patient_id"], small_cell_max)
        clinician = pooled(clinician, rows["patient_id"], small_cell_max)
    order, names = timepoint_order(all_slots)
    timepoints = by_timepoint(rows, slots_shown=order, labels=names)
    if weeks is None and len(all_slots) and all_slots["week"].notna().any():
        weeks = int(all_slots["week"].max())
    week_table = by_week(rows, weeks=weeks)
    clinicians = by_group(rows, clinician)
    diagnosis_table = by_group(rows, diagnosis)
    if not qi:
        detail = rows.assign(diagnosis=diagnosis.to_numpy())
        return Completion(as_of, False, timepoints, week_table, week_table, clinicians, diagnosis_table, detail)
    t = small_cell_max
    masks = {name: suppression_mask(table, threshold=t)
             for name, table in (("timepoints", timepoints), ("clinicians", clinicians),
                                 ("diagnoses", diagnosis_table))}
    # The three tables share their total (the formal time points): hidden in one, hidden in all.
    total_hidden = np.logical_or.reduce([m.iloc[-1].to_numpy(dtype=bool) for m in masks.values()])
    for m in masks.values():
        m.iloc[-1] = m.iloc[-1].to_numpy(dtype=bool) | total_hidden
    week_mask = suppression_mask(week_table, threshold=t, with_total=False)
    # A week that is a formal time point holds the same counts as its row there: the same cells go.
    tp_rows = {int(g.removeprefix("week_")): i for i, g in enumerate(timepoints["group"])
               if str(g).startswith("week_")}
    for j, week in enumerate(week_table["group"]):
        if int(week) in tp_rows:
            week_mask.iloc[j] = week_mask.iloc[j].to_numpy(dtype=bool) | \
                masks["timepoints"].iloc[tp_rows[int(week)]].to_numpy(dtype=bool)

    def shown(table: pd.DataFrame, mask: pd.DataFrame, as_text: bool = True) -> pd.DataFrame:
        return disclosure.apply_mask(table, mask, counts=COUNT_COLUMNS, threshold=t, as_text=as_text,
                                     formats={c: "{:.1f}" for c in ("pct_completed", "ci_low", "ci_high")})

    notice = ("Quality-improvement view: only slots whose window closed before the cut are counted (completed "
              f"or missed, final). Counts from 1 to {t} are shown as “{disclosure.small_marker(t)}”, and "
              f"“{disclosure.HIDDEN}” marks a value hidden so that such a count cannot be worked out from it. "
              f"Clinicians and diagnoses of 1 to {t} patients are pooled as “{disclosure.POOLED}”. No patient "
              "identifiers are shown.")
    empty = pd.DataFrame(columns=[*CLASSIFIED_COLUMNS, "diagnosis"])
    return Completion(as_of, True, shown(timepoints, masks["timepoints"]), shown(week_table, week_mask),
                      shown(week_table, week_mask, as_text=False), shown(clinicians, masks["clinicians"]),
                      shown(diagnosis_table, masks["diagnoses"]), empty, notice)


def display(table: pd.DataFrame, *, group_label: str) -> pd.DataFrame:
    """A summary table for the page: "completed / due", "% (95 % CI)", still open, missed and the four ways
    (numbers, or the markers of a suppressed table)."""
    def whole(v: object) -> str:
        return v if isinstance(v, str) else f"{int(v):,}"

    def percent(p: object, low: object, high: object) -> str:
        if isinstance(p, str):
            return p if p in (disclosure.HIDDEN, "") else f"{p} ({low}–{high})"
        return "–" if pd.isna(p) else f"{p:.1f} ({low:.1f}–{high:.1f})"

    rows = table.to_dict("records")
    out = pd.DataFrame({
        group_label: table["label"].astype(str),
        "Completed / due": [f"{whole(r['n_completed'])} / {whole(r['n_due'])}" for r in rows],
        "% completed (95 % CI)": [percent(r["pct_completed"], r["ci_low"], r["ci_high"]) for r in rows],
        "Still open": [whole(r["n_open"]) for r in rows],
        "Missed": [whole(r["n_missed"]) for r in rows],
    })
    for h in HOW:
        out[HOW_LABELS[h]] = [whole(r[f"n_{h}"]) for r in rows]
    return out
