"""A synthetic demo cohort shaped like the 2025 Cleveland Clinic ketamine registry.

Tankha et al., Reg Anesth Pain Med 2025 (doi:10.1136/rapm-2025-106907): N = 1,034 adults, ketamine
0.5 mg/kg IV over 40 min on 5 consecutive days, 86.1 % completed all five infusions, mean age 50.4
(SD 15.2), 71.8 % female, moderate baseline impairment, and 20.3–46.4 % of patients improving
meaningfully depending on the measure, similar at 3 and 6 months. The per-cell numbers of the paper
are not public; the shape below is our design to sit inside that envelope (docs/methods.md).

The demo is alive relative to its last day ``end`` (the ``today`` it is seeded for; the library never
reads the clock): besides the historical cohort, a few new patients are in baseline before a series
planned in the coming weeks (some with a baseline check-in, some without) or in a series begun this week
(infusions logged day by day up to ``end``, the rest planned); patients whose series ended in the last
six months are in weekly follow-up (slots done, due, overdue, on the call list), older ones have completed
it, and a few are discharged, withdrawn or lost to follow-up. Every patient has synthetic contacts
(``example.org``/``example.com`` addresses, 555-01xx numbers) with a preferred channel and consent, and
the outbox holds the invitations and reminders of the last eight weeks, marked sent with the answer
"demo sink: not sent" (a few failed), with the staff's call outcomes: the demo never sends anything.

Nothing here is real: patient IDs start with ``DEMO-`` and the database is flagged synthetic.
Item responses are sampled from the PROMIS graded-response parameters at each patient's latent
score and then scored by the ordinary scoring engine, so the demo exercises the same code paths as
real check-ins (including pattern scoring when an item is skipped). Each patient's latest score per
domain then goes through the clinic's alert rules, as an import's do, so the demo's alert list and
roster match its scores.

Example
-------
>>> cohort = generate_cohort(n_patients=50, seed=1, end=date(2026, 11, 1))
>>> sorted(cohort.assessments["domain"].unique())
['depression', 'pain_interference', 'physical_function']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType

import numpy as np
import pandas as pd

from . import auth, clinic, followup, instruments, scoring, storage
from .errors import NotADemoDatabase
from .settings import Settings, load_settings

DIAGNOSES = MappingProxyType(
    {  # share of patients, and how much likelier than average they are to respond
        "Complex regional pain syndrome": (0.18, 1.25),
        "Fibromyalgia": (0.22, 0.85),
        "Neuropathic pain": (0.20, 1.10),
        "Chronic low back pain": (0.20, 0.90),
        "Headache disorder": (0.10, 1.00),
        "Other chronic pain": (0.10, 0.95),
    }
)
SEXES = MappingProxyType({"F": 0.718, "M": 0.277, "X": 0.005})

# The generated domains, their baseline T mean and SD, the share of episodes with a true response and
# the true change of responders and of the others (T points, in the direction of the scale) are data:
# ``synthetic`` in each domain of forms.toml (a domain without it is not generated). Tuned so that
# observed responder rates at the end of the series land near 40 % (PI), 30 % (depression) and 22 %
# (PF) with the default thresholds.
ADVERSE_EVENTS = MappingProxyType(
    {"dissociation": 0.08, "nausea": 0.06, "blood_pressure_rise": 0.03, "hallucination": 0.01}
)

COMPLETE_SERIES_SHARE = 0.861
REPEAT_SERIES_SHARE = 0.2
ITEM_SKIP_RATE = 0.02
MISSED_WEEK_RATE = 0.15
#: Median weeks of follow-up before a patient stops answering (exponential drop-out).
MEDIAN_WEEKS_BEFORE_DROPOUT = 16.0
FOLLOW_UP_WEEKS = 32
RECORD_YEARS = 3.5


#: The live part of the demo, around its last day ("today"): this share of patients is new, half of them
#: in baseline before a series planned in the next six weeks, the others in a series begun this week.
RECENT_SHARE = 0.03
PLANNED_AHEAD_DAYS = (2, 42)
#: The demo clinic has sent invitations and reminders for the slots due in these last days.
REMINDERS_SINCE_DAYS = 56
FAILED_MESSAGE_RATE = 0.04
#: Preferred channels; every demo patient has a synthetic email address and mobile number.
CHANNEL_SHARES = MappingProxyType({"email": 0.55, "sms": 0.25, "none": 0.20})
OPTED_OUT_SHARE = 0.25  # of those on "none": they had messages once and stopped them
#: Reserved for documentation (RFC 2606) and the fictional US range 555-0100..0199 (NANPA), in area codes
#: that ``phonenumbers`` accepts as mobile numbers.
DEMO_EMAIL_DOMAINS = ("example.org", "example.com")
DEMO_AREA_CODES = ("201", "202", "212", "312", "415", "617")
#: The provider's answer of every demo message: the demo never sends (its sender is a sink).
DEMO_SINK_ANSWER = "demo sink: not sent"
DEMO_STAFF = "demo-nurse"


@dataclass(frozen=True)
class DemoCohort:
    """The generated tables, in the shapes :func:`outcomes.storage.insert_cohort` takes."""

    patients: pd.DataFrame
    series: pd.DataFrame
    infusions: pd.DataFrame
    assessments: pd.DataFrame
    seed: int
    end: date
    contacts: pd.DataFrame | None = None
    outbox: pd.DataFrame | None = None
    call_outcomes: pd.DataFrame | None = None

    def describe(self) -> str:
        scored = self.assessments["t_score"].notna()
        planned = int((self.series["state"] == "planned").sum()) if "state" in self.series else 0
        text = (
            f"Synthetic cohort (seed {self.seed}, record ending {self.end}): "
            f"{len(self.patients)} patients, {len(self.series)} series ({planned} planned), "
            f"{len(self.infusions)} infusions, {int(scored.sum())} scored assessments"
        )
        if self.outbox is not None:
            text += (f", {len(self.contacts)} contacts, {len(self.outbox)} reminder messages (to a sink: none "
                     f"was sent), {len(self.call_outcomes)} call outcomes")
        return text + "."


def generate_cohort(n_patients: int = 1034, *, seed: int = 2025, end: date,
                    registry: instruments.Registry | None = None) -> DemoCohort:
    """Generate a deterministic synthetic cohort.

    Parameters
    ----------
    n_patients
        Number of patients (the registry had 1,034), of whom :data:`RECENT_SHARE` (the last enrolled)
        are new around ``end`` (none below 8 patients).
    seed
        Seed of the ``numpy.random.default_rng`` stream; the same seed and ``end`` give the same cohort.
    end
        Last day of the record ("today" of the demo): no infusion or score is dated after it, planned
        series start after it, and the demo is alive relative to it (docstring of the module).
    registry
        The forms to answer (``settings.registry``); None: the shipped ones. The generated domains and their
        parameters are each domain's ``synthetic`` table in forms.toml.
    """
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    rng = np.random.default_rng(seed)
    end_ts = pd.Timestamp(end)
    registry = instruments.registry_or_shipped(registry)
    n_recent = min(max(4, round(n_patients * RECENT_SHARE)), n_patients // 4)
    patients = _patients(rng, n_patients, end_ts)
    series = _series(rng, patients, end_ts)
    infusions = _infusions(rng, series)
    assessments = _assessments(rng, series, end_ts, registry)
    # The live part has its own stream, so the historical cohort is the same whatever is added around today.
    live = np.random.default_rng([seed, end_ts.toordinal()])
    series = _as_stored(series)
    if n_recent:
        # The last patients enrolled (the highest IDs) become the new ones: the others, and so the
        # cohort's responder rates, stay those of the same seed.
        recent = _recent(live, patients["patient_id"].iloc[-n_recent:], end_ts, registry)
        kept = ~patients["patient_id"].isin(recent[0]["patient_id"])
        patients = patients[kept]
        series = series[series["patient_id"].isin(patients["patient_id"])]
        infusions = infusions[infusions["patient_id"].isin(patients["patient_id"])]
        assessments = assessments[assessments["patient_id"].isin(patients["patient_id"])]
        patients = pd.concat([patients, recent[0]], ignore_index=True)
        series = pd.concat([series, recent[1]], ignore_index=True)
        infusions = pd.concat([infusions, recent[2]], ignore_index=True)
        assessments = pd.concat([assessments, recent[3]], ignore_index=True)
    patients = _dispositions(live, patients, series, assessments, end_ts)
    contacts = _contacts(live, patients, end_ts)
    outbox, calls = _messages(live, _demo_slots(patients, series, assessments, end_ts), contacts, end_ts)
    return DemoCohort(patients, series.drop(columns=["respond_scale"]), infusions, assessments, seed, end,
                      contacts, outbox, calls)


#: ``meta`` key set once a demo's latest scores have been through the alert rules (value: alerts raised).
DEMO_ALERTS_META = "demo_alerts"


def write_cohort(db, cohort: DemoCohort, *, now: datetime | None = None,
                 settings: Settings | None = None) -> int:
    """Write ``cohort`` into ``db``, flag the database as synthetic and raise the alerts of every patient's
    latest score per domain, all in one transaction; returns the number of alerts.

    ``now`` dates the alerts (default: the clock); ``settings`` gives the alert thresholds (default:
    :func:`outcomes.settings.load_settings`, the ones the app's check-ins use).
    """
    settings = load_settings() if settings is None else settings
    with storage.transaction(db):
        storage.insert_cohort(
            db, cohort.patients, cohort.series, cohort.infusions, cohort.assessments, synthetic=True,
            contacts=cohort.contacts, outbox=cohort.outbox, call_outcomes=cohort.call_outcomes,
        )
        now = datetime.now(UTC) if now is None else now
        alerts = clinic.raise_score_alerts(db, None, now=now, settings=settings, latest_only=True)
        _review_old_alerts(db, now=now)
        storage.set_meta(db, DEMO_ALERTS_META, str(alerts))
    return alerts


#: In the demo, alerts on scores older than this were reviewed at the time, as a clinic's would have been;
#: the newer ones are open, so the Alerts page holds what a clinic would see on a Monday morning.
DEMO_REVIEWED_AFTER_DAYS = 14


def _review_old_alerts(db, *, now: datetime) -> int:
    alerts = storage.load_alerts(db, open_only=True)
    old = alerts[alerts["assessed_on"] < pd.Timestamp(now.date()) - pd.Timedelta(days=DEMO_REVIEWED_AFTER_DAYS)]
    return storage.acknowledge_alerts(db, old["alert_id"].tolist(), by="demo-clinician", now=now,
                                      note="Reviewed at the next visit (synthetic demo entry).")


def _alert_latest_scores(db, *, now: datetime, settings: Settings) -> None:
    """Raise the alerts of a demo seeded before its scores went through the alert rules (once).

    Only latest scores that have no alert yet are checked, so an alert a demo check-in raised is not
    raised twice.
    """
    with storage.transaction(db):
        if storage.get_meta(db, DEMO_ALERTS_META) is not None:  # another session did it meanwhile
            return
        alerted = set(storage.load_alerts(db)["assessment_id"].tolist())
        latest = storage.load_alert_candidates(db, None)["assessment_id"].tolist()
        latest = [i for i in latest if i not in alerted]
        alerts = 0
        if latest:
            alerts = clinic.raise_score_alerts(db, latest, now=now, settings=settings, latest_only=True)
        storage.set_meta(db, DEMO_ALERTS_META, str(alerts))


def _patients(rng: np.random.Generator, n: int, end: pd.Timestamp) -> pd.DataFrame:
    first_day = end - pd.Timedelta(days=int(RECORD_YEARS * 365.25))
    span = (end - first_day).days
    enrolled = first_day + pd.to_timedelta(np.sort(rng.integers(0, span - 20, n)), unit="D")
    age = np.clip(np.rint(rng.normal(50.4, 15.2, n)), 18, 89).astype(int)
    names = list(DIAGNOSES)
    shares = np.array([DIAGNOSES[d][0] for d in names])
    return pd.DataFrame(
        {
            "patient_id": [f"DEMO-{i:05d}" for i in range(1, n + 1)],
            "diagnosis": rng.choice(names, n, p=shares / shares.sum()),
            "sex": rng.choice(list(SEXES), n, p=list(SEXES.values())),
            "birth_year": enrolled.year.to_numpy() - age,
            "enrolled_on": enrolled.normalize(),
        }
    )


def _series(rng: np.random.Generator, patients: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    n = len(patients)
    first = patients["enrolled_on"] + pd.to_timedelta(rng.integers(7, 21, n), unit="D")
    frames = [pd.DataFrame({"patient_id": patients["patient_id"], "first_infusion": first})]
    repeat = rng.random(n) < REPEAT_SERIES_SHARE
    second = first + pd.to_timedelta(rng.integers(120, 270, n), unit="D")
    frames.append(pd.DataFrame({"patient_id": patients["patient_id"], "first_infusion": second})[repeat])
    series = pd.concat(frames, ignore_index=True)
    series = series[series["first_infusion"] <= end - pd.Timedelta(days=5)].reset_index(drop=True)

    m = len(series)
    complete = rng.random(m) < COMPLETE_SERIES_SHARE
    count = np.where(complete, 5, rng.choice([1, 2, 3, 4], m, p=[0.15, 0.2, 0.3, 0.35]))
    series["last_infusion"] = series["first_infusion"] + pd.to_timedelta(count - 1, unit="D")
    series["infusions"] = count
    series["protocol"] = "5-day 0.5 mg/kg over 40 min"
    series["dose_mg_per_kg"] = 0.5
    series["notes"] = None
    diagnosis = series["patient_id"].map(patients.set_index("patient_id")["diagnosis"])
    # Incomplete series respond less often; the diagnosis factor spreads the KM curves apart.
    series["respond_scale"] = diagnosis.map({d: v[1] for d, v in DIAGNOSES.items()}) * np.where(complete, 1.0, 0.6)
    return series.sort_values(["patient_id", "first_infusion"], ignore_index=True)


def _infusions(rng: np.random.Generator, series: pd.DataFrame) -> pd.DataFrame:
    idx = np.repeat(series.index.to_numpy(), series["infusions"].to_numpy())
    day = np.concatenate([np.arange(k) for k in series["infusions"]] or [np.arange(0)])  # none: a tiny cohort
    infusions = pd.DataFrame(
        {
            "patient_id": series["patient_id"].to_numpy()[idx],
            "series_first_infusion": series["first_infusion"].to_numpy()[idx],
            "infused_on": series["first_infusion"].to_numpy()[idx] + pd.to_timedelta(day, unit="D").to_numpy(),
            "dose_mg_per_kg": 0.5,
            "duration_min": 40,
        }
    )
    infusions["adverse_events"] = _adverse_events(rng, len(infusions))
    return infusions


def _adverse_events(rng: np.random.Generator, n: int) -> list[list[str]]:
    kinds = list(ADVERSE_EVENTS)
    hits = rng.random((n, len(kinds))) < np.array(list(ADVERSE_EVENTS.values()))
    events: list[list[str]] = [[] for _ in range(n)]
    for i, j in zip(*np.nonzero(hits)):  # row-major: each infusion's kinds in the order above
        events[i].append(kinds[j])
    return events


def _visit_days(rng: np.random.Generator, series: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """One row per (series, visit): the day offsets from the first infusion at which a check-in happens."""
    m = len(series)
    length = (series["last_infusion"] - series["first_infusion"]).dt.days.to_numpy()
    # Slots: baseline visits at F-14, F-7 and F (before the first dose), end of series at L, then weekly.
    n_slots = 4 + FOLLOW_UP_WEEKS
    slot = np.tile(np.arange(n_slots), m)
    row = np.repeat(np.arange(m), n_slots)
    day = np.empty(m * n_slots, dtype=int)
    pre = slot < 3
    day[pre] = np.array([-14, -7, 0])[slot[pre]]
    at_end = slot == 3
    day[at_end] = length[row[at_end]]
    after = slot > 3
    jitter = rng.integers(-1, 2, after.sum())
    day[after] = length[row[after]] + 7 * (slot[after] - 3) + jitter
    attend = np.ones(m * n_slots, dtype=bool)
    attend[pre] = rng.random(pre.sum()) < np.array([0.35, 0.5, 0.9])[slot[pre]]
    complete = series["infusions"].to_numpy()[row] == 5
    attend[at_end] = rng.random(at_end.sum()) < np.where(complete[at_end], 0.97, 0.6)
    attend[after] = rng.random(after.sum()) >= MISSED_WEEK_RATE
    dropout_week = rng.exponential(MEDIAN_WEEKS_BEFORE_DROPOUT / np.log(2), m)
    attend &= ~after | ((slot - 3) <= dropout_week[row])
    visits = pd.DataFrame({"series_row": row, "day": day, "slot": slot})[attend]
    visits["assessed_on"] = series["first_infusion"].to_numpy()[visits["series_row"]] + pd.to_timedelta(
        visits["day"], unit="D"
    ).to_numpy()
    # A later series takes over; nothing after the end of the record.
    next_first = series.groupby("patient_id")["first_infusion"].shift(-1).to_numpy()[visits["series_row"]]
    keep = (visits["assessed_on"] <= end) & ~(visits["assessed_on"] >= next_first - pd.Timedelta(days=14))
    visits = visits[keep.to_numpy()]
    return visits.drop_duplicates(["series_row", "assessed_on"]).reset_index(drop=True)


def _assessments(rng: np.random.Generator, series: pd.DataFrame, end: pd.Timestamp,
                 registry: instruments.Registry) -> pd.DataFrame:
    """Weekly check-ins around every series, from latent T trajectories sampled per domain."""
    visits = _visit_days(rng, series, end)
    m = len(series)
    frames = []
    for domain in (d for d in registry.domains.values() if d.synthetic):
        p = domain.synthetic
        mean, sd = p["baseline_mean"], p["baseline_sd"]
        share, responder_change, other_change = p["responder_share"], p["responder_change"], p["other_change"]
        baseline = rng.normal(mean, sd, m)
        p_respond = np.clip(share * series["respond_scale"].to_numpy(), 0, 0.95)
        responder = rng.random(m) < p_respond
        full_change = np.where(
            responder, rng.normal(responder_change, abs(responder_change) * 0.3, m), rng.normal(other_change, 2.0, m)
        )
        # The change builds up over the series and, for some responders, fades over months.
        fade_weeks = np.where(responder & (rng.random(m) < 0.35), rng.uniform(8, 40, m), np.inf)
        r = visits["series_row"].to_numpy()
        day = visits["day"].to_numpy()
        length = np.maximum((series["last_infusion"] - series["first_infusion"]).dt.days.to_numpy()[r], 1)
        onset = np.clip(day / length, 0, 1)
        weeks_after = np.maximum(day - length, 0) / 7
        fade = np.exp(-weeks_after / fade_weeks[r])
        latent = baseline[r] + full_change[r] * onset * fade + rng.normal(0, 1.8, len(r))
        form = registry.form(p["form"])
        values = _sample_items(rng, form, (latent - 50) / 10)
        frame = pd.DataFrame(values, columns=[item.item_id for item in form.items])
        frame.insert(0, "form", form.key)
        scored = scoring.score_frame(frame, registry=registry)
        item_ids = [item.item_id for item in form.items]
        # Plain Python ints in one conversion (0 marks a skipped item; values are 1-5): per-cell NumPy
        # scalars made this loop most of the generator's time.
        answered = np.where(np.isnan(values), 0, values).astype(np.int64).tolist()
        responses = [{k: v for k, v in zip(item_ids, row) if v} for row in answered]
        frames.append(
            pd.DataFrame(
                {
                    "patient_id": series["patient_id"].to_numpy()[r],
                    "assessed_on": visits["assessed_on"].to_numpy(),
                    "domain": domain.name,
                    "form": form.key,
                    "responses": responses,
                    "raw_score": scored["raw_score"].to_numpy(),
                    "t_score": scored["t_score"].to_numpy(),
                    "se": scored["se"].to_numpy(),
                    "n_answered": scored["n_answered"].to_numpy(),
                    "method": scored["method"].to_numpy(),
                    "source": "patient",
                }
            )
        )
    assessments = pd.concat(frames, ignore_index=True)
    assessments = assessments[assessments["t_score"].notna()]
    return assessments.sort_values(["patient_id", "assessed_on", "domain"], ignore_index=True)


# The live demo: new patients around today, dispositions, contacts, messages and calls -----------------


def _stamp(days: pd.Series | pd.Timestamp, hour: int) -> pd.Series:
    """Timestamps as stored (UTC ISO text) at ``hour`` o'clock of each day."""
    moments = pd.to_datetime(pd.Series(days)) + pd.Timedelta(hours=hour)
    return moments.dt.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")


def _as_stored(series: pd.DataFrame) -> pd.DataFrame:
    """Historical series as a clinic stored them: given, recorded two weeks before their first infusion."""
    return series.assign(state="given", by_day=0, planned_first=pd.NaT, planned_last=pd.NaT,
                         planned_infusions=pd.NA,
                         entered_at=_stamp(series["first_infusion"] - pd.Timedelta(days=14), 9).to_numpy())


def _recent(rng: np.random.Generator, ids: pd.Series, end: pd.Timestamp,
            registry: instruments.Registry) -> tuple[pd.DataFrame, ...]:
    """New patients around ``end``: in baseline before a planned 5-day series (some with a baseline
    check-in, some without), or in a series begun up to three days ago, its infusions logged day by day up
    to ``end`` and the rest planned. Returns patients, series, infusions and assessments."""
    n = len(ids)
    patients = _patients(rng, n, end)
    patients["patient_id"] = ids.to_numpy()
    in_series = np.arange(n) % 2 == 1
    since = rng.integers(0, 4, n)  # days since the first infusion, for those in a series
    ahead = rng.integers(PLANNED_AHEAD_DAYS[0], PLANNED_AHEAD_DAYS[1] + 1, n)
    first = pd.Series(end + pd.to_timedelta(np.where(in_series, -since, ahead), unit="D"))
    enrolled = (first - pd.to_timedelta(rng.integers(10, 36, n), unit="D")).clip(upper=end - pd.Timedelta(days=1))
    patients["enrolled_on"] = enrolled
    planned_last = first + pd.Timedelta(days=4)
    given = np.where(in_series, since + 1, 0)
    diagnosis = patients["diagnosis"]
    series = pd.DataFrame({
        "patient_id": patients["patient_id"], "first_infusion": first,
        "last_infusion": np.where(in_series, end, planned_last).astype("datetime64[ns]"),
        "infusions": np.where(in_series, given, 5), "protocol": "5-day 0.5 mg/kg over 40 min",
        "dose_mg_per_kg": 0.5, "notes": None,
        "respond_scale": diagnosis.map({d: v[1] for d, v in DIAGNOSES.items()}).to_numpy(),
        "state": np.where(in_series, "given", "planned"), "by_day": 1, "planned_first": first,
        "planned_last": planned_last, "planned_infusions": 5, "entered_at": _stamp(enrolled, 10).to_numpy(),
    })
    given_series = series[in_series].reset_index(drop=True)
    infusions = _infusions(rng, given_series[["patient_id", "first_infusion", "infusions"]])
    # Check-ins as for any series (baseline visits two weeks, one week and just before the first infusion),
    # none after ``end``: for a planned series only baseline ones.
    visits = series.assign(last_infusion=planned_last, infusions=5)
    assessments = _assessments(rng, visits, end, registry)
    return patients, series, infusions, assessments


def _followup_inputs(patients: pd.DataFrame, series: pd.DataFrame,
                     assessments: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The generated frames as :func:`outcomes.storage.load_followup_inputs` reads them (``series_id`` is
    the row of ``series``)."""
    disposition = patients.get("disposition", pd.Series("active", index=patients.index))
    on = patients.get("disposition_on", pd.Series(pd.NaT, index=patients.index))
    return {
        "patients": pd.DataFrame({"patient_id": patients["patient_id"], "disposition": disposition,
                                  "disposition_on": pd.to_datetime(on)}),
        "series": pd.DataFrame({
            "series_id": np.arange(len(series)), "patient_id": series["patient_id"],
            "first_infusion": series["first_infusion"], "last_infusion": series["last_infusion"],
            "planned_first": pd.to_datetime(series["planned_first"]),
            "planned_last": pd.to_datetime(series["planned_last"]), "state": series["state"],
            "planned_on": pd.to_datetime(series["entered_at"].str[:10]), "entered_by": "synthetic"}),
        "days": assessments[["patient_id", "assessed_on"]].drop_duplicates(),
    }


def _demo_slots(patients: pd.DataFrame, series: pd.DataFrame, assessments: pd.DataFrame,
                end: pd.Timestamp) -> pd.DataFrame:
    slots = followup.slots(_followup_inputs(patients, series, assessments), as_of=end.date())
    return slots.assign(series_first_infusion=series["first_infusion"].to_numpy()[slots["series_id"].to_numpy(int)])


def _dispositions(rng: np.random.Generator, patients: pd.DataFrame, series: pd.DataFrame,
                  assessments: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """A few patients are no longer followed: lost to follow-up (overdue for weeks), withdrawn (during
    follow-up) and discharged (follow-up complete)."""
    inputs = _followup_inputs(patients, series, assessments)
    slots = followup.slots(inputs, as_of=end.date())
    status = followup.patient_status(slots, inputs["patients"], as_of=end.date()).set_index("patient_id")
    n = len(patients)
    out = patients.assign(disposition="active", disposition_on=pd.NaT, disposition_reason=None,
                          disposition_by=None)
    for kind, pool, share, reason in (
            ("lost_to_follow_up", ["overdue"], 0.003, "No answer to calls or messages (synthetic demo entry)."),
            ("withdrawn", ["done", "due"], 0.002, "Chose to stop follow-up (synthetic demo entry)."),
            ("discharged", ["complete"], 0.008, "Follow-up complete, back to the referring physician "
                                                "(synthetic demo entry).")):
        ids = status.index[status["status"].isin(pool) & ~status.index.isin(
            out.loc[out["disposition"] != "active", "patient_id"])].to_numpy()
        k = min(len(ids), max(1, round(n * share)))
        if not k:
            continue
        chosen = np.sort(rng.choice(ids, k, replace=False))
        if kind == "discharged":  # after the window closed, not after today
            closes = pd.to_datetime(status.loc[chosen, "window_ends"]).to_numpy()
            on = np.minimum(closes + pd.to_timedelta(rng.integers(1, 60, k), unit="D").to_numpy(), end.to_numpy())
        else:
            on = (end - pd.to_timedelta(rng.integers(1, 6, k), unit="D")).to_numpy()
        rows = out["patient_id"].isin(chosen).to_numpy()
        order = pd.Series(on, index=chosen).reindex(out.loc[rows, "patient_id"]).to_numpy()
        out.loc[rows, "disposition"] = kind
        out.loc[rows, "disposition_on"] = order
        out.loc[rows, "disposition_reason"] = reason
        out.loc[rows, "disposition_by"] = "demo-clinician"
    out["disposition_on"] = pd.to_datetime(out["disposition_on"])
    return out


def _contacts(rng: np.random.Generator, patients: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """Synthetic contacts only: ``example.org``/``example.com`` addresses and 555-01xx numbers."""
    n = len(patients)
    number = np.arange(n)
    channel = rng.choice(list(CHANNEL_SHARES), n, p=list(CHANNEL_SHARES.values()))
    opted = (channel == "none") & (rng.random(n) < OPTED_OUT_SHARE)
    consent = pd.to_datetime(patients["enrolled_on"]).clip(upper=end)
    domain = np.array(DEMO_EMAIL_DOMAINS)[number % 2]
    area = np.array(DEMO_AREA_CODES)[rng.integers(0, len(DEMO_AREA_CODES), n)]
    line = rng.integers(100, 200, n)
    opted_on = consent + pd.to_timedelta(rng.integers(20, 200, n), unit="D")
    opted_on = opted_on.clip(upper=end)
    consented = (channel != "none") | opted
    return pd.DataFrame({
        "patient_id": patients["patient_id"],
        "email": [f"{p.lower()}@{d}" for p, d in zip(patients["patient_id"], domain)],
        "phone": [f"+1{a}555{ln:04d}" for a, ln in zip(area, line)],
        "channel": channel,
        "consent_on": consent.where(consented),
        "consent_by": np.where(consented, DEMO_STAFF, None),
        "consent_how": np.where(consented, "recorded", None),
        "opted_out_at": _stamp(opted_on, 15).where(opted, None),
        "opted_out_by": np.where(opted, DEMO_STAFF, None),
        "updated_at": _stamp(opted_on.where(opted, consent), 15),
        "updated_by": DEMO_STAFF,
    })


def _messages(rng: np.random.Generator, slots: pd.DataFrame, contacts: pd.DataFrame,
              end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo outbox and call outcomes for the slots due in the last :data:`REMINDERS_SINCE_DAYS` days,
    as the reminder run and the staff would have left them: an invitation on the due day and a reminder
    two days later while the slot was undone (sent to the sink, a few failed), and calls from day 4."""
    recent = slots[(slots["due_on"] >= end - pd.Timedelta(days=REMINDERS_SINCE_DAYS)) & (slots["due_on"] <= end)
                   & (slots["status"] != "inactive")]
    done_on = recent["done_on"]
    c = contacts.set_index("patient_id").reindex(recent["patient_id"])
    reachable = (c["channel"].isin(["email", "sms"]) & (c["consent_on"] <= recent["due_on"].to_numpy())).to_numpy()
    not_before = (done_on.isna() | (done_on >= recent["due_on"])).to_numpy()
    frames = []
    for step, day in (("invitation", recent["due_on"]), ("reminder", recent["reminder_on"])):
        wanted = reachable & not_before & (day <= end).to_numpy() & (day <= recent["closes_on"]).to_numpy()
        if step == "reminder":
            wanted &= (done_on.isna() | (done_on >= day)).to_numpy()
        rows = recent[wanted]
        channel = c["channel"].to_numpy()[wanted]
        recipient = np.where(channel == "email", c["email"].to_numpy()[wanted], c["phone"].to_numpy()[wanted])
        frames.append(pd.DataFrame({
            "patient_id": rows["patient_id"].to_numpy(), "series_first_infusion": rows["series_first_infusion"].to_numpy(),
            "slot": rows["slot"].to_numpy(), "due_on": rows["due_on"].to_numpy(), "step": step, "channel": channel,
            "recipient": recipient, "day": day[wanted].to_numpy()}))
    outbox = pd.concat(frames, ignore_index=True).sort_values(["day", "patient_id", "slot", "step"],
                                                              ignore_index=True)
    m = len(outbox)
    failed = rng.random(m) < FAILED_MESSAGE_RATE
    gave_up = failed & (rng.random(m) < 0.3)
    sent = ~failed
    at = _stamp(outbox["day"], 8)
    outbox = outbox.assign(
        status=np.where(sent, "sent", np.where(gave_up, "gave_up", "failed")),
        attempts=np.where(gave_up, 3, 1),
        last_error=np.where(sent, None, "demo sink: the provider refused the message (synthetic failure)"),
        provider_id=[f"demo-{i:06d}" if ok else None for i, ok in enumerate(sent, 1)],
        provider_response=np.where(sent, DEMO_SINK_ANSWER, None),
        planned_at=at, planned_by="remind", claimed_at=at, claimed_by="remind",
        sent_at=_stamp(outbox["day"], 8).str.replace("T08:00:00", "T08:00:05").where(sent, None),
    ).drop(columns=["day"])
    # Calls: a slot still undone on its call day, or done only after it (by phone, from the paper form).
    called = recent[(recent["call_from"] <= end) & (done_on.isna() | (done_on >= recent["call_from"])).to_numpy()]
    # Of the slots done only after the call day, some were done by phone, the rest by the patient after the
    # reminder (so the completion view shows every way a questionnaire comes in).
    by_phone = (called["done_on"].notna() & (rng.random(len(called)) < 0.5)).to_numpy()
    tried = by_phone | (rng.random(len(called)) < 0.6)
    called, by_phone = called[tried], by_phone[tried]
    other = rng.choice(["no_answer", "declined", "wrong_number"], len(called), p=[0.8, 0.12, 0.08])
    outcome = np.where(by_phone, "completed_by_phone", other)
    day = called["done_on"].where(by_phone, called["call_from"])
    calls = pd.DataFrame({
        "patient_id": called["patient_id"].to_numpy(), "series_first_infusion": called["series_first_infusion"].to_numpy(),
        "slot": called["slot"].to_numpy(), "due_on": called["due_on"].to_numpy(), "outcome": outcome,
        "note": "synthetic demo entry", "recorded_at": _stamp(day, 14).to_numpy(), "recorded_by": DEMO_STAFF})
    return outbox, calls.sort_values(["recorded_at", "patient_id"], ignore_index=True)


def _sample_items(rng: np.random.Generator, form, theta: np.ndarray) -> np.ndarray:
    """Draw item values 1–5 from the graded-response model at each ``theta``; some items are skipped."""
    a = np.array([item.a for item in form.items])
    b = np.array([item.thresholds for item in form.items])  # items x 4
    # P(X >= k+1 | theta) for k = 1..4, decreasing in k; inverse-CDF sampling with one uniform per item.
    p_at_least = 1.0 / (1.0 + np.exp(-a[None, :, None] * (theta[:, None, None] - b[None, :, :])))
    u = rng.random((len(theta), len(a), 1))
    values = 1.0 + (u < p_at_least).sum(axis=2)
    skipped = rng.random(values.shape) < ITEM_SKIP_RATE
    values[skipped] = np.nan
    return values


DEMO_ACCOUNTS_META = "demo_accounts"


def prepare_demo(db, *, end: date, now, n_patients: int = 1034, seed: int = 2025,
                 settings: Settings | None = None) -> list[dict[str, str]]:
    """Make ``db`` a ready demo: seed it if empty, create one account per role, and return the accounts.

    Seeding raises the alerts of every patient's latest score per domain (:func:`write_cohort`), with the
    thresholds of ``settings`` (default: :func:`outcomes.settings.load_settings`); a demo seeded before
    that was done gets them on its next preparation.

    The demo passwords are kept readable in the demo database's ``meta`` table so the sign-in page can
    list them: the database holds synthetic patients only, and :func:`outcomes.auth.create_demo_accounts`
    refuses any database not flagged synthetic, so demo accounts never exist next to real patients.

    Raises
    ------
    NotADemoDatabase
        ``db`` already holds data that is not synthetic.
    """
    if not storage.is_synthetic(db):
        if storage.database_summary(db)["patients"]:
            raise NotADemoDatabase("This database holds patients and is not a demo database; choose "
                                        "another path for the demo (setting OUTCOMES_DEMO_DB_PATH).")
        write_cohort(db, generate_cohort(n_patients, seed=seed, end=end,
                                         registry=None if settings is None else settings.registry),
                     now=now, settings=settings)
    elif storage.get_meta(db, DEMO_ALERTS_META) is None:
        _alert_latest_scores(db, now=now, settings=load_settings() if settings is None else settings)
    stored = storage.get_meta(db, DEMO_ACCOUNTS_META)
    if stored:
        return json.loads(stored)
    accounts = [
        {"username": a.username, "password": a.password, "role": a.role, "note": a.note}
        for a in auth.create_demo_accounts(db, now=now)
    ]
    storage.set_meta(db, DEMO_ACCOUNTS_META, json.dumps(accounts))
    return accounts


def demo_accounts(db) -> list[dict[str, str]]:
    """The demo accounts of a prepared demo database (empty when it is not one)."""
    stored = storage.get_meta(db, DEMO_ACCOUNTS_META) if storage.is_synthetic(db) else None
    return json.loads(stored) if stored else []
