"""``python -m streamlit`` that counts how many script runs each browser session has in progress at once.

Run as ``python -m tests.browser.streamlit_probe run app.py …`` from the repository root.

Streamlit's "fast reruns" (its default) answer a rerun request by starting a new script thread while the
previous run is still stopping; both threads then change the same session state. Under load that lost a
tapped answer and a "Next" (issue 7, docs/reliability.md bug 8), so `.streamlit/config.toml` turns fast
reruns off. The browser tests start the app through this file, and the ``start_server`` fixture
(``conftest.AppServer.script_runs``) fails a test if any session ever had two script runs in progress at once.

The probe wraps ``ScriptRunner._run_script``, which a script thread is inside for the whole of a run
(including reruns it handles itself), and writes its counts to ``$OUTCOMES_PROBE_REPORT`` as JSON after
every change, so the report survives the server being stopped.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter

from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
from streamlit.web.cli import main

REPORT = os.environ["OUTCOMES_PROBE_REPORT"]
_lock = threading.Lock()
_running: Counter[str] = Counter()
_counts = {"runs": 0, "most_at_once": 0, "sessions_with_overlap": 0}
_overlapping: set[str] = set()
_run_script = ScriptRunner._run_script


def _write() -> None:
    partial = REPORT + ".partial"
    with open(partial, "w") as f:
        json.dump(_counts, f)
    os.replace(partial, REPORT)


def _counted_run(self: ScriptRunner, rerun_data) -> None:
    session = self._session_id
    with _lock:
        _running[session] += 1
        _counts["runs"] += 1
        _counts["most_at_once"] = max(_counts["most_at_once"], _running[session])
        if _running[session] > 1:
            _overlapping.add(session)
            _counts["sessions_with_overlap"] = len(_overlapping)
        _write()
    try:
        _run_script(self, rerun_data)
    finally:
        with _lock:
            _running[session] -= 1


ScriptRunner._run_script = _counted_run

if __name__ == "__main__":
    main(prog_name="streamlit")  # as ``streamlit/__main__.py`` does
