"""A deliberately simple reference evaluator that walks the syntax tree.

For every document it walks the rule nodes: conditions through the operators
of rulesengine.lang.operators, calls through the function library, paths read
and written through the Document's path verbs. It produces the same decision
data as a compiled RuleSet (outcome, destinations, rules fired, edits, log),
so it serves two purposes: a baseline for the compiled path's speed, and an
independent check of the compiled path's results.

It is deliberately not optimised, but it is not made slow on purpose either:
each path is resolved against the dictionary and each regular expression
compiled once, on first use, so the comparison measures walking the tree
against running generated code, not dictionary look-ups.

Not supported (a NotImplementedError names them): tables, imports and
`apply` of an imported block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rulesengine.diagnostics import RulesError
from rulesengine.lang import nodes as n
from rulesengine.lang import operators as ops
from rulesengine.lang import types as t
from rulesengine.lang.checks import destination_infos
from rulesengine.lang.functions import FUNCTIONS, Secrets, implementations
from rulesengine.lang.loader import load_program
from rulesengine.lang.regex import Regex, compile_regex
from rulesengine.lang.paths import DOCUMENT_ROOTS, Binding, ResolvedPath, resolve
from rulesengine.lang.ruleset import loop_reason
from rulesengine.values import display

_ORDERING_AND_EQUALITY = ("==", "!=", "<", "<=", ">", ">=")
_TEMPORAL = {t.DATE, t.TIME, t.DATETIME}
_ENDINGS = {n.DropAction: "drop", n.RejectAction: "reject", n.QuarantineAction: "quarantine",
            n.StopAction: "stop"}


@dataclass(frozen=True)
class ReferenceEdit:
    path: str
    old: Any
    new: Any
    rule: str | None
    destination: str | None = None  # None: the document every destination starts from


@dataclass
class ReferenceDecision:
    outcome: str  # route | drop | reject | quarantine
    reason: str | None
    destinations: dict[str, Any]  # name -> the Document that destination receives
    rules_fired: list[str]
    edits: list[ReferenceEdit]
    log: list[str]
    error: str | None = None


@dataclass
class _Bound:
    """A name bound by let, any/all or for each: an item (an ItemRef), one value, or an element reference."""

    kind: str  # item | value | element
    value: Any
    type: t.Type
    binding: Binding


@dataclass
class _Run:
    """The state of one evaluation."""

    routes: dict[str, bool] = field(default_factory=dict)  # destination -> routed back explicitly
    # destination -> (copy body, rule index, the let and loop values it keeps)
    copies: dict[str, list[tuple[tuple[n.Action, ...], int, dict]]] = field(default_factory=dict)
    fired: list[int] = field(default_factory=list)
    edits: list[ReferenceEdit] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    outcome: str | None = None
    reason: str | None = None
    rule: int = -1
    destination: str | None = None


class ReferenceInterpreter:
    """Evaluates rules by walking their nodes; `evaluate(document)` returns a ReferenceDecision."""

    def __init__(self, rule_file: n.RuleFile, *, destinations=None, secrets: Secrets | None = None,
                 no_destination: str = "quarantine"):
        self.rules: tuple[n.Rule, ...] = tuple(rule_file.rules)
        self.blocks = {block.name.value: block for block in rule_file.of_type(n.Block)}
        self.destinations = destination_infos(destinations)
        self.functions = implementations(secrets or Secrets())
        self.no_destination = no_destination
        # Keyed by id() of nodes this object keeps alive through self.rules and self.blocks.
        self._paths: dict[int, ResolvedPath] = {}
        self._regexes: dict[int, Regex] = {}
        self._types: dict[int, t.Type] = {}

    @classmethod
    def from_source(cls, text: str, *, filename: str = "<rules>", **options) -> "ReferenceInterpreter":
        program = load_program(text=text, filename=filename)
        if program.errors:
            raise RulesError(program.errors)
        if program.main.file.of_type(n.Import) or program.main.file.of_type(n.Table):
            raise NotImplementedError("the reference interpreter does not support imports or tables")
        return cls(program.main.file, **options)

    # ---- evaluation ----

    def evaluate(self, document) -> ReferenceDecision:
        run = _Run()
        try:
            for index, rule in enumerate(self.rules):
                if rule.when is not None and not self._test(rule.when, document, {}):
                    continue
                run.rule = index
                run.fired.append(index)
                if self._run_actions(rule.actions, document, run, {}):
                    break
            return self._finish(run, document)
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - like the router: a failing rule quarantines the document
            return ReferenceDecision("quarantine", str(exc), {}, self._fired_names(run), run.edits, run.log,
                                     error=str(exc))

    def _fired_names(self, run: _Run) -> list[str]:
        return [self.rules[index].name for index in run.fired]

    def _finish(self, run: _Run, document) -> ReferenceDecision:
        outcome, reason = run.outcome, run.reason
        destinations: dict[str, Any] = {}
        if outcome not in ("drop", "reject", "quarantine"):
            for name, back in run.routes.items():
                why = None if back else self._loop_reason(name, document)
                if why:
                    run.log.append(f"not sent to {name}: {why}")
                    continue
                destinations[name] = self._document_for(name, run, document)
            if destinations:
                outcome, reason = "route", None
            else:
                stopped = " (a rule stopped evaluation before any route)" if outcome == "stop" else ""
                outcome, reason = self.no_destination, "no rule routed this document" + stopped
        return ReferenceDecision(outcome, reason, destinations, self._fired_names(run), run.edits, run.log)

    def _document_for(self, name: str, run: _Run, document):
        bodies = run.copies.get(name)
        if not bodies:
            return document
        copy = document.copy()
        run.destination = name
        try:
            for body, rule, kept in bodies:
                run.rule = rule
                self._run_actions(body, copy, run, kept)  # an ending action only ends this copy's edits
        finally:
            run.destination = None
        return copy

    def _loop_reason(self, name: str, document) -> str | None:
        return loop_reason(self.destinations, name, document)

    # ---- actions: each returns True when it ended evaluation ----

    def _run_actions(self, actions, document, run: _Run, scope: dict[str, _Bound]) -> bool:
        scope = dict(scope)  # a let binds for the actions after it in this list only
        for action in actions:
            if isinstance(action, n.LetAction):
                value = self._value(action.value, document, scope)
                scope[action.name] = _Bound("value", value, self._type(action.value, scope), Binding("value"))
            elif self._run_action(action, document, run, scope):
                return True
        return False

    def _run_action(self, action, document, run: _Run, scope) -> bool:
        if isinstance(action, n.SetAction):
            value = self._value(action.value, document, scope)
            self._edited(run, self._edit(action.target, "write", document, scope, value))
        elif isinstance(action, n.BlankAction):
            self._edited(run, self._edit(action.target, "blank", document, scope))
        elif isinstance(action, n.DeleteAction):
            self._edited(run, self._edit(action.target, "delete", document, scope))
        elif isinstance(action, n.DeletePrivateAction) and action.creators is not None:
            creators = self._value(action.creators, document, scope)
            self._edited(run, document.delete_private_blocks(creators, action.keep))
        elif isinstance(action, n.DeletePrivateAction):
            self._edited(run, document.delete_private())
        elif isinstance(action, n.BlankPixelsAction):
            regions = [tuple(self._value(part, document, scope) for part in (r.x, r.y, r.width, r.height))
                       for r in action.regions]
            fill = self._value(action.fill, document, scope) if action.fill is not None else 0
            self._edited(run, document.blank_pixels(regions, fill))
        elif isinstance(action, n.KeepOnlyAction):
            raise NotImplementedError("the reference interpreter does not support keep only")
        elif isinstance(action, n.RouteAction):
            self._route(run, action.destinations, action.back)
        elif isinstance(action, n.CopyAction):
            self._route(run, action.destinations, action.back)
            if action.body:
                # Copies are edited after the rules ran: they keep values, not items of the document.
                kept = {name: bound for name, bound in scope.items() if bound.kind == "value"}
                for name in action.destinations:
                    run.copies.setdefault(name.value, []).append((action.body, run.rule, kept))
        elif isinstance(action, n.ApplyAction):
            if action.namespace is not None:
                raise NotImplementedError("the reference interpreter does not support imported blocks")
            self._run_actions(self.blocks[action.block].actions, document, run, {})  # blocks hold edits only
        elif type(action) in _ENDINGS:
            reason = getattr(action, "reason", None)
            run.outcome = _ENDINGS[type(action)]
            if reason is not None:
                value = self._value(reason, document, scope)
                run.reason = value if isinstance(value, str) else display(value)
            return True
        elif isinstance(action, n.LogAction):
            value = self._value(action.message, document, scope)
            run.log.append(value if isinstance(value, str) else display(value))
        elif isinstance(action, n.IfAction):
            chain, orelse = n.if_chain(action)
            for arm in chain:
                if self._test(arm.condition, document, scope):
                    return self._run_actions(arm.body, document, run, scope)
            if orelse is not None:
                return self._run_actions(orelse, document, run, scope)
        elif isinstance(action, n.ForEachAction):
            return self._for_each(action, document, run, scope)
        else:
            raise NotImplementedError(f"the reference interpreter does not know {type(action).__name__}")
        return False

    @staticmethod
    def _route(run: _Run, names: tuple[n.Name, ...], back: bool) -> None:
        for name in names:
            run.routes[name.value] = run.routes.get(name.value, False) or back

    def _edit(self, target, verb: str, document, scope, *value) -> list:
        if isinstance(target, n.Variable):
            return getattr(document, f"{verb}_ref")(scope[target.name].value, *value)
        path = self._resolved(target.path, scope)
        return getattr(document, f"{verb}_path")(path, *value, self._base(target.path, scope))

    def _edited(self, run: _Run, changes) -> None:
        rule = self.rules[run.rule].name if run.rule >= 0 else None
        for change in changes:
            run.edits.append(ReferenceEdit(change.path, change.old, change.new, rule, run.destination))

    def _for_each(self, action: n.ForEachAction, document, run: _Run, scope) -> bool:
        source = self._resolved(action.source, scope)
        source_type = t.path_type(source)
        base = self._base(action.source, scope)
        if source_type.kind in (t.ITEMS, t.ITEM):
            kind, element_type, values = "item", t.Type(t.ITEM), document.item_refs(source, base)
        else:
            kind, element_type, values = "element", source_type.single(), document.element_refs(source, base)
        for value in values:
            inner = {**scope, action.var: _Bound(kind, value, element_type, Binding(kind, source))}
            if self._run_actions(action.body, document, run, inner):
                return True
        return False

    # ---- conditions ----

    def _test(self, expr, document, scope) -> bool:
        if isinstance(expr, n.And):
            return all(self._test(operand, document, scope) for operand in expr.operands)
        if isinstance(expr, n.Or):
            return any(self._test(operand, document, scope) for operand in expr.operands)
        if isinstance(expr, n.Not):
            return not self._test(expr.operand, document, scope)
        if isinstance(expr, n.Binary):
            return self._binary(expr, document, scope)
        if isinstance(expr, n.Matches):
            subject = self._value(expr.subject, document, scope)
            regex = self._regex(expr.regex)
            return ops.not_matches(subject, regex) if expr.negated else ops.matches(subject, regex)
        if isinstance(expr, n.Presence):
            return ops.PRESENCE[expr.kind](self._value(expr.target, document, scope))
        if isinstance(expr, n.Quantifier):
            return self._quantifier(expr, document, scope)
        raise NotImplementedError(f"not a condition: {type(expr).__name__}")

    def _binary(self, expr: n.Binary, document, scope) -> bool:
        left = self._value(expr.left, document, scope)
        right = self._value(expr.right, document, scope)
        if expr.op in _ORDERING_AND_EQUALITY:
            temporal = {self._type(expr.left, scope).kind, self._type(expr.right, scope).kind} & _TEMPORAL
            if len(temporal) == 1:  # dates and times compare as instants
                normalise = ops.NORMALISERS[temporal.pop()]
                left, right = normalise(left), normalise(right)
        return ops.BINARY[expr.op](left, right)

    def _quantifier(self, expr: n.Quantifier, document, scope) -> bool:
        source = self._resolved(expr.source, scope)
        source_type = t.path_type(source)
        base = self._base(expr.source, scope)
        if source_type.kind in (t.ITEMS, t.ITEM):
            kind, element_type, values = "item", t.Type(t.ITEM), document.item_refs(source, base)
        else:
            kind, element_type = "value", source_type.single()
            values = ops.iterate(document.read_path(source, base))
        results = (self._test(expr.body, document,
                              {**scope, expr.var: _Bound(kind, value, element_type, Binding(kind, source))})
                   for value in values)
        return any(results) if expr.kind == "any" else all(results)

    # ---- values ----

    def _value(self, expr, document, scope) -> Any:
        if isinstance(expr, (n.StringLit, n.NumberLit)):
            return expr.value
        if isinstance(expr, n.RegexLit):
            return self._regex(expr)
        if isinstance(expr, n.ListLit):
            return tuple(self._value(item, document, scope) for item in expr.items)
        if isinstance(expr, n.PathRef):
            return document.read_path(self._resolved(expr.path, scope), self._base(expr.path, scope))
        if isinstance(expr, n.Variable):
            bound = scope.get(expr.name)
            if bound is None:
                raise NotImplementedError(f"the reference interpreter does not support tables ({expr.name})")
            return document.read_ref(bound.value) if bound.kind == "element" else bound.value
        if isinstance(expr, n.Concat):
            result = self._value(expr.parts[0], document, scope)
            for part in expr.parts[1:]:
                result = ops.plus(result, self._value(part, document, scope))
            return result
        if isinstance(expr, n.Call):
            if expr.name == "lookup":
                raise NotImplementedError("the reference interpreter does not support tables (lookup)")
            return self.functions[expr.name](*(self._value(arg, document, scope) for arg in expr.args))
        return self._test(expr, document, scope)

    # ---- what is worked out once per node ----

    def _resolved(self, path: n.Path, scope) -> ResolvedPath:
        resolved = self._paths.get(id(path))
        if resolved is None:
            bindings = {name: bound.binding for name, bound in scope.items()}
            resolved, diagnostics = resolve(path, bindings)
            if resolved is None:
                raise ValueError(f"{path.text()}: {diagnostics[0].message}")
            self._paths[id(path)] = resolved
        return resolved

    @staticmethod
    def _base(path: n.Path, scope):
        """Paths rooted at a loop variable start from that item; others from the document."""
        if path.root in DOCUMENT_ROOTS or path.root not in scope:
            return None
        return scope[path.root].value

    def _regex(self, literal: n.RegexLit) -> Regex:
        pattern = self._regexes.get(id(literal))
        if pattern is None:  # the same engine as the compiler's: the language's regexes are RE2's
            pattern = self._regexes[id(literal)] = compile_regex(literal.pattern, literal.flags)
        return pattern

    def _type(self, expr, scope) -> t.Type:
        """The static type of a value, as far as date and time comparisons need it."""
        known = self._types.get(id(expr))
        if known is None:
            known = self._types[id(expr)] = self._infer_type(expr, scope)
        return known

    def _infer_type(self, expr, scope) -> t.Type:
        if isinstance(expr, n.StringLit):
            return t.T_STRING
        if isinstance(expr, n.NumberLit):
            return t.T_NUMBER
        if isinstance(expr, n.PathRef):
            return t.path_type(self._resolved(expr.path, scope))
        if isinstance(expr, n.Variable) and expr.name in scope:
            return scope[expr.name].type
        if isinstance(expr, n.Call) and expr.name in FUNCTIONS:
            if expr.name == "lookup":
                return t.T_STRING
            return FUNCTIONS[expr.name].returns([self._type(arg, scope) for arg in expr.args])
        if isinstance(expr, n.Concat):
            kinds = [self._type(part, scope) for part in expr.parts]
            return t.T_NUMBER if all(k.kind == t.NUMBER and not k.multi for k in kinds) else t.T_STRING
        if isinstance(expr, n.ListLit):
            kinds = {self._type(item, scope).kind for item in expr.items}
            return t.Type(kinds.pop() if len(kinds) == 1 else t.ANY, multi=True)
        return t.T_ANY


def summarise(decision) -> dict:
    """What a compiled Decision and a ReferenceDecision must agree on, in comparable form."""
    return {
        "outcome": decision.outcome,
        "reason": decision.reason if decision.error is None else None,  # failure messages are worded differently
        "failed": decision.error is not None,
        "destinations": list(decision.destinations),
        "rules_fired": [getattr(rule, "name", rule) for rule in decision.rules_fired],
        "edits": [(edit.path, edit.old, edit.new, edit.rule, edit.destination) for edit in decision.edits],
        "log": [getattr(line, "message", line) for line in decision.log],
    }
