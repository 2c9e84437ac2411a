"""PROMIS-29 v2.x physical and mental health summary scores (Hays et al. 2018).

Hays RD, Spritzer KL, Schalet BD, Cella D. PROMIS-29 v2.0 profile physical and mental health summary
scores. *Qual Life Res* 2018;27(7):1885-1891, doi:10.1007/s11136-018-1842-3. The weights are data
(``data/instruments/promis29_summary_weights.csv``), and so is what each component is made of
(``promis29_summary_components.csv``: its inputs, each with the mean and SD that standardise it); where they come from and how far they were checked
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
>>> w = load_summary_weights()
>>> scores = pd.DataFrame({"patient_id": "P1", "assessed_on": pd.Timestamp("2025-01-06"),
...                        "domain": list(w.domains), "t_score": 50.0})
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

#: The shipped weights (Hays et al. 2018 via two peer implementations) and the components' inputs.
WEIGHTS_FILE = DATA_DIR / "instruments" / "promis29_summary_weights.csv"
COMPONENTS_FILE = DATA_DIR / "instruments" / "promis29_summary_components.csv"
WEIGHT_COLUMNS = ("component", "definition", "weight_physical_health", "weight_mental_health")
COMPONENT_COLUMNS = ("component", "input", "kind", "mean", "sd", "source")
#: ``t_score``: a domain T-score of the scores frame; ``raw_item``: the pain-intensity item (0-10).
KINDS = ("t_score", "raw_item")
PAIN_INTENSITY_RANGE = (0.0, 10.0)

SCORE_COLUMNS = ("patient_id", "assessed_on", "domain", "t_score")
PAIN_COLUMNS = ("patient_id", "assessed_on", "value")
OUTPUT_COLUMNS = ("patient_id", "assessed_on", "physical_health_t", "mental_health_t", "missing")


@dataclass(frozen=True)
class SummaryWeights:
    """Weights of each component on the physical (``physical``) and mental (``mental``) summary z, and
    each component's ``inputs`` as ``(input, mean, sd)`` (its z is the mean of its inputs' z)."""

    physical: Mapping[str, float]
    mental: Mapping[str, float]
    inputs: Mapping[str, tuple[tuple[str, float, float], ...]]
    raw_item: str  # the one input that is not a domain T-score (the pain-intensity item)
    source: str = ""

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    @property
    def domains(self) -> tuple[str, ...]:
        """The domain T-scores needed, in the components' order."""
        return tuple(i for parts in self.inputs.values() for i, _, _ in parts if i != self.raw_item)

    @property
    def all_inputs(self) -> tuple[str, ...]:
        return (*self.domains, self.raw_item)


def load_summary_weights(path: str | Path | None = None, components: str | Path | None = None) -> SummaryWeights:
    """Read and check the weights CSV and the components CSV (default: the shipped files).

    Raises :class:`InstrumentDefinitionError` naming the file and line of the first problem: a missing
    column, an unknown or repeated component, a weight that is not a finite number, or a component of
    the components file that has no weight.

    Examples
    --------
    >>> w = load_summary_weights()
    >>> w.physical["physical_function"], w.mental["fatigue"]
    (0.872, -0.351)
    """
    if path is None and components is None:
        return _default_weights()
    return _read_weights(Path(path or WEIGHTS_FILE), _read_components(Path(components or COMPONENTS_FILE)))


@functools.cache
def _default_weights() -> SummaryWeights:
    return _read_weights(WEIGHTS_FILE, _read_components(COMPONENTS_FILE))


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """``(where, row)`` of every non-empty row, every column present; errors name the file and line."""
    name = path.name
    out = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a BOM
            reader = csv.DictReader(handle)
            found = [c for c in (reader.fieldnames or []) if c is not None]
            if missing := [c for c in columns if c not in found]:
                raise InstrumentDefinitionError(
                    f"{name} line 1: missing column(s) {', '.join(missing)}; found {', '.join(found) or 'no header'}. "
                    f"The header must be {','.join(columns)}.")
            for row in reader:
                where = f"{name} line {reader.line_num}"
                if None in row:
                    raise InstrumentDefinitionError(f"{where}: more fields than the {len(found)} columns "
                                                    "(quote a definition that contains a comma)")
                values = {k: (v or "").strip() for k, v in row.items()}
                if any(values.values()):
                    out.append((where, values))
    except FileNotFoundError:
        raise InstrumentDefinitionError(f"{name}: file not found at {path}") from None
    except UnicodeDecodeError as exc:
        raise InstrumentDefinitionError(f"{name}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InstrumentDefinitionError(f"{name}: not a readable CSV file ({exc})") from None
    return out


Components = tuple[dict[str, tuple[tuple[str, float, float], ...]], str]


def _read_components(path: Path) -> Components:
    """Each component's inputs ``(input, mean, sd)`` in file order, and the one raw-item input."""
    inputs: dict[str, list[tuple[str, float, float]]] = {}
    raw: list[str] = []
    seen: set[str] = set()
    for where, row in _csv_rows(path, COMPONENT_COLUMNS):
        if row["kind"] not in KINDS:
            raise InstrumentDefinitionError(f"{where}: kind {row['kind']!r} is not one of {', '.join(KINDS)}")
        if not row["component"] or not row["input"]:
            raise InstrumentDefinitionError(f"{where}: component and input must not be empty")
        if row["input"] in seen:
            raise InstrumentDefinitionError(f"{where}: input {row['input']} appears twice")
        seen.add(row["input"])
        mean, sd = _weight(where, row, "mean"), _weight(where, row, "sd")
        if sd <= 0:
            raise InstrumentDefinitionError(f"{where}: sd {sd:g} must be positive")
        inputs.setdefault(row["component"], []).append((row["input"], mean, sd))
        if row["kind"] == "raw_item":
            raw.append(row["input"])
    if len(raw) != 1:
        raise InstrumentDefinitionError(f"{path.name}: exactly one input must be the raw_item (pain intensity), "
                                        f"found {len(raw)}")
    return {c: tuple(parts) for c, parts in inputs.items()}, raw[0]


def _read_weights(path: Path, components: Components) -> SummaryWeights:
    inputs, raw_item = components
    known = tuple(inputs)
    physical: dict[str, float] = {}
    mental: dict[str, float] = {}
    for where, values in _csv_rows(path, WEIGHT_COLUMNS):
        component = values["component"]
        if component not in known:
            raise InstrumentDefinitionError(f"{where}: unknown component {component!r}; "
                                            f"expected one of {', '.join(known)}")
        if component in physical:
            raise InstrumentDefinitionError(f"{where}: component {component} appears twice")
        physical[component] = _weight(where, values, "weight_physical_health")
        mental[component] = _weight(where, values, "weight_mental_health")
    if absent := [c for c in known if c not in physical]:
        raise InstrumentDefinitionError(f"{path.name}: no row for component(s) {', '.join(absent)}; "
                                        f"the weights must cover exactly {', '.join(known)}")
    return SummaryWeights(MappingProxyType({c: physical[c] for c in known}),
                          MappingProxyType({c: mental[c] for c in known}),
                          MappingProxyType(inputs), raw_item, str(path))


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
    of ``weights.domains``; other domains are ignored and a NaN ``t_score`` counts as absent.
    ``pain_intensity`` (``patient_id, assessed_on, value``) holds the Global07 raw item, 0-10; None
    means it was not collected, so no score can be computed. ``assessed_on`` is reduced to the day.

    Returns ``patient_id, assessed_on, physical_health_t, mental_health_t, missing``, sorted by patient
    and day. Both T-scores are NaN unless all eight inputs are present that day; ``missing`` then lists
    the absent inputs (names of ``weights.all_inputs``, comma-separated) and is empty when complete. Days with
    none of the inputs give no row.

    Raises :class:`MissingColumns` for a frame without its columns, and :class:`ValidationError` for a
    date or number that cannot be read, a pain intensity outside 0-10, or two different values for the
    same patient, day (and domain).

    Examples
    --------
    >>> import pandas as pd
    >>> day = pd.Timestamp("2025-01-06")
    >>> domains = list(load_summary_weights().domains)
    >>> scores = pd.DataFrame({"patient_id": "P1", "assessed_on": day, "domain": domains,
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
    long = scores.loc[scores["domain"].isin(w.domains), list(SCORE_COLUMNS)].copy()
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
        pain = pain.rename(columns={"value": "t_score"}).assign(domain=w.raw_item)

    both = pd.concat([long, pain[list(SCORE_COLUMNS)]], ignore_index=True)
    if both.empty:
        return pd.DataFrame({"patient_id": pd.Series(dtype=object),
                             "assessed_on": pd.Series(dtype="datetime64[ns]"),
                             "physical_health_t": pd.Series(dtype=float),
                             "mental_health_t": pd.Series(dtype=float),
                             "missing": pd.Series(dtype=object)})
    wide = both.pivot(index=["patient_id", "assessed_on"], columns="domain", values="t_score")
    inputs = w.all_inputs
    wide = wide.reindex(columns=list(inputs)).sort_index()

    # A component's z is the mean of its inputs' z. Plain arithmetic keeps NaN: a composite with a missing
    # half is NaN, never the other half alone.
    components = {c: sum((wide[i] - mean) / sd for i, mean, sd in parts) / len(parts)
                  for c, parts in w.inputs.items()}
    physical_z = sum(w.physical[c] * components[c] for c in w.components)
    mental_z = sum(w.mental[c] * components[c] for c in w.components)
    absent = wide.isna()
    complete = ~absent.any(axis=1)
    out = wide.index.to_frame(index=False)
    out["physical_health_t"] = round_half_away(np.where(complete, 50.0 + 10.0 * physical_z, np.nan))
    out["mental_health_t"] = round_half_away(np.where(complete, 50.0 + 10.0 * mental_z, np.nan))
    out["missing"] = [", ".join(c for c, gone in zip(inputs, row) if gone) for row in absent.to_numpy()]
    return out[list(OUTPUT_COLUMNS)]
