"""Shared fixtures: a migrated in-memory database, a migrated file database, and a table dump."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from outcomes import storage


@pytest.fixture(autouse=True)
def _main_module_restored() -> Iterator[None]:
    """Put back ``sys.modules["__main__"]`` after each test.

    Streamlit's script runner (AppTest included) makes the page it runs the ``__main__`` module and leaves
    it there. A process started later by ``multiprocessing`` (spawn or forkserver) then runs that page as
    its own main module before anything else, and dies (tests/reliability/test_kill.py and test_load.py
    failed this way after an AppTest of the cohort page).
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


def pytest_configure(config: pytest.Config) -> None:
    # No test may create or touch a database under data/: the default paths point into a throwaway folder
    # (tests that need a database set their own path on top of this).
    folder = Path(tempfile.mkdtemp(prefix="outcomes-tests-"))
    os.environ["OUTCOMES_DB_PATH"] = str(folder / "default.db")
    os.environ["OUTCOMES_DEMO_DB_PATH"] = str(folder / "default-demo.db")


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


@pytest.fixture
def fast_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cheap argon2id hasher for account tests (the production parameters cost ~0.1 s per hash)."""
    from argon2 import PasswordHasher

    from outcomes import auth

    monkeypatch.setattr(auth, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


# The app ------------------------------------------------------------------------------------------

PASSWORD = "a long test password"
APP = str(Path(__file__).resolve().parents[1] / "app.py")


@dataclasses.dataclass
class Clinic:
    """A small clinic database on disk: one user per role and two patients with check-ins."""

    path: Path
    users: dict[str, Any]
    today: date

    def open(self) -> Database:
        return storage.open_db(self.path)


def _build_clinic(path: Path, today: date) -> dict[str, Any]:
    from outcomes import auth, clinic
    from outcomes.settings import load_settings

    settings = load_settings({})
    now = datetime.now(UTC)
    db = storage.connect(path)
    admin = auth.create_first_admin(db, "ada.admin", PASSWORD, now=now)
    clinician = auth.create_user(db, admin, username="cleo.clinician", role="clinician", password=PASSWORD, now=now)
    qi = auth.create_user(db, admin, username="quinn.qi", role="qi", password=PASSWORD, now=now)
    for pid, diagnosis in (("P001", "CRPS"), ("P002", "Fibromyalgia")):
        clinic.enrol_patient(db, clinician, patient_id=pid, diagnosis=diagnosis, sex="F", birth_year=1970,
                             enrolled_on=today - timedelta(days=60), today=today, now=now, settings=settings)
        first = today - timedelta(days=42)
        clinic.log_series(db, clinician, patient_id=pid, first_infusion=first, last_infusion=first + timedelta(days=4),
                          infusions=5, protocol="5-day 0.5 mg/kg", dose_mg_per_kg=0.5, today=today)
        for weeks_ago, value in ((7, 4), (5, 3), (2, 2)):
            answers = {form.key: {item.item_id: (value if form.domain != "physical_function" else 6 - value)
                                  for item in form.items}
                       for form in clinic.checkin_forms(settings)}
            clinic.submit_checkin(db, clinician, patient_id=pid, answers=answers,
                                  assessed_on=today - timedelta(weeks=weeks_ago), today=today, now=now,
                                  settings=settings, source="clinician")
    patient = auth.create_user(db, admin, username="pat.patient", role="patient", password=PASSWORD,
                               patient_id="P001", now=now)
    for user in (clinician, qi, patient):  # as if each had already chosen their own password
        storage.update_user(db, user.id, must_change_password=False)
    db.close()
    return {"admin": admin, "clinician": clinician, "qi": qi, "patient": patient}


@pytest.fixture(scope="session")
def _clinic_templates(tmp_path_factory: pytest.TempPathFactory) -> Callable[[date], tuple[Path, dict[str, Any]]]:
    """The clinic database of ``clinic_db``, built once per day of the test session and copied for each test
    (building it costs a third of a second, and hundreds of tests use it)."""
    built: dict[date, tuple[Path, dict[str, Any]]] = {}

    def template(today: date) -> tuple[Path, dict[str, Any]]:
        if today not in built:
            from argon2 import PasswordHasher

            from outcomes import auth

            path = tmp_path_factory.mktemp("clinic-template") / "clinic.db"
            with pytest.MonkeyPatch.context() as m:  # fast_hasher, for the session
                m.setattr(auth, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
                users = _build_clinic(path, today)
            leftovers = [p.name for p in path.parent.iterdir() if p != path]
            assert not leftovers, f"the closed template database left {leftovers} beside it"
            built[today] = path, users
        return built[today]

    return template


@pytest.fixture
def clinic_db(tmp_path: Path, fast_hasher: None, monkeypatch: pytest.MonkeyPatch,
              _clinic_templates: Callable[[date], tuple[Path, dict[str, Any]]]) -> Clinic:
    today = date.today()
    template, users = _clinic_templates(today)
    path = tmp_path / "clinic.db"
    shutil.copy2(template, path)  # the file's permissions too
    monkeypatch.setenv("OUTCOMES_DB_PATH", str(path))
    monkeypatch.setenv("OUTCOMES_DEMO_DB_PATH", str(tmp_path / "demo.db"))
    return Clinic(path, {role: dataclasses.replace(u, must_change_password=False) for role, u in users.items()}, today)


@pytest.fixture
def app_as(clinic_db: Clinic) -> Callable[..., Any]:
    """``app_as("clinician")``: the whole app (app.py) run once, signed in as that role."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()

    def make(role: str | None, page: str | None = None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        if role is not None:
            at.session_state["auth.user"] = clinic_db.users[role]
        at.run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return make
