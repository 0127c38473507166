"""The typed syntax tree of a rule file. Every node carries its source span.

Every node is a `Node`: `children()` gives the nodes directly inside it, in source
order, and visitor.py walks the tree with that alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache
from typing import Iterator, Union, get_args

from ..diagnostics import Span


class Node:
    """A node of the syntax tree."""

    __slots__ = ()

    def children(self) -> Iterator["Node"]:
        """The nodes directly inside this one, in field order: fields that are nodes or tuples of nodes."""
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                for item in value:
                    if isinstance(item, Node):
                        yield item


@cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(kind) if not f.name.endswith("span"))

# ---- paths -----------------------------------------------------------------

STAR = "*"  # the `[*]` index: every item or every value


@dataclass(frozen=True, slots=True)
class Element(Node):
    """One step of a path: a keyword, a tag, a tag mask or a private tag, with indices."""

    span: Span
    keyword: str | None = None
    tag: int | None = None
    mask: tuple[int, int] | None = None  # (value, care-bits) for (60xx,3000)
    private: tuple[int, str, int | None] | None = None  # (group, creator, element offset; None: xx, every one)
    indices: tuple[int | str, ...] = ()
    any_depth: bool = False  # preceded by `**`: found at any depth
    selector: "Selector | None" = None  # `*` or `*[FILTER]`: every element at this level that passes

    def text(self) -> str:
        if self.selector is not None:
            base = self.selector.text
        elif self.keyword is not None:
            base = self.keyword
        elif self.private is not None:
            group, creator, offset = self.private
            base = f"({group:04X},{quote_string(creator)},{'xx' if offset is None else f'{offset:02X}'})"
        elif self.mask is not None:
            value, care = self.mask
            base = "(" + _mask_text(value >> 16, care >> 16) + "," + _mask_text(value & 0xFFFF, care & 0xFFFF) + ")"
        else:
            base = f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"
        prefix = "**." if self.any_depth else ""
        return prefix + base + "".join(f"[{i}]" for i in self.indices)


_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote_string(value: str) -> str:
    """`value` as a double-quoted literal that reads back as `value` (other controls as \\uXXXX)."""
    return '"' + "".join(_escaped(ch) for ch in value) + '"'


def _escaped(ch: str) -> str:
    if ch in _STRING_ESCAPES:
        return _STRING_ESCAPES[ch]
    return f"\\u{ord(ch):04X}" if ch < " " or ch == "\x7f" else ch


@dataclass(frozen=True, slots=True)
class Selector:
    """The `*` path segment and its filter on the element's own properties (VR, Keyword, ...).
    Not a Node: names in the filter are properties, not variables, so walkers do not enter it."""

    span: Span
    condition: "Expr | None"
    text: str  # canonical: `*` or `*[VR == "PN"]`


def _mask_text(value: int, care: int) -> str:
    digits = []
    for shift in (12, 8, 4, 0):
        digits.append("x" if not (care >> shift) & 0xF else f"{(value >> shift) & 0xF:X}")
    return "".join(digits)


@dataclass(frozen=True, slots=True)
class Path(Node):
    span: Span
    root: str
    elements: tuple[Element, ...]

    def text(self) -> str:
        return ".".join([self.root] + [e.text() for e in self.elements])


# ---- expressions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringLit(Node):
    span: Span
    value: str


@dataclass(frozen=True, slots=True)
class NumberLit(Node):
    span: Span
    value: int | float
    text: str


@dataclass(frozen=True, slots=True)
class RegexLit(Node):
    span: Span
    pattern: str
    flags: str


@dataclass(frozen=True, slots=True)
class ListLit(Node):
    span: Span
    items: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class PathRef(Node):
    span: Span
    path: Path


@dataclass(frozen=True, slots=True)
class Variable(Node):
    span: Span
    name: str


@dataclass(frozen=True, slots=True)
class Call(Node):
    span: Span
    name: str
    args: tuple["Expr", ...]
    name_span: Span


@dataclass(frozen=True, slots=True)
class Concat(Node):
    """`a + b + c`: concatenation of strings, or addition of numbers."""

    span: Span
    parts: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Arithmetic(Node):
    """`a - b`, `a * b`, `a / b`, `a % b`: arithmetic on numbers (`+` is a Concat)."""

    span: Span
    op: str  # - * / %
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True, slots=True)
class Negate(Node):
    """`-x` of a value that is not a number literal (`-7` is a NumberLit)."""

    span: Span
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class Subscript(Node):
    """`VALUE[INDEX]`: one value of several, picked by a number computed when the rule runs."""

    span: Span
    subject: "Expr"
    index: "Expr"


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """A two-sided predicate: comparisons, in, contains, startswith, endswith."""

    span: Span
    op: str  # == != < <= > >= in "not in" contains "not contains" startswith endswith
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True, slots=True)
class Matches(Node):
    span: Span
    subject: "Expr"
    regex: RegexLit
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Presence(Node):
    """`exists PATH`, `missing PATH`, `empty PATH`."""

    span: Span
    kind: str  # exists | missing | empty
    target: Union[PathRef, Variable]


@dataclass(frozen=True, slots=True)
class Quantifier(Node):
    span: Span
    kind: str  # any | all
    var: str
    var_span: Span
    source: Path
    body: "Expr"


@dataclass(frozen=True, slots=True)
class Not(Node):
    span: Span
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class And(Node):
    span: Span
    operands: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    span: Span
    operands: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class ConstRef(Node):
    """A use of a named constant (`const NAME = ...`): its literal, read where it is used.
    The loader puts these in place of the variables that name a constant of the file."""

    span: Span
    name: str
    value: "Expr"  # the constant's literal


@dataclass(frozen=True, slots=True)
class Aggregate(Node):
    """`count()`, `count(COND)`, `any(COND)`, `all(COND)`, `distinct(PATH)`: a value over the
    instances of a group rule's group; inside, paths read each instance in turn."""

    span: Span
    kind: str  # count | any | all | distinct
    argument: "Expr | None"  # None: count()
    name_span: Span


AGGREGATES = ("count", "any", "all", "distinct")


Expr = Union[StringLit, NumberLit, RegexLit, ListLit, PathRef, Variable, Call, Concat,
             Binary, Matches, Presence, Quantifier, Not, And, Or, ConstRef, Arithmetic, Negate, Subscript,
             Aggregate]

PREDICATES = (Binary, Matches, Presence, Quantifier)  # the leaves that --explain reports


# ---- actions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name(Node):
    span: Span
    value: str


Target = Union[PathRef, Variable]


@dataclass(frozen=True, slots=True)
class SetAction(Node):
    span: Span
    target: Target
    value: Expr


@dataclass(frozen=True, slots=True)
class BlankAction(Node):
    span: Span
    target: Target


@dataclass(frozen=True, slots=True)
class DeleteAction(Node):
    span: Span
    target: Target


@dataclass(frozen=True, slots=True)
class DeletePrivateAction(Node):
    span: Span
    # `delete private "GEMS_IDEN_01"` / `["A", "B"]`: those creators' blocks only; with `except`,
    # every private element but those blocks. None: every private element.
    creators: "Expr | None" = None
    keep: bool = False


@dataclass(frozen=True, slots=True)
class RouteAction(Node):
    span: Span
    destinations: tuple[Name, ...]
    back: bool = False
    window: Name | None = None  # `during WINDOW`: a window of the configuration's `windows`


@dataclass(frozen=True, slots=True)
class CopyAction(Node):
    span: Span
    destinations: tuple[Name, ...]
    body: tuple["Action", ...] = ()
    back: bool = False
    braced: bool = False
    window: Name | None = None  # `during WINDOW`


@dataclass(frozen=True, slots=True)
class UrgentAction(Node):
    """`urgent`: every delivery of the document goes first in its destination's queue."""

    span: Span


@dataclass(frozen=True, slots=True)
class NotifyAction(Node):
    """`notify NOTIFIER "message"`: a notification through a notifier of the configuration."""

    span: Span
    notifier: Name
    message: "Expr | None" = None


@dataclass(frozen=True, slots=True)
class ApplyAction(Node):
    span: Span
    namespace: str | None
    block: str


@dataclass(frozen=True, slots=True)
class DropAction(Node):
    span: Span


@dataclass(frozen=True, slots=True)
class RejectAction(Node):
    span: Span
    reason: Expr | None = None


@dataclass(frozen=True, slots=True)
class QuarantineAction(Node):
    span: Span
    reason: Expr | None = None


@dataclass(frozen=True, slots=True)
class LogAction(Node):
    span: Span
    message: Expr


@dataclass(frozen=True, slots=True)
class LetAction(Node):
    """`let name = EXPR`: a value kept for the actions that follow."""

    span: Span
    name: str
    name_span: Span
    value: Expr


@dataclass(frozen=True, slots=True)
class StopAction(Node):
    span: Span


@dataclass(frozen=True, slots=True)
class IfAction(Node):
    span: Span
    condition: Expr
    body: tuple["Action", ...]
    orelse: tuple["Action", ...] | None = None  # an `else if` is a single IfAction here
    else_span: Span | None = None


def if_chain(action: IfAction) -> tuple[list[IfAction], tuple["Action", ...] | None]:
    """An `if`, its `else if`s (nested in the nodes) in order, and the last `else` body (None: none).
    Passes over actions walk chains with this, so that a long chain costs no recursion."""
    chain = [action]
    while action.orelse is not None and len(action.orelse) == 1 and isinstance(action.orelse[0], IfAction):
        action = action.orelse[0]
        chain.append(action)
    return chain, action.orelse


@dataclass(frozen=True, slots=True)
class ForEachAction(Node):
    span: Span
    var: str
    var_span: Span
    source: Path
    body: tuple["Action", ...]


@dataclass(frozen=True, slots=True)
class KeepOnlyAction(Node):
    """`keep only PATH, PATH, ...`: every element of the data set not named is deleted;
    `keep only private PATH, ...`: every private element not named."""

    span: Span
    paths: tuple[PathRef, ...]
    private: bool = False


@dataclass(frozen=True, slots=True)
class OnResponseAction(Node):
    """`on response { ... }`: edits of each response to the request, on its way back."""

    span: Span
    body: tuple["Action", ...]


@dataclass(frozen=True, slots=True)
class AppendAction(Node):
    """`append to PATH as NAME { ... }`: a new item at the end of the sequence at PATH (created
    when missing), bound to NAME for the actions of the body."""

    span: Span
    target: Path
    var: str
    var_span: Span
    body: tuple["Action", ...]


@dataclass(frozen=True, slots=True)
class DeleteItemsAction(Node):
    """`delete each NAME in PATH where CONDITION`: the items of the sequence at PATH for which
    CONDITION holds, NAME bound to each item, are removed."""

    span: Span
    var: str
    var_span: Span
    source: Path
    condition: "Expr"


@dataclass(frozen=True, slots=True)
class CopyPathAction(Node):
    """`copy PATH to PATH`: an element, a sequence or items copied to another place. The source
    may be a loop variable (`copy item to PATH`): a Variable then, not a Path."""

    span: Span
    source: Union[Path, "Variable"]
    target: Path


@dataclass(frozen=True, slots=True)
class PixelRegion(Node):
    """(x, y, width, height) of `blank pixels`: pixels from the top left corner."""

    span: Span
    x: "Expr"
    y: "Expr"
    width: "Expr"
    height: "Expr"


@dataclass(frozen=True, slots=True)
class BlankPixelsAction(Node):
    """`blank pixels (x, y, width, height), ... with FILL`: rectangles of every frame set to FILL."""

    span: Span
    regions: tuple[PixelRegion, ...]
    fill: "Expr | None" = None


Action = Union[SetAction, BlankAction, DeleteAction, DeletePrivateAction, RouteAction, CopyAction, UrgentAction,
               NotifyAction,
               ApplyAction, DropAction, RejectAction, QuarantineAction, LogAction, LetAction, StopAction,
               IfAction, ForEachAction, OnResponseAction, AppendAction, DeleteItemsAction, CopyPathAction,
               BlankPixelsAction, KeepOnlyAction]

ACTIONS = get_args(Action)
ENDING_ACTIONS = (DropAction, RejectAction, QuarantineAction, StopAction)
EDIT_ACTIONS = (SetAction, BlankAction, DeleteAction, DeletePrivateAction)


# ---- messages --------------------------------------------------------------

STORE = "C-STORE"
# Every message a rule can handle, in the order the documentation lists them.
MESSAGES = ("C-STORE", "C-FIND", "C-MOVE", "C-GET", "N-CREATE", "N-SET")
# The requests: every message answered with responses that `on response` can edit.
REQUESTS = MESSAGES[1:]


# ---- top-level items -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Import(Node):
    span: Span
    file: str
    alias: Name
    file_span: Span | None = None  # the quoted file name


@dataclass(frozen=True, slots=True)
class Table(Node):
    span: Span
    name: Name
    file: str
    key: str | None
    file_span: Span | None = None  # the quoted file name


# ---- group rules ---------------------------------------------------------------

GROUP_LEVELS = ("series", "study")
LATE_POLICIES = ("refire", "quarantine", "drop")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class CompleteAfter(Node):
    """`complete after 10m`: the group is complete after this quiet time since its last arrival."""

    span: Span
    text: str  # as written: 10m
    duration_span: Span


@dataclass(frozen=True, slots=True)
class CompleteWhen(Node):
    """`complete when CONDITION`: the group is complete as soon as this holds (after an arrival)."""

    span: Span
    condition: "Expr"


@dataclass(frozen=True, slots=True)
class LatePolicy(Node):
    """`late refire|quarantine|drop`: what becomes of an instance arriving after its group fired."""

    span: Span
    policy: Name


GroupClause = Union[CompleteAfter, CompleteWhen, LatePolicy]


@dataclass(frozen=True, slots=True)
class Rule(Node):
    span: Span
    name: str
    name_span: Span
    when: Expr | None
    actions: tuple[Action, ...]
    braced: bool = False
    # `on C-FIND, C-MOVE`: the messages it handles, as written; none written: C-STORE only.
    messages: tuple[Name, ...] = ()
    # `fallback rule`: runs after the others, only when none of them routed or decided.
    fallback: bool = False
    # `per series` / `per study`: a group rule (None: an instance rule), and its clauses as written.
    level: Name | None = None
    clauses: tuple[GroupClause, ...] = ()

    @property
    def is_group(self) -> bool:
        return self.level is not None

    def clause(self, kind: type):
        """The first clause of that kind, or None."""
        return next((c for c in self.clauses if isinstance(c, kind)), None)

    @property
    def handles(self) -> tuple[str, ...]:
        """The messages this rule handles, in the order written."""
        return tuple(m.value for m in self.messages) if self.messages else (STORE,)


@dataclass(frozen=True, slots=True)
class Const(Node):
    """`const NAME = LITERAL`: a literal named once, used wherever a literal is."""

    span: Span
    name: Name
    value: Expr


@dataclass(frozen=True, slots=True)
class Block(Node):
    span: Span
    name: Name
    actions: tuple[Action, ...]


# ---- tests -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment(Node):
    span: Span
    path: Path
    value: Expr


@dataclass(frozen=True, slots=True)
class GivenFile(Node):
    span: Span
    file: str


@dataclass(frozen=True, slots=True)
class GivenValues(Node):
    span: Span
    keyword: str  # given | with
    assignments: tuple[Assignment, ...]


@dataclass(frozen=True, slots=True)
class ExpectRoute(Node):
    span: Span
    destinations: tuple[Name, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ExpectCopy(Node):
    span: Span
    destination: Name
    condition: Expr


@dataclass(frozen=True, slots=True)
class ExpectOutcome(Node):
    span: Span
    outcome: str  # drop | reject | quarantine
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectFired(Node):
    span: Span
    rule: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ExpectNotify(Node):
    """`expect notify NOTIFIER "message"` (the message optional), `expect no notify NOTIFIER`."""

    span: Span
    notifier: Name
    message: str | None = None
    negated: bool = False


@dataclass(frozen=True, slots=True)
class ExpectCondition(Node):
    span: Span
    condition: Expr


@dataclass(frozen=True, slots=True)
class GivenMessage(Node):
    """`given message C-FIND`: the test evaluates the rules for that message."""

    span: Span
    message: Name


@dataclass(frozen=True, slots=True)
class GivenResponse(Node):
    """`given response DataSet.X = ...`: one response to the request, edited after evaluation."""

    span: Span
    assignments: tuple[Assignment, ...]


@dataclass(frozen=True, slots=True)
class ExpectResponse(Node):
    """`expect response CONDITION` or `expect response dropped`, of the last response given before it."""

    span: Span
    condition: Expr | None  # None: `dropped`


@dataclass(frozen=True, slots=True)
class ExpectFor(Node):
    """`expect for "FILE" ...`: an expectation of the one instance of a test built from that file."""

    span: Span
    file: str
    expectation: "ExpectRoute | ExpectCopy | ExpectOutcome | ExpectFired | ExpectNotify | ExpectCondition | ExpectResponse"


TestStatement = Union[GivenFile, GivenValues, GivenMessage, GivenResponse, ApplyAction, ExpectRoute, ExpectCopy,
                      ExpectOutcome, ExpectFired, ExpectNotify, ExpectCondition, ExpectResponse, ExpectFor]


@dataclass(frozen=True, slots=True)
class Test(Node):
    span: Span
    name: str
    statements: tuple[TestStatement, ...]


Item = Union[Import, Table, Rule, Block, Test, Const]


@dataclass(frozen=True, slots=True)
class Comment(Node):
    span: Span
    text: str  # including the leading '#'


@dataclass(frozen=True)
class RuleFile(Node):
    path: str
    source: str
    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default=())

    def of_type(self, kind: type) -> list:
        return [item for item in self.items if isinstance(item, kind)]

    @property
    def rules(self) -> list[Rule]:
        return self.of_type(Rule)
