"""PROMIS-29 v2.x physical and mental health summary scores (Hays et al. 2018).

Hays RD, Spritzer KL, Schalet BD, Cella D. PROMIS-29 v2.0 profile physical and mental health summary
scores. *Qual Life Res* 2018;27(7):1885-1891, doi:10.1007/s11136-018-1842-3. The weights are data
(``data/instruments/promis29_summary_weights.csv``); where they come from and how far they were checked
is in ``data/instruments/SOURCES.md``, "PROMIS-29 summary scores", and ``docs/methods.md``.

The algorithm, per patient and day:

1. Each domain T-score becomes z = (T - 50) / 10, in its native direction (the signs are in the
   weights): physical function, pain interference, ability to participate, fatigue, anxiety,
   depression, sleep disturbance.
2. Pain intensity (the PROMIS Global07 raw item, 0-10) becomes z = (value - 2.31) / 2.34.
3. Pain composite = mean of the pain-interference z and the pain-intensity z; emotional distress
   composite = mean of the anxiety z and the depression z.
4. z of each summary = sum of weight x component z over the six components
   (physical function, pain composite, ability to participate, fatigue, emotional distress
   composite, sleep disturbance), with the weights of the CSV.
5. T = 50 + 10 z, rounded half away from zero to one decimal (:func:`outcomes.analysis.round_half_away`,
   as everywhere in the app).

**Missing data.** A summary score is computed only when all seven domain T-scores **and** the
pain-intensity item are present on the same day (as peer implementation P does, ``na.rm = FALSE``).
Otherwise both scores are NaN and ``missing`` names every absent input. The weights were estimated on
complete profiles; the HealthMeasures manual's own missing-data rule was not read; and averaging only
the available half of a composite (as peer implementation Q does) silently changes what the composite
means (pain interference alone is not "pain"). An honest empty cell beats a biased number. A day with
none of the eight inputs gives no row; rows of other domains are ignored.

Example
-------
A person at every population mean (all T = 50, Global07 = 2.31) scores 50/50; without the
pain-intensity item there is no score, and the row says why:

>>> import pandas as pd
>>> domains = ["physical_function", "pain_interference", "ability_to_participate", "fatigue",
...            "anxiety", "depression", "sleep_disturbance"]
>>> scores = pd.DataFrame({"patient_id": "P1", "assessed_on": pd.Timestamp("2025-01-06"),
...                        "domain": domains, "t_score": 50.0})
>>> pain = pd.DataFrame({"patient_id": ["P1"], "assessed_on": [pd.Timestamp("2025-01-06")], "value": [2.31]})
>>> summary_scores(scores, pain)[["physical_health_t", "mental_health_t", "missing"]].to_dict("records")
[{'physical_health_t': 50.0, 'mental_health_t': 50.0, 'missing': ''}]
>>> summary_scores(scores)[["physical_health_t", "mental_health_t", "missing"]].to_dict("records")
[{'physical_health_t': nan, 'mental_health_t': nan, 'missing': 'pain_intensity'}]
"""

from __future__ import annotations

import csv
import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from .analysis import round_half_away
from .errors import InstrumentDefinitionError, MissingColumns, ValidationError
from .settings import DATA_DIR

#: The shipped weights (Hays et al. 2018 via two peer implementations; see SOURCES.md).
WEIGHTS_FILE = DATA_DIR / "instruments" / "promis29_summary_weights.csv"
WEIGHT_COLUMNS = ("component", "definition", "weight_physical_health", "weight_mental_health")

#: The six components the weights must cover, in the paper's order.
COMPONENTS = ("physical_function", "pain_composite", "ability_to_participate", "fatigue",
              "emotional_distress_composite", "sleep_disturbance")

#: The seven PROMIS-29 domain T-scores the summary scores need (``domain`` values of the scores frame).
DOMAINS = ("physical_function", "pain_interference", "ability_to_participate", "fatigue", "anxiety",
           "depression", "sleep_disturbance")
#: The eighth input: the Global07 pain-intensity item, 0-10.
PAIN_INTENSITY = "pain_intensity"
INPUTS = (*DOMAINS, PAIN_INTENSITY)

#: Standardisation of Global07 (population mean and SD), as in both peer implementations.
GLOBAL07_MEAN = 2.31
GLOBAL07_SD = 2.34
PAIN_INTENSITY_RANGE = (0.0, 10.0)

SCORE_COLUMNS = ("patient_id", "assessed_on", "domain", "t_score")
PAIN_COLUMNS = ("patient_id", "assessed_on", "value")
OUTPUT_COLUMNS = ("patient_id", "assessed_on", "physical_health_t", "mental_health_t", "missing")


@dataclass(frozen=True)
class SummaryWeights:
    """Weights of each component on the physical (``physical``) and mental (``mental``) summary z."""

    physical: Mapping[str, float]
    mental: Mapping[str, float]
    source: str = ""


def load_summary_weights(path: str | Path | None = None) -> SummaryWeights:
    """Read and check the weights CSV (default: the shipped ``promis29_summary_weights.csv``).

    Raises :class:`InstrumentDefinitionError` naming the file and line of the first problem: a missing
    column, an unknown or repeated component, a weight that is not a finite number, or a component of
    the six that has no row.

    Examples
    --------
    >>> w = load_summary_weights()
    >>> w.physical["physical_function"], w.mental["fatigue"]
    (0.872, -0.351)
    """
    if path is None:
        return _default_weights()
    return _read_weights(Path(path))


@functools.cache
def _default_weights() -> SummaryWeights:
    return _read_weights(WEIGHTS_FILE)


def _read_weights(path: Path) -> SummaryWeights:
    name = path.name
    physical: dict[str, float] = {}
    mental: dict[str, float] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a BOM
            reader = csv.DictReader(handle)
            found = [c for c in (reader.fieldnames or []) if c is not None]
            missing = [c for c in WEIGHT_COLUMNS if c not in found]
            if missing:
                raise InstrumentDefinitionError(
                    f"{name} line 1: missing column(s) {', '.join(missing)}; found {', '.join(found) or 'no header'}. "
                    f"The header must be {','.join(WEIGHT_COLUMNS)}.")
            for row in reader:
                where = f"{name} line {reader.line_num}"
                if None in row:
                    raise InstrumentDefinitionError(f"{where}: more fields than the {len(found)} columns "
                                                    "(quote a definition that contains a comma)")
                values = {k: (v or "").strip() for k, v in row.items()}
                if not any(values.values()):
                    continue
                component = values["component"]
                if component not in COMPONENTS:
                    raise InstrumentDefinitionError(f"{where}: unknown component {component!r}; "
                                                    f"expected one of {', '.join(COMPONENTS)}")
                if component in physical:
                    raise InstrumentDefinitionError(f"{where}: component {component} appears twice")
                physical[component] = _weight(where, values, "weight_physical_health")
                mental[component] = _weight(where, values, "weight_mental_health")
    except FileNotFoundError:
        raise InstrumentDefinitionError(f"{name}: file not found at {path}") from None
    except UnicodeDecodeError as exc:
        raise InstrumentDefinitionError(f"{name}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InstrumentDefinitionError(f"{name}: not a readable CSV file ({exc})") from None
    if absent := [c for c in COMPONENTS if c not in physical]:
        raise InstrumentDefinitionError(f"{name}: no row for component(s) {', '.join(absent)}; "
                                        f"the weights must cover exactly {', '.join(COMPONENTS)}")
    order = {c: i for i, c in enumerate(COMPONENTS)}
    return SummaryWeights(MappingProxyType(dict(sorted(physical.items(), key=lambda kv: order[kv[0]]))),
                          MappingProxyType(dict(sorted(mental.items(), key=lambda kv: order[kv[0]]))),
                          str(path))


def _weight(where: str, row: Mapping[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InstrumentDefinitionError(f"{where}: {column} {row[column]!r} is not a number")
    return value


def _require(df: pd.DataFrame, columns: tuple[str, ...], frame: str, hint: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValidationError(f"the {frame} frame must be a pandas DataFrame, not {type(df).__name__}")
    if missing := [c for c in columns if c not in df.columns]:
        given = ", ".join(map(str, df.columns)) or "no columns"
        raise MissingColumns(f"the {frame} frame lacks column(s) {', '.join(missing)}; it has: {given}. "
                             f"It needs {', '.join(columns)}: {hint}")


def _days(column: pd.Series, frame: str) -> pd.Series:
    """The calendar day of each ``assessed_on`` (time of day and time zone dropped)."""
    try:
        with warnings.catch_warnings():  # "could not infer format": the error below says what is wrong
            warnings.simplefilter("ignore", UserWarning)
            values = pd.to_datetime(column)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"the {frame} frame has an assessed_on that is not a date ({exc}); "
                              "give dates such as 2025-01-06") from None
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_localize(None)
    if values.isna().any():
        rows = ", ".join(map(str, column.index[values.isna()][:5]))
        raise ValidationError(f"the {frame} frame has rows without an assessed_on date (rows {rows}); "
                              "give each row the day it was assessed")
    return values.dt.normalize().astype("datetime64[ns]")


def _numbers(column: pd.Series, frame: str, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce").astype(float)
    bad = values.isna() & column.notna()
    if bad.any() or np.isinf(values).any():
        shown = ", ".join(repr(v) for v in column[bad | np.isinf(values)].head(5))
        raise ValidationError(f"the {frame} frame has {name} values that are not numbers: {shown}; "
                              f"give {name} as numbers (leave it empty when absent)")
    return values


def _one_per_day(long: pd.DataFrame, keys: list[str], frame: str) -> pd.DataFrame:
    """Drop exact repeats; two different values for the same key are an error (which one is right?)."""
    long = long.drop_duplicates()
    clash = long.duplicated(keys, keep=False)
    if clash.any():
        shown = "; ".join(", ".join(f"{k}={row[k]}" for k in keys)
                          for _, row in long[clash].drop_duplicates(keys).head(5).iterrows())
        raise ValidationError(f"the {frame} frame has more than one value for the same patient and day "
                              f"({shown}); keep one value per patient, day{' and domain' if 'domain' in keys else ''}")
    return long


def _weights(weights: SummaryWeights | str | Path | None) -> SummaryWeights:
    if weights is None:
        return load_summary_weights()
    if isinstance(weights, SummaryWeights):
        return weights
    if isinstance(weights, (str, Path)):
        return load_summary_weights(weights)
    raise ValidationError(f"weights must be None, a SummaryWeights or a path to a weights CSV, "
                          f"not {type(weights).__name__}")


def summary_scores(scores: pd.DataFrame, pain_intensity: pd.DataFrame | None = None, *,
                   weights: SummaryWeights | str | Path | None = None) -> pd.DataFrame:
    """Physical and mental health summary T-scores, one row per patient and day.

    ``scores`` is long format (``patient_id, assessed_on, domain, t_score``) with the ``domain`` names
    of :data:`DOMAINS`; other domains are ignored and a NaN ``t_score`` counts as absent.
    ``pain_intensity`` (``patient_id, assessed_on, value``) holds the Global07 raw item, 0-10; None
    means it was not collected, so no score can be computed. ``assessed_on`` is reduced to the day.

    Returns ``patient_id, assessed_on, physical_health_t, mental_health_t, missing``, sorted by patient
    and day. Both T-scores are NaN unless all eight inputs are present that day; ``missing`` then lists
    the absent inputs (names of :data:`INPUTS`, comma-separated) and is empty when complete. Days with
    none of the inputs give no row.

    Raises :class:`MissingColumns` for a frame without its columns, and :class:`ValidationError` for a
    date or number that cannot be read, a pain intensity outside 0-10, or two different values for the
    same patient, day (and domain).

    Examples
    --------
    >>> import pandas as pd
    >>> day = pd.Timestamp("2025-01-06")
    >>> scores = pd.DataFrame({"patient_id": "P1", "assessed_on": day, "domain": list(DOMAINS),
    ...                        "t_score": [40.0, 62.0, 45.0, 60.0, 55.0, 58.0, 57.0]})
    >>> pain = pd.DataFrame({"patient_id": ["P1"], "assessed_on": [day], "value": [6]})
    >>> summary_scores(scores, pain)[["physical_health_t", "mental_health_t"]].to_dict("records")
    [{'physical_health_t': 39.4, 'mental_health_t': 40.6}]
    >>> summary_scores(scores, pain.assign(value=11))
    Traceback (most recent call last):
    ...
    outcomes.errors.ValidationError: the pain_intensity frame has values outside 0-10: 11.0...
    """
    w = _weights(weights)
    _require(scores, SCORE_COLUMNS, "scores",
             "one row per patient, day and domain, e.g. from the storage layer's score reads.")
    long = scores.loc[scores["domain"].isin(DOMAINS), list(SCORE_COLUMNS)].copy()
    long["assessed_on"] = _days(long["assessed_on"], "scores")
    long["t_score"] = _numbers(long["t_score"], "scores", "t_score")
    long = _one_per_day(long.dropna(subset=["t_score"]), ["patient_id", "assessed_on", "domain"], "scores")

    if pain_intensity is None:
        pain = pd.DataFrame({"patient_id": pd.Series(dtype=object),
                             "assessed_on": pd.Series(dtype="datetime64[ns]"),
                             "domain": pd.Series(dtype=object), "t_score": pd.Series(dtype=float)})
    else:
        _require(pain_intensity, PAIN_COLUMNS, "pain_intensity",
                 "one row per patient and day with the Global07 answer (0-10) in value.")
        pain = pain_intensity[list(PAIN_COLUMNS)].copy()
        pain["assessed_on"] = _days(pain["assessed_on"], "pain_intensity")
        pain["value"] = _numbers(pain["value"], "pain_intensity", "value")
        low, high = PAIN_INTENSITY_RANGE
        outside = pain["value"].notna() & ~pain["value"].between(low, high)
        if outside.any():
            shown = ", ".join(str(v) for v in pain.loc[outside, "value"].head(5))
            raise ValidationError(f"the pain_intensity frame has values outside {low:g}-{high:g}: {shown}. "
                                  "Pain intensity is the PROMIS Global07 item, answered 0 to 10; "
                                  "correct or remove these rows.")
        pain = _one_per_day(pain.dropna(subset=["value"]), ["patient_id", "assessed_on"], "pain_intensity")
        pain = pain.rename(columns={"value": "t_score"}).assign(domain=PAIN_INTENSITY)

    both = pd.concat([long, pain[list(SCORE_COLUMNS)]], ignore_index=True)
    if both.empty:
        return pd.DataFrame({"patient_id": pd.Series(dtype=object),
                             "assessed_on": pd.Series(dtype="datetime64[ns]"),
                             "physical_health_t": pd.Series(dtype=float),
                             "mental_health_t": pd.Series(dtype=float),
                             "missing": pd.Series(dtype=object)})
    wide = both.pivot(index=["patient_id", "assessed_on"], columns="domain", values="t_score")
    wide = wide.reindex(columns=list(INPUTS)).sort_index()

    z = (wide[list(DOMAINS)] - 50.0) / 10.0
    pain_z = (wide[PAIN_INTENSITY] - GLOBAL07_MEAN) / GLOBAL07_SD
    # Plain arithmetic keeps NaN: a composite with a missing half is NaN, never the other half alone.
    components = {
        "physical_function": z["physical_function"],
        "pain_composite": (z["pain_interference"] + pain_z) / 2.0,
        "ability_to_participate": z["ability_to_participate"],
        "fatigue": z["fatigue"],
        "emotional_distress_composite": (z["anxiety"] + z["depression"]) / 2.0,
        "sleep_disturbance": z["sleep_disturbance"],
    }
    physical_z = sum(w.physical[c] * components[c] for c in COMPONENTS)
    mental_z = sum(w.mental[c] * components[c] for c in COMPONENTS)
    absent = wide.isna()
    complete = ~absent.any(axis=1)
    out = wide.index.to_frame(index=False)
    out["physical_health_t"] = round_half_away(np.where(complete, 50.0 + 10.0 * physical_z, np.nan))
    out["mental_health_t"] = round_half_away(np.where(complete, 50.0 + 10.0 * mental_z, np.nan))
    out["missing"] = [", ".join(c for c, gone in zip(INPUTS, row) if gone) for row in absent.to_numpy()]
    return out[list(OUTPUT_COLUMNS)]
