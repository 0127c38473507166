"""The test tree stays navigable: test modules take shared helpers from tests/helpers, never from
a conftest (which holds fixtures, found by pytest) nor from another test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TEST_MODULES = sorted(TESTS.rglob("test_*.py"))


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, dotted, relative ones with their leading dots."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module:
                found.append(base)
            else:  # `from . import name`: the names are modules
                found += [base + alias.name for alias in node.names]
    return found


def is_conftest_or_test_module(module: str) -> bool:
    return any(part == "conftest" or part.startswith("test_") for part in module.split(".") if part)


def test_the_tree_has_test_modules():
    assert len(TEST_MODULES) > 40


def test_no_test_module_imports_a_conftest_or_another_test_module():
    wrong = [f"{path.relative_to(TESTS)} imports {module}" for path in TEST_MODULES
             for module in imported_modules(path) if is_conftest_or_test_module(module)]
    assert not wrong, "move what they need to tests/helpers:\n" + "\n".join(wrong)


def test_the_check_sees_every_kind_of_such_import(tmp_path):
    source = tmp_path / "test_example.py"
    source.write_text("import conftest\nfrom conftest import ROOT\nfrom .conftest import ROUTE_ALL\n"
                      "from . import conftest\nfrom test_journal import journal\n"
                      "from integration.test_router_robustness import router_config\n"
                      "from helpers.peers import StoreSCP\nimport pytest\n", encoding="utf-8")
    assert [module for module in imported_modules(source) if is_conftest_or_test_module(module)] == [
        "conftest", "conftest", ".conftest", ".conftest", "test_journal", "integration.test_router_robustness"]
