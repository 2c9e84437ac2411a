"""Long soak variants of the reliability tests (issue 7), run on demand beside the CI sizes.

CI already runs the issue's sizes (16 x 500 check-ins in threads and in processes, 50 kills); a soak runs
the same checks longer, to find what is rare:

    .venv/bin/python bench/soak.py load --mode threads --writers 16 --per-writer 2000
    .venv/bin/python bench/soak.py load --mode processes --writers 16 --per-writer 2000
    .venv/bin/python bench/soak.py kill --kills 500
    .venv/bin/python bench/soak.py fuzz --examples 5000
    .venv/bin/python bench/soak.py all          # the three above with their full sizes

Each run uses a fresh temporary folder, runs the same harness and checks as tests/reliability (so a soak
failure is a failing assertion with the same message), prints its figures and appends them to
``artifacts/reliability/soak.json`` (git-ignored), which docs/reliability.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability import harness  # noqa: E402

OUT = ROOT / "artifacts" / "reliability" / "soak.json"


def record(name: str, figures: dict) -> None:
    figures = {"run": name, "at": time.strftime("%Y-%m-%d %H:%M:%S"), **figures}
    print(json.dumps(figures, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(figures) + "\n")


def load(mode: str, writers: int, per_writer: int, folder: Path) -> None:
    path = folder / "load.db"
    users = harness.make_clinic(path, [harness.SHARED, *(f"W{w:02d}" for w in range(writers))])
    started = time.perf_counter()
    if mode == "threads":
        with ThreadPoolExecutor(writers) as pool:
            results = list(pool.map(lambda w: harness.checkin_writer(str(path), users["clinician"], w, per_writer),
                                    range(writers)))
    else:
        with ProcessPoolExecutor(writers, mp_context=harness.process_context()) as pool:
            futures = [pool.submit(harness.checkin_writer, str(path), users["clinician"], w, per_writer)
                       for w in range(writers)]
            results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    errors = [e for r in results for e in r["errors"]]
    totals = harness.verify_load(path, results) if not errors else {}
    record(f"load-{mode}", {"writers": writers, "per_writer": per_writer, "errors": len(errors),
                            "first_errors": errors[:3], **totals, "seconds": round(elapsed, 1),
                            "checkins_per_s": round(writers * per_writer / elapsed, 1),
                            **harness.latency_figures(results)})
    if errors:
        raise SystemExit(f"{len(errors)} errors reached callers, e.g. {errors[0]}")


def kill(kills: int, folder: Path) -> None:
    path = folder / "kill.db"
    users = harness.make_clinic(path, [f"KILL{i}" for i in range(5)])
    ctx = harness.process_context()
    started = time.perf_counter()
    committed, during, totals = 0, {}, {}
    for round_ in range(kills):
        run = harness.kill_once(ctx, path, users["clinician"], round_, folder / "chaos.log", 0.3)
        totals = harness.verify_after_kill(path, run["committed"])
        committed += len(run["committed"])
        during[run["during"] or "between"] = during.get(run["during"] or "between", 0) + 1
    record("kill", {"kills": kills, "commits_before_kills": committed, "kills_during": during, **totals,
                    "seconds": round(time.perf_counter() - started, 1)})


def fuzz(examples: int) -> None:
    """The Hypothesis tests with ``examples`` examples each instead of CI's count."""
    started = time.perf_counter()
    env = {**os.environ, "OUTCOMES_FUZZ_EXAMPLES": str(examples)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0",
                           "tests/reliability/test_fuzz.py"], cwd=ROOT, env=env)
    record("fuzz", {"examples_per_test": examples, "passed": done.returncode == 0,
                    "seconds": round(time.perf_counter() - started, 1)})
    if done.returncode:
        raise SystemExit(done.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("load")
    p.add_argument("--mode", choices=("threads", "processes"), default="threads")
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--per-writer", type=int, default=2000)
    p = sub.add_parser("kill")
    p.add_argument("--kills", type=int, default=500)
    p = sub.add_parser("fuzz")
    p.add_argument("--examples", type=int, default=5000)
    sub.add_parser("all")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="outcomes-soak-"))
    try:
        if args.what in ("load", "all"):
            modes = ("threads", "processes") if args.what == "all" else (args.mode,)
            for mode in modes:
                (folder / mode).mkdir()
                load(mode, getattr(args, "writers", 16), getattr(args, "per_writer", 2000), folder / mode)
        if args.what in ("kill", "all"):
            (folder / "kill").mkdir()
            kill(getattr(args, "kills", 500), folder / "kill")
        if args.what in ("fuzz", "all"):
            fuzz(getattr(args, "examples", 5000))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
