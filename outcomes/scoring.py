"""Score PROMIS short forms: summed-score table, response-pattern EAP, or proration.

The rules, in the order they are applied (``data/instruments/SOURCES.md``, "Scoring rules";
HealthMeasures, "Scoring instructions", healthmeasures.net/score-and-interpret/calculate-scores):

1. Every item is valued 1-5 and a higher value means more of the domain, so T never falls when an
   answer rises. A value outside the item's range, or not a whole number, is rejected, never clamped.
2. A form is scored only when at least half its items are answered; otherwise the result is
   "not scorable" and its T-score is None, never 0.
3. All items answered: the raw sum is looked up in the form's table (method ``table``).
4. Items missing and the form has item parameters: response-pattern EAP over the answered items
   (``pattern``), which HealthMeasures recommends when items are missing.
5. Items missing and no parameters (PF 4a v2.0 only): prorated raw = ceil(answered sum x items /
   answered), then the table (``prorated``). The rounding up is from memory of the 2010s manuals,
   not verified (SOURCES.md, "Missing items"); the result's note says the score was prorated.
6. With fewer than 4 answered items, HealthMeasures does not consider a score precise (``imprecise``).

EAP settings (SOURCES.md, "How the tables were obtained"): graded response model, logistic, D = 1;
prior N(0, 1) normalised over 91 nodes from -4.5 to 4.5 in steps of 0.1; T = 50 + 10 EAP and
SE = 10 posterior SD, rounded half-up to one decimal. With them :func:`summed_score_table`
reproduces every cell of every shipped table that has parameters (``tests/test_scoring.py``).

Example
-------
>>> from outcomes.instruments import shipped_registry
>>> form = shipped_registry().form("depression_sf4a_v1.0")
>>> r = score_response(form, {"EDDEP04": 2, "EDDEP06": 3, "EDDEP29": None, "EDDEP41": 4})
>>> r.method, r.t_score, r.se, r.severity, r.imprecise
('pattern', 62.5, 2.9, 'moderate', True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from .errors import InvalidResponse, MissingColumns, UnknownForm, ValidationError
from .instruments import Form, Item, Registry, registry_or_shipped

Method = Literal["table", "pattern", "prorated"]

#: Columns :func:`score_frame` adds to its input, in this order.
OUTPUT_COLUMNS = ("raw_score", "t_score", "se", "n_answered", "method", "severity", "imprecise", "note")
MIN_PRECISE_ITEMS = 4  # HealthMeasures scoring instructions: a precise score needs >= 4 answered items


def min_answered(form: Form) -> int:
    """How many items must be answered for ``form`` to be scored at all (rule 2: at least half)."""
    return math.ceil(form.n_items / 2)

THETA = np.arange(-45, 46) / 10.0  # 91 nodes; the range is an empirical fit to the tables (SOURCES.md)
LOG_PRIOR = -THETA**2 / 2 - np.log(np.exp(-THETA**2 / 2).sum())  # N(0, 1) normalised over the nodes
_METHODS: tuple[Method | None, ...] = (None, "table", "pattern", "prorated")  # index = method code
_CHUNK = 4_096  # rows of the (rows x 91) posterior built at once: small enough to stay in cache
_Parsed = dict[str, tuple[np.ndarray, np.ndarray | None]]  # item column -> (floats, cells if not numeric)


@dataclass(frozen=True)
class ScoreResult:
    """One response to one form, scored or not.

    ``raw_score`` is the sum of the answered values (the prorated raw for ``prorated``; None when
    nothing was answered). ``t_score``, ``se`` and ``severity`` are None when the response is not
    scorable, and ``note`` then says why.
    """

    form: str
    domain: str
    method: Method | None
    n_answered: int
    n_items: int
    raw_score: int | None
    t_score: float | None
    se: float | None
    severity: str | None
    imprecise: bool
    note: str

    @property
    def scorable(self) -> bool:
        return self.t_score is not None


def score_response(form: Form | str, responses: Mapping[str, Any],
                   registry: Registry | None = None) -> ScoreResult:
    """Score one response to one short form.

    Parameters
    ----------
    form
        A :class:`~outcomes.instruments.Form`, or a form key looked up in ``registry``.
    responses
        ``{item_id: value}``: whole-number values in the item's range; None or an absent item is
        missing.
    registry
        Where to look up a form key; the default registry when omitted.

    Returns
    -------
    ScoreResult

    Raises
    ------
    UnknownForm
        ``form`` is a key that is not in the registry (the message lists the valid keys).
    InvalidResponse
        An item that is not on the form, or a value that is not a whole number in range
        (``2.5``, ``"3"``, ``True``, ``6``); the message names the item and the allowed values.

    Example
    -------
    >>> r = score_response("pain_interference_sf4a_v1.0",
    ...                    {"PAININ9": 3, "PAININ22": 3, "PAININ31": 3, "PAININ34": 3})
    >>> r.method, r.raw_score, r.t_score, r.se, r.severity
    ('table', 12, 61.2, 1.8, 'moderate')
    """
    if isinstance(form, str):
        form = registry_or_shipped(registry).form(form)
    if unknown := [item_id for item_id in responses if item_id not in form.item_ids]:
        raise InvalidResponse(
            f"{form.key} has no item {unknown[0]!r}; its items are {', '.join(form.item_ids)}")
    codes = np.zeros((1, form.n_items), dtype=np.int8)
    for i, item in enumerate(form.items):
        value = responses.get(item.item_id)
        if value is None:
            continue
        whole = isinstance(value, Integral) and not isinstance(value, bool)  # True is an Integral too
        if not whole or not item.min_value <= value <= item.max_value:
            raise _invalid(form, item, value)
        codes[0, i] = int(value) - item.min_value + 1
    raw, t, se, n, method = (float(column[0]) for column in _score_codes(form, codes))
    scored = not math.isnan(t)
    return ScoreResult(
        form=form.key, domain=form.domain, method=_METHODS[int(method)], n_answered=int(n),
        n_items=form.n_items, raw_score=int(raw) if n else None, t_score=t if scored else None,
        se=se if scored else None, severity=form.bands.label(t) if scored else None,
        imprecise=scored and n < MIN_PRECISE_ITEMS, note=_note(form, int(method), int(n)))


def score_frame(df: pd.DataFrame, registry: Registry | None = None) -> pd.DataFrame:
    """Score every row of a wide table of responses, vectorised per form.

    Parameters
    ----------
    df
        One row per response: a ``form`` column with the form key and one column per item ID
        (NaN/None = missing; an item column absent from ``df`` counts as missing). Other columns,
        including item columns of other forms, pass through unchanged.
    registry
        The forms to score against; the default registry when omitted.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with the :data:`OUTPUT_COLUMNS` ``raw_score``, ``t_score``, ``se``,
        ``n_answered``, ``method``, ``severity``, ``imprecise`` and ``note`` (replaced if already
        there), equal to :func:`score_response` row by row. A bad row (unknown form, a value out of
        range, text in an item column) gets ``note`` "error: ..." and no score; the other rows are
        still scored.

    Raises
    ------
    MissingColumns
        ``df`` has no ``form`` column.

    Example
    -------
    >>> df = pd.DataFrame({"patient": ["a", "b"], "form": ["depression_sf4a_v1.0", "nope"],
    ...                    "EDDEP04": [1, 1], "EDDEP06": [1, 1], "EDDEP29": [1, 1], "EDDEP41": [1, 1]})
    >>> score_frame(df)[["patient", "t_score", "method"]].values.tolist()
    [['a', 41.0, 'table'], ['b', nan, None]]
    """
    registry = registry_or_shipped(registry)
    if "form" not in df.columns:
        raise MissingColumns(
            "score_frame needs a 'form' column with form keys such as 'depression_sf8a_v1.0'")
    n = len(df)
    raw, t, se, answered = (np.full(n, np.nan) for _ in range(4))
    method = np.zeros(n, dtype=np.int8)
    notes, severity = np.full(n, "", dtype=object), np.full(n, None, dtype=object)
    form_of_row, keys = pd.factorize(df["form"], use_na_sentinel=True)
    notes[form_of_row == -1] = "error: no form key"
    parsed: _Parsed = {}  # each item column is parsed once, whichever forms use it
    for k, key in enumerate(keys):
        rows = np.flatnonzero(form_of_row == k)
        try:
            if not isinstance(key, str):
                raise UnknownForm(f"form key {key!r} is not text")
            form = registry.form(key)
        except UnknownForm as exc:
            notes[rows] = f"error: {exc}"
            continue
        codes, bad, errors = _parse_items(df, form, rows, parsed)
        notes[rows[bad]] = [f"error: {e}" for e in errors]
        good = rows[~bad]
        scored = _score_codes(form, codes[~bad])
        raw[good], t[good], se[good], answered[good], method[good] = scored
        # Notes and bands take few distinct values: make each once and spread it by hashing.
        combos, combo = pd.factorize(scored.method.astype(np.int64) * 1000 + scored.n_answered)
        texts = [_note(form, int(c) // 1000, int(c) % 1000) for c in combo]
        notes[good] = np.array(texts, dtype=object)[combos]
        levels, level = pd.factorize(scored.t, use_na_sentinel=False)
        bands = [None if np.isnan(v) else form.bands.label(v) for v in level]
        severity[good] = np.array(bands, dtype=object)[levels]

    out = df.copy()
    out["raw_score"] = _nullable_int(np.where(answered > 0, raw, np.nan))
    out["t_score"], out["se"] = t, se
    out["n_answered"] = _nullable_int(answered)
    out["method"] = np.array(_METHODS, dtype=object)[method]
    out["severity"] = severity
    out["imprecise"] = ~np.isnan(t) & (answered < MIN_PRECISE_ITEMS)
    out["note"] = notes
    return out


def score_csv(in_path: str | Path, out_path: str | Path | None = None,
              registry: Registry | None = None) -> pd.DataFrame:
    """Score a CSV of responses (the engine of ``python -m outcomes score``).

    The CSV has the layout of :func:`score_frame`. Blank cells are missing. Every cell is read as
    text, so other columns come back exactly as written ("007" stays "007"), and so do the item
    cells; a cell that is not a number makes only its own row an error.

    Parameters
    ----------
    in_path
        The CSV to score.
    out_path
        Where to write the scored CSV; nothing is written when None (the CLI prints the frame).
    registry
        The forms to score against; the default registry when omitted.

    Returns
    -------
    pandas.DataFrame
        What :func:`score_frame` returns, with the item cells as read.

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "in.csv"
    >>> _ = p.write_text("id,form,EDDEP04,EDDEP06,EDDEP29,EDDEP41\\n"
    ...                  "007,depression_sf4a_v1.0,5,5,1,1\\n008,depression_sf4a_v1.0,5,5,1,\\n")
    >>> score_csv(p)[["id", "t_score", "method"]].values.tolist()
    [['007', 62.2, 'table'], ['008', 70.3, 'pattern']]
    """
    registry = registry_or_shipped(registry)
    try:
        text = pd.read_csv(in_path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError:
        raise ValidationError(f"{Path(in_path).name} is not UTF-8 text; save it again as 'CSV UTF-8 (comma "
                              "delimited)'") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ValidationError(f"{Path(in_path).name} cannot be read as CSV ({str(exc).strip()}); it needs a "
                              "header line with a 'form' column and one column per item ID") from None
    except OSError as exc:  # no such file, a folder, no permission
        raise ValidationError(f"{in_path} cannot be opened ({exc.strerror or exc}); give the path of a CSV "
                              "or Parquet file of responses") from None
    item_columns = sorted({i for form in registry.forms for i in form.item_ids} & set(text.columns))
    parsed = text.copy()
    for column in item_columns:
        parsed[column] = _parse_cells(text[column])
    scored = score_frame(parsed, registry)
    scored[item_columns] = text[item_columns]
    if out_path is not None:
        write_scored(scored, out_path)
    return scored


def score_parquet(in_path: str | Path, out_path: str | Path | None = None,
                  registry: Registry | None = None) -> pd.DataFrame:
    """Score a Parquet file of responses: :func:`score_csv` for large batches.

    Same layout and result as :func:`score_csv`. Numeric item columns are scored as stored; item
    columns of text are read as :func:`score_csv` reads cells ("3" is 3, blank is missing, other text
    makes its row an error). A million responses take about 2 s end to end instead of the CSV's 7,
    most of which is parsing and writing text (docs/benchmarks.md).

    Example
    -------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "in.parquet"
    >>> pd.DataFrame({"id": ["007"], "form": ["depression_sf4a_v1.0"], "EDDEP04": [5], "EDDEP06": [5],
    ...               "EDDEP29": [1], "EDDEP41": [1]}).to_parquet(p)
    >>> score_parquet(p)[["id", "t_score", "method"]].values.tolist()
    [['007', 62.2, 'table']]
    """
    registry = registry_or_shipped(registry)
    try:
        table = pd.read_parquet(in_path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValidationError(f"{Path(in_path).name} cannot be read as Parquet ({str(exc).strip()[:200]}); "
                              "it needs a 'form' column and one column per item ID") from None
    item_columns = sorted({i for form in registry.forms for i in form.item_ids} & set(table.columns))
    converted = {}
    for column in item_columns:
        values = table[column]
        if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
            # Text (or booleans, dates...): the CSV rules, so "3" counts and "often" is an error.
            converted[column] = _parse_cells(values.astype("string").fillna("").astype(object))
        elif isinstance(values.dtype, pd.api.extensions.ExtensionDtype):  # nullable Int64, Float64
            converted[column] = pd.Series(values.astype("Float64").to_numpy(dtype=float, na_value=np.nan),
                                          index=values.index)
    scored = score_frame(table.assign(**converted) if converted else table, registry)
    if converted:  # the cells as stored, not as parsed
        scored[list(converted)] = table[list(converted)]
    if out_path is not None:
        write_scored(scored, out_path)
    return scored


def score_file(in_path: str | Path, out_path: str | Path | None = None,
               registry: Registry | None = None) -> pd.DataFrame:
    """Score a file of responses, Parquet when its name ends in ``.parquet``, CSV otherwise (the engine
    of ``python -m outcomes score``). ``out_path`` is written the same way (:func:`write_scored`)."""
    reader = score_parquet if _is_parquet(in_path) else score_csv
    return reader(in_path, out_path, registry)


def write_scored(scored: pd.DataFrame, out_path: str | Path) -> None:
    """Write scored responses: Parquet when the name ends in ``.parquet``, CSV otherwise."""
    try:
        if _is_parquet(out_path):
            scored.to_parquet(out_path, index=False)
        else:
            scored.to_csv(out_path, index=False)
    except OSError as exc:  # no such folder, no permission, disk full
        raise ValidationError(f"{out_path} cannot be written ({exc.strerror or exc}); choose a folder that "
                              "exists and can be written to") from None


def _is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".parquet"


def _parse_cells(cells: pd.Series) -> pd.Series:
    """Item cells as text -> numbers; blank -> NaN; other text kept, so its row gets an error, not a gap."""
    # An item column holds a handful of distinct cells ("1" to "5", ""): parse each distinct cell once
    # and spread the results (per-cell strip and to_numeric took 8 s of a million-row file).
    codes, distinct = pd.factorize(cells.to_numpy(dtype=object))
    text = pd.Series(distinct, dtype=object).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    is_text = text.ne("") & numbers.isna()
    values = numbers.astype(object).where(~is_text, text) if is_text.any() else numbers
    return pd.Series(values.to_numpy()[codes], index=cells.index)


def summed_score_table(form: Form) -> dict[int, tuple[float, float]]:
    """Raw summed score -> (T, SE), computed from the item parameters (Lord-Wingersky recursion).

    This is how the shipped tables were made (SOURCES.md, "How the tables were obtained"); the
    tests use it to check the scoring engine against every cell of every shipped table.

    Raises
    ------
    ValueError
        The form has no item parameters (PF 4a v2.0).

    Example
    -------
    >>> from outcomes.instruments import shipped_registry
    >>> summed_score_table(shipped_registry().form("depression_sf8a_v1.0"))[24]
    (62.1, 1.8)
    """
    probabilities = np.exp(_log_probabilities(form)[:, 1:, :])  # without the "missing" row
    likelihood = np.ones((1, THETA.size))  # P(sum of the items so far = s | theta), s from 0
    for item in probabilities:
        grown = np.zeros((likelihood.shape[0] + item.shape[0] - 1, THETA.size))
        for category, p in enumerate(item):
            grown[category:category + likelihood.shape[0]] += likelihood * p
        likelihood = grown
    with np.errstate(divide="ignore"):
        t, se = _eap(np.log(likelihood) + LOG_PRIOR)
    return {form.raw_min + s: (float(t[s]), float(se[s])) for s in range(likelihood.shape[0])}


def round_half_up(x: np.ndarray | float) -> np.ndarray:
    """Round to one decimal, halves up, as the PROMIS tables are (SOURCES.md, "Rounding").

    ``x * 10`` is first snapped to 6 decimals, so that 57.95 stored as 57.9499999... still rounds
    up to 58.0 (numpy's own round sends halves to even, and a bare floor would round it down).

    Example
    -------
    >>> round_half_up(np.array([0.25, 57.95, 57.9496])).tolist()
    [0.3, 58.0, 57.9]
    """
    return np.floor(np.round(np.asarray(x, dtype=float) * 10, 6) + 0.5) / 10


class _Scored(NamedTuple):
    raw: np.ndarray  # float, for the NaNs of other rows in score_frame
    t: np.ndarray
    se: np.ndarray
    n_answered: np.ndarray
    method: np.ndarray  # index into _METHODS


def _score_codes(form: Form, codes: np.ndarray) -> _Scored:
    """Score rows of category codes of one form (0 = missing, 1 = the item's lowest value, ...)."""
    answered = codes > 0
    n_answered = answered.sum(axis=1)
    offsets = np.array([item.min_value - 1 for item in form.items])
    raw = np.where(answered, codes + offsets, 0).sum(axis=1).astype(float)
    t, se = np.full(len(codes), np.nan), np.full(len(codes), np.nan)
    method = np.zeros(len(codes), dtype=np.int8)

    complete = n_answered == form.n_items
    partial = ~complete & (n_answered >= min_answered(form))
    method[complete] = 1
    if form.has_parameters:
        method[partial] = 2
        if partial.any():
            t[partial], se[partial] = _pattern_scores(form, codes[partial])
    else:
        method[partial] = 3
        # ceil(sum * items / answered) in integers, so that no float error tips a whole number up
        raw[partial] = -(-raw[partial].astype(np.int64) * form.n_items // n_answered[partial])
    looked_up = (method == 1) | (method == 3)
    table_t, table_se = _table_arrays(form)
    index = raw[looked_up].astype(np.int64) - form.raw_min
    t[looked_up], se[looked_up] = table_t[index], table_se[index]
    return _Scored(raw, t, se, n_answered, method)


def _pattern_scores(form: Form, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EAP T and SE of rows of response patterns; each distinct pattern is scored once."""
    groups = _item_groups(form)
    keys = [codes[:, group.items].astype(np.int64) @ group.weights for group in groups]
    # Real answers repeat a lot: number each pattern (at most 6**10 here, far below 2**63) and hash.
    number = np.zeros(len(codes), dtype=np.int64)
    for key, group in zip(keys, groups):
        number = number * len(group.table) + key
    inverse, distinct = pd.factorize(number)
    for g in reversed(range(len(groups))):
        keys[g], distinct = distinct % len(groups[g].table), distinct // len(groups[g].table)
    t, se = np.empty(len(keys[0])), np.empty(len(keys[0]))
    for start in range(0, len(t), _CHUNK):
        block = slice(start, start + _CHUNK)
        log_posterior = groups[0].table[keys[0][block]]  # fancy indexing copies: safe to add into
        for group, key in zip(groups[1:], keys[1:]):
            log_posterior += group.table[key[block]]
        t[block], se[block] = _eap(log_posterior)
    return t[inverse], se[inverse]


def _eap(log_posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rounded T and SE from rows of unnormalised log posterior over THETA (overwritten)."""
    log_posterior -= log_posterior.max(axis=1, keepdims=True)  # so that exp cannot underflow a row
    posterior = np.exp(log_posterior, out=log_posterior)
    total = posterior.sum(axis=1)
    # einsum, not @: BLAS would start threads that fight over the cores (2 in the benchmark)
    mean = np.einsum("ij,j->i", posterior, THETA) / total
    sd = np.sqrt(np.maximum(np.einsum("ij,j->i", posterior, THETA**2) / total - mean**2, 0.0))
    return round_half_up(50 + 10 * mean), round_half_up(10 * sd)


class _ItemGroup(NamedTuple):
    items: np.ndarray  # positions on the form
    weights: np.ndarray  # number a combination of the items' codes: codes @ weights
    table: np.ndarray  # summed log P(codes | theta) of every combination, (6**len(items), nodes)


@functools.lru_cache(maxsize=64)
def _item_groups(form: Form) -> tuple[_ItemGroup, ...]:
    """The form's items in groups of at most 5, each with the log-likelihood of all its patterns.

    A pattern's log posterior is then one table row per group, added: 2 lookups for 10 items,
    instead of 10. A missing item has code 0, whose log P row is all zeros, so only answered items
    count. The prior is folded into the first group's table.
    """
    logp = _log_probabilities(form)
    groups = []
    for g, items in enumerate(np.array_split(np.arange(form.n_items), math.ceil(form.n_items / 5))):
        table = (LOG_PRIOR if g == 0 else np.zeros(THETA.size))[None, :]
        for i in items[::-1]:  # the group's first item ends up varying slowest
            table = (logp[i][:, None, :] + table[None, :, :]).reshape(-1, THETA.size)
        table.flags.writeable = False
        groups.append(_ItemGroup(items, logp.shape[1] ** np.arange(len(items), dtype=np.int64)[::-1], table))
    return tuple(groups)


@functools.lru_cache(maxsize=64)
def _log_probabilities(form: Form) -> np.ndarray:
    """log P(category | theta), shape (items, 1 + categories, nodes); row 0 (missing) is all 0."""
    n_categories = max(item.max_value - item.min_value for item in form.items) + 1
    logp = np.zeros((form.n_items, 1 + n_categories, THETA.size))
    for i, item in enumerate(form.items):
        if item.a is None or item.thresholds is None:
            raise ValueError(f"{form.key} has no item parameters")
        # P(X >= category k + 1 | theta) = 1 / (1 + exp(-a (theta - b_k))) (SOURCES.md, "Columns")
        at_least = 1 / (1 + np.exp(-item.a * (THETA[None, :] - np.array(item.thresholds)[:, None])))
        cumulative = np.vstack([np.ones(THETA.size), at_least, np.zeros(THETA.size)])
        # The floor keeps log finite (a row of -inf would become NaN in _eap); it only touches
        # far tails, orders of magnitude below any rounding of T or SE.
        logp[i, 1:len(cumulative)] = np.log(np.maximum(cumulative[:-1] - cumulative[1:], 1e-300))
    logp.flags.writeable = False
    return logp


@functools.lru_cache(maxsize=64)
def _table_arrays(form: Form) -> tuple[np.ndarray, np.ndarray]:
    raws = range(form.raw_min, form.raw_max + 1)
    return np.array([form.table[r][0] for r in raws]), np.array([form.table[r][1] for r in raws])


def _invalid(form: Form, item: Item, value: object) -> InvalidResponse:
    shown = repr(value) if isinstance(value, str) else str(value)
    allowed = ", ".join(f"{v} ({label})" for v, label in item.options)
    return InvalidResponse(f"{form.key}: {item.item_id}={shown} is not an allowed answer; use a whole "
                           f"number {allowed}, or None if the item was skipped")


def _note(form: Form, method: int, n_answered: int) -> str:
    counts = f"{n_answered} of {form.n_items} items answered"
    if method == 0:
        return f"not scorable: {counts}; at least half ({min_answered(form)}) are needed"
    note = {1: "", 2: f"response-pattern (EAP) score: {counts}",
            3: f"prorated: {counts}, raw sum scaled to {form.n_items} items and rounded up; "
               "this form has no item parameters for pattern scoring"}[method]
    if n_answered < MIN_PRECISE_ITEMS:
        note += "; imprecise: fewer than 4 items answered (HealthMeasures)"
    return note


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    missing = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)


def _parse_items(df: pd.DataFrame, form: Form, rows: np.ndarray,
                 parsed: _Parsed) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Category codes of ``rows`` for the form's items, which rows are bad, and their errors."""
    codes = np.zeros((len(rows), form.n_items), dtype=np.int8)
    invalid = np.zeros((len(rows), form.n_items), dtype=bool)
    cells: list[np.ndarray] = []
    for i, item in enumerate(form.items):
        if item.item_id not in df.columns:
            cells.append(np.empty(0))
            continue
        if item.item_id not in parsed:
            parsed[item.item_id] = _numeric_column(df[item.item_id])
        numbers, original = parsed[item.item_id]
        values = numbers[rows]
        missing = np.isnan(values) if original is None else pd.isna(original[rows])
        in_range = (values >= item.min_value) & (values <= item.max_value)
        ok = missing | ((values == np.floor(values)) & in_range)
        invalid[:, i] = ~ok
        codes[:, i] = np.where(ok & ~missing, values - item.min_value + 1, 0)
        cells.append(numbers if original is None else original)
    bad = np.asarray(invalid.any(axis=1))
    errors = []
    for r, i in zip(np.flatnonzero(bad), invalid[bad].argmax(axis=1)):  # first bad item, as score_response
        value = cells[i][rows[r]]
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        errors.append(str(_invalid(form, form.items[i], value)))
    return codes, bad, errors


def _numeric_column(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """Item values as floats (NaN = missing or not a number) and, for non-numeric columns, the cells."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=float, na_value=np.nan), None
    # An object column may hold what score_response rejects (text, True): such cells become NaN
    # here and are told apart from missing cells by pd.isna on the original cells.
    cells = column.to_numpy(dtype=object)
    numbers = [float(v) if isinstance(v, (Integral, float)) and not isinstance(v, bool) else np.nan
               for v in cells]
    return np.array(numbers, dtype=float), cells
