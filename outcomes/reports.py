"""Reports read from a database: the shared entry points of the cohort page and ``python -m outcomes report``.

Each function loads only what its report needs through :mod:`outcomes.storage` and hands tidy frames
to :mod:`outcomes.analysis`; nothing here computes a statistic itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from . import analysis, storage
from .settings import Settings


def episodes(db: Any) -> pd.DataFrame:
    """Every infusion series with the patient's diagnosis, sex and birth year (for filters and groups)."""
    patients = storage.load_patients(db)[["patient_id", "diagnosis", "sex", "birth_year"]]
    return storage.load_series(db).merge(patients, on="patient_id", how="left")


def scores(db: Any) -> pd.DataFrame:
    return storage.load_assessments(db)[["patient_id", "assessed_on", "domain", "t_score", "se"]]


def responders(
    db: Any, *, as_of: date, series: str, mcid: Mapping[str, float], settings: Settings
) -> pd.DataFrame:
    """The responder table (one row per domain × window) exactly as ``report responders`` prints it."""
    return analysis.responder_report(
        episodes(db), scores(db), as_of=as_of, mcid=mcid, windows=settings.windows,
        baseline_days=settings.baseline_days, series=series,
    )


RESPONDER_KEYS = ("domain", "window", "mcid", "n_eligible", "n_observed", "n_improved", "pct_observed",
                  "ci_low", "ci_high", "pct_missing_as_not_improved")


def to_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records with the CLI contract's keys; a proportion without denominator is ``null``."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return value.item() if hasattr(value, "item") else value

    return [{key: clean(row[key]) for key in RESPONDER_KEYS} for row in table.to_dict("records")]
