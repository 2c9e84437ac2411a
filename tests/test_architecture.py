"""Layering rules that code review alone would let slip.

Every rule walks its folders recursively (``rglob``), so a file in a sub-package such as
``outcomes/storage/`` is covered like any other.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ROOT / "outcomes"
STORAGE = OUTCOMES / "storage"

#: An SQL statement, as this code base writes them (keywords in capitals).
SQL = re.compile(r"\b(?:SELECT\b[\s\S]*\bFROM|INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|TRIGGER|VIEW)|ALTER\s+TABLE|"
                 r"DROP\s+(?:TABLE|INDEX|TRIGGER|VIEW)|PRAGMA\s+\w+|BEGIN\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED))\b")


def library_files() -> list[Path]:
    return sorted(OUTCOMES.rglob("*.py"))


def in_storage(path: Path) -> bool:
    return STORAGE in path.parents


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sql_strings(path: Path) -> list[int]:
    """Lines of the string constants (docstrings aside) in ``path`` that hold an SQL statement."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings and SQL.search(n.value)]


def test_the_rules_see_every_library_file():
    files = {name(p) for p in library_files()}
    assert {"outcomes/validation.py", "outcomes/storage/__init__.py", "outcomes/storage/schema.py"} <= files
    assert not (OUTCOMES / "storage.py").exists()  # a module beside the package would be shadowed by it


@pytest.mark.slow
def test_the_domain_core_never_imports_streamlit():
    offenders = [name(p) for p in library_files() if "streamlit" in imported_modules(p)]
    assert offenders == []


@pytest.mark.slow
def test_only_the_storage_package_talks_to_sqlite():
    offenders = [name(p) for p in library_files()
                 if not in_storage(p) and imported_modules(p) & {"sqlite3", "sqlite_utils"}]
    assert offenders == []


@pytest.mark.slow
def test_only_the_storage_package_contains_sql():
    code = [*library_files(), *(ROOT / "ui").rglob("*.py"), *(ROOT / "app_pages").rglob("*.py"), ROOT / "app.py"]
    offenders = [f"{name(p)}:{line}" for p in code if not in_storage(p) for line in sql_strings(p)]
    assert offenders == []
    # The check finds what it looks for: every storage file that talks to SQLite holds SQL.
    assert [name(p) for p in STORAGE.glob("*.py") if p.name != "__init__.py" and not sql_strings(p)] == []
    assert "sqlite3" not in imported_modules(OUTCOMES / "validation.py") and not sql_strings(OUTCOMES / "validation.py")


@pytest.mark.slow
def test_the_library_never_prints():
    offenders = []
    for p in library_files():
        if p.relative_to(OUTCOMES).as_posix() in {"cli.py", "__main__.py"}:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{name(p)}:{node.lineno}")
    assert offenders == []


def test_the_library_has_no_import_cycles():
    # Imports made when a module loads (not those inside functions, which some modules use on purpose).
    modules = {module_of(p): p for p in library_files()}
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        statements = list(ast.parse(path.read_text()).body)
        while statements:
            node = statements.pop()
            if isinstance(node, (ast.If, ast.Try)):
                statements += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                               *(s for h in getattr(node, "handlers", []) for s in h.body)]
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        edges[module] = {t for t in targets if t in modules and t != module}

    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]))
            elif target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
    assert cycles == []
    assert not {m for m in edges["outcomes.validation"] if m.startswith("outcomes.storage")}  # below storage


@pytest.mark.slow
def test_the_storage_package_is_documented_and_one_namespace():
    import outcomes.storage as storage

    # Its docstring maps every file; every public function and class says what it does.
    for path in sorted(STORAGE.glob("*.py")) + [OUTCOMES / "validation.py"]:
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{name(path)} has no module docstring"
        if path.parent == STORAGE and path.name != "__init__.py":
            assert f"``{path.name}``" in storage.__doc__, f"{path.name} is missing from the package's map"
        undocumented = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                        and not n.name.startswith("_") and not ast.get_docstring(n)]
        assert undocumented == [], name(path)
    # Every name the code and tests use as storage.X is there.
    used = set()
    code = [*library_files(), *(ROOT / "ui").rglob("*.py"), *(ROOT / "app_pages").rglob("*.py"), ROOT / "app.py",
            *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    for path in code:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "storage":
                used.add(node.attr)
    assert sorted(n for n in used if not hasattr(storage, n)) == []
    assert sorted(n for n in storage.__all__ if not hasattr(storage, n)) == []


def test_replacing_a_storage_name_reaches_the_code_that_calls_it():
    # Tests replace storage.X (monkeypatch); the package passes that on to its submodules.
    import pytest

    import outcomes.storage as storage
    from outcomes.storage import backups, connection, records

    real, calls = storage.open_db, []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(storage, "open_db", lambda path: calls.append(path) or real(path))
        assert connection.open_db is not real and backups.open_db is not real
        storage.connect(":memory:").close()
        assert calls == [":memory:"]
        m.setattr(storage, "_now", lambda: "2020-01-01T00:00:00+00:00")
        assert records._now() == "2020-01-01T00:00:00+00:00"
    assert connection.open_db is real and backups.open_db is real and storage.open_db is real
    assert records._now() != "2020-01-01T00:00:00+00:00"


def test_there_is_no_pages_folder():
    # Streamlit auto-discovers a folder named exactly pages/ and then serves its scripts without app.py's
    # login gate (docs/architecture.md).
    assert not (ROOT / "pages").exists()


def test_no_database_file_is_tracked():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert [f for f in tracked if f.endswith((".db", ".sqlite", ".sqlite3"))] == []
