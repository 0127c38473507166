"""The highlighting of rule files (rulesengine.lang.highlight) follows the grammar: its keywords
are the grammar's, words that are keywords only in some places are names elsewhere, and the
highlighted lines give back the file's text exactly, also of a file that does not parse."""

from __future__ import annotations

import re

from helpers.files import ROOT
from rulesengine.console.rules_in_use import highlighted_lines
from rulesengine.lang.grammar import grammar_path
from rulesengine.lang.highlight import KINDS, _lexing_parser, lexemes

# Keywords only where they can appear (the grammar says so beside MESSAGE, keep_only_action, during and
# the group rules' header and clauses).
CONTEXT_KEYWORDS = {"on", "message", "response", "dropped", "keep", "only", "per", "complete", "after", "late"}
CONTEXT_KEYWORDS |= {"during", "urgent"}  # delivery windows and urgency
CONTEXT_KEYWORDS |= {"notify"}  # a rule's notification


def test_the_keywords_are_the_words_the_grammar_reserves_and_those_of_a_context():
    parser, kinds = _lexing_parser()
    keywords = {t.pattern.value for t in parser.terminals if kinds.get(t.name) == "keyword"}
    reserved = set(re.search(r"NAME: /\(\?!\(([^)]*)\)", grammar_path().read_text()).group(1).split("|"))
    assert keywords == reserved | CONTEXT_KEYWORDS
    assert set(kinds.values()) <= set(KINDS)


def test_tokens_are_classed_as_the_parser_reads_them():
    text = 'rule "r" on C-FIND {\n  when response == /a\\/b/i and DataSet.(0010,0020) > 2 # why\n  then on response { drop }\n}\n'
    found = [(lexeme.line, lexeme.kind, lexeme.text) for lexeme in lexemes(text)]
    assert (1, "message", "C-FIND") in found and (1, "keyword", "on") in found
    assert (2, "name", "response") in found  # a name in a condition: a keyword only after `on` or `given`
    assert (3, "keyword", "response") in found
    assert (2, "regex", "/a\\/b/i") in found and (2, "tag", "(0010,0020)") in found
    assert (2, "comment", "# why") in found and (2, "number", "2") in found


def test_every_line_of_every_rule_file_is_given_back_whole():
    files = sorted(path for path in ROOT.rglob("*.rules") if ".git" not in path.parts)
    assert len(files) > 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines = highlighted_lines(path.name, text)
        assert ["".join(t for _, t in line["segments"]) for line in lines] == text.split("\n"), path
        assert any(kind == "keyword" for line in lines for kind, _ in line["segments"]), path


def test_a_file_that_stops_parsing_keeps_its_text_and_the_tokens_before_the_error():
    text = 'rule "a" {\n  then route to PACS\n}\nrule "b" { then ??? <b>\n'
    lines = highlighted_lines("broken.rules", text)
    assert ["".join(t for _, t in line["segments"]) for line in lines] == text.split("\n")
    assert ("keyword", "route") in lines[1]["segments"]
    assert (None, " ??? <b>") in lines[3]["segments"] or lines[3]["segments"][-1][0] is None
