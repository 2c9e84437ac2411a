"""The one settings object.

Every setting is declared once in :data:`REGISTRY` with its default, its type and a line of help
(datasette's settings registry). Values come from, in rising order of precedence: the defaults,
a TOML file named by ``OUTCOMES_CONFIG``, and ``OUTCOMES_<NAME>`` environment variables.
Domain functions never read the environment: they receive values from a :class:`Settings`.

Example
-------
>>> from outcomes.settings import load_settings
>>> s = load_settings({"OUTCOMES_MCID_PRESET": "half_sd"})
>>> s.mcid["depression"]
5.0
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Any

from .domains import Domains, load_domains
from .errors import ConfigError
from .instruments import Registry, cached_registry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"

#: Shown when the effective thresholds are not one preset's (the presets' own labels are data).
CUSTOM_MCID_LABEL = "Custom thresholds set by the clinic"


@dataclass(frozen=True)
class Window:
    """A follow-up window in days relative to the last infusion, bounds inclusive."""

    name: str
    label: str
    target: int
    low: int
    high: int


#: Follow-up windows relative to the last infusion L (docs/methods.md).
DEFAULT_WINDOWS: tuple[Window, ...] = (
    Window("end_of_series", "End of series", 0, 0, 7),
    Window("month_1", "1 month", 30, 16, 44),
    Window("month_3", "3 months", 91, 63, 119),
    Window("month_6", "6 months", 182, 140, 224),
)


def _parse_int(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if not minimum <= number <= maximum:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}, got {number}")
        return number

    return parse


def _parse_path(value: Any) -> Path:
    text = str(value).strip()
    if not text:
        raise ValueError("expected a file path, got an empty value")
    path = Path(text).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _parse_optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else _parse_path(value)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_str_list(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    result = tuple(str(v).strip() for v in items if str(v).strip())
    if not result:
        raise ValueError("expected at least one value")
    return result


def _parse_timezone(value: Any) -> str:
    text = str(value).strip()
    if text:
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as America/Chicago, got {text!r}") from None
    return text


def _parse_preset(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("expected the name of a meaningful-change preset, got an empty value")
    return text


def parse_mcid_overrides(value: Any) -> dict[str, float]:
    """Parse ``"depression=4,physical_function=2.5"`` (or a TOML table) into ``{domain: value}``."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"expected DOMAIN=VALUE, got {part.strip()!r}")
            key, _, number = part.partition("=")
            pairs.append((key.strip(), number.strip()))
    result: dict[str, float] = {}
    for key, number in pairs:  # the domain names are checked against the registry by Settings
        try:
            threshold = float(number)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number of T points for {key}, got {number!r}") from None
        if not 0 < threshold <= 30:
            raise ValueError(f"the threshold for {key} must be above 0 and at most 30 T points, got {threshold}")
        result[key] = threshold
    return result


def _parse_text(max_len: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if len(text) > max_len or any(ch in text for ch in "\r\n\x00"):
            raise ValueError(f"expected one line of at most {max_len} characters")
        return text

    return parse


def _parse_choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return text

    return parse


def _parse_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    if text and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?", text):
        raise ValueError(f"expected an address such as https://outcomes.clinic.example, got {value!r}")
    return text


def _parse_region(value: Any) -> str:
    text = str(value).strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", text):
        raise ValueError(f"expected a two-letter country code such as US or GB, got {value!r}")
    return text


def _parse_quiet_hours(value: Any) -> tuple[int, int] | None:
    text = str(value).strip()
    if not text:
        return None
    match = re.fullmatch(r"([0-9]{1,2})-([0-9]{1,2})", text)
    if not match or not all(0 <= int(h) <= 23 for h in match.groups()) or match[1] == match[2]:
        raise ValueError(f"expected START-END hours from 0 to 23 such as 21-8, or empty, got {value!r}")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    secret: bool = False

    @property
    def env_var(self) -> str:
        return "OUTCOMES_" + self.name.upper()


_EXAMPLE = load_domains().names[-2:]  # two shipped domains, for the help text

REGISTRY: tuple[SettingSpec, ...] = (
    SettingSpec("db_path", DATA_DIR / "outcomes.db", _parse_path,
                "SQLite database of the clinic (created and migrated on first use; git-ignored)."),
    SettingSpec("demo_db_path", DATA_DIR / "demo.db", _parse_path,
                "Separate database for the synthetic demo cohort; never mixed with real data."),
    SettingSpec("demo", False, _parse_bool,
                "Keep the synthetic demo (?demo=1) open after the clinic's first administrator exists. Before "
                "that the setup screen always offers it; afterwards it is off unless this is true."),
    SettingSpec("instruments_dir", DATA_DIR / "instruments", _parse_path,
                "Folder with the PROMIS short-form tables, items and parameters (see its SOURCES.md)."),
    SettingSpec("item_wording_file", None, _parse_optional_path,
                "CSV with columns item_id,text holding the clinic's licensed PROMIS item wording; "
                "replaces our paraphrased descriptions in every form."),
    SettingSpec("checkin_forms", (), _parse_str_list,
                "Form keys a patient answers at each weekly check-in, in order; empty: each domain's "
                "checkin_form in forms.toml."),
    SettingSpec("timezone", "", _parse_timezone,
                "The clinic's IANA time zone (e.g. America/Chicago), which dates check-ins; empty: the server's."),
    SettingSpec("checkin_cadence_days", 7, _parse_int(1, 90),
                "Days between follow-up slots after a series (slot k is due on the last infusion + k times this), "
                "and how long each slot stays open."),
    SettingSpec("checkin_overdue_days", 2, _parse_int(0, 60),
                "Days after a slot falls due before it shows as overdue (2: overdue from day 3 of the slot)."),
    SettingSpec("baseline_due_days", 7, _parse_int(0, 365),
                "The baseline questionnaire falls due this many days before the first infusion (or when the "
                "series is planned, if later); it stays open until the first infusion."),
    SettingSpec("reminder_after_days", 2, _parse_int(1, 30),
                "Days after the invitation (sent on the due day) that the one reminder is sent."),
    SettingSpec("call_list_after_days", 3, _parse_int(1, 30),
                "Days after a slot falls due, still undone, that the patient joins the staff call list."),
    SettingSpec("baseline_forms", (), _parse_str_list,
                "Form keys asked at the baseline before a series; empty: the checkin_forms."),
    SettingSpec("weekly_forms", (), _parse_str_list,
                "Form keys asked at a weekly follow-up slot; empty: the checkin_forms."),
    SettingSpec("timepoint_forms", (), _parse_str_list,
                "Form keys asked at a formal time point (end of series, 1, 3 and 6 months); empty: the "
                "checkin_forms."),
    SettingSpec("mcid_preset", "anchor", _parse_preset,
                "Meaningful-change preset: anchor (3.0/3.5/3.0), lenient (2/3/2) or half_sd (5/5/5)."),
    SettingSpec("mcid", MappingProxyType({}), parse_mcid_overrides,
                "Per-domain overrides of the preset, e.g. "
                f"'{_EXAMPLE[0]}=4.0,{_EXAMPLE[1]}=2.5' (domain names as in forms.toml)."),
    SettingSpec("followup_days", 182, _parse_int(1, 3650),
                "Days after the last infusion of a series during which an active patient is expected to check "
                "in (six months); afterwards no check-in is overdue."),
    SettingSpec("baseline_days", 30, _parse_int(0, 365),
                "Baseline is the latest score from this many days before the first infusion up to that day."),
    SettingSpec("small_cell_max", 10, _parse_int(0, 100),
                "Counts from 1 to this value are suppressed in de-identified output (CMS cell-size rule)."),
    SettingSpec("session_idle_minutes", 30, _parse_int(1, 24 * 60),
                "Minutes of inactivity after which a signed-in user must sign in again."),
    SettingSpec("lockout_attempts", 5, _parse_int(1, 100),
                "Failed sign-ins in a row that lock an account."),
    SettingSpec("lockout_minutes", 15, _parse_int(1, 24 * 60),
                "How long a locked account stays locked."),
    SettingSpec("invitation_days", 7, _parse_int(1, 90),
                "Days a patient's one-time invitation code stays valid."),
    # Messages (docs/followup.md, docs/operations.md)
    SettingSpec("clinic_name", "Your clinic", _parse_text(80),
                "The clinic's name as it signs invitations and reminders."),
    SettingSpec("public_url", "", _parse_url,
                "The address patients open the app at (e.g. https://outcomes.clinic.example), for the links "
                "in messages; required to send them."),
    SettingSpec("phone_region", "US", _parse_region,
                "Country (ISO 3166 code) of mobile numbers typed without a + and country code."),
    SettingSpec("smtp_host", "", _parse_text(253), "SMTP server for email; empty: email is not sent."),
    SettingSpec("smtp_port", 587, _parse_int(1, 65535), "SMTP port (587 for starttls, 465 for ssl)."),
    SettingSpec("smtp_security", "starttls", _parse_choice("starttls", "ssl", "none"),
                "starttls, ssl or none (none only for a relay on the same machine)."),
    SettingSpec("smtp_user", "", _parse_text(253), "SMTP user name; empty: no login."),
    SettingSpec("smtp_password", "", _parse_text(1000),
                "SMTP password: from the environment or .streamlit/secrets.toml only.", secret=True),
    SettingSpec("mail_from", "", _parse_text(254), "Sender address of invitations and reminders."),
    SettingSpec("sms_provider", "twilio", _parse_choice("twilio"), "SMS provider (Twilio's REST API)."),
    SettingSpec("sms_api_base", "https://api.twilio.com", _parse_url,
                "Base URL of the SMS provider's API (tests point it at a fake provider on loopback)."),
    SettingSpec("sms_account_sid", "", _parse_text(64), "Twilio account SID; empty: SMS is not sent."),
    SettingSpec("sms_auth_token", "", _parse_text(200),
                "Twilio auth token: from the environment or .streamlit/secrets.toml only.", secret=True),
    SettingSpec("sms_from", "", _parse_text(32), "Sender number of text messages (E.164, e.g. +15005550006)."),
    SettingSpec("message_max_attempts", 3, _parse_int(1, 20),
                "Times a message is tried before it is given up and shown on the Reminders page."),
    SettingSpec("quiet_hours", (21, 8), _parse_quiet_hours,
                "Hours (clinic time zone, 24-hour clock) during which the remind command sends nothing, as "
                "START-END; empty: none."),
)

_SPECS = {spec.name: spec for spec in REGISTRY}


@dataclass(frozen=True)
class Settings:
    db_path: Path
    demo_db_path: Path
    demo: bool
    instruments_dir: Path
    item_wording_file: Path | None
    checkin_forms: tuple[str, ...]
    timezone: str
    checkin_cadence_days: int
    checkin_overdue_days: int
    followup_days: int
    mcid_preset: str
    mcid: Mapping[str, float]
    baseline_days: int
    small_cell_max: int
    session_idle_minutes: int
    lockout_attempts: int
    lockout_minutes: int
    invitation_days: int
    baseline_due_days: int = 7
    reminder_after_days: int = 2
    call_list_after_days: int = 3
    baseline_forms: tuple[str, ...] = ()
    weekly_forms: tuple[str, ...] = ()
    timepoint_forms: tuple[str, ...] = ()
    clinic_name: str = "Your clinic"
    public_url: str = ""
    phone_region: str = "US"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = dataclasses.field(default="", repr=False)
    mail_from: str = ""
    sms_provider: str = "twilio"
    sms_api_base: str = "https://api.twilio.com"
    sms_account_sid: str = ""
    sms_auth_token: str = dataclasses.field(default="", repr=False)
    sms_from: str = ""
    message_max_attempts: int = 3
    quiet_hours: tuple[int, int] | None = (21, 8)
    windows: tuple[Window, ...] = DEFAULT_WINDOWS

    def __post_init__(self) -> None:
        domains = self.domains
        if self.mcid_preset not in domains.presets:
            raise ConfigError(f"mcid_preset: expected one of {', '.join(domains.presets)}, got {self.mcid_preset!r}")
        if unknown := [d for d in self.mcid if d not in domains]:
            raise ConfigError(f"mcid: unknown domain {unknown[0]!r}; expected one of {', '.join(domains)}")
        # The effective thresholds: the preset, then any per-domain override on top.
        merged = domains.preset(self.mcid_preset)
        merged.update(self.mcid)
        object.__setattr__(self, "mcid", MappingProxyType({d: merged[d] for d in domains if d in merged}))
        if not self.checkin_forms:
            object.__setattr__(self, "checkin_forms", domains.checkin_forms())

    def slot_forms(self, kind: str) -> tuple[str, ...]:
        """The form keys a follow-up slot of this kind asks (``baseline``, ``weekly`` or ``timepoint``): the
        setting ``<kind>_forms``, or the ``checkin_forms`` when it is empty."""
        if kind not in ("baseline", "weekly", "timepoint"):
            raise ValueError(f"unknown kind of slot {kind!r}; expected baseline, weekly or timepoint")
        return getattr(self, f"{kind}_forms") or self.checkin_forms

    @property
    def registry(self) -> Registry:
        """The forms of ``instruments_dir`` with the clinic's ``item_wording_file`` (loaded once per process)."""
        return cached_registry(self.instruments_dir, self.item_wording_file)

    @property
    def domains(self) -> Domains:
        """The domains declared in ``instruments_dir`` (forms.toml ``[domains.*]``), in display order."""
        return load_domains(self.instruments_dir)

    def reported_domains(self, measured: Iterable[str]) -> tuple[str, ...]:
        """The domains a cohort report covers, in display order: those with a meaningful-change threshold
        that the check-in asks or that have scores (``measured``). A domain the clinic does not measure
        would only add empty rows; one it asks is reported even before its first score (0 of 0)."""
        asked = {d for d in self.domains for key in self.checkin_forms if key.startswith(d + "_sf")}
        wanted = asked | set(measured)
        return tuple(d for d in self.domains if d in self.mcid and d in wanted)

    @property
    def zoneinfo(self) -> tzinfo | None:
        """The clinic's time zone; None means the server's local time."""
        return ZoneInfo(self.timezone) if self.timezone else None

    @property
    def clinic_zone(self) -> tzinfo:
        """The clinic's time zone, or the server's when the ``timezone`` setting is empty."""
        zone = self.zoneinfo
        return zone if zone is not None else datetime.now().astimezone().tzinfo  # type: ignore[return-value]

    @property
    def mcid_label(self) -> str:
        if self.domains.preset(self.mcid_preset) != dict(self.mcid):
            return CUSTOM_MCID_LABEL
        return self.domains.presets[self.mcid_preset]

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed; ``mcid`` overrides apply on top of the preset."""
        if "mcid_preset" in changes and "mcid" not in changes:
            changes["mcid"] = {}
        return dataclasses.replace(self, **changes)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from defaults, the ``OUTCOMES_CONFIG`` TOML file and the environment.

    Raises :class:`ConfigError` naming the setting, where its value came from and what is expected.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {spec.name: spec.default for spec in REGISTRY}
    sources: dict[str, tuple[str, Any]] = {}

    # Secrets (SMTP password, SMS token) come from the environment or the [outcomes] table of the git-ignored
    # .streamlit/secrets.toml, never from the config file (which a clinic may keep in version control).
    secrets_file = Path(env.get("OUTCOMES_SECRETS_FILE", PROJECT_ROOT / ".streamlit" / "secrets.toml"))
    if secrets_file.is_file():
        try:
            table = tomllib.loads(secrets_file.read_text(encoding="utf-8")).get("outcomes", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{secrets_file} is not valid TOML: {exc}") from None
        for key, raw in (table.items() if isinstance(table, Mapping) else ()):
            if key not in _SPECS or not _SPECS[key].secret:
                raise ConfigError(f"{secrets_file}: [outcomes] holds only secrets "
                                  f"({', '.join(s.name for s in REGISTRY if s.secret)}), not {key!r}")
            sources[key] = (f"{key} in {secrets_file}", raw)

    config_file = env.get("OUTCOMES_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"OUTCOMES_CONFIG names {path}, which does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in _SPECS:
                raise ConfigError(f"{path}: unknown setting {key!r}; known settings: {', '.join(_SPECS)}")
            if _SPECS[key].secret:
                raise ConfigError(f"{path}: {key} is a secret; set it in the environment ({_SPECS[key].env_var}) "
                                  "or in the [outcomes] table of .streamlit/secrets.toml, not in the config file")
            sources[key] = (f"{key} in {path}", raw)
    for spec in REGISTRY:
        if spec.env_var in env:
            sources[spec.name] = (spec.env_var, env[spec.env_var])

    for name, (where, raw) in sources.items():
        try:
            values[name] = _SPECS[name].parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return Settings(**values)


def settings_help() -> list[dict[str, str]]:
    """Name, environment variable, default and help of every setting (for docs and the CLI)."""
    return [
        {"name": s.name, "env_var": s.env_var, "default": _show(s.default), "help": s.help}
        for s in REGISTRY
    ]


def _show(value: Any) -> str:
    if isinstance(value, Path):
        try:
            return str(value.relative_to(PROJECT_ROOT))
        except ValueError:
            return str(value)
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return "-".join(map(str, value))  # quiet hours
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    return "(none)" if value is None else str(value)

