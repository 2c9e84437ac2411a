"""Time to first meaningful improvement and durability of response, behind small result types.

The event data are derived here with vectorised NumPy (no per-patient loops); lifelines does the
fitting, imported inside the functions because importing it takes about a second. No lifelines
object or matplotlib figure leaves this module: results are frozen dataclasses of tidy frames plus
``notes`` (tableone-style remarks) for the page to show as warnings. Rules and sources are in
``docs/methods.md`` (Kaplan–Meier with KMunicate tables; Turnbull NPMLE and a Weibull fit for the
interval-censored view).

Example
-------
>>> import pandas as pd
>>> times = pd.DataFrame({"domain": ["depression"] * 5, "time_weeks": [1, 2, 3, 3, 5],
...                       "event": [True, False, True, True, False]})
>>> curves = fit_km(times)
>>> curves.curve[["time_weeks", "estimate"]].round(3).to_dict("list")
{'time_weeks': [0.0, 1.0, 2.0, 3.0, 5.0], 'estimate': [0.0, 0.2, 0.2, 0.733, 0.733]}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from .analysis import (
    DateLike,
    SeriesChoice,
    _assign,
    _check_mcid,
    _domains_of,
    _episode_frame,
    _sign,
    _to_datetime,
    require_columns,
    round_half_away,
)
from .errors import ConfigError, InsufficientData

#: Weeks at which the number-at-risk table is given (KMunicate; clinical-methods notes 4.5).
AT_RISK_WEEKS = (0, 4, 8, 13, 26)
#: Fewer events than this in a curve gives a note that the estimate is unstable.
MIN_EVENTS = 10
#: Interval-censored lower bounds are moved this far (in weeks) to the right, so that (prev, current]
#: is half-open: lifelines treats intervals as closed and would put spurious mass on shared visit days.
INTERVAL_EPSILON = 1e-5

CURVE_COLUMNS = ("domain", "group", "time_weeks", "estimate", "ci_low", "ci_high")
AT_RISK_COLUMNS = ("domain", "group", "week", "at_risk", "events", "censored")
#: The ``summary`` of every curve class: one row per domain and group.
SUMMARY_COLUMNS = ("domain", "group", "n", "events", "median_weeks", "median_ci_low", "median_ci_high")


@dataclass(frozen=True)
class SurvivalCurves:
    """Kaplan–Meier curves as tidy tables.

    Attributes
    ----------
    curve
        ``domain, group, time_weeks, estimate, ci_low, ci_high``; step function, right-continuous.
        ``estimate`` is the cumulative proportion with the event (1 - S) when ``kind == "event"``
        (time to improvement) and the proportion without it (S) when ``kind == "survival"``
        (still in response).
    at_risk
        ``domain, group, week, at_risk, events, censored`` at :data:`AT_RISK_WEEKS`: at risk = time
        >= week; events and censored are cumulative before the week (the three add up to n).
    summary
        ``domain, group, n, events, median_weeks, median_ci_low, median_ci_high`` (NaN: not reached).
    p_values
        Log-rank p-value per domain when there are two or more groups.
    notes
        Caveats to show next to the curves.
    """

    kind: Literal["event", "survival"]
    curve: pd.DataFrame
    at_risk: pd.DataFrame
    summary: pd.DataFrame
    p_values: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntervalCensoredCurves:
    """Cumulative proportion improved when event times are known only to lie between two visits.

    Attributes
    ----------
    curve
        ``domain, group, method, time_weeks, estimate, ci_low, ci_high``. ``method == "npmle"``: the
        Turnbull NPMLE of 1 - S at the ends of its intervals (no CI: lifelines computes none);
        ``method == "weibull"``: the Weibull fit of 1 - S on a weekly grid with its pointwise CI.
    parameters
        ``domain, group, n, events, scale_weeks, scale_ci_low, scale_ci_high, shape, shape_ci_low,
        shape_ci_high, median_weeks, max_gap`` (largest |Weibull - NPMLE| at the NPMLE points).
    summary
        ``domain, group, n, events, median_weeks, median_ci_low, median_ci_high``, as in
        :class:`SurvivalCurves` (a property read from ``parameters``): the Weibull median, NaN without a
        fit; its CI is not computed, so ``median_ci_low`` and ``median_ci_high`` are NaN.
    at_risk
        ``domain, group, week, at_risk, events, censored``: at risk = not yet improved and still
        followed at the week (lower bound >= week); events = improvement known by the week (upper
        bound <= week); censored = never improved and last seen before the week.
    notes
        Caveats to show next to the curves.
    """

    curve: pd.DataFrame
    parameters: pd.DataFrame
    at_risk: pd.DataFrame
    notes: tuple[str, ...] = ()

    @property
    def summary(self) -> pd.DataFrame:
        """Per domain and group, the columns of :attr:`SurvivalCurves.summary` (:data:`SUMMARY_COLUMNS`)."""
        return self.parameters[["domain", "group", "n", "events", "median_weeks"]].assign(
            median_ci_low=np.nan, median_ci_high=np.nan)[list(SUMMARY_COLUMNS)]


def improvement_times(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    mcid: Mapping[str, float],
    baseline_days: int = 30,
    series: SeriesChoice = "first",
) -> pd.DataFrame:
    """Time from the first infusion to the first meaningfully improved score, per episode and domain.

    Origin F. Event at the first score after F (day > 0, within follow-up) whose change from
    baseline meets the threshold (rounded, inclusive, as in the responder report); otherwise
    censored at the last score within follow-up (time 0 if there is none). For the interval-censored
    view the event lies in (previous score, first improved score], with the previous score taken as
    F when the first score after F is already improved; never-improved episodes are (last score, inf).

    Returns
    -------
    DataFrame
        Episode columns, then ``domain, baseline_t, has_baseline, n_scores`` (after F), ``event``,
        ``time_weeks``, ``lower_weeks``, ``upper_weeks``, ``improved_on``. Episodes without a
        baseline are kept with ``has_baseline`` False and NaN times, so the fits can count them.

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1], "patient_id": ["P1"], "series_number": [1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": "P1", "domain": "depression", "t_score": [60, 58, 56.5, 55.0],
    ...     "assessed_on": pd.to_datetime(["2025-01-06", "2025-01-13", "2025-01-20", "2025-01-27"])})
    >>> improvement_times(eps, sc, as_of="2025-06-01", mcid={"depression": 3.5})[
    ...     ["event", "time_weeks", "lower_weeks", "upper_weeks"]].to_dict("records")
    [{'event': True, 'time_weeks': 2.0, 'lower_weeks': 1.0, 'upper_weeks': 2.0}]
    """
    thresholds = _check_mcid(mcid)
    d = _derive(episodes, scores, as_of=as_of, thresholds=thresholds, baseline_days=baseline_days,
                series=series)
    a, n_g = d.assigned, len(d.first_improved)
    has_base = ~np.isnan(a.base_t)
    event = d.first_improved != _NONE
    last = np.where(d.last_day == _NONE, 0, d.last_day)
    prev = np.where(d.prev_day == _NONE, 0, d.prev_day)
    time = np.where(event, d.first_improved, last).astype(float)
    out = _episode_frame(a, np.arange(n_g) // len(a.domains))
    out["domain"] = np.array(a.domains, dtype=object)[np.arange(n_g) % len(a.domains)]
    out["baseline_t"] = a.base_t
    out["has_baseline"] = has_base
    out["n_scores"] = d.n_scores
    out["event"] = event & has_base
    out["time_weeks"] = np.where(has_base, time / 7, np.nan)
    out["lower_weeks"] = np.where(has_base, np.where(event, prev, last) / 7, np.nan)
    out["upper_weeks"] = np.where(has_base, np.where(event, time / 7, np.inf), np.nan)
    improved_day = np.where(event, a.first[np.arange(n_g) // len(a.domains)] + d.first_improved, _NO_DAY)
    out["improved_on"] = _to_datetime(improved_day)
    return out


def response_durations(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    mcid: Mapping[str, float],
    baseline_days: int = 30,
    series: SeriesChoice = "first",
) -> pd.DataFrame:
    """Duration of response among responders, per episode and domain.

    Origin = the first improved score (as in :func:`improvement_times`). Loss of response = the
    first of two consecutive later scores that both no longer meet the threshold; the event time is
    the date of the first of the two (one isolated dip is not a loss). Otherwise censored at the
    last score within follow-up, which ends the day before the next series.

    Returns
    -------
    DataFrame
        Episode columns, then ``domain, responded_on, event, time_weeks, lost_on`` (NaT if censored).

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1], "patient_id": ["P1"], "series_number": [1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> days = ["2025-01-06", "2025-01-13", "2025-01-20", "2025-01-27", "2025-02-03", "2025-02-10"]
    >>> sc = pd.DataFrame({"patient_id": "P1", "domain": "depression", "assessed_on": pd.to_datetime(days),
    ...                    "t_score": [60, 55, 59, 55, 58, 58.0]})
    >>> response_durations(eps, sc, as_of="2025-06-01", mcid={"depression": 3.5})[
    ...     ["responded_on", "event", "time_weeks", "lost_on"]].astype(str).to_dict("records")
    [{'responded_on': '2025-01-13', 'event': 'True', 'time_weeks': '3.0', 'lost_on': '2025-02-03'}]
    """
    thresholds = _check_mcid(mcid)
    d = _derive(episodes, scores, as_of=as_of, thresholds=thresholds, baseline_days=baseline_days,
                series=series, durability=True)
    a = d.assigned
    responders = np.flatnonzero(d.first_improved != _NONE)
    lost = d.loss_day[responders]
    event = lost != _NONE
    origin = d.first_improved[responders]
    end = np.where(event, lost, d.last_day[responders])
    pos = responders // len(a.domains)
    out = _episode_frame(a, pos)
    out["domain"] = np.array(a.domains, dtype=object)[responders % len(a.domains)]
    out["responded_on"] = _to_datetime(a.first[pos] + origin)
    out["event"] = event
    out["time_weeks"] = (end - origin) / 7
    out["lost_on"] = _to_datetime(np.where(event, a.first[pos] + lost, _NO_DAY))
    return out


def fit_km(
    times: pd.DataFrame,
    *,
    group_col: str | None = None,
    kind: Literal["event", "survival"] = "event",
    alpha: float = 0.05,
    at_weeks: Sequence[float] = AT_RISK_WEEKS,
    min_events: int = MIN_EVENTS,
) -> SurvivalCurves:
    """Kaplan–Meier estimate per domain (and group) with CI bands and a number-at-risk table.

    Parameters
    ----------
    times
        Output of :func:`improvement_times` (use ``kind="event"``: 1 - S, cumulative proportion
        improved) or :func:`response_durations` (use ``kind="survival"``: S, still in response).
        Needs ``domain, time_weeks, event``; rows with ``has_baseline`` False are excluded and
        counted in the notes.
    group_col
        Optional column to stratify by (e.g. ``diagnosis``); missing values form "(missing)".
    alpha
        1 - confidence level of the pointwise CI (lifelines' exponential Greenwood, log(-log) scale).
    at_weeks
        Weeks of the at-risk table.
    min_events
        Curves with fewer events get an "estimate unstable" note.

    Returns
    -------
    SurvivalCurves

    Raises
    ------
    MissingColumns, ConfigError, InsufficientData (no usable row at all)

    Examples
    --------
    >>> times = pd.DataFrame({"domain": "depression", "time_weeks": [1, 2, 3, 3, 5],
    ...                       "event": [True, False, True, True, False]})
    >>> km = fit_km(times)
    >>> km.summary[["n", "events", "median_weeks"]].to_dict("records")
    [{'n': 5, 'events': 3, 'median_weeks': 3.0}]
    >>> km.notes
    ('depression: 3 events; estimate unstable',)
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test
    from lifelines.utils import median_survival_times

    data, notes = _usable(times, ["domain", "time_weeks", "event"], group_col, alpha, at_weeks, min_events)
    if kind not in ("event", "survival"):
        raise ConfigError(f"kind must be 'event' or 'survival', got {kind!r}")
    curves, risks, summary, p_values = [], [], [], {}
    for (domain, group), part in data.groupby(["domain", "group"], sort=False):
        t = part["time_weeks"].to_numpy(dtype=float)
        e = part["event"].to_numpy(dtype=bool)
        kmf = _quietly(notes, f"{_label(domain, group)}", lambda: KaplanMeierFitter(alpha=alpha).fit(t, e))
        s = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_
        low, high = ci.iloc[:, 0].to_numpy(), ci.iloc[:, 1].to_numpy()
        if kind == "event":
            est, low, high = 1 - s.to_numpy(), 1 - high, 1 - low
        else:
            est = s.to_numpy()
        curves.append(pd.DataFrame({"domain": domain, "group": group, "time_weeks": s.index.to_numpy(float),
                                    "estimate": est, "ci_low": low, "ci_high": high}))
        risks.append(_at_risk(domain, group, t, t, e, at_weeks))
        median = float(kmf.median_survival_time_)
        m_ci = median_survival_times(ci).iloc[0].to_numpy(dtype=float)
        summary.append({"domain": domain, "group": group, "n": len(t), "events": int(e.sum()),
                        "median_weeks": _finite(median), "median_ci_low": _finite(m_ci[0]),
                        "median_ci_high": _finite(m_ci[1])})
        _caveats(notes, domain, group, int(e.sum()), min_events, t, e, median, kind)
    if group_col is not None:
        for domain, part in data.groupby("domain", sort=False):
            if part["group"].nunique() > 1:
                test = multivariate_logrank_test(part["time_weeks"], part["group"], part["event"])
                p_values[str(domain)] = float(test.p_value)
    return SurvivalCurves(
        kind=kind,
        curve=_concat(curves, CURVE_COLUMNS),
        at_risk=_concat(risks, AT_RISK_COLUMNS),
        summary=pd.DataFrame.from_records(summary, columns=list(SUMMARY_COLUMNS)),
        p_values=MappingProxyType(p_values),
        notes=tuple(notes),
    )


def fit_interval_censored(
    times: pd.DataFrame,
    *,
    group_col: str | None = None,
    alpha: float = 0.05,
    at_weeks: Sequence[float] = AT_RISK_WEEKS,
    min_events: int = MIN_EVENTS,
    max_gap: float = 0.05,
) -> IntervalCensoredCurves:
    """Cumulative proportion improved from interval-censored times: Turnbull NPMLE plus a Weibull fit.

    Weekly scores only bracket the improvement: it happened in (previous score, first improved
    score]. lifelines' interval-censored Kaplan–Meier is the Turnbull NPMLE; it is experimental and
    gives no confidence interval (its ``_upper``/``_lower`` columns bound the non-unique mass inside
    Turnbull intervals, not sampling error). We report the NPMLE at the right ends of its intervals
    as the model-free estimate and take CIs from a Weibull model fitted to the same intervals
    (``WeibullFitter.fit_interval_censoring``), with a note when the two disagree by more than
    ``max_gap`` (docs/methods.md explains the choice over a bootstrap).

    Parameters
    ----------
    times
        Output of :func:`improvement_times` (needs ``domain, event, lower_weeks, upper_weeks``).
    group_col, alpha, at_weeks, min_events
        As in :func:`fit_km`.
    max_gap
        Largest tolerated |Weibull - NPMLE| (proportion) before a lack-of-fit note.

    Returns
    -------
    IntervalCensoredCurves

    Examples
    --------
    >>> times = pd.DataFrame({"domain": "pain_interference", "event": [True, True, False, True, False, True],
    ...     "lower_weeks": [0, 1, 4, 2, 3, 1], "upper_weeks": [1, 2, np.inf, 3, np.inf, 2]})
    >>> ic = fit_interval_censored(times)
    >>> ic.curve.query("method == 'npmle'")[["time_weeks", "estimate"]].round(3).to_dict("list")
    {'time_weeks': [0.0, 1.0, 2.0, 3.0], 'estimate': [0.0, 0.167, 0.5, 0.667]}
    """
    from lifelines import KaplanMeierFitter, WeibullFitter
    from lifelines.exceptions import ConvergenceError

    needed = ["domain", "event", "lower_weeks", "upper_weeks"]
    data, notes = _usable(times, needed, group_col, alpha, at_weeks, min_events)
    bad = data["upper_weeks"] <= data["lower_weeks"]
    if bad.any():
        raise ConfigError(
            f"{int(bad.sum())} row(s) have upper_weeks <= lower_weeks; intervals must be (lower, upper]")
    curves, params, risks = [], [], []
    for (domain, group), part in data.groupby(["domain", "group"], sort=False):
        lower = part["lower_weeks"].to_numpy(dtype=float)
        upper = part["upper_weeks"].to_numpy(dtype=float)
        e = part["event"].to_numpy(dtype=bool)
        risks.append(_at_risk(domain, group, lower, upper, e, at_weeks, interval=True))
        label = _label(domain, group)
        row: dict[str, Any] = {"domain": domain, "group": group, "n": len(part), "events": int(e.sum())}
        if e.sum() == 0:
            notes.append(f"{label}: no improvement observed; nothing to estimate")
            params.append(row)
            continue
        # Episodes share visit weeks, so fitting each distinct interval once with a weight is exact
        # and turns 100,000 rows into a few hundred.
        distinct = pd.DataFrame({"lo": lower + INTERVAL_EPSILON, "hi": upper}).value_counts().reset_index()
        kmf = _quietly(notes, label, lambda: KaplanMeierFitter(alpha=alpha).fit_interval_censoring(
            distinct["lo"], distinct["hi"], weights=distinct["count"]))
        npmle = _npmle_steps(kmf.survival_function_)
        curves.append(npmle.assign(domain=domain, group=group, method="npmle", ci_low=np.nan, ci_high=np.nan))
        finite = upper[np.isfinite(upper)]
        grid = np.union1d(np.arange(0, math.ceil(max(finite.max(initial=0), lower.max(initial=0))) + 1),
                          [w for w in at_weeks if w <= max(finite.max(initial=0), lower.max(initial=0))])
        try:
            wf = _quietly(notes, label, lambda: WeibullFitter(alpha=alpha).fit_interval_censoring(
                distinct["lo"], distinct["hi"], weights=distinct["count"], timeline=grid))
        except ConvergenceError:
            notes.append(f"{label}: the Weibull model did not converge; only the NPMLE (no CI) is shown")
            params.append(row)
            continue
        ci = wf.confidence_interval_cumulative_density_
        fitted = wf.cumulative_density_at_times(grid).to_numpy()
        curves.append(pd.DataFrame({"domain": domain, "group": group, "method": "weibull", "time_weeks": grid,
                                    "estimate": fitted, "ci_low": np.clip(ci.iloc[:, 0].to_numpy(), 0, 1),
                                    "ci_high": np.clip(ci.iloc[:, 1].to_numpy(), 0, 1)}))
        summary = wf.summary
        low_col = [c for c in summary.columns if str(c).startswith("coef lower")][0]
        high_col = [c for c in summary.columns if str(c).startswith("coef upper")][0]
        # An array, not a Series: lifelines would align a Series on its index and return NaN.
        gap = float(np.max(np.abs(wf.cumulative_density_at_times(npmle["time_weeks"].to_numpy()).to_numpy()
                                  - npmle["estimate"].to_numpy())))
        row.update({"scale_weeks": float(wf.lambda_), "scale_ci_low": float(summary.loc["lambda_", low_col]),
                    "scale_ci_high": float(summary.loc["lambda_", high_col]), "shape": float(wf.rho_),
                    "shape_ci_low": float(summary.loc["rho_", low_col]),
                    "shape_ci_high": float(summary.loc["rho_", high_col]),
                    "median_weeks": float(wf.median_survival_time_), "max_gap": gap})
        params.append(row)
        if gap > max_gap:
            notes.append(f"{label}: the Weibull fit departs from the NPMLE by up to {100 * gap:.0f} "
                         "percentage points; read its confidence band with caution")
        if e.sum() < min_events:
            notes.append(f"{label}: {int(e.sum())} events; estimate unstable")
    return IntervalCensoredCurves(
        curve=_concat(curves, ("domain", "group", "method", "time_weeks", "estimate", "ci_low", "ci_high")),
        parameters=pd.DataFrame.from_records(params, columns=[
            "domain", "group", "n", "events", "scale_weeks", "scale_ci_low", "scale_ci_high", "shape",
            "shape_ci_low", "shape_ci_high", "median_weeks", "max_gap"]),
        at_risk=_concat(risks, AT_RISK_COLUMNS),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# Event derivation (vectorised) and helpers.

_NONE = np.iinfo(np.int64).max  # "no such day" in per-episode arrays
_NO_DAY = np.iinfo(np.int64).min


@dataclass(frozen=True)
class _Derived:
    assigned: Any  # analysis._Assigned
    first_improved: np.ndarray  # days after F of the first improved score per g (_NONE: none)
    prev_day: np.ndarray  # days after F of the score before it (_NONE: none after F)
    last_day: np.ndarray  # days after F of the last score in follow-up (_NONE: none after F)
    loss_day: np.ndarray  # days after F of the first of two consecutive non-improved scores after it
    n_scores: np.ndarray  # scores after F per g


def _derive(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    thresholds: Mapping[str, float],
    baseline_days: int,
    series: str,
    durability: bool = False,
) -> _Derived:
    domains = _domains_of(thresholds)
    a = _assign(episodes, scores, as_of=as_of, domains=domains, windows=(), baseline_days=baseline_days,
                series=series)
    nd, n_g = len(domains), len(a.base_t)
    rel = a.day - a.first[a.g // nd]
    after = np.flatnonzero((rel > 0) & ~np.isnan(a.base_t[a.g]))
    g, rel, t = a.g[after], rel[after], a.t[after]
    signs = np.array([_sign(d) for d in domains], dtype=float)[g % nd]
    limits = np.array([thresholds[d] for d in domains])[g % nd]
    improved = signs * round_half_away(t - a.base_t[g]) >= limits

    # First improved day, the score before it and the last score: group minima/maxima, no sort.
    first = np.full(n_g, _NONE, dtype=np.int64)
    np.minimum.at(first, g[improved], rel[improved])
    before = rel < first[g]
    prev = np.full(n_g, -1, dtype=np.int64)
    np.maximum.at(prev, g[before], rel[before])
    last = np.full(n_g, -1, dtype=np.int64)
    np.maximum.at(last, g, rel)
    n_scores = np.bincount(g, minlength=n_g)

    loss = np.full(n_g, _NONE, dtype=np.int64)
    if durability:
        # Loss of response needs "the next score", so order the responders' later scores by group
        # and day. Stored scores usually arrive in that order already; then no sort is needed.
        later = np.flatnonzero(rel > first[g])
        key = g[later] * (int(rel.max(initial=0)) + 1) + rel[later]
        if np.any(key[1:] < key[:-1]):
            order = np.argsort(key, kind="stable")
            later = later[order]
        gs, not_met = g[later], ~improved[later]
        confirmed = np.zeros(len(later), dtype=bool)
        confirmed[:-1] = not_met[:-1] & not_met[1:] & (gs[:-1] == gs[1:])
        np.minimum.at(loss, gs[confirmed], rel[later][confirmed])

    return _Derived(
        assigned=a, first_improved=first,
        prev_day=np.where(prev < 0, _NONE, prev), last_day=np.where(last < 0, _NONE, last),
        loss_day=loss, n_scores=n_scores,
    )


def _usable(
    times: pd.DataFrame,
    columns: list[str],
    group_col: str | None,
    alpha: float,
    at_weeks: Sequence[float],
    min_events: int,
) -> tuple[pd.DataFrame, list[str]]:
    """Validate options, drop rows without a baseline (noted) and add a ``group`` column."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1 (0.05 for 95 % intervals), got {alpha}")
    if any(w < 0 for w in at_weeks):
        raise ConfigError(f"at_weeks must be 0 or more, got {list(at_weeks)}")
    if min_events < 0:
        raise ConfigError(f"min_events must be 0 or more, got {min_events}")
    require_columns(times, columns + ([group_col] if group_col else []), frame="times")
    notes: list[str] = []
    data = times
    if "has_baseline" in times.columns:
        missing = ~times["has_baseline"].astype(bool)
        for domain, k in times.loc[missing, "domain"].value_counts(sort=False).items():
            notes.append(f"{domain}: {k} episode(s) without a baseline score were excluded")
        data = times.loc[~missing]
    if group_col is None:
        data = data.assign(group="all")
    else:
        absent = data[group_col].isna()
        if absent.any():
            notes.append(f"{int(absent.sum())} episode(s) with no {group_col} are shown as '(missing)'")
        data = data.assign(group=data[group_col].astype(object).where(~absent, "(missing)").astype(str))
    if data.empty:
        raise InsufficientData("no episode has a baseline score, so there is nothing to fit; "
                               "check the date range and that baseline questionnaires were entered")
    return data.assign(domain=data["domain"].astype(str)), notes


def _at_risk(domain: str, group: str, lower: np.ndarray, upper: np.ndarray, event: np.ndarray,
             at_weeks: Sequence[float], *, interval: bool = False) -> pd.DataFrame:
    weeks = np.asarray(at_weeks, dtype=float)[:, None]
    at_risk = (lower[None, :] >= weeks).sum(axis=1)
    if interval:
        events = (event[None, :] & (upper[None, :] <= weeks)).sum(axis=1)
    else:
        events = (event[None, :] & (upper[None, :] < weeks)).sum(axis=1)
    censored = (~event[None, :] & (lower[None, :] < weeks)).sum(axis=1)
    return pd.DataFrame({"domain": domain, "group": group, "week": np.asarray(at_weeks),
                         "at_risk": at_risk, "events": events, "censored": censored})


def _npmle_steps(survival_function: pd.DataFrame) -> pd.DataFrame:
    """1 - S of the Turnbull NPMLE at the right ends of its intervals, starting at (0, 0).

    The ``_lower`` column is S with each interval's mass at its left end; read where it changes,
    that is S at the right end of each Turnbull interval, where the NPMLE is unique.
    """
    s = survival_function[[c for c in survival_function.columns if str(c).endswith("_lower")][0]]
    # Mass beyond the last finite bound (never-improved episodes) has no place in time: drop it.
    change = (s.diff().fillna(0).to_numpy() != 0) & np.isfinite(s.index.to_numpy(dtype=float))
    times = np.concatenate([[0.0], s.index.to_numpy(dtype=float)[change]])
    values = np.concatenate([[0.0], 1 - s.to_numpy()[change]])
    return pd.DataFrame({"time_weeks": np.round(times, 6), "estimate": values})


def _caveats(notes: list[str], domain: str, group: str, events: int, min_events: int, t: np.ndarray,
             e: np.ndarray, median: float, kind: str) -> None:
    label = _label(domain, group)
    if events < min_events:
        notes.append(f"{label}: {events} events; estimate unstable")
    if not math.isfinite(median) and events:
        what = "fewer than half improved" if kind == "event" else "more than half still respond"
        notes.append(f"{label}: median not reached ({what} by the end of follow-up)")
    # KMunicate: curves are unreliable once few remain at risk; say from when.
    order = np.sort(t)
    if len(order) >= 10:
        cut = order[len(order) - 10]
        if cut < min(order[-1], max(AT_RISK_WEEKS)):
            notes.append(f"{label}: fewer than 10 episodes at risk after week {cut:.1f}; "
                         "consider cutting the axis there")


_T = TypeVar("_T")


def _quietly(notes: list[str], label: str, fit: Callable[[], _T]) -> _T:
    """Run a lifelines fit, turning its warnings into notes (never printed, never lost)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit()
    for w in caught:
        text = str(w.message).strip()
        message = text.splitlines()[0] if text else w.category.__name__
        notes.append(f"{label}: lifelines warned: {message}")
    return result


def _label(domain: str, group: str) -> str:
    return domain if group == "all" else f"{domain}, group {group}"


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")


def _concat(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)[list(columns)]
