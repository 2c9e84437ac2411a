"""Planning reminders for a cohort: what ``python -m outcomes remind`` does before it sends anything.

On a scratch copy of the cohort's database every patient gets an email contact with consent (the
synthetic cohort has none of its own, or only a few), then ``messaging.plan`` is timed on the last day of
the synthetic record: read the schedule inputs (patients, series, days with a score), the contacts, the
steps already sent and the pending outbox; compute every open slot (``followup.slots(only_open=True)``),
the step each one is owed and the stale messages; cancel and write the outbox. Three timings, each in
this one process:

* ``plan_s``: the first plan, which writes one outbox row per message owed;
* ``replan_s``: the same plan again, which finds every message already there (a re-run of the command);
* ``dry_run_s``: ``messaging.run(dry_run=True)``, what ``remind --dry-run`` computes (no write).

``python -m bench.reminders DB`` prints one JSON object (the last line), as the other bench modules do.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def give_everyone_email(path: Path) -> int:
    """Every patient an email contact with consent (direct SQL: the benchmark's set-up, not timed)."""
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT OR REPLACE INTO contacts (patient_ref, email, channel, consent_on, consent_by, "
                     "consent_how, updated_at, updated_by) SELECT id, 'patient' || id || '@bench.example', 'email', "
                     "'2026-01-01', 'bench', 'recorded', ?, 'bench' FROM patients", [stamp])
        return conn.execute("SELECT count(*) FROM contacts WHERE channel = 'email'").fetchone()[0]


def main(db_path: str) -> dict[str, object]:
    from bench.datasets import END
    from outcomes import messaging, storage
    from outcomes.settings import load_settings

    settings = load_settings({}).replace(quiet_hours=None, timezone="UTC",
                                         public_url="https://outcomes.bench.example")
    with tempfile.TemporaryDirectory(prefix="bench-reminders-", dir=Path(db_path).parent) as folder:
        scratch = Path(folder) / "scratch.db"
        shutil.copyfile(db_path, scratch)
        contacts = give_everyone_email(scratch)
        db = storage.connect(scratch)
        now = datetime(END.year, END.month, END.day, 10, tzinfo=UTC)
        started = time.perf_counter()
        plan = messaging.plan(db, as_of=END, settings=settings, now=now)
        plan_s = time.perf_counter() - started
        started = time.perf_counter()
        again = messaging.plan(db, as_of=END, settings=settings, now=now + timedelta(minutes=5))
        replan_s = time.perf_counter() - started
        started = time.perf_counter()
        dry = messaging.run(db, as_of=END, settings=settings, now=now + timedelta(minutes=10), dry_run=True)
        dry_run_s = time.perf_counter() - started
        db.close()
    steps = plan.owed["step"].value_counts().to_dict()
    return {"contacts": contacts, "open_slots": len(plan.open_slots), "owed": len(plan.owed),
            "planned": plan.planned, "invitations": int(steps.get("invitation", 0)),
            "replanned": again.planned, "dry_run_messages": len(dry.messages), "plan_s": plan_s,
            "replan_s": replan_s, "dry_run_s": dry_run_s, "as_of": END.isoformat()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
