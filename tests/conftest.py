"""Shared fixtures: a migrated in-memory database, a migrated file database, and a table dump."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from outcomes import storage


@pytest.fixture
def db() -> Iterator[Database]:
    database = storage.connect(":memory:")
    yield database
    database.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.db"
    storage.connect(path).close()
    return path


@pytest.fixture
def dump() -> Callable[[Database], dict[str, list[tuple]]]:
    """Every row of every table (``meta`` included), to show that a rejected write changed nothing."""

    def rows(database: Database) -> dict[str, list[tuple]]:
        return {t: database.conn.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall()
                for t in database.table_names()}

    return rows
