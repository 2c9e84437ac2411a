"""The clinic's rules as pure functions: alerts, reliable change, baselines, the Today list.

No database, no storage, no authorisation: values and DataFrames in, values and DataFrames out, so each
rule can be read and tested on its own. :mod:`outcomes.clinic` applies them in its service functions
(which check the user's role, read and write through storage and audit) and re-exports the public names
(``clinic.alert_rule``, ``clinic.SAFETY_NOTICE``, ...). Sources: docs/methods.md, docs/clinic-record.md
and the clinical-methods notes cited at each rule.

Example
-------
>>> alert_rule("depression", 71.0, None, 3.5)
('high', 'Depression T 71.0 is 70 or higher (severe)')
>>> as_date_or_none(pd.Timestamp("2025-06-02 09:00")), as_date_or_none(pd.NaT)
(datetime.date(2025, 6, 2), None)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from .analysis import round_half_away
from .domains import Domain, Domains, load_domains

# Alerts (clinical-methods notes 5; docs/clinic-record.md, "Alerts from every door") -------------------

#: Must be shown wherever alerts or depression scores are shown to clinicians (clinical-methods 5).
SAFETY_NOTICE = (
    "The PROMIS short forms used here have no question about suicide or self-harm. A low depression "
    "score does not rule out risk, and these alerts are no substitute for a validated suicide-risk "
    "screen (such as the ASQ or C-SSRS) under the clinic's response protocol."
)
#: Must be shown on the patient's check-in pages, which never hint at alerts or triage.
PATIENT_CRISIS_TEXT = (
    "This check-in is not read straight away. If you are thinking about harming yourself or feel you "
    "cannot stay safe, call or text 988 (Suicide & Crisis Lifeline, US), call your local emergency "
    "number, or go to the nearest emergency department now."
)
#: Who acts on an alert and by when (a default to be confirmed by the clinic's clinical lead).
ALERT_ACTIONS = {
    "high": "A clinician reviews it the same day and follows the clinic's safety protocol.",
    "routine": "A clinician reviews it at the next routine review, within 2 working days.",
}
RELIABLE_Z = 1.96  # |RCI| at p < .05 (Jacobson & Truax 1991; clinical-methods 3.5)

#: Sort order of alert priorities (roster, Today list): high first.
PRIORITY_RANK = {"high": 0, "routine": 1}


def _domain(domain: str | Domain, registry: Domains | None) -> Domain:
    if isinstance(domain, Domain):
        return domain
    return (load_domains() if registry is None else registry)[domain]


def alert_rule(domain: str | Domain, t_score: float, previous_t: float | None, mcid: float, *,
               previous_on: date | None = None, registry: Domains | None = None) -> tuple[str, str] | None:
    """The alert a new score raises, as ``(priority, reason)``, or None.

    * A score at or beyond one of the domain's alert levels (forms.toml ``alerts``, worst first; for
      depression T >= 70 severe: ``high``, 65 <= T < 70 moderately severe: ``routine``) raises the
      worst level it reaches.
    * A worsening since the previous score of at least ``mcid`` (change rounded to 0.1, comparison
      inclusive) raises ``routine`` in every domain with ``worsening_alert`` (the default).

    ``domain`` is a :class:`~outcomes.domains.Domain` or a name in ``registry`` (None: the shipped
    definitions).

    Example
    -------
    >>> alert_rule("depression", 70.0, None, 3.5)[0], alert_rule("depression", 69.9, None, 3.5)[0]
    ('high', 'routine')
    >>> alert_rule("depression", 64.9, None, 3.5) is None
    True
    """
    d = _domain(domain, registry)
    reasons, priority = [], None
    if reached := d.alert_level(t_score):
        level, worse = reached
        priority = level.priority
        if worse is None:
            where = f"{level.t:g} or {'higher' if d.higher_is_worse else 'lower'}"
        else:
            where = f"from {level.t:g} to {'below' if d.higher_is_worse else 'above'} {worse.t:g}"
        reasons.append(f"{d.display} T {t_score:.1f} is {where} ({level.name})")
    if d.worsening_alert and previous_t is not None and not math.isnan(previous_t):
        change = round_half_away(t_score - previous_t)
        if -d.improvement_sign * change >= mcid:
            priority = priority or "routine"
            since = f" on {previous_on}" if previous_on else ""
            reasons.append(f"{d.display} worsened by {abs(change):.1f} T points since the previous score "
                           f"({previous_t:.1f}{since}), at least the meaningful change of {mcid:g}")
    return None if priority is None else (priority, "; ".join(reasons))


def may_alert(scores: pd.DataFrame, mcid: Mapping[str, float], registry: Domains | None = None) -> pd.Series:
    """Which scores can meet :func:`alert_rule`: its conditions, vectorised (True exactly where it alerts).

    ``scores`` has ``domain, t_score, previous_t`` (NaN: no previous score). A bulk load checks hundreds of
    thousands of scores, so only these rows go through :func:`alert_rule`, which words the reason.
    """
    domains = load_domains() if registry is None else registry
    sign = scores["domain"].map(domains.signs()).astype(float)
    worsening = -sign * round_half_away(scores["t_score"] - scores["previous_t"])
    may_worsen = scores["domain"].map({d.name: d.worsening_alert for d in domains.values()}).fillna(False)
    # The mildest alert level per domain, as a limit on the "worse" side: -sign * T >= -sign * limit.
    mildest = scores["domain"].map({d.name: d.alerts[-1].t for d in domains.values() if d.alerts}).astype(float)
    at_level = (-sign * scores["t_score"] >= -sign * mildest).fillna(False)
    return (at_level
            | (may_worsen.astype(bool) & (worsening >= scores["domain"].map(mcid).astype(float)).fillna(False)))


# Reliable change (Jacobson & Truax 1991; clinical-methods notes 3.5) ------------------------------------


def reliable_change(t1: float | None, se1: float | None, t2: float | None,
                    se2: float | None) -> tuple[float | None, bool]:
    """Reliable change index from ``t1`` to ``t2`` with their standard errors.

    RCI = (T2 - T1) / sqrt(SE1² + SE2²); the change is reliable when |RCI| >= 1.96 (Jacobson &
    Truax 1991). It answers "beyond measurement error?", not "meaningful?" (see ``mcid``).

    Returns
    -------
    (rci, is_reliable)
        ``(None, False)`` when a T or SE is missing or an SE is not positive.

    Example
    -------
    >>> rci, reliable = reliable_change(60.0, 2.0, 52.0, 2.5)
    >>> round(rci, 2), reliable
    (-2.5, True)
    """
    values = (t1, se1, t2, se2)
    if any(v is None or not math.isfinite(float(v)) for v in values) or min(se1, se2) <= 0:  # type: ignore[type-var]
        return None, False
    rci = (float(t2) - float(t1)) / math.hypot(float(se1), float(se2))
    return rci, abs(rci) >= RELIABLE_Z


def reliable_change_frame(t1: pd.Series, se1: pd.Series, t2: pd.Series,
                          se2: pd.Series) -> tuple[pd.Series, pd.Series]:
    """:func:`reliable_change` row by row, vectorised: ``(rci, reliable)``, NaN and False where it gives
    ``(None, False)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = np.hypot(se1.astype(float), se2.astype(float))
        rci = (t2.astype(float) - t1.astype(float)) / denominator.where((se1 > 0) & (se2 > 0))
    return rci, (rci.abs() >= RELIABLE_Z).fillna(False).astype(bool)


# Baselines (docs/methods.md §2; one baseline per series, docs/clinic-record.md) -------------------------


def baselines(targets: pd.DataFrame, candidates: pd.DataFrame, series: pd.DataFrame,
              baseline_days: int) -> pd.DataFrame:
    """Baseline of each target score (rows of ``patient_id, domain, assessed_on``), vectorised.

    The baseline is the latest score dated from F - ``baseline_days`` to F, where F is the first
    infusion of the patient's most recent series started on or before the target's date; with no
    such series it is the patient's first score in the domain (on or before the date); else none.
    Binary search on sorted (patient, domain, day) keys: about 0.2 ms for one check-in, linear in the
    roster's size (pandas merges took 8 ms for the three scores of one check-in).

    Parameters
    ----------
    targets
        ``patient_id, domain, assessed_on``: the scores whose baseline is wanted.
    candidates
        ``patient_id, domain, assessed_on, t_score, se``: the scores a baseline may be taken from.
    series
        ``patient_id, series_number, first_infusion``: the series given (not planned, cancelled or voided).

    Returns
    -------
    pandas.DataFrame
        Aligned with ``targets``: ``baseline_on, baseline_t, baseline_se, baseline_series`` (the
        series number, <NA> for a first-score baseline); NaN/NaT where there is no baseline.
    """
    n, n_series = len(targets), len(series)
    patient, _ = pd.factorize(pd.concat([targets["patient_id"], series["patient_id"], candidates["patient_id"]],
                                        ignore_index=True).astype(object))
    domain, _ = pd.factorize(pd.concat([targets["domain"], candidates["domain"]], ignore_index=True).astype(object))
    t_patient, s_patient, c_patient = patient[:n], patient[n:n + n_series], patient[n + n_series:]
    n_domains = int(domain.max(initial=-1)) + 1
    t_group, c_group = t_patient * n_domains + domain[:n], c_patient * n_domains + domain[n:]

    def days(column: pd.Series) -> np.ndarray:
        return pd.to_datetime(column).to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)

    shift, offset = np.int64(1 << 32), np.int64(1 << 31)  # key = group * 2**32 + day + 2**31
    t_day = days(targets["assessed_on"])
    # The patient's latest series started on or before the target's day.
    s_key = s_patient * shift + days(series["first_infusion"]) + offset
    s_order = np.argsort(s_key, kind="stable")
    s_key = s_key[s_order]
    at = np.searchsorted(s_key, t_patient * shift + t_day + offset, side="right") - 1
    found_key = np.append(s_key, -1)[at]  # at = -1 (no earlier key) reads the -1 sentinel
    has_series = found_key // shift == t_patient
    first = np.where(has_series, found_key % shift - offset, 0)
    # Candidates sorted by patient, domain and day: the latest up to F, or the group's first score.
    c_key = c_group * shift + days(candidates["assessed_on"]) + offset
    c_order = np.argsort(c_key, kind="stable")
    c_key = c_key[c_order]
    latest = np.searchsorted(c_key, t_group * shift + first + offset, side="right") - 1
    earliest = np.searchsorted(c_key, t_group * shift, side="left")
    pick = np.where(has_series, latest, earliest)  # -1 or len(c_key) read the -1 sentinel: no group
    picked = np.append(c_key, -1)[pick]
    picked_day = picked % shift - offset
    found = (picked // shift == t_group) & np.where(has_series, picked_day >= first - baseline_days,
                                                   picked_day <= t_day)
    row = c_order[pick[found]]
    out = pd.DataFrame(index=targets.index)
    on = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    on[found] = pd.to_datetime(candidates["assessed_on"]).to_numpy(dtype="datetime64[ns]")[row]
    out["baseline_on"] = on
    for name, column in (("baseline_t", "t_score"), ("baseline_se", "se")):
        values = np.full(n, np.nan)
        values[found] = candidates[column].to_numpy(dtype=float, na_value=np.nan)[row]
        out[name] = values
    number = pd.array(np.full(n, pd.NA), dtype="Int64")
    with_number = found & has_series
    number[with_number] = pd.array(series["series_number"], dtype="Int64")[s_order[at[with_number]]]
    out["baseline_series"] = number
    return out


# The Today list (docs/clinic-record.md, "The roster: the clinician's morning") --------------------------


def today_reasons(roster: pd.DataFrame) -> dict[str, pd.Series]:
    """Why each patient is on today's list, in words, and the first reason's rank (<NA>: not on it).

    Reads the roster's ``in_series_today, in_series_this_week, baseline_due, open_alerts, top_priority,
    followup, followup_text, on_call_list``; returns ``{"today": text, "today_rank": rank}``
    aligned with it.
    """
    out = roster
    slot_due = out["followup"].isin(["due", "overdue"]) & ~out["baseline_due"]
    call = pd.Series(" · call", index=out.index).where(out["on_call_list"], "")
    reasons = [
        (out["in_series_today"], pd.Series("In series today", index=out.index)),
        (out["in_series_this_week"] & ~out["in_series_today"], pd.Series("In series this week", index=out.index)),
        (out["baseline_due"], out["followup_text"] + call),
        (out["open_alerts"] > 0, "Open alert (" + out["top_priority"].fillna("") + ")"),
        (slot_due, out["followup_text"] + call),
    ]
    ranks = (1, 1, 2, 3, 4)
    text = pd.Series("", index=out.index, dtype=object)
    rank = pd.Series(pd.NA, index=out.index, dtype="Int64")
    for (mask, words), r in zip(reasons, ranks):
        mask = mask.fillna(False).astype(bool)
        text = text.where(~mask, text.where(text == "", text + " · ") + words)
        rank = rank.where(~(mask & rank.isna()), r)
    return {"today": text, "today_rank": rank}


def today_list(roster: pd.DataFrame) -> pd.DataFrame:
    """The clinician's morning list from :func:`outcomes.clinic.roster`: patients in a series today or this
    week, then baselines due before a series, then open alerts (high first), then follow-up slots due or
    overdue (docs/followup.md); overdue first within a rank."""
    on = roster[roster["today_rank"].notna()]
    priority = on["top_priority"].map(PRIORITY_RANK).fillna(len(PRIORITY_RANK))
    return (on.assign(_p=priority).sort_values(["today_rank", "_p", "overdue", "patient_id"],
                                               ascending=[True, True, False, True])
            .drop(columns="_p").reset_index(drop=True))


# Dates ----------------------------------------------------------------------------------------------


def parse_day_or_problem(value: Any, name: str, today: date, problems: list[str]) -> date | None:
    """A day on or before ``today`` from a date, datetime or ``YYYY-MM-DD`` text; else None, with the reason
    appended to ``problems`` (not a date, or in the future; NaT is not a date)."""
    if isinstance(value, datetime):
        value = None if pd.isna(value) else value.date()  # NaT is a datetime too: "no date"
    elif isinstance(value, str):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError:
            problems.append(f"{name} must be a date written YYYY-MM-DD (for example 2025-03-15), "
                            f"got {value!r}")
            return None
    if not isinstance(value, date):
        problems.append(f"{name} must be a date written YYYY-MM-DD, got {value!r}")
        return None
    if value > today:
        problems.append(f"{name} {value} is in the future (today is {today})")
        return None
    return value


def as_date_or_none(value: Any) -> date | None:
    """The calendar day of a stored value (Timestamp, datetime64, date or ISO text); None for NaT/NaN/None."""
    return None if pd.isna(value) else pd.Timestamp(value).date()
