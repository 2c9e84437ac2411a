"""Small-cell suppression for de-identified output: pure functions on DataFrames, no I/O.

The rule (CMS cell-size suppression policy; peers notes §7): no count from 1 to ``threshold``
(``settings.small_cell_max``, 10 by default) may be published, nor any value from which such a
count can be worked out: a percentage or interval computed from it, a total minus the other cells,
or a count out of a small denominator ("0 of 7 improved" says something about each of the 7).
Zero is allowed. Two markers replace hidden values (docs/methods.md §12):

* ``"≤10"`` (:func:`small_marker`): the count itself is from 1 to 10 (primary suppression);
* ``"*"`` (:data:`HIDDEN`): hidden so that a small count cannot be worked out from it
  (complementary suppression, or a percentage or interval of a hidden count). Its value may be
  large; it is never a small count shown in disguise.

A table declares its arithmetic in a :class:`Spec` (which columns are counts, which values derive
from which counts, which counts add up), so the same engine serves the cohort page and the exports.

Example
-------
>>> import pandas as pd
>>> table = pd.DataFrame({"n_eligible": [120, 60], "n_observed": [100, 55], "n_improved": [40, 50],
...                       "pct_observed": [40.0, 90.9]})
>>> spec = Spec(counts=("n_eligible", "n_observed", "n_improved"),
...             derived={"pct_observed": ("n_improved", "n_observed")},
...             sums=(Sum("n_observed", ("n_improved",)),))
>>> suppress(table, spec).values.tolist()  # 55 - 50 = 5 did not improve: 50 must go
[['120', '100', '40', '40.0'], ['60', '55', '*', '*']]
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .analysis import require_columns
from .errors import ConfigError

DEFAULT_THRESHOLD = 10
#: Marker of a value hidden so that a small count cannot be recovered (its own value may be large).
HIDDEN = "*"

_Cell = tuple[int, str]  # (row position, column)


def small_marker(threshold: int = DEFAULT_THRESHOLD) -> str:
    """The marker of a count from 1 to ``threshold``: ``"≤10"`` (zero is shown as 0).

    Examples
    --------
    >>> small_marker(), small_marker(5)
    ('≤10', '≤5')
    """
    return f"≤{threshold}"


def is_small(value: Any, threshold: int = DEFAULT_THRESHOLD) -> bool:
    """True for a count from 1 to ``threshold`` (NaN and 0 are not small).

    Examples
    --------
    >>> is_small(0), is_small(1), is_small(10), is_small(11), is_small(float("nan"))
    (False, True, True, False, False)
    """
    return not pd.isna(value) and bool(1 <= value <= threshold)


def show_count(value: Any, threshold: int = DEFAULT_THRESHOLD) -> str:
    """One count for a sentence: ``"≤10"`` when small, else the number with thousands separators.

    Examples
    --------
    >>> show_count(3), show_count(0), show_count(1234)
    ('≤10', '0', '1,234')
    """
    return small_marker(threshold) if is_small(value, threshold) else f"{int(value):,}"


@dataclass(frozen=True)
class Sum:
    """Within each row, ``total`` = sum of ``parts`` (plus an unpublished remainder unless ``complete``).

    ``Sum("n_observed", ("n_improved",))`` says that ``n_observed - n_improved`` (not improved) can be
    worked out, so it is protected like a published count.
    """

    total: str
    parts: tuple[str, ...]
    complete: bool = False


@dataclass(frozen=True)
class RowTotal:
    """Across rows: in each ``by`` group, the row whose ``label_column`` equals ``total_label`` holds the
    sum of the group's other rows, for each of ``columns`` (plus a remainder unless ``complete``)."""

    by: tuple[str, ...]
    label_column: str
    total_label: Any
    columns: tuple[str, ...]
    complete: bool = True


@dataclass(frozen=True)
class Spec:
    """The arithmetic of a table, as far as disclosure is concerned.

    Attributes
    ----------
    counts
        Columns holding counts of people (non-negative integers; NaN means "not applicable").
    derived
        Column -> the counts it is computed from (percentages, intervals, means). Hidden when any of
        them is hidden.
    sums
        Counts that add up within a row.
    row_totals
        Counts that add up across rows (a total row and its parts).
    denominators
        Count -> the count it is a part of. When the denominator is small, the count is hidden even
        if it is 0 or large: "0 of ≤10 improved" discloses something about each of them.
    prefer
        Counts to hide first when a second cell must go (complementary suppression), e.g. hide the
        eligible count rather than the observed count the primary estimate rests on. Otherwise the
        smallest positive part goes first, the total last.
    """

    counts: tuple[str, ...]
    derived: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    sums: tuple[Sum, ...] = ()
    row_totals: tuple[RowTotal, ...] = ()
    denominators: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prefer: tuple[str, ...] = ()

    def columns(self) -> list[str]:
        """Counts, then derived columns: every column the suppression may touch."""
        return list(self.counts) + [c for c in self.derived if c not in self.counts]


_RESPONDER_CI = ("n_improved", "n_observed")
_MNNI = ("n_improved", "n_eligible")

#: The responder report (``analysis.REPORT_COLUMNS``): not-improved and missing are protected like
#: published counts; a small observed count hides the whole row; when a missing count is small the
#: eligible count goes (the sensitivity estimate), so the primary estimate survives.
RESPONDER_SPEC = Spec(
    counts=("n_eligible", "n_observed", "n_improved"),
    derived=MappingProxyType({
        "pct_observed": _RESPONDER_CI, "ci_low": _RESPONDER_CI, "ci_high": _RESPONDER_CI,
        "pct_missing_as_not_improved": _MNNI, "mnni_ci_low": _MNNI, "mnni_ci_high": _MNNI}),
    sums=(Sum("n_eligible", ("n_observed",)), Sum("n_observed", ("n_improved",))),
    denominators=MappingProxyType({"n_observed": "n_eligible", "n_improved": "n_observed"}),
    prefer=("n_eligible", "n_improved", "n_observed"),
)

#: ``analysis.follow_up_completion``: completers + non-completers = eligible.
COMPLETION_SPEC = Spec(
    counts=("n_eligible", "n_completed", "noncompleter_n", "completer_n", "n_not_due"),
    derived=MappingProxyType({
        "pct_completed": ("n_completed", "n_eligible"),
        "completer_baseline_mean": ("n_completed",), "completer_baseline_sd": ("n_completed",),
        "noncompleter_baseline_mean": ("noncompleter_n",), "noncompleter_baseline_sd": ("noncompleter_n",)}),
    sums=(Sum("n_eligible", ("n_completed", "noncompleter_n"), complete=True),
          Sum("n_completed", ("completer_n",), complete=True)),
    denominators=MappingProxyType({"n_completed": "n_eligible", "noncompleter_n": "n_eligible"}),
    prefer=("n_eligible",),
)

#: A Kaplan–Meier at-risk table joined with each curve's ``n``: at risk + events + censored = n.
AT_RISK_SPEC = Spec(
    counts=("n", "at_risk", "events", "censored"),
    sums=(Sum("n", ("at_risk", "events", "censored"), complete=True),),
    prefer=("censored", "events"),  # the plot shows the at-risk numbers: hide the others first
)


def _means_of(count: str, *columns: str) -> Spec:
    return Spec(counts=(count,), derived=MappingProxyType({c: (count,) for c in columns}))


#: ``analysis.trajectories``, mean T view and mean change view (one count each: draw one view at a time).
TRAJECTORY_T_SPEC = _means_of("n", "mean_t", "sd_t", "t_ci_low", "t_ci_high")
TRAJECTORY_CHANGE_SPEC = _means_of("n_change", "mean_change", "change_ci_low", "change_ci_high")

#: Survival summaries (``SurvivalCurves.summary``, ``IntervalCensoredCurves.summary``) with a total row
#: per domain (group "All"): groups add up to it, and events are a part of n (the rest are censored).
_SURVIVAL_TOTAL = "All"


def suppression_mask(table: pd.DataFrame, spec: Spec, *, threshold: int = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Which cells to hide: a boolean frame over :meth:`Spec.columns` (True = hide).

    Counts from 1 to ``threshold`` are hidden (primary suppression); then, until nothing changes,
    counts out of a small denominator, and one more cell in every sum where a hidden value could be
    recovered by subtraction or where the hidden cells together are small; derived columns follow
    their counts.

    Parameters
    ----------
    table
        Any frame with the spec's columns; its index is kept.
    spec
        The table's arithmetic.
    threshold
        Largest count that may not be shown (``settings.small_cell_max``); 0 hides nothing.

    Raises
    ------
    MissingColumns
        A column of the spec is absent.
    ConfigError
        A negative threshold, a negative or fractional count, or parts that exceed their total.
    """
    if threshold < 0:
        raise ConfigError(f"threshold must be 0 or more, got {threshold}")
    require_columns(table, spec.columns() + [c for t in spec.row_totals for c in (*t.by, t.label_column)],
                    frame="table to suppress")
    values = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) for c in spec.counts}
    for column, v in values.items():
        bad = ~np.isnan(v) & ((v < 0) | (v != np.round(v)))
        if bad.any():
            raise ConfigError(f"column {column} must hold whole non-negative counts; row(s) "
                              f"{np.flatnonzero(bad)[:5].tolist()} do not")
    hidden = {c: (values[c] >= 1) & (values[c] <= threshold) for c in spec.counts}
    for count, denominator in spec.denominators.items():
        small = (values[denominator] >= 1) & (values[denominator] <= threshold)
        hidden[count] |= small
    relations = list(_relations(table, spec, values))
    rank = {c: i for i, c in enumerate(spec.prefer)}
    changed = True
    while changed:  # the hidden set only grows, so this ends
        changed = False
        for total, parts, complete in relations:
            cell = _second_cell(total, parts, complete, values, hidden, threshold, rank)
            if cell is not None:
                hidden[cell[1]][cell[0]] = True
                changed = True
    mask = pd.DataFrame({c: hidden[c] for c in spec.counts}, index=table.index)
    for column, sources in spec.derived.items():
        mask[column] = np.logical_or.reduce([hidden[s] for s in sources]) if sources else False
    return mask[spec.columns()]


def _relations(table: pd.DataFrame, spec: Spec,
               values: Mapping[str, np.ndarray]) -> Iterable[tuple[_Cell, list[_Cell], bool]]:
    rows = range(len(table))
    for s in spec.sums:
        for i in rows:
            yield (i, s.total), [(i, p) for p in s.parts], s.complete
    for t in spec.row_totals:
        keys = (table[list(t.by)].astype(str).agg("\x1f".join, axis=1).to_numpy() if t.by
                else np.zeros(len(table)))
        is_total = (table[t.label_column] == t.total_label).to_numpy()
        for key in pd.unique(keys):
            members = np.flatnonzero(keys == key)
            totals = members[is_total[members]]
            if len(totals) != 1:
                continue  # no total row in this group: nothing adds up
            parts = members[~is_total[members]]
            for column in t.columns:
                yield (int(totals[0]), column), [(int(i), column) for i in parts], t.complete


def _second_cell(total: _Cell, parts: list[_Cell], complete: bool, values: Mapping[str, np.ndarray],
                 hidden: Mapping[str, np.ndarray], threshold: int, rank: Mapping[str, int]) -> _Cell | None:
    """A cell to hide so that no hidden value of this sum can be worked out, or None if it is safe."""
    def value(c: _Cell) -> float:
        return float(values[c[1]][c[0]])

    def is_hidden(c: _Cell) -> bool:
        return bool(hidden[c[1]][c[0]])

    if any(np.isnan(value(c)) for c in [total, *parts]):
        return None  # "not applicable" somewhere: no arithmetic to exploit
    remainder = value(total) - sum(value(p) for p in parts)
    if remainder < 0 or (complete and remainder != 0):
        raise ConfigError(f"{', '.join(p[1] for p in parts)} do not add up to {total[1]} in row {total[0]}")
    hidden_parts = [p for p in parts if is_hidden(p)]
    if is_hidden(total):
        # The total is unknown: only "total - hidden parts" is known, unless nothing else is hidden.
        if complete and not hidden_parts:
            return _cheapest([p for p in parts if value(p) > 0], [], value, rank)
        return None
    unknowns = len(hidden_parts) + (0 if complete else 1)
    unknown_sum = sum(value(p) for p in hidden_parts) + (0 if complete else remainder)
    exposed = (unknowns == 1 and bool(hidden_parts)) or 1 <= unknown_sum <= threshold
    if unknowns == 0 or not exposed:
        return None
    return _cheapest([p for p in parts if not is_hidden(p) and value(p) > 0], [total], value, rank)


def _cheapest(parts: list[_Cell], totals: list[_Cell], value: Any, rank: Mapping[str, int]) -> _Cell | None:
    """Preferred columns first, then parts before the total, then the smallest count."""
    options = [(rank.get(c[1], len(rank)), 0, value(c), c) for c in parts]
    options += [(rank.get(c[1], len(rank)), 1, value(c), c) for c in totals]
    return min(options)[3] if options else None


def apply_mask(table: pd.DataFrame, mask: pd.DataFrame, *, counts: Iterable[str] | None = None,
               threshold: int = DEFAULT_THRESHOLD, as_text: bool = True,
               formats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Replace hidden cells: by markers in text columns, or by NaN for figures.

    Parameters
    ----------
    table, mask
        The table and :func:`suppression_mask` of it (same index).
    counts
        Columns holding counts (default: the masked columns of integer dtype). A hidden small count
        shows :func:`small_marker`; any other hidden value shows :data:`HIDDEN`.
    as_text
        True: every masked column becomes text, NaN an empty string. False: hidden cells become NaN
        (and the columns floats), for figures that leave out missing points.
    formats
        Format strings of shown values per column (default: counts ``"{:,.0f}"``, others ``"{:.1f}"``).
    """
    out = table.copy()
    counts = set(counts if counts is not None
                 else [c for c in mask.columns if pd.api.types.is_integer_dtype(table[c])])
    formats = dict(formats or {})
    for column in mask.columns:
        hide = mask[column].to_numpy(dtype=bool)
        number = pd.to_numeric(table[column], errors="coerce").astype(float)
        if not as_text:
            out[column] = number.where(~hide)
            continue
        pattern = formats.get(column, "{:,.0f}" if column in counts else "{:.1f}")
        small = number.between(1, threshold).to_numpy() & (column in counts)
        text = ["" if np.isnan(v) else pattern.format(v) for v in number.to_numpy()]
        out[column] = [small_marker(threshold) if h and s else HIDDEN if h else t
                       for h, s, t in zip(hide, small, text)]
    return out


def suppress(table: pd.DataFrame, spec: Spec, *, threshold: int = DEFAULT_THRESHOLD, as_text: bool = True,
             formats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """:func:`suppression_mask` then :func:`apply_mask`: the table as it may be published.

    Examples
    --------
    >>> from outcomes.disclosure import RESPONDER_SPEC
    >>> row = pd.DataFrame({"n_eligible": [40], "n_observed": [7], "n_improved": [0], "pct_observed": [0.0],
    ...     "ci_low": [0.0], "ci_high": [35.4], "pct_missing_as_not_improved": [0.0], "mnni_ci_low": [0.0],
    ...     "mnni_ci_high": [8.8]})
    >>> suppress(row, RESPONDER_SPEC).iloc[0].tolist()  # 7 observed: the whole row goes, 0 included
    ['40', '≤10', '*', '*', '*', '*', '*', '*', '*']
    """
    return apply_mask(table, suppression_mask(table, spec, threshold=threshold), counts=spec.counts,
                      threshold=threshold, as_text=as_text, formats=formats)


def publishable_cumulative(at_least: Sequence[float] | np.ndarray, total: float, *,
                           threshold: int = DEFAULT_THRESHOLD,
                           pinned: Sequence[bool] | np.ndarray | None = None) -> np.ndarray:
    """Which points of a falling cumulative count ("n improving by at least x", x ascending) to publish.

    Every published count N, its complement ``total - N`` and the difference between neighbouring
    published points (the number between two thresholds) is 0 or above ``threshold``, so no small
    group can be worked out by subtraction. Points are taken greedily from the left; a ``pinned``
    point (e.g. the meaningful-change threshold, whose count the responder table shows) displaces
    earlier points that are too close to it. ``total`` itself must be publishable (not small).

    Examples
    --------
    >>> publishable_cumulative([100, 97, 80, 60, 55, 12, 3], 100).tolist()
    [True, False, True, True, False, True, False]
    >>> publishable_cumulative([100, 97, 80, 60, 55, 12, 3], 100, pinned=[0, 0, 0, 0, 1, 0, 0]).tolist()
    [True, False, True, False, True, True, False]
    """
    n = np.asarray(at_least, dtype=float)
    pins = np.zeros(len(n), dtype=bool) if pinned is None else np.asarray(pinned, dtype=bool)

    def ok(x: float) -> bool:
        return not 1 <= x <= threshold

    keep: list[int] = []
    for i, value in enumerate(n):
        if not (ok(value) and ok(total - value)):
            continue
        top = n[keep[-1]] if keep else total
        if ok(top - value):
            keep.append(i)
        elif pins[i]:
            while keep and not ok(n[keep[-1]] - value):
                keep.pop()
            keep.append(i)  # against the start (total) the difference is total - value: checked above
    out = np.zeros(len(n), dtype=bool)
    out[keep] = True
    return out


def coarsen_cdf(cdf: pd.DataFrame, *, threshold: int = DEFAULT_THRESHOLD, step: float = 1.0,
                pins: Mapping[str, float] | None = None) -> pd.DataFrame:
    """A cumulative distribution of change fit for de-identified output.

    Each domain × window curve of ``analysis.change_cdf`` is read on a grid of ``step`` T points
    (so no individual change value appears) plus the domain's threshold from ``pins``, and only the
    points :func:`publishable_cumulative` allows are kept, without the trivial 100 % and 0 % points
    (they only locate the extremes, single patients); curves with a small ``n`` are dropped.

    Returns
    -------
    DataFrame
        The columns of ``change_cdf``: ``domain, window, improvement, n_at_least, n, pct_at_least``.
    """
    require_columns(cdf, ["domain", "window", "improvement", "n_at_least", "n"], frame="change_cdf")
    pins = dict(pins or {})
    parts = []
    for (domain, window), curve in cdf.groupby(["domain", "window"], sort=False):
        total = int(curve["n"].iloc[0])
        if is_small(total, threshold) or total == 0:
            continue
        x, counts = curve["improvement"].to_numpy(float), curve["n_at_least"].to_numpy(float)
        grid = np.arange(np.floor(x.min() / step) * step, x.max() + step, step)
        pin = pins.get(str(domain))
        if pin is not None:
            grid = np.union1d(grid, [pin])
        # n improving by at least g: the count at the first observed value >= g (0 past the last).
        idx = np.searchsorted(x, grid - 1e-9, side="left")
        at_least = np.where(idx < len(x), counts[np.minimum(idx, len(x) - 1)], 0.0)
        keep = publishable_cumulative(at_least, total, threshold=threshold, pinned=np.isclose(grid, pin)
                                      if pin is not None else None)
        # "All" and "none" say nothing but where the extremes lie, i.e. single patients' changes.
        keep &= (at_least > 0) & (at_least < total)
        parts.append(pd.DataFrame({"domain": domain, "window": window, "improvement": grid[keep],
                                   "n_at_least": at_least[keep].astype(int), "n": total,
                                   "pct_at_least": 100 * at_least[keep] / total}))
    columns = ["domain", "window", "improvement", "n_at_least", "n", "pct_at_least"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


_COUNT_IN_TEXT = re.compile(
    r"(?<![\w.])(\d+)(?=\s+(?:event|episode|patient|responder|group)s?\b|\s+episode\(s\))")


def redact_text(text: str, *, threshold: int = DEFAULT_THRESHOLD) -> str:
    """Replace small counts in a sentence (e.g. a survival note) by the marker; weeks stay.

    Only a whole number directly followed by "event(s)", "episode(s)", "patient(s)", "responder(s)" or
    "group(s)" counts as a count.

    Examples
    --------
    >>> redact_text("depression: 4 events; estimate unstable")
    'depression: ≤10 events; estimate unstable'
    >>> redact_text("fewer than 10 episodes at risk after week 8.3; 25 episode(s) excluded")
    'fewer than 10 episodes at risk after week 8.3; 25 episode(s) excluded'
    """
    def swap(match: re.Match[str]) -> str:
        return small_marker(threshold) if is_small(int(match.group(1)), threshold) else match.group(1)

    # "fewer than 10 episodes" states the rule, not a count of anybody.
    return _COUNT_IN_TEXT.sub(lambda m: m.group(1) if text[max(0, m.start() - 11):m.start()] == "fewer than "
                              else swap(m), text)


def suppress_curves(summary: pd.DataFrame, at_risk: pd.DataFrame, *, threshold: int = DEFAULT_THRESHOLD
                    ) -> tuple[pd.DataFrame, pd.DataFrame, set[tuple[str, str]]]:
    """Survival results as they may be published: summary and at-risk table as text, and hidden curves.

    Each group's ``n`` and ``events`` are protected within the group (censored = n - events) and
    across groups (a total row "All" per domain is added when there are several groups, so that a
    hidden group cannot be recovered as the total minus the others); every other summary column
    (medians, parameters) follows ``n``. A group whose ``n`` is hidden loses its curve entirely.

    Parameters
    ----------
    summary
        ``domain, group, n, events`` and any estimates (the ``summary`` of ``SurvivalCurves`` or
        ``IntervalCensoredCurves``, or the latter's ``parameters``).
    at_risk
        ``domain, group, week, at_risk, events, censored``.

    Returns
    -------
    (summary, at_risk, hidden)
        Text frames (the summary with its "All" rows) and the (domain, group) pairs not to draw.
    """
    require_columns(summary, ["domain", "group", "n", "events"], frame="survival summary")
    keys = ["domain", "group"]
    several = summary.groupby("domain")["group"].transform("nunique") > 1
    totals = (summary[several].groupby("domain", as_index=False, sort=False)[["n", "events"]].sum()
              .assign(group=_SURVIVAL_TOTAL))
    table = pd.concat([summary, totals], ignore_index=True)
    estimates = [c for c in summary.columns if c not in (*keys, "n", "events")]
    spec = Spec(counts=("n", "events"), derived=MappingProxyType({c: ("n", "events") for c in estimates}),
                sums=(Sum("n", ("events",)),), denominators=MappingProxyType({"events": "n"}),
                row_totals=(RowTotal(("domain",), "group", _SURVIVAL_TOTAL, ("n", "events"), complete=True),))
    mask = suppression_mask(table, spec, threshold=threshold)
    hidden = {(str(d), str(g)) for d, g, h in zip(table["domain"], table["group"], mask["n"])
              if h and g != _SURVIVAL_TOTAL}
    shown = apply_mask(table, mask, counts=spec.counts, threshold=threshold)
    risk = at_risk.merge(summary[[*keys, "n"]], on=keys, how="left")
    risk = risk[[(str(d), str(g)) not in hidden for d, g in zip(risk["domain"], risk["group"])]]
    risk_shown = suppress(risk.reset_index(drop=True), AT_RISK_SPEC, threshold=threshold).drop(columns="n")
    return shown, risk_shown, hidden


# Release of episodes to quality-improvement and de-identified output (docs/privacy.md, "Dates and
# differencing" and "Diagnosis codes and filters")
#
# An exact calendar cut lets whoever can choose it learn dates by differencing: an episode that is in the
# file cut on one day and not in the file cut the day before started on that day. So de-identified
# output (row-level files, summary tables, the QI cohort page) never shows an episode while it is still
# open, and shows all of it at once: an episode is *released* when its follow-up has closed (last
# infusion + the last window's upper bound) and then a delay of 0 to ``RELEASE_DELAY_DAYS - 1`` days has
# passed, the same for all of a patient's episodes, computed from the database's secret (never shown).
# Which of its scores appear is fixed (baseline period to the close of follow-up), so nothing of a
# released episode depends on the cut. Seen from outside, an episode's release dates its follow-up's
# close only to within the unknown delay, a year (docs/privacy.md, "Dates and differencing").

#: Days of the secret per-patient delay between the close of an episode's follow-up and its release.
RELEASE_DELAY_DAYS = 365
#: The label of pooled rare categories in QI filters and de-identified output.
POOLED = "Other (pooled)"


def release_delay(secret: str, patient_id: Any) -> int:
    """The patient's release delay in days, 0 to ``RELEASE_DELAY_DAYS - 1``: HMAC-SHA256 of the patient ID
    keyed with the database's secret, so nobody without the secret can work it out.

    Examples
    --------
    >>> delay = release_delay("0" * 64, "P001")
    >>> delay == release_delay("0" * 64, "P001") and 0 <= delay < 365
    True
    """
    digest = hmac.new(str(secret).encode(), f"release-delay:{patient_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % RELEASE_DELAY_DAYS


def follow_up_days(windows: Sequence[Any]) -> int:
    """Days from the last infusion to the close of follow-up: the last window's upper bound."""
    return max((int(w.high) for w in windows), default=0)


def released(episodes: pd.DataFrame, scores: pd.DataFrame, *, cut: Any, secret: str, windows: Sequence[Any],
             baseline_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The episodes released by ``cut`` and the scores they hold (module comment above).

    Parameters
    ----------
    episodes
        Every series given of the clinic (``analysis.EPISODE_COLUMNS`` and any others): all of them, so
        that a later series still ends an earlier one's follow-up.
    scores
        Active scores with ``patient_id`` and ``assessed_on``.

    Returns
    -------
    (episodes, scores)
        Released episodes with ``closes`` (close of follow-up), ``released_on`` and ``follow_up_end``
        capped at ``closes`` (the day before a next series that began earlier); and the scores from
        ``baseline_days`` before an episode's first infusion to its ``follow_up_end``, each once.
    """
    from .analysis import with_follow_up_end

    cut = pd.Timestamp(cut).normalize()
    eps = with_follow_up_end(episodes)
    last = pd.to_datetime(eps["last_infusion"]).dt.normalize()
    closes = last + pd.Timedelta(days=follow_up_days(windows))
    delays = {pid: release_delay(secret, pid) for pid in pd.unique(eps["patient_id"])}
    delay = pd.to_timedelta(eps["patient_id"].map(delays).astype("int64"), unit="D")
    eps = eps.assign(closes=closes, released_on=closes + delay)
    eps = eps[eps["released_on"] <= cut].copy()
    eps["follow_up_end"] = eps["follow_up_end"].where(eps["follow_up_end"] < eps["closes"], eps["closes"])
    first = pd.to_datetime(eps["first_infusion"]).dt.normalize()
    spans = pd.DataFrame({"patient_id": eps["patient_id"].astype(str).to_numpy(),
                          "_from": (first - pd.Timedelta(days=int(baseline_days))).to_numpy(),
                          "_to": eps["follow_up_end"].to_numpy()})
    numbered = scores.assign(_row=np.arange(len(scores)), _pid=scores["patient_id"].astype(str))
    joined = numbered[["_row", "_pid", "assessed_on"]].merge(spans, left_on="_pid", right_on="patient_id")
    inside = joined.loc[(joined["assessed_on"] >= joined["_from"]) & (joined["assessed_on"] <= joined["_to"]),
                        "_row"]
    keep = np.zeros(len(scores), dtype=bool)
    keep[np.unique(inside.to_numpy())] = True
    return eps.reset_index(drop=True), scores[keep].reset_index(drop=True)


def pool_rare(values: pd.Series, owners: pd.Series, threshold: int, label: str = POOLED) -> pd.Series:
    """Values shared by 1 to ``threshold`` distinct owners (patients) replaced by ``label``.

    Examples
    --------
    >>> pool_rare(pd.Series(["A", "A", "B"]), pd.Series([1, 2, 3]), 1).tolist()
    ['A', 'A', 'Other (pooled)']
    """
    counts = pd.DataFrame({"v": values, "o": owners}).dropna().drop_duplicates().groupby("v")["o"].size()
    rare = set(counts.index[(counts >= 1) & (counts <= threshold)])
    return values.where(~values.isin(rare), label)


def complement_problem(filters: Mapping[str, np.ndarray], owners: np.ndarray, *,
                       threshold: int = DEFAULT_THRESHOLD) -> tuple[str, ...] | None:
    """The complementary-cell rule across filters: whether a filtered view may be shown.

    ``filters`` maps each active filter to a boolean mask over the rows (episodes) of the unfiltered view;
    the view is the rows passing all of them. For every set of filters widened back to "all", the rows
    the view leaves out of that wider view must not belong to 1 to ``threshold`` owners (patients), nor
    number 1 to ``threshold`` rows: otherwise the wider view minus this one is a small group's result.
    Returns the first set of filters whose widening gives such a difference, or None when the view may
    be shown.

    Examples
    --------
    >>> import numpy as np
    >>> everyone = np.arange(30)
    >>> complement_problem({"diagnosis": everyone != 7}, everyone)  # "all but X" when X is one patient
    ('diagnosis',)
    >>> complement_problem({"diagnosis": everyone < 15}, everyone) is None
    True
    """
    from itertools import combinations

    names = list(filters)
    owners = np.asarray(owners)
    passing = {name: np.asarray(mask, dtype=bool) for name, mask in filters.items()}
    view = np.ones(len(owners), dtype=bool)
    for mask in passing.values():
        view &= mask
    seen_view = set(owners[view].tolist())
    for size in range(1, len(names) + 1):
        for widened in combinations(names, size):
            wider = np.ones(len(owners), dtype=bool)
            for name in names:
                if name not in widened:
                    wider &= passing[name]
            left_out = wider & ~view
            people = len(set(owners[left_out].tolist()) - seen_view)
            rows = int(left_out.sum())
            if is_small(people, threshold) or is_small(rows, threshold):
                return widened
    return None
