"""The command-line package: the one walker of files and folders named on the command line,
which lint, fmt, test, dry-run, diff and send share, and what loading it loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rulesengine.cli.common import InputFile, UsageError, input_files, rule_files


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for name in ("b/x.dcm", "a/x.dcm", "a/.hidden.dcm", ".git/y.dcm", "top.dcm",
                 "rules/r.rules", "rules/r_test.rules", "rules/sub/s.rules", "rules/notes.txt"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_folders_are_searched_in_sorted_order_and_hidden_names_skipped(tree):
    assert [found.path for found in input_files(["."])] == [
        os.path.join(".", name) for name in ("top.dcm", "a/x.dcm", "b/x.dcm", "rules/notes.txt", "rules/r.rules",
                                             "rules/r_test.rules", "rules/sub/s.rules")]


def test_names_are_relative_to_the_folder_named_and_distinct(tree):
    assert list(input_files(["a", "b", "top.dcm", "a/.hidden.dcm"])) == [
        InputFile("a/x.dcm", "x.dcm"), InputFile("b/x.dcm", "b/x.dcm"),  # a clash: the second by its path
        InputFile("top.dcm", "top.dcm"), InputFile("a/.hidden.dcm", ".hidden.dcm")]  # a file named is taken


def test_rule_files_leave_tests_out_unless_asked(tree):
    assert rule_files(["rules"]) == ["rules/r.rules", "rules/sub/s.rules"]
    assert rule_files(["rules"], include_tests=True) == ["rules/r.rules", "rules/r_test.rules", "rules/sub/s.rules"]


def test_a_path_that_does_not_exist_is_a_usage_error(tree):
    with pytest.raises(UsageError, match="missing: no such file or folder"):
        list(input_files(["top.dcm", "missing"]))


def test_the_command_line_loads_no_network_code_until_a_router_command_runs():
    # The router's commands import what loads pynetdicom when they run: lint starts without it.
    code = ("import sys, rulesengine.cli\n"
            "print(','.join(m for m in sys.modules if m.startswith(('pynetdicom', 'watchdog'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
