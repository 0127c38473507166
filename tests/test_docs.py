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

docs/porting.md's tables hold rules as code spans too: every snippet written out whole lints with
no finding, and the forms pasted from other tools give what the page says (see below).

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
from rulesengine.lang.api import analyse
from rulesengine.lang.functions import FUNCTIONS
from rulesengine.lang.loader import load_program
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


# ---- docs/porting.md: the snippets of its tables -------------------------------------------
#
# A table has the other tool's column first, then "Here" (or "Rules language"), then "Example"
# where there is one. What the test expects of a snippet (a `code span`) depends on its column:
#
# - Example: a complete action, condition, top-level item or value: it lints with no finding.
# - Here: a statement, a path (or list of paths) or a filter condition written out whole lints
#   with no finding. Forms with placeholders (PATH, SEQ, NAME, `...` standing for a body or a
#   value) and the names of constructs, functions, blocks and files are not rules to lint; a
#   `...` that stands for more entries of a list is left out before the check.
# - the other tool's column: what a reader pastes. Where the page says what lint makes of it
#   (a private tag "is the error `private-by-tag`", a DicomFilter signature), it says so.

PORTING = DOCS / "porting.md"
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # `\|` is a | inside a cell, as Markdown renders it
_SPAN = re.compile(r"`([^`]+)`")
_LIST_ELISION = re.compile(r",\s*\.\.\.(?=\s*[\]\n]|$)|\.\.\.,\s*")
# An upper-case word outside strings and regular expressions: a placeholder (PATH, SEQ, X).
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|/(?:\\.|[^/\\\n])+/[a-z]*')
_PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]*\b")
# A bare lower-case name as an argument: a parameter of a function's signature (`hash(s, length, ...)`)
# or the loop variable of a `for each` the cell names (`uid(e)` in `for each e in DataSet.X`).
_PARAMETER = re.compile(r"[(,]\s*(?!x+\s*[,)])[a-z]\w*\s*(?=[,)])")  # not a tag mask's xxxx
_CONSTRUCT_NAMES = {"set", "blank", "delete", "keep only", "blank pixels", "when", "and", "if", "else if", "with"}
_ACTION_WORDS = {"set", "blank", "delete", "copy", "append", "apply", "keep", "log", "if", "for", "route", "let"}
_FILTER_PROPERTIES = {"VR", "Keyword", "Tag", "Group", "Creator", "private"}


@dataclass(frozen=True)
class PortingRow:
    line: int
    cells: dict[str, str]  # column header -> cell, with `\|` read as |

    def spans(self, column: str) -> list[str]:
        return _SPAN.findall(self.cells.get(column, ""))


def porting_rows() -> list[PortingRow]:
    rows, header = [], None
    for number, line in enumerate(PORTING.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip().replace("\\|", "|") for cell in _CELL_SEPARATOR.split(line.strip().strip("|"))]
        if header is None:
            header = cells
        elif set(line) - set("|-"):
            assert len(cells) == len(header), f"porting.md:{number}: {len(cells)} cells under {len(header)} columns"
            rows.append(PortingRow(number, dict(zip(header, cells))))
    return rows


def _lint(source: str) -> list:
    """The findings of `source` as a rule file of the rules folder, beside profiles/; `deid` names the
    profile's options and DATEINC the constant the CTP rows use. `blank pixels` may change a transfer
    syntax (`pixels-transcoded`): the one warning a snippet may have, left out."""
    preamble = 'import "profiles/basic-confidentiality-options.rules" as deid\n'
    if "DATEINC" in source and "const DATEINC" not in source:
        preamble += "const DATEINC = -3210\n"
    try:
        program = load_program(text=preamble + source, filename=str(ROOT / "rules" / "porting_check.rules"))
        findings = analyse(program).diagnostics
    except rulesengine.RulesError as exc:
        findings = exc.diagnostics
    return [d for d in findings if d.code != "pixels-transcoded"]


_CATCH_ALL = 'rule "rest" {\n  then route to A\n}\n'


def _as_actions(actions: str) -> str:
    return f'rule "r" {{\n  then {{\n    {actions}\n    route to A\n  }}\n}}\n'


def as_rule_file(snippet: str) -> str:
    """A snippet (a top-level item, a `when` condition, an action, a path or paths, a filter condition
    or a value) in the smallest rule file that uses it."""
    first = snippet.split(" ")[0]
    if snippet.startswith(("const ", "fallback rule ")):
        return f"{snippet}\n{_CATCH_ALL}"
    if first == "when":
        return f'rule "r" {{\n  {snippet}\n  then route to A\n}}\n{_CATCH_ALL}'
    if first in _ACTION_WORDS:
        return _as_actions(snippet)
    if snippet.startswith("DataSet."):  # paths, as a keep list has them
        return _as_actions(f"keep only DataSet.SOPClassUID, DataSet.SOPInstanceUID, {snippet}")
    if first in _FILTER_PROPERTIES:
        return _as_actions(f"delete DataSet.**.*[{snippet}]")
    return _as_actions(f"log {snippet}")


def is_written_out(span: str) -> bool:
    """A rules snippet written out whole (no placeholder, no elided body or value, not a name)."""
    if span in _CONSTRUCT_NAMES or span.endswith((".rules", "()")) or re.fullmatch(r"[a-z_]+(-[a-z]+)*", span):
        return False  # a construct, a file, a function, a block or a finding code, by its name
    bare = _QUOTED.sub('""', _LIST_ELISION.sub("", span))
    return "..." not in bare and not _PLACEHOLDER.search(bare) and not _PARAMETER.search(bare)


def unelided(span: str) -> str:
    """A snippet with the `...` of its lists left out; a keep list elided keeps what an instance needs."""
    whole = _LIST_ELISION.sub("", span)
    if whole != span and whole.startswith("keep only ") and not whole.startswith("keep only private ") \
            and "DataSet.SOPInstanceUID" not in whole:
        whole = whole.replace("keep only ", "keep only DataSet.SOPClassUID, DataSet.SOPInstanceUID, ", 1)
    return whole


def porting_snippets() -> list[tuple[int, str]]:
    """(line, snippet) for every snippet of the porting page's tables that must lint with no finding."""
    found = []
    for row in porting_rows():
        found += [(row.line, span) for span in row.spans("Example")]
        for column in ("Here", "Rules language"):
            found += [(row.line, unelided(span)) for span in row.spans(column) if is_written_out(span)]
    return found


def test_the_porting_page_is_read_whole():
    rows = porting_rows()
    assert len(rows) >= 60
    assert {column for row in rows for column in row.cells} >= {"CTP", "deid", "Here", "Rules language", "Example"}
    snippets = [snippet for _, snippet in porting_snippets()]
    assert len(snippets) >= 60
    # A snippet of each kind: a Here cell's statement with its list elided, a path list, a filter
    # condition, a regular expression with a | (written \| in the table).
    assert 'delete private except ["SIEMENS CSA HEADER"]' in snippets
    assert "DataSet.(0018,xxxx), DataSet.(0020,xxxx), DataSet.(0028,xxxx)" in snippets
    assert 'keep only DataSet.SOPClassUID, DataSet.SOPInstanceUID, DataSet.(0043,"GEMS_PARM_01",xx)' in snippets
    assert 'Keyword endswith "Date"' in snippets
    assert "blank DataSet.**.*[not (Keyword matches /StudyDate|StudyTime/)]" in snippets
    for form in ("copy PATH to PATH", "append to SEQ as NAME { ... }", "for each e in DataSet.X", "set PATH = ...",
                 "lower(...) contains", "shift_date()", "keep only", "retain_uids", "private-by-tag",
                 "hash(s, length, alphabet)", "uid(e)", "split(s, sep)[n]"):
        assert not is_written_out(form), form


@pytest.mark.parametrize("line, snippet", porting_snippets(), ids=[f"porting.md:{line}" for line, _ in porting_snippets()])
def test_a_porting_snippet_lints_clean(line, snippet):
    findings = _lint(as_rule_file(snippet))
    assert [d.one_line() for d in findings] == [], f"porting.md:{line}: {snippet}"


def test_the_porting_page_rule_files_lint_clean():
    blocks = [block for block in fenced_blocks(PORTING) if block.lang == "rules"]
    assert blocks
    for block in blocks:
        assert [d.one_line() for d in _lint(block.text)] == [], block.where


def test_a_private_tag_pasted_from_ctp_is_the_error_the_porting_page_names():
    [row] = [row for row in porting_rows() if "is the error `" in row.cells.get("Rules language", "")]
    code = re.search(r"is the error `([a-z-]+)`", row.cells["Rules language"]).group(1)
    [tag] = row.spans("CTP")
    findings = _lint(as_rule_file(f"delete DataSet.{tag}"))
    assert [(d.code, d.severity.value) for d in findings] == [(code, "error")]
    assert '"CREATOR"' in findings[0].hint  # and says how to name it


def test_a_dicomfilter_signature_pasted_gets_the_rewrite_the_porting_page_gives():
    # "`when` with `and`; `lower(...) contains` for a case-insensitive test"
    [row] = [row for row in porting_rows() if row.cells.get("CTP", "").startswith("signature ")]
    [signature] = row.spans("CTP")
    condition = signature.strip("{} ")
    findings = _lint(as_rule_file(f"when {condition}"))
    assert [d.code for d in findings] == ["syntax"]
    assert findings[0].hint == 'write lower(DataSet.(0008,0070)) contains "ge medical"'
    [example] = row.spans("Example")
    assert 'lower(DataSet.Manufacturer) contains "ge medical"' in example
