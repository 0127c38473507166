"""Text -> nodes. Parse errors become findings in plain words, never tracebacks."""

from __future__ import annotations

import re

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..diagnostics import Diagnostic, RulesError, Span, error
from . import nodes as n
from .grammar import parse_collecting_comments, parser
from .ported import line_hint, operator_hint
from .transform import NodeError, to_nodes

# How expected tokens are named to a user. Keywords and punctuation are shown quoted.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": 'a string in double quotes',
    "NUMBER": "a number",
    "INT": "a whole number",
    "REGEX": "a /regular expression/",
    "TAG": "a tag such as (0010,0020)",
    "PRIVATE_TAG": 'a private tag such as (0009,"CREATOR",10)',
    "COMPARE": "a comparison (== != < <= > >=)",
    "ANY_DEPTH": "**",
    "STAR": "*",
    "MESSAGE": "a message such as C-FIND",
    "$END": "the end of the file",
}

_ACTION_KEYWORDS = {"set", "blank", "delete", "route", "copy", "apply", "drop", "reject",
                    "quarantine", "log", "stop", "if", "for", "append"}
_VALUE_TOKENS = {"STRING", "NUMBER", "NAME", "REGEX"}


def _terminal_text(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        pattern = parser().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name.lower()


def describe_expected(expected: set[str]) -> str:
    words = sorted({_terminal_text(t) for t in expected})
    keywords = {w.strip("'") for w in words}
    groups: list[str] = []
    if len(words) > 6:
        if keywords & _ACTION_KEYWORDS:
            groups.append("an action (set, delete, route, copy, ...)")
        if expected & _VALUE_TOKENS:
            groups.append("a value, a path or a condition")
        rest = [w for w in words if w.strip("'") not in _ACTION_KEYWORDS
                and w not in {_terminal_text(t) for t in _VALUE_TOKENS}]
        if groups and len(rest) <= 4:
            return ", ".join(groups + rest)
        if groups:
            return ", ".join(groups)
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _token_text(token) -> str:
    if token.type == "$END":
        return "the end of the file"
    return f"'{token}'"


def _ported_hint(exc: UnexpectedInput, text: str) -> str | None:
    """The rewrite of a form pasted from another tool (CTP, deid, dcm4che, Orthanc) on the line
    where the parser stopped, if there is one."""
    line_number = getattr(exc, "line", None)
    lines = text.splitlines()
    if not line_number or not 0 < line_number <= len(lines):
        return None
    line, column = lines[line_number - 1], getattr(exc, "column", 1) or 1
    operator = line[column - 1] if column - 1 < len(line) else ""
    if operator == "*" and _between_conditions(line[:column - 1], line[column:]):
        return operator_hint(operator)
    if operator in ("!", "&", "|") and line[column:column + 1] != "=":
        return operator_hint(operator)
    # `A == "x" * B > 1`: the `*` parses as a product, and the parser stops at the comparison after it.
    before = line[:column - 1]
    for at in range(len(before) - 1, -1, -1):
        if before[at] == "*" and _between_conditions(before[:at], before[at + 1:]):
            return operator_hint("*")
    return line_hint(line, column)


def _between_conditions(before: str, after: str) -> bool:
    """Does `*` stand between two conditions (CTP's and), not between two numbers? A condition
    ends with a string, a regex or a call; a number does not start one."""
    before, after = before.rstrip(), after.lstrip()
    return bool(before) and before[-1] in "\")/" and not (after[:1].isdigit() or after[:1] == "-")


def _syntax_hint(exc: UnexpectedInput, text: str) -> str | None:
    """Plain-word advice for the mistakes people make most often."""
    ported = _ported_hint(exc, text)
    if ported is not None:
        return ported
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if ch == "'":
            return 'strings use double quotes: "like this"'
        if ch == '"':
            return "this string is not closed before the end of the line"
        if ch == "/":
            return "a regular expression is written /like this/ on one line"
        return None
    if isinstance(exc, UnexpectedToken):
        tok, expected = exc.token, exc.expected or set()
        if tok == "=" and "COMPARE" in expected:
            return "to compare, write =="
        if tok.type == "COMPARE" and tok == "==" and "EQUAL" in expected:
            return "to set a value, write a single ="
        if tok.type == "NAME" and str(tok) in {"elif", "elsif", "else_if"}:
            return "write: else if CONDITION { ... }"
        if tok.type == "NAME" and str(tok).lower() in {"and", "or", "not"}:
            return "and, or and not are written in lower case"
        if tok == "(" and "TAG" in expected:
            return "a tag is written (gggg,eeee) in hexadecimal, for example (0010,0020)"
        if "THEN" in expected:
            return "a rule reads: rule \"name\" { when CONDITION then ACTIONS }"
        if tok.type == "NAME" and "DOT" in expected:
            return "a path starts with DataSet., CommandSet., FileMeta., Association., Source. or Retrieve."
        if _in_blank_pixels(exc, text):
            return "blank pixels takes regions (x, y, width, height), separated by commas, then `with` a fill value"
    return None


def _in_blank_pixels(exc: UnexpectedToken, text: str) -> bool:
    """Is the mistake in a `blank pixels` action, on the line that starts it?"""
    lines = text.splitlines()
    if not 1 <= exc.line <= len(lines):
        return False
    before = lines[exc.line - 1][:max(exc.column - 1, 0)]
    previous = lines[exc.line - 2] if exc.line >= 2 else ""
    return re.search(r"\bblank\s+pixels\b", before) is not None or (
        not before.strip() and re.search(r"\bblank\s+pixels\b[^()]*$|\bwith\s*$", previous) is not None)


def _accepted(exc: UnexpectedInput) -> set[str]:
    """The tokens the parser would really accept here (LALR's own list is too wide)."""
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is not None:
        try:
            return set(interactive.accepts())
        except Exception:  # noqa: BLE001 - fall back to lark's approximation
            pass
    return set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())


def syntax_diagnostic(exc: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    line, column = exc.line, exc.column
    if isinstance(exc, UnexpectedToken):
        exc.expected = _accepted(exc)
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        expected = describe_expected(set(exc.expected or ()))
        message = f"the file ended early; expected {expected}"
        span = Span.point(filename, max(line, 1), column)
        return error("syntax", message, span, "is a closing } missing?")
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else "?"
        allowed = {t for t in (exc.allowed or ()) if not t.startswith("__")}
        message = f"unexpected character '{ch}'"
        if allowed:
            message += f"; expected {describe_expected(allowed)}"
        return error("syntax", message, Span.point(filename, line, column), _syntax_hint(exc, text))
    tok = exc.token
    width = max(1, len(str(tok)))
    span = Span(filename, line, column, line, column + width)
    message = f"unexpected {_token_text(tok)}; expected {describe_expected(set(exc.expected or ()))}"
    return error("syntax", message, span, _syntax_hint(exc, text))


# How deeply calls, lists, conditions and blocks may nest inside each other. Every pass over
# the nodes (checks, lint, fmt, explain, code generation) may recurse once per level: the
# limit keeps them all far from Python's recursion limit, whatever a file holds. Long
# chains (a + b + ..., and, or, else if) are not nesting: they have no limit.
MAX_NESTING = 100
# The parse tree's nodes that are a level of nesting as a user sees it.
_NESTING = frozenset({"call", "list", "not_op", "and_expr", "or_expr", "quantifier", "sum",
                      "if_action", "for_action", "copy_action", "product", "negate", "subscript"})
# Each operator of a chain with - * / % nests the chain before it (a - b - c is (a - b) - c):
# a level each; a chain of + alone is one level, however long.
_NESTING_OPERATORS = frozenset({"MINUS", "STAR", "SLASH", "PERCENT"})


def nesting_diagnostic(tree: Tree, filename: str) -> Diagnostic | None:
    """A finding at the first construct nested more than MAX_NESTING levels deep, if any.
    Walks the parse tree without recursion (the tree is what could be too deep)."""
    pending: list[tuple[Tree, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if node.data in _NESTING:
            depth += 1
            if node.data in ("sum", "product"):
                operators = [c.type for c in node.children if isinstance(c, Token)]
                if _NESTING_OPERATORS.intersection(operators):  # a chain of + alone stays one level
                    depth += len(operators) - 1
            if depth > MAX_NESTING:
                meta = node.meta
                span = Span.point(filename, getattr(meta, "line", 1), getattr(meta, "column", 1))
                return error("too-deep", f"this is nested more than {MAX_NESTING} levels deep (calls, lists, "
                             "conditions and blocks inside each other)", span,
                             "split it: compute a part with let, or move it into a rule or a block of its own")
        pending.extend((child, depth) for child in reversed(node.children) if isinstance(child, Tree))
    return None


def parse(text: str, filename: str = "<rules>") -> n.RuleFile:
    """Parse a rule file. Raises RulesError with one positioned finding on bad syntax."""
    try:
        tree, comment_tokens = parse_collecting_comments(text)
        too_deep = nesting_diagnostic(tree, filename)
        if too_deep is not None:
            raise RulesError([too_deep])
        items = to_nodes(tree, filename)
    except UnexpectedInput as exc:
        raise RulesError([syntax_diagnostic(exc, text, filename)]) from None
    except VisitError as exc:
        raise _node_error(exc) from None
    comments = tuple(
        n.Comment(Span(filename, t.line, t.column, t.end_line, t.end_column), str(t).rstrip())
        for t in comment_tokens
    )
    return n.RuleFile(filename, text, tuple(items), comments)


def parse_path(text: str, filename: str = "<path>") -> n.Path:
    """Parse a single path such as `DataSet.Seq[1].Modality` (the document API uses this)."""
    try:
        tree, _ = parse_collecting_comments(text.strip(), start="path")
        return to_nodes(tree, filename).path
    except UnexpectedInput as exc:
        raise RulesError([syntax_diagnostic(exc, text, filename)]) from None
    except VisitError as exc:
        raise _node_error(exc) from None


def _node_error(exc: VisitError) -> RulesError:
    orig = exc.orig_exc
    if isinstance(orig, NodeError):
        return RulesError([error(orig.code, orig.message, orig.span, orig.hint)])
    raise orig
