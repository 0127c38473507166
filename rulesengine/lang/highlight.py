"""The tokens of a rule file, each with its kind, for syntax highlighting: lexed by the
grammar's own lexer (grammar/rules.lark, in the parser's context), so that what is shown as a
keyword is exactly what the parser takes as one and cannot drift from the language.

Every token of the language fits on one line (strings, regexes and comments end at the line's
end), so a line's tokens are all a highlighter needs to show it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from lark import Lark, Token
from lark.exceptions import LarkError
from lark.lexer import PatternStr

from .grammar import grammar_path

# The kind of the terminals named in the grammar; a terminal written as a word in a rule
# ("rule", "when", `FALLBACK: "fallback"`) is a keyword, any other literal punctuation.
_KINDS = {
    "STRING": "string", "NUMBER": "number", "INT": "number", "REGEX": "regex", "COMMENT": "comment",
    "TAG": "tag", "PRIVATE_TAG": "tag", "MESSAGE": "message", "NAME": "name", "COMPARE": "operator",
    "PLUS": "operator", "MINUS": "operator", "STAR": "operator", "SLASH": "operator", "PERCENT": "operator",
    "ANY_DEPTH": "operator", "DURATION": "number",
}
_WORD = re.compile(r"[A-Za-z_]+")
KINDS = ("keyword", "punctuation", *sorted(set(_KINDS.values())))

_sink = threading.local()


@dataclass(frozen=True)
class Lexeme:
    line: int  # 1-based
    column: int  # 1-based, of its first character
    end_column: int  # 1-based, just after its last character
    kind: str  # one of KINDS
    text: str


def _collect(token: Token) -> Token:
    tokens = getattr(_sink, "tokens", None)
    if tokens is not None:
        tokens.append(token)
    return token


@lru_cache(maxsize=None)
def _lexing_parser() -> tuple[Lark, dict[str, str]]:
    text = grammar_path().read_text(encoding="utf-8")
    probe = Lark(text, parser="lalr", start=["start", "path"])
    kinds = {}
    for terminal in probe.terminals:
        if terminal.name in _KINDS:
            kinds[terminal.name] = _KINDS[terminal.name]
        elif isinstance(terminal.pattern, PatternStr):
            kinds[terminal.name] = "keyword" if _WORD.fullmatch(terminal.pattern.value) else "punctuation"
    # The parser itself drives the lexer (its contextual lexer), and hands each token here.
    parser = Lark(text, parser="lalr", start=["start", "path"],
                  lexer_callbacks={name: _collect for name in kinds})
    return parser, kinds


def lexemes(text: str) -> list[Lexeme]:
    """The tokens of a rule file, in order. Where the text stops parsing, the tokens end: the
    rest is shown as plain text (a rule file in use parses whole)."""
    parser, kinds = _lexing_parser()
    _sink.tokens = []
    try:
        try:
            parser.parse(text, start="start")
        except LarkError:
            pass  # the tokens read up to the error are still right
        tokens = _sink.tokens
    finally:
        _sink.tokens = None
    seen: set[tuple[int, int]] = set()
    found = []
    for token in tokens:
        place = (token.line, token.column)
        if place in seen or token.line is None:  # a token the parser looked at twice
            continue
        seen.add(place)
        found.append(Lexeme(token.line, token.column, token.end_column, kinds[token.type], str(token)))
    return sorted(found, key=lambda lexeme: (lexeme.line, lexeme.column))
