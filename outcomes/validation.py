"""Field rules: parse and check what a form, a patient's check-in or a CSV file gives, before it is stored.

Pure functions, no SQL and no connection. Each ``clean_*`` returns the parsed values and one message per
problem, so a form or an import lists every problem at once. :mod:`outcomes.storage` runs them in every
write verb and in the CSV import, and re-exports them (``storage.clean_patient``...). The vocabularies they
check against (sex codes, scoring methods, adverse-event kinds, vital signs...) are defined here; the
schema (``outcomes/storage/schema.py``) builds its CHECK constraints from the same constants.

Example
-------
>>> values, problems = clean_patient(patient_id=" P001 ", sex="f", birth_year="1980")
>>> values["patient_id"], values["sex"], values["birth_year"], problems
('P001', 'F', 1980, [])
>>> clean_patient(patient_id="P002", sex="female")[1]
["unknown sex code 'female': use F, M or X, or leave it empty"]
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import email_validator
import pandas as pd
import phonenumbers

from .errors import ValidationError
from .domains import load_domains

SEXES = ("F", "M", "X")
METHODS = ("table", "pattern", "prorated", "imported")
SOURCES = ("patient", "clinician", "import")
EVENT_KINDS = ("dissociation", "nausea", "blood_pressure_rise", "hallucination", "other")
SEVERITIES = ("mild", "moderate", "severe")
ROLES = ("admin", "clinician", "qi", "patient")
DOSE_RANGE = (0.05, 2.0)  # mg/kg: sub-anaesthetic infusion doses; outside this is a typo (mg vs mg/kg)
#: ``<domain>_sf<form>_v<version>``; which keys exist is the instrument registry's business.
FORM_KEY = re.compile(r"[a-z][a-z_]*[a-z]_sf\w+_v\d+\.\d+", re.ASCII)
EARLIEST = date(1900, 1, 1)
MAX_WHOLE = 2 ** 53  # the largest whole number a field accepts, whatever its range says
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{2,63}", re.ASCII)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


class _Fields:
    """Parses fields one by one and collects every problem instead of stopping at the first."""

    def __init__(self, today: date | None) -> None:
        self.today = today or date.today()
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def required(self, name: str, value: Any, required: bool) -> bool:
        """True when there is a value to parse; records a problem when a required one is missing."""
        if not _missing(value):
            return True
        if required:
            self.fail(f"{name} is required")
        return False

    def text(self, name: str, value: Any, *, required: bool = False, max_len: int = 2000) -> str | None:
        if not self.required(name, value, required):
            return None
        if not isinstance(value, str):
            return self.fail(f"{name} must be text, got {value!r}")
        if "\x00" in value:
            return self.fail(f"{name} contains a NUL character; remove it")
        if len(value) > max_len:
            return self.fail(f"{name} is {len(value)} characters long; shorten it to at most {max_len}")
        return value  # stored exactly as given: free text is the clinician's own words

    def identifier(self, name: str, value: Any) -> str | None:
        text = self.text(name, value.strip() if isinstance(value, str) else value, required=True, max_len=64)
        if text is not None and any(unicodedata.category(ch).startswith("C") for ch in text):
            return self.fail(f"{name} {text!r} contains a control or invisible character; retype it")
        return text

    def choice(self, name: str, value: Any, options: Sequence[str], *, required: bool = False) -> str | None:
        if not self.required(name, value, required):
            return None
        if isinstance(value, str) and value.strip() in options:
            return value.strip()
        return self.fail(f"{name} must be one of {', '.join(options)}, got {value!r}")

    def number(self, name: str, value: Any, low: float, high: float = math.inf, *, required: bool = False,
               integer: bool = False, above: bool = False, unit: str = "") -> Any:
        if not self.required(name, value, required):
            return None
        kind = "a whole number" if integer else "a number"
        if high == math.inf:
            span = f"above {low:g}" if above else f"of at least {low:g}"
        else:
            span = f"above {low:g} and at most {high:g}" if above else f"from {low:g} to {high:g}"
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            comma = "; use a decimal point, not a comma" if isinstance(value, str) and "," in value else ""
            return self.fail(f"{name} must be {kind} {span}{unit}, got {value!r}{comma}")
        ok = math.isfinite(number) and (not integer or number.is_integer())
        # A whole number past 2**53 is no count or year anyone meant (and past 2**63 SQLite cannot store it).
        ok = ok and not (integer and abs(number) > MAX_WHOLE)
        if not ok or number < low or number > high or (above and number == low):
            return self.fail(f"{name} must be {kind} {span}{unit}, got {value!r}")
        return int(number) if integer else number

    def day(self, name: str, value: Any, *, required: bool = False, future_days: int = 0) -> date | None:
        """A calendar day, at most ``future_days`` after today (0: not in the future)."""
        if not self.required(name, value, required):
            return None
        if isinstance(value, datetime):  # includes pandas.Timestamp; normalised to the day
            result = value.date()
        elif isinstance(value, date):
            result = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value.strip()):
            try:
                result = date.fromisoformat(value.strip())
            except ValueError:
                return self.fail(f"{name} {value.strip()} is not a real calendar date")
        else:
            return self.fail(f"{name} must be a date written YYYY-MM-DD (for example 2024-03-15), "
                             f"got {value!r}")
        if result > self.today + timedelta(days=future_days):
            if future_days:
                return self.fail(f"{name} {result} is more than {future_days} days ahead (today is "
                                 f"{self.today}); check the year")
            return self.fail(f"{name} {result} is in the future (today is {self.today})")
        if result < EARLIEST:
            return self.fail(f"{name} {result} is before {EARLIEST.year}; check the year")
        return result

    def birth_year(self, value: Any) -> int | None:
        if not self.required("birth_year", value, False):
            return None
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{4}", text):
            return self.fail(f"birth_year must be a four-digit year such as 1975, got {value!r}")
        year = int(text)
        if year > self.today.year:
            return self.fail(f"birth_year {year} is in the future")
        if year < EARLIEST.year:
            return self.fail(f"birth_year {year} is before {EARLIEST.year}; check the year")
        return year


def clean_patient(*, patient_id: Any, diagnosis: Any = None, sex: Any = None, birth_year: Any = None,
                  enrolled_on: Any = None, today: date | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one patient's fields.

    Returns
    -------
    (values, problems)
        Parsed values (``None`` where missing or invalid) and one message per problem, empty when valid.
    """
    f = _Fields(today)
    if not _missing(sex) and isinstance(sex, str) and sex.strip().upper() in SEXES:
        sex = sex.strip().upper()
    elif not _missing(sex):
        f.fail(f"unknown sex code {sex!r}: use F, M or X, or leave it empty")
        sex = None
    values = {
        "patient_id": f.identifier("patient_id", patient_id),
        "diagnosis": f.text("diagnosis", diagnosis, max_len=200),
        "sex": None if _missing(sex) else sex,
        "birth_year": f.birth_year(birth_year),
        "enrolled_on": f.day("enrolled_on", enrolled_on),
    }
    return values, f.problems


def clean_series(*, first_infusion: Any, last_infusion: Any, infusions: Any, protocol: Any = None,
                 dose_mg_per_kg: Any = None, notes: Any = None,
                 today: date | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one infusion series; see :func:`clean_patient` for the return value."""
    f = _Fields(today)
    values = {
        "first_infusion": f.day("first_infusion", first_infusion, required=True),
        "last_infusion": f.day("last_infusion", last_infusion, required=True),
        "infusions": f.number("infusions", infusions, 1, integer=True, required=True),
        "protocol": f.text("protocol", protocol, max_len=200),
        "dose_mg_per_kg": f.number("dose_mg_per_kg", dose_mg_per_kg, *DOSE_RANGE, unit=" mg/kg"),
        "notes": f.text("notes", notes),
    }
    first, last = values["first_infusion"], values["last_infusion"]
    if first and last and last < first:
        f.fail(f"last_infusion {last} is before first_infusion {first}; swap or correct the dates")
    return values, f.problems


def clean_infusion(*, infused_on: Any, dose_mg_per_kg: Any, duration_min: Any,
                   adverse_events: Iterable[Mapping[str, Any]] = (), notes: Any = None,
                   today: date | None = None, **vitals: Any) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one infusion, its vital signs and its adverse events.

    ``vitals`` are the optional :data:`VITALS` (blood pressure before and after, heart rate, RASS);
    each adverse event is ``{kind, severity, action=None, description=None, notes=None}`` (see
    :func:`clean_adverse_event`).
    """
    unknown = sorted(set(vitals) - set(VITALS))
    f = _Fields(today)
    if unknown:
        f.fail(f"unknown infusion field(s) {', '.join(unknown)}; vital signs are {', '.join(VITALS)}")
    events = []
    for i, event in enumerate(adverse_events, 1):
        if not isinstance(event, Mapping):
            f.fail(f"adverse event {i} must be a mapping with kind and severity, got {event!r}")
            continue
        cleaned, problems = clean_adverse_event(**{k: event.get(k) for k in _EVENT_FIELDS})
        f.problems += [f"adverse event {i}: {p}" for p in problems]
        events.append(cleaned)
    values = {
        "infused_on": f.day("infused_on", infused_on, required=True),
        "dose_mg_per_kg": f.number("dose_mg_per_kg", dose_mg_per_kg, *DOSE_RANGE, required=True,
                                   unit=" mg/kg"),
        "duration_min": f.number("duration_min", duration_min, 1, 1440, integer=True, required=True,
                                 unit=" minutes"),
        "notes": f.text("notes", notes),
        **_clean_vitals(f, {k: vitals.get(k) for k in VITALS}),
        "adverse_events": events,
    }
    return values, f.problems


#: Vital signs of an infusion, each optional: name -> (label, low, high, unit). Ranges reject typos, not
#: clinical extremes: ketamine raises blood pressure, and a hypertensive reading must still be recordable.
VITALS = {
    "bp_systolic_before": ("systolic blood pressure before", 50, 300, " mmHg"),
    "bp_diastolic_before": ("diastolic blood pressure before", 20, 200, " mmHg"),
    "bp_systolic_after": ("systolic blood pressure after", 50, 300, " mmHg"),
    "bp_diastolic_after": ("diastolic blood pressure after", 20, 200, " mmHg"),
    "heart_rate": ("heart rate", 20, 250, " beats per minute"),
    # Richmond Agitation-Sedation Scale (Sessler et al. 2002): -5 unarousable ... 0 alert and calm ... +4.
    "sedation_rass": ("sedation (RASS)", -5, 4, ""),
}


def _clean_vitals(f: _Fields, vitals: Mapping[str, Any]) -> dict[str, Any]:
    out = {name: f.number(name, vitals.get(name), low, high, integer=True, unit=unit)
           for name, (_, low, high, unit) in VITALS.items()}
    for when in ("before", "after"):
        systolic, diastolic = out[f"bp_systolic_{when}"], out[f"bp_diastolic_{when}"]
        given = [name for name in (f"bp_systolic_{when}", f"bp_diastolic_{when}") if not _missing(vitals.get(name))]
        if len(given) == 1:
            f.fail(f"blood pressure {when}: give both systolic and diastolic, or neither")
        elif systolic is not None and diastolic is not None and diastolic >= systolic:
            f.fail(f"blood pressure {when} {systolic}/{diastolic}: the diastolic value must be lower than the "
                   "systolic; check the order")
    return out


EVENT_ACTIONS = ("none", "slowed", "stopped", "medication")  # action taken for an adverse event
_EVENT_FIELDS = ("kind", "severity", "action", "description", "notes")


def clean_adverse_event(*, kind: Any, severity: Any, action: Any = None, description: Any = None,
                        notes: Any = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one adverse event: kind, severity, action taken, and a description for "other"."""
    f = _Fields(None)
    values = {"kind": f.choice("kind", kind, EVENT_KINDS, required=True),
              "severity": f.choice("severity", severity, SEVERITIES, required=True),
              "action": f.choice("action", action, EVENT_ACTIONS),
              "description": f.text("description", description.strip() if isinstance(description, str)
                                    else description, max_len=200),
              "notes": f.text("notes", notes)}
    if values["kind"] == "other" and _missing(description):
        f.fail('an adverse event of kind "other" needs a short description of what happened')
    return values, f.problems


def clean_score(*, domain: Any, assessed_on: Any, t_score: Any, se: Any = None, form: Any = None,
                responses: Any = None, raw_score: Any = None, n_answered: Any = None, method: Any,
                source: Any, today: date | None = None,
                known_forms: Collection[str] | None = None,
                domains: Collection[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check one domain score.

    ``domain`` must be one of ``domains`` (``settings.domains``; None: the domains shipped in
    data/instruments/forms.toml). ``form`` must look like ``<domain>_sf6a_v1.0`` and start with ``domain``; with
    ``known_forms`` it must also be one of them. It may be missing only when ``method`` is
    ``imported`` (a T-score copied from elsewhere). ``responses`` maps item IDs to whole numbers or
    ``None`` (skipped). See :func:`clean_patient` for the return value.
    """
    f = _Fields(today)
    values = {
        "domain": f.choice("domain", domain, tuple(load_domains() if domains is None else domains),
                           required=True),
        "assessed_on": f.day("assessed_on", assessed_on, required=True),
        "t_score": f.number("t_score", t_score, 0, 100, required=True),
        "se": f.number("se", se, 0, 50, above=True),
        "form": f.text("form", form.strip() if isinstance(form, str) else form, max_len=100),
        "responses": None,
        "raw_score": f.number("raw_score", raw_score, 0),
        "n_answered": f.number("n_answered", n_answered, 0, integer=True),
        "method": f.choice("method", method, METHODS, required=True),
        "source": f.choice("source", source, SOURCES, required=True),
    }
    key, dom = values["form"], values["domain"]
    if key is not None:
        if not FORM_KEY.fullmatch(key):
            f.fail(f"form {key!r} is not a form key <domain>_sf<form>_v<version> (such as the keys in forms.toml)")
        elif dom and not key.startswith(dom + "_"):
            f.fail(f"form {key} does not belong to domain {dom}")
        elif known_forms is not None and key not in known_forms:
            f.fail(f"form {key} is not a known form; known forms: {', '.join(sorted(known_forms))}")
    elif values["method"] not in (None, "imported"):
        f.fail(f"form is required when method is {values['method']} (only imported T-scores may lack one)")
    if not _missing(responses) and responses != {}:
        values["responses"] = _clean_responses(f, responses, has_form=key is not None)
    return values, f.problems


def _clean_responses(f: _Fields, responses: Any, *, has_form: bool) -> dict[str, int | None] | None:
    if not isinstance(responses, Mapping):
        return f.fail(f"responses must map item IDs to values, got {type(responses).__name__}")
    if not has_form:
        f.fail("responses were given without the form they answer; add the form key")
    cleaned: dict[str, int | None] = {}
    for item, value in responses.items():
        if not isinstance(item, str) or not item.strip():
            f.fail(f"response item ID {item!r} must be non-empty text")
        elif _missing(value):
            cleaned[item] = None
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
            f.fail(f"response to {item} must be a whole number or empty, got {value!r}")
        else:
            cleaned[item] = int(value)
    return cleaned


def clean_user(*, username: Any, role: Any, patient_id: Any = None, email: Any = None,
               display_name: Any = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check a user's fields (not the password: see ``auth.password_problems``).

    Usernames are 3 to 64 letters, digits and ``. _ @ -`` starting with a letter or digit, compared
    without case. A patient login names the enrolled patient it belongs to; other roles name none.
    See :func:`clean_patient` for the return value.
    """
    f = _Fields(None)
    name = username.strip() if isinstance(username, str) else username
    if f.required("username", name, True):
        if not isinstance(name, str) or not USERNAME.fullmatch(name):
            f.fail(f"username {name!r} must be 3 to 64 characters: letters, digits and . _ @ -, "
                   "starting with a letter or digit")
            name = None
    else:
        name = None
    values = {
        "username": name,
        "role": f.choice("role", role, ROLES, required=True),
        "patient_id": None,
        "email": None,
        "display_name": f.text("display_name", display_name, max_len=200),
    }
    if values["role"] == "patient" and _missing(patient_id):
        f.fail("a patient login must name the enrolled patient it belongs to (patient_id)")
    elif values["role"] == "patient":
        values["patient_id"] = f.identifier("patient_id", patient_id)
    elif values["role"] is not None and not _missing(patient_id):
        f.fail(f"only patient logins are linked to a patient; a {values['role']} login cannot be")
    if not _missing(email):
        text = email.strip() if isinstance(email, str) else email
        if not isinstance(text, str) or len(text) > 254 or not EMAIL.fullmatch(text):
            f.fail(f"email {email!r} is not an email address such as name@hospital.org")
        else:
            values["email"] = text.lower()  # identity providers differ in case; addresses do not
    return values, f.problems


#: A patient's preferred channel for invitations and reminders (docs/followup.md).
CHANNELS = ("email", "sms", "none")


def clean_email(f: _Fields, name: str, value: Any) -> str | None:
    """An email address checked and normalised by ``email-validator`` (syntax only: no DNS lookup)."""
    if not f.required(name, value, False):
        return None
    if not isinstance(value, str):
        return f.fail(f"{name} must be an email address such as name@example.org, got {value!r}")
    try:
        return email_validator.validate_email(value.strip(), check_deliverability=False).normalized
    except email_validator.EmailNotValidError as exc:
        return f.fail(f"{name} {value.strip()!r} is not a valid email address ({exc}); "
                      "write it as name@example.org")


def clean_phone(f: _Fields, name: str, value: Any, *, region: str = "US") -> str | None:
    """A mobile number as E.164 (``+15551234567``), parsed and checked by ``phonenumbers``; a number written
    without ``+`` and country code is read as a number of ``region``."""
    if not f.required(name, value, False):
        return None
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else value
    if not isinstance(text, str):
        return f.fail(f"{name} must be a phone number such as +1 555 201 0123, got {value!r}")
    try:
        number = phonenumbers.parse(text.strip(), region or None)
    except phonenumbers.NumberParseException as exc:
        return f.fail(f"{name} {text.strip()!r} is not a phone number ({exc._msg}); write it with its "
                      "country code, for example +1 555 201 0123")
    if not phonenumbers.is_valid_number(number):
        return f.fail(f"{name} {text.strip()!r} is not a valid phone number for its country; check the digits "
                      "and the country code")
    kind = phonenumbers.number_type(number)
    if kind not in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return f.fail(f"{name} {text.strip()!r} is not a mobile number; text messages need a mobile phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_contact(*, email: Any = None, phone: Any = None, channel: Any = None, consent_on: Any = None,
                  region: str = "US", today: date | None = None) -> tuple[dict[str, Any], list[str]]:
    """Parse and check a patient's contact details for reminders.

    ``channel`` is ``email``, ``sms`` or ``none`` (default ``none``); a channel other than ``none`` needs
    its address and the date the patient consented (``consent_on``, not in the future). See
    :func:`clean_patient` for the return value.

    Example
    -------
    >>> clean_contact(email="Ann@Example.org", phone="(201) 555-0123", channel="sms",
    ...               consent_on="2025-01-02")[0]["phone"]
    '+12015550123'
    >>> clean_contact(email="ann@", channel="email", consent_on="2025-01-02")[1][0][:30]
    "email 'ann@' is not a valid em"
    """
    f = _Fields(today)
    values = {
        "email": clean_email(f, "email", email),
        "phone": clean_phone(f, "phone", phone, region=region),
        "channel": f.choice("channel", "none" if _missing(channel) else channel, CHANNELS),
        "consent_on": f.day("consent_on", consent_on),
    }
    channel = values["channel"]
    if channel == "email" and values["email"] is None and _missing(email):
        f.fail("channel is email but no email address is given; add one or choose another channel")
    if channel == "sms" and values["phone"] is None and _missing(phone):
        f.fail("channel is sms but no mobile number is given; add one or choose another channel")
    if channel in ("email", "sms") and values["consent_on"] is None and _missing(consent_on):
        f.fail("consent_on is required to send messages: record the date the patient agreed to be contacted")
    return values, f.problems


# Shared by the write verbs: who makes a change, why, and the one error that lists every problem ------


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise ValidationError(f"{what}: nothing was saved. Fix the following and try again:", problems)


def _who(problems: list[str], value: Any, name: str = "entered_by") -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name} must name the person or process making the change, got {value!r}")
        return ""
    return value.strip()


def _reason(problems: list[str], reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        problems.append("reason is required: say why the record is changed (for example 'typed the wrong "
                        "date')")
        return ""
    if len(reason) > 500:
        problems.append(f"reason is {len(reason)} characters long; shorten it to at most 500")
    return reason.strip()
