"""Security issue, findings 1 and 2: a quality-improvement user differencing what the app lets them export or
see, to date episodes of care or to single out a patient.

Finding 1 (dates). A QI user asks for every de-identified file the app allows, at every cut it accepts (each
day of the record: the app may refuse a cut, or use another one, and says which in the file), and notes when
each pseudonymous item (an episode row, a score row, a FHIR Observation) first appears. For each patient it
then works out the set of first-infusion dates consistent with everything seen, under the rule the app
documents for what a file holds (Kerckhoffs: the rule is public, the database's secret is not):

* the committed rule ("open"): an item appears once its own date (the first infusion for an episode, the
  questionnaire's date for a score) is on or before the cut, so each item bounds the first infusion;
* the release rule (docs/privacy.md): every item of an episode appears when the episode's follow-up has
  closed (last infusion + the last window's upper bound) and the patient's secret delay R (0 to 364 days)
  has passed, so each item bounds first infusion + R.

The attacker is given more than a file shows: the exact gaps between a patient's episodes (as if linked
through next_episode_day and matching scores) and, for the release rule, the exact month each episode
reached the monthly summary tables (as if every monthly increment were attributed). The test asserts first
that the app behaves as the rule says (each item appears exactly when the rule says, and nothing in a row
changes afterwards that the rule does not explain), then that the set of dates spans at least 365 days for
every episode. On the committed code the same attack recovers every first infusion to the day.

Finding 2 (filters). On the cohort page a QI user compares "all diagnoses" with "all but X" for every X the
Diagnosis filter offers, alone and combined with each Sex choice. A free-text diagnosis held by one patient
(with a name and a phone number in it) must not be offered, and no comparison may yield a number when X is
held by 1 to 10 patients.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from outcomes import auth, exports, storage, synthetic
from outcomes.errors import OutcomesError
from outcomes.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
END = date(2025, 6, 1)                      # the record's last day
NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)  # when the attacker exports
SETTINGS = load_settings({})
YEAR = 365


def _qi_user(db) -> auth.User:
    uid = storage.add_user(db, username="quinn.qi", role="qi", password_hash=None, now=NOW)
    return auth.User(id=uid, username="quinn.qi", role="qi")


def _release_rule() -> tuple[bool, int, int]:
    """(whether the app documents the release rule, delay days D, follow-up days H)."""
    from outcomes import disclosure

    delay = getattr(disclosure, "RELEASE_DELAY_DAYS", None)
    if delay is None or not hasattr(exports, "release_cut"):
        return False, 1, 0
    return True, int(delay), int(disclosure.follow_up_days(SETTINGS.windows))


def _delay(secret: str, patient_id: str) -> int:
    from outcomes import disclosure

    return int(disclosure.release_delay(secret, patient_id)) if hasattr(disclosure, "release_delay") else 0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    path = tmp_path_factory.mktemp("differencing") / "clinic.db"
    db = storage.connect(path)
    storage.set_meta(db, "secret", "d1ff" * 16)  # fixed, so the same delays (and figures) every run
    synthetic.write_cohort(db, synthetic.generate_cohort(30, seed=5, end=END))
    user = _qi_user(db)
    db.close()
    return path, user


def _files_by_cut(db, user, days: list[date]) -> dict[str, dict]:
    """Every de-identified row-level file the app hands over, keyed by the cut it says it used.

    With the release rule the app uses the last year end on or before the day asked: the files of a sample of
    days are checked to be exactly the year end's, and each distinct cut is then read once."""
    release, _, _ = _release_rule()
    asked = days
    if release:
        cuts = sorted({exports.release_cut("dataset", d, deidentified=True).date() for d in days})
        sample = random.Random(1).sample(days, 25) + [c + timedelta(days=1) for c in cuts if c < END]
        _files_by_cut.checked = 4 * len(sample)
        for day in sample:
            for kind, fmt in (("dataset", "parquet"), ("fhir", "json")):
                got = exports.export(db, user, kind, fmt, as_of=day, settings=SETTINGS, now=NOW)
                cut = exports.release_cut(kind, day, deidentified=True)
                same = exports.export(db, user, kind, fmt, as_of=cut, settings=SETTINGS, now=NOW)
                assert got.data == same.data and got.filename == same.filename, (kind, day)
        asked = [c for c in cuts if c <= END]
    files = {}
    for day in asked:
        try:
            dataset = exports.export(db, user, "dataset", "parquet", as_of=day, settings=SETTINGS, now=NOW)
            bundle = exports.export(db, user, "fhir", "json", as_of=day, settings=SETTINGS, now=NOW)
        except OutcomesError:
            continue  # refused: the attacker learns nothing from it
        files[day] = {"episodes": dataset.tables["episodes"], "scores": dataset.tables["scores"],
                      "fhir": json.loads(bundle.data)}
    return files


def _observations(files: dict) -> tuple[dict, dict, list]:
    """Per item, the cuts at which it was present; per episode row, its values at each cut; the cuts."""
    cuts = sorted(files)
    present: dict[tuple, set] = {}
    rows: dict[tuple, dict] = {}
    for cut in cuts:
        f = files[cut]
        for r in f["episodes"].to_dict("records"):
            key = ("episode", r["pseudonym"], int(r["episode"]))
            present.setdefault(key, set()).add(cut)
            rows.setdefault(key, {})[cut] = {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in f["scores"].itertuples():
            key = ("score", r.pseudonym, int(r.episode), r.domain, int(r.day))
            present.setdefault(key, set()).add(cut)
            rows.setdefault(key, {})[cut] = (round(float(r.t_score), 1), r.used_as)
        for e in f["fhir"].get("entry", []):
            o = e["resource"]
            day = {x["url"]: x["valueInteger"] for x in o.get("extension", [])}
            key = ("fhir", o["subject"]["identifier"]["value"], o["code"]["text"], *day.values())
            present.setdefault(key, set()).add(cut)
    return present, rows, cuts


@pytest.mark.slow
def test_differencing_de_identified_files_dates_nothing_finer_than_a_year(cohort, figures):
    path, user = cohort
    db = storage.open_db(path)
    release, delay_days, follow_up = _release_rule()
    series = storage.load_series(db)
    secret = storage.get_meta(db, "secret")
    first_day = series["first_infusion"].min().date() - timedelta(days=2)
    days = [first_day + timedelta(days=i) for i in range((END - first_day).days + 1)]
    files = _files_by_cut(db, user, days)
    present, rows, cuts = _observations(files)

    # The truth, and what the worst-case attacker is given besides the files: the gaps between a patient's
    # episodes, and (release rule) the month each episode reached the monthly summaries.
    truth = {}
    for pid, mine in series.groupby("patient_id"):
        mine = mine.sort_values("first_infusion")
        f1 = mine["first_infusion"].iloc[0]
        truth[exports.pseudonym(secret, pid)] = {
            "pid": pid, "f1": f1, "R": _delay(secret, pid) if release else 0,
            "gap": {int(n): (f - f1).days for n, f in zip(mine["series_number"], mine["first_infusion"])},
            "closes": {int(n): (last - f1).days + follow_up for n, last in zip(mine["series_number"],
                                                                               mine["last_infusion"])}}

    def offset(key) -> int:
        """Days from the patient's first infusion to the moment the rule says this item appears (minus R)."""
        t = truth[key[1]]
        if release:  # (FHIR Observations: _fhir_offset)
            return t["closes"][key[2]]
        if key[0] == "episode":
            return t["gap"][key[2]]
        if key[0] == "score":
            return t["gap"][key[2]] + max(key[4], 0)
        return max(key[-1], 0)

    # The rule must explain what the files showed: monotone, at the predicted cut, no unexplained change.
    unexplained = []
    low: dict[str, int] = {p: -10**9 for p in truth}    # bounds on X = f1 + R (day numbers)
    high: dict[str, int] = {p: 10**9 for p in truth}
    day_no = {c: (pd.Timestamp(c) - pd.Timestamp(0)).days for c in cuts}
    for key, seen in present.items():
        if key[1] not in truth:
            unexplained.append(("unknown subject", key))
            continue
        appear = min(seen)
        if seen != {c for c in cuts if c >= appear}:
            unexplained.append(("disappeared", key))
        before = [c for c in cuts if c < appear]
        a = offset(key) if key[0] != "fhir" or not release else None
        if key[0] == "fhir" and release:
            a = _fhir_offset(truth[key[1]], key[-1], files, key, appear)
            if a is None:
                continue
        low[key[1]] = max(low[key[1]], (day_no[before[-1]] - a + 1) if before else -10**9)
        high[key[1]] = min(high[key[1]], day_no[appear] - a)
        history = rows.get(key, {})
        if release and key[0] == "episode":
            changed = {k for c in history for k, v in history[c].items() if v != history[appear][k]}
            # A pooled category is named once enough patients holding it have been released (counts only
            # grow): that dates the others' releases, which the rule covers, not this episode.
            for column in {"diagnosis", "protocol"} & changed:
                values = [history[c][column] for c in sorted(history)]
                named = [v for v in values if v != exports.OTHER]
                if values[0] != exports.OTHER or len(set(named)) != 1 or values[-len(named):] != named:
                    unexplained.append(("category changed", key, column, values))
            if changed - {"next_episode_day", "disposition", "diagnosis", "protocol"}:
                unexplained.append(("row changed", key, sorted(changed)))
        if release and key[0] == "score" and len({v for v in history.values()}) > 1:
            unexplained.append(("score changed", key))
    if release:  # the monthly summaries: the attacker is told each episode's release month
        for p, t in truth.items():
            for n in t["closes"]:
                released_on = t["f1"] + pd.Timedelta(days=t["closes"][n] + t["R"])
                month_start = released_on.to_period("M").start_time
                month_end = released_on.to_period("M").end_time.normalize()
                x_low = (month_start - pd.Timestamp(0)).days - t["closes"][n]
                x_high = (month_end - pd.Timestamp(0)).days - t["closes"][n]
                low[p], high[p] = max(low[p], x_low), min(high[p], x_high)

    spans, exact, consistent = [], 0, True
    for p, t in truth.items():
        if not any(k[1] == p for k in present):
            continue  # never in any file: nothing to date
        x_true = (t["f1"] - pd.Timestamp(0)).days + t["R"]
        consistent &= low[p] <= x_true <= high[p]
        lo, hi = low[p] - (delay_days - 1), high[p]
        width = min(hi, 10**8) - max(lo, -10**8) + 1
        spans.append(width)
        exact += width == 1
    figures(rule="release" if release else "open",
            exports=len(files) * 2 + getattr(_files_by_cut, "checked", 0), cuts=len(cuts),
            patients_seen=len(spans), episodes_seen=len({k for k in present if k[0] == "episode"}),
            dated_to_the_day=exact, narrowest_span_days=min(spans),
            median_span_days=float(np.median(spans)), unexplained=len(unexplained))
    assert unexplained == [], unexplained[:10]
    assert consistent, "the files did not follow the documented rule"
    assert spans and min(spans) >= YEAR, (f"{exact} of {len(spans)} patients' first infusions recovered to "
                                          f"the day; narrowest set {min(spans)} days")
    db.close()


def _fhir_offset(t: dict, study_day: int, files: dict, key, appear) -> int | None:
    """Release rule: an Observation belongs to the earliest episode of the patient whose fixed span (baseline
    period to the close of follow-up) holds its day and that is in the file where it first appears."""
    episodes = files[appear]["episodes"]
    mine = sorted(int(n) for n in episodes.loc[episodes["pseudonym"] == key[1], "episode"])
    for n in mine:
        start = t["gap"][n] - SETTINGS.baseline_days
        nxt = t["gap"].get(n + 1)
        end = min(t["closes"][n], nxt - 1) if nxt is not None else t["closes"][n]
        if start <= study_day <= end:
            return t["closes"][n]
    return None


@pytest.mark.slow
def test_the_monthly_summary_counts_exactly_the_released_episodes(cohort):
    """The aggregates follow the same rule as the row-level files: a month's tables differ from the last
    month's only by whole episodes released that month (what the attacker above was handed)."""
    release, _, follow_up = _release_rule()
    if not release:
        pytest.fail("the app has no release rule: summary tables count every episode up to any day")
    path, user = cohort
    db = storage.open_db(path)
    series, secret = storage.load_series(db), storage.get_meta(db, "secret")
    for cut in [d for d in pd.date_range("2022-01-01", END, freq="ME")][::3]:
        for analysis_set in ("all", "first"):
            try:
                file = exports.export(db, user, "summary", "csv", as_of=cut.date(), series=analysis_set,
                                      settings=SETTINGS, now=NOW)
            except OutcomesError as refused:  # all series with 1 to 10 repeat series released: refused
                assert analysis_set == "all" and "first series" in str(refused)
                continue
            t1 = file.tables["table1"].set_index(["characteristic", "value"])
            shown = t1.loc[("Episodes", "analysis set"), "n"]
            counted = [r for r in series.itertuples() if analysis_set == "all" or r.series_number == 1]
            expected = sum(r.last_infusion + pd.Timedelta(days=follow_up + _delay(secret, r.patient_id))
                           <= cut for r in counted)
            assert shown == (str(expected) if expected > 10 or expected == 0 else "≤10"), (cut, analysis_set)
    db.close()


# Finding 2: the QI cohort page's filters ----------------------------------------------------------------

PAGE = str(ROOT / "app_pages" / "cohort.py")
JANE = "Erythromelalgia - Jane Roe, 555-0100"
GROUPS = {"Fibromyalgia": 16, "Neuropathic pain": 14, "Headache disorder": 4, JANE: 1}


@pytest.fixture(scope="module")
def small_groups(tmp_path_factory):
    """35 patients treated three years ago (so every rule includes them), in diagnosis groups of 16, 14, 4 and
    a single patient whose diagnosis was typed with a name and a phone number."""
    path = tmp_path_factory.mktemp("filters") / "clinic.db"
    db = storage.connect(path)
    rng = np.random.default_rng(3)
    start = date.today() - timedelta(days=3 * YEAR)
    n = 0
    for diagnosis, size in GROUPS.items():
        for _ in range(size):
            n += 1
            pid = f"P{n:03d}"
            storage.add_patient(db, patient_id=pid, diagnosis=diagnosis, sex="F" if n % 3 else "M",
                                birth_year=1960 + n % 30, entered_by="x")
            first = start + timedelta(days=int(rng.integers(0, 60)))
            storage.add_series(db, patient_id=pid, first_infusion=first,
                               last_infusion=first + timedelta(days=4), infusions=5,
                               protocol="5-day 0.5 mg/kg", dose_mg_per_kg=0.5, entered_by="x")
            base = float(rng.normal(62, 5))
            for day in (-3, 4, 30, 91, 182):
                for domain, sign in (("pain_interference", -1), ("depression", -1), ("physical_function", 1)):
                    start_t = base if domain != "physical_function" else 100 - base
                    t = start_t + (0 if day < 0 else sign * float(rng.normal(4, 4)))
                    storage.save_assessment(db, patient_id=pid, assessed_on=first + timedelta(days=day),
                                            domain=domain, t_score=round(min(max(t, 20), 80), 1),
                                            method="imported", source="import", entered_by="x")
    user = _qi_user(db)
    db.close()
    return path, user


def _open(path, user, monkeypatch) -> AppTest:
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("OUTCOMES_DB_PATH", str(path))
    monkeypatch.syspath_prepend(str(ROOT))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["auth.user"] = user
    return at.run()


def _responders(at: AppTest) -> pd.DataFrame | None:
    """The responder table as numbers (None when the page shows none); a marker is NaN."""
    if not at.dataframe:
        return None
    table = at.dataframe[0].value

    def split(column, i):
        return pd.to_numeric(table[column].str.split(" / ").str[i].str.replace(",", ""), errors="coerce")

    return pd.DataFrame({"improved": split("Improved / observed", 0),
                         "observed": split("Observed / eligible", 0),
                         "eligible": split("Observed / eligible", 1)})


@pytest.mark.slow
def test_no_filter_singles_out_a_patient(small_groups, monkeypatch, figures):
    path, user = small_groups
    at = _open(path, user, monkeypatch)
    assert not at.exception
    offered = at.multiselect(key="cohort.diagnosis").options
    sexes = at.multiselect(key="cohort.sex").options
    free_text = [o for o in offered if "Jane" in o or "555" in o]
    singled_out = []
    for sex in [None, *sexes]:
        at.multiselect(key="cohort.sex").set_value([] if sex is None else [sex]).run()
        at.multiselect(key="cohort.diagnosis").set_value([]).run()
        everyone = _responders(at)
        for x in offered:
            others = [o for o in offered if o != x]
            if not others:
                continue
            at.multiselect(key="cohort.diagnosis").set_value(others).run()
            assert not at.exception
            rest = _responders(at)
            size = GROUPS.get(x, sum(v for k, v in GROUPS.items() if k not in offered))  # a pooled value
            if everyone is None or rest is None or not 1 <= size <= 10:
                continue
            difference = (everyone - rest).stack()
            if difference.notna().any():
                singled_out.append((sex, x, size, difference.dropna().astype(int).tolist()[:3]))
        at.multiselect(key="cohort.diagnosis").set_value([]).run()
    figures(diagnoses_offered=len(offered), free_text_offered=len(free_text),
            comparisons=len(offered) * (1 + len(sexes)), small_groups_revealed=len(singled_out),
            revealed=[f"sex {s or 'all'}, all but {x!r} ({n} patients): differences {d}"
                      for s, x, n, d in singled_out])
    assert free_text == [], offered
    assert singled_out == [], singled_out
    assert "Jane Roe" not in _everything_shown(at)


def _everything_shown(at: AppTest) -> str:
    parts: list[str] = []

    def walk(node) -> None:
        for child in getattr(node, "children", {}).values():
            walk(child)
        if hasattr(node, "proto"):
            parts.append(str(node.proto))

    walk(at._tree)
    return "\n".join(parts)
