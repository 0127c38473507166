"""Rule files read only inside the rules folders: the main rule file's folder and the
configuration's rules_folders. An import or a table that leads elsewhere (an absolute
path, `..`, a symbolic link) is an error at its position, through lint, test, dry-run,
check-config and the router's reload, and nothing of a file that is not a rule file
ever shows in a finding or a log line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rulesengine.cli import main
from rulesengine.config import load_config
from rulesengine.runtime.rules import RulesHolder

from helpers.files import SAMPLES, write

SECRET = "TOP-SECRET root:$6$hash:19000:0:99999:7:::"
CT = str(SAMPLES / "ct_head.dcm")
ROUTE = 'rule "all" {\n  then route to PACS\n}\n'
LIBRARY = 'block tag {\n  set DataSet.InstitutionName = "SHARED"\n}\n'
USES_LIBRARY = 'import "{file}" as lib\n\nrule "all" {{\n  then {{\n    apply lib.tag\n    route to PACS\n  }}\n}}\n'


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """rules/ (the rule set), shared/ (a library folder), private/ (what rules must not read)."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "private" / "secret.rules", SECRET + "\n")  # a parse error would quote this line
    write(tmp_path / "private" / "secret.csv", "user,password\n" + SECRET + ",x\n")
    write(tmp_path / "private" / "lib.rules", LIBRARY)
    write(tmp_path / "rules" / "notes.txt", SECRET + "\n")
    write(tmp_path / "rules" / "lib.rules", LIBRARY)
    write(tmp_path / "rules" / "sub" / "deeper.rules", 'import "../lib.rules" as lib\n')
    write(tmp_path / "shared" / "lib.rules", LIBRARY)
    write(tmp_path / "shared" / "sites.csv", "aet,site\nCT1,EAST\n")
    os.symlink(tmp_path / "private" / "secret.rules", tmp_path / "rules" / "linked.rules")
    os.symlink(tmp_path / "private" / "secret.csv", tmp_path / "rules" / "linked.csv")
    os.symlink(tmp_path / "shared", tmp_path / "rules" / "shared-link")
    write(tmp_path / "router.yaml", "storage: var\nrules: rules/main.rules\nrules_folders: [shared]\n"
          "destinations:\n  PACS:\n    type: folder\n    path: out\n")
    return tmp_path


# (the statement, the error's column, words of the message)
FORBIDDEN = [
    ('import "{root}/private/secret.rules" as s', 8, "it is outside the rules folder"),
    ('import "../private/secret.rules" as s', 8, "it is outside the rules folder"),
    ('import "sub/../../private/lib.rules" as s', 8, "it is outside the rules folder"),
    ('import "linked.rules" as s', 8, "a symbolic link to a file outside the rules folder"),
    ('import "notes.txt" as s', 8, "an import is a rule file (*.rules)"),
    ('table t from "/etc/passwd"', 14, "it is outside the rules folder"),
    ('table t from "../private/secret.csv"', 14, "it is outside the rules folder"),
    ('table t from "linked.csv"', 14, "a symbolic link to a file outside the rules folder"),
    ('table t from "notes.txt"', 14, "a table is a CSV file (*.csv)"),
]


def lint(args: list[str], capsys) -> tuple[int, str]:
    status = main(["lint", *args])
    out, err = capsys.readouterr()
    return status, out + err


@pytest.mark.parametrize("statement, column, words", FORBIDDEN, ids=[f[0].split('"')[1] for f in FORBIDDEN])
def test_lint_refuses_what_leads_outside_the_rules_folder(site, capsys, statement, column, words):
    write(site / "rules" / "main.rules", statement.format(root=site) + "\n\n" + ROUTE)
    status, output = lint(["rules/main.rules"], capsys)
    assert status == 1
    code = "import" if statement.startswith("import") else "table"
    assert f"rules/main.rules:1:{column}: error {code} cannot " in output
    assert words in output
    assert SECRET not in output and "TOP-SECRET" not in output


def test_what_stays_inside_is_read_however_it_is_written(site, capsys):
    write(site / "rules" / "main.rules",
          f'import "{site}/rules/lib.rules" as a\nimport "sub/../lib.rules" as b\nimport "sub/deeper.rules" as c\n'
          'import "shared-link/lib.rules" as d\n\n' + ROUTE)  # a link inside to a folder outside: no
    status, output = lint(["rules/main.rules"], capsys)
    assert status == 1
    assert output.count("error") == 1 + 1  # the finding and the summary line
    assert "rules/main.rules:4:8: error import cannot import 'shared-link/lib.rules': it is outside" in output


def test_the_configuration_adds_folders(site, capsys):
    write(site / "rules" / "main.rules", 'import "../shared/lib.rules" as lib\ntable sites from "../shared/sites.csv"\n'
          '\nrule "all" {\n  then {\n    apply lib.tag\n    route to PACS\n  }\n}\n')
    assert lint(["rules/main.rules"], capsys)[0] == 1  # without the configuration: outside
    status, output = lint(["--config", "router.yaml", "rules/main.rules"], capsys)
    assert status == 0, output
    assert main(["check-config", "router.yaml"]) == 0
    capsys.readouterr()
    assert main(["dry-run", "--config", "router.yaml", "rules/main.rules", CT]) == 0
    assert "InstitutionName" in capsys.readouterr().out
    write(site / "rules" / "main.rules", 'import "../private/lib.rules" as lib\n\n' + ROUTE)
    status, output = lint(["--config", "router.yaml", "rules/main.rules"], capsys)
    assert status == 1 and "only files inside rules/, shared/ are read" in output


def test_test_and_dry_run_refuse_it_and_show_nothing_of_the_file(site, capsys):
    write(site / "rules" / "main.rules", USES_LIBRARY.format(file="../private/secret.rules"))
    write(site / "rules" / "main_test.rules", 'test "t" {\n  expect route to PACS\n}\n')
    assert main(["test", "rules/main_test.rules"]) == 1
    out, err = capsys.readouterr()
    assert "rules/main.rules:1:8: error import cannot import '../private/secret.rules'" in err
    assert "its tests did not run: rules/main.rules does not compile" in err
    assert main(["dry-run", "rules/main.rules", CT]) == 1
    out2, err2 = capsys.readouterr()
    assert "rules/main.rules:1:8: error import" in err2
    for text in (out, err, out2, err2):
        assert "TOP-SECRET" not in text


def test_check_config_refuses_it(site, capsys):
    write(site / "rules" / "main.rules", 'table t from "/etc/passwd"\n\n' + ROUTE)
    assert main(["check-config", "router.yaml"]) == 1
    out, err = capsys.readouterr()
    assert "rules/main.rules:1:14: error table cannot read table '/etc/passwd': it is outside" in out + err
    assert "root:" not in out + err


def test_a_table_that_is_not_utf8_is_reported_at_its_statement_without_its_content(site, capsys):
    (site / "rules" / "people.csv").write_bytes(b"name,id\n" + b"M\xfcller-TOP-SECRET,1\n")
    write(site / "rules" / "main.rules", 'table people from "people.csv"\n\n' + ROUTE)
    status, output = lint(["rules/main.rules"], capsys)
    assert status == 1
    assert "rules/main.rules:1:1: error encoding rules/people.csv is not UTF-8 text: byte 0xFC at line 2, column 2" \
        in output
    assert "TOP-SECRET" not in output


def test_the_router_keeps_its_rules_when_a_reload_would_read_outside(site, caplog):
    write(site / "rules" / "main.rules", USES_LIBRARY.format(file="../shared/lib.rules"))
    config = load_config(str(site / "router.yaml"), secrets=False)
    holder = RulesHolder(config)
    running = holder.current.version
    caplog.set_level(logging.INFO, logger="rulesengine")
    for statement in ('import "../private/secret.rules" as lib', 'import "linked.rules" as lib',
                      'import "notes.txt" as lib', f'import "{site}/private/secret.rules" as lib'):
        write(site / "rules" / "main.rules", statement + "\n\nrule \"all\" {\n  then route to PACS\n}\n")
        assert holder.reload() is False
        assert holder.current.version == running
        assert "the changed rules do not compile; the running rules (version" in caplog.text
        assert "error import cannot import" in caplog.text
        assert "TOP-SECRET" not in caplog.text
        caplog.clear()
    write(site / "rules" / "main.rules", USES_LIBRARY.format(file="../shared/lib.rules").replace("PACS", "PACS "))
    assert holder.reload() is True and holder.current.version != running


def test_lint_and_test_of_a_folder_let_its_files_read_inside_it(site, capsys):
    # A library in rules/profiles/ reads a table of rules/tables/: fine when the rules folder is linted,
    # as it is when main.rules imports it; not when the library alone is linted.
    write(site / "rules" / "tables" / "sites.csv", "aet,site\nCT1,EAST\n")
    write(site / "rules" / "profiles" / "tag.rules", 'table sites from "../tables/sites.csv"\n\n'
          'block tag {\n  set DataSet.InstitutionName = lookup(sites.site, Association.CallingAET, "?")\n}\n')
    write(site / "rules" / "main.rules", USES_LIBRARY.format(file="profiles/tag.rules"))
    write(site / "rules" / "main_test.rules", 'test "t" {\n  expect route to PACS\n}\n')
    for name in ("notes.txt", "linked.rules", "linked.csv"):
        (site / "rules" / name).unlink()
    status, output = lint(["rules"], capsys)
    assert status == 0, output
    status, output = lint(["rules/profiles/tag.rules"], capsys)
    assert status == 1 and "cannot read table '../tables/sites.csv': it is outside" in output
    assert main(["test", "rules"]) == 0
