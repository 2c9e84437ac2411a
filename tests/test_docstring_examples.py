"""Every ``>>>`` example in a docstring of outcomes/ and ui/ runs, and holds.

The modules are found on disk (sub-packages included), so a new module's examples run without anybody
listing it here. A docstring example doctest does not collect (a docstring it cannot reach) fails too, rather
than being skipped in silence.
"""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("outcomes", "ui")
OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstring_examples(path: Path) -> dict[str, int]:
    """The examples written in each docstring of the file, by the docstring's place (``name:line``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parser = doctest.DocTestParser()
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text and ">>>" in text:
                where = f"{getattr(node, 'name', '<module>')}:{getattr(node, 'lineno', 1)}"
                found[where] = len(parser.get_examples(text))
    return found


def _modules_with_examples() -> list[str]:
    return sorted(_module_name(path) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                  if "__pycache__" not in path.parts and _docstring_examples(path))


MODULES = _modules_with_examples()


def test_the_discovery_finds_the_modules_with_examples():
    # Sub-packages count (outcomes/storage/), and the list is not empty by some mistake of the discovery.
    assert "outcomes.scoring" in MODULES and "outcomes.storage.connection" in MODULES, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)  # each docstring gets a fresh copy of the module's globals
    written = _docstring_examples(Path(module.__file__))
    collected = sum(len(t.examples) for t in tests)
    assert collected == sum(written.values()), (
        f"{name}: doctest collected {collected} of the {sum(written.values())} examples written in its "
        f"docstrings ({written}); an example doctest cannot reach would never run")
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in sorted(tests, key=lambda t: t.lineno or 0):
        runner.run(test, out=report.append)
    failed = f"{name}: {runner.failures} of {runner.tries} examples failed\n"
    assert runner.failures == 0, failed + "".join(report)
