"""Semantic checks: names, paths, types, VRs, regexes, functions, destinations.

`Analysis` walks every rule, block and test of a program once, reports findings
and keeps what it resolved (paths, types, regexes, block and table references)
for the compiler. The whole-file lint passes (unreachable and shadowed rules,
fall-through, loops) live in lint.py and run on top of an Analysis.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..diagnostics import Diagnostic, Span, error, warning
from ..values import ValueError_, concrete_vr, to_dicom
from . import nodes as n
from . import types as t
from .functions import FUNCTIONS, HASH_ALPHABETS
from .loader import Module, Program, TableData
from .regex import Regex, RegexError, compile_regex, replacement_pieces
from .paths import (ARRIVAL, ARRIVAL_FIELDS, ARRIVAL_TIME_VRS, COMMAND_SET, READ_ONLY_ROOTS, ROOTS, Binding, ResolvedPath, lookup_tag, resolve,
                    tag_text)
from .types import Type
from .visitor import NodeVisitor

_ORDERING = {"<", "<=", ">", ">="}
_EQUALITY = {"==", "!="}
_ROUTING = (n.RouteAction, n.CopyAction, n.DropAction, n.RejectAction, n.QuarantineAction, n.StopAction)


@dataclass(frozen=True)
class DestinationInfo:
    """What the checks know of a destination: enough to spot loops back to a sender, and
    routes to a destination that cannot answer the message."""

    name: str
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    type: str | None = None  # dicom, folder, worklist: named in findings
    answers: frozenset[str] | None = None  # the messages it answers; None: unknown, no finding


def destination_infos(destinations) -> dict[str, DestinationInfo] | None:
    """Accepts None (unknown), names, or a mapping of name -> DestinationInfo / dict."""
    if destinations is None:
        return None
    if isinstance(destinations, Mapping):
        out = {}
        for name, value in destinations.items():
            if isinstance(value, DestinationInfo):
                out[name] = value
            elif isinstance(value, Mapping):
                answers = value.get("answers")
                out[name] = DestinationInfo(name, value.get("ae_title"), value.get("host"), value.get("port"),
                                            value.get("type"), frozenset(answers) if answers is not None else None)
            else:
                out[name] = DestinationInfo(name)
        return out
    return {name: DestinationInfo(name) for name in destinations}


@dataclass
class Scope:
    module: Module
    variables: dict[str, tuple[Binding, Type]] = field(default_factory=dict)
    context: str = "rule"  # rule | block | copy | response | test
    writable_arrival: bool = False  # tests may set Association.* and Source.* (and CommandSet.*)
    messages: tuple[str, ...] = (n.STORE,)  # what the rule being checked handles

    def with_variable(self, name: str, binding: Binding, kind: Type) -> "Scope":
        variables = dict(self.variables)
        variables[name] = (binding, kind)
        return Scope(self.module, variables, self.context, self.writable_arrival, self.messages)

    def in_context(self, context: str) -> "Scope":
        return Scope(self.module, self.variables, context, self.writable_arrival, self.messages)


@dataclass
class TableRef:
    table: TableData
    column: str | None  # None: the table itself (for `in`)


class Analysis(NodeVisitor):
    """Findings, plus what was resolved, keyed by id() of the nodes."""

    def __init__(self, program: Program, destinations=None):
        self.program = program
        self.destinations = destination_infos(destinations)
        self.diagnostics: list[Diagnostic] = list(program.diagnostics)
        self.paths: dict[int, ResolvedPath] = {}
        self.types: dict[int, Type] = {}
        self.regexes: dict[int, Regex] = {}
        self.blocks: dict[int, tuple[Module, n.Block]] = {}
        self.tables: dict[int, TableRef] = {}
        self.bindings: dict[int, Binding] = {}
        # Names in a test file that stand for a constant of the rule file it tests: their literal.
        self.constants: dict[int, n.Expr] = {}
        self._checked_blocks: set[int] = set()
        self._block_stack: list[n.Block] = []  # blocks being checked, to catch one applying itself
        # A rule of the main file can end in reject: the router then runs the rules before it answers
        # a sender (a reject in a block or a copy is refused above, so rules alone decide).
        # `can_reject` is for C-STORE; `rejecting` names every message some rule can reject.
        self.can_reject = False
        self.rejecting: set[str] = set()

    # ---- entry points ----

    def run(self) -> "Analysis":
        for module in self.program.modules:
            self.check_module(module)
        return self

    def check_module(self, module: Module) -> None:
        seen: dict[str, n.Rule] = {}
        fallbacks: dict[str, n.Rule] = {}
        for item in module.file.items:
            if isinstance(item, n.Const):
                self._check_const(item, module)
            elif isinstance(item, n.Rule) and item.fallback:
                for message in item.handles:
                    first = fallbacks.setdefault(message, item)
                    if first is not item:
                        self._error("duplicate-fallback", f"another fallback rule handles {message} "
                                    f"(rule {first.name!r}, line {first.span.line}); only one can run",
                                    item.name_span, "merge them into one fallback rule, with if inside")
                        break
            if isinstance(item, n.Rule):
                if item.name in seen:
                    first = seen[item.name]
                    self._warn("duplicate-rule", f"another rule is named {item.name!r} (line {first.span.line}); "
                               "reports and tests tell rules apart by name", item.name_span)
                seen.setdefault(item.name, item)
                scope = Scope(module, messages=self._messages(item))
                if item.when is not None:
                    self.check_condition(item.when, scope)
                self.check_actions(item.actions, scope)
            elif isinstance(item, n.Block):
                self._check_block(module, item)
            elif isinstance(item, n.Test):
                self._error("misplaced-test", "tests belong in a file of their own, named like this one with "
                            "_test before .rules; here they would never run", item.span)

    def _check_const(self, item: n.Const, module: Module) -> None:
        value = item.value
        items = value.items if isinstance(value, n.ListLit) else (value,)
        if not all(isinstance(v, (n.StringLit, n.NumberLit)) for v in items):
            self._error("bad-constant", f"constant {item.name.value} must be a string, a number or a list of "
                        "those", value.span, 'for example const DATE_SHIFT = -30 or const SITES = ["A", "B"]')
            return
        self.check_expr(value, Scope(module))

    def _messages(self, rule: n.Rule) -> tuple[str, ...]:
        """The known messages a rule handles; an unknown one is a finding (and left out)."""
        known = []
        for name in rule.messages:
            if name.value in n.MESSAGES:
                if name.value in known:
                    self._warn("duplicate-message", f"{name.value} is named twice", name.span)
                else:
                    known.append(name.value)
                continue
            close = [m for m in n.MESSAGES if m == name.value.upper()] or \
                difflib.get_close_matches(name.value.upper(), n.MESSAGES, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "messages: " + ", ".join(n.MESSAGES)
            self._error("unknown-message", f"unknown message {name.value!r}: a rule handles "
                        + ", ".join(n.MESSAGES), name.span, hint)
        return tuple(known) if rule.messages else (n.STORE,)

    @property
    def messages(self) -> frozenset[str]:
        """The messages some rule of the main file handles."""
        return frozenset(m for rule in self.program.main.file.rules for m in rule.handles if m in n.MESSAGES)

    def _check_block(self, module: Module, block: n.Block) -> None:
        if id(block) in self._checked_blocks:
            return
        self._checked_blocks.add(id(block))
        self._block_stack.append(block)
        self.check_actions(block.actions, Scope(module, context="block"))
        self._block_stack.pop()

    # ---- findings ----

    def _error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(error(code, message, span, hint))

    def _warn(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(warning(code, message, span, hint))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    # ---- actions ----

    def check_actions(self, actions: Iterable[n.Action], scope: Scope) -> None:
        for action in actions:
            if isinstance(action, n.LetAction):
                scope = self._let(action, scope) or scope
            else:
                self.check_action(action, scope)

    def _let(self, action: n.LetAction, scope: Scope) -> Scope | None:
        """A `let` binds a value for the rest of the actions around it."""
        kind = self.check_value(action.value, scope)
        if not self._name_free(action.name, action.name_span, scope) or kind is None:
            return None
        if kind.kind in (t.ITEMS, t.ITEM):
            self._error("type-mismatch", "let keeps a value, not a sequence or an item", action.value.span,
                        "use for each to walk items")
            return None
        return scope.with_variable(action.name, Binding("value"), kind)

    def _name_free(self, name: str, span: Span, scope: Scope) -> bool:
        module = scope.module
        if (name in ROOTS or name in scope.variables or name in module.tables or name in module.imports
                or name in module.constants):
            self._error("duplicate-name", f"{name!r} is already a name here; choose another", span)
            return False
        return True

    def check_action(self, action: n.Action, scope: Scope) -> None:
        self.visit(action, scope)

    def visit_SetAction(self, action: n.SetAction, scope: Scope) -> None:
        target = self._target(action.target, scope, "set")
        value_type = self.check_value(action.value, scope)
        if target is None or value_type is None:
            return
        self._check_assignment(target, action.value, value_type, action.value.span)

    def visit_BlankAction(self, action: n.BlankAction, scope: Scope) -> None:
        target = self._target(action.target, scope, "blank")
        if target is not None and target[0] is not None and isinstance(target[0].last.index, int):
            self._error("bad-target", "blank empties a whole element or sequence, not one value or item",
                        action.target.span, "to remove one value or item, write delete")

    def visit_DeleteAction(self, action: n.DeleteAction, scope: Scope) -> None:
        self._target(action.target, scope, "delete")

    def visit_DeletePrivateAction(self, action, scope: Scope) -> None:
        pass

    def _routing_allowed(self, action, scope: Scope, word: str) -> bool:
        if scope.context == "response":
            if isinstance(action, n.DropAction):
                return True  # drop in `on response`: this response is not returned
            self._error("response-action", f"{word} cannot be used inside on response: the request was "
                        "already decided; a response can only be edited or dropped", action.span,
                        "on response holds set, blank, delete, if, for each, let, log, apply and drop")
            return False
        if scope.context in ("block", "copy"):
            where = "a block" if scope.context == "block" else "a copy"
            self._error("block-action", f"{word} cannot be used inside {where}: it decides for the whole document",
                        action.span, "blocks and copies hold edits only: set, blank, delete, delete private, let, apply, if, "
                        "for each and log")
            return False
        return True

    def _check_destinations(self, names: Iterable[n.Name], messages: tuple[str, ...] = ()) -> None:
        if self.destinations is None:
            return
        for name in names:
            info = self.destinations.get(name.value)
            if info is None:
                close = difflib.get_close_matches(name.value, list(self.destinations), n=1, cutoff=0.6)
                known = ", ".join(sorted(self.destinations)) or "none are configured"
                hint = f"did you mean {close[0]}?" if close else f"known destinations: {known}"
                self._error("unknown-destination", f"unknown destination {name.value!r}", name.span, hint)
                continue
            if info.answers is None:
                continue
            unanswered = [m for m in messages if m not in info.answers]
            if unanswered:
                kind = f"a {info.type} destination" if info.type else "this destination"
                answered = ", ".join(m for m in n.MESSAGES if m in info.answers) or "no message"
                self._error("cannot-answer", f"{name.value} cannot answer {', '.join(unanswered)}: it is {kind}, "
                            f"which answers {answered}", name.span,
                            "route each message to a destination that answers it")

    def _wrong_for_messages(self, action, scope: Scope, word: str, messages: Iterable[str], why: str) -> bool:
        """An error when the action makes no sense for one of the messages the rule handles."""
        wrong = [m for m in messages if m in scope.messages]
        if not wrong or scope.context != "rule":
            return False
        self._error("wrong-message-action", f"{word} makes no sense for {', '.join(wrong)}: {why}", action.span,
                    "a rule handling several messages must make sense for each of them")
        return True

    def visit_RouteAction(self, action: n.RouteAction, scope: Scope) -> None:
        if not self._routing_allowed(action, scope, "route"):
            return
        if action.back and self._wrong_for_messages(action, scope, "route back to", n.REQUESTS,
                                                    "a request is answered, never sent back to its sender"):
            return
        self._check_destinations(action.destinations, scope.messages if scope.context == "rule" else ())

    def visit_CopyAction(self, action: n.CopyAction, scope: Scope) -> None:
        if not self._routing_allowed(action, scope, "copy"):
            return
        if self._wrong_for_messages(action, scope, "copy to", n.REQUESTS,
                                    "a request is answered by the destinations it is routed to, not copied"):
            return
        self._check_destinations(action.destinations, scope.messages if scope.context == "rule" else ())
        # A copy is edited after the rules ran: it sees values kept with let, not items of the document.
        values_only = {k: v for k, v in scope.variables.items() if v[0].kind == "value"}
        copy_scope = Scope(scope.module, values_only, "copy", scope.writable_arrival, scope.messages)
        self.check_actions(action.body, copy_scope)

    def visit_ApplyAction(self, action: n.ApplyAction, scope: Scope) -> None:
        module = scope.module
        if action.namespace is not None:
            imported = module.imports.get(action.namespace)
            if imported is None:
                if action.namespace in module.failed_imports:
                    return  # the import itself failed, and said why
                hint = _suggest(action.namespace, module.imports, "imports")
                self._error("unknown-block", f"nothing is imported as {action.namespace!r}", action.span, hint)
                return
            module = imported
        block = module.blocks.get(action.block)
        if block is None:
            where = f"{module.path}" if action.namespace else "this file"
            self._error("unknown-block", f"no block {action.block!r} in {where}", action.span,
                        _suggest(action.block, module.blocks, "blocks"))
            return
        if block in self._block_stack:
            cycle = " -> ".join(b.name.value for b in self._block_stack[self._block_stack.index(block):])
            self._error("recursive-block", f"block {block.name.value} applies itself ({cycle} -> "
                        f"{block.name.value}); it would never end", action.span)
            return
        self.blocks[id(action)] = (module, block)
        self._check_block(module, block)

    def visit_DropAction(self, action, scope: Scope) -> None:
        if self._routing_allowed(action, scope, "drop"):
            self._wrong_for_messages(action, scope, "drop", ("C-MOVE", "C-GET", "N-CREATE", "N-SET"),
                                     "only a C-FIND can be answered with nothing (no matches); "
                                     "write reject \"reason\" to refuse the request")

    def visit_RejectAction(self, action: n.RejectAction, scope: Scope) -> None:
        if scope.context == "rule" and scope.module is self.program.main:
            self.can_reject = self.can_reject or n.STORE in scope.messages
            self.rejecting.update(scope.messages)
        if self._routing_allowed(action, scope, "reject") and action.reason is not None:
            self.check_value(action.reason, scope)

    def visit_QuarantineAction(self, action: n.QuarantineAction, scope: Scope) -> None:
        if not self._routing_allowed(action, scope, "quarantine"):
            return
        if self._wrong_for_messages(action, scope, "quarantine", n.REQUESTS,
                                    "a request is not kept; write reject \"reason\" to refuse it"):
            return
        if action.reason is not None:
            self.check_value(action.reason, scope)

    def visit_OnResponseAction(self, action: n.OnResponseAction, scope: Scope) -> None:
        if scope.context != "rule":
            where = {"block": "a block", "copy": "a copy", "response": "on response",
                     "test": "a test"}.get(scope.context, scope.context)
            self._error("misplaced-on-response", f"on response cannot be used inside {where}", action.span,
                        "write it in the actions of a rule that handles requests")
            return
        stores = [m for m in scope.messages if m not in n.REQUESTS]
        if stores:
            self._error("wrong-message-action", f"on response makes no sense for {', '.join(stores)}: "
                        "a stored instance gets no response to edit", action.span,
                        f"name the requests the rule handles: rule \"...\" on {', '.join(n.REQUESTS[:2])} {{ ... }}")
        # The request's loop variables name its items, which responses lack: let values stay.
        values_only = {k: v for k, v in scope.variables.items() if v[0].kind == "value"}
        self.check_actions(action.body, Scope(scope.module, values_only, "response", scope.writable_arrival,
                                              scope.messages))

    def visit_StopAction(self, action, scope: Scope) -> None:
        self._routing_allowed(action, scope, "stop")

    def visit_LogAction(self, action: n.LogAction, scope: Scope) -> None:
        self.check_value(action.message, scope, allow_many=True)

    def visit_IfAction(self, action: n.IfAction, scope: Scope) -> None:
        chain, orelse = n.if_chain(action)
        for arm in chain:
            self.check_condition(arm.condition, scope)
            self.check_actions(arm.body, scope)
        if orelse is not None:
            self.check_actions(orelse, scope)

    def visit_ForEachAction(self, action: n.ForEachAction, scope: Scope) -> None:
        inner = self._bind(action.var, action.var_span, action.source, scope, action, loop=True)
        if inner is not None:
            self.check_actions(action.body, inner)

    # ---- binding loop variables ----

    def _bind(self, name: str, span: Span, source: n.Path, scope: Scope, node, loop: bool) -> Scope | None:
        if not self._name_free(name, span, scope):
            return None
        resolved = self.resolve_path(source, scope)
        if resolved is None:
            return None
        source_type = t.path_type(resolved)
        if resolved.is_arrival:
            self._error("type-mismatch", f"{resolved.text} is one value; there is nothing to walk", source.span)
            return None
        if source_type.kind in (t.ITEMS, t.ITEM):
            binding, item_type = Binding("item", resolved), Type(t.ITEM)
        elif loop:
            if resolved.last.index == n.STAR:
                self._error("bad-path", "for each walks items or elements, not the values of one element",
                            source.span, "to test values, use any/all")
                return None
            binding, item_type = Binding("element", resolved), source_type.single()
        else:
            binding, item_type = Binding("value", resolved), source_type.single()
        self.bindings[id(node)] = binding
        return scope.with_variable(name, binding, item_type)

    # ---- paths and targets ----

    def resolve_path(self, path: n.Path, scope: Scope) -> ResolvedPath | None:
        bindings = {name: b for name, (b, _) in scope.variables.items()}
        if path.root not in ROOTS and path.root not in bindings and len(path.elements) == 1:
            table = scope.module.tables.get(path.root)
            if table is not None:
                self._error("type-mismatch", f"{path.text()} is a table column: read it with "
                            f"lookup({path.text()}, key)", path.span)
                return None
        resolved, diags = resolve(path, bindings)
        self.diagnostics.extend(diags)
        if resolved is not None:
            self.paths[id(path)] = resolved
        return resolved

    def _target(self, target, scope: Scope, verb: str) -> tuple[ResolvedPath | None, Type] | None:
        """Check the target of set/blank/delete; returns (resolved path or None for a variable, type)."""
        if isinstance(target, n.Variable):
            entry = scope.variables.get(target.name)
            if entry is None:
                self._unknown_variable(target, scope)
                return None
            binding, kind = entry
            if binding.kind != "element":
                what = "an item" if binding.kind == "item" else "a value being tested"
                self._error("bad-target", f"{target.name} is {what}; {verb} needs an element", target.span,
                            f"write {verb} {target.name}.Keyword" if binding.kind == "item" else None)
                return None
            self.types[id(target)] = kind
            return None, kind
        path = target.path
        resolved = self.resolve_path(path, scope)
        if resolved is None:
            return None
        test_writable = (*ARRIVAL_FIELDS, COMMAND_SET) if scope.context == "test" else tuple(ARRIVAL_FIELDS)
        if resolved.root in READ_ONLY_ROOTS and not (scope.writable_arrival and resolved.root in test_writable):
            self._error("read-only", f"{resolved.root} cannot be edited by rules", path.span)
            return None
        if resolved.is_arrival:
            if resolved.root == ARRIVAL and resolved.field == "Weekday":
                self._error("read-only", "Arrival.Weekday follows from the arrival's date", path.span,
                            'give Arrival.Date (or Arrival.DateTime) instead, e.g. Arrival.Date = "20240106"')
                return None
            kind = t.path_type(resolved)
            self.types[id(target)] = kind
            return resolved, kind
        last = resolved.last
        if verb == "set" and last.mask is not None:
            self._error("bad-target", "a tag mask names many elements: it can only be deleted or blanked", path.span)
            return None
        kind = t.path_type(resolved)
        if verb == "set" and last.tag is not None and not last.any_depth and scope.context != "test":
            info = lookup_tag(last.tag)
            if info is not None and info.retired:
                self._warn("retired", f"{info.keyword} {tag_text(info.tag)} is retired from the standard; "
                           "new instances should not carry it", path.span)
        if verb == "set" and kind.kind in (t.ITEMS, t.ITEM) and (last.index is None or last.index == n.STAR):
            self._error("bad-target", f"{last.text} is a sequence: set elements inside its items", path.span,
                        f"for example set {resolved.text}[1].Keyword = ...")
            return None
        if verb == "set" and last.index is not None and last.index != n.STAR and last.vm == "1" and last.index > 1:
            self._error("bad-target", f"{last.text} holds one value; there is no value {last.index}", path.span)
            return None
        self.types[id(target)] = kind
        return resolved, kind

    def _check_assignment(self, target, value: n.Expr, value_type: Type, span: Span) -> None:
        resolved, target_type = target
        if value_type.kind in (t.ITEMS, t.ITEM, t.REGEX, t.BOOL, t.TABLE):
            self._error("type-mismatch", f"cannot set an element to {value_type.describe()}", span)
            return
        if value_type.many:
            self._error("type-mismatch", "this value reaches many elements ([*] or **); pick one item",
                        span, "or use for each")
            return
        if resolved is not None and resolved.is_arrival:
            literal = _literal_value(value)
            vr = ARRIVAL_TIME_VRS.get(resolved.field) if resolved.root == ARRIVAL else None
            if vr is not None and literal is not _NOT_LITERAL:
                try:
                    to_dicom(vr, literal)
                except ValueError_ as exc:
                    self._error("bad-value", f"{resolved.text}: {exc}", span)
            return
        vr = concrete_vr(resolved.last.vr if resolved is not None else target_type.vr)
        if vr is None:
            return
        literal = _literal_value(value)
        if literal is not _NOT_LITERAL:
            single_index = resolved is not None and isinstance(resolved.last.index, int)
            if isinstance(literal, tuple) and (single_index or (resolved is not None and resolved.last.vm == "1")):
                self._error("bad-value", f"{resolved.last.text} takes one value, not a list", span)
                return
            try:
                to_dicom(vr, literal)
            except ValueError_ as exc:
                self._error("bad-value", f"{_constant_prefix(value)}{exc}", span)
            return
        target_kind = t.kind_for_vr(vr)
        self._check_kinds_for_assignment(vr, target_kind, value_type, span)

    def _check_kinds_for_assignment(self, vr: str, target_kind: str, value_type: Type, span: Span) -> None:
        source = value_type.kind
        if source == t.ANY or target_kind == t.ANY:
            return
        if target_kind == t.BYTES:
            self._error("type-mismatch", f"{vr} holds binary data; rules cannot write it", span)
        elif source == t.BYTES:
            self._error("type-mismatch", f"binary data cannot be written to {vr}", span)
        elif source == t.NUMBER and target_kind in (t.DATE, t.TIME, t.DATETIME, t.UID):
            self._error("type-mismatch", f"a number cannot be written to a {vr} element", span,
                        "UIDs, dates and times are written as strings")
        elif target_kind == t.NUMBER and source != t.NUMBER:
            self._warn("type-mismatch", f"{value_type.describe()} written to a number ({vr}); "
                       "it must hold a number when the rule runs", span)
        elif target_kind in (t.DATE, t.TIME, t.DATETIME) and source != target_kind:
            if not (target_kind == t.DATE and source == t.DATETIME):
                self._warn("type-mismatch", f"{value_type.describe()} written to a {vr} element; "
                           f"it must be a valid {vr} value when the rule runs", span)
        elif target_kind == t.UID and source not in (t.UID, t.STRING):
            self._warn("type-mismatch", f"{value_type.describe()} written to a UID", span)

    # ---- expressions ----

    def check_condition(self, expr: n.Expr, scope: Scope) -> None:
        kind = self.check_expr(expr, scope)
        if kind is not None and kind.kind != t.BOOL:
            hint = None
            if isinstance(expr, n.PathRef):
                hint = f"did you mean exists {expr.path.text()}?"
            self._error("not-a-condition", f"a condition must compare or test something; this is {kind.describe()}",
                        expr.span, hint)

    def check_value(self, expr: n.Expr, scope: Scope, allow_many: bool = False) -> Type | None:
        kind = self.check_expr(expr, scope)
        if kind is None:
            return None
        if kind.kind == t.BOOL:
            self._error("type-mismatch", "a condition is not a value here", expr.span)
            return None
        if kind.many and not allow_many:
            self._error("type-mismatch", "this path reaches many elements ([*] or **); pick one item or use any/all",
                        expr.span)
            return None
        return kind

    def check_expr(self, expr: n.Expr, scope: Scope) -> Type | None:
        kind = self.visit(expr, scope)
        if kind is not None:
            self.types[id(expr)] = kind
        return kind

    def visit_StringLit(self, expr, scope):
        return t.T_STRING

    def visit_NumberLit(self, expr, scope):
        return t.T_NUMBER

    def visit_RegexLit(self, expr, scope):
        self._compile_regex(expr)
        return t.T_REGEX

    def _compile_regex(self, expr: n.RegexLit) -> Regex | None:
        try:
            compiled = compile_regex(expr.pattern, expr.flags)
        except RegexError as exc:
            column = expr.span.column + 1 + _written_offset(expr.pattern, exc.offset)
            span = Span(expr.span.file, expr.span.line, column, expr.span.line, column + 1)
            self._error("bad-regex", f"bad regular expression: {exc.message}", span, exc.hint)
            return None
        self.regexes[id(expr)] = compiled
        return compiled

    def visit_ConstRef(self, expr: n.ConstRef, scope):
        if _literal_value(expr.value) is _NOT_LITERAL:
            return None  # reported where the constant is defined
        return self.check_expr(expr.value, scope)

    def visit_ListLit(self, expr: n.ListLit, scope):
        kinds = [self.check_value(item, scope) for item in expr.items]
        if any(k is None for k in kinds):
            return None
        for item, kind in zip(expr.items, kinds):
            if kind.multi or kind.kind in (t.ITEMS, t.ITEM, t.BYTES):
                self._error("type-mismatch", f"a list holds single values, not {kind.describe()}", item.span)
                return None
        first = kinds[0].kind if kinds else t.ANY
        same = all(k.kind == first for k in kinds)
        return Type(first if same else t.ANY, multi=True)

    def visit_PathRef(self, expr: n.PathRef, scope):
        resolved = self.resolve_path(expr.path, scope)
        return t.path_type(resolved) if resolved is not None else None

    def visit_Variable(self, expr: n.Variable, scope: Scope):
        entry = scope.variables.get(expr.name)
        if entry is not None:
            return entry[1]
        constant = scope.module.constants.get(expr.name)
        if constant is not None and scope.context == "test":  # a rule file's own uses are ConstRefs
            if _literal_value(constant.value) is _NOT_LITERAL:
                return None  # reported where it is defined
            self.constants[id(expr)] = constant.value
            return self.check_expr(constant.value, scope)
        if expr.name in scope.module.tables:
            self.tables[id(expr)] = TableRef(scope.module.tables[expr.name], None)
            return Type(t.TABLE)
        self._unknown_variable(expr, scope)
        return None

    def _unknown_variable(self, expr: n.Variable, scope: Scope) -> None:
        names = list(scope.variables) + list(scope.module.tables)
        close = difflib.get_close_matches(expr.name, names, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]}?"
        elif expr.name in ROOTS:
            hint = f"name an element: {expr.name}.Keyword"
        elif re.fullmatch(r"[A-Z0-9_]+", expr.name):
            hint = f'strings are written in double quotes: "{expr.name}"'
        else:
            hint = "paths start with DataSet., CommandSet., FileMeta., Association., Source., Retrieve. or Arrival."
        self._error("unknown-name", f"unknown name {expr.name!r}", expr.span, hint)

    def visit_Concat(self, expr: n.Concat, scope):
        kinds = [self.check_value(part, scope) for part in expr.parts]
        if any(k is None for k in kinds):
            return None
        for part, kind in zip(expr.parts, kinds):
            if kind.kind in (t.ITEMS, t.ITEM, t.BYTES, t.REGEX, t.TABLE):
                self._error("type-mismatch", f"+ cannot use {kind.describe()}", part.span)
                return None
        if all(k.kind == t.NUMBER and not k.multi for k in kinds):
            return t.T_NUMBER
        if all(k.kind in (t.NUMBER, t.ANY) and not k.multi for k in kinds):
            return t.T_ANY  # numbers add up: a number, or text when a part is text
        return t.T_STRING

    def visit_Arithmetic(self, expr: n.Arithmetic, scope: Scope):
        left = self._number_operand(expr.left, expr.op, scope)
        right = self._number_operand(expr.right, expr.op, scope)
        if left is None or right is None:
            return None
        if expr.op in ("/", "%") and _literal_value(expr.right) == 0:
            self._error("type-mismatch", f"division by zero: {expr.op} 0 never has a value", expr.right.span)
            return None
        return t.T_NUMBER

    def visit_Negate(self, expr: n.Negate, scope: Scope):
        return t.T_NUMBER if self._number_operand(expr.operand, "-", scope) is not None else None

    def _number_operand(self, operand: n.Expr, op: str, scope: Scope) -> Type | None:
        """An operand of - * / %: one number (or a value known only at run time)."""
        kind = self.check_value(operand, scope)
        if kind is None:
            return None
        what = _describe_side(operand)
        if kind.multi:
            self._error("type-mismatch", f"{op} works on one number; {what} is {kind.describe()}", operand.span,
                        "pick one value with [n]")
            return None
        if kind.kind in (t.NUMBER, t.ANY):
            return kind
        if kind.kind in (t.DATE, t.DATETIME):
            hint = "days_between(a, b) gives the days from a to b; shift_date(d, days) moves a date"
        elif kind.kind in (t.STRING, t.UID, t.TIME):
            hint = f"convert text to a number with number({_source_hint(operand)})"
        else:
            hint = None
        self._error("type-mismatch", f"{op} works on numbers; {what} is {kind.describe()}", operand.span, hint)
        return None

    def visit_Call(self, expr: n.Call, scope: Scope):
        fn = FUNCTIONS.get(expr.name)
        if fn is None:
            close = difflib.get_close_matches(expr.name, list(FUNCTIONS), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}()?" if close else "functions: " + ", ".join(sorted(FUNCTIONS))
            self._error("unknown-function", f"unknown function {expr.name}()", expr.name_span, hint)
            for arg in expr.args:
                self.check_expr(arg, scope)
            return None
        if not fn.min_args <= len(expr.args) <= fn.max_args:
            wanted = str(fn.min_args) if fn.min_args == fn.max_args else f"{fn.min_args} to {fn.max_args}"
            self._error("arity", f"{expr.name}() takes {wanted} argument{'s' if fn.max_args != 1 else ''}, "
                        f"not {len(expr.args)}", expr.span, fn.doc)
            return None
        special = getattr(self, "_call_" + expr.name, None)
        if special is not None:
            return special(expr, scope, fn)
        kinds = []
        for arg in expr.args:
            kind = self.check_value(arg, scope)
            if kind is None:
                return None
            if kind.kind in (t.ITEMS, t.ITEM, t.BYTES, t.REGEX, t.TABLE) and expr.name != "len":
                self._error("type-mismatch", f"{expr.name}() cannot take {kind.describe()}", arg.span, fn.doc)
                return None
            kinds.append(kind)
        if expr.name == "shift_date":
            self._expect_number(expr.args[1], kinds[1], "shift_date(): the number of days")
            if kinds[0].kind in (t.NUMBER, t.TIME, t.UID):
                self._error("type-mismatch", f"shift_date() moves a date, not {kinds[0].describe()}",
                            expr.args[0].span)
        if expr.name == "substr":
            for arg, kind in zip(expr.args[1:], kinds[1:]):
                self._expect_number(arg, kind, "substr(): start and length")
        checker = getattr(self, "_arguments_of_" + expr.name, None)
        if checker is not None and not checker(expr, kinds):
            return None
        return fn.returns(kinds)

    # Arguments of the functions for numbers, dates and pseudonyms: False when one is wrong.

    def _arguments_of_number(self, expr: n.Call, kinds: list[Type]) -> bool:
        if len(kinds) == 2 and kinds[1].kind not in (t.NUMBER, t.ANY):
            self._error("type-mismatch", f"number(): the default must be a number, not {kinds[1].describe()}",
                        expr.args[1].span, "for example number(DataSet.PatientWeight, 0)")
            return False
        return True

    def _arguments_of_hash(self, expr: n.Call, kinds: list[Type]) -> bool:
        ok = True
        alphabet = "hex"
        if len(expr.args) == 3:
            literal = _literal_value(expr.args[2])
            if literal not in HASH_ALPHABETS:
                self._error("bad-value", "hash(): the alphabet is " + ", ".join(f'"{a}"' for a in HASH_ALPHABETS)
                            + (f", not {_show(literal)}" if literal is not _NOT_LITERAL else ", written as a string"),
                            expr.args[2].span, 'for example hash(DataSet.PatientID, 10, "decimal")')
                return False
            alphabet = literal
        if len(expr.args) >= 2:
            length = _literal_value(expr.args[1])
            most = HASH_ALPHABETS[alphabet]
            if length is _NOT_LITERAL:
                self._expect_number(expr.args[1], kinds[1], "hash(): the length")
            elif not (isinstance(length, int) and 1 <= length <= most):
                self._error("bad-value", f"hash(): {alphabet} gives 1 to {most} characters, not {_show(length)}",
                            expr.args[1].span)
                ok = False
        return ok

    def _arguments_of_hash_int(self, expr: n.Call, kinds: list[Type]) -> bool:
        bounds = []
        for arg, kind, what in zip(expr.args[1:], kinds[1:], ("lowest", "highest")):
            literal = _literal_value(arg)
            if literal is _NOT_LITERAL:
                self._expect_number(arg, kind, f"hash_int(): the {what} number")
            elif not isinstance(literal, int):
                self._error("type-mismatch", f"hash_int(): the {what} number must be a whole number, not "
                            f"{_show(literal)}", arg.span)
                return False
            else:
                bounds.append(literal)
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            self._error("bad-value", f"hash_int(): the range {bounds[0]} to {bounds[1]} is empty", expr.span,
                        f"write the lowest first: hash_int(..., {bounds[1]}, {bounds[0]})")
            return False
        return True

    def _dates(self, expr: n.Call, kinds: list[Type]) -> bool:
        for arg, kind in zip(expr.args, kinds):
            if kind.multi:
                self._error("type-mismatch", f"{expr.name}() takes one date, and {_describe_side(arg)} is "
                            f"{kind.describe()}", arg.span, "pick one value with [n]")
                return False
            if kind.kind in (t.NUMBER, t.TIME, t.UID):
                self._error("type-mismatch", f"{expr.name}() takes dates (DA, or DT for its date), not "
                            f"{kind.describe()}", arg.span, 'for example "20240131"')
                return False
            literal = _literal_value(arg)
            if isinstance(literal, str):
                try:
                    to_dicom("DA", literal[:8])
                except ValueError_ as exc:
                    self._error("bad-value", f"{_constant_prefix(arg)}{expr.name}(): {exc}", arg.span)
                    return False
        return True

    _arguments_of_days_between = _arguments_of_age = _dates

    def _arguments_of_pad(self, expr: n.Call, kinds: list[Type]) -> bool:
        self._expect_number(expr.args[1], kinds[1], "pad(): the width")
        if len(expr.args) == 3:
            fill = _literal_value(expr.args[2])
            if fill is not _NOT_LITERAL and (not isinstance(fill, str) or len(fill) != 1):
                self._error("bad-value", f"pad(): the fill is one character, not {_show(fill)}", expr.args[2].span,
                            'for example pad(DataSet.PatientID, 10, "0")')
                return False
        return True

    def visit_Subscript(self, expr: n.Subscript, scope: Scope):
        subject = self.check_value(expr.subject, scope)
        index = self.check_value(expr.index, scope)
        if subject is None or index is None:
            return None
        if subject.kind in (t.ITEMS, t.ITEM, t.BYTES, t.REGEX, t.TABLE):
            self._error("type-mismatch", f"[n] picks one of several values, and this is {subject.describe()}",
                        expr.subject.span, "a path picks an item with its own index: DataSet.Seq[1]")
            return None
        literal = _literal_value(expr.index)
        if literal is _NOT_LITERAL:
            if index.kind not in (t.NUMBER, t.ANY) or index.multi:
                self._error("type-mismatch", f"an index is one number, not {index.describe()}", expr.index.span)
                return None
        elif not isinstance(literal, int) or literal == 0:
            self._error("bad-index", f"an index is a whole number other than 0, not {_show(literal)}: values are "
                        "numbered from 1, and from -1 for the last", expr.index.span)
            return None
        return subject.single()

    def _expect_number(self, arg: n.Expr, kind: Type, what: str) -> None:
        if kind.kind not in (t.NUMBER, t.ANY):
            self._error("type-mismatch", f"{what} must be a number, not {kind.describe()}", arg.span)

    def _call_replace(self, expr: n.Call, scope: Scope, fn):
        subject, pattern, replacement = expr.args
        if not isinstance(pattern, n.RegexLit):
            self._error("type-mismatch", "replace() takes a /regular expression/ as its second argument",
                        pattern.span, fn.doc)
            return None
        compiled = self._compile_regex(pattern)
        self.types[id(pattern)] = t.T_REGEX
        if compiled is not None and isinstance(replacement, n.StringLit):
            try:
                replacement_pieces(replacement.value, compiled.groups, tuple(compiled.groupindex.items()))
            except RegexError as exc:
                self._error("bad-regex", f"bad replacement: {exc.message}", replacement.span, exc.hint)
        subject_type = self.check_value(subject, scope)
        if subject_type is None or self.check_value(replacement, scope) is None:
            return None
        return fn.returns([subject_type, t.T_REGEX, t.T_STRING])

    def _call_lookup(self, expr: n.Call, scope: Scope, fn):
        ref, *rest = expr.args
        table_ref = self._table_column(ref, scope, fn)
        kinds = [t.Type(t.TABLE)]
        for arg in rest:
            kind = self.check_value(arg, scope)
            if kind is None:
                return None
            kinds.append(kind)
        if table_ref is None:
            return None
        self.tables[id(ref)] = table_ref
        return fn.returns(kinds)  # a string, or any when the default is not one

    def _table_column(self, ref: n.Expr, scope: Scope, fn) -> TableRef | None:
        if isinstance(ref, n.Variable) and ref.name in scope.module.tables:
            table = scope.module.tables[ref.name]
            columns = table.value_columns()
            if len(columns) != 1:
                self._error("unknown-column", f"table {ref.name} has columns {', '.join(columns)}: say which",
                            ref.span, f"lookup({ref.name}.{columns[0] if columns else 'column'}, key)")
                return None
            return TableRef(table, columns[0])
        if isinstance(ref, n.PathRef) and len(ref.path.elements) == 1 and ref.path.elements[0].keyword:
            table = scope.module.tables.get(ref.path.root)
            if table is not None:
                column = ref.path.elements[0].keyword
                if column not in table.columns:
                    self._error("unknown-column", f"table {table.name} has no column {column!r}",
                                ref.path.elements[0].span, f"its columns: {', '.join(table.columns)}")
                    return None
                return TableRef(table, column)
        names = ", ".join(scope.module.tables) or "none is declared in this file"
        self._error("unknown-table", "lookup() takes a table (or table.column) first", ref.span,
                    f"tables: {names}")
        return None

    def visit_Binary(self, expr: n.Binary, scope: Scope):
        left = self.check_value(expr.left, scope)
        if expr.op in ("in", "not in"):
            return self._check_in(expr, left, scope)
        right = self.check_value(expr.right, scope)
        if left is None or right is None:
            return None
        for side, kind in ((expr.left, left), (expr.right, right)):
            if kind.kind in (t.ITEMS, t.ITEM):
                self._error("type-mismatch", f"{kind.describe()} cannot be compared", side.span,
                            "test it with exists, missing, empty or len()")
                return None
            if kind.kind in (t.BYTES, t.REGEX, t.TABLE):
                self._error("type-mismatch", f"{kind.describe()} cannot be compared", side.span)
                return None
        if expr.op in ("contains", "not contains", "startswith", "endswith"):
            if right.multi:
                self._error("type-mismatch", f"{expr.op} takes one value on its right", expr.right.span)
            if left.kind == t.NUMBER and not left.multi:
                self._error("type-mismatch", f"{expr.op} works on text, and this is {left.describe()}",
                            expr.left.span)
            return t.T_BOOL
        self._check_comparable(expr, left, right)
        return t.T_BOOL

    def _check_comparable(self, expr: n.Binary, left: Type, right: Type) -> None:
        """Literals are checked against the VR on the other side: "a DA compared with a non-date"."""
        for value_side, kind, literal_side in ((expr.left, left, expr.right), (expr.right, right, expr.left)):
            literal = _literal_value(literal_side)
            if literal is _NOT_LITERAL or isinstance(literal, tuple):
                continue
            self._check_literal_against(kind, literal, literal_side.span, value_side, _constant_prefix(literal_side))
        if expr.op in _ORDERING and (left.multi or right.multi):
            self._error("type-mismatch", f"{expr.op} compares single values", expr.span,
                        "pick one value with [n]")

    def _check_literal_against(self, kind: Type, literal, span: Span, other: n.Expr, named: str = "") -> None:
        what = named + _describe_side(other)
        if kind.kind == t.NUMBER and isinstance(literal, str):
            hint = f"write {literal}" if re.fullmatch(r"-?\d+(\.\d+)?", literal) else None
            self._error("type-mismatch", f"{what} is a number ({kind.vr or 'number'}); {_show(literal)} is text",
                        span, hint)
        elif kind.kind in (t.DATE, t.TIME, t.DATETIME, t.UID) and isinstance(literal, (int, float)):
            self._error("type-mismatch", f"{what} is a {kind.kind} ({kind.vr}); compare it with a string",
                        span, f'for example "{_example(kind.vr)}"')
        elif kind.kind in (t.DATE, t.TIME, t.DATETIME) and isinstance(literal, str):
            try:
                to_dicom(kind.vr, literal)
            except ValueError_ as exc:
                self._error("bad-value", f"{what} is a {kind.kind}: {exc}", span)

    def _check_in(self, expr: n.Binary, left: Type | None, scope: Scope):
        right_expr = expr.right
        if isinstance(right_expr, n.Variable) and right_expr.name in scope.module.tables:
            self.tables[id(right_expr)] = TableRef(scope.module.tables[right_expr.name], None)
            self.types[id(right_expr)] = Type(t.TABLE)
            return t.T_BOOL if left is not None else None
        right = self.check_value(right_expr, scope)
        if left is None or right is None:
            return None
        if left.kind in (t.ITEMS, t.ITEM, t.BYTES):
            self._error("type-mismatch", f"{left.describe()} cannot be looked for in a list", expr.left.span)
            return None
        if not right.multi and not isinstance(right_expr, n.ListLit):
            self._error("type-mismatch", f"in needs a list, a table or an element with several values on its right, "
                        f"not {right.describe()}", right_expr.span,
                        "for one value, write ==; for text, write contains")
            return None
        if isinstance(right_expr, n.ListLit):
            for item in right_expr.items:
                literal = _literal_value(item)
                if literal is not _NOT_LITERAL:
                    self._check_literal_against(left, literal, item.span, expr.left, _constant_prefix(item))
        return t.T_BOOL

    def visit_Matches(self, expr: n.Matches, scope: Scope):
        subject = self.check_value(expr.subject, scope)
        self._compile_regex(expr.regex)
        if subject is None:
            return None
        if subject.kind in (t.ITEMS, t.ITEM, t.BYTES):
            self._error("type-mismatch", f"{subject.describe()} cannot be matched", expr.subject.span)
            return None
        return t.T_BOOL

    def visit_Presence(self, expr: n.Presence, scope: Scope):
        target = expr.target
        if isinstance(target, n.Variable):
            entry = scope.variables.get(target.name)
            if entry is None:
                self._unknown_variable(target, scope)
                return None
            self.types[id(target)] = entry[1]
            return t.T_BOOL
        resolved = self.resolve_path(target.path, scope)
        if resolved is None:
            return None
        if resolved.fans_out:
            self._error("type-mismatch", f"{expr.kind} tests one element; this path reaches many", expr.span,
                        f"write any x in ...: {expr.kind} x")
            return None
        self.types[id(target)] = t.path_type(resolved)
        return t.T_BOOL

    def visit_Quantifier(self, expr: n.Quantifier, scope: Scope):
        inner = self._bind(expr.var, expr.var_span, expr.source, scope, expr, loop=False)
        if inner is None:
            return None
        self.check_condition(expr.body, inner)
        return t.T_BOOL

    def visit_Not(self, expr: n.Not, scope: Scope):
        self.check_condition(expr.operand, scope)
        return t.T_BOOL

    def visit_And(self, expr: n.And, scope: Scope):
        for operand in expr.operands:
            self.check_condition(operand, scope)
        return t.T_BOOL

    visit_Or = visit_And

    # ---- tests (in *_test.rules files) ----

    def check_test(self, test: n.Test, module: Module) -> None:
        scope = Scope(module, context="test", writable_arrival=True)
        for statement in test.statements:
            # `apply` in a test runs a block on its own: what a block may do, it may do
            self.visit(statement, scope.in_context("block") if isinstance(statement, n.ApplyAction) else scope)

    def visit_GivenValues(self, statement: n.GivenValues, scope: Scope) -> None:
        for assignment in statement.assignments:
            target = self._target(n.PathRef(assignment.path.span, assignment.path), scope, "set")
            kind = self.check_value(assignment.value, scope)
            if target is not None and kind is not None:
                self._check_assignment(target, assignment.value, kind, assignment.value.span)

    def visit_GivenFile(self, statement: n.GivenFile, scope: Scope) -> None:
        pass  # read when the test runs

    def visit_GivenMessage(self, statement: n.GivenMessage, scope: Scope) -> None:
        name = statement.message.value
        if name not in n.MESSAGES:
            close = [m for m in n.MESSAGES if m == name.upper()] or \
                difflib.get_close_matches(name.upper(), n.MESSAGES, n=1, cutoff=0.6)
            self._error("unknown-message", f"unknown message {name!r}", statement.message.span,
                        f"did you mean {close[0]}?" if close else "messages: " + ", ".join(n.MESSAGES))

    def visit_GivenResponse(self, statement: n.GivenResponse, scope: Scope) -> None:
        self.visit_GivenValues(statement, scope)

    def visit_ExpectResponse(self, statement: n.ExpectResponse, scope: Scope) -> None:
        if statement.condition is not None:
            self.check_condition(statement.condition, scope)

    def visit_ExpectRoute(self, statement: n.ExpectRoute, scope: Scope) -> None:
        self._check_destinations(statement.destinations)

    def visit_ExpectCopy(self, statement: n.ExpectCopy, scope: Scope) -> None:
        self._check_destinations((statement.destination,))
        self.check_condition(statement.condition, scope)

    def visit_ExpectCondition(self, statement: n.ExpectCondition, scope: Scope) -> None:
        self.check_condition(statement.condition, scope)

    def visit_ExpectOutcome(self, statement: n.ExpectOutcome, scope: Scope) -> None:
        pass  # nothing to resolve before the test runs

    def visit_ExpectFired(self, statement: n.ExpectFired, scope: Scope) -> None:
        rule_names = {rule.name for rule in self.program.main.file.rules}
        if statement.rule not in rule_names:
            close = difflib.get_close_matches(statement.rule, list(rule_names), n=1, cutoff=0.6)
            self._error("unknown-rule", f"no rule is named {statement.rule!r}", statement.span,
                        f'did you mean "{close[0]}"?' if close else None)


# ---- helpers ------------------------------------------------------------------

def _written_offset(pattern: str, offset: int) -> int:
    """An offset in a pattern as its rule file writes it: every / there is written \\/."""
    return offset + pattern[:offset].count("/")


_NOT_LITERAL = object()


def _literal_value(expr: n.Expr):
    if isinstance(expr, (n.StringLit, n.NumberLit)):
        return expr.value
    if isinstance(expr, n.ConstRef):
        return _literal_value(expr.value)
    if isinstance(expr, n.ListLit):
        values = tuple(_literal_value(item) for item in expr.items)
        return _NOT_LITERAL if any(v is _NOT_LITERAL for v in values) else values
    return _NOT_LITERAL


def literal_value(expr: n.Expr):
    """The Python value of a literal expression, or None when it is not a literal."""
    value = _literal_value(expr)
    return None if value is _NOT_LITERAL else value


def _source_hint(expr: n.Expr) -> str:
    if isinstance(expr, n.PathRef):
        return expr.path.text()
    if isinstance(expr, (n.Variable, n.ConstRef)):
        return expr.name
    return "..."


def _constant_prefix(expr: n.Expr) -> str:
    """Findings about a constant's value, reported where it is used, name the constant."""
    return f"constant {expr.name}: " if isinstance(expr, n.ConstRef) else ""


def _describe_side(expr: n.Expr) -> str:
    if isinstance(expr, n.PathRef):
        return expr.path.text()
    if isinstance(expr, n.Variable):
        return expr.name
    if isinstance(expr, n.Call):
        return f"{expr.name}()"
    return "this value"


def _show(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _example(vr: str | None) -> str:
    return {"DA": "20240131", "TM": "134500", "DT": "20240131134500", "UI": "1.2.840.10008.1.2"}.get(vr or "", "")


def _suggest(word: str, names, what: str) -> str | None:
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return f"{what} here: {', '.join(sorted(names))}" if names else f"there are no {what} here"

