"""The rule files the project ships are clean, tested and in the canonical layout."""

import subprocess
import sys
from functools import partial

import pytest

from helpers.files import ROOT
from helpers.cli import dicom_rules as run_dicom_rules

dicom_rules = partial(run_dicom_rules, cwd=ROOT)


def test_shipped_rules_lint_clean_even_when_strict():
    result = dicom_rules("lint", "--strict", "rules/")
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_rule_tests_pass():
    result = dicom_rules("test", "rules/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


def test_shipped_rules_are_in_the_canonical_layout():
    result = dicom_rules("fmt", "--check", "rules/", "examples/")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generated_profile_is_current():
    result = subprocess.run([sys.executable, "tools/make_basic_profile.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("folder", ["profiles", "ported"])
def test_a_copy_of_a_shipped_folder_lints_and_tests_clean_elsewhere(tmp_path, folder):
    """The profiles and the ported configurations are meant to be copied into a site's rules
    folder: their tests read only samples that travel with them."""
    import shutil
    copied = tmp_path / "site" / folder
    shutil.copytree(ROOT / "rules" / folder, copied)
    lint = run_dicom_rules("lint", "--strict", f"{folder}/", cwd=copied.parent)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    tests = run_dicom_rules("test", f"{folder}/", cwd=copied.parent)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " 0 failed" in tests.stdout
    # Nothing in the folder names a file outside it.
    for rules in copied.glob("*.rules"):
        assert "../" not in rules.read_text(encoding="utf-8"), rules.name


def test_the_ported_configurations_have_tests():
    for rules in (ROOT / "rules" / "ported").glob("*.rules"):
        if not rules.stem.endswith("_test"):
            assert rules.with_name(rules.stem + "_test.rules").is_file(), rules.name
