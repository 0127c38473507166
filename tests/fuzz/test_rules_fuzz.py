"""Fuzzing the rule files of group rules, `urgent` and `during` (rules_mutate.py): every mutated
file either compiles or is refused with findings that each name file:line:col, never with
another exception; `lint` says the same; and what parses, `fmt` lays out into a file that
parses to the same layout again (a round trip) and compiles as the original did. `make fuzz`
runs many more (RULES_FUZZ_COUNT)."""

from __future__ import annotations

import os
import re

import pytest

from rulesengine.diagnostics import RulesError
from rulesengine.lang.api import check_file, compile_file
from rulesengine.lang.formatter import format_source

from . import rules_mutate

SEED = 12
COUNT = int(os.environ.get("RULES_FUZZ_COUNT", "300"))  # a few seconds; `make fuzz` runs more
DESTINATIONS = ("AI", "ARCHIVE", "PACS")
WINDOWS = ("night",)
LOCATION = re.compile(r"^main\.rules:\d+:\d+: error ")


def _outcome(path) -> tuple[str, list[str]]:
    """("compiles", []) or ("refused", the error lines); anything else raises."""
    try:
        compile_file(path, DESTINATIONS, windows=WINDOWS)
    except RulesError as refused:
        return "refused", [d.one_line() for d in refused.diagnostics if d.is_error]
    return "compiles", []


def test_the_generator_is_seeded_and_prefix_stable():
    short = [m.text for m in rules_mutate.mutants(SEED, 30)]
    assert short == [m.text for m in rules_mutate.mutants(SEED, 60)][:30]
    assert len(set(short)) > 25  # they differ from one another


def test_every_base_compiles_and_round_trips(tmp_path):
    for number, base in enumerate(rules_mutate.BASES):
        path = tmp_path / f"base{number}.rules"
        path.write_text(base)
        compile_file(path, DESTINATIONS, windows=WINDOWS)
        assert format_source(format_source(base)) == format_source(base)


def test_mutated_group_rule_files_compile_or_are_refused_at_a_place(tmp_path):
    path = tmp_path / "main.rules"
    tally: dict[str, int] = {}
    os.chdir(tmp_path)  # findings name the file as given: main.rules:LINE:COL
    for mutant in rules_mutate.mutants(SEED, COUNT):
        path.write_text(mutant.text, encoding="utf-8", errors="surrogateescape")
        try:
            outcome, lines = _outcome("main.rules")
            lint = [d for d in check_file("main.rules", DESTINATIONS, windows=WINDOWS) if d.is_error]
        except Exception as failure:  # noqa: BLE001 - any other exception is the bug this test looks for
            pytest.fail(f"mutant {mutant.number} ({mutant.kind}) raised {failure!r}:\n{mutant.text}")
        tally[outcome] = tally.get(outcome, 0) + 1
        assert all(LOCATION.match(line) for line in lines), (mutant.number, mutant.kind, lines, mutant.text)
        assert bool(lint) == (outcome == "refused"), (mutant.number, mutant.text)
        if outcome == "compiles" or not any(" syntax" in line or "parse" in line for line in lines):
            _round_trip(mutant, outcome)
    # Both outcomes are common: the mutations are neither all harmless nor all fatal.
    assert tally.get("compiles", 0) > COUNT // 20 and tally.get("refused", 0) > COUNT // 4, tally


def _round_trip(mutant: rules_mutate.RulesMutant, outcome: str) -> None:
    try:
        formatted = format_source(mutant.text, "main.rules")
    except RulesError as refused:
        # fmt refuses only a syntax error, and then says where.
        assert outcome == "refused" and all(d.span for d in refused.diagnostics), (mutant.number, mutant.text)
        return
    assert format_source(formatted, "main.rules") == formatted, (mutant.number, mutant.text)
    with open("formatted.rules", "w", encoding="utf-8", errors="surrogateescape") as out:
        out.write(formatted)
    assert _outcome("formatted.rules")[0] == outcome, (mutant.number, mutant.text, formatted)
