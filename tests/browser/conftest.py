"""Playwright driving Debian's Chromium against a real ``streamlit run``.

``playwright install`` cannot download browsers here, so the tests use ``/usr/bin/chromium``. Without it
the tests skip on a developer machine; under ``CI=true`` a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("OUTCOMES_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts"


def _require_browser() -> None:
    if Path(CHROMIUM).exists() and shutil.which(CHROMIUM):
        return
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; under CI=true a missing browser is a failure")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """One ``streamlit run app.py`` on a free loopback port with its own database.

    Started through ``streamlit_probe``, which counts the script runs each browser session has in progress
    at once (``script_runs``); the ``start_server`` fixture fails a test in which any session had two.
    """

    def __init__(self, db_path: Path, log_path: Path, extra_env: dict[str, str] | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = db_path
        self.probe_report = log_path.with_suffix(".runs.json")
        env = {**os.environ, "OUTCOMES_DB_PATH": str(db_path),
               "OUTCOMES_DEMO_DB_PATH": str(db_path.with_name("demo.db")),
               "OUTCOMES_PROBE_REPORT": str(self.probe_report), **(extra_env or {})}
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.streamlit_probe", "run", "app.py",
             "--server.headless", "true", "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early; see {log_path}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=1) as r:
                    if r.read() == b"ok":
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"streamlit did not become healthy in 60 s; see {log_path}")

    def script_runs(self) -> dict[str, int]:
        """``runs``: script runs started; ``most_at_once``: the most one session had in progress at once."""
        if not self.probe_report.exists():
            return {"runs": 0, "most_at_once": 0, "sessions_with_overlap": 0}
        return json.loads(self.probe_report.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    # A loaded 2-core CI machine can take seconds per rerun; waiting longer costs nothing when it is fast.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    servers: list[AppServer] = []

    def start(db_path: Path | None = None, **extra_env: str) -> AppServer:
        server = AppServer(db_path or tmp_path / "app.db", tmp_path / f"streamlit-{len(servers)}.log", extra_env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        runs = server.script_runs()
        if runs["most_at_once"] > 1:
            pytest.fail(f"{runs['sessions_with_overlap']} browser session(s) had {runs['most_at_once']} "
                        "script runs in progress at once: Streamlit's fast reruns are on "
                        "(.streamlit/config.toml, docs/reliability.md bug 8)")


def wait_for_idle(page, timeout: float = 30_000) -> None:
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def question(scope, number: int, text: str = ""):
    """The answer choices of question ``number`` as a person finds them: by the question's printed number
    (and, when given, its ``text``), never by its position on the screen.

    While a page is still rendering, Streamlit can draw a later question before an earlier one (under load,
    question 3 was once the first on screen when questionnaire 2 appeared), so the n-th radio group on the
    screen is not always question n (docs/reliability.md, bug 9). The group's accessible name is its label.
    """
    return scope.get_by_role("radiogroup", name=re.compile(rf"^{number}\. {re.escape(text)}"))


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
