"""PROMIS short forms as data: load, validate and look up.

Each supported form is named once, in ``data/instruments/forms.toml``, by a key such as
``pain_interference_sf8a_v1.0`` (domain, form, version: the name of its table file). Everything else
comes from the CSVs beside it (``data/instruments/README.md`` lists them; ``SOURCES.md`` says where
each number comes from). Loading checks every file and raises :class:`InstrumentDefinitionError`
naming the file, line and field, so a bad edit fails at start-up rather than as a wrong score.

Item wording is copyrighted and is not stored: each item carries our own paraphrase of its concept,
replaced by the clinic's licensed wording when the ``item_wording_file`` setting names one.

Example
-------
>>> registry = default_registry()
>>> form = registry.form("pain_interference_sf4a_v1.0")
>>> form.title, form.n_items, form.table[12]
('PROMIS SF v1.0 Pain Interference 4a', 4, (61.2, 1.8))
>>> severity_band("depression", 60.0)
'moderate'
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .domains import (SHIPPED_DIR, Domain, Domains, SeverityBands, _get, _no_unknown_fields, _read_toml, _table,
                      load_domains)
from .errors import InstrumentDefinitionError, UnknownForm

#: ``<domain>_sf<form>_v<version>``, the naming of the table files (SOURCES.md, "Files").
FORM_KEY = re.compile(r"^(?P<domain>[a-z_]+)_sf(?P<form>\d+[a-z])_v(?P<version>\d+\.\d+)$")

Where = str  # "items.csv line 12": where a value came from, the start of every error message


@dataclass(frozen=True)
class Item:
    """One item as it appears on one form; ``a`` and ``thresholds`` are GRM parameters or None."""

    item_id: str
    position: int
    min_value: int
    max_value: int
    options: tuple[tuple[int, str], ...]  # (value, generic label), ascending value
    description: str
    description_is_paraphrase: bool
    a: float | None = None
    thresholds: tuple[float, ...] | None = None

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(range(self.min_value, self.max_value + 1))


@dataclass(frozen=True)
class Form:
    """A short form: items in order, raw-score table and metadata. ``table[raw] == (t, se)``."""

    key: str
    domain: str
    title: str
    version: str
    short_form: str  # "8a"
    items: tuple[Item, ...]
    table: Mapping[int, tuple[float, float]]
    bands: SeverityBands
    loinc: str | None
    citation: str
    loinc_display: str | None = None  # LOINC's own name of the code, shown in FHIR codings

    def __hash__(self) -> int:  # the table mapping is unhashable; key and items identify a form
        return hash((self.key, self.items))

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item.item_id for item in self.items)

    @property
    def raw_min(self) -> int:
        return sum(item.min_value for item in self.items)

    @property
    def raw_max(self) -> int:
        return sum(item.max_value for item in self.items)

    @property
    def has_parameters(self) -> bool:
        return all(item.a is not None for item in self.items)

    @property
    def higher_is_worse(self) -> bool:
        return self.bands.higher_is_worse


@dataclass(frozen=True)
class Profile(Mapping[str, Form]):
    """A profile instrument (PROMIS-29 v2.x): a mapping of domain to short form, plus LOINCs."""

    name: str  # "promis29_v2.1"
    title: str
    forms: Mapping[str, Form]
    loinc: Mapping[str, str]  # domain -> T-score LOINC inside this profile
    citation: str

    def __getitem__(self, domain: str) -> Form:
        return self.forms[domain]

    def __iter__(self) -> Iterator[str]:
        return iter(self.forms)

    def __len__(self) -> int:
        return len(self.forms)


@dataclass(frozen=True)
class Registry:
    """Every supported form, domain and profile, as loaded and validated by :func:`load_registry`."""

    forms: tuple[Form, ...]
    domains: Domains
    profiles: tuple[Profile, ...]

    def form(self, key: str) -> Form:
        """The form with this key; :class:`UnknownForm` lists the valid keys otherwise."""
        for form in self.forms:
            if form.key == key:
                return form
        valid = ", ".join(form.key for form in self.forms)
        raise UnknownForm(f"unknown form key {key!r}; valid form keys: {valid}")

    def forms_for_domain(self, domain: str) -> tuple[Form, ...]:
        name = self.domain(domain).name  # raises KeyError for an unknown domain
        return tuple(form for form in self.forms if form.domain == name)

    def domain(self, name: str) -> Domain:
        return self.domains[name]

    def profile(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError(f"unknown profile {name!r}; profiles: {', '.join(p.name for p in self.profiles)}")


def load_registry(instruments_dir: Path | str, item_wording_file: Path | str | None = None) -> Registry:
    """Load and validate every instrument file in ``instruments_dir``.

    Parameters
    ----------
    instruments_dir
        Folder holding ``forms.toml`` and the CSVs described in its README.md.
    item_wording_file
        Optional CSV ``item_id,text`` with the clinic's licensed item wording. Its text replaces our
        paraphrase wherever the item appears (``description_is_paraphrase`` becomes False).

    Returns
    -------
    Registry

    Raises
    ------
    InstrumentDefinitionError
        A file is missing or malformed, or files disagree; the message names file, line and field.

    Example
    -------
    >>> from outcomes.settings import DATA_DIR
    >>> registry = load_registry(DATA_DIR / "instruments")
    >>> [f.key for f in registry.forms_for_domain("depression")][:2]
    ['depression_sf4a_v1.0', 'depression_sf6a_v1.0']
    """
    folder = Path(instruments_dir)
    spec = _read_toml(folder / "forms.toml")
    domains = load_domains(folder)
    items = _items_by_form(folder)
    known_ids = {row["item_id"] for rows in items.values() for _, row in rows}
    options = _options(folder)
    parameters = _parameters(folder, items)
    ours = _texts(folder / "item_descriptions.csv", "description", known_ids, "item_descriptions.csv")
    texts = {item_id: (text, True) for item_id, text in ours.items()}  # (text, is_paraphrase)
    if item_wording_file is not None:
        path = Path(item_wording_file)
        licensed = _texts(path, "text", known_ids, str(path))
        texts.update({item_id: (text, False) for item_id, text in licensed.items()})

    forms_spec = _table(spec, "forms", "forms.toml")
    forms = tuple(_form(folder, key, _table(forms_spec, key, f"forms.toml [forms.{key!r}]"), domains,
                        items, options, parameters, texts) for key in forms_spec)
    return Registry(forms, domains, _profiles(folder, spec, forms))


@functools.cache
def default_registry() -> Registry:
    """The registry the environment's settings name, loaded once per process: for the app's edge (the CLI,
    notebooks). Library functions never call it: they take ``settings.registry`` or a ``registry``.

    Call ``default_registry.cache_clear()`` after changing ``OUTCOMES_INSTRUMENTS_DIR`` or
    ``OUTCOMES_ITEM_WORDING_FILE`` in a running process.
    """
    from .settings import load_settings  # the settings build on this module, not the other way round

    return load_settings().registry


@functools.cache
def cached_registry(instruments_dir: Path, item_wording_file: Path | None) -> Registry:
    """:func:`load_registry`, once per process and pair of paths (``Settings.registry``)."""
    return load_registry(instruments_dir, item_wording_file)


def shipped_registry() -> Registry:
    """The forms shipped in data/instruments with our paraphrased wording: what a pure function given no
    ``registry`` scores with. It reads no setting and no environment variable."""
    return cached_registry(SHIPPED_DIR, None)


def registry_or_shipped(registry: Registry | None) -> Registry:
    return shipped_registry() if registry is None else registry


def severity_band(domain: str | Domain, t: float, registry: Registry | None = None) -> str:
    """HealthMeasures severity band of a T-score in ``domain`` (forms.toml, ``[domains]``).

    Symptom domains (higher is worse): T < 55 within normal limits, 55 <= T < 60 mild,
    60 <= T < 70 moderate, T >= 70 severe. Physical function (higher is better) mirrors it:
    T > 45 within normal limits, 40 < T <= 45 mild, 30 < T <= 40 moderate, T <= 30 severe.

    Example
    -------
    >>> severity_band("pain_interference", 55.0), severity_band("physical_function", 45.0)
    ('mild', 'mild')
    """
    if isinstance(domain, str):
        domain = registry_or_shipped(registry).domain(domain)
    return domain.bands.label(t)


def _rows(path: Path, columns: tuple[str, ...], name: str) -> list[tuple[Where, dict[str, str]]]:
    """The data rows of a CSV with the required columns, each with "<name> line <n>"."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a BOM
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InstrumentDefinitionError(f"{name}: missing column(s) {', '.join(missing)}; "
                                                f"found {', '.join(reader.fieldnames or []) or 'no header'}")
            return [(f"{name} line {reader.line_num}", {c: (row[c] or "").strip() for c in columns})
                    for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    except FileNotFoundError:
        raise InstrumentDefinitionError(f"{name}: file not found at {path}") from None


def _whole(where: Where, row: Mapping[str, str], column: str) -> int:
    try:
        return int(row[column])
    except ValueError:
        raise InstrumentDefinitionError(f"{where}: {column} {row[column]!r} is not a whole number") from None


def _number(where: Where, row: Mapping[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise InstrumentDefinitionError(f"{where}: {column} {row[column]!r} is not a number")
    return value


FormId = tuple[str, str, str]  # (domain, version, form) as spelled in items.csv and item_parameters.csv


def _items_by_form(folder: Path) -> dict[FormId, list[tuple[Where, dict[str, str]]]]:
    columns = ("instrument", "version", "form", "item_id", "position", "min_value", "max_value",
               "reverse_scored")
    forms: dict[FormId, list[tuple[Where, dict[str, str]]]] = {}
    for where, row in _rows(folder / "items.csv", columns, "items.csv"):
        _whole(where, row, "position")
        low, high = _whole(where, row, "min_value"), _whole(where, row, "max_value")
        if low >= high:
            raise InstrumentDefinitionError(f"{where}: min_value {low} is not below max_value {high}")
        if row["reverse_scored"] not in ("true", "false"):
            raise InstrumentDefinitionError(
                f"{where}: reverse_scored {row['reverse_scored']!r} is not true or false")
        rows = forms.setdefault((row["instrument"], row["version"], row["form"]), [])
        if any(r["item_id"] == row["item_id"] for _, r in rows):
            raise InstrumentDefinitionError(f"{where}: item {row['item_id']} appears twice on the same form")
        rows.append((where, row))
    for (domain, version, form), rows in forms.items():
        positions = sorted(int(r["position"]) for _, r in rows)
        if positions != list(range(1, len(rows) + 1)):
            raise InstrumentDefinitionError(
                f"items.csv: {domain} {version} {form} positions are {positions}, expected 1..{len(rows)}")
        rows.sort(key=lambda pair: int(pair[1]["position"]))
    return forms


def _options(folder: Path) -> dict[str, dict[int, str]]:
    options: dict[str, dict[int, str]] = {}
    for where, row in _rows(folder / "item_response_options.csv", ("item_id", "value", "label"),
                            "item_response_options.csv"):
        value, by_value = _whole(where, row, "value"), options.setdefault(row["item_id"], {})
        if not row["label"]:
            raise InstrumentDefinitionError(f"{where}: label is empty")
        if value in by_value:
            raise InstrumentDefinitionError(f"{where}: value {value} of {row['item_id']} is listed twice")
        by_value[value] = row["label"]
    return options


Parameters = dict[FormId, dict[str, tuple[float, tuple[float, ...]]]]


def _parameters(folder: Path, items: Mapping[FormId, list[tuple[Where, dict[str, str]]]]) -> Parameters:
    """Graded-response parameters (SOURCES.md, "item_parameters.csv"): logistic, D = 1."""
    bs = ("b1", "b2", "b3", "b4")
    columns = ("instrument", "version", "form", "item_id", "a", *bs, "model", "metric")
    found: Parameters = {}
    for where, row in _rows(folder / "item_parameters.csv", columns, "item_parameters.csv"):
        form_id = (row["instrument"], row["version"], row["form"])
        on_form = {r["item_id"]: r for _, r in items.get(form_id, [])}
        if not on_form:
            raise InstrumentDefinitionError(f"{where}: form {' '.join(form_id)} is not in items.csv")
        if row["item_id"] not in on_form:
            raise InstrumentDefinitionError(f"{where}: item {row['item_id']} is not on {' '.join(form_id)} "
                                            f"in items.csv ({', '.join(on_form)})")
        if (row["model"], row["metric"]) != ("GRM", "logistic_D1"):
            raise InstrumentDefinitionError(f"{where}: model/metric {row['model']}/{row['metric']} is not "
                                            "supported; expected GRM/logistic_D1")
        a, thresholds = _number(where, row, "a"), tuple(_number(where, row, b) for b in bs)
        if a <= 0:
            raise InstrumentDefinitionError(f"{where}: a {a} must be positive")
        if any(lo >= hi for lo, hi in zip(thresholds, thresholds[1:])):
            raise InstrumentDefinitionError(
                f"{where}: thresholds b1..b4 {list(thresholds)} are not ascending")
        item = on_form[row["item_id"]]
        if len(thresholds) != int(item["max_value"]) - int(item["min_value"]):
            raise InstrumentDefinitionError(f"{where}: {len(thresholds)} thresholds do not fit the values "
                                            f"{item['min_value']}..{item['max_value']} in items.csv")
        by_item = found.setdefault(form_id, {})
        if row["item_id"] in by_item:
            raise InstrumentDefinitionError(
                f"{where}: item {row['item_id']} is listed twice for {' '.join(form_id)}")
        by_item[row["item_id"]] = (a, thresholds)
    for form_id, by_item in found.items():
        if lacking := [i for _, r in items[form_id] if (i := r["item_id"]) not in by_item]:
            raise InstrumentDefinitionError(f"item_parameters.csv: {' '.join(form_id)} has no parameters for "
                                            f"{', '.join(lacking)} (a form needs all or none)")
    return found


def _texts(path: Path, column: str, known_ids: set[str], name: str) -> dict[str, str]:
    """``item_id -> text`` from item_descriptions.csv or a clinic's licensed wording file."""
    texts: dict[str, str] = {}
    for where, row in _rows(path, ("item_id", column), name):
        if row["item_id"] not in known_ids:
            raise InstrumentDefinitionError(f"{where}: unknown item_id {row['item_id']!r} (not in items.csv)")
        if not row[column]:
            raise InstrumentDefinitionError(f"{where}: {column} of {row['item_id']} is empty")
        if row["item_id"] in texts:
            raise InstrumentDefinitionError(f"{where}: item_id {row['item_id']} appears more than once")
        texts[row["item_id"]] = row[column]
    return texts


def _loinc_check_digit_ok(code: str) -> bool:
    """LOINC's Mod 10 check digit (LOINC Users' Guide, "Check digit")."""
    body, check = code.split("-")
    odd, even = body[::-1][0::2][::-1], body[::-1][1::2][::-1]
    total = sum(int(d) for d in str(int(odd) * 2) + even)
    return (10 - total % 10) % 10 == int(check)


def _loinc(value: Any, where: Where) -> str:
    if not (isinstance(value, str) and re.fullmatch(r"\d{1,7}-\d", value) and _loinc_check_digit_ok(value)):
        raise InstrumentDefinitionError(f"{where}: {value!r} is not a valid LOINC code (format, check digit)")
    return value


def _form(folder: Path, key: str, entry: Mapping[str, Any], domains: Mapping[str, Domain],
          items: Mapping[FormId, list[tuple[Where, dict[str, str]]]], options: Mapping[str, dict[int, str]],
          parameters: Parameters, texts: Mapping[str, tuple[str, bool]]) -> Form:
    where = f"forms.toml [forms.{key!r}]"
    match = FORM_KEY.match(key)
    if not match:
        raise InstrumentDefinitionError(f"{where}: the key is not <domain>_sf<form>_v<version>")
    domain_name, short_form, version = match["domain"], match["form"], match["version"]
    if domain_name not in domains:
        raise InstrumentDefinitionError(f"{where}: domain {domain_name!r} is not defined in [domains] "
                                        f"({', '.join(domains)})")
    _no_unknown_fields(entry, {"loinc", "loinc_display", "citation"}, where)
    form_id = (domain_name, version, short_form)
    if form_id not in items:
        raise InstrumentDefinitionError(f"{where}: items.csv has no items for {' '.join(form_id)}")

    built: list[Item] = []
    for item_where, row in items[form_id]:
        item_id, low, high = row["item_id"], int(row["min_value"]), int(row["max_value"])
        if row["reverse_scored"] == "true":
            # None of the PROMIS items here is reversed (SOURCES.md, "Scoring rules"); the tables and
            # parameters assume stored values, so a reversed item would need a new rule, not a flag.
            raise InstrumentDefinitionError(
                f"{item_where}: reverse-scored items are not supported ({item_id})")
        answers = options.get(item_id, {})
        if sorted(answers) != list(range(low, high + 1)):
            raise InstrumentDefinitionError(f"item_response_options.csv: {item_id} (on {key}) has values "
                                            f"{sorted(answers)}, expected {low}..{high} as in {item_where}")
        if item_id not in texts:
            raise InstrumentDefinitionError(f"item_descriptions.csv: no description for {item_id} (on {key})")
        a, thresholds = parameters[form_id][item_id] if form_id in parameters else (None, None)
        text, paraphrase = texts[item_id]
        built.append(Item(item_id, int(row["position"]), low, high, tuple(sorted(answers.items())),
                          text, paraphrase, a, thresholds))
    form_items = tuple(built)
    table = _score_table(folder, key, form_items)
    domain = domains[domain_name]
    loinc = _loinc(entry["loinc"], f"{where} loinc") if "loinc" in entry else None
    title = f"PROMIS SF v{version} {domain.label} {short_form}"
    display = _get(entry, "loinc_display", str, where) if "loinc_display" in entry else None
    if display and not loinc:
        raise InstrumentDefinitionError(f"{where}: loinc_display without a loinc")
    return Form(key, domain_name, title, version, short_form, form_items, table, domain.bands, loinc,
                _get(entry, "citation", str, where), display)


def _score_table(folder: Path, key: str, items: tuple[Item, ...]) -> Mapping[int, tuple[float, float]]:
    name = f"{key}.csv"
    table: dict[int, tuple[float, float]] = {}
    for where, row in _rows(folder / name, ("raw_score", "t_score", "se"), name):
        raw, t = _whole(where, row, "raw_score"), _number(where, row, "t_score")
        se = _number(where, row, "se")
        if raw in table:
            raise InstrumentDefinitionError(f"{where}: raw_score {raw} is listed twice")
        if se <= 0:
            raise InstrumentDefinitionError(f"{where}: se {se} must be positive")
        table[raw] = (t, se)
    low, high = sum(i.min_value for i in items), sum(i.max_value for i in items)
    if sorted(table) != list(range(low, high + 1)):
        found = f"{min(table, default=None)}..{max(table, default=None)} ({len(table)} rows)"
        raise InstrumentDefinitionError(
            f"{name}: raw scores run {found}, but {len(items)} items valued "
            f"{items[0].min_value}..{items[0].max_value} need every raw score {low}..{high}")
    ts = [table[raw][0] for raw in range(low, high + 1)]
    if any(t0 >= t1 for t0, t1 in zip(ts, ts[1:])):
        raise InstrumentDefinitionError(f"{name}: t_score must rise with raw_score (every item is scored so "
                                        "that a higher value means more of the domain)")
    return MappingProxyType(table)


def _profiles(folder: Path, spec: Mapping[str, Any], forms: tuple[Form, ...]) -> tuple[Profile, ...]:
    """Profiles from promis29_domain_tables.csv, named ``promis29_v2.1`` and so on."""
    families = spec.get("profiles", {})
    by_key = {form.key: form for form in forms}
    columns = ("profile", "profile_version", "domain", "table_file")
    collected: dict[tuple[str, str], dict[str, Form]] = {}
    for where, row in _rows(folder / "promis29_domain_tables.csv", columns, "promis29_domain_tables.csv"):
        key = row["table_file"].removesuffix(".csv")
        if row["profile"] not in families:
            raise InstrumentDefinitionError(f"{where}: profile {row['profile']!r} has no [profiles] entry "
                                            "in forms.toml")
        if key not in by_key:
            raise InstrumentDefinitionError(
                f"{where}: table_file {row['table_file']!r} is not a supported form")
        if by_key[key].domain != row["domain"]:
            raise InstrumentDefinitionError(f"{where}: domain {row['domain']!r} does not match form {key}")
        forms_of = collected.setdefault((row["profile"], row["profile_version"]), {})
        if row["domain"] in forms_of:
            raise InstrumentDefinitionError(
                f"{where}: domain {row['domain']} is listed twice for this profile")
        forms_of[row["domain"]] = by_key[key]

    profiles: list[Profile] = []
    for (family, version), forms_of in collected.items():
        where = f"forms.toml [profiles.{family!r}]"
        entry = _table(families, family, where)
        _no_unknown_fields(entry, {"title", "citation", "loinc"}, where)
        loincs = _get(entry, "loinc", dict, where)
        if lacking := sorted(set(forms_of) - set(loincs)):
            raise InstrumentDefinitionError(f"{where}: loinc lacks {', '.join(lacking)}")
        name = re.sub(r"[^a-z0-9]", "", family.lower()) + f"_v{version}"
        profiles.append(Profile(
            name, f"{_get(entry, 'title', str, where)} v{version}", MappingProxyType(forms_of),
            MappingProxyType({d: _loinc(loincs[d], f"{where} loinc.{d}") for d in forms_of}),
            _get(entry, "citation", str, where)))
    return tuple(profiles)
