"""The one canonical layout of rule files, behind `dicom-rules fmt`.

One small visitor method per node type prints it: `_ExpressionText` for
expressions, `_StatementLine` for statements without a body and `_Printer` for
constructs with one, so a new construct means one new `visit_` method.

Comments are never lost and never reordered:

- a comment on a line of its own is printed before the construct that follows
  it, at that construct's indentation; one before a closing `}` stays inside
  the block, at the block's inner indentation;
- a comment at the end of a line of code stays at the end of the formatted line
  that ends with that code;
- a comment inside a statement that spans several source lines (a condition or
  an expression broken over lines, a header split before its `{`, a `then`
  split from its only action) moves to its own line just before that statement;
- a comment between a `}` and the `else` after it ends the branch above.

Blank lines: top-level items are separated by exactly one blank line, except
that consecutive imports and consecutive tables stay together. Elsewhere, and
next to comments, one blank line is kept where the source had one or more;
never right after a `{` nor right before a `}`.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import lru_cache
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from . import nodes as n
from .nodes import quote_string
from .grammar import grammar_path
from .syntax import parse
from .visitor import NodeVisitor

WIDTH = 100  # longer conditions break before each top-level `and` / `or`; longer lists (given/with, keep
# only, blank pixels regions) after their commas
INDENT = "  "

# Expression precedence, loosest first. A child looser than the slot it sits in
# gets parentheses, and so does an and/or/+ nested in one of its own kind,
# which the parser would otherwise flatten into its parent.
OR, AND, NOT, PREDICATE, SUM, PRODUCT, UNARY, ATOM = range(8)


def format_source(text: str, filename: str = "<rules>") -> str:
    """`text` in the canonical layout. Raises RulesError on a syntax error."""
    return format_file(parse(text, filename))


def format_file(rule_file: n.RuleFile) -> str:
    """A parsed file in the canonical layout; `rule_file.source` places its comments."""
    return _Printer(rule_file).run()


# ---- expressions -------------------------------------------------------------


def expr_text(expr: n.Expr, slot: int = OR) -> str:
    """`expr` on one line, parenthesized if it binds more loosely than `slot` allows."""
    text = _EXPRESSION_TEXT.visitor_for(expr)(expr)  # two frames a level, as deep nesting needs
    return f"({text})" if _level(expr) < slot else text


def _level(expr: n.Expr) -> int:
    if isinstance(expr, n.Arithmetic):
        return SUM if expr.op == "-" else PRODUCT
    return _LEVELS.get(type(expr), ATOM)


def regex_text(regex: n.RegexLit) -> str:
    return "/" + regex.pattern.replace("/", "\\/") + "/" + regex.flags


class _ExpressionText(NodeVisitor):
    """An expression's text on one line; its operands through expr_text, which adds parentheses."""

    def generic_visit(self, node, *args):
        raise TypeError(f"the formatter has no layout for {type(node).__name__}")

    def visit_RegexLit(self, e: n.RegexLit) -> str:
        return regex_text(e)

    def visit_StringLit(self, e: n.StringLit) -> str:
        return quote_string(e.value)

    def visit_NumberLit(self, e: n.NumberLit) -> str:
        return e.text  # as written: 1.50 stays 1.50

    def visit_ListLit(self, e: n.ListLit) -> str:
        return "[" + ", ".join(expr_text(item) for item in e.items) + "]"

    def visit_PathRef(self, e: n.PathRef) -> str:
        return e.path.text()

    def visit_Variable(self, e: n.Variable) -> str:
        return e.name

    def visit_Call(self, e: n.Call) -> str:
        return e.name + "(" + ", ".join(expr_text(arg) for arg in e.args) + ")"

    def visit_Aggregate(self, e: n.Aggregate) -> str:
        return e.kind + "(" + (expr_text(e.argument) if e.argument is not None else "") + ")"

    def visit_Subscript(self, e: n.Subscript) -> str:
        subject = expr_text(e.subject)
        if not isinstance(e.subject, (n.Call, n.Variable)):  # `(PATH)[n]`: a path's own index is literal
            subject = f"({subject})"
        return f"{subject}[{expr_text(e.index, SUM)}]"

    def visit_ConstRef(self, e: n.ConstRef) -> str:
        return e.name

    def visit_Concat(self, e: n.Concat) -> str:
        # From the left: `a - b + c` needs no parentheses, `(a + b) + c` keeps them (one Concat
        # nested in another reads back only so), as does any sum on the right of a +.
        first, *rest = e.parts
        head = expr_text(first, PRODUCT if isinstance(first, n.Concat) else SUM)
        return " + ".join([head] + [expr_text(part, PRODUCT) for part in rest])

    def visit_Arithmetic(self, e: n.Arithmetic) -> str:
        level = _level(e)
        return f"{expr_text(e.left, level)} {e.op} {expr_text(e.right, level + 1)}"

    def visit_Negate(self, e: n.Negate) -> str:
        return "-" + expr_text(e.operand, UNARY)

    def visit_Binary(self, e: n.Binary) -> str:
        return f"{expr_text(e.left, SUM)} {e.op} {expr_text(e.right, SUM)}"

    def visit_Matches(self, e: n.Matches) -> str:
        operator = "not matches" if e.negated else "matches"
        return f"{expr_text(e.subject, SUM)} {operator} {regex_text(e.regex)}"

    def visit_Presence(self, e: n.Presence) -> str:
        return f"{e.kind} {expr_text(e.target)}"

    def visit_Quantifier(self, e: n.Quantifier) -> str:
        return f"{e.kind} {e.var} in {e.source.text()}: {expr_text(e.body, NOT)}"

    def visit_Not(self, e: n.Not) -> str:
        # `not (a == b)` reads better than `not a == b`, which means the same;
        # `not exists X` and `not any ...` need no parentheses.
        if isinstance(e.operand, (n.Binary, n.Matches)):
            return f"not ({expr_text(e.operand)})"
        return "not " + expr_text(e.operand, NOT)

    def visit_And(self, e: n.And) -> str:
        return " and ".join(expr_text(operand, NOT) for operand in e.operands)

    def visit_Or(self, e: n.Or) -> str:
        return " or ".join(expr_text(operand, AND) for operand in e.operands)


_EXPRESSION_TEXT = _ExpressionText()

_LEVELS = {
    n.Or: OR,
    n.And: AND,
    n.Not: NOT,
    n.Binary: PREDICATE,
    n.Matches: PREDICATE,
    n.Presence: PREDICATE,
    n.Quantifier: PREDICATE,
    n.Concat: SUM,
    n.Negate: UNARY,
}  # every other expression is an atom


def condition_lines(used: int, head: str, condition: n.Expr, tail: str = "") -> list[str]:
    """`head CONDITION tail` on one line if it fits in WIDTH after `used` columns of
    indentation; otherwise broken before each top-level and/or, the following lines
    indented one step more (newlines are whitespace to the parser)."""
    line = head + expr_text(condition) + tail
    if used + len(line) <= WIDTH or not isinstance(condition, (n.And, n.Or)):
        return [line]
    word, slot = ("and", NOT) if isinstance(condition, n.And) else ("or", AND)
    first, *rest = [expr_text(operand, slot) for operand in condition.operands]
    lines = [head + first] + [f"{INDENT}{word} {operand}" for operand in rest]
    lines[-1] += tail
    return lines


def listing_lines(used: int, head: str, items: list[str], tail: str = "") -> list[str]:
    """`head a, b, c tail` on one line if it fits; otherwise one item per line after the first,
    each line but the last ending with its comma, and `tail` after the last item."""
    line = head + ", ".join(items) + tail
    if used + len(line) <= WIDTH or len(items) < 2:
        return [line]
    first, *rest = items
    return [head + first + ","] + [f"{INDENT}{item}," for item in rest[:-1]] + [INDENT + rest[-1] + tail]


# ---- statements without a body -----------------------------------------------


class _Breakable(NamedTuple):
    """A statement that ends with a condition, which may break over lines."""

    head: str
    condition: n.Expr


class _Listing(NamedTuple):
    """A statement with a list of items, which may break after its commas; `tail` follows the
    last item (the fill value of `blank pixels`)."""

    head: str
    items: list[str]
    tail: str = ""


def _names(names: tuple[n.Name, ...]) -> str:
    return ", ".join(name.value for name in names)


def _to(back: bool, names: tuple[n.Name, ...]) -> str:
    return ("back to " if back else "to ") + _names(names)


def _during(window: n.Name | None) -> str:
    return f" during {window.value}" if window is not None else ""


def _copy_head(a: n.CopyAction) -> str:
    return "copy " + _to(a.back, a.destinations) + _during(a.window)


def _with_reason(keyword: str, reason: n.Expr | None) -> str:
    return keyword if reason is None else f"{keyword} {expr_text(reason)}"


class _StatementLine(NodeVisitor):
    """A statement without a body: its line, or a _Breakable or _Listing that may break."""

    def generic_visit(self, node, *args):
        raise TypeError(f"the formatter has no layout for {type(node).__name__}")

    def visit_Import(self, s: n.Import) -> str:
        return f"import {quote_string(s.file)} as {s.alias.value}"

    def visit_Table(self, s: n.Table) -> str:
        key = f" key {quote_string(s.key)}" if s.key is not None else ""
        return f"table {s.name.value} from {quote_string(s.file)}{key}"

    def visit_Const(self, s: n.Const) -> str:
        return f"const {s.name.value} = {expr_text(s.value)}"

    def visit_SetAction(self, a: n.SetAction) -> str:
        return f"set {expr_text(a.target)} = {expr_text(a.value)}"

    def visit_BlankAction(self, a: n.BlankAction) -> str:
        return f"blank {expr_text(a.target)}"

    def visit_BlankPixelsAction(self, a: n.BlankPixelsAction) -> _Listing:
        regions = ["(" + ", ".join(expr_text(part) for part in (r.x, r.y, r.width, r.height)) + ")"
                   for r in a.regions]
        fill = f" with {expr_text(a.fill)}" if a.fill is not None else ""
        return _Listing("blank pixels ", regions, fill)

    def visit_DeleteAction(self, a: n.DeleteAction) -> str:
        return f"delete {expr_text(a.target)}"

    def visit_KeepOnlyAction(self, a: n.KeepOnlyAction) -> _Listing:
        return _Listing("keep only private " if a.private else "keep only ", [expr_text(p) for p in a.paths])

    def visit_DeletePrivateAction(self, a: n.DeletePrivateAction) -> str:
        if a.creators is not None:
            return "delete private " + ("except " if a.keep else "") + expr_text(a.creators)
        return "delete private"

    def visit_RouteAction(self, a: n.RouteAction) -> str:
        return "route " + _to(a.back, a.destinations) + _during(a.window)

    def visit_UrgentAction(self, a: n.UrgentAction) -> str:
        return "urgent"

    def visit_NotifyAction(self, a: n.NotifyAction) -> str:
        return _with_reason(f"notify {a.notifier.value}", a.message)

    def visit_ApplyAction(self, a: n.ApplyAction) -> str:
        return f"apply {a.namespace}.{a.block}" if a.namespace else f"apply {a.block}"

    def visit_DropAction(self, a: n.DropAction) -> str:
        return "drop"

    def visit_RejectAction(self, a: n.RejectAction) -> str:
        return _with_reason("reject", a.reason)

    def visit_QuarantineAction(self, a: n.QuarantineAction) -> str:
        return _with_reason("quarantine", a.reason)

    def visit_LogAction(self, a: n.LogAction) -> str:
        return f"log {expr_text(a.message)}"

    def visit_LetAction(self, a: n.LetAction) -> str:
        return f"let {a.name} = {expr_text(a.value)}"

    def visit_StopAction(self, a: n.StopAction) -> str:
        return "stop"

    def visit_DeleteItemsAction(self, a: n.DeleteItemsAction) -> _Breakable:
        return _Breakable(f"delete each {a.var} in {a.source.text()} where ", a.condition)

    def visit_CopyPathAction(self, a: n.CopyPathAction) -> str:
        source = a.source.name if isinstance(a.source, n.Variable) else a.source.text()
        return f"copy {source} to {a.target.text()}"

    def visit_CompleteAfter(self, s: n.CompleteAfter) -> str:
        return f"complete after {s.text}"

    def visit_CompleteWhen(self, s: n.CompleteWhen) -> _Breakable:
        return _Breakable("complete when ", s.condition)

    def visit_LatePolicy(self, s: n.LatePolicy) -> str:
        return f"late {s.policy.value}"

    def visit_GivenFile(self, s: n.GivenFile) -> str:
        return f"given file {quote_string(s.file)}"

    def visit_GivenValues(self, s: n.GivenValues) -> _Listing:
        return _Listing(s.keyword + " ", [f"{a.path.text()} = {expr_text(a.value)}" for a in s.assignments])

    def visit_GivenMessage(self, s: n.GivenMessage) -> str:
        return f"given message {s.message.value}"

    def visit_GivenResponse(self, s: n.GivenResponse) -> _Listing:
        return _Listing("given response ", [f"{a.path.text()} = {expr_text(a.value)}" for a in s.assignments])

    def visit_ExpectResponse(self, s: n.ExpectResponse) -> str | _Breakable:
        if s.condition is None:
            return "expect response dropped"
        return _Breakable("expect response ", s.condition)

    def visit_ExpectRoute(self, s: n.ExpectRoute) -> str:
        return ("expect no route to " if s.negated else "expect route to ") + _names(s.destinations)

    def visit_ExpectCopy(self, s: n.ExpectCopy) -> _Breakable:
        return _Breakable(f"expect copy to {s.destination.value} where ", s.condition)

    def visit_ExpectOutcome(self, s: n.ExpectOutcome) -> str:
        reason = f" {quote_string(s.reason)}" if s.reason is not None else ""
        return f"expect {s.outcome}{reason}"

    def visit_ExpectFired(self, s: n.ExpectFired) -> str:
        return ("expect not fired " if s.negated else "expect fired ") + quote_string(s.rule)

    def visit_ExpectNotify(self, s: n.ExpectNotify) -> str:
        if s.negated:
            return f"expect no notify {s.notifier.value}"
        message = f" {quote_string(s.message)}" if s.message is not None else ""
        return f"expect notify {s.notifier.value}{message}"

    def visit_ExpectCondition(self, s: n.ExpectCondition) -> _Breakable:
        return _Breakable("expect ", s.condition)

    def visit_ExpectFor(self, s: n.ExpectFor) -> str | _Breakable:
        head = f"expect for {quote_string(s.file)} "
        layout = self.visit(s.expectation)
        if isinstance(layout, _Breakable):
            return _Breakable(head + layout.head[len("expect "):], layout.condition)
        return head + layout[len("expect "):]


_STATEMENT_LINE = _StatementLine()


# ---- the source: offsets, blank lines, and the braces and keywords nodes lack --


class _Source:
    """Positions in the source text that the nodes' spans do not carry."""

    _MARKED_WORDS = ("when", "then")

    def __init__(self, text: str):
        self.text = text
        self.line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        blank = [not line.strip() for line in text.split("\n")]
        self.blanks_up_to = list(accumulate(blank, initial=0))  # [k]: blank lines among lines 1..k
        self.marks = _code_marks(text, self._MARKED_WORDS)

    def offset(self, line: int, column: int) -> int:
        return self.line_starts[line - 1] + column - 1

    def start(self, span) -> int:
        return self.offset(span.line, span.column)

    def end(self, span) -> int:
        return self.offset(span.end_line, span.end_column)

    def line_of(self, offset: int) -> int:
        return bisect_right(self.line_starts, offset)

    def blank_between(self, after_line: int, before_line: int) -> bool:
        """Whether a line strictly between the two is empty or only spaces."""
        if before_line - 1 <= after_line:
            return False
        return self.blanks_up_to[before_line - 1] > self.blanks_up_to[after_line]

    def next(self, mark: str, offset: int) -> int:
        """The offset of the first `{`, `}`, `when` or `then` in code at or after `offset`."""
        found = self.marks[mark]
        return found[bisect_left(found, offset)]

    def starts_after_code(self, offset: int) -> bool:
        line_start = self.line_starts[self.line_of(offset) - 1]
        return bool(self.text[line_start:offset].strip())


def _code_marks(text: str, words: tuple[str, ...]) -> dict[str, list[int]]:
    """Offsets of braces and of some keywords, outside strings, regexes and comments."""
    marks: dict[str, list[int]] = {"{": [], "}": [], **{word: [] for word in words}}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"' or (ch == "/" and not _is_division(text, i)):
            i = _end_of_quoted(text, i)
        elif ch == "#":
            i = text.find("\n", i)
            if i < 0:
                break
        elif ch in "{}":
            marks[ch].append(i)
        elif ch.isalpha() or ch == "_":
            word_end = i
            while word_end < len(text) and (text[word_end].isalnum() or text[word_end] == "_"):
                word_end += 1
            if text[i:word_end] in marks:
                marks[text[i:word_end]].append(i)
            i = word_end - 1
        i += 1
    return marks


def _is_division(text: str, slash: int) -> bool:
    """Whether the `/` at `slash` divides (it follows an operand) rather than opens a regex
    (it follows an operator, a keyword such as `matches`, `(`, `,` or `[`)."""
    i = slash - 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    if i < 0:
        return False
    if text[i] in ')]"':
        return True
    if not (text[i].isalnum() or text[i] == "_"):
        return False
    start = i
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return text[start:i + 1] not in reserved_words()


@lru_cache(maxsize=1)
def reserved_words() -> frozenset[str]:
    """The keywords of the grammar's NAME terminal, and those reserved only where they appear."""
    match = re.search(r"NAME: /\(\?!\(([^)]*)\)", grammar_path().read_text(encoding="utf-8"))
    return frozenset(match.group(1).split("|")) | {"on", "response", "message", "dropped"}


def _end_of_quoted(text: str, start: int) -> int:
    """The offset of the quote or slash closing the string or regex opened at `start`."""
    i = start + 1
    while i < len(text) and text[i] not in (text[start], "\n"):
        i += 2 if text[i] == "\\" else 1
    return i


# ---- the printer ---------------------------------------------------------------


@dataclass
class _Line:
    depth: int
    text: str  # "" for a blank line
    source_line: int | None = None  # where this line's code ends in the source
    comment: str | None = None  # a comment kept at the end of the line
    is_comment: bool = False
    opens: bool = False  # ends with `{`: no blank line follows

    def render(self) -> str:
        if not self.text:
            return ""
        text = INDENT * self.depth + self.text
        return f"{text}  {self.comment}" if self.comment else text


class _Comment(NamedTuple):
    offset: int
    line: int
    trailing: bool  # follows code on its line
    text: str


class _Segment(NamedTuple):
    """One branch of an if / else if / else chain."""

    start: int  # where `if` or `else` is
    keyword: str  # "if ", "else if " or "else"
    condition: n.Expr | None
    body: tuple
    open: int  # the body's braces
    close: int


class _Printer(NodeVisitor):
    """Lays out a file: `visit` places an item, action or test statement, with what `_statement`
    passes (depth, prefix, blank_ok); constructs with a body have their own `visit_` method."""

    def __init__(self, rule_file: n.RuleFile):
        self.items = rule_file.items
        self.src = _Source(rule_file.source)
        self.comments = sorted((self._comment(c) for c in rule_file.comments), key=lambda c: c.offset)
        self.comment_offsets = [c.offset for c in self.comments]
        self.next_comment = 0
        self.lines: list[_Line] = []
        self.last_line = 0  # the last source line printed so far, to spot blank lines after it

    def _comment(self, comment: n.Comment) -> _Comment:
        offset = self.src.start(comment.span)
        return _Comment(offset, comment.span.line, self.src.starts_after_code(offset), comment.text)

    def run(self) -> str:
        previous = None
        for item in self.items:
            if previous is not None:
                self._separate(previous, item)
            self._statement(item, 0)
            previous = item
        self._flush(len(self.src.text) + 1, 0, blank_ok=True)
        return "".join(line.render() + "\n" for line in self.lines)

    # -- placing lines and comments --

    def _separate(self, previous, item) -> None:
        self._attach_trailing_comment(before=self.src.start(item.span))  # it ends the item above
        together = type(previous) is type(item) and isinstance(item, (n.Import, n.Table, n.Const))
        if not together and self.lines and self.lines[-1].text:
            self.lines.append(_Line(0, ""))

    def _code(self, depth: int, texts: list[str], start: int, end: int, *, blank_ok: bool = False,
              opens: bool = False, comment_depth: int | None = None) -> None:
        """Print the lines of one statement whose source runs from `start` to `end`."""
        comment_depth = depth if comment_depth is None else comment_depth
        self._flush(start, comment_depth, blank_ok)
        if blank_ok:
            self._maybe_blank(self.src.line_of(start), depth, is_code=True)
        self._flush(end, comment_depth, blank_ok=False, attach=False)  # comments inside move before it
        last_line = self.src.line_of(max(start, end - 1))
        self.lines.extend(_Line(depth, text) for text in texts[:-1])
        self.lines.append(_Line(depth, texts[-1], last_line, opens=opens))
        self.last_line = last_line

    def _flush(self, limit: int, depth: int, blank_ok: bool, attach: bool = True) -> None:
        """Print the comments that come before `limit` in the source."""
        while self.next_comment < len(self.comments) and self.comments[self.next_comment].offset < limit:
            comment = self.comments[self.next_comment]
            if not (attach and self._attach_trailing_comment(before=limit)):
                if blank_ok:
                    self._maybe_blank(comment.line, depth, is_code=False)
                self.lines.append(_Line(depth, comment.text, is_comment=True))
                self.next_comment += 1
            self.last_line = comment.line

    def _attach_trailing_comment(self, before: int) -> bool:
        """Put the next comment, if it comes before `before`, at the end of the last line
        when it ended that line in the source."""
        if self.next_comment >= len(self.comments) or not self.lines:
            return False
        comment, last = self.comments[self.next_comment], self.lines[-1]
        if comment.offset >= before or not comment.trailing or last.source_line != comment.line:
            return False
        if last.comment is not None:
            return False
        last.comment = comment.text
        self.next_comment += 1
        return True

    def _maybe_blank(self, line: int, depth: int, is_code: bool) -> None:
        """One blank line where the source had some, except after `{` and between items."""
        if not self.lines or not self.lines[-1].text or self.lines[-1].opens:
            return
        if is_code and depth == 0 and not self.lines[-1].is_comment:
            return  # top-level items are separated by their kinds, not by the source
        if self.src.blank_between(self.last_line, line):
            self.lines.append(_Line(depth, ""))

    def _is_empty(self, body, open_: int, close: int) -> bool:
        """Whether braces hold nothing, not even a comment: they print as `{}`."""
        i = bisect_right(self.comment_offsets, open_)
        has_comment = i < len(self.comment_offsets) and self.comment_offsets[i] < close
        return not body and not has_comment

    def _close(self, depth: int, close: int | None) -> None:
        """The `}` at `close`; None for braces the source did not have."""
        line = None
        if close is not None:
            self._flush(close, depth + 1, blank_ok=True)  # comments before `}` stay inside
            line = self.last_line = self.src.line_of(close)
        self.lines.append(_Line(depth, "}", line))

    # -- statements --

    def _statement(self, node, depth: int, prefix: str = "", blank_ok: bool = True) -> None:
        """An item, action or test statement; `prefix` is `then ` for a rule's only action."""
        self.visit(node, depth, prefix, blank_ok)

    def generic_visit(self, node, depth: int, prefix: str, blank_ok: bool) -> None:
        """A statement without a body."""
        self._code(depth, self._simple_lines(node, depth, prefix), self.src.start(node.span),
                   self.src.end(node.span), blank_ok=blank_ok)

    def _simple_lines(self, node, depth: int, prefix: str) -> list[str]:
        """The lines of a statement without a body: one, unless it is too long and can break."""
        layout = _STATEMENT_LINE.visit(node)
        if isinstance(layout, _Breakable):
            return self._condition(depth, prefix + layout.head, layout.condition)
        if isinstance(layout, _Listing):
            return listing_lines(depth * len(INDENT), prefix + layout.head, layout.items, layout.tail)
        return [prefix + layout]

    def _condition(self, depth: int, head: str, condition: n.Expr, tail: str = "") -> list[str]:
        return condition_lines(depth * len(INDENT), head, condition, tail)

    def _body(self, statements, depth: int) -> None:
        for statement in statements:
            self._statement(statement, depth)

    def _braced(self, depth: int, head: str, start: int, open_: int, close: int | None, body,
                blank_ok: bool) -> None:
        """`head {` + body + `}`, or `head {}` when there is nothing inside, not even a comment."""
        if close is not None and self._is_empty(body, open_, close):
            self._code(depth, [head + " {}"], start, close + 1, blank_ok=blank_ok)
            return
        self._code(depth, [head + " {"], start, open_ + 1, blank_ok=blank_ok, opens=True)
        self._body(body, depth + 1)
        self._close(depth, close)

    def _body_close(self, open_: int, body) -> int:
        return self.src.next("}", self.src.end(body[-1].span) if body else open_ + 1)

    def visit_Rule(self, rule: n.Rule, depth: int, prefix: str, blank_ok: bool) -> None:
        open_ = self.src.next("{", self.src.end(rule.name_span))
        on = " on " + _names(rule.messages) if rule.messages else ""
        per = f" per {rule.level.value}" if rule.level is not None else ""
        fallback = "fallback " if rule.fallback else ""
        self._code(depth, [f"{prefix}{fallback}rule {quote_string(rule.name)}{on}{per} {{"],
                   self.src.start(rule.span), open_ + 1, blank_ok=blank_ok, opens=True)
        after = open_ + 1
        for clause in rule.clauses:  # as written: `complete after`, `complete when`, `late`
            self._statement(clause, depth + 1, blank_ok=clause is not rule.clauses[0])
            after = self.src.end(clause.span)
        if rule.when is not None:
            when = self.src.next("when", after)
            after = self.src.end(rule.when.span)
            self._code(depth + 1, self._condition(depth + 1, "when ", rule.when), when, after)
        self._then(rule, depth + 1, self.src.next("then", after))
        self._close(depth, self.src.end(rule.span) - 1)

    def _then(self, rule: n.Rule, depth: int, then: int) -> None:
        if len(rule.actions) == 1:  # `then ACTION`, braced in the source or not
            self._flush(then, depth, blank_ok=False)
            self._statement(rule.actions[0], depth, "then ", blank_ok=False)
        elif rule.braced:
            open_ = self.src.next("{", then)
            self._braced(depth, "then", then, open_, self._body_close(open_, rule.actions), rule.actions, False)
        else:  # several actions without braces: the braces are added
            self._braced(depth, "then", then, then + len("then") - 1, None, rule.actions, False)

    def visit_Block(self, block: n.Block, depth: int, prefix: str, blank_ok: bool) -> None:
        open_ = self.src.next("{", self.src.end(block.name.span))
        self._braced(depth, f"{prefix}block {block.name.value}", self.src.start(block.span), open_,
                     self.src.end(block.span) - 1, block.actions, blank_ok)

    def visit_Test(self, test: n.Test, depth: int, prefix: str, blank_ok: bool) -> None:
        start = self.src.start(test.span)
        self._braced(depth, f"{prefix}test {quote_string(test.name)}", start, self.src.next("{", start),
                     self.src.end(test.span) - 1, test.statements, blank_ok)

    def visit_ForEachAction(self, loop: n.ForEachAction, depth: int, prefix: str, blank_ok: bool) -> None:
        open_ = self.src.next("{", self.src.end(loop.source.span))
        self._braced(depth, f"{prefix}for each {loop.var} in {loop.source.text()}", self.src.start(loop.span),
                     open_, self.src.end(loop.span) - 1, loop.body, blank_ok)

    def visit_AppendAction(self, append: n.AppendAction, depth: int, prefix: str, blank_ok: bool) -> None:
        open_ = self.src.next("{", self.src.end(append.var_span))
        self._braced(depth, f"{prefix}append to {append.target.text()} as {append.var}", self.src.start(append.span),
                     open_, self.src.end(append.span) - 1, append.body, blank_ok)

    def visit_CopyAction(self, copy: n.CopyAction, depth: int, prefix: str, blank_ok: bool) -> None:
        start, end = self.src.start(copy.span), self.src.end(copy.span)
        if not copy.braced:
            self._code(depth, [prefix + _copy_head(copy)], start, end, blank_ok=blank_ok)
            return
        open_ = self.src.next("{", self.src.end((copy.window or copy.destinations[-1]).span))
        self._braced(depth, prefix + _copy_head(copy), start, open_, end - 1, copy.body, blank_ok)

    def visit_OnResponseAction(self, action: n.OnResponseAction, depth: int, prefix: str, blank_ok: bool) -> None:
        start = self.src.start(action.span)
        self._braced(depth, prefix + "on response", start, self.src.next("{", start),
                     self.src.end(action.span) - 1, action.body, blank_ok)

    def visit_IfAction(self, node: n.IfAction, depth: int, prefix: str, blank_ok: bool) -> None:
        """if / else if / else, always over several lines; an empty branch is `{}`
        and the `else` that follows it continues its line."""
        segments = self._if_segments(node)
        start, lead, carried = segments[0].start, prefix, []
        closes_branch = False  # the line being built starts with the `}` of the branch above
        for index, segment in enumerate(segments):
            if index > 0 and not carried:
                closes_branch = True
                self._flush(segment.start, depth + 1, blank_ok=True)  # comments before `}` stay inside
                start = segment.start
            first = carried.pop() + " " if carried else lead
            head = carried + self._if_head(depth, first + segment.keyword, segment.condition)
            if self._is_empty(segment.body, segment.open, segment.close):
                carried = head[:-1] + [head[-1] + "}"]
                continue
            carried = []
            self._code(depth, head, start, segment.open + 1, blank_ok=blank_ok, opens=True,
                       comment_depth=depth + 1 if closes_branch else depth)
            blank_ok, lead = False, "} "
            self._body(segment.body, depth + 1)
        if carried:
            self._code(depth, carried, start, segments[-1].close + 1, blank_ok=blank_ok,
                       comment_depth=depth + 1 if closes_branch else depth)
        else:
            self._close(depth, segments[-1].close)

    def _if_head(self, depth: int, head: str, condition: n.Expr | None) -> list[str]:
        return [head + " {"] if condition is None else self._condition(depth, head, condition, " {")

    def _if_segments(self, node: n.IfAction) -> list[_Segment]:
        segments: list[_Segment] = []
        start, keyword = self.src.start(node.span), "if "
        while True:
            open_ = self.src.next("{", self.src.end(node.condition.span))
            segments.append(_Segment(start, keyword, node.condition, node.body, open_,
                                     self._body_close(open_, node.body)))
            if node.orelse is None:
                return segments
            start = self.src.start(node.else_span)
            if len(node.orelse) == 1 and isinstance(node.orelse[0], n.IfAction):
                # `else if`, or `else { if ... }`: the same tree, printed as `else if`
                node, keyword = node.orelse[0], "else if "
                continue
            open_ = self.src.next("{", start)
            segments.append(_Segment(start, "else", None, node.orelse, open_,
                                     self._body_close(open_, node.orelse)))
            return segments
