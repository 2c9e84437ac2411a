"""Figures of the reliability tests: each test records what it did (rows written, kills survived, inputs
tried) in ``artifacts/reliability/figures.json`` (git-ignored), which docs/reliability.md quotes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[2] / "artifacts" / "reliability" / "figures.json"


@pytest.fixture
def figures(request):
    """``figures(**values)`` records values for this test, with its duration, in figures.json."""
    started = time.perf_counter()
    recorded: dict = {}

    def record(**values) -> None:
        recorded.update(values)

    yield record
    if recorded:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        try:
            everything = json.loads(FIGURES.read_text())
        except (OSError, ValueError):
            everything = {}
        everything[request.node.nodeid] = {**recorded, "seconds": round(time.perf_counter() - started, 1),
                                           "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        FIGURES.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
        print(f"\n{request.node.nodeid}: {json.dumps(recorded)}")
