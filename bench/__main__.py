"""``python -m bench``: the performance benchmarks of issue 6, printed as one table with PASS/FAIL.

    .venv/bin/python -m bench                      # S, M and L (L's database is built once, ~2 min)
    .venv/bin/python -m bench --sizes S,M          # a quicker run
    .venv/bin/python -m bench --only floor,page    # some measurements only

Every measurement runs in a fresh Python process (imports, caches and memory of one never help
another). Figures are printed, never asserted: the budget column says PASS or FAIL. docs/benchmarks.md
explains each line and records the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from bench import datasets

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("floor", "report", "page", "browser", "checkin", "scoring", "reminders")

# Budgets (issue 6), on the 2-core reference machine.
WARM_RERUN_S = 0.3  # at M
COLD_FLOOR_RATIO = 3.0  # at M and L
BROWSER_TABLE_S = 2.0  # at M
CHECKIN_P99_MS = 50.0  # at M
SCORING_S = 2.0  # 1,000,000 responses
MEMORY_MB = 1500.0  # at L (1.5 GB)
REMINDERS_S = 5.0  # planning reminders at L (issue 15: "a few seconds")
EXPONENT = 1.1  # "linear or better", with room for noise


def _run(module: str, *args: str, timeout: float = 3600) -> dict:
    """Run ``python -m module args`` from the repository root; its last stdout line is JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report_cli(db: Path, as_of: date, repeats: int = 3) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "outcomes", "report", "responders", "--db", str(db), "--as-of",
                        as_of.isoformat(), "--format", "json"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return {"seconds": times, "median": sorted(times)[len(times) // 2]}


def _machine() -> dict[str, str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import numpy
    import pandas
    import streamlit

    return {"cpu": f"{cpu}, {os.cpu_count()} cores, {ram:.1f} GiB RAM",
            "system": f"{platform.system()} {platform.release()}",
            "software": f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, pandas "
                        f"{pandas.__version__}, NumPy {numpy.__version__}, Streamlit {streamlit.__version__}"}


def _exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(value) on log(patients)."""
    pts = [(math.log(n), math.log(v)) for n, v in points if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def _loaded(r: dict, step: str, run):
    """Run one step and keep the 1-minute load average before and after it (another job on the machine
    shows there: the figures of that step are then not the machine's)."""
    before = os.getloadavg()[0]
    value = run()
    r.setdefault("load", {})[step] = (round(before, 2), round(os.getloadavg()[0], 2))
    return value


def measure(sizes: list[str], steps: set[str], log) -> dict:
    today = date.today()  # the cohort page's default data cut; the floor and the report use it too
    results: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "as_of": today.isoformat(),
                     "machine": _machine(), "load_start": os.getloadavg(), "sizes": {}}
    for size in sizes:
        ds = datasets.dataset(size, log=log)
        r: dict = {"patients": ds.patients, "db": ds.path.name, "db_mb": ds.path.stat().st_size / 1e6,
                   **ds.counts()}
        if ds.build_seconds is not None:
            r["build_s"] = ds.build_seconds
        results["sizes"][size] = r
        if "floor" in steps:
            log(f"[{size}] floor ...")
            r["floor"] = _loaded(r, "floor", lambda: _run("bench.floor", str(ds.path), today.isoformat()))
        if "report" in steps:
            log(f"[{size}] report responders ...")
            r["report"] = _loaded(r, "report", lambda: _report_cli(ds.path, today))
        if "page" in steps:
            log(f"[{size}] cohort page (AppTest) ...")
            r["page"] = _loaded(r, "page", lambda: _run("bench.page_apptest", str(ds.path)))
        if steps & {"browser", "checkin"}:
            with tempfile.TemporaryDirectory(prefix=f"bench-{size}-", dir=datasets.DATA) as folder:
                scratch = datasets.scratch_copy(ds, Path(folder) / "scratch.db")
                if "browser" in steps:
                    log(f"[{size}] cohort page (Chromium) and memory ...")
                    shots = ROOT / "artifacts" / f"bench-{size}"
                    shots.parent.mkdir(exist_ok=True)
                    r["browser"] = _loaded(r, "browser",
                                           lambda: _run("bench.page_browser", str(scratch), str(shots)))
                if "checkin" in steps:
                    log(f"[{size}] 1,000 check-ins ...")
                    r["checkin"] = _loaded(r, "checkin", lambda: _run("bench.checkin", str(scratch)))
        if "reminders" in steps:
            log(f"[{size}] plan reminders ...")
            r["reminders"] = _loaded(r, "reminders", lambda: _run("bench.reminders", str(ds.path)))
    if "scoring" in steps:
        log("batch scoring of 1,000,000 responses ...")
        results["scoring"] = _run("bench.scoring")
    results["load_end"] = os.getloadavg()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def table(results: dict) -> str:
    sizes = list(results["sizes"])
    per = results["sizes"]
    rows: list[tuple[str, list[str], str, str]] = []

    def get(size: str, *path: str):
        value = per[size]
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    def line(label: str, path: tuple[str, ...], fmt=_fmt_s, budget: str = "", verdict: str = "") -> None:
        rows.append((label, [fmt(get(s, *path)) if get(s, *path) is not None else "–" for s in sizes], budget,
                     verdict))

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else "PASS" if ok else "FAIL"

    def ratio(size: str, path: tuple[str, ...]) -> float | None:
        value, base = get(size, *path), get(size, "floor", "median")
        return None if value is None or not base else value / base

    def ratio_line(label: str, path: tuple[str, ...], budget: str = "", check: tuple[str, ...] = ()) -> None:
        values = [ratio(s, path) for s in sizes]
        checked = [ratio(s, path) for s in check if s in sizes]
        ok = None if not checked or None in checked else all(v <= COLD_FLOOR_RATIO for v in checked)
        rows.append((label, ["–" if v is None else f"{v:.1f}×" for v in values], budget,
                     verdict(ok) if budget else ""))

    def at(size: str, path: tuple[str, ...], limit: float) -> str:
        value = get(size, *path) if size in sizes else None
        return verdict(None if value is None else value <= limit)

    for key in ("patients", "series", "scores"):
        rows.append((key, [f"{per[s][key]:,}" for s in sizes], "", ""))
    rows.append(("database file", [f"{per[s]['db_mb']:,.0f} MB" for s in sizes], "", ""))
    line("floor: read columns + weekly means + responder counts", ("floor", "median"))
    line("  of which reading from SQLite", ("floor", "read_median"))
    line("cohort page, AppTest: cold render", ("page", "cold_median"))
    ratio_line("  as a multiple of the floor", ("page", "cold_median"), "≤ 3× floor at M and L", ("M", "L"))
    line("cohort page, AppTest: warm rerun after a filter change (median of 7)", ("page", "warm_median"),
         budget="≤ 0.3 s at M", verdict=at("M", ("page", "warm_median"), WARM_RERUN_S))
    line("  slowest of the 7 filter changes", ("page", "warm_max"))
    line("  rerun with the query already cached", ("page", "hit"))
    ratio_line("  warm rerun as a multiple of the floor", ("page", "warm_median"))
    line("cohort page, Chromium: navigation → responder table (cold)", ("browser", "cold_table_s"),
         budget="≤ 2 s at M", verdict=at("M", ("browser", "cold_table_s"), BROWSER_TABLE_S))
    ratio_line("  as a multiple of the floor", ("browser", "cold_table_s"))
    line("cohort page, Chromium: navigation → responder table (warm, median of 5)", ("browser", "warm_table_s"))
    line("cohort page, Chromium: Trajectories tab → first chart (cold)", ("browser", "cold_chart_s"))
    line("cohort page, Chromium: Trajectories tab → first chart (warm)", ("browser", "warm_chart_s"))
    line("report responders (CLI, end to end)", ("report", "median"))
    ratio_line("  as a multiple of the floor", ("report", "median"))
    line("check-in (score + atomic write): median of 1,000", ("checkin", "median_ms"),
         fmt=lambda v: f"{v:.1f} ms")
    line("check-in: p99 of 1,000", ("checkin", "p99_ms"), fmt=lambda v: f"{v:.1f} ms", budget="≤ 50 ms at M",
         verdict=at("M", ("checkin", "p99_ms"), CHECKIN_P99_MS))
    line("Streamlit server: peak RSS serving the cohort page", ("browser", "cohort_peak_mb"),
         fmt=lambda v: f"{v:,.0f} MB", budget="< 1.5 GB at L", verdict=at("L", ("browser", "cohort_peak_mb"),
                                                                          MEMORY_MB))
    line("  peak RSS at sign-in (roster, the clinician's home page)", ("browser", "landing_peak_mb"),
         fmt=lambda v: f"{v:,.0f} MB")

    line("plan reminders: schedule, contacts, outbox (every patient by email)", ("reminders", "plan_s"),
         budget="≤ 5 s at L", verdict=at("L", ("reminders", "plan_s"), REMINDERS_S))
    line("  messages owed on the record's last day", ("reminders", "owed"), fmt=lambda v: f"{v:,}")
    line("  the same plan again (a re-run: nothing new)", ("reminders", "replan_s"))
    line("  remind --dry-run (nothing written)", ("reminders", "dry_run_s"))

    scoring = results.get("scoring")
    if scoring:  # not per size: one million responses
        blank = [""] * (len(sizes) - 1)
        rows.append(("batch scoring: score_frame on 1,000,000 responses (median of 3)",
                     [_fmt_s(scoring["median"]), *blank], "≤ 2 s", verdict(scoring["median"] <= SCORING_S)))
        # The whole command adds Python's start-up and the files to the scoring (docs/benchmarks.md).
        if "cli_parquet_median" in scoring:
            rows.append(("  python -m outcomes score, Parquet in and out, end to end (median of 3)",
                         [_fmt_s(scoring["cli_parquet_median"]), *blank], "", ""))
        if "cli_seconds" in scoring:
            rows.append(("  python -m outcomes score, CSV in and out, end to end",
                         [_fmt_s(scoring["cli_seconds"]), *blank], "", ""))

    out = []
    width = max(len(r[0]) for r in rows) + 2
    widths = [max(len(s), *(len(r[1][i]) for r in rows)) + 3 for i, s in enumerate(sizes)]
    header = (f"{'measure':<{width}}" + "".join(f"{s:>{w}}" for s, w in zip(sizes, widths))
              + f"   {'budget':<24}result")
    out += [header, "-" * len(header)]
    for label, values, budget, result in rows:
        out.append(f"{label:<{width}}" + "".join(f"{v:>{w}}" for v, w in zip(values, widths))
                   + f"   {budget:<24}{result}".rstrip())

    rows_load = [(f"load average (1 min) before/after: {step}",
                  ["{:.1f}/{:.1f}".format(*per[s]["load"][step]) if step in per[s].get("load", {}) else "–"
                   for s in sizes], "", "") for step in ("floor", "page", "browser", "checkin")]
    for label, values, budget, result in rows_load:
        out.append(f"{label:<{width}}" + "".join(f"{v:>{w}}" for v, w in zip(values, widths)))

    numbers = {s: per[s]["patients"] for s in sizes}
    fits = []
    for label, path in (("floor", ("floor", "median")), ("cold render", ("page", "cold_median")),
                        ("warm rerun", ("page", "warm_median")), ("report", ("report", "median")),
                        ("browser cold", ("browser", "cold_table_s"))):
        points = [(numbers[s], get(s, *path)) for s in sizes if get(s, *path)]
        slope = _exponent(points)
        if slope is not None:
            tail = _exponent(points[-2:]) if len(points) > 2 else None
            fits.append((label, slope, tail))
    if fits:
        out.append("")
        sizes_text = " → ".join(sizes)
        worst = max(f[1] for f in fits)
        text = ", ".join(f"{label} {slope:.2f}" + (f" ({sizes[-2]}→{sizes[-1]} {tail:.2f})" if tail else "")
                         for label, slope, tail in fits)
        out.append(f"fitted exponent of cost in patients ({sizes_text}): {text}")
        out.append(f"  largest exponent: {worst:.2f}; budget ≤ 1.1 (linear or better): {verdict(worst <= EXPONENT)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="S,M,L", help="comma-separated: S (1,034 patients), M (10,000), "
                                                         "L (100,000); default S,M,L")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps: {', '.join(STEPS)}")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    sizes = [s.strip().upper() for s in args.sizes.split(",") if s.strip()]
    steps = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = [s for s in sizes if s not in datasets.SIZES] + sorted(steps - set(STEPS))
    if unknown:
        parser.error(f"unknown size or step: {', '.join(unknown)}")

    def log(message: str) -> None:
        print(f"{datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)

    results = measure(sizes, steps, log)
    machine = results["machine"]
    print(f"python -m bench --sizes {','.join(sizes)} --only {','.join(s for s in STEPS if s in steps)}")
    print(f"{results['started']} to {results['finished']}; data cut (as of) {results['as_of']}")
    print(f"{machine['cpu']}; {machine['system']}; {machine['software']}")
    print("load average at start {:.2f} {:.2f} {:.2f}, at end {:.2f} {:.2f} {:.2f}".format(
        *results["load_start"], *results["load_end"]))
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
