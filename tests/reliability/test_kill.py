"""Issue 7, faults: a process killed with SIGKILL at random moments while it imports CSV batches and submits
check-ins (and checkpoints the WAL), ``KILLS`` times into the same database.

After each kill: ``PRAGMA integrity_check`` is ``ok`` and ``foreign_key_check`` is empty; every import batch
is wholly present or wholly absent; every check-in has all its domains and exactly its audit entry; every
import and check-in the child had seen commit before it died is still there (a killed process loses
nothing committed, synchronous=NORMAL in WAL), and the next process carries on writing.
``bench/soak.py kill`` repeats this hundreds of times.
"""

from __future__ import annotations

import os

import pytest

from tests.reliability import harness

KILLS = int(os.environ.get("OUTCOMES_KILLS", "50"))
MAX_DELAY_S = 0.3


@pytest.mark.slow
def test_sigkill_during_imports_and_checkins_never_corrupts_or_half_writes(tmp_path, figures):
    path = tmp_path / "kill.db"
    users = harness.make_clinic(path, [f"KILL{i}" for i in range(5)])
    ctx = harness.process_context()
    committed = alive_at_kill = 0
    during: dict[str, int] = {}
    totals = {}
    for round_ in range(KILLS):
        run = harness.kill_once(ctx, path, users["clinician"], round_, tmp_path / "chaos.log", MAX_DELAY_S)
        totals = harness.verify_after_kill(path, run["committed"])
        committed += len(run["committed"])
        alive_at_kill += run["killed_alive"]
        during[run["during"] or "between"] = during.get(run["during"] or "between", 0) + 1
    assert alive_at_kill == KILLS  # every kill hit a process that was still writing
    assert committed > KILLS  # and the children did get work done between kills
    assert during.get("import", 0) and during.get("checkin", 0)  # kills landed inside both kinds of write
    figures(kills=KILLS, killed_while_writing=alive_at_kill, commits_before_kills=committed,
            kills_during=during, import_batches_present=totals["imports"],
            checkin_days_present=totals["checkin_days"])
