"""Text -> nodes. Parse errors become findings in plain words, never tracebacks."""

from __future__ import annotations

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..diagnostics import Diagnostic, RulesError, Span, error
from . import nodes as n
from .grammar import parse_collecting_comments, parser
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
                    "quarantine", "log", "stop", "if", "for"}
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


def _syntax_hint(exc: UnexpectedInput, text: str) -> str | None:
    """Plain-word advice for the mistakes people make most often."""
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
    return None


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
