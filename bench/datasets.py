"""The benchmark databases: synthetic cohorts of S, M and L patients, built once and reused.

Each database is keyed by size, seed, record end and a hash of the generator's source, so a change to
the generator builds new files instead of reusing stale ones. Files live in ``bench/.data/``
(git-ignored); a build writes to a temporary name and renames it when complete, so an interrupted
build is never reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OUTCOMES_BENCH_DATA", ROOT / "bench" / ".data"))
SIZES = {"S": 1034, "M": 10_000, "L": 100_000}
SEED = 2025
END = date(2026, 6, 30)  # last day of the synthetic record (fixed, so the files are reproducible)
PASSWORD = "benchmark password 2026"  # the benchmark databases hold synthetic patients only
CLINICIAN = "bench.clinician"


@dataclass(frozen=True)
class Dataset:
    size: str
    patients: int
    path: Path
    build_seconds: float | None  # None when reused

    def counts(self) -> dict[str, int]:
        with sqlite3.connect(self.path) as conn:
            return {t: conn.execute(q).fetchone()[0] for t, q in (
                ("patients", "SELECT count(*) FROM patients"),
                ("series", "SELECT count(*) FROM series"),
                ("scores", "SELECT count(*) FROM assessments WHERE superseded_by IS NULL"))}


def generator_version() -> str:
    """Short hash of what decides a database's content: the generator and the instrument data it scores
    with. (The scoring engine is pinned by its own tests against the published tables.)"""
    from outcomes import storage

    digest = hashlib.sha256((ROOT / "outcomes" / "synthetic.py").read_bytes())
    digest.update(repr(([m.name for m in storage.MIGRATIONS._migrations], storage.COHORT_INDEX)).encode())
    for path in sorted((ROOT / "data" / "instruments").glob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def dataset(size: str, *, log=print) -> Dataset:
    """The database of ``size`` ("S", "M" or "L"), built if it is not there yet."""
    n = SIZES[size]
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{size}-{n}p-seed{SEED}-end{END:%Y%m%d}-gen{generator_version()}.db"
    if path.exists():
        return Dataset(size, n, path, None)
    for stale in DATA.glob(f"{size}-{n}p-*.db"):  # another seed, end or generator version
        log(f"removing {stale.name}: not the current generator's")
        for suffix in ("", "-wal", "-shm"):
            Path(str(stale) + suffix).unlink(missing_ok=True)
    log(f"building the {size} database ({n:,} patients) at {path} ...")
    started = time.perf_counter()
    partial = path.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    # In a child process: generating L holds about 4 GB, which the caller should not keep.
    subprocess.run([sys.executable, "-m", "bench.datasets", str(partial), str(n)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    partial.rename(path)
    seconds = time.perf_counter() - started
    log(f"built {path.name} in {seconds:.1f} s ({path.stat().st_size / 1e6:,.0f} MB)")
    return Dataset(size, n, path, seconds)


def build(path: Path, n: int) -> None:
    from outcomes import auth, storage, synthetic

    db = storage.connect(path)
    try:
        t0 = time.perf_counter()
        cohort = synthetic.generate_cohort(n, seed=SEED, end=END)
        t1 = time.perf_counter()
        synthetic.write_cohort(db, cohort)
        t2 = time.perf_counter()
        now = datetime.now(UTC)
        admin = auth.create_first_admin(db, "bench.admin", PASSWORD, now=now)
        auth.create_user(db, admin, username=CLINICIAN, role="clinician", password=PASSWORD, now=now)
        user = storage.get_user(db, username=CLINICIAN)
        storage.update_user(db, user["id"], must_change_password=False)
        print(f"  generate_cohort {t1 - t0:.1f} s, write_cohort {t2 - t1:.1f} s, "
              f"{len(cohort.assessments):,} scores", file=sys.stderr, flush=True)
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, ready to copy
    finally:
        db.close()


def scratch_copy(ds: Dataset, target: Path) -> Path:
    """A copy to write into (the check-in benchmark), leaving the keyed file untouched."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(ds.path, target)
    return target


if __name__ == "__main__":
    build(Path(sys.argv[1]), int(sys.argv[2]))
