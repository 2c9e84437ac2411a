"""Every ``st.cache_*`` in the app lives here.

Connections are never cached: each call opens its own (a sqlite3 connection must not cross threads, and
Streamlit reruns on a pool of threads). What is cached are *results*, keyed by the database path and its
``data_version`` counter, so a write is visible on the next rerun without clearing anything by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from outcomes import instruments, storage
from outcomes.settings import Settings, load_settings


def settings() -> Settings:
    # Read on every rerun: cheap, and a test or an operator can change the environment between runs.
    return load_settings()


@st.cache_resource(show_spinner=False)
def _ensure_schema(db_path: str) -> None:
    """Create or migrate the database once per process and path (two sessions never race to migrate)."""
    storage.connect(db_path).close()


@contextmanager
def database(db_path: str | None = None) -> Iterator[Any]:
    """A fresh connection for the length of one block."""
    path = str(db_path or settings().db_path)
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
    path = str(db_path or settings().db_path)
    return _summary(path, data_version(path))


@st.cache_resource(show_spinner=False)
def _registry(instruments_dir: str, wording_file: str | None) -> instruments.Registry:
    return instruments.load_registry(instruments_dir, wording_file)


def registry() -> instruments.Registry:
    s = settings()
    return _registry(str(s.instruments_dir), str(s.item_wording_file) if s.item_wording_file else None)
