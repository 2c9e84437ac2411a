"""Layering rules that code review alone would let slip."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_domain_core_never_imports_streamlit():
    offenders = [p.name for p in (ROOT / "outcomes").glob("*.py") if "streamlit" in imported_modules(p)]
    assert offenders == []


def test_only_the_storage_module_talks_to_sqlite():
    offenders = [
        p.name
        for p in (ROOT / "outcomes").glob("*.py")
        if p.name != "storage.py" and imported_modules(p) & {"sqlite3", "sqlite_utils"}
    ]
    assert offenders == []


def test_the_library_never_prints():
    offenders = []
    for p in (ROOT / "outcomes").glob("*.py"):
        if p.name in {"cli.py", "__main__.py"}:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{p.name}:{node.lineno}")
    assert offenders == []


def test_there_is_no_pages_folder():
    # Streamlit auto-discovers a folder named exactly pages/ and then serves its scripts without app.py's
    # login gate (docs/architecture.md).
    assert not (ROOT / "pages").exists()


def test_no_database_file_is_tracked():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert [f for f in tracked if f.endswith((".db", ".sqlite", ".sqlite3"))] == []
