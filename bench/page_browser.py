"""The cohort page in Chromium against a real ``streamlit run``, and the server's peak memory.

Run in its own process by ``python -m bench`` (``python -m bench.page_browser DB_PATH``) on a scratch
copy of a benchmark database (signing in writes to it); prints one JSON object. Steps:

1. start ``streamlit run app.py`` on the database, sign in as the benchmark clinician (the roster,
   a clinician's home page, loads first; its time is reported as ``landing_s``), then open "My
   account" (a light page), so the roster's rendering does not run into the timings;
2. **cold**: click "Cohort outcomes" in the sidebar and time until the responder table is visible
   (first cohort view since the server started: every cache empty), then click the "Trajectories"
   tab and time until its first chart is visible;
3. **warm**: go to "My account" and back, and time the responder table again (cached results;
   the median of five);
4. open every other tab (distribution of change, time to improvement, durability, completion), so
   the peak memory covers every view of the page; then the Trajectories tab again (**warm chart**:
   Plotly's JavaScript loaded, the table cached);
5. read the server's peak resident memory (``VmHWM``), reset to the current size just before step 2
   (``/proc/PID/clear_refs``), so it is the peak while serving the cohort page; the peak over the
   whole run, landing page included, is reported too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("OUTCOMES_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 900_000
TABLE = ".st-key-cohort-tab [data-testid='stDataFrame']"  # the responder table, inside the cohort page's tabs
CHART = "[data-testid='stPlotlyChart'] .main-svg"
WARM_REPEATS = 5
OTHER_TABS = ("Distribution of change", "Time to improvement", "Durability", "Follow-up completion")


def _memory(pid: int) -> dict[str, float]:
    """Current and peak resident memory of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _idle(page) -> None:
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=TIMEOUT_MS)


def _first_chart(page, tab: str, screenshot: str | None = None) -> float:
    """Open a tab of the cohort page; the seconds from the click to its first chart drawn."""
    started = time.perf_counter()
    page.get_by_role("tab", name=tab).click()
    page.wait_for_selector(CHART, state="visible", timeout=TIMEOUT_MS)
    seconds = time.perf_counter() - started
    _idle(page)
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    return seconds


def main(db_path: str, screenshots: str | None = None) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    from bench.datasets import CLINICIAN, PASSWORD

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OUTCOMES_DB_PATH": db_path,
           "OUTCOMES_DEMO_DB_PATH": str(Path(db_path).with_name("bench-demo.db"))}
    log = open(Path(db_path).with_suffix(".streamlit.log"), "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
         str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start; see the .streamlit.log next to the database")
                time.sleep(0.1)
        result["server_start_mb"] = _memory(server.pid)["VmRSS"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            _idle(page)
            page.get_by_label("Username").fill(CLINICIAN)
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            started = time.perf_counter()
            page.get_by_role("button", name="Sign in", exact=True).click()
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Cohort outcomes").wait_for(
                timeout=TIMEOUT_MS)
            _idle(page)
            result["landing_s"] = time.perf_counter() - started
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="My account").click()
            page.get_by_role("heading", name="My account").wait_for(timeout=TIMEOUT_MS)
            _idle(page)
            before = _memory(server.pid)
            result["before_cohort_mb"], result["landing_peak_mb"] = before["VmRSS"], before["VmHWM"]
            result["peak_reset"] = _reset_peak(server.pid)
            link = page.get_by_test_id("stSidebarNav").get_by_role("link", name="Cohort outcomes")

            started = time.perf_counter()
            link.click()
            page.wait_for_selector(TABLE, state="visible", timeout=TIMEOUT_MS)
            result["cold_table_s"] = time.perf_counter() - started
            _idle(page)
            if screenshots:
                page.screenshot(path=f"{screenshots}-responders.png", full_page=True)
            result["cold_chart_s"] = _first_chart(page, "Trajectories",
                                                  screenshots and f"{screenshots}-trajectories.png")

            warm = []
            for _ in range(WARM_REPEATS):
                page.get_by_test_id("stSidebarNav").get_by_role("link", name="My account").click()
                page.wait_for_selector(TABLE, state="detached", timeout=TIMEOUT_MS)
                _idle(page)
                started = time.perf_counter()
                link.click()
                page.wait_for_selector(TABLE, state="visible", timeout=TIMEOUT_MS)
                warm.append(time.perf_counter() - started)
                _idle(page)
            result["warm_table_all_s"] = warm
            result["warm_table_s"] = sorted(warm)[len(warm) // 2]

            result["tabs_s"] = {name: _first_chart(page, name) for name in OTHER_TABS}
            if screenshots:
                page.screenshot(path=f"{screenshots}-completion.png", full_page=True)
            # The first chart again, now that Plotly's JavaScript is loaded and the table is cached.
            page.get_by_role("tab", name="Responder rates").click()
            page.wait_for_selector(CHART, state="detached", timeout=TIMEOUT_MS)
            _idle(page)
            result["warm_chart_s"] = _first_chart(page, "Trajectories")
            browser.close()
        memory = _memory(server.pid)
        result["rss_mb"] = memory["VmRSS"]
        result["cohort_peak_mb"] = memory["VmHWM"]
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
