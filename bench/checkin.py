"""Patient check-ins against a cohort-sized database: 1,000 submissions, each timed on its own.

Each submission does what the check-in page does when a patient presses "Send": open a connection
(``storage.open_db``, as ``ui.data.database`` does for every call, while one idle connection stays
open as ``ui.data`` keeps one per database), score the three weekly
questionnaires, and store scores, alerts, draft removal and audit entry in one ``BEGIN IMMEDIATE``
transaction (``clinic.submit_checkin``), then close. 1,000 different patients each send today's
check-in. Run in its own process on a scratch copy of the database (``python -m bench.checkin DB``);
prints one JSON object with the median, p99 and max in milliseconds.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, date, datetime

import numpy as np

N_SUBMISSIONS = 1000


def main(db_path: str, n: int = N_SUBMISSIONS) -> dict[str, object]:
    from outcomes import auth, clinic, instruments, storage
    from outcomes.settings import load_settings

    settings = load_settings({})
    registry = instruments.default_registry()
    forms = clinic.checkin_forms(settings, registry)
    today = date.today()
    now = datetime.now(UTC)
    rng = np.random.default_rng(6)

    # Kept open during the run, as ui.data keeps the connection that migrated the database: closing the
    # per-submission connections then never checkpoints the WAL (docs/benchmarks.md).
    db = storage.connect(db_path)
    patient_ids = storage.load_patients(db)["patient_id"].tolist()
    chosen = [patient_ids[i] for i in rng.choice(len(patient_ids), size=min(n, len(patient_ids)), replace=False)]
    actors = []
    with storage.transaction(db, bump=False):  # patient logins (not timed); no password: never signed in
        for pid in chosen:
            uid = storage.add_user(db, username=f"bench.{pid.lower()}", role="patient", password_hash=None,
                                   patient_id=pid, now=now)
            actors.append(auth.User(id=uid, username=f"bench.{pid.lower()}", role="patient", patient_id=pid))

    def answers() -> dict[str, dict[str, int | None]]:
        return {f.key: {i: (None if rng.random() < 0.02 else int(rng.integers(1, 6))) for i in f.item_ids}
                for f in forms}

    times, alerts = [], 0
    for actor in actors:
        given = answers()
        started = time.perf_counter()
        conn = storage.open_db(db_path)
        try:
            result = clinic.submit_checkin(conn, actor, patient_id=actor.patient_id, answers=given,
                                           assessed_on=today, today=today, now=datetime.now(UTC),
                                           settings=settings, registry=registry)
        finally:
            conn.close()
        times.append(time.perf_counter() - started)
        alerts += result.alerts_created
    db.close()
    ms = np.array(times) * 1000
    return {"n": len(ms), "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean()), "alerts": alerts}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
