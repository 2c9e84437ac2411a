"""Load and fault harness shared by tests/reliability (small CI sizes) and bench/soak.py (full sizes).

Everything here goes through the app's real path: ``clinic.submit_checkin`` (scoring, alerts, audit, one
``BEGIN IMMEDIATE`` transaction) and ``importing.import_files`` (CSV parsing, all-or-nothing import). Worker
functions run in threads or in processes forked from a preloaded fork server (:func:`process_context`), so
a process costs milliseconds instead of a fresh interpreter's second of imports.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from outcomes import auth, clinic, importing, storage
from outcomes.auth import User
from outcomes.instruments import default_registry
from outcomes.settings import load_settings

SETTINGS = load_settings({})
REGISTRY = default_registry()  # loaded in the fork server, so every forked worker has it already
FORMS = clinic.checkin_forms(SETTINGS, REGISTRY)
TODAY = date(2025, 6, 30)
NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)
START = TODAY - timedelta(days=4000)  # check-in days count up from here; all in the past
SHARED = "SHARED"  # one patient every writer also checks in, on one day, replacing each other's entry
PASSWORD = "a long test password"


def process_context() -> multiprocessing.context.BaseContext:
    """A fork-server context whose server has this module (outcomes, pandas, the registry) imported.

    Forking from a clean server, not from the test process, avoids copying pytest's threads and locks.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def cheap_hashes() -> None:
    """Cheap argon2id parameters for creating accounts (this module only ever runs in tests and bench)."""
    auth.HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def user_dict(user: User) -> dict[str, Any]:
    return dataclasses.asdict(user)


def make_clinic(path: Path, patients: Iterable[str]) -> dict[str, Any]:
    """A database with an admin, a clinician and the given patients; returns the users as dicts."""
    cheap_hashes()
    db = storage.connect(path)
    admin = auth.create_first_admin(db, "ada.admin", PASSWORD, now=NOW)
    clinician = auth.create_user(db, admin, username="cleo.clinician", role="clinician", password=PASSWORD,
                                 now=NOW)
    storage.update_user(db, clinician.id, must_change_password=False)
    for pid in patients:
        storage.add_patient(db, patient_id=pid, diagnosis="CRPS", entered_by="setup", today=TODAY)
    db.close()
    return {"admin": user_dict(admin), "clinician": user_dict(clinician)}


def answers(seed: int, missing: float = 0.1) -> dict[str, dict[str, int | None]]:
    """Answers to the weekly check-in; each item is skipped with probability ``missing``."""
    rnd = random.Random(seed)
    return {f.key: {i.item_id: None if rnd.random() < missing else rnd.randint(i.min_value, i.max_value)
                    for i in f.items} for f in FORMS}


def complete_answers(seed: int) -> dict[str, dict[str, int | None]]:
    return answers(seed, missing=0.0)


# Load: many writers, one database ----------------------------------------------------------------------


def checkin_writer(path: str, actor: dict[str, Any], writer: int, n: int, shared_every: int = 10) -> dict[str, Any]:
    """Submit ``n`` check-ins as ``actor``: the writer's own patient ``W<writer>`` on day ``i``, and every
    ``shared_every``-th one for :data:`SHARED` on one common day with ``replace=True``.

    Returns what the app told the user it stored (``saved``: ``[patient, day, {domain: T}]``), every
    exception that reached the caller (``errors``; must be empty), and latencies in ms.
    """
    user = User(**actor)
    db = storage.open_db(path)
    saved, errors, latencies = [], [], []
    try:
        for i in range(n):
            shared = shared_every and i % shared_every == 0
            pid, day = (SHARED, START) if shared else (f"W{writer:02d}", START + timedelta(days=1 + i))
            started = time.perf_counter()
            try:
                result = clinic.submit_checkin(db, user, patient_id=pid, answers=answers(writer * 100_003 + i),
                                               assessed_on=day, today=TODAY, now=NOW, settings=SETTINGS,
                                               replace=bool(shared), registry=REGISTRY)
            except Exception as exc:  # noqa: BLE001 - anything that would reach a user is a failure
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            finally:
                latencies.append(1000 * (time.perf_counter() - started))
            saved.append([pid, day.isoformat(), {d.domain: d.t_score for d in result.domains if d.scored}])
    finally:
        db.close()
    return {"writer": writer, "saved": saved, "errors": errors, "latencies_ms": latencies, "pid": os.getpid()}


def verify_load(path: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Every reported check-in is stored exactly once with the reported T-scores, and nothing else is.

    Returns figures: rows written, check-ins, supersessions of the shared entry.
    """
    db = storage.open_db(path)
    try:
        conn = db.conn
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        active = storage.load_assessments(db)
        assert not active.duplicated(["patient_id", "domain", "assessed_on"]).any(), "duplicate active rows"
        own = {(pid, day, domain): t for r in results for pid, day, scores in r["saved"] if pid != SHARED
               for domain, t in scores.items()}
        stored = {(r.patient_id, f"{r.assessed_on:%Y-%m-%d}", r.domain): r.t_score
                  for r in active[active["patient_id"] != SHARED].itertuples()}
        assert stored == own, f"{len(set(own) - set(stored))} reported rows missing, " \
                              f"{len(set(stored) - set(own))} unreported rows stored"
        chain = storage.load_assessments(db, patient_id=SHARED, include_superseded=True)
        shared_reports = [scores for r in results for pid, _, scores in r["saved"] if pid == SHARED]
        for domain in {d for s in shared_reports for d in s}:
            rows = chain[chain["domain"] == domain]
            assert len(rows) == sum(domain in s for s in shared_reports), "a replaced shared entry is missing"
            assert rows["superseded_by"].isna().sum() == 1, "not exactly one active shared entry"
            links = rows["superseded_by"].dropna()
            assert links.is_unique and set(links) <= set(rows["assessment_id"]), "broken supersede chain"
        n_checkins = sum(len(r["saved"]) for r in results)
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'submit_checkin'").fetchone()[0]
        assert audited == n_checkins, f"{audited} audit entries for {n_checkins} check-ins"
        rows = conn.execute("SELECT count(*) FROM assessments").fetchone()[0]
        return {"checkins": n_checkins, "assessment_rows": rows, "shared_rows": len(chain),
                "alerts": conn.execute("SELECT count(*) FROM alerts").fetchone()[0], "audit_entries": audited}
    finally:
        db.close()


def latency_figures(results: list[dict[str, Any]]) -> dict[str, float]:
    values = sorted(x for r in results for x in r["latencies_ms"])
    if not values:
        return {}
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 1)  # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(values[-1], 1)}


# Faults: SIGKILL at random moments ------------------------------------------------------------------------

BATCH_PATIENTS = 4
CHAOS_START = date(1950, 1, 2)  # 20 days per round: 1,000 rounds end in 2004
SCORES_PER_PATIENT = 3


def batch_files(round_: int, j: int) -> dict[str, bytes]:
    """One import: BATCH_PATIENTS patients, a series each and SCORES_PER_PATIENT T-scores each."""
    ids = [f"K{round_:03d}B{j:03d}P{n}" for n in range(BATCH_PATIENTS)]
    patients = "patient_id,diagnosis,sex,birth_year\n" + "".join(f"{p},CRPS,F,1970\n" for p in ids)
    series = "patient_id,first_infusion,last_infusion,infusions,protocol\n" + "".join(
        f"{p},2024-01-08,2024-01-12,5,5-day\n" for p in ids)
    domains = ("pain_interference", "depression", "physical_function")
    scores = "patient_id,assessed_on,domain,t_score,se\n" + "".join(
        f"{p},2024-01-0{1 + k},{domains[k % 3]},{55 + k}.5,2.1\n" for p in ids for k in range(SCORES_PER_PATIENT))
    return {"patients": patients.encode(), "series": series.encode(), "scores": scores.encode()}


def _log(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())  # one small write: a kill leaves at most a partial last line


def chaos_child(path: str, actor: dict[str, Any], round_: int, log_path: str, seed: int) -> None:
    """Import batches and submit check-ins until killed; log each one after it has committed."""
    user = User(**actor)
    rnd = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    db = storage.open_db(path)
    _log(fd, "ready")
    for j in range(10_000):
        if rnd.random() < 0.5:
            _log(fd, f"start import {round_} {j}")
            importing.import_files(db, **batch_files(round_, j), entered_by="chaos", today=TODAY)
            _log(fd, f"import {round_} {j}")
        else:
            day = CHAOS_START + timedelta(days=round_ * 20 + j % 20)  # a round's days are its own
            _log(fd, f"start checkin KILL{j % 5} {day.isoformat()}")
            clinic.submit_checkin(db, user, patient_id=f"KILL{j % 5}", answers=complete_answers(seed + j),
                                  assessed_on=day, today=TODAY, now=NOW, settings=SETTINGS, replace=True,
                                  registry=REGISTRY)
            _log(fd, f"checkin KILL{j % 5} {day.isoformat()}")
        if j % 4 == 3:
            _log(fd, "start checkpoint")
            db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # so that kills also land in checkpoints
            _log(fd, "checkpoint")


def kill_once(ctx: Any, path: Path, actor: dict[str, Any], round_: int, log_path: Path,
              max_delay: float) -> dict[str, Any]:
    """Start a chaos child, SIGKILL it at a random moment after it is ready; returns what it logged."""
    log_path.unlink(missing_ok=True)
    child = ctx.Process(target=chaos_child, args=(str(path), actor, round_, str(log_path), round_ * 7919))
    child.start()
    deadline = time.monotonic() + 60
    while not (log_path.exists() and log_path.read_bytes().startswith(b"ready\n")):
        if not child.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"chaos child {round_} did not start (exit code {child.exitcode})")
        time.sleep(0.002)
    delay = random.Random(round_).uniform(0, max_delay)
    time.sleep(delay)
    alive = child.is_alive()
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL or not alive, f"chaos child exited with {child.exitcode}"
    text = log_path.read_bytes().decode()
    lines = [line for line in text.split("\n")[:-1] if line != "ready"]  # the last piece may be partial
    # The operation under way when the kill came: started, not logged as done ("" when between two).
    during = lines[-1].split()[1] if lines and lines[-1].startswith("start ") else ""
    committed = [line for line in lines if not line.startswith("start ") and line != "checkpoint"]
    return {"delay_s": delay, "committed": committed, "killed_alive": alive, "during": during}


def verify_after_kill(path: Path, committed: list[str]) -> dict[str, int]:
    """Integrity, all-or-nothing imports and check-ins, and every logged commit present."""
    db = storage.open_db(path)  # the first connection after a kill recovers the WAL
    try:
        conn = db.conn
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        per_batch = {}
        for pid, n_series, n_scores in conn.execute(
                "SELECT p.patient_id, (SELECT count(*) FROM series s WHERE s.patient_ref = p.id), "
                "(SELECT count(*) FROM assessments a WHERE a.patient_ref = p.id) FROM patients p "
                "WHERE p.patient_id GLOB 'K[0-9]*'"):
            batch = pid[:pid.index("P")]
            got = per_batch.setdefault(batch, [0, 0, 0])
            got[0] += 1
            got[1] += n_series
            got[2] += n_scores
        whole = [BATCH_PATIENTS, BATCH_PATIENTS, BATCH_PATIENTS * SCORES_PER_PATIENT]
        partial = {b: v for b, v in per_batch.items() if v != whole}
        assert not partial, f"imports partly present: {partial}"
        for line in committed:
            kind, *rest = line.split()
            if kind == "import":
                assert f"K{int(rest[0]):03d}B{int(rest[1]):03d}" in per_batch, f"committed import lost: {line}"
        checkins = conn.execute(
            "SELECT p.patient_id, a.assessed_on, count(*) FROM assessments a JOIN patients p ON p.id = a.patient_ref "
            "WHERE a.superseded_by IS NULL AND p.patient_id GLOB 'KILL*' GROUP BY 1, 2").fetchall()
        assert all(n == len(FORMS) for _, _, n in checkins), "a check-in with some domains missing"
        days = {(p, d) for p, d, _ in checkins}
        audited = {(p, json.loads(d)["assessed_on"]) for p, d in conn.execute(
            "SELECT p.patient_id, l.details FROM audit_log l JOIN patients p ON p.id = l.patient_ref "
            "WHERE l.action = 'submit_checkin' AND p.patient_id GLOB 'KILL*'")}
        assert days == audited, "check-ins and their audit entries disagree"
        for line in committed:
            kind, *rest = line.split()
            if kind == "checkin":
                assert (rest[0], rest[1]) in days, f"committed check-in lost: {line}"
        return {"imports": len(per_batch), "checkin_days": len(days)}
    finally:
        db.close()
