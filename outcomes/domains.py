"""What the app knows about each measured domain, read from ``[domains.*]`` in ``forms.toml``.

A domain (pain interference, depression, anxiety...) is data, not code: its labels, direction,
recall period, severity bands, meaningful-change presets with their citations, alert levels, REDCap
field aliases, default check-in form and the synthetic generator's parameters live once in
``data/instruments/forms.toml`` (docs/architecture.md, "Add a domain"). Code asks a :class:`Domains`
registry, which a :class:`~outcomes.settings.Settings` gives as ``settings.domains``; nothing in
``outcomes/``, ``ui/`` or ``app_pages/`` names a domain (tests/test_architecture.py).

This module reads only ``forms.toml`` and imports nothing of the package but ``errors``, so the
settings can use it without importing the instrument loader.

Example
-------
>>> domains = load_domains()
>>> d = domains["physical_function"]
>>> d.display, d.higher_is_worse, d.improvement_sign, d.bands.label(40.0)
('Physical function', False, 1, 'moderate')
>>> domains.only(["depression", "pain_interference"]).names
('pain_interference', 'depression')
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import InstrumentDefinitionError

#: The shipped definitions; a clinic may point the ``instruments_dir`` setting elsewhere.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "instruments"
PRIORITIES = ("high", "routine")

Where = str


@dataclass(frozen=True)
class SeverityBands:
    """Severity labels by T-score; ``cut_points`` are listed in worsening order."""

    higher_is_worse: bool
    cut_points: tuple[float, ...]
    labels: tuple[str, ...]
    source: str

    def label(self, t: float) -> str:
        """The band of ``t``; a band starts *at* its cut point (data/instruments/README.md)."""
        if t != t:
            raise ValueError("a missing T-score (NaN) has no severity band")
        return self.labels[self.level(t)]

    def level(self, t: float) -> int:
        """0 for the first band (within normal limits), 1 for the next and so on."""
        if self.higher_is_worse:
            return sum(t >= cut for cut in self.cut_points)
        return sum(t <= cut for cut in self.cut_points)


@dataclass(frozen=True)
class Threshold:
    """A meaningful change in T points, with where the number comes from."""

    t: float
    source: str


@dataclass(frozen=True)
class AlertLevel:
    """A score at or beyond ``t`` (in the worse direction) raises an alert of ``priority``."""

    t: float
    priority: str
    name: str  # "severe", shown in the alert's reason
    source: str


@dataclass(frozen=True)
class Domain:
    """One domain as declared in ``forms.toml`` (data/instruments/README.md lists the fields)."""

    name: str
    label: str  # as in PROMIS form titles: "Pain Interference"
    display: str  # sentence case, on pages and charts: "Pain interference"
    short_label: str  # "PI", where space is short (the roster)
    order: int
    bands: SeverityBands
    recall: str  # the instruction above the domain's questions in the check-in
    meaningful_change: Mapping[str, Threshold]  # preset name -> threshold
    alerts: tuple[AlertLevel, ...]  # worst first
    worsening_alert: bool  # a worsening of at least the meaningful change raises a routine alert
    redcap: re.Pattern[str] | None  # matches REDCap field names that belong to this domain
    checkin_form: str | None  # the form asked at the weekly check-in unless the clinic chooses others
    synthetic: Mapping[str, Any] | None  # the demo generator's parameters; None: not generated

    @property
    def higher_is_worse(self) -> bool:
        return self.bands.higher_is_worse

    @property
    def improvement_sign(self) -> int:
        """-1 when improvement is a fall in T (symptoms), +1 when it is a rise (function)."""
        return -1 if self.higher_is_worse else 1

    @property
    def direction_text(self) -> str:
        return "lower is better" if self.higher_is_worse else "higher is better"

    def impaired(self, t: float) -> bool:
        """Outside the first severity band (mild or worse)."""
        return self.bands.level(t) > 0

    def at_or_worse(self, t: float, limit: float) -> bool:
        return t >= limit if self.higher_is_worse else t <= limit

    def alert_level(self, t: float) -> tuple[AlertLevel, AlertLevel | None] | None:
        """The worst alert level ``t`` reaches and the next worse level (None if none), or None."""
        for i, level in enumerate(self.alerts):
            if self.at_or_worse(t, level.t):
                return level, self.alerts[i - 1] if i else None
        return None


class Domains(Mapping[str, Domain]):
    """The domains of one instruments folder, in display order; ``domains[name]`` or iterate names."""

    def __init__(self, domains: Iterable[Domain], presets: Mapping[str, str]) -> None:
        self._by_name = {d.name: d for d in sorted(domains, key=lambda d: (d.order, d.name))}
        self.presets: Mapping[str, str] = MappingProxyType(dict(presets))  # name -> label, with its citations

    def __getitem__(self, name: str) -> Domain:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown domain {name!r}; domains: {', '.join(self._by_name)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Domains({', '.join(self._by_name)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def only(self, names: Iterable[str]) -> Domains:
        """The named domains, in display order; an unknown name raises KeyError."""
        wanted = set(names)
        for name in wanted:
            self[name]
        return Domains([d for d in self.values() if d.name in wanted], self.presets)

    def display(self, name: str) -> str:
        """The display name; an unknown name (an old export's column) is tidied, never a KeyError."""
        domain = self._by_name.get(name)
        return domain.display if domain else name.replace("_", " ").capitalize()

    def signs(self) -> dict[str, int]:
        return {d.name: d.improvement_sign for d in self.values()}

    def preset(self, name: str) -> dict[str, float]:
        """Meaningful-change thresholds of one preset, for every domain that has one."""
        return {d.name: d.meaningful_change[name].t for d in self.values() if name in d.meaningful_change}

    def checkin_forms(self) -> tuple[str, ...]:
        return tuple(d.checkin_form for d in self.values() if d.checkin_form)


@functools.cache
def _load(folder: Path) -> Domains:
    spec = _read_toml(folder / "forms.toml")
    presets = _table(spec, "meaningful_change_presets", "forms.toml")
    if not all(isinstance(v, str) and v for v in presets.values()):
        raise InstrumentDefinitionError("forms.toml [meaningful_change_presets]: each preset needs a label")
    declared = _table(spec, "domains", "forms.toml")
    return Domains((_domain(name, _table(declared, name, f"forms.toml [domains.{name}]"), presets)
                    for name in declared), presets)


def load_domains(instruments_dir: Path | str | None = None) -> Domains:
    """The domains declared in ``instruments_dir``/forms.toml (default: the shipped folder), cached.

    Raises :class:`~outcomes.errors.InstrumentDefinitionError` naming the table and field at fault.
    """
    return _load(Path(instruments_dir or SHIPPED_DIR))


load_domains.cache_clear = _load.cache_clear  # type: ignore[attr-defined]

_FIELDS = {"label", "display", "short_label", "order", "higher_is_worse", "recall", "severity_cut_points",
           "severity_labels", "severity_source", "meaningful_change", "alerts", "worsening_alert",
           "redcap_fields", "checkin_form", "synthetic"}
_SYNTHETIC = {"baseline_mean": float, "baseline_sd": float, "responder_share": float,
              "responder_change": float, "other_change": float, "form": str}


def _domain(name: str, entry: Mapping[str, Any], presets: Mapping[str, str]) -> Domain:
    where = f"forms.toml [domains.{name}]"
    if not re.fullmatch(r"[a-z][a-z_]*[a-z]", name):
        raise InstrumentDefinitionError(f"{where}: a domain name is lower-case letters and underscores")
    _no_unknown_fields(entry, _FIELDS, where)
    worse = _get(entry, "higher_is_worse", bool, where)
    bands = _bands(entry, worse, where)
    changes: dict[str, Threshold] = {}
    for preset, value in _get(entry, "meaningful_change", dict, where).items():
        at = f"{where} meaningful_change.{preset}"
        if preset not in presets:
            raise InstrumentDefinitionError(f"{at}: unknown preset; [meaningful_change_presets] has "
                                            f"{', '.join(presets)}")
        t = _number(_get(value, "t", (int, float), at), at)
        if not 0 < t <= 30:
            raise InstrumentDefinitionError(f"{at}: t must be above 0 and at most 30 T points, got {t}")
        changes[preset] = Threshold(t, _get(value, "source", str, at))
    alerts = []
    for i, value in enumerate(entry.get("alerts", [])):
        at = f"{where} alerts[{i}]"
        priority = _get(value, "priority", str, at)
        if priority not in PRIORITIES:
            raise InstrumentDefinitionError(f"{at}: priority {priority!r} is not one of {', '.join(PRIORITIES)}")
        alerts.append(AlertLevel(_number(_get(value, "t", (int, float), at), at), priority,
                                 _get(value, "name", str, at), _get(value, "source", str, at)))
    ordered = sorted(alerts, key=lambda a: a.t, reverse=worse)
    if alerts != ordered:
        raise InstrumentDefinitionError(f"{where}: alerts must be listed worst first")
    aliases = entry.get("redcap_fields", [])
    try:
        redcap = re.compile("|".join(f"(?:{a})" for a in aliases), re.I) if aliases else None
    except re.error as exc:
        raise InstrumentDefinitionError(f"{where} redcap_fields: not a regular expression ({exc})") from None
    synthetic = None
    if "synthetic" in entry:
        raw = _get(entry, "synthetic", dict, where)
        if set(raw) != set(_SYNTHETIC):
            raise InstrumentDefinitionError(f"{where} synthetic: needs exactly {', '.join(_SYNTHETIC)}")
        synthetic = MappingProxyType({k: raw[k] if kind is str else _number(raw[k], f"{where} synthetic.{k}")
                                      for k, kind in _SYNTHETIC.items()})
    checkin_form = entry.get("checkin_form")
    if checkin_form is not None and not (isinstance(checkin_form, str) and checkin_form.startswith(name + "_")):
        raise InstrumentDefinitionError(f"{where}: checkin_form must be a form key of this domain")
    label = _get(entry, "label", str, where)
    return Domain(name=name, label=label, display=entry.get("display", label.capitalize()),
                  short_label=_get(entry, "short_label", str, where), order=_get(entry, "order", int, where),
                  bands=bands, recall=_get(entry, "recall", str, where),
                  meaningful_change=MappingProxyType(changes), alerts=tuple(alerts),
                  worsening_alert=entry.get("worsening_alert", True), redcap=redcap,
                  checkin_form=checkin_form, synthetic=synthetic)


def _bands(entry: Mapping[str, Any], worse: bool, where: Where) -> SeverityBands:
    cuts = tuple(_get(entry, "severity_cut_points", list, where))
    labels = tuple(_get(entry, "severity_labels", list, where))
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cuts):
        raise InstrumentDefinitionError(f"{where}: severity_cut_points must be numbers, got {list(cuts)}")
    if not all(isinstance(label, str) and label for label in labels):
        raise InstrumentDefinitionError(f"{where}: severity_labels must be non-empty strings")
    cuts = tuple(float(c) for c in cuts)
    if list(cuts) != sorted(cuts, reverse=not worse) or len(set(cuts)) != len(cuts):
        raise InstrumentDefinitionError(f"{where}: severity_cut_points must run in worsening order "
                                        f"({'ascending' if worse else 'descending'}), got {list(cuts)}")
    if len(labels) != len(cuts) + 1:
        raise InstrumentDefinitionError(f"{where}: {len(cuts)} severity_cut_points need "
                                        f"{len(cuts) + 1} severity_labels, got {len(labels)}")
    return SeverityBands(worse, cuts, labels, _get(entry, "severity_source", str, where))


# Shared with outcomes/instruments.py, which loads the rest of forms.toml with the same messages.

def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InstrumentDefinitionError(f"{path.name}: file not found in {path.parent}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InstrumentDefinitionError(f"{path.name} is not valid TOML: {exc}") from None


def _table(spec: Mapping[str, Any], name: str, where: Where) -> dict[str, Any]:
    value = spec.get(name)
    if not isinstance(value, dict):
        raise InstrumentDefinitionError(f"{where}: expected a table {name!r}")
    return value


def _get(entry: Any, name: str, kind: type | tuple[type, ...], where: Where) -> Any:
    if not isinstance(entry, Mapping) or name not in entry:
        raise InstrumentDefinitionError(f"{where}: missing field {name!r}")
    value = entry[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # bool is an int
        raise InstrumentDefinitionError(f"{where}: field {name!r} has the wrong type ({value!r})")
    return value


def _no_unknown_fields(entry: Mapping[str, Any], allowed: Iterable[str], where: Where) -> None:
    if unknown := sorted(set(entry) - set(allowed)):
        raise InstrumentDefinitionError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                                        f"allowed: {', '.join(sorted(allowed))}")


def _number(value: Any, where: Where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InstrumentDefinitionError(f"{where}: {value!r} is not a number")
    return float(value)
