"""Many writers on one file database: every row lands, nothing is locked out, nothing is duplicated.

Each worker opens its own connection (as the app does per thread) and makes WRITES writes: check-ins of
three domains for its own patient on distinct days, and every tenth write a competing entry for one
shared patient, domain and day, so supersede chains are built under contention.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import date, timedelta

import pytest

from outcomes import storage

DOMAINS = ("pain_interference", "depression", "physical_function")  # the domains these tests write

WRITES = 200
SHARED_EVERY = 10
START = date(2020, 1, 1)


def worker(path: str, name: str) -> int:
    """Write WRITES transactions as ``name``; returns how many it made."""
    with storage.connect(path) as db:  # connect: migrate must be a harmless no-op under contention
        for i in range(WRITES):
            if i % SHARED_EVERY == 0:
                storage.save_assessment(db, patient_id="SHARED", assessed_on=START, domain="depression",
                                        t_score=40 + i / 10, method="imported", source="clinician", entered_by=name)
            else:
                storage.save_checkin(db, patient_id=name, assessed_on=START + timedelta(days=i), source="patient",
                                     entered_by=name,
                                     scores=[{"domain": d, "t_score": 50.0, "method": "imported"} for d in DOMAINS])
    return WRITES


def check(path, names: list[str], version_before: int) -> None:
    with storage.open_db(path) as db:
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        shared_writes = WRITES // SHARED_EVERY
        active = storage.load_assessments(db)
        per_patient = active.groupby("patient_id").size().to_dict()
        assert per_patient == {"SHARED": 1, **{n: (WRITES - shared_writes) * len(DOMAINS) for n in names}}
        assert not active.duplicated(["patient_id", "domain", "assessed_on"]).any()
        chain = storage.load_assessments(db, patient_id="SHARED", include_superseded=True)
        assert len(chain) == shared_writes * len(names)
        # One straight line of supersessions: every replaced row points at a different, existing row.
        links = chain["superseded_by"].dropna()
        assert len(links) == len(chain) - 1 and links.is_unique and set(links) <= set(chain["assessment_id"])
        assert storage.data_version(db) == version_before + WRITES * len(names)


def prepare(path, names: list[str]) -> int:
    with storage.open_db(path) as db:
        for name in ["SHARED", *names]:
            storage.add_patient(db, patient_id=name, entered_by="test")
        return storage.data_version(db)


@pytest.mark.slow
def test_eight_threads_write_into_one_file(db_path):
    names = [f"T{i}" for i in range(8)]
    version = prepare(db_path, names)
    with ThreadPoolExecutor(len(names)) as pool:
        done = list(pool.map(worker, [str(db_path)] * len(names), names))  # re-raises any worker's error
    assert done == [WRITES] * len(names)
    check(db_path, names, version)


def test_first_connections_race_to_create_the_schema_safely(tmp_path):
    path = tmp_path / "new" / "outcomes.db"

    def first_connect(_: int) -> tuple[int, str | None]:
        with storage.connect(path) as db:
            return storage.database_summary(db)["schema_version"], storage.get_meta(db, "secret")

    with ThreadPoolExecutor(8) as pool:
        results = set(pool.map(first_connect, range(8)))
    assert len(results) == 1 and results.pop()[0] == storage.database_summary(storage.connect(":memory:"))["schema_version"]



def test_opening_a_file_not_yet_in_wal_waits_for_its_writer(tmp_path):
    """Switching to WAL while another connection writes fails at once with "database is locked", without
    SQLite's busy handler; racing first connections to a new file hit this. ``open_db`` retries instead."""
    path = tmp_path / "rollback-journal.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, writer.execute, ["COMMIT"]).start()
    db = storage.open_db(path)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # the writer's row, committed


@pytest.mark.slow
def test_four_processes_write_into_one_file(db_path):
    names = [f"P{i}" for i in range(4)]
    version = prepare(db_path, names)
    # An executor, not a Pool: a worker that dies breaks the executor at once instead of hanging the run.
    with ProcessPoolExecutor(len(names), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(worker, str(db_path), n) for n in names]
        done = [f.result(timeout=300) for f in futures]
    assert done == [WRITES] * len(names)
    check(db_path, names, version)
