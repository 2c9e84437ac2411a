"""A domain is data: no code names one (issue 14; docs/architecture.md, "Add a domain").

Every fact about a domain lives in data/instruments/forms.toml. This test fails when a string literal in
outcomes/, ui/, app_pages/ or app.py is a domain's name, starts with one followed by "_" (a form key such
as ``<domain>_sf6a_v1.0`` or a column such as ``<domain>_t``), or contains a multi-word name. Docstrings
and comments are documentation and exempt, as are tests, data and docs; plain English ("a low depression
score") is not a name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from outcomes.domains import load_domains

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted([*(ROOT / "outcomes").rglob("*.py"), *(ROOT / "ui").rglob("*.py"),
               *(ROOT / "app_pages").rglob("*.py"), ROOT / "app.py"])
NAMES = load_domains().names


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def names_a_domain(text: str) -> str | None:
    for name in NAMES:
        if text == name or text.startswith(name + "_") or ("_" in name and name in text):
            return name
    return None


def domain_literals(path: Path) -> list[tuple[int, str, str]]:
    """``(line, literal, domain)`` of every string literal outside docstrings that names a domain."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    return [(node.lineno, node.value, found)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            and (found := names_a_domain(node.value))]


def test_the_check_finds_a_domain_literal(tmp_path):
    bad = tmp_path / "bad.py"
    name = NAMES[0]
    bad.write_text(f'"""Docs may say {name}."""\nA = {name!r}\nB = f"{name}_sf6a_v1.0"\nC = "fine"\n')
    assert sorted(line for line, _, _ in domain_literals(bad)) == [2, 3]


def test_every_code_file_is_scanned():
    assert any(p.parts[-2:] == ("storage", "reads.py") for p in CODE) and ROOT / "app.py" in CODE


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_names_a_domain(path):
    assert [f"{path.relative_to(ROOT)}:{line}: {text!r} names {name}"
            for line, text, name in domain_literals(path)] == []
