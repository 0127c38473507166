"""Parse tree -> typed nodes. The only module that knows lark's tree shapes."""

from __future__ import annotations

import dataclasses
import re

from lark import Token, Transformer, Tree, v_args

from ..diagnostics import Span
from . import nodes as n
from .selectors import selector_text


class NodeError(Exception):
    """A malformed literal found while building nodes (a bad escape, a bad tag)."""

    def __init__(self, code: str, message: str, span: Span, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.span, self.hint = code, message, span, hint


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/"}
_TAG = re.compile(r"\(\s*([0-9A-Fa-fxX]{4})\s*,\s*([0-9A-Fa-fxX]{4})\s*\)")
_PRIVATE = re.compile(r'\(\s*([0-9A-Fa-f]{4})\s*,\s*("(?:\\.|[^"\\])*")\s*,\s*([0-9A-Fa-f]{2}|[xX]{2})\s*\)')


def unquote(text: str, span: Span) -> str:
    """The value of a double-quoted string literal, with escapes resolved."""
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        else:
            raise NodeError("syntax", f"unknown escape \\{nxt} in a string",
                            span, 'write \\\\ for a backslash, \\" for a quote')
    return "".join(out)


def _hex_with_mask(text: str) -> tuple[int, int]:
    value = care = 0
    for ch in text:
        value <<= 4
        care <<= 4
        if ch not in "xX":
            value |= int(ch, 16)
            care |= 0xF
    return value, care


class ToNodes(Transformer):
    """Builds nodes; spans come from lark's propagated positions."""

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename

    # -- helpers --
    def _span(self, meta) -> Span:
        if getattr(meta, "empty", False):
            return Span(self.filename, 1, 1, 1, 1)
        return Span(self.filename, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.filename, tok.line, tok.column, tok.end_line, tok.end_column)

    def _name(self, tok: Token) -> n.Name:
        return n.Name(self._tspan(tok), str(tok))

    def _names(self, tokens) -> tuple[n.Name, ...]:
        return tuple(self._name(t) for t in tokens if isinstance(t, Token) and t.type == "NAME")

    # -- file --
    def start(self, items):
        return list(items)

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        file_tok, alias = children
        return n.Import(self._span(meta), unquote(file_tok, self._tspan(file_tok)), self._name(alias),
                        self._tspan(file_tok))

    @v_args(meta=True)
    def table_stmt(self, meta, children):
        name, file_tok, *key_tok = children
        key = unquote(key_tok[0], self._tspan(key_tok[0])) if key_tok else None
        return n.Table(self._span(meta), self._name(name), unquote(file_tok, self._tspan(file_tok)), key,
                       self._tspan(file_tok))

    @v_args(meta=True)
    def const_stmt(self, meta, children):
        name, value = children
        return n.Const(self._span(meta), self._name(name), value)

    @v_args(meta=True)
    def rule(self, meta, children):
        fallback = isinstance(children[0], Token) and children[0].type == "FALLBACK"
        if fallback:
            children = children[1:]
        name_tok, *rest = children
        messages: tuple[n.Name, ...] = ()
        if rest and isinstance(rest[0], tuple) and rest[0][:1] == ("on",):
            messages = rest.pop(0)[1]
        level = None
        if rest and isinstance(rest[0], tuple) and rest[0][:1] == ("per",):
            level = rest.pop(0)[1]
        clauses = []
        while rest and isinstance(rest[0], (n.CompleteAfter, n.CompleteWhen, n.LatePolicy)):
            clauses.append(rest.pop(0))
        when = None
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "when":
            when = rest.pop(0)[1]
        braced = len(rest) == 1 and isinstance(rest[0], tuple) and rest[0][0] == "braced"
        actions = rest[0][1] if braced else tuple(rest)
        return n.Rule(self._span(meta), unquote(name_tok, self._tspan(name_tok)), self._tspan(name_tok),
                      when, actions, braced, messages, fallback, level, tuple(clauses))

    def group_level(self, children):
        return ("per", self._name(children[0]))

    @v_args(meta=True)
    def complete_after(self, meta, children):
        tok = children[0]
        return n.CompleteAfter(self._span(meta), str(tok), self._tspan(tok))

    @v_args(meta=True)
    def complete_when(self, meta, children):
        return n.CompleteWhen(self._span(meta), children[0])

    @v_args(meta=True)
    def late_policy(self, meta, children):
        return n.LatePolicy(self._span(meta), self._name(children[-1]))

    @v_args(meta=True)
    def aggregate(self, meta, children):
        kind, argument = children[0], children[2]
        return n.Aggregate(self._span(meta), str(kind), argument, self._tspan(kind))

    def on_messages(self, children):
        return ("on", tuple(self._name(tok) for tok in children))

    def when(self, children):
        return ("when", children[0])

    def braced_actions(self, children):
        return ("braced", tuple(children))

    @v_args(meta=True)
    def block(self, meta, children):
        name, *actions = children
        return n.Block(self._span(meta), self._name(name), tuple(actions))

    # -- actions --
    @v_args(meta=True)
    def set_action(self, meta, children):
        return n.SetAction(self._span(meta), children[0], children[1])

    @v_args(meta=True)
    def blank_action(self, meta, children):
        return n.BlankAction(self._span(meta), children[0])

    @v_args(meta=True)
    def blank_pixels_action(self, meta, children):
        regions = tuple(child for child in children if isinstance(child, n.PixelRegion))
        rest = [child for child in children if not isinstance(child, n.PixelRegion)]
        return n.BlankPixelsAction(self._span(meta), regions, rest[0] if rest else None)

    @v_args(meta=True)
    def pixel_region(self, meta, children):
        return n.PixelRegion(self._span(meta), *children)

    @v_args(meta=True)
    def delete_action(self, meta, children):
        return n.DeleteAction(self._span(meta), children[0])

    @v_args(meta=True)
    def delete_private_action(self, meta, children):
        keep = any(isinstance(c, Token) and c.type == "EXCEPT" for c in children)
        creators = [c for c in children if not isinstance(c, Token)]
        return n.DeletePrivateAction(self._span(meta), creators[0] if creators else None, keep)

    @v_args(meta=True)
    def route_action(self, meta, children):
        return n.RouteAction(self._span(meta), self._names(children), _has_back(children), _window(children))

    @v_args(meta=True)
    def copy_action(self, meta, children):
        back = _has_back(children)
        body: tuple = ()
        braced = False
        if children and isinstance(children[-1], tuple) and children[-1][:1] == ("braced",):
            body, braced = children[-1][1], True
        return n.CopyAction(self._span(meta), self._names(children), body, back, braced, _window(children))

    def during(self, children):
        return ("during", self._name(children[0]))

    @v_args(meta=True)
    def urgent_action(self, meta, children):
        return n.UrgentAction(self._span(meta))

    @v_args(meta=True)
    def notify_action(self, meta, children):
        return n.NotifyAction(self._span(meta), self._name(children[0]), children[1] if len(children) > 1 else None)

    @v_args(meta=True)
    def apply_action(self, meta, children):
        if len(children) == 1:
            return n.ApplyAction(self._span(meta), None, str(children[0]))
        return n.ApplyAction(self._span(meta), str(children[0]), str(children[1]))

    @v_args(meta=True)
    def drop_action(self, meta, children):
        return n.DropAction(self._span(meta))

    @v_args(meta=True)
    def reject_action(self, meta, children):
        return n.RejectAction(self._span(meta), children[0] if children else None)

    @v_args(meta=True)
    def quarantine_action(self, meta, children):
        return n.QuarantineAction(self._span(meta), children[0] if children else None)

    @v_args(meta=True)
    def log_action(self, meta, children):
        return n.LogAction(self._span(meta), children[0])

    @v_args(meta=True)
    def let_action(self, meta, children):
        name, value = children
        return n.LetAction(self._span(meta), str(name), self._tspan(name), value)

    @v_args(meta=True)
    def stop_action(self, meta, children):
        return n.StopAction(self._span(meta))

    @v_args(meta=True)
    def if_action(self, meta, children):
        """`if A {} else if B {} else {}`: nodes nest each `else if` in the else of the one
        before (as `else { if B {} }` reads), built here without recursion, from the last."""
        condition, body, *rest = children
        end = (meta.end_line, meta.end_column)
        orelse = else_span = None
        if rest and rest[-1][0] == "else":
            _, orelse, else_span = rest.pop()
        for _, else_tok, if_tok, arm_condition, arm_body in reversed(rest):
            arm = n.IfAction(Span(self.filename, if_tok.line, if_tok.column, *end), arm_condition, arm_body[1],
                             orelse, else_span)
            orelse, else_span = (arm,), Span(self.filename, else_tok.line, else_tok.column, *end)
        return n.IfAction(self._span(meta), condition, body[1], orelse, else_span)

    def else_if(self, children):
        else_tok, if_tok, condition, body = children
        return ("else if", else_tok, if_tok, condition, body)

    @v_args(meta=True)
    def else_clause(self, meta, children):
        (child,) = children
        return ("else", child[1], self._span(meta))

    @v_args(meta=True)
    def for_action(self, meta, children):
        var, source, body = children
        return n.ForEachAction(self._span(meta), str(var), self._tspan(var), source.path, body[1])

    @v_args(meta=True)
    def append_action(self, meta, children):
        target, var, body = children
        return n.AppendAction(self._span(meta), target.path, str(var), self._tspan(var), body[1])

    @v_args(meta=True)
    def delete_items_action(self, meta, children):
        var, source, condition = children
        return n.DeleteItemsAction(self._span(meta), str(var), self._tspan(var), source.path, condition)

    @v_args(meta=True)
    def copy_element_action(self, meta, children):
        source, target = children
        source = source.path if isinstance(source, n.PathRef) else source  # a loop variable stays a Variable
        return n.CopyPathAction(self._span(meta), source, target.path)

    # -- expressions --
    @v_args(meta=True)
    def or_expr(self, meta, children):
        return n.Or(self._span(meta), tuple(children))

    @v_args(meta=True)
    def and_expr(self, meta, children):
        return n.And(self._span(meta), tuple(children))

    @v_args(meta=True)
    def not_op(self, meta, children):
        return n.Not(self._span(meta), children[0])

    @v_args(meta=True)
    def compare(self, meta, children):
        left, op, right = children
        return n.Binary(self._span(meta), str(op), left, right)

    def _binary(op):  # noqa: N805 - a factory for the table of two-sided predicates below
        @v_args(meta=True)
        def build(self, meta, children):
            return n.Binary(self._span(meta), op, children[0], children[1])
        return build

    in_op = _binary("in")
    not_in_op = _binary("not in")
    contains_op = _binary("contains")
    not_contains_op = _binary("not contains")
    startswith_op = _binary("startswith")
    endswith_op = _binary("endswith")

    @v_args(meta=True)
    def matches_op(self, meta, children):
        return n.Matches(self._span(meta), children[0], self._regex(children[1]))

    @v_args(meta=True)
    def not_matches_op(self, meta, children):
        return n.Matches(self._span(meta), children[0], self._regex(children[1]), negated=True)

    def _presence(kind):  # noqa: N805
        @v_args(meta=True)
        def build(self, meta, children):
            return n.Presence(self._span(meta), kind, children[0])
        return build

    exists_op = _presence("exists")
    missing_op = _presence("missing")
    empty_op = _presence("empty")

    @v_args(meta=True)
    def quantifier(self, meta, children):
        kind, var, source, body = [c for c in children if not (isinstance(c, Token) and c in ("in", ":"))]
        return n.Quantifier(self._span(meta), str(kind), str(var), self._tspan(var), source.path, body)

    @v_args(meta=True)
    def sum(self, meta, children):
        operands, operators = children[::2], [str(tok) for tok in children[1::2]]
        if all(op == "+" for op in operators):
            return n.Concat(self._span(meta), tuple(operands))
        return self._from_the_left(operands, operators)

    @v_args(meta=True)
    def product(self, meta, children):
        return self._from_the_left(children[::2], [str(tok) for tok in children[1::2]])

    def _from_the_left(self, operands, operators):
        """`a - b + c * ...` as written, from the left; `+` runs stay one Concat, as without `-`."""
        result, joined = operands[0], False
        for op, operand in zip(operators, operands[1:]):
            span = Span(self.filename, result.span.line, result.span.column, operand.span.end_line,
                        operand.span.end_column)
            if op == "+":
                parts = result.parts if joined else (result,)
                result, joined = n.Concat(span, parts + (operand,)), True
            else:
                result, joined = n.Arithmetic(span, op, result, operand), False
        return result

    @v_args(meta=True)
    def subscript(self, meta, children):
        subject, index = children
        return n.Subscript(self._span(meta), subject, index)

    @v_args(meta=True)
    def negate(self, meta, children):
        operand = children[-1]
        if isinstance(operand, n.NumberLit):  # -7 is a negative literal, written as before
            text = operand.text[1:] if operand.text.startswith("-") else "-" + operand.text
            return n.NumberLit(self._span(meta), -operand.value, text)
        return n.Negate(self._span(meta), operand)

    def string(self, children):
        tok = children[0]
        return n.StringLit(self._tspan(tok), unquote(tok, self._tspan(tok)))

    def number(self, children):
        tok = children[0]
        text = str(tok)
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return n.NumberLit(self._tspan(tok), value, text)

    def regex(self, children):
        return self._regex(children[0])

    def _regex(self, tok: Token) -> n.RegexLit:
        text = str(tok)
        end = text.rindex("/")
        pattern = text[1:end].replace("\\/", "/")
        return n.RegexLit(self._tspan(tok), pattern, text[end + 1:])

    @v_args(meta=True)
    def list(self, meta, children):
        items = tuple(c for c in children if c is not None)
        return n.ListLit(self._span(meta), items)

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        if str(name) in ("count", "distinct"):  # aggregates of group rules, written as calls
            args = [a for a in args if a is not None]
            return n.Aggregate(self._span(meta), str(name), args[0] if len(args) == 1 else None, self._tspan(name)) \
                if len(args) <= 1 else n.Call(self._span(meta), str(name), tuple(args), self._tspan(name))
        return n.Call(self._span(meta), str(name), tuple(a for a in args if a is not None), self._tspan(name))

    def variable(self, children):
        tok = children[0]
        return n.Variable(self._tspan(tok), str(tok))

    # -- paths --
    @v_args(meta=True)
    def path(self, meta, children):
        root, *rest = children
        elements, any_depth = [], False
        for child in rest:
            if isinstance(child, Token) and child.type == "ANY_DEPTH":
                if any_depth:
                    raise NodeError("syntax", "write ** once", self._tspan(child))
                any_depth = True
                continue
            if any_depth:
                child = _with_any_depth(child)
                any_depth = False
            elements.append(child)
        if any_depth:
            raise NodeError("syntax", "a path cannot end with **: name the element to find",
                            self._span(meta), "for example DataSet.**.PatientName")
        return n.PathRef(self._span(meta), n.Path(self._span(meta), str(root), tuple(elements)))

    @v_args(meta=True)
    def element(self, meta, children):
        head, *indices = children
        span = self._span(meta)
        idx = tuple(indices)
        if head.type == "NAME":
            return n.Element(span, keyword=str(head), indices=idx)
        if head.type == "PRIVATE_TAG":
            m = _PRIVATE.fullmatch(str(head))
            group = int(m.group(1), 16)
            if group % 2 == 0:
                raise NodeError("bad-tag", f"group {group:04X} is not private (private groups are odd)",
                                self._tspan(head))
            creator = unquote(m.group(2), self._tspan(head))
            offset = None if m.group(3) in ("xx", "xX", "Xx", "XX") else int(m.group(3), 16)  # xx: the whole block
            return n.Element(span, private=(group, creator, offset), indices=idx)
        m = _TAG.fullmatch(str(head))
        group_value, group_care = _hex_with_mask(m.group(1))
        elem_value, elem_care = _hex_with_mask(m.group(2))
        if group_care == 0xFFFF and elem_care == 0xFFFF:
            return n.Element(span, tag=(group_value << 16) | elem_value, indices=idx)
        mask = ((group_value << 16) | elem_value, (group_care << 16) | elem_care)
        return n.Element(span, mask=mask, indices=idx)

    @v_args(meta=True)
    def selector(self, meta, children):
        condition = children[1] if len(children) > 1 else None
        span = self._span(meta)
        return n.Element(span, selector=n.Selector(span, condition, selector_text(condition)))

    @v_args(meta=True)
    def keep_only_action(self, meta, children):
        return n.KeepOnlyAction(self._span(meta), tuple(children))

    @v_args(meta=True)
    def keep_only_private_action(self, meta, children):
        return n.KeepOnlyAction(self._span(meta), tuple(children), private=True)

    @v_args(meta=True)
    def private_condition(self, meta, children):
        return n.Variable(self._span(meta), "private")

    def index(self, children):
        tok = children[0]
        if tok.type == "STAR":
            return n.STAR
        value = int(tok)
        if value < 1:
            raise NodeError("bad-index", "items and values are numbered from 1", self._tspan(tok))
        return value

    @v_args(meta=True)
    def on_response_action(self, meta, children):
        return n.OnResponseAction(self._span(meta), children[0][1])

    # -- tests --
    @v_args(meta=True)
    def test(self, meta, children):
        name_tok, *statements = children
        return n.Test(self._span(meta), unquote(name_tok, self._tspan(name_tok)), tuple(statements))

    @v_args(meta=True)
    def given_file(self, meta, children):
        tok = children[0]
        return n.GivenFile(self._span(meta), unquote(tok, self._tspan(tok)))

    @v_args(meta=True)
    def given_message(self, meta, children):
        return n.GivenMessage(self._span(meta), self._name(children[0]))

    @v_args(meta=True)
    def given_response(self, meta, children):
        return n.GivenResponse(self._span(meta), tuple(children))

    @v_args(meta=True)
    def response_expectation(self, meta, children):
        return n.ExpectResponse(self._span(meta), children[0])

    @v_args(meta=True)
    def response_dropped_expectation(self, meta, children):
        return n.ExpectResponse(self._span(meta), None)

    @v_args(meta=True)
    def given_values(self, meta, children):
        return n.GivenValues(self._span(meta), "given", tuple(children))

    @v_args(meta=True)
    def with_values(self, meta, children):
        return n.GivenValues(self._span(meta), "with", tuple(children))

    @v_args(meta=True)
    def assignment(self, meta, children):
        return n.Assignment(self._span(meta), children[0].path, children[1])

    @v_args(meta=True)
    def expect(self, meta, children):
        # The statement's span starts at `expect`, not at what follows it.
        return dataclasses.replace(children[0], span=self._span(meta))

    @v_args(meta=True)
    def expect_for(self, meta, children):
        tok, expectation = children
        span = self._span(meta)
        return n.ExpectFor(span, unquote(tok, self._tspan(tok)), dataclasses.replace(expectation, span=span))

    @v_args(meta=True)
    def route_expectation(self, meta, children):
        return n.ExpectRoute(self._span(meta), self._names(children))

    @v_args(meta=True)
    def no_route_expectation(self, meta, children):
        return n.ExpectRoute(self._span(meta), self._names(children), negated=True)

    @v_args(meta=True)
    def copy_expectation(self, meta, children):
        return n.ExpectCopy(self._span(meta), self._name(children[0]), children[1])

    @v_args(meta=True)
    def outcome_expectation(self, meta, children):
        outcome, *reason = children  # `!` keeps the keyword token
        text = unquote(reason[0], self._tspan(reason[0])) if reason else None
        return n.ExpectOutcome(self._span(meta), str(outcome), text)

    @v_args(meta=True)
    def fired_expectation(self, meta, children):
        tok = children[0]
        return n.ExpectFired(self._span(meta), unquote(tok, self._tspan(tok)))

    @v_args(meta=True)
    def not_fired_expectation(self, meta, children):
        tok = children[0]
        return n.ExpectFired(self._span(meta), unquote(tok, self._tspan(tok)), negated=True)

    @v_args(meta=True)
    def notify_expectation(self, meta, children):
        message = unquote(children[1], self._tspan(children[1])) if len(children) > 1 else None
        return n.ExpectNotify(self._span(meta), self._name(children[0]), message)

    @v_args(meta=True)
    def no_notify_expectation(self, meta, children):
        return n.ExpectNotify(self._span(meta), self._name(children[0]), negated=True)

    @v_args(meta=True)
    def condition_expectation(self, meta, children):
        return n.ExpectCondition(self._span(meta), children[0])


def _window(children) -> n.Name | None:
    return next((c[1] for c in children if isinstance(c, tuple) and c[:1] == ("during",)), None)


def _has_back(children) -> bool:
    return any(isinstance(c, Token) and c.type == "BACK" for c in children)


def _with_any_depth(element: n.Element) -> n.Element:
    return dataclasses.replace(element, any_depth=True)


def to_nodes(tree: Tree, filename: str):
    return ToNodes(filename).transform(tree)
