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
    """Every infusion series with the patient's diagnosis, sex and birth year (for filters and groups).

    One query and only the columns the analyses use: :func:`outcomes.storage.load_cohort_episodes`.
    """
    return storage.load_cohort_episodes(db)


def scores(db: Any) -> pd.DataFrame:
    """Every active T-score (``patient_id, domain, assessed_on, t_score``) in compact dtypes, read from a
    covering index: :func:`outcomes.storage.load_cohort_scores`."""
    return storage.load_cohort_scores(db)


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
