"""Playwright driving Debian's Chromium against a real ``streamlit run``.

``playwright install`` cannot download browsers here, so the tests use ``/usr/bin/chromium``. Without it
the tests skip on a developer machine; under ``CI=true`` a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
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


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is a browser test (``-m "not browser"`` leaves it out); nobody has to mark it."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.browser)


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


class WatchedBrowser:
    """Playwright's Browser, except that every page it opens runs :data:`RUN_WATCH` (for ``wait_for_idle``
    and ``script_run``) before any script of the app."""

    def __init__(self, browser):
        self._browser = browser

    def new_context(self, **options):
        context = self._browser.new_context(**options)
        context.add_init_script(RUN_WATCH)
        return context

    def new_page(self, **options):
        page = self._browser.new_page(**options)
        page.context.add_init_script(RUN_WATCH)
        return page

    def __getattr__(self, name):
        return getattr(self._browser, name)


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    # A loaded 2-core CI machine can take seconds per rerun; waiting longer costs nothing when it is fast.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield WatchedBrowser(b)
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


# Waiting for Streamlit's script runs --------------------------------------------------------------------
#
# ``data-test-script-state="notRunning"`` alone cannot tell that a rerun an action asked for has finished:
# right after a click it still says "notRunning" (the browser has not heard of the new run yet), and when the
# messages "running" and "finished" are handled before React draws, it never says "running" at all (a
# MutationObserver waiting for "running" then waited 60 s for nothing: test_exports.py, issue #14). The
# page therefore counts the runs the server reports on the websocket (RUN_WATCH, installed in every page
# before the app's own scripts), and the waits compare those counts with what the app has drawn.

#: Counts, in ``window.__stRuns``, the ForwardMsgs that start a script run (``new_session``) and end one
#: (``script_finished``, with its status) on the page's current websocket. Field numbers: ForwardMsg.proto.
RUN_WATCH = """(() => {
  if (window.__stRuns) return;
  const runs = window.__stRuns = {doc: Math.random(), started: 0, finished: 0, done: 0, rerunPending: false};
  const NEW_SESSION = 4, SCRIPT_FINISHED = 6;
  const FINISHED_SUCCESSFULLY = 0, FINISHED_WITH_COMPILE_ERROR = 1, FINISHED_EARLY_FOR_RERUN = 2;
  const varint = (bytes, at) => {
    let value = 0, shift = 0, byte;
    do { byte = bytes[at.i++]; value += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80);
    return value;
  };
  const inspect = (data) => {  // the top-level fields of one ForwardMsg, until its type
    if (!(data instanceof ArrayBuffer)) return;
    const bytes = new Uint8Array(data), at = {i: 0};
    while (at.i < bytes.length) {
      const tag = varint(bytes, at), field = Math.floor(tag / 8), wire = tag & 7;
      if (wire === 0) {
        const value = varint(bytes, at);
        if (field === SCRIPT_FINISHED) {
          runs.finished += 1;
          // A run stopped early for a rerun is followed by that rerun; a fragment's run is not the page's.
          runs.rerunPending = value === FINISHED_EARLY_FOR_RERUN;
          if (value === FINISHED_SUCCESSFULLY || value === FINISHED_WITH_COMPILE_ERROR) runs.done += 1;
          return;
        }
      } else if (wire === 2) {
        const length = varint(bytes, at);
        if (field === NEW_SESSION) { runs.started += 1; runs.rerunPending = false; return; }
        at.i += length;
      } else if (wire === 1) at.i += 8;
      else if (wire === 5) at.i += 4;
      else return;
    }
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      runs.socket = this;  // the app listens only to its newest socket; so does this count
      this.addEventListener('message', (event) => { if (runs.socket === this) inspect(event.data); });
    }
  };
})()"""

#: The marks ``script_run`` compares with: this document and the full runs finished so far.
_MARK = "() => window.__stRuns ? {doc: window.__stRuns.doc, done: window.__stRuns.done} : null"

#: True once the app is connected, a full run has finished since ``mark`` (since the page loaded, without
#: one), no run has started without finishing or is announced, and the app has handled every run's end and
#: drawn "notRunning". "Handled" is read from the app's own state (``scriptRunFinishedSequence``, a count of
#: the script_finished messages it has processed), which a message received but not yet drawn has not raised.
_SETTLED = """(mark) => {
  const runs = window.__stRuns, app = document.querySelector('[data-testid="stApp"]');
  if (!runs) throw new Error('RUN_WATCH is not installed in this page: open it through the browser fixture');
  if (!app || app.getAttribute('data-test-connection-state') !== 'CONNECTED'
      || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const before = mark && mark.doc === runs.doc ? mark.done : 0;
  if (runs.done <= before || runs.started > runs.finished || runs.rerunPending) return false;
  const key = Object.keys(app).find((k) => k.startsWith('__reactFiber$'));
  for (let fiber = key && app[key]; fiber; fiber = fiber.return) {
    const state = fiber.stateNode && fiber.stateNode.state;
    if (state && typeof state === 'object' && 'scriptRunFinishedSequence' in state)
      return state.scriptRunFinishedSequence >= runs.finished && state.scriptRunState === 'notRunning';
  }
  throw new Error("Streamlit's App state (scriptRunFinishedSequence) was not found above stApp: "
                  + 'the wait in tests/browser/conftest.py needs updating for this Streamlit version');
}"""

_DESCRIBE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return JSON.stringify({runs: window.__stRuns ?? null,
                         connection: app?.getAttribute('data-test-connection-state'),
                         script: app?.getAttribute('data-test-script-state')});
}"""

#: A script run on a loaded 2-core machine can take tens of seconds; the waits end as soon as it is over.
RUN_TIMEOUT = 120_000


def _wait_settled(page, mark, timeout: float, what: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(_SETTLED, arg=mark, timeout=timeout, polling=50)
    except PlaywrightTimeout as exc:
        try:
            seen = page.evaluate(_DESCRIBE)
        except Exception as unreadable:  # the page itself may be what broke
            seen = f"(unreadable: {unreadable!r})"
        raise AssertionError(f"{what} did not finish within {timeout / 1000:.0f} s; page: {seen}") from exc


def wait_for_idle(page, timeout: float = RUN_TIMEOUT) -> None:
    """Wait until the app has finished its script runs and drawn the result.

    For a page just opened (``goto``, ``reload``), or once something on the screen shows that the run an
    action caused has started. Right after an action, use ``script_run`` instead: until the browser hears
    of the new run, the previous run's end looks the same as the new one's.
    """
    _wait_settled(page, None, timeout, "the app's script run")


@contextlib.contextmanager
def script_run(page, timeout: float = RUN_TIMEOUT) -> Iterator[None]:
    """``with script_run(page): <an action that reruns the app>``; waits, after the action, until the run
    it caused (and any rerun that run asked for) has finished and is drawn.

    Only for actions that do rerun the app (a click on a button, a changed widget, a page link); an action
    that changes nothing waits out the timeout.
    """
    _wait_settled(page, None, timeout, "the script run before the action")  # nothing of an earlier one left
    mark = page.evaluate(_MARK)
    if mark is None:
        raise AssertionError("RUN_WATCH is not installed in this page: open it through the browser fixture")
    yield
    _wait_settled(page, mark, timeout, "the script run after the action")


def settle_in_page(page) -> None:
    """Let the page finish what it has already queued: one animation frame, then one task after every task
    queued so far (React runs its effects, and a component its fetches, in such tasks). Not a timer."""
    page.evaluate("""() => new Promise((resolve) => requestAnimationFrame(() => {
        const channel = new MessageChannel();
        channel.port1.onmessage = () => resolve();
        channel.port2.postMessage(null);
    }))""")


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
