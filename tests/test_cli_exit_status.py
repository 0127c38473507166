"""Every exit status docs/cli.md states for the language commands (lint, dry-run, diff,
test, dict, fmt), checked against the code: each command's "Exit status:" paragraph is
read from the page, each case it names has a scenario here, and each scenario must end
with that status. A change to the page or to the code that makes them disagree fails;
so does a case the page adds or drops without a scenario to match."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rulesengine.cli
import rulesengine.dryrun
from rulesengine.cli import main

from helpers.files import ROOT, SAMPLES, bundled, write

PAGE = ROOT / "docs" / "cli.md"
COMMANDS = ("lint", "dry-run", "diff", "test", "dict", "compile", "fmt")
CT = str(SAMPLES / "ct_head.dcm")
NOT_DICOM = str(ROOT / "examples" / "bad" / "not_dicom.dcm")
DICOMDIR = bundled("DICOMDIR")  # read, but refused: not an instance

ROUTES = 'rule "ct" {\n  when DataSet.Modality == "CT"\n  then route to PACS\n}\nrule "rest" {\n  then route to ARCHIVE\n}\n'
CHANGED = ROUTES.replace("route to PACS", "quarantine")
WARNS = 'rule "all" {\n  then drop\n}\nrule "never" {\n  then route to PACS\n}\n'  # unreachable: a warning
BROKEN = 'rule "ct" {\n  when DataSet.Modalty == "CT"\n  then route to PACS\n}\n'
# A command element in the data set: the copy cannot be written (quarantined, as in the router).
WRITES_A_COMMAND_ELEMENT = 'rule "cmd" {\n  then {\n    set DataSet.(0000,0902) = "x"\n    route to A\n  }\n}\n'
# A copy without its SOP Instance UID cannot be sent: quarantined, with the reason, and the run goes on.
EMPTIES_THE_INSTANCE_UID = 'rule "uid" {\n  then {\n    blank DataSet.SOPInstanceUID\n    route to A\n  }\n}\n'
FAILS_AT_RUN_TIME = 'rule "age" {\n  then {\n    set DataSet.PatientAge = DataSet.PatientID\n    route to A\n  }\n}\n'
PASSES = 'test "ct" {\n  given DataSet.Modality = "CT"\n  expect route to PACS\n}\n'
FAILS = 'test "ct" {\n  given DataSet.Modality = "CT"\n  expect no route to PACS\n}\n'
BAD_TEST = 'test "ct" {\n  expect fired "nobody"\n}\n'
MESSY = 'rule "ct"   { when DataSet.Modality=="CT" then route to PACS }\n'
TIDY = 'rule "ct" {\n  when DataSet.Modality == "CT"\n  then route to PACS\n}\n'
CONFIG = "storage: var\nrules: routes.rules\ndestinations:\n  PACS:\n    type: folder\n    path: out\n"

# (command, status) -> (the words the page gives for it, scenarios: (files to write, arguments)).
STATED = {
    ("lint", 0): ("there is no error (warnings alone are fine)", [
        ({"routes.rules": ROUTES}, ["lint", "routes.rules"]),
        ({"warns.rules": WARNS}, ["lint", "warns.rules"]),
    ]),
    ("lint", 1): ("there is an error, or any finding with `--strict`", [
        ({"broken.rules": BROKEN}, ["lint", "broken.rules"]),
        ({"warns.rules": WARNS}, ["lint", "--strict", "warns.rules"]),
    ]),
    ("lint", 2): ("a path does not exist", [
        ({}, ["lint", "nowhere.rules"]),
    ]),
    ("dry-run", 0): ("every input was read and evaluated, whatever the outcome (a reject or a quarantine "
                     "decided by a rule is a normal outcome)", [
        ({"routes.rules": ROUTES}, ["dry-run", "routes.rules", CT]),
        ({"changed.rules": CHANGED}, ["dry-run", "changed.rules", CT]),
    ]),
    ("dry-run", 1): ("an input could not be read or was refused, a rule failed at run time, a copy could not be "
                     "written, or the rule file has errors", [
        ({"routes.rules": ROUTES}, ["dry-run", "routes.rules", NOT_DICOM, CT]),
        ({"routes.rules": ROUTES}, ["dry-run", "routes.rules", DICOMDIR, CT]),
        ({"routes.rules": ROUTES, "command.rules": WRITES_A_COMMAND_ELEMENT}, ["dry-run", "command.rules", CT]),
        ({"age.rules": FAILS_AT_RUN_TIME}, ["dry-run", "age.rules", CT]),
        ({"uid.rules": EMPTIES_THE_INSTANCE_UID}, ["dry-run", "uid.rules", CT, "--out", "out"]),
        ({"broken.rules": BROKEN}, ["dry-run", "broken.rules", CT]),
    ]),
    ("dry-run", 2): ("the rule file or an input does not exist", [
        ({}, ["dry-run", "nowhere.rules", CT]),
        ({"routes.rules": ROUTES}, ["dry-run", "routes.rules", "nowhere.dcm"]),
    ]),
    # A bug cannot be written as a scenario: test_an_internal_error_on_one_input_of_dry_run below.
    ("dry-run", 3): ("an input met an internal error (after every input was tried, with `dicom-rules: internal "
                     "error on N input(s)` on standard error)", []),
    ("diff", 0): ("no document changes", [
        ({"old.rules": ROUTES, "new.rules": ROUTES}, ["diff", "old.rules", "new.rules", CT]),
    ]),
    ("diff", 1): ("one does (or a rule file has errors, shown as for `dry-run`)", [
        ({"old.rules": ROUTES, "new.rules": CHANGED}, ["diff", "old.rules", "new.rules", CT]),
        ({"old.rules": ROUTES, "new.rules": BROKEN}, ["diff", "old.rules", "new.rules", CT]),
    ]),
    ("diff", 2): ("an input could not be read or a file does not exist", [
        ({"old.rules": ROUTES}, ["diff", "old.rules", "old.rules", NOT_DICOM]),
        ({"old.rules": ROUTES}, ["diff", "old.rules", "nowhere.rules", CT]),
    ]),
    ("test", 0): ("every test that ran passed", [
        ({"routes.rules": ROUTES, "routes_test.rules": PASSES}, ["test", "routes_test.rules"]),
    ]),
    ("test", 1): ("a test failed, a test file has errors or the rule file it tests does not compile, or no "
                  "`*_test.rules` file was found", [
        ({"routes.rules": ROUTES, "routes_test.rules": FAILS}, ["test", "routes_test.rules"]),
        ({"routes.rules": ROUTES, "routes_test.rules": BAD_TEST}, ["test", "routes_test.rules"]),
        ({"broken.rules": BROKEN, "broken_test.rules": PASSES}, ["test", "broken_test.rules"]),
        ({"routes.rules": ROUTES}, ["test", "routes.rules"]),
    ]),
    ("test", 2): ("a bad `--run` expression or a path that does not exist", [
        ({"routes.rules": ROUTES, "routes_test.rules": PASSES}, ["test", "--run", "(", "routes_test.rules"]),
        ({}, ["test", "nowhere_test.rules"]),
    ]),
    ("dict", 0): ("something matched", [
        ({}, ["dict", "PatientID"]),
        ({}, ["dict", "(60xx,3000)"]),
        ({}, ["dict", "patient", "birth"]),
    ]),
    ("dict", 1): ("nothing did, with up to three close keywords suggested on standard error", [
        ({}, ["dict", "PatientsNaem"]),
        ({}, ["dict", "(7Exx,3000)"]),
    ]),
    ("compile", 0): ("the rule file compiled", [
        ({"routes.rules": ROUTES}, ["compile", "routes.rules"]),
        ({"routes.rules": ROUTES}, ["compile", "--show-code", "routes.rules"]),
        ({"warns.rules": WARNS}, ["compile", "--traced", "warns.rules"]),
    ]),
    ("compile", 1): ("it has errors (printed as `lint` prints them)", [
        ({"broken.rules": BROKEN}, ["compile", "--show-code", "broken.rules"]),
    ]),
    ("compile", 2): ("it does not exist", [
        ({}, ["compile", "nowhere.rules"]),
    ]),
    ("fmt", 0): ("every file is formatted (or, with `--diff`, whatever the changes)", [
        ({"messy.rules": MESSY}, ["fmt", "messy.rules"]),
        ({"tidy.rules": TIDY}, ["fmt", "--check", "tidy.rules"]),
        ({"messy.rules": MESSY}, ["fmt", "--diff", "messy.rules"]),
    ]),
    ("fmt", 1): ("a file has a syntax error or cannot be read, or with `--check` when a file would change", [
        ({"broken.rules": 'rule "x" { then }\n', "tidy.rules": TIDY}, ["fmt", "broken.rules", "tidy.rules"]),
        ({"latin1.rules": "# caf\xe9\n" + TIDY}, ["fmt", "latin1.rules"]),
        ({"messy.rules": MESSY}, ["fmt", "--check", "messy.rules"]),
    ]),
    ("fmt", 2): ("a path does not exist", [
        ({}, ["fmt", "nowhere.rules"]),
    ]),
}


def section(name: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"docs/cli.md has no section ## {name}"
    return match.group(1)


def stated_statuses(command: str) -> dict[int, str]:
    """status -> its words, from the section's paragraph "Exit status: 0 when ..., 1 when ...; 2 for ..."."""
    match = re.search(r"^Exit status: (.*?)(?:\n\n|\Z)", section(command), re.M | re.S)
    assert match, f"the {command} section of docs/cli.md states no exit status"
    paragraph = " ".join(match.group(1).split())
    claims = {}
    for piece in re.split(r"[,;] (?=\d+ (?:when|for) )", paragraph):
        status, _, words = re.match(r"(\d+) (when|for) (.*)", piece).groups()
        claims[int(status)] = words.rstrip(".")
    return claims


def run(tmp_path: Path, monkeypatch, files: dict[str, str], args: list[str]) -> int:
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("latin-1") if name.startswith("latin1") else text.encode())
    return main(args)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_page_states_the_statuses_the_scenarios_cover(command):
    covered = {status: words for (name, status), (words, _) in STATED.items() if name == command}
    assert stated_statuses(command) == covered


SCENARIOS = [pytest.param(command, status, files, args, id=f"{command}-{status}-{' '.join(map(str, args[1:]))}")
             for (command, status), (_, cases) in STATED.items() for files, args in cases]


@pytest.mark.parametrize("command, status, files, args", SCENARIOS)
def test_each_stated_status_is_what_the_command_returns(command, status, files, args, tmp_path, monkeypatch,
                                                        capsys):
    assert run(tmp_path, monkeypatch, files, args) == status, capsys.readouterr()
    assert "internal error" not in capsys.readouterr().err


# ---- the statuses every command shares -----------------------------------------------------------

def test_the_table_of_statuses_is_the_one_main_returns():
    rows = dict(re.findall(r"^\| (\d+)\s*\| (.*?) \|$", section("Exit status"), re.M))
    assert sorted(map(int, rows)) == [0, 1, 2, 3, 130]
    assert "a `--config` file that is missing or not a valid configuration" in rows["2"]
    assert rows["3"].startswith("an internal error")
    assert rows["130"] == "interrupted with Ctrl-C"


@pytest.mark.parametrize("command", ["lint", "dry-run", "diff", "test"])
@pytest.mark.parametrize("config", ["missing", "not YAML", "not a configuration"])
def test_a_bad_config_file_is_a_usage_error_for_every_command_that_takes_one(command, config, tmp_path,
                                                                               monkeypatch, capsys):
    stated = re.search(r"A `--config` file that is missing, is\s+not valid YAML or is not a valid configuration "
                       r"is a usage error \(for every\s+command that takes `--config`\): exit status (\d)",
                       section("lint"))
    assert stated, "docs/cli.md no longer says what a bad --config file does"
    files = {"routes.rules": ROUTES, "routes_test.rules": PASSES}
    if config == "not YAML":
        files["router.yaml"] = "storage: [var\n"
    elif config == "not a configuration":
        files["router.yaml"] = "storage: var\nrules: routes.rules\nlisteners: 12\n"
    args = {"lint": ["routes.rules"], "dry-run": ["routes.rules", CT], "diff": ["routes.rules", "routes.rules", CT],
            "test": ["routes_test.rules"]}[command]
    assert run(tmp_path, monkeypatch, files, [command, "--config", "router.yaml", *args]) == int(stated.group(1))
    err = capsys.readouterr().err
    assert err.startswith("dicom-rules: router.yaml") and "internal error" not in err


def test_an_internal_error_is_status_3_with_one_line(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(rulesengine.cli, "cmd_dict", broken)
    assert main(["dict", "PatientID"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("dicom-rules: internal error: ZeroDivisionError: division by zero at ")
    assert len(err.strip().splitlines()) == 1


def test_an_internal_error_on_one_input_of_dry_run(tmp_path, monkeypatch, capsys):
    """Status 3 of dry-run: the input that met a bug is reported, the others are evaluated first."""
    real = rulesengine.dryrun.read_instance

    def broken_for_the_first(path, arrival):
        if path == NOT_DICOM:
            raise ZeroDivisionError("division by zero")
        return real(path, arrival)
    monkeypatch.setattr(rulesengine.dryrun, "read_instance", broken_for_the_first)
    assert run(tmp_path, monkeypatch, {"routes.rules": ROUTES}, ["dry-run", "routes.rules", NOT_DICOM, CT]) == 3
    captured = capsys.readouterr()
    assert "outcome: route to PACS" in captured.out  # the input after it was evaluated
    assert "internal error: ZeroDivisionError" in captured.out + captured.err
    assert captured.err.strip().splitlines()[-1].startswith("dicom-rules: internal error on 1 input(s)")


def test_ctrl_c_is_status_130(monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(rulesengine.cli, "cmd_dict", interrupted)
    assert main(["dict", "PatientID"]) == 130
