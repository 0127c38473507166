"""Semantic checks: names, paths, types, VRs, regexes, functions, destinations.

`Analysis` walks every rule, block and test of a program once, reports findings
and keeps what it resolved (paths, types, regexes, block and table references)
for the compiler. The whole-file lint passes (unreachable and shadowed rules,
fall-through, loops) live in lint.py and run on top of an Analysis.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from ..diagnostics import Diagnostic, Span, error, warning
from ..values import ValueError_, concrete_vr, to_dicom
from . import keep
from . import nodes as n
from . import types as t
from .functions import FUNCTIONS, HASH_ALPHABETS
from .ported import foreign_tag, operator_hint
from .loader import Module, Program, TableData
from .regex import Regex, RegexError, compile_regex, replacement_pieces
from .paths import (ARRIVAL, ARRIVAL_FIELDS, ARRIVAL_TIME_VRS, COMMAND_SET, READ_ONLY_ROOTS, ROOTS, Binding, ResolvedPath, lookup_tag, resolve,
                    tag_text)
from .groups import quiet_seconds
from .types import Type
from .visitor import NodeVisitor, walk

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
    level: str | None = None  # series | study in a group rule: aggregates are allowed
    in_aggregate: bool = False  # inside an aggregate's argument: paths read each instance

    def with_variable(self, name: str, binding: Binding, kind: Type) -> "Scope":
        variables = dict(self.variables)
        variables[name] = (binding, kind)
        return replace(self, variables=variables)

    def in_context(self, context: str) -> "Scope":
        return replace(self, context=context)


@dataclass
class TableRef:
    table: TableData
    column: str | None  # None: the table itself (for `in`)


class Analysis(NodeVisitor):
    """Findings, plus what was resolved, keyed by id() of the nodes."""

    def __init__(self, program: Program, destinations=None, windows=None, notifiers=None):
        self.program = program
        self.destinations = destination_infos(destinations)
        # The configuration's delivery windows by name (`during WINDOW`); None: not known, not checked.
        self.windows = frozenset(windows) if windows is not None else None
        # The configuration's notifiers by name (`notify NOTIFIER`); None: not known, not checked.
        self.notifiers = frozenset(notifiers) if notifiers is not None else None
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
        self.levels: dict[int, str] = {}  # id() of each group rule: series | study
        # The `exists/missing/empty PATH` beside the condition being checked, in each and/or around it.
        self._presence_frames: list[set[tuple[str, str]]] = []

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
                scope = Scope(module, messages=self._messages(item), level=self._group_level(item))
                if scope.level is not None:
                    self.levels[id(item)] = scope.level
                self._check_group_clauses(item, scope)
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

    # ---- group rules ----

    def _group_level(self, rule: n.Rule) -> str | None:
        """`series` or `study` for a group rule; None for an instance rule (or a wrong level, reported)."""
        if rule.level is None:
            return None
        level = rule.level.value
        if level not in n.GROUP_LEVELS:
            close = difflib.get_close_matches(level, n.GROUP_LEVELS, n=1, cutoff=0.6)
            self._error("unknown-group-level", f"unknown group level {level!r}: a group rule is per series or "
                        "per study", rule.level.span, f"did you mean per {close[0]}?" if close else None)
            return None
        if rule.messages:
            self._error("group-rule-message", "a group rule handles stored instances only: it cannot be on "
                        + ", ".join(m.value for m in rule.messages), rule.messages[0].span,
                        "remove `on ...`, or write an instance rule for the requests")
        if rule.fallback:
            self._error("group-rule-fallback", "a group rule cannot be a fallback rule", rule.name_span,
                        "a fallback rule decides for one instance that no rule routed")
        return level

    def _check_group_clauses(self, rule: n.Rule, scope: Scope) -> None:
        seen: dict[type, n.Node] = {}
        for clause in rule.clauses:
            word = {n.CompleteAfter: "complete after", n.CompleteWhen: "complete when",
                    n.LatePolicy: "late"}[type(clause)]
            if rule.level is None:
                self._error("group-clause", f"{word} is for group rules only", clause.span,
                            f'write rule "{rule.name}" per series {{ ... }} or per study')
                continue
            first = seen.setdefault(type(clause), clause)
            if first is not clause:
                self._error("duplicate-clause", f"{word} is written twice (line {first.span.line})", clause.span)
                continue
            if isinstance(clause, n.CompleteAfter):
                try:
                    quiet_seconds(clause.text)
                except ValueError as exc:
                    self._error("bad-duration", str(exc), clause.duration_span,
                                "for example complete after 90s, 10m, 2h or 1d")
            elif isinstance(clause, n.CompleteWhen):
                if scope.level is not None:
                    self.check_condition(clause.condition, scope)
            elif clause.policy.value not in n.LATE_POLICIES:
                close = difflib.get_close_matches(clause.policy.value, n.LATE_POLICIES, n=1, cutoff=0.6)
                self._error("unknown-late-policy", f"unknown late policy {clause.policy.value!r}: late "
                            + ", ".join(n.LATE_POLICIES), clause.policy.span,
                            f"did you mean late {close[0]}?" if close else None)

    def visit_Aggregate(self, expr: n.Aggregate, scope: Scope):
        if scope.level is None:
            where = "a test" if scope.context == "test" else "an instance rule" if scope.context == "rule" \
                else f"a {scope.context}"
            self._error("aggregate-outside-group", f"{expr.kind}() reads the instances of a group: it is for group "
                        f"rules only, not {where}", expr.name_span,
                        'write rule "..." per series { ... } or per study for a rule over several instances')
            return None
        if scope.in_aggregate:
            self._error("nested-aggregate", f"{expr.kind}() inside another aggregate: an aggregate's argument "
                        "reads one instance at a time", expr.name_span)
            return None
        # Inside, paths read each instance in turn: loop variables (items of another instance) stay out.
        values_only = {k: v for k, v in scope.variables.items() if v[0].kind == "value"}
        inner = replace(scope, variables=values_only, in_aggregate=True)
        if expr.kind == "count":
            if expr.argument is not None:
                self.check_condition(expr.argument, inner)
            return t.T_NUMBER
        if expr.kind in ("any", "all"):
            self.check_condition(expr.argument, inner)
            return t.T_BOOL
        if not isinstance(expr.argument, n.PathRef):  # distinct
            self._error("type-mismatch", "distinct() takes a path, e.g. distinct(DataSet.SeriesDescription)",
                        expr.argument.span if expr.argument is not None else expr.span)
            return None
        kind = self.check_value(expr.argument, inner, allow_many=True)
        if kind is None:
            return None
        if kind.kind in (t.ITEMS, t.ITEM, t.BYTES):
            self._error("type-mismatch", f"distinct() gives values, not {kind.describe()}", expr.argument.span)
            return None
        return Type(kind.kind, multi=True, vr=kind.vr)

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
        if not self._name_free(action.name, action.name_span, scope):
            return None
        if kind is None:
            # the value's finding is made; the name stays known, so its uses are not reported again
            return scope.with_variable(action.name, Binding("value"), t.T_ANY)
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

    def visit_BlankPixelsAction(self, action: n.BlankPixelsAction, scope: Scope) -> None:
        if scope.context == "response":
            self._error("response-action", "blank pixels cannot be used inside on response: a response carries "
                        "no pixel data", action.span, "on response holds set, blank, delete, if, for each, let, "
                        "log, apply and drop")
            return
        if self._wrong_for_messages(action, scope, "blank pixels", n.REQUESTS, "a request carries no pixel data"):
            return
        for region in action.regions:
            for name, expr in zip(("x", "y", "width", "height"), (region.x, region.y, region.width, region.height)):
                self._pixel_number(expr, scope, f"a region's {name}", positive=name in ("width", "height"))
        if action.fill is not None:
            items = action.fill.items if isinstance(action.fill, n.ListLit) else (action.fill,)
            if isinstance(action.fill, n.ListLit) and not items:
                self._error("bad-value", "the fill value is an empty list", action.fill.span,
                            "give one number, or one per sample: with [0, 0, 0]")
            for item in items:
                self._pixel_number(item, scope, "the fill value", whole=False)
        # Said at every use not under a test of the transfer syntax: where instances come compressed,
        # they leave in another one.
        if id(action) in self._syntax_tested_pixels():
            return
        self._warn("pixels-transcoded", "blank pixels decodes compressed pixel data and writes it uncompressed: "
                   "a compressed instance leaves in Explicit VR Little Endian, larger than it came",
                   action.span, "uncompressed instances keep their transfer syntax; to choose which transfer "
                   "syntaxes reach it, test FileMeta.TransferSyntaxUID in the rule's when or an if around it")

    def _syntax_tested_pixels(self) -> set[int]:
        """The `blank pixels` actions under a rule's `when` or an `if` that reads
        FileMeta.TransferSyntaxUID: their author chose which transfer syntaxes reach them."""
        found = getattr(self, "_syntax_tested", None)
        if found is not None:
            return found
        found = set()

        def reads_syntax(expr) -> bool:
            return expr is not None and any(
                isinstance(node, n.Path) and node.root == "FileMeta"
                and [e.keyword for e in node.elements] == ["TransferSyntaxUID"] for node in walk(expr))

        def visit(actions, tested: bool) -> None:
            for action in actions:
                if isinstance(action, n.BlankPixelsAction):
                    if tested:
                        found.add(id(action))
                elif isinstance(action, n.IfAction):
                    chain, orelse = n.if_chain(action)
                    tested_here = tested or any(reads_syntax(arm.condition) for arm in chain)
                    for arm in chain:
                        visit(arm.body, tested_here)
                    visit(orelse or (), tested_here)
                else:
                    visit([child for child in action.children() if isinstance(child, n.ACTIONS)], tested)

        for module in self.program.modules:
            for item in module.file.items:
                if isinstance(item, n.Rule):
                    visit(item.actions, reads_syntax(item.when))
        self._syntax_tested = found
        return found

    def _pixel_number(self, expr: n.Expr, scope: Scope, what: str, positive: bool = False,
                      whole: bool = True) -> None:
        kind = self.check_value(expr, scope)
        if kind is None:
            return
        if kind.kind not in (t.NUMBER, t.ANY) or kind.multi:
            self._error("type-mismatch", f"{what} must be a number, not {kind.describe()}", expr.span,
                        "a region is counted in pixels: DataSet.Columns, a number, a let of one")
            return
        if isinstance(expr, n.NumberLit):
            if whole and expr.value != int(expr.value):
                self._error("bad-region", f"{what} is {expr.text}: regions are whole pixels", expr.span)
            elif positive and expr.value <= 0:
                self._error("bad-region", f"{what} is {expr.text}: a region is at least 1 pixel wide and high",
                            expr.span, "a region is (x, y, width, height), not two corners")

    def visit_DeleteAction(self, action: n.DeleteAction, scope: Scope) -> None:
        self._target(action.target, scope, "delete")

    def visit_KeepOnlyAction(self, action: n.KeepOnlyAction, scope: Scope) -> None:
        resolved = []
        for ref in action.paths:
            path = self.resolve_path(ref.path, scope)
            if path is None:
                continue
            found = keep.check_path(path, ref.span, action.private)
            self.diagnostics.extend(found)
            if not found:
                resolved.append(path)
        if len(resolved) == len(action.paths) and not action.private:
            finding = keep.unkept_warning(keep.build(resolved, ""), action.span)
            if finding is not None:
                self.diagnostics.append(finding)

    def visit_DeletePrivateAction(self, action, scope: Scope) -> None:
        if action.creators is None:
            return
        kind = self.check_value(action.creators, scope)
        if kind is None:
            return
        if kind.kind not in (t.STRING, t.ANY):
            self._error("type-mismatch", f"a private creator is text, not {kind.describe()}", action.creators.span,
                        'for example delete private ["GEMS_IDEN_01", "SIEMENS CSA HEADER"]')
            return
        literal = _literal_value(action.creators)
        if literal is _NOT_LITERAL:
            return
        for creator in literal if isinstance(literal, tuple) else (literal,):
            if isinstance(creator, str) and not creator.strip():
                self._error("bad-value", "a private creator is not empty", action.creators.span,
                            "name the block, e.g. \"GEMS_IDEN_01\"")

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
        self._check_window(action, scope)

    # ---- delivery windows and urgency ----
    def _check_window(self, action, scope: Scope) -> None:
        window = action.window
        if window is None:
            return
        if self._wrong_for_messages(action, scope, "during", n.REQUESTS,
                                    "a request is answered now; only instances can wait for a window"):
            return
        if self.windows is not None and window.value not in self.windows:
            close = difflib.get_close_matches(window.value, list(self.windows), n=1, cutoff=0.6)
            known = ", ".join(sorted(self.windows)) or "none are configured"
            hint = f"did you mean {close[0]}?" if close else f"known windows: {known}"
            self._error("unknown-window", f"unknown window {window.value!r}", window.span, hint)

    def visit_UrgentAction(self, action: n.UrgentAction, scope: Scope) -> None:
        if self._routing_allowed(action, scope, "urgent"):
            self._wrong_for_messages(action, scope, "urgent", n.REQUESTS,
                                     "a request is answered now; only instances wait in a queue")
    # ----

    # ---- notifications ----
    def visit_NotifyAction(self, action: n.NotifyAction, scope: Scope) -> None:
        if not self._routing_allowed(action, scope, "notify"):
            return
        if self._wrong_for_messages(action, scope, "notify", n.REQUESTS,
                                    "a request is answered at once; only instances notify"):
            return
        self._check_notifier(action.notifier)
        if action.message is not None:
            self.check_value(action.message, scope, allow_many=True)

    def _check_notifier(self, name: n.Name) -> None:
        if self.notifiers is not None and name.value not in self.notifiers:
            close = difflib.get_close_matches(name.value, list(self.notifiers), n=1, cutoff=0.6)
            known = ", ".join(sorted(self.notifiers)) or "none are configured"
            hint = f"did you mean {close[0]}?" if close else f"known notifiers: {known}"
            self._error("unknown-notifier", f"unknown notifier {name.value!r}", name.span, hint)
    # ----

    def visit_CopyAction(self, action: n.CopyAction, scope: Scope) -> None:
        if not self._routing_allowed(action, scope, "copy"):
            return
        if self._wrong_for_messages(action, scope, "copy to", n.REQUESTS,
                                    "a request is answered by the destinations it is routed to, not copied"):
            return
        self._check_destinations(action.destinations, scope.messages if scope.context == "rule" else ())
        self._check_window(action, scope)
        # A copy is edited after the rules ran: it sees values kept with let, not items of the document.
        values_only = {k: v for k, v in scope.variables.items() if v[0].kind == "value"}
        copy_scope = replace(scope, variables=values_only, context="copy")
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
        if scope.level is not None:
            self._error("group-reject", "reject cannot be used in a group rule: its instances were answered when "
                        "they arrived", action.span, "write quarantine \"reason\" or drop")
            return
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
        self.check_actions(action.body, replace(scope, variables=values_only, context="response"))

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

    # ---- sequence items: append, delete each ... where, copy PATH to PATH ----

    def _sequence_target(self, path: n.Path, scope: Scope, verb: str) -> ResolvedPath | None:
        """The sequence an append adds to (or a delete each removes from): writable, and a
        sequence by its VR where the dictionary knows it."""
        resolved = self._writable(path, scope)
        if resolved is None:
            return None
        last = resolved.last
        if last.mask is not None:
            self._error("bad-target", f"a tag mask names many elements; {verb} needs a sequence", path.span)
            return None
        vr = concrete_vr(last.vr)
        if vr is not None and vr != "SQ":
            self._error("bad-target", f"{last.text} is not a sequence ({vr}); {verb} works on the items of a "
                        "sequence", path.span)
            return None
        return resolved

    def _writable(self, path: n.Path, scope: Scope) -> ResolvedPath | None:
        resolved = self.resolve_path(path, scope)
        if resolved is None:
            return None
        if resolved.root in READ_ONLY_ROOTS or resolved.is_arrival:
            self._error("read-only", f"{resolved.root} cannot be edited by rules", path.span)
            return None
        return resolved

    def visit_AppendAction(self, action: n.AppendAction, scope: Scope) -> None:
        resolved = self._sequence_target(action.target, scope, "append")
        if resolved is None:
            return
        if resolved.last.index is not None:
            self._error("bad-target", "append adds an item at the end of a sequence: name the sequence without "
                        "an index", action.target.span, f"append to {resolved.text.rsplit('[', 1)[0]} as ...")
            return
        if not self._name_free(action.var, action.var_span, scope):
            return
        self.bindings[id(action)] = Binding("item", resolved)
        self.check_actions(action.body, scope.with_variable(action.var, Binding("item", resolved), Type(t.ITEM)))

    def visit_DeleteItemsAction(self, action: n.DeleteItemsAction, scope: Scope) -> None:
        resolved = self._sequence_target(action.source, scope, "delete each")
        if resolved is None:
            return
        if concrete_vr(resolved.last.vr) is None:
            self._error("bad-target", f"{resolved.last.text} is not known to be a sequence; delete each walks "
                        "the items of a sequence", action.source.span)
            return
        inner = self._bind(action.var, action.var_span, action.source, scope, action, loop=True)
        if inner is not None:
            self.check_condition(action.condition, inner)

    def visit_CopyPathAction(self, action: n.CopyPathAction, scope: Scope) -> None:
        if isinstance(action.source, n.Variable):
            self._copy_variable(action, scope)
            return
        source = self.resolve_path(action.source, scope)
        target = self._writable(action.target, scope)
        if source is None or target is None:
            return
        if source.is_arrival:
            self._error("bad-target", f"{source.text} is a fact of the arrival, not an element to copy",
                        action.source.span, f"write set {target.text} = {source.text}")
            return
        for path, node, role in ((source, action.source, "reads"), (target, action.target, "writes")):
            last = path.last
            if last.mask is not None:
                self._error("bad-target", f"a tag mask names many elements; copy {role} one", node.span)
                return
            whole_items = last.index == n.STAR and concrete_vr(last.vr) == "SQ" and role == "reads"
            fans = any(s.index == n.STAR or s.any_depth for s in path.steps[:-1]) or last.any_depth or \
                (last.index == n.STAR and not whole_items)
            if fans:
                self._error("bad-target", f"copy {role} one place; {path.text} reaches many ([*] or **)", node.span,
                            "walk them with for each, and copy from the loop variable")
                return
        source_vr, target_vr = concrete_vr(source.last.vr), concrete_vr(target.last.vr)
        source_is_sequence, target_is_sequence = source_vr == "SQ", target_vr == "SQ"
        if not source_is_sequence and source.last.index is not None and source_vr is not None:
            self._error("bad-target", f"copy copies whole elements; {source.last.text} is one of its values",
                        action.source.span, f"write set {target.text} = {source.text}")
            return
        if not target_is_sequence and target.last.index is not None and target_vr is not None:
            self._error("bad-target", f"copy writes whole elements; {target.last.text} is one of its values",
                        action.target.span)
            return
        if source_vr is None or target_vr is None:
            return  # a private element the dictionary does not know: checked when the rule runs
        if source_is_sequence != target_is_sequence:
            what = "a sequence" if source_is_sequence else f"an element ({source_vr})"
            into = "a sequence" if target_is_sequence else f"an element ({target_vr})"
            self._error("type-mismatch", f"copy cannot put {what} into {into}", action.span)
            return
        if source_is_sequence:
            if source.last.index is None and target.last.index is not None:
                self._error("type-mismatch", f"{source.text} is a whole sequence; copy it to a sequence, "
                            "not to an item", action.target.span,
                            f"copy {source.text} to {target.text.rsplit('[', 1)[0]}")
            elif source.last.index == n.STAR and isinstance(target.last.index, int):
                self._error("type-mismatch", f"{source.text} is every item; one item can replace one item",
                            action.target.span, f"copy {source.text} to {target.text.rsplit('[', 1)[0]}")
            elif target.last.index == n.STAR:
                self._error("bad-target", f"{target.text} names every item; copy to the sequence (to append), "
                            "or to one item (to replace it)", action.target.span)
            return
        if source_vr != target_vr:
            self._error("type-mismatch", f"copy keeps the element's VR: {source.last.text} is {source_vr}, "
                        f"{target.last.text} is {target_vr}", action.span,
                        f"to convert the value, write set {target.text} = {source.text}")

    def _copy_variable(self, action: n.CopyPathAction, scope: Scope) -> None:
        """`copy NAME to PATH`: NAME is a loop variable, bound to an item or to an element."""
        name = action.source.name
        entry = scope.variables.get(name)
        target = self._writable(action.target, scope)
        if entry is None:
            self._unknown_variable(action.source, scope)
            return
        binding, _kind = entry
        if binding.kind not in ("item", "element"):
            self._error("bad-target", f"{name} is a value, not an element or an item to copy", action.source.span,
                        f"write set {target.text if target is not None else 'PATH'} = {name}")
            return
        if target is None:
            return
        target_vr = concrete_vr(target.last.vr)
        if binding.kind == "item":
            if target_vr not in (None, "SQ"):
                self._error("type-mismatch", f"copy cannot put an item into an element ({target_vr})", action.span)
            elif target.last.index == n.STAR:
                self._error("bad-target", f"{target.text} names every item; copy to the sequence (to append), "
                            "or to one item (to replace it)", action.target.span)
            return
        source_vr = concrete_vr(binding.source.last.vr) if binding.source is not None else None
        if target_vr == "SQ" or source_vr == "SQ":
            if source_vr != target_vr and None not in (source_vr, target_vr):
                self._error("type-mismatch", f"copy cannot put {'a sequence' if source_vr == 'SQ' else 'an element'} "
                            f"into {'a sequence' if target_vr == 'SQ' else 'an element'}", action.span)
            return
        if None not in (source_vr, target_vr) and source_vr != target_vr:
            self._error("type-mismatch", f"copy keeps the element's VR: {name} is {source_vr}, "
                        f"{target.last.text} is {target_vr}", action.span,
                        f"to convert the value, write set {target.text} = {name}")

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
        if path.root in scope.module.failed_tables and path.root not in bindings:
            return None  # `table.column` of a table that could not be read: its `table` finding says why
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
        if verb == "set" and last.private is not None and last.private[2] is None:
            self._error("bad-target", "xx names every element of a private block: it can only be deleted, blanked "
                        "or kept", path.span)
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
        self._check_kinds_for_assignment(vr, target_kind, value_type, span, value)

    def _check_kinds_for_assignment(self, vr: str, target_kind: str, value_type: Type, span: Span,
                                    value: n.Expr | None = None) -> None:
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
        elif target_kind == t.NUMBER and source != t.NUMBER and value_type.table_cell:
            self._warn("text-as-number", f"text from table column {value_type.table_cell} written to a number "
                       f"({vr}); it must read as a number when the rule runs", span, table_number_hint(value))
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

    def check_value(self, expr: n.Expr, scope: Scope, allow_many: bool = False,
                    condition_hint: str | None = None) -> Type | None:
        kind = self.check_expr(expr, scope)
        if kind is None:
            return None
        if kind.kind == t.BOOL:
            self._error("type-mismatch", "a condition is not a value here", expr.span, condition_hint)
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
        if expr.name in scope.module.failed_tables:
            return None  # a table that could not be read: its `table` finding says why
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
        elif expr.name in ("private", "public", "VR", "Keyword", "Tag", "Group", "Creator"):
            hint = f"{expr.name} is read in a selector's filter only, e.g. DataSet.**.*[{expr.name}" + \
                ("]" if expr.name in ("private", "public") else ' == "..."]')
        elif re.fullmatch(r"[A-Z0-9_]+", expr.name):
            hint = f'strings are written in double quotes: "{expr.name}"'
        else:
            hint = "paths start with DataSet., CommandSet., FileMeta., Association., Source., Retrieve. or Arrival."
        self._error("unknown-name", f"unknown name {expr.name!r}", expr.span, hint)

    def visit_Concat(self, expr: n.Concat, scope):
        # `A + B` of two conditions is CTP's or
        kinds = [self.check_value(part, scope, condition_hint=operator_hint("+")) for part in expr.parts]
        if any(k is None for k in kinds):
            return None
        for part, kind in zip(expr.parts, kinds):
            if kind.kind in (t.ITEMS, t.ITEM, t.BYTES, t.REGEX, t.TABLE):
                self._error("type-mismatch", f"+ cannot use {kind.describe()}", part.span)
                return None
        if any(k.kind == t.NUMBER for k in kinds):
            for part, kind in zip(expr.parts, kinds):
                if kind.table_cell and kind.kind in (t.STRING, t.ANY):
                    self._text_as_number(part, kind, "used with + and a number: + joins text, so a cell \"10\" "
                                         "plus 1 is \"101\"")
                    break
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
        if self._lua_tags(expr, scope):
            return None
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

    def _lua_tags(self, expr: n.Subscript, scope: Scope) -> bool:
        """Orthanc's Lua `tags["Modality"]`, pasted: an unknown name with the path that replaces it."""
        subject, index = expr.subject, expr.index
        if not (isinstance(subject, n.Variable) and isinstance(index, n.StringLit)
                and subject.name not in scope.variables and subject.name not in scope.module.tables
                and subject.name not in scope.module.constants):
            return False
        self._error("unknown-name", f"unknown name {subject.name!r}", subject.span,
                    f"write DataSet.{index.value} (a Lua table of tags is a path here)")
        return True

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
        returned = fn.returns(kinds)  # a string, or any when the default is not one
        return replace(returned, table_cell=f"{table_ref.table.name}.{table_ref.column}")

    def _table_column(self, ref: n.Expr, scope: Scope, fn) -> TableRef | None:
        name = ref.name if isinstance(ref, n.Variable) else ref.path.root if isinstance(ref, n.PathRef) else None
        if name in scope.module.failed_tables:
            return None  # a table that could not be read: its `table` finding says why
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
            self._contains_on_values(expr, left)
            return t.T_BOOL
        if self._foreign_literal(expr):
            return t.T_BOOL
        self._check_comparable(expr, left, right)
        self._empty_string_test(expr)
        self._table_cell_as_number(expr, left, right)
        return t.T_BOOL

    def _contains_on_values(self, expr: n.Binary, left: Type) -> None:
        """`ImageType contains "SAVE"`: on an element with several values, contains compares whole
        values, so a test for text inside a value is false once the element holds two values."""
        if expr.op not in ("contains", "not contains") or not left.multi or not isinstance(expr.left, n.PathRef):
            return
        if not isinstance(expr.right, n.StringLit):
            return
        resolved = self.paths.get(id(expr.left.path))
        if resolved is None or resolved.is_arrival:
            return
        literal, path = expr.right.value, expr.left.path.text()
        why = likely_substring(resolved.last.text, concrete_vr(resolved.last.vr), literal)
        if why is None:
            return
        shown = _show(literal)
        self._warn("contains-values", f"{path} can hold several values: then {expr.op} compares whole values, and "
                   f"{shown} {why}", expr.span,
                   f"for a whole value write {shown} {'not in' if expr.op == 'not contains' else 'in'} {path}; "
                   f"for text inside a value write {'all' if expr.op == 'not contains' else 'any'} v in {path}: "
                   f"v {expr.op} {shown}")

    def _empty_string_test(self, expr: n.Binary) -> None:
        """`X == ""` is false for a missing X, like every comparison with null; `X != ""` too."""
        if expr.op not in _EQUALITY:
            return
        for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
            if not (isinstance(other, n.StringLit) and other.value == "" and isinstance(side, n.PathRef)):
                continue
            resolved = self.paths.get(id(side.path))
            if resolved is None or resolved.is_arrival:
                return  # Association and Source fields are always there
            path = side.path.text()
            guard = ("missing" if expr.op == "==" else "exists", path)
            if any(guard in frame for frame in self._presence_frames):
                return  # `missing X or X == ""`, `exists X and X != ""`: the missing case is said
            if expr.op == "==":
                self._warn("empty-string", f'{path} == "" is false when {path} is missing, as every comparison '
                           "with a missing element is", expr.span,
                           f"write empty {path} or missing {path}; empty alone is true only for a present element "
                           "with no value")
            else:
                self._warn("empty-string", f'{path} != "" is false when {path} is missing, as every comparison '
                           "with a missing element is", expr.span,
                           f"write exists {path} and not empty {path} for an element with a value, or "
                           f"not empty {path} to let a missing one through too")
            return

    def _table_cell_as_number(self, expr: n.Binary, left: Type, right: Type) -> None:
        """A table cell is text: compared with a number it compares as one only when it reads as one."""
        for side, kind, other in ((expr.left, left, right), (expr.right, right, left)):
            if kind.table_cell and kind.kind in (t.STRING, t.ANY) and other.kind == t.NUMBER:
                self._text_as_number(side, kind, "compared with a number: it compares as a number only when the "
                                     "cell reads as one, and is false otherwise")
                return

    def _text_as_number(self, expr: n.Expr, kind: Type, use: str) -> None:
        self._warn("text-as-number", f"{_describe_side(expr)} is text from table column {kind.table_cell}, "
                   f"{use}", expr.span,
                   table_number_hint(expr))

    def _foreign_literal(self, expr: n.Binary) -> bool:
        """A tag written as another tool writes it, which parses as a list or a number here:
        `[0028,0301] == "YES"` compares a list of two numbers. An error, with the rewrite."""
        for side in (expr.left, expr.right):
            if not isinstance(side, (n.ListLit, n.NumberLit)):
                continue
            first = side.items[0] if isinstance(side, n.ListLit) and side.items else side
            if not (isinstance(first, n.NumberLit) and first.text.startswith("0")):
                continue  # 20240101 is a date, [1000, 2000] two numbers; a tag's group is written 0008 to 0FFF
            rewrite = foreign_tag(self._source_text(side.span))
            if rewrite is not None:
                self._error("type-mismatch", f"{self._source_text(side.span)} is "
                            f"{'a list of numbers' if isinstance(side, n.ListLit) else 'a number'} here, not a tag",
                            side.span, f"write {rewrite}")
                return True
        return False

    def _source_text(self, span: Span) -> str:
        """The text of a one-line span, from the rule file that holds it."""
        for module in self.program.modules:
            if module.path == span.file and span.line == span.end_line:
                lines = module.file.source.splitlines()
                if 0 < span.line <= len(lines):
                    return lines[span.line - 1][span.column - 1:span.end_column - 1]
        return ""

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
        self._presence_frames.append({(operand.kind, operand.target.path.text()) for operand in expr.operands
                                      if isinstance(operand, n.Presence) and isinstance(operand.target, n.PathRef)})
        for operand in expr.operands:
            self.check_condition(operand, scope)
        self._presence_frames.pop()
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

    def visit_ExpectNotify(self, statement: n.ExpectNotify, scope: Scope) -> None:
        self._check_notifier(statement.notifier)

    def visit_ExpectCopy(self, statement: n.ExpectCopy, scope: Scope) -> None:
        self._check_destinations((statement.destination,))
        self.check_condition(statement.condition, scope)

    def visit_ExpectCondition(self, statement: n.ExpectCondition, scope: Scope) -> None:
        self.check_condition(statement.condition, scope)

    def visit_ExpectFor(self, statement: n.ExpectFor, scope: Scope) -> None:
        self.visit(statement.expectation, scope)  # the file is checked with the test's files (ruletest)

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



# ---- what a value is likely to mean --------------------------------------------------

# Whole values of the multi-valued code strings that rules test most: Image Type's defined
# terms in PS3.3 (C.7.6.1.1.2 and the modality modules), and values scanners commonly write.
# A literal outside them is more likely meant as text inside a value than as a whole value.
DEFINED_TERMS = {
    "ImageType": frozenset({
        "ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "AXIAL", "LOCALIZER", "REFORMATTED", "MPR", "MIP",
        "MINIP", "PROJECTION IMAGE", "VOLUME", "CINE", "SCREEN SAVE", "DOSE_INFO", "DOSE REPORT",
        "PERFUSION", "DIFFUSION", "ADC", "TRACE", "FA", "T1", "T2", "M", "P", "R", "I", "OTHER", "NONE",
        "MIXED", "RECON", "STATIC", "DYNAMIC", "GATED", "WHOLE BODY", "TOMO", "EMISSION", "TRANSMISSION",
        "FLUOROSCOPY", "SINGLE PLANE", "BIPLANE A", "BIPLANE B", "POST_CONTRAST", "PRE_CONTRAST", "SUBTRACTION",
        "CALCIUM_SCORE", "CARDIAC", "CARDIAC_GATED", "CT_SOM5 SPI", "SINGLE A", "SINGLE B", "ND", "NORM",
        "DIS2D", "DIS3D", "MOSAIC", "FILTERED", "HELIX", "SCOUT", "TOPOGRAM", "JP2K LOSSY", "ACQUISITION",
    }),
}
_CS_VALUE = re.compile(r"[A-Z0-9 _]*")


def likely_substring(keyword: str, vr: str | None, literal: str) -> str | None:
    """Why `literal` looks like text inside a value rather than one whole value of the element, or None."""
    if literal == "" or literal != literal.strip():
        return "has spaces at an end, which no whole value has"
    if vr == "CS" and not _CS_VALUE.fullmatch(literal):
        return "is not a code string value (those are upper case letters, digits, spaces and _)"
    terms = DEFINED_TERMS.get(keyword)
    if terms is not None and literal not in terms:
        return f"is not one of {keyword}'s defined terms, so it is likely meant as text inside a value"
    return None


def table_number_hint(expr: n.Expr | None) -> str:
    """How to turn a table cell into a number: once, at the `let` that keeps it, or where it is read."""
    if isinstance(expr, n.Variable):
        return f"convert it once where it is kept: let {expr.name} = number(lookup(...))"
    return "convert it where it is read: number(lookup(...)), or number(lookup(...), default) for a cell that " \
           "is not a number"
