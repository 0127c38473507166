"""`dicom-rules fmt`: golden layouts, properties every formatted file must keep, and the CLI."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rulesengine
from rulesengine.diagnostics import RulesError
from rulesengine.lang import nodes as n
from rulesengine.lang.formatter import format_source
from rulesengine.lang.grammar import parser
from rulesengine.lang.syntax import parse

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("fmt")
GOLDEN_INPUTS = sorted(p for p in GOLDEN.glob("*.rules") if not p.name.endswith(".formatted.rules"))
REPO_RULE_FILES = sorted(p for folder in ("rules", "examples") for p in (REPO / folder).rglob("*.rules"))


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---- helpers -------------------------------------------------------------------

# Fields that record where or how something was written, not what it means:
# `then { x }` and `then x` are the same rule.
LAYOUT_FIELDS = {(n.Rule, "braced")}


def without_layout(node):
    """`node` as plain data, without spans and layout-only fields, for comparing trees."""
    if isinstance(node, (list, tuple)):
        return [without_layout(item) for item in node]
    if dataclasses.is_dataclass(node):
        fields = {
            f.name: without_layout(getattr(node, f.name))
            for f in dataclasses.fields(node)
            if not f.name.endswith("span") and (type(node), f.name) not in LAYOUT_FIELDS
        }
        return (type(node).__name__, fields)
    return node


def comment_texts(text: str) -> list[str]:
    return [c.text for c in parse(text).comments]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_without_layout_sees_meaningful_differences_only():
    a = parse('rule "r" {\n  then { drop }\n}\n').items
    b = parse('rule "r" { then drop }').items
    c = parse('rule "r" { then stop }').items
    assert without_layout(a) == without_layout(b)
    assert without_layout(a) != without_layout(c)


# ---- golden files --------------------------------------------------------------


def test_there_are_golden_files():
    assert len(GOLDEN_INPUTS) >= 8
    for source in GOLDEN_INPUTS:
        assert source.with_suffix(".formatted.rules").is_file(), f"{source.name} has no .formatted.rules"


@pytest.mark.parametrize("source", GOLDEN_INPUTS, ids=lambda p: p.stem)
def test_golden_layout(source: Path):
    expected = read(source.with_suffix(".formatted.rules"))
    assert format_source(read(source), str(source)) == expected


@pytest.mark.parametrize("source", GOLDEN_INPUTS, ids=lambda p: p.stem)
def test_golden_output_is_already_canonical(source: Path):
    expected = read(source.with_suffix(".formatted.rules"))
    assert format_source(expected) == expected


@pytest.mark.parametrize("name", ["language_tour.rules", "language_tour.formatted.rules"])
def test_the_language_tour_lints_without_warnings(name, tmp_path):
    # Beside the profile and the tables it names, as in rules/. Its one error is by design: the
    # tour shows a test too, which belongs in a _test.rules file.
    shutil.copy(GOLDEN / name, tmp_path / name)
    (tmp_path / "profiles").mkdir()
    shutil.copy(REPO / "rules" / "profiles" / "basic-confidentiality.rules", tmp_path / "profiles")
    shutil.copytree(REPO / "rules" / "tables", tmp_path / "tables")
    findings = rulesengine.check_file(tmp_path / name)
    assert [d.code for d in findings if d.is_error] == ["misplaced-test"]
    assert [d.one_line() for d in findings if not d.is_error] == []


# ---- properties of every formatted file ----------------------------------------


@pytest.mark.parametrize("source", GOLDEN_INPUTS + REPO_RULE_FILES, ids=_id)
def test_formatting_keeps_meaning_comments_and_is_idempotent(source: Path):
    text = read(source)
    formatted = format_source(text, str(source))
    assert without_layout(parse(formatted).items) == without_layout(parse(text).items)
    assert comment_texts(formatted) == comment_texts(text)
    assert format_source(formatted) == formatted


def with_a_comment_after_every_token(text: str, own_line: bool) -> str:
    """`text` with `# cN` after each token, at the end of the line or on a line of its own."""
    pieces, last = [], 0
    for number, token in enumerate(parser().lex(text), 1):
        pieces += [text[last:token.end_pos], f"\n# c{number}\n" if own_line else f"  # c{number}\n"]
        last = token.end_pos
    return "".join(pieces) + text[last:]


@pytest.mark.parametrize("own_line", [False, True], ids=["trailing", "own-line"])
@pytest.mark.parametrize("source", GOLDEN_INPUTS + REPO_RULE_FILES, ids=_id)
def test_comments_anywhere_are_kept_in_order(source: Path, own_line: bool):
    text = with_a_comment_after_every_token(read(source), own_line)
    formatted = format_source(text)
    assert comment_texts(formatted) == comment_texts(text)
    assert without_layout(parse(formatted).items) == without_layout(parse(read(source)).items)
    assert format_source(formatted) == formatted


@pytest.mark.parametrize("source", GOLDEN_INPUTS + REPO_RULE_FILES, ids=_id)
def test_formatted_lines_are_clean(source: Path):
    formatted = format_source(read(source))
    assert formatted.endswith("\n") and not formatted.endswith("\n\n")
    assert "\n\n\n" not in formatted
    for line in formatted.split("\n"):
        assert line == line.rstrip(), f"trailing space: {line!r}"
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and not line[indent:].startswith("\t"), f"bad indentation: {line!r}"


# ---- small cases ---------------------------------------------------------------


def test_empty_file_stays_empty():
    assert format_source("") == ""
    assert format_source("\n\n  \n") == ""


def test_a_file_of_comments_only():
    assert format_source("  # one\n\n\n# two   \n") == "# one\n\n# two\n"


def test_one_action_goes_on_the_then_line():
    assert format_source('rule "r" { then { drop } }') == 'rule "r" {\n  then drop\n}\n'


def test_several_actions_get_braces():
    assert format_source('rule "r" { then drop stop }') == 'rule "r" {\n  then {\n    drop\n    stop\n  }\n}\n'


def test_a_comment_after_the_next_opening_brace_stays_inside_that_block():
    formatted = format_source('block a {} test "t" {  # inside the test\n}')
    assert formatted == 'block a {}\n\ntest "t" {  # inside the test\n}\n'


def test_a_comment_between_branches_stays_in_the_branch_above():
    formatted = format_source('block b {\n  if a {\n    drop\n  }  # end of a\n  else { stop } }')
    assert formatted == 'block b {\n  if a {\n    drop\n    # end of a\n  } else {\n    stop\n  }\n}\n'


def test_windows_line_endings_become_newlines():
    formatted = format_source('rule "r" {\r\n  then drop  # why\r\n}\r\n')
    assert formatted == 'rule "r" {\n  then drop  # why\n}\n'


@pytest.mark.parametrize("source, expected", [
    ('"a\\"b\\\\c"', '"a\\"b\\\\c"'),
    ('"tab\\there\\nnewline"', '"tab\\there\\nnewline"'),
    ('"\\u00e9t\\u00E9 \\/ x"', '"été / x"'),
    ('"bell\\u0007"', '"bell\\u0007"'),
    ('"日本"', '"日本"'),
])
def test_strings_are_escaped_canonically(source, expected):
    formatted = format_source(f'rule "r" {{ then log {source} }}')
    assert formatted == f'rule "r" {{\n  then log {expected}\n}}\n'


def test_private_creator_with_quote_and_backslash_round_trips():
    text = 'rule "r" { then delete DataSet.(0009,"A\\"B\\\\C",10) }'
    formatted = format_source(text)
    assert 'DataSet.(0009,"A\\"B\\\\C",10)' in formatted
    assert without_layout(parse(formatted).items) == without_layout(parse(text).items)


@pytest.mark.parametrize("condition, expected", [
    ("(a == 1)", "a == 1"),
    ("((a == 1) and (b == 2)) or c", "a == 1 and b == 2 or c"),
    ("a and (b or c)", "a and (b or c)"),
    ("(a and b) and c", "(a and b) and c"),
    ("a or (b or c)", "a or (b or c)"),
    ("not (a and b)", "not (a and b)"),
    ("not (not a)", "not not a"),
    ("(a + b) + c == d", "(a + b) + c == d"),
    ("a + (b + c) == (d)", "a + (b + c) == d"),
    ("(a == b) == c", "(a == b) == c"),
    ("any x in P.Q: (x.A == 1 and x.B == 2)", "any x in P.Q: (x.A == 1 and x.B == 2)"),
    ("(any x in P.Q: x.A == 1) and b", "any x in P.Q: x.A == 1 and b"),
    ("all x in P.Q: not (x.A or x.B)", "all x in P.Q: not (x.A or x.B)"),
    ("(not a) == b", "(not a) == b"),
    ("f((a or b), [(c)])", "f(a or b, [c])"),
])
def test_parentheses_only_where_precedence_needs_them(condition, expected):
    formatted = format_source(f'rule "r" {{ when {condition} then drop }}')
    assert formatted.split("\n")[1] == f"  when {expected}"
    assert without_layout(parse(formatted).items) == \
        without_layout(parse(f'rule "r" {{ when {condition} then drop }}').items)


def test_a_condition_that_fits_in_100_columns_stays_on_one_line():
    padding = "x" * (100 - len('  when DataSet.PatientID == "" and a == 1'))
    condition = f'DataSet.PatientID == "{padding}" and a == 1'
    line = f"  when {condition}"
    assert len(line) == 100
    assert format_source(f'rule "r" {{ when {condition} then drop }}').split("\n")[1] == line
    longer = condition.replace("a == 1", "ab == 1")
    assert format_source(f'rule "r" {{ when {longer} then drop }}').split("\n")[1:3] == [
        f"  when {longer.split(' and ')[0]}", "    and ab == 1"]


def _pixels(regions: list[str], fill: str = "") -> str:
    return f'rule "r" {{\n  then blank pixels {", ".join(regions)}{fill}\n}}\n'


def test_blank_pixels_regions_that_fit_in_100_columns_stay_on_one_line():
    regions = [f"({i}, 0, 99, 99)" for i in range(4)] + ["(4, 0, 9999, 99)"]
    text = _pixels(regions)
    assert len(text.split("\n")[1]) == 100
    assert format_source(text) == text
    longer = _pixels(regions[:-1] + ["(4, 0, 99999, 99)"])
    assert format_source(longer).split("\n")[1:3] == ["  then blank pixels (0, 0, 99, 99),", "    (1, 0, 99, 99),"]


def test_a_long_blank_pixels_list_breaks_after_its_commas_as_keep_only_does():
    regions = ["(0, 0, DataSet.Columns, 47)", "(0, DataSet.Rows - 30, DataSet.Columns, 30)", "(724, 0, 300, 150)"]
    formatted = format_source(_pixels(regions, " with [0, 0, 0]"))
    assert formatted.split("\n")[1:5] == [
        "  then blank pixels (0, 0, DataSet.Columns, 47),",
        "    (0, DataSet.Rows - 30, DataSet.Columns, 30),",
        "    (724, 0, 300, 150) with [0, 0, 0]",
        "}",
    ]
    assert format_source(formatted) == formatted
    assert without_layout(parse(formatted).items) == without_layout(parse(_pixels(regions, " with [0, 0, 0]")).items)
    # keep only, at the same depth, breaks the same way
    keep = format_source('rule "r" { then keep only DataSet.SOPClassUID, DataSet.SOPInstanceUID, '
                         'DataSet.StudyInstanceUID, DataSet.SeriesInstanceUID }')
    assert keep.split("\n")[1:3] == ["  then keep only DataSet.SOPClassUID,", "    DataSet.SOPInstanceUID,"]


def test_a_nested_blank_pixels_list_counts_its_indentation():
    regions = [f"({i}, 0, 99, 99)" for i in range(5)]
    nested = f'rule "r" {{ then copy to A {{ blank pixels {", ".join(regions[:5])} with 128 }} }}'
    lines = format_source(nested).split("\n")
    assert lines[2:4] == ["    blank pixels (0, 0, 99, 99),", "      (1, 0, 99, 99),"]
    assert lines[6] == "      (4, 0, 99, 99) with 128"
    assert all(len(line) <= 100 for line in lines)
    assert format_source(format_source(nested)) == format_source(nested)


def test_one_blank_pixels_region_longer_than_a_line_stays_whole():
    region = "(DataSet.Columns - DataSet.Rows, DataSet.Rows - DataSet.Columns, DataSet.Columns, DataSet.Rows)"
    formatted = format_source(_pixels([region], " with 128"))
    assert formatted.split("\n")[1] == f"  then blank pixels {region} with 128"


def test_syntax_errors_raise_with_a_position():
    with pytest.raises(RulesError) as caught:
        format_source('rule "r" {\n  when a ==\n  then drop\n}\n', "bad.rules")
    (finding,) = caught.value.diagnostics
    assert (finding.span.file, finding.span.line) == ("bad.rules", 3)


# ---- the command line ----------------------------------------------------------

MESSY = 'rule "r" {when DataSet.Modality=="CT" then   drop}\n'
TIDY = 'rule "r" {\n  when DataSet.Modality == "CT"\n  then drop\n}\n'


def run_fmt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rulesengine", "fmt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder with a messy file, a tidy file and a messy test file one level down."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "messy.rules").write_text(MESSY)
    (tmp_path / "tidy.rules").write_text(TIDY)
    (tmp_path / "sub" / "messy_test.rules").write_text('test "t" {expect   drop}\n')
    (tmp_path / "notes.txt").write_text("not a rule file {")
    return tmp_path


def test_fmt_rewrites_changed_files_in_place(tree: Path):
    os.chmod(tree / "messy.rules", 0o640)
    tidy_mtime = (tree / "tidy.rules").stat().st_mtime_ns
    result = run_fmt(".", cwd=tree)
    assert result.returncode == 0, result.stderr
    assert read(tree / "messy.rules") == TIDY
    assert read(tree / "sub" / "messy_test.rules") == 'test "t" {\n  expect drop\n}\n'
    assert (tree / "tidy.rules").stat().st_mtime_ns == tidy_mtime
    assert (tree / "messy.rules").stat().st_mode & 0o777 == 0o640
    reported = result.stdout + result.stderr
    assert f"reformatted {os.path.join('.', 'messy.rules')}" in reported
    assert f"reformatted {os.path.join('.', 'sub', 'messy_test.rules')}" in reported
    assert "tidy.rules" not in reported
    assert sorted(p.name for p in tree.rglob("*")) == ["messy.rules", "messy_test.rules", "notes.txt",
                                                       "sub", "tidy.rules"]


def test_fmt_on_tidy_files_changes_nothing(tree: Path):
    result = run_fmt("tidy.rules", cwd=tree)
    assert result.returncode == 0
    assert "reformatted" not in result.stdout + result.stderr
    assert read(tree / "tidy.rules") == TIDY


def test_fmt_check_reports_and_writes_nothing(tree: Path):
    result = run_fmt("--check", ".", cwd=tree)
    assert result.returncode == 1
    assert f"would reformat {os.path.join('.', 'messy.rules')}" in result.stdout + result.stderr
    assert read(tree / "messy.rules") == MESSY
    assert run_fmt("--check", "tidy.rules", cwd=tree).returncode == 0


def test_fmt_diff_prints_a_unified_diff_and_writes_nothing(tree: Path):
    result = run_fmt("--diff", "messy.rules", "tidy.rules", cwd=tree)
    assert result.returncode == 0
    assert read(tree / "messy.rules") == MESSY
    assert "--- messy.rules" in result.stdout and "+++ messy.rules" in result.stdout
    assert "-" + MESSY in result.stdout
    assert "+  when DataSet.Modality == \"CT\"\n" in result.stdout
    assert "tidy.rules" not in result.stdout


def test_fmt_check_with_diff_fails_and_shows_the_diff(tree: Path):
    result = run_fmt("--check", "--diff", "messy.rules", cwd=tree)
    assert result.returncode == 1
    assert "+  then drop\n" in result.stdout


def test_fmt_reports_syntax_errors_and_goes_on(tree: Path):
    (tree / "broken.rules").write_text('rule "r" {\n  when a ==\n  then drop\n}\n')
    result = run_fmt("broken.rules", "messy.rules", cwd=tree)
    assert result.returncode == 1
    assert "broken.rules:3:3:" in result.stderr
    assert read(tree / "broken.rules") == 'rule "r" {\n  when a ==\n  then drop\n}\n'
    assert read(tree / "messy.rules") == TIDY


def test_fmt_on_a_missing_path_is_a_usage_error(tree: Path):
    result = run_fmt("nowhere.rules", cwd=tree)
    assert result.returncode == 2
    assert "nowhere.rules" in result.stderr


@pytest.mark.parametrize("path, expected", [
    ('DataSet.*[ VR=="PN" ]', 'DataSet.*[VR == "PN"]'),
    ("DataSet.**.*", "DataSet.**.*"),
    ('DataSet.**.*[(private) and (Creator in ["A","B"])]', 'DataSet.**.*[private and Creator in ["A", "B"]]'),
    ('DataSet.*[not (VR == "DA" or public)]', 'DataSet.*[not (VR == "DA" or public)]'),
    ('DataSet.*[(a == 1 or b == 2) and c == 3]', 'DataSet.*[(a == 1 or b == 2) and c == 3]'),
    ('DataSet.*[Keyword matches /a\\/b/i]', 'DataSet.*[Keyword matches /a\\/b/i]'),
])
def test_selector_filters_print_canonically_and_reparse(path, expected):
    text = f"rule \"r\" {{ then delete {path} }}"
    formatted = format_source(text)
    assert f"then delete {expected}" in formatted
    assert without_layout(parse(formatted).items) == without_layout(parse(text).items)
    assert format_source(formatted) == formatted
