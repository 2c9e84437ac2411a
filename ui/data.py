"""Every ``st.cache_*`` in the app lives here.

Connections are never shared: each call opens its own (a sqlite3 connection must not cross threads, and
Streamlit reruns on a pool of threads); the one connection kept per database is never used after it
migrated the schema (see ``_ensure_schema``). What is cached are *results*, keyed by the database path and its
``data_version`` counter, so a write is visible on the next rerun without clearing anything by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd
import streamlit as st

from outcomes import analysis, figures, instruments, reports, storage, survival, synthetic
from outcomes.errors import PermissionDenied
from outcomes.settings import Settings, Window, load_settings


DEMO_QUERY_PARAM = "demo"


def settings() -> Settings:
    # Read on every rerun: cheap, and a test or an operator can change the environment between runs.
    return load_settings()


DEMO_SESSION_KEY = "demo.mode"


def demo_available() -> bool:
    """Whether this server offers the synthetic demo: before the clinic's first account exists (that is how a
    newcomer looks around), and afterwards only when the setting ``OUTCOMES_DEMO`` is true: otherwise an
    anonymous visitor could prepare the demo on a production server and load it (docs/authentication.md,
    "The first administrator")."""
    s = settings()
    if s.demo:
        return True
    with database(str(s.db_path)) as db:
        return storage.count_users(db) == 0


def demo_mode() -> bool:
    """Whether this browser tab works on the separate demo database (kept in the URL, so a reload keeps it).

    The session remembers it too: ``st.switch_page`` (and moving between pages) drops the URL's query
    parameters, and a demo session must never fall through to the clinic's database. The parameter is
    put back, so a reload after such a move still opens the demo.

    When the demo is not available (:func:`demo_available`) the parameter is ignored, and a session that was
    in the demo is emptied (signed out), so a demo account never acts on the clinic's database.
    """
    wanted = st.query_params.get(DEMO_QUERY_PARAM) == "1" or st.session_state.get(DEMO_SESSION_KEY, False)
    if not wanted:
        return False
    if not demo_available():
        if st.session_state.get(DEMO_SESSION_KEY):
            for key in list(st.session_state.keys()):
                del st.session_state[key]
        if DEMO_QUERY_PARAM in st.query_params:
            del st.query_params[DEMO_QUERY_PARAM]
        return False
    if st.query_params.get(DEMO_QUERY_PARAM) == "1":
        st.session_state[DEMO_SESSION_KEY] = True
    else:
        st.query_params[DEMO_QUERY_PARAM] = "1"
    return True


def active_db_path() -> str:
    s = settings()
    return str(s.demo_db_path if demo_mode() else s.db_path)


@st.cache_resource(show_spinner=False)
def _ensure_schema(db_path: str) -> Any:
    """Create or migrate the database once per process and path (two sessions never race to migrate).

    The migrating connection then stays open, idle, for the life of the process; nothing ever runs
    on it. While any connection to a WAL database is open, closing another one does not checkpoint
    the WAL and delete it, so the per-call connections of :func:`database` close in microseconds
    instead of 10-30 ms (an fsync at every page and every check-in; docs/scaling.md). SQLite still
    checkpoints on its own every 1,000 WAL pages. It holds no lock and no transaction.
    """
    return storage.connect(db_path)


@contextmanager
def database(db_path: str | None = None) -> Iterator[Any]:
    """A fresh connection for the length of one block."""
    path = str(db_path or active_db_path())
    _ensure_schema(path)
    db = storage.open_db(path)
    try:
        yield db
    finally:
        db.close()


def data_version(db_path: str | None = None) -> int:
    with database(db_path) as db:
        return storage.data_version(db)


@st.cache_data(ttl=600, show_spinner=False)
def _summary(db_path: str, version: int) -> dict[str, Any]:
    with database(db_path) as db:
        return storage.database_summary(db)


def summary(db_path: str | None = None) -> dict[str, Any]:
    path = str(db_path or active_db_path())
    return _summary(path, data_version(path))


def registry() -> instruments.Registry:
    """The settings' registry (loaded once per process and pair of paths, ``Settings.registry``)."""
    return settings().registry


def user_count() -> int:
    with database() as db:
        return storage.count_users(db)


def demo_accounts() -> list[dict[str, str]]:
    with database() as db:
        return synthetic.demo_accounts(db)


def open_demo() -> None:
    """Prepare the demo database (seeding it on first use) and switch this tab to it."""
    if not demo_available():
        raise PermissionDenied("The demo is off on this server now that the clinic has its own accounts "
                               "(setting OUTCOMES_DEMO turns it on).")
    s = settings()
    with database(str(s.demo_db_path)) as db:
        synthetic.prepare_demo(db, end=date.today(), now=datetime.now(timezone.utc))
    st.query_params[DEMO_QUERY_PARAM] = "1"


# Cohort outcomes page (app_pages/cohort.py) -----------------------------------------------------------
# The raw series and score frames are shared read-only through cache_resource: cache_data would unpickle
# a copy of the large score frame on every hit (toolchain notes §6). The small derived tables are cached
# with cache_data keyed by path, data_version and the whole query, so changing a filter back is instant.


@dataclasses.dataclass(frozen=True)
class CohortQuery:
    """The cohort page's filters and options; an empty tuple means "no filter"."""

    as_of: date
    mcid: tuple[tuple[str, float], ...]
    series: analysis.SeriesChoice = "first"
    diagnosis: tuple[str, ...] = ()
    sex: tuple[str, ...] = ()
    age_band: tuple[str, ...] = ()
    protocol: tuple[str, ...] = ()
    series_number: tuple[int, ...] = ()
    first_infusion_from: date | None = None
    first_infusion_to: date | None = None
    impaired_only: bool = False


# Two entries: the current version of the clinic's database and of the demo's, or a version and the one
# that replaces it after a write (a rerun always reads the current data_version, so older ones are never
# asked for again). At 100,000 patients one entry is about 160 MB (docs/scaling.md).
@st.cache_resource(ttl=600, max_entries=2, show_spinner=False)
def _cohort_frames(db_path: str, version: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    with database(db_path) as db:
        return reports.episodes(db), reports.scores(db)


@st.cache_data(ttl=600, show_spinner=False)
def _cohort_options(db_path: str, version: int) -> dict[str, Any]:
    episodes, scores = _cohort_frames(db_path, version)

    def values(column: str) -> list[Any]:
        return sorted(episodes[column].dropna().unique().tolist())

    first = episodes["first_infusion"].dropna()
    return {"diagnosis": values("diagnosis"), "sex": values("sex"), "protocol": values("protocol"),
            "series_number": [int(n) for n in values("series_number")],
            "first_year": int(first.min().year) if len(first) else None,
            "domains": settings().reported_domains(scores["domain"].unique())}


def cohort_options() -> dict[str, Any]:
    """Choices for the cohort filters (diagnoses, sexes, protocols, series numbers, first year with data) and
    ``domains``, the domains the cohort reports (Settings.reported_domains)."""
    path = active_db_path()
    return _cohort_options(path, data_version(path))


def _cohort_subsets(db_path: str, version: int, query: CohortQuery,
                    baseline_days: int) -> tuple[list[tuple[tuple[str, ...], pd.DataFrame]], pd.DataFrame]:
    """Filtered episodes per group of domains, and the scores.

    With "impaired at baseline only" each domain gets its own episodes (those impaired in that domain),
    as clinical-methods notes §3.7 ask; otherwise one set serves all domains.
    """
    episodes, scores = _cohort_frames(db_path, version)
    chosen = analysis.filter_episodes(
        episodes, as_of=query.as_of, diagnosis=list(query.diagnosis) or None, sex=list(query.sex) or None,
        age_band=list(query.age_band) or None, protocol=list(query.protocol) or None,
        series_number=list(query.series_number) or None, first_infusion_from=query.first_infusion_from,
        first_infusion_to=query.first_infusion_to)
    thresholds = dict(query.mcid)
    domains = tuple(d for d in settings().reported_domains(scores["domain"].unique()) if d in thresholds)
    if not query.impaired_only:
        return [(domains, chosen)], scores
    return [((d,), analysis.filter_episodes(chosen, scores, as_of=query.as_of, impaired_at_baseline={d: True},
                                            baseline_days=baseline_days)) for d in domains], scores


@st.cache_data(ttl=600, max_entries=128, show_spinner=False)
def _cohort_table(db_path: str, version: int, query: CohortQuery, panel: str, baseline_days: int,
                  windows: tuple[Window, ...]) -> pd.DataFrame:
    subsets, scores = _cohort_subsets(db_path, version, query, baseline_days)
    thresholds = dict(query.mcid)
    common: dict[str, Any] = {"as_of": query.as_of, "baseline_days": baseline_days, "series": query.series}
    parts = []
    for domains, episodes in subsets:
        if panel == "responders":  # the same call as reports.responders, on the filtered episodes
            parts.append(analysis.responder_report(episodes, scores, mcid={d: thresholds[d] for d in domains},
                                                   windows=windows, **common))
        elif panel == "counts":
            parts.append(analysis.cohort_counts(episodes, scores, domains=domains, **common))
        elif panel == "trajectories":
            parts.append(analysis.trajectories(episodes, scores, domains=domains, **common))
        elif panel == "cdf":
            parts.append(analysis.change_cdf(episodes, scores, domains=domains, windows=windows, **common))
        elif panel == "completion":
            parts.append(analysis.follow_up_completion(episodes, scores, domains=domains, windows=windows,
                                                       **common))
        else:
            raise ValueError(f"unknown cohort panel {panel!r}")
    return pd.concat(parts, ignore_index=True)


def cohort_table(query: CohortQuery, panel: str) -> pd.DataFrame:
    """One cohort table for ``query``: ``"counts"`` (episodes, patients and episodes with a baseline per
    domain), ``"responders"``, ``"trajectories"``, ``"cdf"`` or ``"completion"`` (outcomes.analysis)."""
    path, s = active_db_path(), settings()
    return _cohort_table(path, data_version(path), query, panel, s.baseline_days, tuple(s.windows))


@st.cache_data(ttl=600, max_entries=64, show_spinner=False)
def _cohort_survival(db_path: str, version: int, query: CohortQuery, estimate: str, group_col: str | None,
                     min_at_risk: int, baseline_days: int) -> tuple[Any, dict[tuple[str, str], float]] | None:
    subsets, scores = _cohort_subsets(db_path, version, query, baseline_days)
    thresholds = dict(query.mcid)
    derive = survival.response_durations if estimate == "durability" else survival.improvement_times
    times = pd.concat([derive(episodes, scores, as_of=query.as_of, mcid={d: thresholds[d] for d in domains},
                              baseline_days=baseline_days, series=query.series)
                       for domains, episodes in subsets], ignore_index=True)
    if times.empty or ("has_baseline" in times and not times["has_baseline"].astype(bool).any()):
        return None
    if estimate == "interval":
        intervals = survival.fit_interval_censored(times, group_col=group_col)
        return intervals, figures.at_risk_cutoff(times, group_col=group_col, min_at_risk=min_at_risk,
                                                 time_col="lower_weeks")
    km = survival.fit_km(times, group_col=group_col, kind="survival" if estimate == "durability" else "event")
    # MappingProxyType cannot be pickled, and cache_data pickles what it stores.
    return dataclasses.replace(km, p_values=dict(km.p_values)), figures.at_risk_cutoff(
        times, group_col=group_col, min_at_risk=min_at_risk)


def cohort_survival(query: CohortQuery, estimate: str, *, group_col: str | None = None,
                    min_at_risk: int = 10) -> tuple[Any, dict[tuple[str, str], float]] | None:
    """Survival view for ``query`` and where to cut each curve, or None when no episode qualifies.

    ``estimate``: ``"km"`` (time to first meaningful improvement, ``SurvivalCurves``), ``"interval"``
    (the same, interval-censored, ``IntervalCensoredCurves``) or ``"durability"`` (still responding,
    ``SurvivalCurves`` of kind "survival"). Imports lifelines, so call it only when the panel shows.
    """
    path = active_db_path()
    return _cohort_survival(path, data_version(path), query, estimate, group_col, min_at_risk,
                            settings().baseline_days)


# Files handed to the browser (docs/privacy.md, "Downloads") --------------------------------------------
# st.download_button puts its bytes at /media/<hash>.<ext> on Streamlit's media route, which serves them to
# any client holding the URL and keeps them until a later script run sweeps them (the browser even fetches
# the URL once on render, to check it, before any click). Identified files therefore never go there: the
# page makes the file (and audits it) in the run of the click, and hands the bytes to this browser
# session only, inside that run's own websocket message, to a tiny component that saves them as a file.
# There is no URL to fetch, by this session or any other, and the next run does not send them again.

_HAND_OVER_JS = """
const handedOver = new Set();
export default function ({ data, parentElement }) {
  if (!data || !data.token || handedOver.has(data.token)) return;
  handedOver.add(data.token);
  const text = atob(data.b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const url = URL.createObjectURL(new Blob([bytes], { type: data.mime }));
  const link = document.createElement("a");
  link.href = url;
  link.download = data.name;
  link.style.display = "none";
  parentElement.appendChild(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(url); link.remove(); }, 60000);
}
"""
HAND_OVER_COMPONENT = "outcomes_hand_over_file"


def hand_over_limit() -> int:
    """The largest file (bytes) one hand-over carries: Base64 within Streamlit's message limit
    (``server.maxMessageSize``, megabytes), with a margin for the message around it."""
    return int(st.get_option("server.maxMessageSize") * 1_000_000 * 0.9 * 3 / 4)


def check_hand_over(size: int, too_large: str = "") -> None:
    """Raise ValidationError when a file of ``size`` bytes cannot be handed over (call it before auditing)."""
    from outcomes.errors import ValidationError

    if size > hand_over_limit():
        raise ValidationError(
            f"The file is {size / 1e6:,.1f} MB, more than the browser connection carries "
            f"({hand_over_limit() / 1e6:,.0f} MB; server setting server.maxMessageSize). "
            + (too_large or "Narrow the filters to make it smaller."))


def hand_over(payload: bytes, filename: str, mime: str, *, key: str, too_large: str = "") -> None:
    """Give ``payload`` to this session's browser as the file ``filename``, once, with no URL.

    Call it in the script run that made (and audited) the file, typically the run of the button's click.

    Raises
    ------
    ValidationError
        The file is larger than :func:`hand_over_limit`; ``too_large`` says what to do instead.
    """
    import base64
    import secrets

    check_hand_over(len(payload), too_large)
    renderer = st.components.v2.component(HAND_OVER_COMPONENT, js=_HAND_OVER_JS)
    renderer(key=key, data={"name": filename, "mime": mime, "token": secrets.token_hex(16),
                            "b64": base64.b64encode(payload).decode("ascii")}, width="content")


def last_server_backup() -> dict[str, Any] | None:
    """The newest backup made on the server by ``python -m outcomes backup`` (cron or a systemd timer,
    docs/operations.md), from its audit entry (actor ``cli:<login>``): ``at`` (UTC), ``actor``, ``file``,
    ``bytes``; None when the audit log holds none."""
    import json

    with database() as db:
        log = storage.load_audit_log(db, action="backup")
    made = log[log["actor"].astype(str).str.startswith("cli:")]
    if made.empty:
        return None
    row = made.iloc[0]
    details = json.loads(row["details"]) if isinstance(row["details"], str) else {}
    return {"at": row["at"], "actor": row["actor"], "file": details.get("file"), "bytes": details.get("bytes")}
