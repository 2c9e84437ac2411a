"""Shared by the export tests: a database with planted identifiers; every byte of an exported file as text."""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from outcomes import auth, storage, synthetic

END = date(2025, 6, 1)  # last day of the synthetic record and the data cut of the tests
NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
PASSWORD = "a long test password"
SECRET = "5eed" * 16  # fixed, so pseudonyms (and any accidental match in them) are the same every run

#: The planted patient: every identifier the data model can hold, each distinctive enough to search for.
PLANT = {
    "patient_id": "MRN-4471-QZX",
    "diagnosis": "Complex regional pain syndrome",
    "birth_year": 1929,  # 94 at the first infusion: must become "90+"
    "enrolled_on": date(2023, 1, 30),
    "first_infusion": date(2023, 2, 13),
    "last_infusion": date(2023, 2, 17),
    "note": "NOTE-SECRET-ALPHA",
    "staff": "dr.plantname",
    "username": "plant.patient",
    "email": "plant.patient@example.org",
    "display_name": "Plantina Quixote",
    # The clinic record's trail (migration 0004): free text and dates that only an identified file may hold.
    "reason": "REASON-SECRET-BRAVO",       # in every correction, void, cancellation and disposition reason
    "description": "DESC-SECRET-CHARLIE",  # of an adverse event of kind "other"
    "enrolled_typo": date(2023, 1, 23),    # enrolled_on before its correction: only in the trail
    "cancelled_first": date(2023, 2, 6),   # a plan called off a week before the first infusion
    "planned_first": date(2024, 3, 4),     # a plan never given
    "voided_first": date(2024, 9, 2),      # a series entered in error, with an infusion, then voided
    "voided_score_day": 60,                # a depression score voided (days after the first infusion)
    "misdated_score_day": 91,              # the day-90 score, first entered on day 91, then corrected
    "disposition": "withdrawn",
    "disposition_on": date(2025, 3, 14),
}
#: Questionnaire days of the planted patient, relative to the first infusion.
PLANT_DAYS = (-7, 0, 4, 31, 90)


def plant_dates() -> list[date]:
    f = PLANT["first_infusion"]
    days = [f + timedelta(days=d) for d in PLANT_DAYS]
    return [PLANT["enrolled_on"], f, PLANT["last_infusion"], *days,
            *(f + timedelta(days=i) for i in range(5)),
            PLANT["enrolled_typo"], PLANT["cancelled_first"], PLANT["planned_first"], PLANT["voided_first"],
            f + timedelta(days=PLANT["voided_score_day"]), f + timedelta(days=PLANT["misdated_score_day"]),
            PLANT["disposition_on"]]


def date_spellings(day: date) -> list[str]:
    """Ways a date could leak: ISO, compact, US and European, and Excel's serial number."""
    serial = (day - date(1899, 12, 30)).days
    return [day.isoformat(), f"{day:%Y%m%d}", f"{day.month}/{day.day}/{day.year}", f"{day:%m/%d/%Y}",
            f"{day:%d/%m/%Y}", f"{day:%d.%m.%Y}", f">{serial}<", f",{serial},", f'"{serial}"']


@dataclass
class Planted:
    path: Path
    users: dict[str, auth.User]
    patient_ids: list[str]

    def open(self):
        return storage.open_db(self.path)


def build_planted(path: Path, *, n_synthetic: int = 300) -> Planted:
    """A synthetic cohort plus one planted real-looking patient with notes, events, alerts and a login, and
    a record that was corrected: a cancelled plan, a plan never given, a voided series, a voided score, a
    misdated score corrected, a corrected enrolment date and adverse event, and a withdrawal."""
    db = storage.connect(path)
    storage.set_meta(db, "secret", SECRET)
    synthetic.write_cohort(db, synthetic.generate_cohort(n_synthetic, seed=11, end=END))
    admin = auth.create_first_admin(db, "ada.admin", PASSWORD, now=NOW)
    users = {"admin": admin}
    for name, role in (("cleo.clinician", "clinician"), ("quinn.qi", "qi")):
        users[role] = auth.create_user(db, admin, username=name, role=role, password=PASSWORD, now=NOW)
        # Accounts an admin creates must change their password first; these sign straight in.
        storage.update_user(db, users[role].id, must_change_password=False)
    p, staff, note = PLANT["patient_id"], PLANT["staff"], PLANT["note"]
    reason, description = PLANT["reason"], PLANT["description"]
    storage.add_patient(db, patient_id=p, diagnosis=PLANT["diagnosis"], sex="F",
                        birth_year=PLANT["birth_year"], enrolled_on=PLANT["enrolled_typo"], entered_by=staff)
    storage.correct_record(db, "patient", p, changes={"enrolled_on": PLANT["enrolled_on"]},
                           reason=f"{reason} enrolment date", by=staff, today=END)
    cancelled = storage.plan_series(db, patient_id=p, first_infusion=PLANT["cancelled_first"],
                                    planned_infusions=5, notes=f"{note} cancelled plan", entered_by=staff,
                                    today=END)
    storage.cancel_series(db, cancelled, reason=f"{reason} cancelled", by=staff)
    series = storage.add_series(db, patient_id=p, first_infusion=PLANT["first_infusion"],
                                last_infusion=PLANT["last_infusion"], infusions=5, protocol="5-day 0.5 mg/kg",
                                dose_mg_per_kg=0.5, notes=f"{note} series", entered_by=staff)
    vitals = {"bp_systolic_before": 128, "bp_diastolic_before": 81, "bp_systolic_after": 152,
              "bp_diastolic_after": 94, "heart_rate": 77, "sedation_rass": -2}
    for i in range(5):
        event = {"kind": "nausea", "severity": "mild", "action": "slowed", "notes": f"{note} event"}
        other = {"kind": "other", "severity": "moderate", "action": "medication",
                 "description": f"{description} typo", "notes": f"{note} other event"}
        storage.add_infusion(db, series_id=series, infused_on=PLANT["first_infusion"] + timedelta(days=i),
                             dose_mg_per_kg=0.5, duration_min=40, notes=f"{note} infusion {i}",
                             entered_by=staff, adverse_events=[event, other] if i == 2 else [event], **vitals)
    [other_id] = storage.load_adverse_events(db, p).query("kind == 'other'")["event_id"]
    storage.correct_record(db, "adverse_event", int(other_id),
                           changes={"description": f"{description} event"}, reason=f"{reason} description",
                           by=staff)
    storage.plan_series(db, patient_id=p, first_infusion=PLANT["planned_first"], planned_infusions=3,
                        notes=f"{note} plan never given", entered_by=staff, today=END)
    voided = storage.add_series(db, patient_id=p, first_infusion=PLANT["voided_first"],
                                last_infusion=PLANT["voided_first"] + timedelta(days=2), infusions=3,
                                protocol="3-day 0.5 mg/kg", dose_mg_per_kg=0.5, notes=f"{note} voided series",
                                entered_by=staff)
    storage.add_infusion(db, series_id=voided, infused_on=PLANT["voided_first"], dose_mg_per_kg=0.5,
                         duration_min=40, notes=f"{note} voided infusion", entered_by=staff, **vitals,
                         adverse_events=[{"kind": "other", "severity": "severe", "action": "stopped",
                                          "description": f"{description} voided"}])
    storage.void_record(db, "series", voided, reason=f"{reason} wrong patient", by=staff)
    ids = []
    for day, t in zip(PLANT_DAYS, (71.3, 70.7, 64.1, 62.2, 66.6)):
        day = PLANT["misdated_score_day"] if day == 90 else day   # corrected below
        on = PLANT["first_infusion"] + timedelta(days=day)
        ids += storage.save_checkin(db, patient_id=p, assessed_on=on, source="clinician", entered_by=staff,
                                    scores=[
                                        {"domain": "depression", "t_score": t, "se": 2.1, "method": "table",
                                         "form": "depression_sf6a_v1.0", "raw_score": 20, "n_answered": 6,
                                         "responses": {"EDDEP04": 4, "EDDEP06": 4, "EDDEP29": 3, "EDDEP41": 3,
                                                       "EDDEP22": 3, "EDDEP36": 3}}])
    storage.correct_record(db, "assessment", ids[-1],
                           changes={"assessed_on": PLANT["first_infusion"] + timedelta(days=90)},
                           reason=f"{reason} questionnaire date", by=staff, today=END)
    wrong_day = PLANT["first_infusion"] + timedelta(days=PLANT["voided_score_day"])
    wrong_score = {"domain": "depression", "t_score": 79.9, "se": 2.1, "method": "table",
                   "form": "depression_sf6a_v1.0"}
    [wrong] = storage.save_checkin(db, patient_id=p, assessed_on=wrong_day, source="clinician",
                                   entered_by=staff, scores=[wrong_score])
    storage.void_record(db, "assessment", wrong, reason=f"{reason} another patient's form", by=staff)
    storage.set_disposition(db, p, disposition=PLANT["disposition"], on=PLANT["disposition_on"],
                            reason=f"{reason} moved away", by=staff, today=END)
    [alert] = storage.add_alerts(db, [{"patient_id": p, "assessment_id": ids[0], "domain": "depression",
                                       "t_score": 71.3, "priority": "high", "reason": "severe"}], now=NOW)
    storage.acknowledge_alert(db, alert, by="cleo.clinician", now=NOW, note=f"{note} alert")
    auth.create_user(db, admin, username=PLANT["username"], role="patient", password=PASSWORD, patient_id=p,
                     email=PLANT["email"], display_name=PLANT["display_name"], now=NOW)
    patient_ids = storage.load_patients(db)["patient_id"].tolist()
    db.close()
    return Planted(path, users, patient_ids)


def file_texts(data: bytes, name: str) -> dict[str, str]:
    """Every part of an exported file as text: ZIP members (CSV, README, Parquet decoded and raw),
    the XML parts of an Excel workbook, or the JSON itself."""
    if name.endswith(".json"):
        return {name: data.decode("utf-8")}
    out: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # .xlsx is a ZIP of XML parts too
        for member in archive.namelist():
            raw = archive.read(member)
            if member.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(raw))
                frame = table.to_pandas()
                out[member] = "\n".join([json.dumps({k.decode(): v.decode() for k, v in
                                                     (table.schema.metadata or {}).items()}),
                                         frame.to_csv(index=False), raw.decode("latin-1")])
            elif member.startswith("xl/worksheets/"):
                # Cell references (r="A1929") are the sheet's structure, not content: searching them for
                # a birth year such as 1929 would find row 1929.
                out[member] = re.sub(r' (r|spans)="[^"]*"', "", raw.decode("utf-8"))
            else:
                out[member] = raw.decode("utf-8")
    return out


def read_tables(data: bytes, name: str) -> dict[str, pd.DataFrame]:
    """The tables of an exported file as DataFrames (CSV or Parquet ZIP, or Excel workbook)."""
    if name.endswith(".xlsx"):
        sheets = pd.read_excel(io.BytesIO(data), sheet_name=None, dtype=object)
        return {k: v for k, v in sheets.items() if k != "README"}
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.namelist():
            stem, _, ext = member.rpartition(".")
            if ext == "csv":
                out[stem] = pd.read_csv(io.BytesIO(archive.read(member)), dtype=str, keep_default_na=False)
            elif ext == "parquet":
                out[stem] = pd.read_parquet(io.BytesIO(archive.read(member)))
    return out
