"""The code examples in docs/*.md are real: every one is compiled, checked or run.

Conventions of the pages (docs/language.md describes the language itself):

- ```rules      a complete rule file. It must compile with no error findings.
                A ```rules block that contains `test "` is a test file instead: it
                is written as example_test.rules beside the ```rules block before
                it (written as example.rules), and `dicom-rules test` must pass.
- ```rules-error  a rule file that shows a finding on purpose. Its first line is
                `# error: CODE` or `# warning: CODE`. An error example must give
                errors of that code only; a warning example must give no error.
                One that contains `test "` is a test file, as above.
- ```csv        a table. Its first line, `# NAME.csv`, names the file and is not
                part of it. Every named table of a page is written next to every
                rule file of that page.
- ```text and others are fragments or output: not run.

Each example runs in a fresh folder laid out like the project: the rule file
sits in rules/, beside profiles/basic-confidentiality.rules (and its options) and tables/, and the
samples are in ../examples/samples/, so `given file "../examples/samples/..."`
works as it does in rules/main_test.rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import rulesengine
from rulesengine.diagnostics import render_text
from rulesengine.lang.functions import FUNCTIONS
from rulesengine.ruletest import check_test_file

from helpers.files import ROOT, SAMPLES

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LANGUAGE = DOCS / "language.md"

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([A-Za-z0-9_-]*)[^`]*$")
_EXPECTED = re.compile(r"^#\s*(error|warning):\s*([a-z][a-z-]*)\s*$")
_CSV_NAME = re.compile(r"^#\s*([\w./-]+\.csv)\s*$")
_TEST = re.compile(r'\btest\s+"')


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # the line of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def is_test_file(self) -> bool:
        return bool(_TEST.search(self.text))


def fenced_blocks(page: Path) -> list[Block]:
    """Every fenced code block of a Markdown page, in order."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        marker, lang, start = opening.group(1), opening.group(2).lower(), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not _closes(lines[i], marker):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{page.name}:{start}: a code block is not closed"
        blocks.append(Block(page, start, lang, "\n".join(body) + "\n"))
        i += 1
    return blocks


def _closes(line: str, marker: str) -> bool:
    text = line.strip()
    return len(text) >= len(marker) and set(text) == {marker[0]}


def page_tables(blocks: list[Block]) -> dict[str, str]:
    """The ```csv blocks of a page that name their file: name -> content."""
    tables: dict[str, str] = {}
    for block in blocks:
        if block.lang != "csv":
            continue
        first, _, rest = block.text.partition("\n")
        named = _CSV_NAME.match(first.strip())
        if named:
            assert named.group(1) not in tables, f"{block.where}: a second table named {named.group(1)}"
            tables[named.group(1)] = rest
    return tables


@dataclass(frozen=True)
class Case:
    block: Block
    rules: Block | None  # for a test file: the ```rules block it tests
    tables: tuple[tuple[str, str], ...]


def cases() -> list[Case]:
    found: list[Case] = []
    for page in PAGES:
        blocks = fenced_blocks(page)
        tables = tuple(sorted(page_tables(blocks).items()))
        tested: Block | None = None
        for block in blocks:
            if block.lang not in ("rules", "rules-error"):
                continue
            found.append(Case(block, tested if block.is_test_file else None, tables))
            if block.lang == "rules" and not block.is_test_file:
                tested = block
    return found


CASES = cases()


def workspace(root: Path, case: Case) -> Path:
    """A folder laid out like the project; returns its rules/ folder."""
    rules = root / "rules"
    (rules / "profiles").mkdir(parents=True)
    shutil.copy(ROOT / "rules" / "profiles" / "basic-confidentiality.rules", rules / "profiles")
    shutil.copy(ROOT / "rules" / "profiles" / "basic-confidentiality-options.rules", rules / "profiles")
    shutil.copytree(ROOT / "rules" / "tables", rules / "tables")
    shutil.copytree(SAMPLES, root / "examples" / "samples")
    for name, content in case.tables:
        target = rules / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return rules


def _write_pair(rules: Path, case: Case) -> Path:
    """A test file and the rule file it tests; returns the test file."""
    assert case.rules is not None, f"{case.block.where}: a test file needs a ```rules block before it"
    (rules / "example.rules").write_text(case.rules.text, encoding="utf-8")
    test_file = rules / "example_test.rules"
    test_file.write_text(case.block.text, encoding="utf-8")
    return test_file


def _shown(diagnostics) -> str:
    return render_text(diagnostics) or "(no findings)"


def _dicom_rules() -> list[str]:
    script = Path(sys.executable).with_name("dicom-rules")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rulesengine"]


def test_the_pages_have_examples():
    assert LANGUAGE in PAGES
    assert any(case.block.page == LANGUAGE for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.block.where for case in CASES])
def test_example(case: Case, tmp_path, monkeypatch):
    rules = workspace(tmp_path, case)
    monkeypatch.chdir(rules)  # findings then show short file names
    block = case.block
    if block.lang == "rules" and block.is_test_file:
        test_file = _write_pair(rules, case)
        result = subprocess.run(_dicom_rules() + ["test", "--verbose", test_file.name], cwd=rules,
                                capture_output=True, text=True, encoding="utf-8")
        assert result.returncode == 0, f"{block.where}: dicom-rules test failed\n{result.stdout}{result.stderr}"
        return
    if block.lang == "rules":
        path = rules / "example.rules"
        path.write_text(block.text, encoding="utf-8")
        findings = rulesengine.check_file(path.name)
        errors = [d for d in findings if d.is_error]
        assert not errors, f"{block.where}: the example has errors\n{_shown(findings)}"
        rulesengine.compile_file(path.name)  # and the compiler takes it
        return
    # rules-error: the finding its first line names
    expected = _EXPECTED.match(block.text.partition("\n")[0].strip())
    assert expected, f"{block.where}: a rules-error block starts with `# error: CODE` or `# warning: CODE`"
    severity, code = expected.groups()
    if block.is_test_file:
        findings = check_test_file(str(_write_pair(rules, case).name))
    else:
        path = rules / "example.rules"
        path.write_text(block.text, encoding="utf-8")
        findings = rulesengine.check_file(path.name)
    assert any(d.code == code and d.severity.value == severity for d in findings), \
        f"{block.where}: expected {severity} {code}\n{_shown(findings)}"
    errors = {d.code for d in findings if d.is_error}
    if severity == "error":
        assert errors == {code}, f"{block.where}: errors other than {code}\n{_shown(findings)}"
    else:
        assert not errors, f"{block.where}: a warning example must have no errors\n{_shown(findings)}"


# ---- the reference covers the language ---------------------------------------------------

_FINDING_CALL = re.compile(r'\b(?:error|warning|_error|_warn|NodeError)\(\s*"([a-z][a-z-]*)"')
_FINDING_ROW = re.compile(r"^\|\s*`([a-z][a-z-]*)`\s*\|\s*(error|warning|error, warning)\s*\|", re.M)


def _finding_codes() -> set[str]:
    """Codes of findings about rule files (the router's own, about its configuration, are in docs/cli.md)."""
    codes: set[str] = set()
    for source in (ROOT / "rulesengine").rglob("*.py"):
        if "runtime" not in source.parts:
            codes.update(_FINDING_CALL.findall(source.read_text(encoding="utf-8")))
    return codes


def test_every_finding_code_is_listed():
    listed = set(_FINDING_ROW.findall(LANGUAGE.read_text(encoding="utf-8")))
    listed_codes = {code for code, _ in listed}
    codes = _finding_codes()
    assert codes, "no finding codes found in the sources"
    assert not codes - listed_codes, f"findings missing from docs/language.md: {sorted(codes - listed_codes)}"
    assert not listed_codes - codes, f"docs/language.md lists codes that do not exist: {sorted(listed_codes - codes)}"


def test_every_function_is_listed():
    text = LANGUAGE.read_text(encoding="utf-8")
    missing = [name for name in FUNCTIONS if not re.search(rf"^\|\s*`{name}\(", text, re.M)]
    assert not missing, f"functions missing from the table in docs/language.md: {missing}"
