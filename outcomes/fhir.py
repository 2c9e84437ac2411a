"""PROMIS T-scores as a FHIR R4 Bundle of Observations (peers notes §5): plain dicts, validated in the tests.

One ``Observation`` per score: category ``survey``; code = the bank-level LOINC of the domain's
T-score, with LOINC's display name, both from the form in ``data/instruments/forms.toml``; ``valueQuantity`` in UCUM ``{score}``; ``method.text`` = the short
form's name (LOINC cannot say which short form produced a bank-level score).

Decisions (docs/privacy.md, "FHIR"):

* **No verified LOINC** (PF v1.0 4a/10a, and T-scores imported without their form, whose bank version
  is unknown): ``code`` carries ``text`` only. Inventing a code would be worse than none; a receiver
  keyed on LOINC skips these, and :func:`bundle` reports how many there are.
* **De-identified**: the subject is the pseudonym (a logical reference by identifier); the date is
  replaced by the day relative to the patient's first infusion (extension :data:`STUDY_DAY_URL`).
  No calendar date or year is written: a year plus a relative day can pin a date down to the day
  around New Year. Scores of patients with no infusion series (no day 0) are left out and counted.
  ``outcomes.exports`` passes only the episodes released by a year-end cut, each with every score of its
  fixed span (``outcomes.disclosure.released``), so which Observations a bundle holds never dates a score
  more finely than a year (docs/privacy.md, "Dates and differencing").
* **The corrected record**: only active scores (replaced and voided ones are not exported; a corrected
  score once, as corrected), and day 0 comes from series given and not voided: a planned, cancelled
  or voided series is no first infusion.
* **Identified**: the subject is the clinic's patient ID and ``effectiveDateTime`` the questionnaire's date.
* Resource ids are keyed hashes of the internal assessment ids, so a re-export gives the same ids
  and nobody can read the database's row numbers from them.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd

from .instruments import Registry

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: Identifier systems of the subject; a clinic publishing to a registry may agree on its own URIs.
PSEUDONYM_SYSTEM = "urn:outcomes:pseudonym"
PATIENT_ID_SYSTEM = "urn:outcomes:patient-id"
#: Day of the score relative to the patient's first infusion (day 0), in de-identified bundles.
STUDY_DAY_URL = "urn:outcomes:fhir:StructureDefinition:days-since-first-infusion"


def _uuid(key: str, text: str) -> str:
    digest = hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def observation(*, resource_id: str, domain_label: str, t_score: float, loinc: str | None,
                form_title: str | None, loinc_display: str | None = None, subject_system: str, subject: str, effective: date | None = None,
                study_day: int | None = None) -> dict[str, Any]:
    """One PROMIS T-score Observation (R4) as a JSON-ready dict."""
    code: dict[str, Any] = {"text": f"PROMIS {domain_label} T-score"}
    if loinc:
        coding = {"system": LOINC, "code": loinc}
        if loinc_display:
            coding["display"] = loinc_display
        code["coding"] = [coding]
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": resource_id, "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]}],
        "code": code, "subject": {"identifier": {"system": subject_system, "value": subject}},
    }
    if study_day is not None:
        obs["extension"] = [{"url": STUDY_DAY_URL, "valueInteger": int(study_day)}]
    if effective is not None:
        obs["effectiveDateTime"] = effective.isoformat()
    obs["valueQuantity"] = {"value": round(float(t_score), 1), "unit": "{score}", "system": UCUM,
                            "code": "{score}"}
    if form_title:
        obs["method"] = {"text": form_title}
    return obs


def bundle(scores: pd.DataFrame, series: pd.DataFrame, *, as_of: date, key: str,
           pseudonym: Callable[[str], str] | None, registry: Registry,
           generated_at: datetime) -> tuple[dict[str, Any], list[str]]:
    """A ``collection`` Bundle of one Observation per active score dated up to ``as_of``.

    Parameters
    ----------
    scores, series
        ``storage.load_assessments`` and ``storage.load_series`` frames as their defaults read them:
        active scores, and series given and not voided.
    key
        Keys the resource ids (``exports`` derives it from the database's secret for this purpose only).
    pseudonym
        Patient ID -> pseudonym for a de-identified bundle; None for an identified one.

    Returns
    -------
    (bundle, notes)
        The Bundle as a dict, and sentences about scores coded by text only or left out.
    """
    cut = pd.Timestamp(as_of)
    scores = scores[scores["assessed_on"] <= cut]
    day0 = series[series["first_infusion"] <= cut].groupby("patient_id")["first_infusion"].min()
    notes: list[str] = []
    if pseudonym is not None:
        without = ~scores["patient_id"].isin(day0.index)
        if without.any():
            notes.append(f"{int(without.sum())} scores of patients without an infusion series were left out: "
                         "with no first infusion there is no day 0 to date them by.")
        # Sorted by pseudonym: in the clinic's ID order, positions would rank the IDs.
        scores = scores[~without].assign(_p=lambda f: f["patient_id"].map(pseudonym))
        scores = scores.sort_values(["_p", "assessed_on", "domain"], kind="stable")
    forms = {f.key: f for f in registry.forms}
    labels = {d.name: d.label for d in registry.domains.values()}
    entries, text_only = [], 0
    for row in scores.itertuples(index=False):
        form = forms.get(row.form) if isinstance(row.form, str) else None
        loinc = form.loinc if form else None
        text_only += loinc is None
        rid = _uuid(key, f"observation:{row.assessment_id}")
        if pseudonym is None:
            subject = dict(subject_system=PATIENT_ID_SYSTEM, subject=str(row.patient_id),
                           effective=row.assessed_on.date())
        else:
            subject = dict(subject_system=PSEUDONYM_SYSTEM, subject=pseudonym(row.patient_id),
                           study_day=(row.assessed_on - day0[row.patient_id]).days)
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": observation(
            resource_id=rid, domain_label=labels.get(row.domain, row.domain), t_score=row.t_score,
            loinc=loinc, loinc_display=form.loinc_display if form else None,
            form_title=form.title if form else None, **subject)})
    if text_only:
        notes.append(f"{text_only} observations carry no LOINC code, only code.text: their form has no "
                     "verified T-score LOINC (PROMIS physical function v1.0 4a/10a) or was not recorded "
                     "(imported T-scores).")
    stamp = generated_at.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"resourceType": "Bundle", "type": "collection", "timestamp": stamp, "entry": entries}, notes


def preview(fhir_bundle: Mapping[str, Any], rows: int = 50) -> pd.DataFrame:
    """The first ``rows`` Observations as a flat table (for the page)."""
    out = []
    for entry in fhir_bundle.get("entry", [])[:rows]:
        r = entry["resource"]
        coding = r["code"].get("coding", [{}])[0]
        extension = {e["url"]: e.get("valueInteger") for e in r.get("extension", [])}
        out.append({"subject": r["subject"]["identifier"]["value"], "loinc": coding.get("code", ""),
                    "code": r["code"]["text"], "value": r["valueQuantity"]["value"],
                    "method": r.get("method", {}).get("text", ""),
                    "effective": r.get("effectiveDateTime", ""), "day": extension.get(STUDY_DAY_URL)})
    return pd.DataFrame(out, columns=["subject", "loinc", "code", "value", "method", "effective", "day"])
