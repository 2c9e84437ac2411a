"""Batch scoring of 1,000,000 questionnaire responses.

``score_frame`` (the vectorised engine behind ``python -m outcomes score``, the REDCap import and the
demo generator) on one million rows of the three weekly check-in forms, 3 % of items skipped (so
about a sixth of the rows need response-pattern scoring); the median of three runs. Then the whole
``python -m outcomes score`` command on the same rows, process start included: Parquet in and out
(median of three), and CSV in and out (once; most of its time is pandas parsing and writing text).
Run as ``python -m bench.scoring``; prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_RESPONSES = 1_000_000


def responses(n: int = N_RESPONSES, seed: int = 1) -> pd.DataFrame:
    from outcomes import clinic, instruments
    from outcomes.settings import load_settings

    forms = clinic.checkin_forms(load_settings({}), instruments.default_registry())
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(forms), n)
    columns: dict[str, np.ndarray] = {}
    for k, form in enumerate(forms):
        rows = np.flatnonzero(which == k)
        for item in form.item_ids:
            values = columns.setdefault(item, np.full(n, np.nan))
            answered = rng.integers(1, 6, len(rows)).astype(float)
            answered[rng.random(len(rows)) < 0.03] = np.nan
            values[rows] = answered
    return pd.DataFrame({"form": np.array([f.key for f in forms], dtype=object)[which], **columns})


def main(repeats: int = 3, cli: bool = True) -> dict[str, object]:
    from outcomes import instruments, scoring

    registry = instruments.default_registry()
    df = responses()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = scoring.score_frame(df, registry=registry)
        times.append(time.perf_counter() - started)
    result: dict[str, object] = {"n": len(df), "seconds": times, "median": statistics.median(times),
                                 "pattern_scored": int((out["method"] == "pattern").sum()),
                                 "not_scored": int(out["t_score"].isna().sum())}
    if cli:
        with tempfile.TemporaryDirectory(prefix="bench-score-") as folder:
            parquet = [_command(df, Path(folder), ".parquet") for _ in range(repeats)]
            result.update(cli_parquet_seconds=parquet, cli_parquet_median=statistics.median(parquet),
                          cli_seconds=_command(df, Path(folder), ".csv"))
    return result


def _command(df: pd.DataFrame, folder: Path, suffix: str) -> float:
    """Seconds for ``python -m outcomes score responses<suffix> --out scored<suffix>``, end to end."""
    src, dst = folder / f"responses{suffix}", folder / f"scored{suffix}"
    if not src.exists() and suffix == ".parquet":
        df.to_parquet(src, index=False)
    elif not src.exists():
        df.to_csv(src, index=False)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "outcomes", "score", str(src), "--out", str(dst)], check=True,
                   capture_output=True, cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - started


if __name__ == "__main__":
    print(json.dumps(main()))
