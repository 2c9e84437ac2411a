"""Responder analysis of PROMIS T-scores around infusion series: pure pandas/NumPy, no I/O.

Every rule (episode, baseline, windows, rounding, denominators) is stated with its source in
``docs/methods.md``. The work is vectorised: scores are joined onto episodes once with NumPy index
arithmetic, and one score per episode, domain and window is picked by sorting, never by looping over
patients, so 100,000 patients with weekly scores take about a second.

Example
-------
>>> import pandas as pd
>>> episodes = pd.DataFrame({"series_id": [1], "patient_id": ["P1"], "series_number": [1],
...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
>>> scores = pd.DataFrame({"patient_id": ["P1", "P1"], "domain": ["depression"] * 2,
...     "assessed_on": pd.to_datetime(["2025-01-06", "2025-01-12"]), "t_score": [62.0, 58.5]})
>>> report = responder_report(episodes, scores, as_of="2025-12-31", mcid={"depression": 3.5})
>>> eos = report.query("window == 'end_of_series' and domain == 'depression'")
>>> eos[["n_observed", "n_improved"]].to_dict("records")
[{'n_observed': 1, 'n_improved': 1}]
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ConfigError, MissingColumns, ValidationError
from .domains import Domains, load_domains
from .settings import DEFAULT_WINDOWS, Window

DateLike: TypeAlias = date | datetime | str | pd.Timestamp
SeriesChoice: TypeAlias = Literal["first", "all"]

#: Read contract of the series (episode) frame; other columns pass through.
EPISODE_COLUMNS = ("series_id", "patient_id", "series_number", "first_infusion", "last_infusion")
#: Read contract of the score frame; other columns are ignored.
SCORE_COLUMNS = ("patient_id", "assessed_on", "domain", "t_score")

#: Direction of improvement and "impaired" come from each domain's definition (forms.toml
#: ``[domains.*]``: ``higher_is_worse`` and the severity bands). Every public function takes
#: ``registry``, the :class:`~outcomes.domains.Domains` to use (``settings.domains``); None means the
#: definitions shipped in data/instruments, which is what tests and notebooks want.

AGE_BANDS = ("18–29", "30–39", "40–49", "50–59", "60–69", "70–79", "80–89", "90+")

REPORT_COLUMNS = (
    "domain", "window", "mcid", "n_eligible", "n_observed", "n_improved",
    "pct_observed", "ci_low", "ci_high",
    "pct_missing_as_not_improved", "mnni_ci_low", "mnni_ci_high",
)

_NO_DAY = np.iinfo(np.int64).min  # "no score" in integer-day arrays
_DAY_NS = 86_400_000_000_000


def require_columns(df: pd.DataFrame, columns: Iterable[str], *, frame: str = "input") -> None:
    """Raise :class:`MissingColumns` naming every missing column and the columns that were given.

    Examples
    --------
    >>> require_columns(pd.DataFrame({"a": [1]}), ["a", "b"], frame="scores")
    Traceback (most recent call last):
    ...
    outcomes.errors.MissingColumns: the scores frame lacks column(s) b; it has: a. ...
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        given = ", ".join(map(str, df.columns)) or "no columns"
        raise MissingColumns(
            f"the {frame} frame lacks column(s) {', '.join(missing)}; it has: {given}. "
            "Load it with the storage layer's read functions or rename the columns."
        )


def round_half_away(values: Any, decimals: int = 1) -> Any:
    """Round half away from zero, after removing binary noise (50.1 - 53.1 = -3.0000000000000036).

    The change is first snapped to 1e-6 of the rounding unit, so -2.9999999999999996 and
    -3.0000000000000036 both become -3.0 and a true -2.95 becomes -3.0 (not -2.9 as float
    ``round`` may give). Scalars give floats, arrays give arrays; NaN stays NaN.

    Examples
    --------
    >>> round_half_away(50.1 - 53.1), round_half_away(-2.95), round_half_away(2.25), round_half_away(-0.04)
    (-3.0, -3.0, 2.3, 0.0)
    """
    x = np.asarray(values, dtype=float)
    scale = 10.0**decimals
    snapped = np.round(np.abs(x) * scale, 6)
    # + 0.0 turns -0.0 into 0.0 so a "no change" never prints as "-0.0".
    out = np.copysign(np.floor(snapped + 0.5), x) / scale + 0.0
    return float(out) if out.ndim == 0 else out


def wilson_interval(successes: Any, n: Any, *, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion (Wilson 1927), as proportions 0-1.

    Vectorised over ``successes`` and ``n``; NaN where ``n`` is 0.

    Examples
    --------
    >>> low, high = wilson_interval(205, 500)
    >>> round(low * 100, 1), round(high * 100, 1)
    (36.8, 45.4)
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence}")
    k = np.asarray(successes, dtype=float)
    m = np.asarray(n, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / m
        denom = 1 + z**2 / m
        centre = (p + z**2 / (2 * m)) / denom
        half = z * np.sqrt(p * (1 - p) / m + z**2 / (4 * m**2)) / denom
        low = np.where(m > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(m > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def is_improved(change: Any, domain: str, mcid: float, registry: Domains | None = None) -> Any:
    """True where a change from baseline meets the meaningful-change threshold (inclusive).

    The change is rounded to one decimal half away from zero before the comparison; improvement is a
    fall for pain interference and depression and a rise for physical function. NaN gives False.

    Examples
    --------
    >>> bool(is_improved(-3.0, "pain_interference", 3.0)), bool(is_improved(-2.9, "pain_interference", 3.0))
    (True, False)
    >>> bool(is_improved(50.1 - 53.1, "pain_interference", 3.0))
    True
    """
    sign = _sign(domain, registry)
    return sign * round_half_away(change) >= mcid


def age_band(birth_year: Any, as_of: DateLike) -> Any:
    """Age band (18–29, 30–39, …, 80–89, 90+) from the birth year at ``as_of``; None under 18.

    Only the birth year is stored, so age = year of ``as_of`` - birth year (may be a year high).
    A scalar gives a string or None; a Series gives an ordered categorical Series.

    Examples
    --------
    >>> age_band(1975, "2025-06-01"), age_band(1930, "2025-06-01"), age_band(2010, "2025-06-01")
    ('50–59', '90+', None)
    """
    year = _timestamp(as_of, "as_of").year
    scalar = np.ndim(birth_year) == 0
    years = pd.Series(np.atleast_1d(birth_year) if scalar else birth_year)
    age = year - pd.to_numeric(years, errors="coerce")
    bands = pd.cut(age, bins=[18, 30, 40, 50, 60, 70, 80, 90, np.inf], right=False, labels=list(AGE_BANDS))
    if scalar:
        value = bands.iloc[0]
        return None if pd.isna(value) else str(value)
    return bands.cat.as_ordered()


def with_follow_up_end(episodes: pd.DataFrame) -> pd.DataFrame:
    """Add ``follow_up_end``: the day before the patient's next series starts (NaT if none).

    Call this on *all* of a clinic's series before filtering them, so that an episode's follow-up is
    still cut at a next series that the filter removed; the analysis functions use the column when
    present and otherwise compute it from the frame they are given.

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P1"], "series_number": [1, 2],
    ...     "first_infusion": pd.to_datetime(["2025-01-06", "2025-03-03"]),
    ...     "last_infusion": pd.to_datetime(["2025-01-10", "2025-03-07"])})
    >>> with_follow_up_end(eps)["follow_up_end"].dt.strftime("%Y-%m-%d").fillna("none").tolist()
    ['2025-03-02', 'none']
    """
    require_columns(episodes, EPISODE_COLUMNS, frame="episodes")
    first = pd.to_datetime(episodes["first_infusion"]).dt.normalize()
    # Sort by patient and start, shift the next start back one row, and subtract a day.
    order = np.lexsort((first.to_numpy(), episodes["patient_id"].to_numpy()))
    pid = episodes["patient_id"].to_numpy()[order]
    start = first.to_numpy()[order]
    nxt = np.empty_like(start)
    nxt[:-1] = start[1:]
    nxt[-1:] = np.datetime64("NaT")
    same = np.zeros(len(pid), dtype=bool)
    same[:-1] = pid[:-1] == pid[1:]
    end_sorted = np.where(same, nxt - np.timedelta64(1, "D"), np.datetime64("NaT"))
    end = np.empty_like(end_sorted)
    end[order] = end_sorted
    return episodes.assign(follow_up_end=pd.to_datetime(end))


# ---------------------------------------------------------------------------------------------
# The engine: join scores to episodes and pick baseline and window scores.


@dataclass(frozen=True)
class _Assigned:
    """Scores joined to episodes; arrays indexed by g = episode position * n_domains + domain."""

    episodes: pd.DataFrame  # one row per analysed episode, sorted by patient and first infusion
    domains: tuple[str, ...]
    windows: tuple[Window, ...]
    as_of: int  # day number
    first: np.ndarray  # F per episode (day numbers)
    last: np.ndarray  # L per episode
    end: np.ndarray  # last day of follow-up per episode (next series - 1, capped at as_of)
    base_t: np.ndarray  # baseline T per g (NaN: none)
    base_day: np.ndarray  # baseline day number per g
    win_t: np.ndarray  # (n_windows, n_g) window T (NaN: none)
    win_day: np.ndarray  # (n_windows, n_g)
    # Every joined score inside [F - baseline_days, follow-up end]: group, day number and T.
    g: np.ndarray
    day: np.ndarray
    t: np.ndarray


def _timestamp(value: DateLike, name: str) -> pd.Timestamp:
    """``value`` as a Timestamp (time of day kept); unreadable or missing raises ConfigError naming it."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a date such as 2025-06-30, got {value!r}") from None
    if pd.isna(ts):
        raise ConfigError(f"{name} must be a date such as 2025-06-30, got {value!r}")
    return ts.tz_localize(None).normalize() if ts.tzinfo else ts.normalize()


def _day_number(value: DateLike, name: str) -> int:
    """Days since 1970-01-01 of ``value`` (see :func:`_timestamp`), the unit of every array here."""
    return int(_timestamp(value, name).value // _DAY_NS)


def _days(column: pd.Series) -> np.ndarray:
    """Day numbers (days since 1970-01-01) of a datetime column; NaT becomes ``_NO_DAY``."""
    values = column if column.dtype == np.dtype("datetime64[ns]") else pd.to_datetime(column)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_localize(None)
    ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
    # Integer floor division is one pass (astype("datetime64[D]") is several); NaT is int64 min.
    days = ns // _DAY_NS
    nat = ns == _NO_DAY
    if nat.any():
        days[nat] = _NO_DAY
    return days


def _to_datetime(days: np.ndarray) -> np.ndarray:
    """Day numbers back to datetime64[ns], ``_NO_DAY`` becoming NaT."""
    out = days.astype("datetime64[D]").astype("datetime64[ns]")
    out[days == _NO_DAY] = np.datetime64("NaT")
    return out


def _registry(registry: Domains | None) -> Domains:
    return load_domains() if registry is None else registry


def _sign(domain: str, registry: Domains | None = None) -> int:
    domains = _registry(registry)
    if domain not in domains:
        raise ConfigError(f"unknown domain {domain!r}; expected one of {', '.join(domains)}")
    return domains[domain].improvement_sign


def _check_mcid(mcid: Mapping[str, float], registry: Domains | None = None) -> dict[str, float]:
    if not mcid:
        raise ConfigError("mcid is empty; pass a threshold per domain, e.g. settings.mcid")
    checked: dict[str, float] = {}
    for domain, value in mcid.items():
        _sign(domain, registry)
        number = float(value)
        if not 0 < number <= 30:
            raise ConfigError(
                f"the threshold for {domain} must be above 0 and at most 30 T points, got {value!r}")
        checked[domain] = number
    return checked


def _check_windows(windows: Sequence[Window]) -> tuple[Window, ...]:
    names = [w.name for w in windows]
    if len(set(names)) != len(names):
        raise ConfigError(f"window names must be unique, got {names}")
    for w in windows:
        if not w.low <= w.target <= w.high:
            raise ConfigError(
                f"window {w.name}: expected low <= target <= high, got {w.low}, {w.target}, {w.high}")
    # Windows must not overlap (clinical-methods notes 3.2), so a score can fill only one of them.
    spans = sorted(windows, key=lambda w: w.low)
    for a, b in zip(spans, spans[1:]):
        if b.low <= a.high:
            raise ConfigError(f"windows {a.name} ({a.low}..{a.high}) and {b.name} ({b.low}..{b.high}) "
                              "overlap; a score may fill only one window")
    return tuple(windows)


def _prepare_episodes(episodes: pd.DataFrame, *, as_of: int, series: str) -> pd.DataFrame:
    require_columns(episodes, EPISODE_COLUMNS, frame="episodes")
    if series not in ("first", "all"):
        raise ConfigError(f"series must be 'first' or 'all', got {series!r}")
    eps = episodes if "follow_up_end" in episodes.columns else with_follow_up_end(episodes)
    first, last = _days(eps["first_infusion"]), _days(eps["last_infusion"])
    bad = np.flatnonzero((first == _NO_DAY) | (last == _NO_DAY) | (last < first))
    if bad.size:
        problems = [
            f"series {eps['series_id'].iloc[i]}: "
            + ("an infusion date is missing" if _NO_DAY in (first[i], last[i])
               else "last infusion before the first")
            for i in bad[:20]
        ]
        raise ValidationError(
            "some series have missing or inverted infusion dates; fix them in the series table", problems)
    end = _days(eps["follow_up_end"])
    # Two series of one patient starting on the same day leave no follow-up at all: a data error.
    clash = np.flatnonzero((end != _NO_DAY) & (end < first))
    if clash.size:
        raise ValidationError(
            "some series start on the same day as another series of the same patient; merge or fix them",
            [f"series {eps['series_id'].iloc[i]}" for i in clash[:20]])
    end = np.where(end == _NO_DAY, as_of, np.minimum(end, as_of))
    keep = first <= as_of  # a series that starts after the data cut has no follow-up yet
    if series == "first":
        keep &= (eps["series_number"] == 1).fillna(False).to_numpy(dtype=bool)
    out = eps.loc[keep].assign(_F=first[keep], _L=last[keep], _end=end[keep])
    return out.sort_values(["patient_id", "_F"], kind="stable").reset_index(drop=True)


def _assign(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    domains: Sequence[str],
    windows: Sequence[Window],
    baseline_days: int,
    series: str,
    lookback_days: int = 0,
    registry: Domains | None = None,
) -> _Assigned:
    """Join scores to episodes and pick baselines and window scores.

    Scores from F - max(baseline_days, lookback_days) to the end of follow-up are kept in ``g, day,
    t``; only those from F - baseline_days can be the baseline.
    """
    as_day = _day_number(as_of, "as_of")
    windows = _check_windows(windows)
    if not 0 <= int(baseline_days) <= 365:
        raise ConfigError(f"baseline_days must be from 0 to 365, got {baseline_days!r}")
    for d in domains:
        _sign(d, registry)
    require_columns(scores, SCORE_COLUMNS, frame="scores")
    ep = _prepare_episodes(episodes, as_of=as_day, series=series)
    F, L, end = ep["_F"].to_numpy(), ep["_L"].to_numpy(), ep["_end"].to_numpy()
    nd, n_ep = len(domains), len(ep)
    n_g = n_ep * nd

    # Usable scores: a patient with an analysed episode, a known domain, a T, a date by the data cut.
    # Arrays over every score are freed as soon as they are used: with millions of scores each is tens
    # of MB, and the peak memory of a cohort page is this function's.
    dom = _codes(scores["domain"], list(domains))
    sday = _days(scores["assessed_on"])
    t = scores["t_score"].to_numpy(dtype=float)
    # Episodes are sorted by patient, so each patient's episodes are a contiguous block
    # [start, start + count); ``code`` is the block of each score's patient (-1: no episode).
    pids = ep["patient_id"].to_numpy()
    is_new = np.ones(n_ep, dtype=bool)
    is_new[1:] = pids[1:] != pids[:-1]
    starts = np.flatnonzero(is_new)
    code = _codes(scores["patient_id"], pids[starts])
    ok = code >= 0
    ok &= dom >= 0
    ok &= sday <= as_day
    ok &= ~np.isnan(t)
    reach = max(int(baseline_days), int(lookback_days))
    if n_ep == 0:
        row = pos = np.empty(0, dtype=np.int64)
    elif n_ep == len(starts):
        # One series per patient (the primary analysis): no repetition, and no copies until the
        # follow-up filter. NaT days are int64 min, so the lower bound drops them.
        pos_all = starts[code]  # code -1 (no episode) reads the last block; ``ok`` drops those rows
        del code
        bound = F[pos_all]
        bound -= reach
        ok &= sday >= bound
        bound = end[pos_all]
        ok &= sday <= bound
        del bound
        row = np.flatnonzero(ok)
        pos = pos_all[row]
        del pos_all
    else:  # repeat each score once per series of its patient, then keep it where it is in follow-up
        rows = np.flatnonzero(ok)
        counts = np.diff(np.append(starts, n_ep))
        rep = counts[code[rows]]
        row = np.repeat(rows, rep)
        within = np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep)  # 0, 1, … per score
        pos = np.repeat(starts[code[rows]], rep) + within
        del code, rows, within
        keep = np.flatnonzero((sday[row] >= F[pos] - reach) & (sday[row] <= end[pos]))
        pos, row = pos[keep], row[keep]
    del ok
    day = sday[row]
    del sday
    g = pos * nd
    g += dom[row]
    del dom
    tt = t[row]
    del row
    rel_f = day - F[pos]

    # Baseline first: the latest score from F - baseline_days to F, so it cannot fill a window
    # (a one-day series has F = L and its day-F score would otherwise be end_of_series too).
    base_t = np.full(n_g, np.nan)
    base_day = np.full(n_g, _NO_DAY, dtype=np.int64)
    cand = np.flatnonzero((rel_f <= 0) & (rel_f >= -baseline_days))
    picked = cand[_pick_min(g[cand], -rel_f[cand], tt[cand], n_g)]
    base_t[g[picked]], base_day[g[picked]] = tt[picked], day[picked]

    # Windows: non-overlapping (checked), so a lookup table gives each day its window and one
    # pass picks the score nearest the target, the earlier on a tie, for every window at once.
    nw = len(windows)
    win_t = np.full((nw, n_g), np.nan)
    win_day = np.full((nw, n_g), _NO_DAY, dtype=np.int64)
    if nw:
        lo, hi = min(w.low for w in windows), max(w.high for w in windows)
        lut = np.full(hi - lo + 1, -1, dtype=np.int64)
        for i, w in enumerate(windows):
            lut[w.low - lo: w.high - lo + 1] = i
        rel_l = (L - F)[pos]
        np.subtract(rel_f, rel_l, out=rel_l)
        del rel_f
        inside = rel_l >= lo
        inside &= rel_l <= hi
        inside[picked] = False  # the baseline fills no window
        cand = np.flatnonzero(inside)
        del inside
        rel = rel_l[cand]
        del rel_l
        rel -= lo
        wid = lut[rel]
        sel = wid >= 0
        cand, wid, rel = cand[sel], wid[sel], rel[sel]
        # Distance first, then the day itself: the earlier score wins a tie. (In place: with millions
        # of scores each temporary is tens of MB.)
        key = rel - (np.array([w.target for w in windows]) - lo)[wid]
        np.abs(key, out=key)
        key *= 100_000
        rel -= (np.array([w.low for w in windows]) - lo)[wid]
        key += rel
        del rel
        gw = wid * n_g
        gw += g[cand]
        best = _pick_min(gw, key, tt[cand], nw * n_g)
        won, won_w = cand[best], wid[best]
        win_t[won_w, g[won]], win_day[won_w, g[won]] = tt[won], day[won]

    return _Assigned(
        episodes=ep, domains=tuple(domains), windows=windows, as_of=as_day, first=F, last=L, end=end,
        base_t=base_t, base_day=base_day, win_t=win_t, win_day=win_day, g=g, day=day, t=tt,
    )


def _codes(column: pd.Series, categories: Any) -> np.ndarray:
    """Position of each value in ``categories`` (-1 if absent); fast for categorical columns."""
    index = pd.Index(categories)
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Look up the few categories, not the millions of rows.
        lookup = np.append(index.get_indexer(column.cat.categories), -1).astype(np.int32)  # half of intp
        return lookup[column.cat.codes.to_numpy()]
    values = column.to_numpy()
    if values.dtype == object and len(values) > 1:
        # Stored scores come sorted by patient and domain, so equal values sit in runs: comparing
        # neighbours and hashing one value per run is about 3 times faster than hashing every row.
        head = np.empty(len(values), dtype=bool)
        head[0] = True
        np.not_equal(values[1:], values[:-1], out=head[1:])
        starts = np.flatnonzero(head)
        if len(starts) < len(values) // 4:
            return np.repeat(index.get_indexer(values[starts]), np.diff(np.append(starts, len(values))))
    return index.get_indexer(values)


def _pick_min(g: np.ndarray, key: np.ndarray, tie: np.ndarray, n_g: int) -> np.ndarray:
    """Mask of the row with the smallest ``key`` in each group ``g`` (then the smallest ``tie``).

    Unbuffered ``minimum.at`` instead of a sort: linear time, about 40 times faster than lexsort on
    millions of rows. Rows tying on both keys are exact duplicates (same day and T), so any of them
    gives the same result.
    """
    best = np.full(n_g, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, g, key.astype(np.int64))
    win = key == best[g]
    best_tie = np.full(n_g, np.inf)
    np.minimum.at(best_tie, g[win], tie[win])
    win[win] = tie[win] == best_tie[g[win]]
    return win


def _episode_frame(a: _Assigned, index: np.ndarray) -> pd.DataFrame:
    """Episode columns (without helper columns) for episode positions ``index``."""
    cols = [c for c in a.episodes.columns if not c.startswith("_")]
    return a.episodes[cols].iloc[index].reset_index(drop=True)


def _domains_of(mcid: Mapping[str, float], registry: Domains | None = None) -> tuple[str, ...]:
    """The domains of ``mcid``, in display order."""
    return tuple(d for d in _registry(registry) if d in mcid)


def _domains_or_all(domains: Sequence[str] | None, registry: Domains | None) -> Sequence[str]:
    return _registry(registry).names if domains is None else domains


# ---------------------------------------------------------------------------------------------
# Public analyses.


def window_scores(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    domains: Sequence[str] | None = None,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    baseline_days: int = 30,
    series: SeriesChoice = "first",
    registry: Domains | None = None,
) -> pd.DataFrame:
    """Baseline and window scores: one row per episode × domain × window.

    Parameters
    ----------
    episodes, scores
        Frames in the storage read contract (:data:`EPISODE_COLUMNS`, :data:`SCORE_COLUMNS`).
    as_of
        Data cut: scores after it are ignored and follow-up ends on it at the latest.
    domains, windows, baseline_days
        What to pick; windows are days relative to the last infusion, bounds inclusive.
    series
        ``"first"`` (each patient's first series, the primary analysis) or ``"all"``.

    Returns
    -------
    DataFrame
        The episode columns, then ``domain, window, follow_up_end, baseline_on, baseline_t,
        assessed_on, day`` (days after the last infusion), ``t_score``, ``change`` (window - baseline,
        rounded half away from zero to 0.1), ``window_closed`` (L + upper bound <= as_of),
        ``has_baseline``, ``observed``. Missing scores are NaN/NaT, never 0.

    Raises
    ------
    MissingColumns, ConfigError, ValidationError

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1], "patient_id": ["P1"], "series_number": [1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": "P1", "domain": "depression", "t_score": [62.0, 60.0, 57.0],
    ...     "assessed_on": pd.to_datetime(["2024-12-30", "2025-01-06", "2025-04-12"])})
    >>> ws = window_scores(eps, sc, as_of="2025-12-31", domains=["depression"])
    >>> ws.loc[ws.observed, ["window", "baseline_t", "t_score", "day", "change"]].to_dict("records")
    [{'window': 'month_3', 'baseline_t': 60.0, 't_score': 57.0, 'day': 92.0, 'change': -3.0}]
    """
    a = _assign(episodes, scores, as_of=as_of, domains=_domains_or_all(domains, registry), registry=registry,
                windows=windows, baseline_days=baseline_days, series=series)
    nd, nw, n_ep = len(a.domains), len(a.windows), len(a.episodes)
    n_g = n_ep * nd
    # Row order: episode, domain, window.
    g = np.repeat(np.arange(n_g), nw)
    w = np.tile(np.arange(nw), n_g)
    pos = g // nd
    win_t, win_day = a.win_t[w, g], a.win_day[w, g]
    highs = np.array([x.high for x in a.windows], dtype=np.int64)
    out = _episode_frame(a, pos)
    out["domain"] = pd.Categorical.from_codes(g % nd, categories=list(a.domains))
    out["window"] = pd.Categorical.from_codes(w, categories=[x.name for x in a.windows], ordered=True)
    out["follow_up_end"] = _to_datetime(a.end[pos])
    out["baseline_on"] = _to_datetime(a.base_day[g])
    out["baseline_t"] = a.base_t[g]
    out["assessed_on"] = _to_datetime(win_day)
    out["day"] = np.where(win_day == _NO_DAY, np.nan, (win_day - a.last[pos]).astype(float))
    out["t_score"] = win_t
    out["change"] = round_half_away(win_t - a.base_t[g])
    out["window_closed"] = a.last[pos] + highs[w] <= a.as_of
    out["has_baseline"] = ~np.isnan(a.base_t[g])
    out["observed"] = out["has_baseline"].to_numpy() & ~np.isnan(win_t)
    return out


def cohort_counts(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    domains: Sequence[str] | None = None,
    baseline_days: int = 30,
    series: SeriesChoice = "first",
    registry: Domains | None = None,
) -> pd.DataFrame:
    """How many episodes and patients are analysed, and how many episodes have a baseline per domain.

    The same episodes as :func:`responder_report` (``series``, first infusion by ``as_of``) and the
    same baseline rule; only the baseline pass runs, so it costs a fraction of a report.

    Returns
    -------
    DataFrame
        One row per domain: ``domain, episodes, patients, with_baseline``.

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P2"], "series_number": [1, 1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": ["P1"], "domain": ["depression"], "t_score": [60.0],
    ...     "assessed_on": pd.to_datetime(["2025-01-06"])})
    >>> cohort_counts(eps, sc, as_of="2025-02-01", domains=["depression"]).to_dict("records")
    [{'domain': 'depression', 'episodes': 2, 'patients': 2, 'with_baseline': 1}]
    """
    a = _assign(episodes, scores, as_of=as_of, domains=_domains_or_all(domains, registry), registry=registry,
                windows=(), baseline_days=baseline_days, series=series)
    n_ep, nd = len(a.episodes), len(a.domains)
    with_baseline = (~np.isnan(a.base_t)).reshape(n_ep, nd).sum(axis=0)
    return pd.DataFrame({"domain": pd.array(list(a.domains), dtype=object), "episodes": np.int64(n_ep),
                         "patients": np.int64(a.episodes["patient_id"].nunique()),
                         "with_baseline": with_baseline.astype(np.int64)})


def responder_report(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    mcid: Mapping[str, float],
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    baseline_days: int = 30,
    series: SeriesChoice = "first",
    registry: Domains | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Share of episodes reaching meaningful improvement per domain and follow-up window.

    Parameters
    ----------
    episodes, scores
        Frames in the storage read contract.
    as_of
        Data cut (no "today" default, so a report can be reproduced).
    mcid
        Threshold in T points per domain (e.g. ``settings.mcid``); only these domains are reported.
    windows, baseline_days, series
        As in :func:`window_scores`.
    confidence
        Level of the Wilson intervals.

    Returns
    -------
    DataFrame
        One row per domain × window with :data:`REPORT_COLUMNS`: ``domain, window, mcid,
        n_eligible`` (baseline and window closed by ``as_of``, or observed), ``n_observed`` (baseline
        and a score in the window), ``n_improved``, ``pct_observed`` = improved/observed with its
        Wilson ``ci_low, ci_high``, and ``pct_missing_as_not_improved`` = improved/eligible with
        ``mnni_ci_low, mnni_ci_high``. Percentages 0-100 rounded half away from zero to 0.1; NaN when the
        denominator is 0.

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1], "patient_id": ["P1"], "series_number": [1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": ["P1"] * 2, "domain": ["pain_interference"] * 2,
    ...     "assessed_on": pd.to_datetime(["2025-01-06", "2025-01-10"]), "t_score": [53.1, 50.1]})
    >>> r = responder_report(eps, sc, as_of="2025-01-31", mcid={"pain_interference": 3.0})
    >>> r.loc[0, ["domain", "window"]].tolist()
    ['pain_interference', 'end_of_series']
    >>> r.loc[0, ["n_eligible", "n_observed", "n_improved", "pct_observed"]].astype(float).tolist()
    [1.0, 1.0, 1.0, 100.0]
    """
    thresholds = _check_mcid(mcid, registry)
    domains = _domains_of(thresholds, registry)
    a = _assign(episodes, scores, as_of=as_of, domains=domains, registry=registry, windows=windows,
                baseline_days=baseline_days, series=series)
    nd, n_ep = len(domains), len(a.episodes)
    has_base = ~np.isnan(a.base_t).reshape(n_ep, nd)
    signs = np.array([_sign(d, registry) for d in domains], dtype=float)
    limits = np.array([thresholds[d] for d in domains])
    records: list[dict[str, Any]] = []
    for i, w in enumerate(a.windows):
        win = a.win_t[i].reshape(n_ep, nd)
        observed = has_base & ~np.isnan(win)
        closed = (a.last + w.high <= a.as_of)[:, None]
        eligible = has_base & (closed | observed)
        change = round_half_away(win - a.base_t.reshape(n_ep, nd))
        with np.errstate(invalid="ignore"):
            improved = observed & (signs * change >= limits)
        for j, d in enumerate(domains):
            records.append({"domain": d, "window": w.name, "mcid": limits[j],
                            "n_eligible": int(eligible[:, j].sum()), "n_observed": int(observed[:, j].sum()),
                            "n_improved": int(improved[:, j].sum())})
    report = pd.DataFrame.from_records(records, columns=list(REPORT_COLUMNS[:6]))
    k, n_obs, n_elig = (report[c].to_numpy() for c in ("n_improved", "n_observed", "n_eligible"))
    for prefix, denom in (("", n_obs), ("mnni_", n_elig)):
        low, high = wilson_interval(k, denom, confidence=confidence)
        pct = "pct_observed" if not prefix else "pct_missing_as_not_improved"
        with np.errstate(divide="ignore", invalid="ignore"):
            report[pct] = round_half_away(np.where(denom > 0, 100 * k / denom, np.nan))
        report[f"{prefix}ci_low"] = round_half_away(100 * low)
        report[f"{prefix}ci_high"] = round_half_away(100 * high)
    # Domain-major order, as a clinician reads the table.
    report["_d"] = report["domain"].map({d: i for i, d in enumerate(domains)})
    report = report.sort_values(["_d"], kind="stable").drop(columns="_d").reset_index(drop=True)
    return report[list(REPORT_COLUMNS)]


def change_cdf(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    domains: Sequence[str] | None = None,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    baseline_days: int = 30,
    series: SeriesChoice = "first",
    registry: Domains | None = None,
) -> pd.DataFrame:
    """Cumulative distribution of improvement per domain and window (FDA PRO guidance responder view).

    Improvement is the rounded change in the better direction (-Δ for pain interference and
    depression, +Δ for physical function), among episodes with a baseline and a window score.

    Returns
    -------
    DataFrame
        ``domain, window, improvement, n_at_least, n, pct_at_least``: for each observed improvement
        value x (ascending), the number and percentage (0-100) of episodes improving by at least x.
        Drawn as a step plot (``line_shape="hv"`` read right-continuous), a threshold can be read off
        at any x.

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P2"], "series_number": [1, 1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": ["P1", "P1", "P2", "P2"], "domain": ["depression"] * 4,
    ...     "assessed_on": pd.to_datetime(["2025-01-06", "2025-01-10"] * 2), "t_score": [60, 55, 60, 61.0]})
    >>> cdf = change_cdf(eps, sc, as_of="2025-02-01", domains=["depression"], windows=DEFAULT_WINDOWS[:1])
    >>> cdf[["improvement", "n_at_least", "n", "pct_at_least"]].to_dict("list")
    {'improvement': [-1.0, 5.0], 'n_at_least': [2, 1], 'n': [2, 2], 'pct_at_least': [100.0, 50.0]}
    """
    a = _assign(episodes, scores, as_of=as_of, domains=_domains_or_all(domains, registry), registry=registry,
                windows=windows, baseline_days=baseline_days, series=series)
    n_ep, nd = len(a.episodes), len(a.domains)
    base = a.base_t.reshape(n_ep, nd)
    parts = [pd.DataFrame(columns=["domain", "window", "improvement", "n_at_least", "n", "pct_at_least"])]
    for j, d in enumerate(a.domains):
        for i, w in enumerate(a.windows):
            win = a.win_t[i].reshape(n_ep, nd)[:, j]
            observed = ~np.isnan(base[:, j]) & ~np.isnan(win)
            # Rounding half away from zero is symmetric, so this equals sign * (rounded change).
            improvement = round_half_away(_sign(d, registry) * (win[observed] - base[observed, j]))
            values, counts = np.unique(improvement, return_counts=True)
            at_least = counts[::-1].cumsum()[::-1]
            parts.append(pd.DataFrame({
                "domain": d, "window": w.name, "improvement": values, "n_at_least": at_least,
                "n": int(observed.sum()), "pct_at_least": 100 * at_least / max(len(improvement), 1)}))
    out = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return out.astype({"domain": str, "window": str, "improvement": float, "n_at_least": int, "n": int,
                       "pct_at_least": float})


def follow_up_completion(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    domains: Sequence[str] | None = None,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    baseline_days: int = 30,
    series: SeriesChoice = "first",
    registry: Domains | None = None,
) -> pd.DataFrame:
    """Follow-up completion per domain and window, with baselines of completers and non-completers.

    Attrition reporting (Mercieca-Bebber 2016): if non-completers started worse or better, the
    observed responder rate is biased and the missing-as-not-improved rate matters more.

    Returns
    -------
    DataFrame
        ``domain, window, n_eligible, n_completed, pct_completed, n_not_due`` (baseline but window
        still open and empty), then ``completer_n, completer_baseline_mean, completer_baseline_sd``
        and the same three for ``noncompleter_`` (eligible without a window score).

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P2"], "series_number": [1, 1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": ["P1", "P1", "P2"], "domain": ["depression"] * 3,
    ...     "assessed_on": pd.to_datetime(["2025-01-06", "2025-01-10", "2025-01-06"]),
    ...     "t_score": [60, 55, 64.0]})
    >>> c = follow_up_completion(eps, sc, as_of="2025-02-01", domains=["depression"],
    ...                          windows=DEFAULT_WINDOWS[:1])
    >>> c[["n_eligible", "n_completed", "pct_completed"]].to_dict("records")
    [{'n_eligible': 2, 'n_completed': 1, 'pct_completed': 50.0}]
    >>> c[["completer_baseline_mean", "noncompleter_baseline_mean"]].to_dict("records")
    [{'completer_baseline_mean': 60.0, 'noncompleter_baseline_mean': 64.0}]
    """
    a = _assign(episodes, scores, as_of=as_of, domains=_domains_or_all(domains, registry), registry=registry,
                windows=windows, baseline_days=baseline_days, series=series)
    n_ep, nd = len(a.episodes), len(a.domains)
    base = a.base_t.reshape(n_ep, nd)
    has_base = ~np.isnan(base)
    records: list[dict[str, Any]] = []
    for j, d in enumerate(a.domains):
        for i, w in enumerate(a.windows):
            observed = has_base[:, j] & ~np.isnan(a.win_t[i].reshape(n_ep, nd)[:, j])
            eligible = has_base[:, j] & ((a.last + w.high <= a.as_of) | observed)
            record: dict[str, Any] = {"domain": d, "window": w.name, "n_eligible": int(eligible.sum()),
                                      "n_completed": int(observed.sum()),
                                      "n_not_due": int((has_base[:, j] & ~eligible).sum())}
            record["pct_completed"] = (round_half_away(100 * record["n_completed"] / record["n_eligible"])
                                       if record["n_eligible"] else np.nan)
            for prefix, mask in (("completer", observed), ("noncompleter", eligible & ~observed)):
                values = base[mask, j]
                record[f"{prefix}_n"] = len(values)
                record[f"{prefix}_baseline_mean"] = float(values.mean()) if len(values) else np.nan
                record[f"{prefix}_baseline_sd"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            records.append(record)
    cols = ["domain", "window", "n_eligible", "n_completed", "pct_completed", "n_not_due",
            "completer_n", "completer_baseline_mean", "completer_baseline_sd",
            "noncompleter_n", "noncompleter_baseline_mean", "noncompleter_baseline_sd"]
    return pd.DataFrame.from_records(records, columns=cols)


def trajectories(
    episodes: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    as_of: DateLike,
    domains: Sequence[str] | None = None,
    weeks: tuple[int, int] = (-4, 26),
    baseline_days: int = 30,
    series: SeriesChoice = "first",
    registry: Domains | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean T and mean change from baseline by week since the first infusion, with t-based CIs.

    Week = floor(days since F / 7), so week 0 is days 0-6 and week -1 is days -7 to -1. Only scores
    within follow-up count; an episode with two scores in one week contributes their mean once, so
    ``n`` counts episodes. Change uses the unrounded difference from the episode's baseline.

    Returns
    -------
    DataFrame
        ``domain, week, n, mean_t, sd_t, t_ci_low, t_ci_high, n_change, mean_change,
        change_ci_low, change_ci_high`` for every domain × week in range (n = 0 rows have NaN).

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P2"], "series_number": [1, 1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10")})
    >>> sc = pd.DataFrame({"patient_id": ["P1", "P1", "P2", "P2"], "domain": ["depression"] * 4,
    ...     "assessed_on": pd.to_datetime(["2025-01-06", "2025-01-20"] * 2), "t_score": [60, 55, 62, 59.0]})
    >>> tr = trajectories(eps, sc, as_of="2025-06-01", domains=["depression"], weeks=(0, 2))
    >>> tr[["week", "n", "mean_t", "mean_change"]].to_dict("list")
    {'week': [0, 1, 2], 'n': [2, 0, 2], 'mean_t': [61.0, nan, 57.0], 'mean_change': [0.0, nan, -4.0]}
    """
    lo, hi = int(weeks[0]), int(weeks[1])
    if lo > hi:
        raise ConfigError(f"weeks must be (first, last) with first <= last, got {weeks}")
    # Look back far enough for the first week even when it starts before the baseline window.
    a = _assign(episodes, scores, as_of=as_of, domains=_domains_or_all(domains, registry), registry=registry,
                windows=(), baseline_days=baseline_days, series=series, lookback_days=max(0, -7 * lo))
    nd, n_ep, nweeks = len(a.domains), len(a.episodes), hi - lo + 1
    pos = a.g // nd
    week = np.floor_divide(a.day - a.first[pos], 7)
    keep = (week >= lo) & (week <= hi)
    parts = []
    for j, d in enumerate(a.domains):  # per domain keeps the episode × week grid small
        sel = keep & (a.g % nd == j)
        cell = pos[sel] * nweeks + (week[sel] - lo)
        # One value per episode and week (their mean), so an extra score does not weigh twice.
        total = np.bincount(cell, weights=a.t[sel], minlength=n_ep * nweeks)
        count = np.bincount(cell, minlength=n_ep * nweeks)
        with np.errstate(invalid="ignore", divide="ignore"):
            t_cell = (total / count).reshape(n_ep, nweeks)
        change = t_cell - a.base_t[np.arange(n_ep) * nd + j][:, None]
        frame = pd.DataFrame({"domain": d, "week": np.arange(lo, hi + 1)})
        for prefix, values in (("t", t_cell), ("change", change)):
            n, mean, sd = _column_stats(values)
            low, high = _t_interval(n, mean, sd, confidence)
            frame[f"n_{prefix}"], frame[f"mean_{prefix}"], frame[f"sd_{prefix}"] = n, mean, sd
            frame[f"{prefix}_ci_low"], frame[f"{prefix}_ci_high"] = low, high
        parts.append(frame)
    out = pd.concat(parts, ignore_index=True).rename(columns={"n_t": "n", "n_change": "n_change"})
    return out[["domain", "week", "n", "mean_t", "sd_t", "t_ci_low", "t_ci_high",
                "n_change", "mean_change", "change_ci_low", "change_ci_high"]]


def _column_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and SD (n - 1) of each column, ignoring NaN; NaN where undefined."""
    present = ~np.isnan(values)
    n = present.sum(axis=0)
    filled = np.where(present, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        dev = np.where(present, values - mean, 0.0)
        sd = np.sqrt((dev**2).sum(axis=0) / (n - 1))
    return n, np.where(n > 0, mean, np.nan), np.where(n > 1, sd, np.nan)


def _t_interval(
    n: np.ndarray, mean: np.ndarray, sd: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.t.ppf(0.5 + confidence / 2, np.where(n > 1, n - 1, np.nan))
        half = q * sd / np.sqrt(n)
    return mean - half, mean + half


def filter_episodes(
    episodes: pd.DataFrame,
    scores: pd.DataFrame | None = None,
    *,
    as_of: DateLike,
    diagnosis: str | Collection[str] | None = None,
    sex: str | Collection[str] | None = None,
    age_band: str | Collection[str] | None = None,
    protocol: str | Collection[str] | None = None,
    series_number: int | Collection[int] | None = None,
    first_infusion_from: DateLike | None = None,
    first_infusion_to: DateLike | None = None,
    impaired_at_baseline: Mapping[str, bool] | None = None,
    baseline_days: int = 30,
    registry: Domains | None = None,
) -> pd.DataFrame:
    """Subset of episodes for a stratified report; None means "no filter" for every option.

    ``follow_up_end`` is added from the *unfiltered* frame first, so a next series still ends the
    follow-up of an earlier one after filtering. Text options take one value or a collection.
    ``impaired_at_baseline`` maps domain -> True (keep episodes impaired at baseline: symptom
    T >= 55, physical function T <= 45) or False (keep those not impaired); episodes without a
    baseline in that domain are dropped either way, and it needs ``scores``. Filtering by
    ``series_number`` other than 1 needs ``series="all"`` in the analysis functions.

    Examples
    --------
    >>> eps = pd.DataFrame({"series_id": [1, 2], "patient_id": ["P1", "P2"], "series_number": [1, 1],
    ...     "first_infusion": pd.Timestamp("2025-01-06"), "last_infusion": pd.Timestamp("2025-01-10"),
    ...     "diagnosis": ["CRPS", "Fibromyalgia"], "birth_year": [1970, 1990]})
    >>> filter_episodes(eps, as_of="2025-06-01", diagnosis="CRPS")["series_id"].tolist()
    [1]
    >>> filter_episodes(eps, as_of="2025-06-01", age_band=["30-39"])["series_id"].tolist()
    [2]
    """
    require_columns(episodes, EPISODE_COLUMNS, frame="episodes")
    needed = {"diagnosis": diagnosis, "sex": sex, "birth_year": age_band, "protocol": protocol}
    require_columns(episodes, [c for c, v in needed.items() if v is not None], frame="episodes")
    eps = episodes if "follow_up_end" in episodes.columns else with_follow_up_end(episodes)
    keep = np.ones(len(eps), dtype=bool)
    for column, wanted in (("diagnosis", diagnosis), ("sex", sex), ("protocol", protocol),
                           ("series_number", series_number)):
        if wanted is not None:
            keep &= eps[column].isin(_as_list(wanted)).to_numpy()
    if age_band is not None:
        bands = [str(b).replace("-", "–") for b in _as_list(age_band)]
        unknown = sorted(set(bands) - set(AGE_BANDS))
        if unknown:
            raise ConfigError(f"unknown age band(s) {', '.join(unknown)}; expected {', '.join(AGE_BANDS)}")
        keep &= globals()["age_band"](eps["birth_year"], as_of).isin(bands).to_numpy()
    first = pd.to_datetime(eps["first_infusion"])
    if first_infusion_from is not None:
        keep &= (first >= _timestamp(first_infusion_from, "first_infusion_from")).to_numpy()
    if first_infusion_to is not None:
        keep &= (first <= _timestamp(first_infusion_to, "first_infusion_to")).to_numpy()
    if impaired_at_baseline:
        if scores is None:
            raise ConfigError(
                "impaired_at_baseline needs the scores frame: filter_episodes(episodes, scores, ...)")
        domains = tuple(impaired_at_baseline)
        a = _assign(eps.loc[keep], scores, as_of=as_of, domains=domains, windows=(), registry=registry,
                    baseline_days=baseline_days, series="all")
        base = a.base_t.reshape(len(a.episodes), len(domains))
        ok = np.ones(len(a.episodes), dtype=bool)
        for j, (domain, wanted_impaired) in enumerate(impaired_at_baseline.items()):
            with np.errstate(invalid="ignore"):
                d = _registry(registry)[domain]
                impaired = d.at_or_worse(base[:, j], _impaired_from(domain, registry))
            ok &= ~np.isnan(base[:, j]) & (impaired == bool(wanted_impaired))
        keep &= eps["series_id"].isin(a.episodes.loc[ok, "series_id"]).to_numpy()
    return eps.loc[keep].reset_index(drop=True)


def _impaired_from(domain: str, registry: Domains | None) -> float:
    """The T at which the domain's first impaired band (mild) starts."""
    return _registry(registry)[domain].bands.cut_points[0]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, int, np.integer)) or np.ndim(value) == 0:
        return [value]
    return list(value)

