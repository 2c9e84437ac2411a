"""The floor: the least work behind the cohort page's numbers, in plain sqlite3 and NumPy.

Reads only the columns the page needs (each patient's series dates; patient, day and T of every
active score, from the covering index), then computes what the page shows first: the responder counts
of the primary analysis (each patient's first series) and the weekly mean T per domain. No pandas, no
validation, no options, no Streamlit: what is left is reading the rows and a few vectorised passes.
Each page timing is reported as a multiple of this floor, measured in the same run.

The result is checked against ``outcomes.reports`` (same counts, same weekly means), so the floor
does the page's work and not less.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

DOMAINS = ("pain_interference", "depression", "physical_function")
SIGN = {"pain_interference": -1.0, "depression": -1.0, "physical_function": 1.0}
MCID = {"pain_interference": 3.0, "depression": 3.5, "physical_function": 3.0}  # the "anchor" preset
WINDOWS = (("end_of_series", 0, 0, 7), ("month_1", 16, 30, 44), ("month_3", 63, 91, 119),
           ("month_6", 140, 182, 224))  # name, low, target, high: days after the last infusion
BASELINE_DAYS = 30
WEEKS = (-4, 26)


@dataclass(frozen=True)
class Floor:
    seconds: float
    read_seconds: float
    counts: dict[tuple[str, str], tuple[int, int, int]]  # (domain, window) -> eligible, observed, improved
    weekly_mean: dict[str, np.ndarray]  # domain -> mean T per week WEEKS[0]..WEEKS[1] (NaN: none)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    snapped = np.round(np.abs(x) * 10.0, 6)
    return np.copysign(np.floor(snapped + 0.5), x) / 10.0


def floor(path: Path, as_of: date) -> Floor:
    started = time.perf_counter()
    as_day = (as_of - date(1970, 1, 1)).days
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        s = np.array(conn.execute(
            "SELECT patient_ref, unixepoch(first_infusion) / 86400, unixepoch(last_infusion) / 86400 "
            "FROM series ORDER BY patient_ref, first_infusion").fetchall(), dtype=np.int64).reshape(-1, 3)
        read = time.perf_counter() - started
        ref, first, last = s[:, 0], s[:, 1], s[:, 2]
        same_next = np.append(ref[1:] == ref[:-1], False)
        end = np.minimum(np.where(same_next, np.append(first[1:], 0) - 1, as_day), as_day)
        keep = np.insert(ref[1:] != ref[:-1], 0, True) & (first <= as_day)  # first series, started by as_of
        ep_ref, F, L, E = ref[keep], first[keep], last[keep], end[keep]
        n_ep = len(ep_ref)
        episode_of = np.full(int(ref.max(initial=0)) + 1, -1, dtype=np.int64)
        episode_of[ep_ref] = np.arange(n_ep)
        nweeks = WEEKS[1] - WEEKS[0] + 1
        counts, weekly = {}, {}
        for domain in DOMAINS:
            t0 = time.perf_counter()
            rows = conn.execute(
                "SELECT patient_ref, unixepoch(assessed_on) / 86400, t_score FROM assessments "
                "INDEXED BY assessments_cohort WHERE domain = ? AND superseded_by IS NULL", [domain]).fetchall()
            a = np.array(rows, dtype=np.float64).reshape(-1, 3)
            read += time.perf_counter() - t0
            e = episode_of[a[:, 0].astype(np.int64)]
            day = a[:, 1].astype(np.int64)
            ok = e >= 0
            e, day, t = e[ok], day[ok], a[ok, 2]
            rel = day - F[e]
            inside = (day <= E[e]) & (rel >= -BASELINE_DAYS)
            # Baseline: the latest score from F - 30 to F (rows come in date order within a patient).
            cand = np.flatnonzero(inside & (rel <= 0))
            base_row = np.full(n_ep, -1, dtype=np.int64)
            np.maximum.at(base_row, e[cand], cand)
            has_base = base_row >= 0
            base_t = np.where(has_base, t[base_row], np.nan)
            is_base = np.zeros(len(t), dtype=bool)
            is_base[base_row[has_base]] = True
            rel_l = day - L[e]
            for name, low, target, high in WINDOWS:
                cand = np.flatnonzero(inside & ~is_base & (rel_l >= low) & (rel_l <= high))
                key = np.abs(rel_l[cand] - target) * 1000 + (rel_l[cand] - low)  # nearest, then earlier
                best = np.full(n_ep, np.iinfo(np.int64).max, dtype=np.int64)
                np.minimum.at(best, e[cand], key)
                won = cand[key == best[e[cand]]]
                win_t = np.full(n_ep, np.nan)
                win_t[e[won]] = t[won]
                observed = has_base & ~np.isnan(win_t)
                eligible = has_base & ((L + high <= as_day) | observed)
                with np.errstate(invalid="ignore"):
                    improved = observed & (SIGN[domain] * _round_half_away(win_t - base_t) >= MCID[domain])
                counts[(domain, name)] = (int(eligible.sum()), int(observed.sum()), int(improved.sum()))
            # Weekly mean T: one mean per episode and week, then the mean over episodes.
            week = np.floor_divide(rel, 7)
            sel = inside & (week >= WEEKS[0]) & (week <= WEEKS[1])
            cell = e[sel] * nweeks + (week[sel] - WEEKS[0])
            total = np.bincount(cell, weights=t[sel], minlength=n_ep * nweeks).reshape(n_ep, nweeks)
            number = np.bincount(cell, minlength=n_ep * nweeks).reshape(n_ep, nweeks)
            present = number > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(present, total / np.maximum(number, 1), 0.0).sum(axis=0) / present.sum(axis=0)
            weekly[domain] = means
    finally:
        conn.close()
    return Floor(time.perf_counter() - started, read, counts, weekly)


def check(result: Floor, path: Path, as_of: date) -> None:
    """Raise if the floor's numbers differ from the library's (the page's) numbers."""
    from outcomes import analysis, reports, storage
    from outcomes.settings import load_settings

    settings = load_settings({})
    db = storage.connect(path)
    try:
        episodes, scores = reports.episodes(db), reports.scores(db)
    finally:
        db.close()
    report = analysis.responder_report(episodes, scores, as_of=as_of, mcid=MCID, windows=settings.windows,
                                       baseline_days=BASELINE_DAYS)
    for row in report.to_dict("records"):
        expected = (row["n_eligible"], row["n_observed"], row["n_improved"])
        got = result.counts[(row["domain"], row["window"])]
        if got != expected:
            raise AssertionError(f"floor {row['domain']} {row['window']}: {got} != library {expected}")
    traj = analysis.trajectories(episodes, scores, as_of=as_of, weeks=WEEKS, baseline_days=BASELINE_DAYS)
    for domain in DOMAINS:
        library = traj.loc[traj["domain"] == domain, "mean_t"].to_numpy()
        if not np.allclose(library, result.weekly_mean[domain], equal_nan=True, rtol=0, atol=1e-9):
            raise AssertionError(f"floor weekly means of {domain} differ from analysis.trajectories")


def main(db_path: str, as_of: str, repeats: int = 3) -> dict[str, object]:
    path, day = Path(db_path), date.fromisoformat(as_of)
    runs = [floor(path, day) for _ in range(repeats)]
    best = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]  # the median run
    check(best, path, day)
    return {"seconds": [r.seconds for r in runs], "median": best.seconds, "read_median": best.read_seconds,
            "checked": True}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(main(sys.argv[1], sys.argv[2])))
