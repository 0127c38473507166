"""Loads grammar/rules.lark, the one grammar of the language, once per process."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token

# Installed wheels carry the grammar inside the package; a source checkout
# (including an editable install) reads it from the top-level grammar/ folder.
_CANDIDATES = (
    Path(__file__).with_name("rules.lark"),
    Path(__file__).resolve().parents[2] / "grammar" / "rules.lark",
)

_comments: threading.local = threading.local()


def grammar_path() -> Path:
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("the rules grammar (rules.lark) is missing from this installation")


def _collect_comment(token: Token) -> None:
    sink = getattr(_comments, "sink", None)
    if sink is not None:
        sink.append(token)


@lru_cache(maxsize=None)
def parser() -> Lark:
    return Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        start=["start", "path"],
        propagate_positions=True,
        maybe_placeholders=False,
        lexer_callbacks={"COMMENT": _collect_comment},
    )


def parse_collecting_comments(text: str, start: str = "start"):
    """Parse `text`; returns (tree, comment tokens). Comments are kept for fmt."""
    _comments.sink = []
    try:
        tree = parser().parse(text, start=start)
        return tree, list(_comments.sink)
    finally:
        _comments.sink = None
