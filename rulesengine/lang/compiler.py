"""Nodes -> Python. Each rule becomes one generated Python function.

The generated code calls only the document's path verbs, the operators in
operators.py, the function library and the Evaluation's methods. Every
literal from a rule file (strings, names, patterns) is passed in as a
constant, never spliced into the code, so a rule file cannot inject Python.
Each generated line remembers the rule-file line it came from, so a failure
at run time names the rule file and line.

Two variants are generated from the same code: a fast one for the router, and
a traced one (for --explain, tests and coverage) that records every predicate
with the values it compared and every branch taken.

The generated code stays within Python's own limits on nesting (200 levels of
parentheses, 100 of indentation, the parser's stack) whatever the rule file:
chains (`+`, `and`, `or`, `else if`) are generated flat, and an expression or
an action body nested deeper than a few dozen levels becomes a function of its
own, at the top level of the module, called where it was.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

from ..diagnostics import Span
from . import nodes as n
from . import operators as ops
from . import types as t
from .checks import Analysis, literal_value
from .lint import structural_key
from .functions import Secrets, implementations
from .paths import DOCUMENT_ROOTS, ResolvedPath
from .ruleset import NO_OPERAND, Branch, Predicate, RuleInfo, RuleSet

_compile_counter = itertools.count(1)

_RUNTIME = {
    "_iter": ops.iterate,
    "_plus": ops.plus,
    "_plus_all": ops.plus_all,
    "_store": ops.store,
    "_matches": ops.matches,
    "_not_matches": ops.not_matches,
    "_NO": NO_OPERAND,
    **{f"_op{index}": fn for index, fn in enumerate(ops.BINARY.values())},
    **{f"_{name}": fn for name, fn in ops.PRESENCE.items()},
    **{f"_{kind}{index}": fn for index, ((kind, _op), fn) in enumerate(ops.TEMPORAL.items())},
}
_TEMPORAL_NAMES = {key: f"_{key[0]}{index}" for index, key in enumerate(ops.TEMPORAL)}
_BINARY_NAMES = {op: f"_op{index}" for index, op in enumerate(ops.BINARY)}
RULE_FIRED = "the rule never fired"
_ENDING = {n.DropAction: "drop", n.RejectAction: "reject", n.QuarantineAction: "quarantine",
           n.StopAction: "stop"}
# Past these, an expression (levels of parentheses in its code) or an action body (levels of
# indentation) moves into a function of its own: far below Python's limits of 200 and 100.
_DEEPEST_EXPRESSION = 40
_DEEPEST_INDENT = 40
# Python nests each elif inside the if before it when it compiles: a longer chain continues
# in a function of its own, called from the else of its last arm.
_LONGEST_ELIF_CHAIN = 100


@dataclass
class _Var:
    local: str  # the Python name
    kind: str  # item | value | element


@dataclass
class _Output:
    lines: list[str] = field(default_factory=list)
    spans: dict[int, Span] = field(default_factory=dict)


@dataclass
class _Pending:
    """A top-level function to generate once the current one is done: a block, or a part moved
    out because it was nested too deeply, with what its code refers to (`context`)."""

    name: str
    params: str
    span: Span | None
    body: Callable[[], None]
    context: tuple  # rule_index, block_name, reader, cache


class CodeGenerator:
    """Generates one Python module for a program, in fast or traced form."""

    def __init__(self, analysis: Analysis, secrets: Secrets, traced: bool, shared: "Shared"):
        self.analysis = analysis
        self.traced = traced
        self.shared = shared
        self.out = _Output()
        self.indent = 0
        self.blocks: dict[int, str] = {}
        self.pending: list[_Pending] = []
        self.functions = itertools.count()
        self.rule_index: int | None = -1  # whose branches these are: a rule, or None in a block
        self.block_name: str | None = None
        self.reader = "doc.read_path"  # the main function binds it to a local
        self.cache: str | None = None  # ...and the document's value cache

    # ---- output ----

    def emit(self, code: str, span: Span | None = None) -> None:
        self.out.lines.append("    " * self.indent + code)
        if span is not None:
            self.out.spans[len(self.out.lines)] = span

    def const(self, value) -> str:
        return self.shared.const(value)

    # ---- program ----

    def rules(self, rules: list[n.Rule]) -> str:
        """All rules in one function, in file order: no call per rule on the hot path."""
        self.emit("def _evaluate(doc, ev):")
        self.indent += 1
        self.emit("read = doc.read_path")
        self.emit("c = doc._cache")  # the document's value cache, emptied in place on every edit
        self.reader, self.cache = "read", "c"
        for index, rule in enumerate(rules):
            self.rule_index = index
            if self.traced:
                self.emit(f"ev.current = {index}")
            if rule.when is not None:
                self.emit(f"if {self.condition(rule.when, {})}:", rule.when.span)
                self.indent += 1
            self.emit(f"ev.fire({index})", rule.span)
            if self.traced:
                self.emit(f"ev.branch({self.shared.branch(index, rule.span, RULE_FIRED)})")
            self.actions(rule.actions, {})
            if rule.when is not None:
                self.indent -= 1
        self.emit("return False")
        self.indent -= 1
        self.reader, self.cache = "doc.read_path", None
        self.flush_pending()
        return "_evaluate"

    def flush_pending(self) -> None:
        """Generate the pending top-level functions (and those they add), after the current one."""
        saved = self.rule_index, self.block_name, self.reader, self.cache, self.indent
        while self.pending:
            pending = self.pending.pop(0)
            self.rule_index, self.block_name, self.reader, self.cache = pending.context
            self.indent = 0
            self.emit(f"def {pending.name}({pending.params}):", pending.span)
            self.indent = 1
            pending.body()
        self.rule_index, self.block_name, self.reader, self.cache, self.indent = saved

    def _function_for(self, prefix: str, body: tuple[n.Action, ...], span: Span, block: str | None = None) -> str:
        """A block as a function. Its branches are its own, whichever rule applies it."""
        name = f"_{prefix}{next(self.functions)}"
        self.pending.append(_Pending(name, "doc, ev", span, lambda: self._body_of(body, {}),
                                     (None, block, "doc.read_path", None)))
        return name

    def _body_of(self, body, scope) -> None:
        self.actions(body, scope)
        self.emit("return False")

    def _locals(self, scope) -> str:
        """What code generated here refers to: the document, the evaluation, the reader and
        cache where bound to locals, and the loop and let variables in scope."""
        names = ["doc", "ev"]
        if self.reader == "read":
            names.append("read")
        if self.cache:
            names.append(self.cache)
        names += [var.local for var in scope.values()]
        return ", ".join(dict.fromkeys(names))

    def _deep_actions(self, body, scope, span: Span | None) -> None:
        """Actions too deep to indent further: a top-level function, called here. An ending
        action in it returns True from it, and so from here."""
        name = f"_deep{next(self.functions)}"
        params = self._locals(scope)
        context = (self.rule_index, self.block_name, self.reader, self.cache)
        scope = dict(scope)  # as it is here: later lets of the enclosing list do not reach the body
        self.pending.append(_Pending(name, params, span, lambda: self._body_of(body, scope), context))
        self.emit(f"if {name}({params}):", span)
        self.emit("    return True")

    def _flat(self, code: str, scope) -> str:
        """`code`, or a call of a top-level function returning it when it nests too deeply."""
        if len(code) <= 2 * _DEEPEST_EXPRESSION or _nesting(code) <= _DEEPEST_EXPRESSION:
            return code
        name = f"_deep{next(self.functions)}"
        params = self._locals(scope)
        context = (self.rule_index, self.block_name, self.reader, self.cache)
        self.pending.append(_Pending(name, params, None, lambda: self.emit(f"return {code}"), context))
        return f"{name}({params})"

    # ---- actions ----

    def actions(self, actions, scope: dict[str, _Var]) -> None:
        if not actions:
            self.emit("pass")
        scope = dict(scope)  # a let binds for the actions after it in this list only
        for action in actions:
            getattr(self, "_" + type(action).__name__)(action, scope)

    def _span_ref(self, span: Span) -> int:
        return self.shared.span(span)

    def _edit(self, action, verb: str, scope, value_code: str | None = None) -> None:
        target = action.target
        extra = f", {value_code}" if value_code is not None else ""
        if isinstance(target, n.Variable):
            var = scope[target.name]
            call = f"doc.{verb}_ref({var.local}{extra})"
        else:
            path = self.analysis.paths[id(target.path)]
            call = f"doc.{verb}_path({self._path_const(path)}{extra}{self._base(target.path, scope)})"
        self.emit(f"ev.edited({call}, {self._span_ref(action.span)})", action.span)

    def _SetAction(self, action: n.SetAction, scope) -> None:
        self._edit(action, "write", scope, self.value(action.value, scope))

    def _BlankAction(self, action: n.BlankAction, scope) -> None:
        self._edit(action, "blank", scope)

    def _DeleteAction(self, action: n.DeleteAction, scope) -> None:
        self._edit(action, "delete", scope)

    def _DeletePrivateAction(self, action, scope) -> None:
        self.emit(f"ev.edited(doc.delete_private(), {self._span_ref(action.span)})", action.span)

    def _RouteAction(self, action: n.RouteAction, scope) -> None:
        names = self.const(tuple(d.value for d in action.destinations))
        self.emit(f"ev.route({names}, {action.back})", action.span)

    def _CopyAction(self, action: n.CopyAction, scope) -> None:
        names = self.const(tuple(d.value for d in action.destinations))
        if not action.body:
            self.emit(f"ev.route({names}, {action.back})", action.span)
            return
        # The copy's edits run when evaluation ends: a nested function that keeps, as default
        # arguments, the values of let and of loop values as they are now.
        kept = {name: var for name, var in scope.items() if var.kind == "value"}
        body = f"_copy{next(self.functions)}"
        defaults = "".join(f", {var.local}={var.local}" for var in kept.values())
        self.emit(f"def {body}(doc, ev{defaults}):", action.span)
        self.indent += 1
        saved = self.reader, self.cache
        self.reader, self.cache = "doc.read_path", None  # `doc` is the copy here
        self.actions(action.body, kept)
        self.reader, self.cache = saved
        self.emit("return False")
        self.indent -= 1
        self.emit(f"ev.copy({names}, {body}, {action.back})", action.span)

    def _LetAction(self, action: n.LetAction, scope) -> None:
        self.emit(f"v_{action.name} = {self.value(action.value, scope)}", action.span)
        scope[action.name] = _Var(f"v_{action.name}", "value")

    def _ApplyAction(self, action: n.ApplyAction, scope) -> None:
        module, block = self.analysis.blocks[id(action)]
        name = self.blocks.get(id(block))
        if name is None:
            name = self._function_for("block", block.actions, block.span, block.name.value)
            self.blocks[id(block)] = name
        self.emit(f"{name}(doc, ev)", action.span)

    def _ending(self, action, scope) -> None:
        outcome = _ENDING[type(action)]
        reason = getattr(action, "reason", None)
        reason_code = self.value(reason, scope) if reason is not None else "None"
        self.emit(f"return ev.end({outcome!r}, {reason_code}, {self._span_ref(action.span)})", action.span)

    _DropAction = _RejectAction = _QuarantineAction = _StopAction = _ending

    def _LogAction(self, action: n.LogAction, scope) -> None:
        self.emit(f"ev.log({self.value(action.message, scope)}, {self._span_ref(action.span)})", action.span)

    def _IfAction(self, action: n.IfAction, scope) -> None:
        """if / elif / else: an `else if` chain of any length stays at one level of indentation."""
        chain, orelse = n.if_chain(action)
        cut = len(chain) > _LONGEST_ELIF_CHAIN
        if cut:
            chain, orelse = chain[:_LONGEST_ELIF_CHAIN], (chain[_LONGEST_ELIF_CHAIN],)
        for position, arm in enumerate(chain):
            condition = self.condition(arm.condition, scope)
            if position == 0:
                self.emit(f"if {condition}:", arm.span)
            else:
                if self.traced:  # the else of the arm before ran: recorded, then this condition
                    before = chain[position - 1]
                    mark = self.shared.branch(self.rule_index, before.else_span, "the else branch never ran",
                                              self.block_name)
                    condition = f"ev.branch({mark}) or {condition}"
                self.emit(f"elif {condition}:", arm.span)
            self._arm(arm.body, scope, arm.span, "the if branch never ran")
        last = chain[-1]
        if orelse is not None:
            self.emit("else:", last.else_span)
            self._arm(orelse, scope, last.else_span, "the else branch never ran", apart=cut)
        elif self.traced:
            self.emit("else:")
            self._arm((), scope, last.span, "this if condition was never false")

    def _arm(self, body, scope, span: Span, description: str, apart: bool = False) -> None:
        """A branch's body; `apart`: in a function of its own."""
        self.indent += 1
        if self.traced:
            self.emit(f"ev.branch({self.shared.branch(self.rule_index, span, description, self.block_name)})")
        if body and (apart or self.indent >= _DEEPEST_INDENT):
            self._deep_actions(body, scope, span)
        elif body or not self.traced:
            self.actions(body, scope)
        self.indent -= 1

    def _ForEachAction(self, action: n.ForEachAction, scope) -> None:
        binding = self.analysis.bindings[id(action)]
        var = _Var(f"v_{action.var}", "item" if binding.kind == "item" else "element")
        source = self.analysis.paths[id(action.source)]
        base = self._base(action.source, scope)
        if var.kind == "item":
            iterable = f"doc.item_refs({self._path_const(source)}{base})"
        else:
            iterable = f"doc.element_refs({self._path_const(source)}{base})"
        self.shared.note_read(source, scope, action.source.root)
        self.emit(f"for {var.local} in {iterable}:", action.span)
        self._arm(action.body, {**scope, action.var: var}, action.span, "the for each body never ran")

    # ---- conditions ----

    def condition(self, expr: n.Expr, scope) -> str:
        return self._flat(self._condition(expr, scope), scope)

    def _condition(self, expr: n.Expr, scope) -> str:
        if isinstance(expr, n.And):
            return "(" + " and ".join(self.condition(o, scope) for o in expr.operands) + ")"
        if isinstance(expr, n.Or):
            return "(" + " or ".join(self.condition(o, scope) for o in expr.operands) + ")"
        if isinstance(expr, n.Not):
            return f"(not {self.condition(expr.operand, scope)})"
        return self.predicate(expr, scope)

    def _record(self, expr, operator: str, left: str, right: str | None, kind: str) -> str:
        """A predicate call: plain in fast code, recorded with its operands when traced."""
        if not self.traced:
            return f"{operator}({left})" if right is None else f"{operator}({left}, {right})"
        index = self.shared.predicate(expr, kind)
        return f"ev.check({index}, {operator}, {left}, {right if right is not None else '_NO'})"

    def predicate(self, expr, scope) -> str:
        if isinstance(expr, n.Binary):
            return self._binary(expr, scope)
        if isinstance(expr, n.Matches):
            operator = "_not_matches" if expr.negated else "_matches"
            pattern = self.const(self.analysis.regexes[id(expr.regex)])
            return self._record(expr, operator, self.value(expr.subject, scope), pattern, "matches")
        if isinstance(expr, n.Presence):
            value = self.value(expr.target, scope)
            if not self.traced and expr.kind != "empty":  # inline: no call for exists and missing
                return f"({value} is {'not ' if expr.kind == 'exists' else ''}None)"
            return self._record(expr, f"_{expr.kind}", value, None, expr.kind)
        if isinstance(expr, n.Quantifier):
            return self._quantifier(expr, scope)
        raise AssertionError(f"not a condition: {type(expr).__name__}")  # the checks reject these

    def _binary(self, expr: n.Binary, scope) -> str:
        left = self.value(expr.left, scope)
        left_type = self.analysis.types.get(id(expr.left), t.T_ANY)
        right_type = self.analysis.types.get(id(expr.right), t.T_ANY)
        if expr.op in ("in", "not in"):
            right = self._collection(expr.right, scope)
        else:
            right = self.value(expr.right, scope)
        kinds = {left_type.kind, right_type.kind}
        temporal = kinds & {t.DATE, t.TIME, t.DATETIME}
        if temporal and expr.op in ("==", "!=", "<", "<=", ">", ">=") and len(temporal) == 1:
            return self._record(expr, _TEMPORAL_NAMES[(temporal.pop(), expr.op)], left, right, expr.op)
        if not self.traced and left_type.kind in (t.STRING, t.UID) and not left_type.multi \
                and not left_type.many:
            # Inline the common cases; None == "x" and None in {...} are False: the null rule holds.
            if expr.op == "==" and isinstance(expr.right, n.StringLit):
                return f"({left} == {right})"
            if expr.op == "in" and right in self.shared.constants and \
                    isinstance(self.shared.constants[right], frozenset):
                return f"({left} in {right})"
        return self._record(expr, _BINARY_NAMES[expr.op], left, right, expr.op)

    def _collection(self, expr: n.Expr, scope) -> str:
        ref = self.analysis.tables.get(id(expr))
        if ref is not None:
            return self.const(ref.table.rows)
        literal = literal_value(expr)
        if isinstance(literal, tuple) and all(isinstance(v, str) for v in literal):
            return self.const(frozenset(literal))
        return self.value(expr, scope)

    def _quantifier(self, expr: n.Quantifier, scope) -> str:
        binding = self.analysis.bindings[id(expr)]
        var = _Var(f"v_{expr.var}", "item" if binding.kind == "item" else "value")
        source = self.analysis.paths[id(expr.source)]
        self.shared.note_read(source, scope, expr.source.root)
        path_args = f"{self._path_const(source)}{self._base(expr.source, scope)}"
        items = f"doc.item_refs({path_args})" if var.kind == "item" else f"_iter({self.reader}({path_args}))"
        body = self.condition(expr.body, {**scope, expr.var: var})
        test = f"{expr.kind}({body} for {var.local} in {items})"
        if not self.traced:
            return test
        index = self.shared.predicate(expr, expr.kind)
        return f"ev.check({index}, bool, {test}, _NO)"

    # ---- values ----

    def value(self, expr: n.Expr, scope) -> str:
        return self._flat(self._value(expr, scope), scope)

    def _value(self, expr: n.Expr, scope) -> str:
        if isinstance(expr, (n.StringLit, n.NumberLit)):
            return self.const(expr.value)
        if isinstance(expr, n.RegexLit):
            return self.const(self.analysis.regexes[id(expr)])
        if isinstance(expr, n.ListLit):
            literal = literal_value(expr)
            if literal is not None:
                return self.const(literal)
            return "(" + "".join(self.value(item, scope) + ", " for item in expr.items) + ")"
        if isinstance(expr, n.PathRef):
            path = self.analysis.paths[id(expr.path)]
            self.shared.note_read(path, scope, expr.path.root)
            base = self._base(expr.path, scope)
            call = f"{self.reader}({self._path_const(path)}{base})"
            if self.cache and not base:  # read_path stores what it reads in the cache itself
                k = self.const(path.text)
                return f"({self.cache}[{k}] if {k} in {self.cache} else {call})"
            return call
        if isinstance(expr, n.Variable):
            var = scope.get(expr.name)
            if var is None:
                return self.const(self.analysis.tables[id(expr)].table.rows)
            return f"doc.read_ref({var.local})" if var.kind == "element" else var.local
        if isinstance(expr, n.Concat):  # one call for a + b + ...: no nesting, however long
            parts = [self.value(part, scope) for part in expr.parts]
            if len(parts) == 2:
                return f"_plus({parts[0]}, {parts[1]})"
            return f"_plus_all({', '.join(parts)})"
        if isinstance(expr, n.Call):
            return self._call(expr, scope)
        return self.condition(expr, scope)

    def _call(self, expr: n.Call, scope) -> str:
        function = f"_f_{expr.name}"
        if expr.name == "lookup":
            ref = self.analysis.tables[id(expr.args[0])]
            args = [self.const(ref.table.rows), self.const(ref.column)]
            args += [self.value(a, scope) for a in expr.args[1:]]
        else:
            args = [self.value(a, scope) for a in expr.args]
        call = f"{function}({', '.join(args)})"
        if self.cache and _depends_on_document_only(expr, scope):
            # Functions are pure: many rules testing lower(DataSet.StudyDescription) compute it once.
            return self._cached("=" + repr(structural_key(expr)), call)
        return call

    def _cached(self, key: str, code: str) -> str:
        """`code`'s value, remembered in the document's cache under `key` until an edit."""
        k = self.const(key)
        return f"({self.cache}[{k}] if {k} in {self.cache} else _store({self.cache}, {k}, {code}))"

    # ---- paths ----

    def _path_const(self, path: ResolvedPath) -> str:
        return self.const(path)

    def _base(self, path: n.Path, scope) -> str:
        """Paths rooted at a loop variable start from that item."""
        if path.root in DOCUMENT_ROOTS or path.root not in scope:
            return ""
        return f", {scope[path.root].local}"


class Shared:
    """What both generated variants share: constants, spans, predicates, branches."""

    def __init__(self):
        self.constants: dict[str, object] = {}
        self._by_key: dict = {}
        self.spans: list[Span] = []
        self._span_index: dict[Span, int] = {}
        self.predicates: list[Predicate] = []
        self.branches: list[Branch] = []
        self.tags: set[int] = set()
        self.reads_everything = False
        self.source_text: dict[str, str] = {}
        self._lines: dict[str, list[str]] = {}

    def const(self, value) -> str:
        try:
            key = (type(value), value)
            hash(key)
        except TypeError:
            key = ("id", id(value))
        name = self._by_key.get(key)
        if name is None:
            name = f"_k{len(self.constants)}"
            self.constants[name] = value
            self._by_key[key] = name
        return name

    def span(self, span: Span) -> int:
        index = self._span_index.get(span)
        if index is None:
            index = len(self.spans)
            self.spans.append(span)
            self._span_index[span] = index
        return index

    def predicate(self, expr, kind: str) -> int:
        index = len(self.predicates)
        left, right = _operands(expr)
        self.predicates.append(Predicate(
            index, expr.span, self.text_of(expr.span), kind,
            self.text_of(left.span) if left is not None else "",
            self.text_of(right.span) if right is not None else "",
            right is not None and literal_value(right) is not None or isinstance(right, n.RegexLit)))
        return index

    def branch(self, rule: int | None, span: Span, description: str, block: str | None = None) -> int:
        index = len(self.branches)
        self.branches.append(Branch(index, rule, span, description, block))
        return index

    def text_of(self, span: Span) -> str:
        lines = self._lines.get(span.file)
        if lines is None:
            lines = self._lines[span.file] = self.source_text.get(span.file, "").splitlines()
        if not lines or span.line > len(lines):
            return ""
        if span.line == span.end_line:
            return lines[span.line - 1][span.column - 1:span.end_column - 1]
        parts = [lines[span.line - 1][span.column - 1:]]
        parts += [line.strip() for line in lines[span.line:span.end_line - 1]]
        parts.append(lines[span.end_line - 1][:span.end_column - 1].strip())
        return " ".join(p.strip() for p in parts if p.strip())

    def note_read(self, path: ResolvedPath, scope, root: str) -> None:
        """Collect the top-level tags conditions and values read (for header-only parsing)."""
        if path.is_arrival or path.root not in DOCUMENT_ROOTS:
            return  # arrival facts; paths under a loop variable were counted with its source
        first = path.steps[0]
        if first.tag is None or first.any_depth:
            self.reads_everything = True
        elif path.root == "DataSet":
            self.tags.add(first.tag)


def _nesting(code: str) -> int:
    """How deeply brackets nest in generated code (which holds no string literals)."""
    depth = deepest = 0
    for ch in code:
        if ch in "([{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in ")]}":
            depth -= 1
    return deepest


def _depends_on_document_only(expr, scope) -> bool:
    """True when an expression reads only literals and document paths (no loop values, no clock)."""
    if isinstance(expr, (n.StringLit, n.NumberLit, n.RegexLit)):
        return True
    if isinstance(expr, n.PathRef):
        return expr.path.root not in scope
    if isinstance(expr, n.Call):
        return expr.name not in ("today", "now") and all(_depends_on_document_only(a, scope) for a in expr.args)
    if isinstance(expr, (n.Concat, n.ListLit)):
        parts = expr.parts if isinstance(expr, n.Concat) else expr.items
        return all(_depends_on_document_only(p, scope) for p in parts)
    return False


def _operands(expr):
    if isinstance(expr, n.Binary):
        return expr.left, expr.right
    if isinstance(expr, n.Matches):
        return expr.subject, expr.regex
    if isinstance(expr, n.Presence):
        return expr.target, None
    if isinstance(expr, n.Quantifier):
        return None, None
    return None, None


def compile_program(program, analysis: Analysis, secrets: Secrets | None = None,
                    no_destination: str = "quarantine") -> RuleSet:
    """Generate, compile and wrap the program's rules. The analysis must have no errors."""
    secrets = secrets or Secrets()
    shared = Shared()
    for module in program.modules:
        shared.source_text[module.path] = module.file.source
    rules = program.main.file.rules
    code_name = f"<rules {program.version} #{next(_compile_counter)}>"
    namespace: dict = dict(_RUNTIME)
    namespace.update({f"_f_{name}": fn for name, fn in implementations(secrets).items()})
    outputs = {}
    for traced in (False, True):
        generator = CodeGenerator(analysis, secrets, traced, shared)
        generator.rules(rules)
        outputs[traced] = generator.out
    fast_out, traced_out = outputs[False], outputs[True]
    # One code object: the fast module first, then the traced one, with a line map for both.
    source = "\n".join(fast_out.lines + [""] + _renamed(traced_out.lines))
    line_map = dict(fast_out.spans)
    offset = len(fast_out.lines) + 1
    line_map.update({line + offset: span for line, span in traced_out.spans.items()})
    namespace.update(shared.constants)
    exec(compile(source, code_name, "exec"), namespace)  # noqa: S102 - generated from checked nodes only
    infos = [RuleInfo(i, rule.name, rule.span) for i, rule in enumerate(rules)]
    return RuleSet(
        program=program, analysis=analysis, rules=infos, spans=shared.spans,
        fast=namespace["_evaluate"], traced=namespace["_t_evaluate"],
        predicates=shared.predicates, branches=shared.branches, code_name=code_name, line_map=line_map,
        tags_read=None if shared.reads_everything else frozenset(shared.tags),
        no_destination=no_destination, destinations=analysis.destinations,
    )


def _renamed(lines: list[str]) -> list[str]:
    """The traced variant's functions get a _t prefix so both live in one namespace."""
    import re
    return [re.sub(r"\b(_evaluate|_copy\d+|_block\d+|_deep\d+)\b", r"_t\1", line) for line in lines]



@dataclass
class Snippets:
    """Compiled pieces of tests: values, conditions and action lists, traced."""

    functions: dict[str, object]
    predicates: list[Predicate]
    spans: list[Span]
    rules: tuple = ()  # what an Evaluation asks of a rule set: snippets belong to no rule


def compile_snippets(analysis: Analysis, pieces: dict[str, tuple[str, object]],
                     secrets: Secrets | None = None, sources: dict[str, str] | None = None) -> Snippets:
    """Compile named pieces: ("value", expr), ("condition", expr) or ("actions", actions).

    Each becomes a function (doc, ev); values and conditions return their result.
    The checks must have seen the nodes (Analysis.check_test does that for tests).
    """
    shared = Shared()
    for module in analysis.program.modules:
        shared.source_text[module.path] = module.file.source
    shared.source_text.update(sources or {})
    generator = CodeGenerator(analysis, secrets or Secrets(), True, shared)
    for name, (kind, node) in pieces.items():
        generator.emit(f"def {name}(doc, ev):")
        generator.indent += 1
        if kind == "value":
            generator.emit(f"return {generator.value(node, {})}", node.span)
        elif kind == "condition":
            generator.emit(f"return {generator.condition(node, {})}", node.span)
        else:
            generator.actions(node, {})
        generator.indent -= 1
        generator.flush_pending()
    namespace: dict = dict(_RUNTIME)
    namespace.update({f"_f_{fn}": impl for fn, impl in implementations(secrets or Secrets()).items()})
    namespace.update(shared.constants)
    exec(compile("\n".join(generator.out.lines), "<rule tests>", "exec"), namespace)  # noqa: S102
    return Snippets({name: namespace[name] for name in pieces}, shared.predicates, shared.spans)
