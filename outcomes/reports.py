"""Reports read from a database: the shared entry points of the cohort page and ``python -m outcomes report``.

Each function loads only what its report needs through :mod:`outcomes.storage` and hands tidy frames
to :mod:`outcomes.analysis`; nothing here computes a statistic itself.

The quality-improvement view of the cohort page (docs/privacy.md, "Dates and differencing" and "Diagnosis
codes and filters") reads through :func:`qi_cohort`: only the episodes released by a month-end cut
(:func:`outcomes.disclosure.released`), filters with pooled values only, and :func:`qi_suppression` (the
complementary-cell rule across filters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from . import analysis, disclosure, storage
from .settings import Settings, Window


NOT_CODED = "Not coded"


def episodes(db: Any) -> pd.DataFrame:
    """Every infusion series with the patient's diagnosis, sex and birth year (for filters and groups).

    One query and only the columns the analyses use: :func:`outcomes.storage.load_cohort_episodes`.
    ``diagnosis`` is the label of the patient's diagnosis code (``"Not coded"`` when none), never the
    clinician's free-text note, which may hold anything (a name, a phone number).
    """
    eps = storage.load_cohort_episodes(db)
    labels = storage.load_patient_diagnoses(db).set_index("patient_id")["diagnosis_label"]
    eps["diagnosis"] = eps["patient_id"].map(labels).astype(object).fillna(NOT_CODED)
    return eps


def scores(db: Any) -> pd.DataFrame:
    """Every active T-score (``patient_id, domain, assessed_on, t_score``) in compact dtypes, read from a
    covering index: :func:`outcomes.storage.load_cohort_scores`."""
    return storage.load_cohort_scores(db)


def responders(
    db: Any, *, as_of: date, series: str, mcid: Mapping[str, float], settings: Settings
) -> pd.DataFrame:
    """The responder table (one row per domain × window) exactly as ``report responders`` prints it."""
    frame = scores(db)
    # A domain the clinic neither asks nor has scores in would only add empty rows (Settings.reported_domains).
    reported = set(settings.reported_domains(frame["domain"].unique()))
    return analysis.responder_report(
        episodes(db), frame, as_of=as_of, mcid={d: v for d, v in mcid.items() if d in reported},
        windows=settings.windows, baseline_days=settings.baseline_days, series=series,
        registry=settings.domains,
    )


RESPONDER_KEYS = ("domain", "window", "mcid", "n_eligible", "n_observed", "n_improved", "pct_observed",
                  "ci_low", "ci_high", "pct_missing_as_not_improved")


def to_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records with the CLI contract's keys; a proportion without denominator is ``null``."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return value.item() if hasattr(value, "item") else value

    return [{key: clean(row[key]) for key in RESPONDER_KEYS} for row in table.to_dict("records")]


# The quality-improvement view of the cohort page (docs/privacy.md, "Dates and differencing" and "Diagnosis
# codes and filters")
#
# What a QI user may see of the cohort is what the de-identified files hold: the episodes *released* by
# the cut (follow-up closed, then the patient's secret delay; outcomes.disclosure.released), each with all
# its scores, so a month's view differs from the last month's only by whole released episodes. Filters
# offer only pooled values (a value held by 1 to small_cell_max patients becomes "Other (pooled)"; the
# diagnosis is the clinic's code, never the free-text note), and a filtered view that leaves 1 to
# small_cell_max patients of a wider view out is not shown (qi_suppression).

POOLED = disclosure.POOLED
NOT_RECORDED = "not recorded"
#: The QI filters: the column of QiCohort.episodes each one reads, and its label on the page.
QI_FILTERS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "diagnosis": ("diagnosis", "Diagnosis"), "sex": ("sex", "Sex"),
    "age_band": ("age_band", "Age band (at the first infusion)"), "protocol": ("protocol", "Protocol"),
    "series_number": ("series_group", "Series number")})


@dataclass(frozen=True)
class QiCohort:
    """The released episodes and scores at ``cut``, with pooled filter columns, and the filter options."""

    cut: pd.Timestamp
    episodes: pd.DataFrame
    scores: pd.DataFrame
    options: Mapping[str, tuple[str, ...]]


def month_end_cuts(today: date, *, years: int = 5) -> list[date]:
    """The cuts the QI view offers, newest first: the ends of the months before ``today`` (today too when it
    is a month's last day)."""
    day = pd.Timestamp(today)
    latest = day if day.is_month_end else (day - pd.offsets.MonthEnd(1)).normalize()
    return [d.date() for d in reversed(pd.date_range(end=latest, periods=12 * years, freq="ME"))]


def _age_band_at_first(eps: pd.DataFrame) -> pd.Series:
    out = pd.Series(NOT_RECORDED, index=eps.index, dtype=object)
    years = pd.to_datetime(eps["first_infusion"]).dt.year
    for year, index in eps.groupby(years).groups.items():
        bands = analysis.age_band(eps.loc[index, "birth_year"], f"{int(year)}-12-31").astype(object)
        out.loc[index] = bands.where(bands.notna(), NOT_RECORDED).to_numpy()
    under = (years - pd.to_numeric(eps["birth_year"], errors="coerce") < 18).fillna(False).astype(bool)
    return out.mask(under, "under 18")


def qi_frames(episodes_: pd.DataFrame, scores_: pd.DataFrame, *, cut: date, secret: str,
              settings: Settings) -> QiCohort:
    """:class:`QiCohort` from :func:`episodes` and :func:`scores` frames (pure)."""
    cut_ts = pd.Timestamp(cut).normalize()
    eps, sc = disclosure.released(episodes_, scores_, cut=cut_ts, secret=secret, windows=settings.windows,
                                  baseline_days=settings.baseline_days)
    threshold = settings.small_cell_max
    raw = {"diagnosis": eps["diagnosis"].astype(object).fillna(NOT_CODED),
           "sex": eps["sex"].astype(object).fillna(NOT_RECORDED),
           "age_band": _age_band_at_first(eps),
           "protocol": eps["protocol"].astype(object).fillna(NOT_RECORDED),
           "series_group": eps["series_number"].astype(int).astype(str)}
    pooled = {c: disclosure.pool_rare(v, eps["patient_id"], threshold) for c, v in raw.items()}
    eps = eps.assign(**pooled)
    order = {"age_band": ["under 18", *analysis.AGE_BANDS], "sex": ["F", "M", "X"]}

    def ordered(column: str) -> tuple[str, ...]:
        present = set(eps[column])
        first = [v for v in order.get(column, []) if v in present]
        rest = sorted(present - set(first) - {POOLED, NOT_RECORDED, NOT_CODED},
                      key=lambda v: (int(v) if v.isdigit() else 0, v))
        return tuple(first + rest + [v for v in (NOT_CODED, NOT_RECORDED, POOLED) if v in present])

    options = {name: ordered(column) for name, (column, _) in QI_FILTERS.items()}
    return QiCohort(cut_ts, eps, sc, MappingProxyType(options))


def qi_cohort(db: Any, *, cut: date, settings: Settings) -> QiCohort:
    """The QI view's released cohort at the month end ``cut`` (reads the database)."""
    return qi_frames(episodes(db), scores(db), cut=cut, secret=storage.get_meta(db, "secret") or "",
                     settings=settings)


def _analysis_set(cohort: QiCohort, series: str) -> pd.DataFrame:
    eps = cohort.episodes
    return eps if series == "all" else eps[eps["series_number"] == 1]


def _masks(eps: pd.DataFrame, filters: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    return {name: eps[QI_FILTERS[name][0]].isin(list(values)).to_numpy()
            for name, values in filters.items() if values}


def _impaired(eps: pd.DataFrame, cohort: QiCohort, domain: str, baseline_days: int) -> pd.DataFrame:
    return analysis.filter_episodes(eps, cohort.scores, as_of=cohort.cut, impaired_at_baseline={domain: True},
                                    baseline_days=baseline_days)


def qi_subsets(cohort: QiCohort, *, series: str, filters: Mapping[str, Sequence[str]], impaired_only: bool,
               domains: Sequence[str], baseline_days: int) -> list[tuple[tuple[str, ...], pd.DataFrame]]:
    """The filtered episodes per group of domains (one group; one per domain with "impaired only")."""
    eps = _analysis_set(cohort, series)
    keep = np.ones(len(eps), dtype=bool)
    for mask in _masks(eps, filters).values():
        keep &= mask
    chosen = eps[keep]
    if not impaired_only:
        return [(tuple(domains), chosen)]
    return [((d,), _impaired(chosen, cohort, d, baseline_days)) for d in domains]


def qi_suppression(cohort: QiCohort, *, series: str, filters: Mapping[str, Sequence[str]],
                   impaired_only: bool, domains: Sequence[str], settings: Settings) -> str | None:
    """Why this filtered view may not be shown (None: it may).

    The complementary-cell rule applied across filters (disclosure.complement_problem): the view must not
    leave out 1 to ``small_cell_max`` patients (or episodes) of any wider view a QI user can also open, by
    widening any of its filters back to "all" (the impaired-only box and, for all series, each patient's
    first series count as filters too), since the difference of the two would be those few patients'
    results.
    """
    threshold = settings.small_cell_max
    universe = cohort.episodes if series == "all" else _analysis_set(cohort, "first")
    base = _masks(universe, filters)
    variants = [base]
    if series == "all":  # the first-series view with the same filters is one a QI user opens too
        variants.append({**base, "first series": (universe["series_number"] == 1).to_numpy()})
    if impaired_only:
        variants = [{**v, f"impaired at baseline ({d.replace('_', ' ')})": universe["series_id"].isin(
            _impaired(universe, cohort, d, settings.baseline_days)["series_id"]).to_numpy()}
            for v in variants for d in domains]
    owners = universe["patient_id"].astype(str).to_numpy()
    for masks in variants:
        widened = disclosure.complement_problem(masks, owners, threshold=threshold)
        if widened:
            named = ", ".join(QI_FILTERS[w][1].lower() if w in QI_FILTERS else w for w in widened)
            return (f"This selection is not shown: compared with the same view without the filter on "
                    f"{named}, it leaves out only 1 to {threshold} patients, whose results the difference "
                    "would reveal (for example “all diagnoses but one”). Choose the values you want to "
                    "include rather than leaving a few patients out, or clear that filter.")
    return None


def cohort_table(subsets: Sequence[tuple[tuple[str, ...], pd.DataFrame]], scores_: pd.DataFrame, *,
                 panel: str, as_of: date, mcid: Mapping[str, float], series: str, windows: Sequence[Window],
                 baseline_days: int) -> pd.DataFrame:
    """One cohort table (``counts``, ``responders``, ``trajectories``, ``cdf``, ``completion``) of filtered
    episodes per group of domains: what ``ui.data`` computes for the clinician's view, for any frames."""
    common: dict[str, Any] = {"as_of": as_of, "baseline_days": baseline_days, "series": series}
    parts = []
    for domains, eps in subsets:
        if panel == "responders":
            parts.append(analysis.responder_report(eps, scores_, mcid={d: mcid[d] for d in domains},
                                                   windows=windows, **common))
        elif panel == "counts":
            parts.append(analysis.cohort_counts(eps, scores_, domains=domains, **common))
        elif panel == "trajectories":
            parts.append(analysis.trajectories(eps, scores_, domains=domains, **common))
        elif panel == "cdf":
            parts.append(analysis.change_cdf(eps, scores_, domains=domains, windows=windows, **common))
        elif panel == "completion":
            parts.append(analysis.follow_up_completion(eps, scores_, domains=domains, windows=windows,
                                                       **common))
        else:
            raise ValueError(f"unknown cohort panel {panel!r}")
    return pd.concat(parts, ignore_index=True)


def cohort_survival(subsets: Sequence[tuple[tuple[str, ...], pd.DataFrame]], scores_: pd.DataFrame, *,
                    estimate: str, group_col: str | None, min_at_risk: int, as_of: date,
                    mcid: Mapping[str, float], series: str, baseline_days: int) -> tuple[Any, dict] | None:
    """Survival view of filtered episodes and where to cut each curve (None: no episode qualifies), as
    ``ui.data.cohort_survival`` computes it. Imports lifelines: call it only when the panel shows."""
    from . import figures, survival

    derive = survival.response_durations if estimate == "durability" else survival.improvement_times
    times = pd.concat([derive(eps, scores_, as_of=as_of, mcid={d: mcid[d] for d in domains},
                              baseline_days=baseline_days, series=series) for domains, eps in subsets],
                      ignore_index=True)
    if times.empty or ("has_baseline" in times and not times["has_baseline"].astype(bool).any()):
        return None
    if estimate == "interval":
        return (survival.fit_interval_censored(times, group_col=group_col),
                figures.at_risk_cutoff(times, group_col=group_col, min_at_risk=min_at_risk,
                                       time_col="lower_weeks"))
    km = survival.fit_km(times, group_col=group_col, kind="survival" if estimate == "durability" else "event")
    return km, figures.at_risk_cutoff(times, group_col=group_col, min_at_risk=min_at_risk)
