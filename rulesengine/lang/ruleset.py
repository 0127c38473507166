"""A compiled rule set, its evaluation, and the decision it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..diagnostics import Diagnostic, Span
from ..values import display, to_json
from .document_api import RuleDocument
from .generated import GeneratedModule, rewrite_traceback, span_of_failure

OUTCOMES = ("route", "drop", "reject", "quarantine")
NO_DESTINATION_POLICIES = ("quarantine", "drop", "reject")
STORE = "C-STORE"  # the message a rule without `on` handles (nodes.STORE)


class ResponseEditError(Exception):
    """A rule's `on response` actions failed on a response; the message names the rule-file line."""


@dataclass(frozen=True)
class RuleInfo:
    index: int
    name: str
    span: Span
    messages: tuple[str, ...] = (STORE,)  # the messages the rule handles
    level: str | None = None  # series | study for a group rule

    @property
    def file(self) -> str:
        return self.span.file

    @property
    def line(self) -> int:
        return self.span.line


@dataclass(frozen=True)
class Edit:
    """One change to a document: the concrete path, old and new values, and why."""

    path: str
    old: Any
    new: Any
    rule: str | None
    span: Span | None
    destination: str | None = None  # None: the document every destination starts from

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    def to_json(self) -> dict:
        return {"path": self.path, "old": to_json(self.old), "new": to_json(self.new), "rule": self.rule,
                "file": self.span.file if self.span else None, "line": self.line,
                "destination": self.destination}


@dataclass(frozen=True)
class LogLine:
    message: str
    rule: str | None
    span: Span | None


@dataclass(frozen=True)
class TraceEvent:
    """What --explain shows: one predicate, the values it compared, its result."""

    rule: int
    predicate: int
    left: Any
    right: Any
    result: bool


@dataclass
class Decision:
    outcome: str  # route | drop | reject | quarantine
    reason: str | None
    destinations: dict[str, Any]  # name -> the Document that destination receives
    rules_fired: list[RuleInfo]
    edits: list[Edit]
    log: list[LogLine]
    error: str | None = None
    ended_by: RuleInfo | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # destination -> why it was not sent to
    trace: list[TraceEvent] | None = None
    branches: set[int] | None = None
    # A rule that failed at run time: the exception, its traceback naming rule-file lines.
    exception: BaseException | None = None
    # The message evaluated. For a request (C-FIND ...), the edited identifier is the document
    # every destination gets; `reject` answers with a failure status and `reason`; `drop` (C-FIND
    # only) answers with no matches. RuleSet.edit_response runs `response_edits` on each response.
    # (Empty tuples by default: a decision for an instance costs no more than it did.)
    message: str = STORE
    response_edits: list[tuple[Callable, int]] | tuple = ()  # (actions, rule index) of the rules that fired
    response_log: list[LogLine] | tuple = ()  # what response edits logged
    response_changes: list[Edit] | tuple = ()  # what response edits changed
    # An instance no rule routed: its outcome is the no_destination policy's, not a rule's (an
    # instance retrieved for a C-MOVE goes to the move destination all the same).
    unrouted: bool = False
    # ---- delivery windows and urgency ----
    urgent: bool = False  # `urgent`: every delivery goes first in its destination's queue
    windows: dict[str, str] | None = None  # destination -> the window its route waits for (`during`)
    # `notify NOTIFIER "message"`: the notifications the rules ask for, in order (instances only)
    notifications: list[RuleNotification] | tuple = ()

    def to_json(self) -> dict:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "error": self.error,
            "rules_fired": [{"name": r.name, "file": r.file, "line": r.line} for r in self.rules_fired],
            "edits": [e.to_json() for e in self.edits],
            "destinations": list(self.destinations),
            "skipped_destinations": dict(self.skipped),
            "log": [line.message for line in self.log],
            **({"message": self.message} if self.message != STORE else {}),
            **({"urgent": True} if self.urgent else {}),
            **({"windows": dict(self.windows)} if self.windows else {}),
            **({"notifications": [note.to_json() for note in self.notifications]} if self.notifications else {}),
        }


@dataclass(frozen=True)
class RuleNotification:
    """A notification a rule asks for (`notify NOTIFIER "message"`): the router queues it once
    the document is settled (a group rule's: once per group firing); dry-run and tests show it."""

    notifier: str
    message: str | None
    rule: str | None

    def to_json(self) -> dict:
        return {"notifier": self.notifier, "message": self.message, "rule": self.rule}


class Evaluation:
    """The state of one evaluation; compiled rules call its methods."""

    __slots__ = ("ruleset", "document", "routes", "copies", "fired", "edits", "logs", "outcome", "reason",
                 "rule", "destination", "trace", "branches", "ended_by", "current", "message", "responses",
                 "urgent", "windows", "notifications")

    def __init__(self, ruleset, document: RuleDocument, tracing: bool = False, message: str = STORE):
        self.ruleset = ruleset
        self.document = document
        self.routes: dict[str, bool] = {}  # destination -> routed back to its sender explicitly
        self.copies: dict[str, list[tuple[Callable, int]]] = {}
        self.fired: list[int] = []
        self.edits: list[Edit] = []
        self.logs: list[LogLine] = []
        self.outcome: str | None = None
        self.reason: str | None = None
        self.rule = -1
        self.destination: str | None = None
        self.trace: list[TraceEvent] | None = [] if tracing else None
        self.branches: set[int] | None = set() if tracing else None
        self.ended_by: int | None = None
        self.current = -1  # the rule being evaluated, kept when tracing
        self.message = message
        self.responses: list[tuple[Callable, int]] | None = None  # `on response` actions, with their rule
        self.urgent = False  # set by `urgent`
        self.windows: dict[str, str] | None = None  # destination -> window of its `during` routes
        self.notifications: list[RuleNotification] | None = None  # set by `notify`

    # -- called by compiled rules --

    def fire(self, rule: int) -> None:
        self.rule = rule
        self.fired.append(rule)

    def route(self, names: tuple[str, ...], back: bool) -> None:
        for name in names:
            self.routes[name] = self.routes.get(name, False) or back
        if self.windows:  # a route without a window sends at once, whatever `during` said before
            for name in names:
                self.windows.pop(name, None)

    def route_during(self, names: tuple[str, ...], back: bool, window: str) -> None:
        """`route to NAMES during WINDOW`: the first route to a destination decides its window
        (a route without one, before or after, sends at once)."""
        if self.windows is None:
            self.windows = {}
        for name in names:
            if name not in self.routes:
                self.windows[name] = window
            self.routes[name] = self.routes.get(name, False) or back

    def copy(self, names: tuple[str, ...], body: Callable, back: bool, window: str | None = None) -> None:
        if window is None:
            self.route(names, back)
        else:
            self.route_during(names, back, window)
        for name in names:
            self.copies.setdefault(name, []).append((body, self.rule))

    def notify(self, notifier: str, message) -> None:
        if self.notifications is None:
            self.notifications = []
        rule = self.ruleset.rules[self.rule].name if self.rule >= 0 else None
        text = None if message is None else message if isinstance(message, str) else display(message)
        self.notifications.append(RuleNotification(notifier, text, rule))

    def on_response(self, body: Callable) -> None:
        if self.responses is None:
            self.responses = []
        self.responses.append((body, self.rule))

    def drop_response(self, span_index: int) -> bool:
        return True  # the response function returns it: this response is not returned

    def edited(self, changes, span_index: int) -> None:
        if not changes:
            return
        rule = self.ruleset.rules[self.rule].name if self.rule >= 0 else None
        span = self.ruleset.spans[span_index]
        for change in changes:
            self.edits.append(Edit(change.path, change.old, change.new, rule, span, self.destination))

    def appended(self, changes, span_index: int) -> list:
        """Record the items an `append` added, and return them, for its body to fill."""
        self.edited(changes, span_index)
        return [change.item for change in changes]

    def log(self, value, span_index: int) -> None:
        rule = self.ruleset.rules[self.rule].name if self.rule >= 0 else None
        message = value if isinstance(value, str) else display(value)
        self.logs.append(LogLine(message, rule, self.ruleset.spans[span_index]))

    def end(self, outcome: str, reason, span_index: int) -> bool:
        self.outcome = outcome
        if reason is not None:
            self.reason = reason if isinstance(reason, str) else display(reason)
        self.ended_by = self.rule
        return True

    def check(self, predicate: int, operator: Callable, left, right) -> bool:
        result = operator(left, right) if right is not _NO_OPERAND else operator(left)
        self.trace.append(TraceEvent(self.current, predicate, left, right, bool(result)))
        return result

    def branch(self, branch: int) -> None:
        self.branches.add(branch)

    # -- after the rules --

    def finish(self, policy: str) -> Decision:
        document = self.document
        rules = self.ruleset.rules
        ended_by = rules[self.ended_by] if self.ended_by is not None else None
        destinations: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        outcome, reason = self.outcome, self.reason
        unrouted = False
        if outcome not in ("drop", "reject", "quarantine"):
            for name, back in self.routes.items():
                why = None if back else self.ruleset.loop_reason(name, document)
                if why:
                    skipped[name] = why
                    self.logs.append(LogLine(f"not sent to {name}: {why}", None, None))
                    continue
                destinations[name] = self._document_for(name)
            if destinations:
                outcome, reason = "route", None
            else:
                stopped = " (a rule stopped evaluation before any route)" if outcome == "stop" else ""
                if self.message == STORE:
                    outcome, reason, unrouted = policy, "no rule routed this document" + stopped, True
                else:  # a request that goes nowhere is answered with a failure
                    outcome, reason = "reject", f"no rule routed this {self.message}" + stopped
        if self.message == STORE:
            decision = Decision(outcome, reason, destinations, [rules[i] for i in self.fired], self.edits, self.logs,
                                None, ended_by, skipped, self.trace, self.branches, unrouted=unrouted)
            if destinations and (self.urgent or self.windows):
                decision.urgent = self.urgent
                decision.windows = {name: window for name, window in (self.windows or {}).items()
                                    if name in destinations}
            if self.notifications:
                decision.notifications = self.notifications
            return decision
        return Decision(outcome, reason, destinations, [rules[i] for i in self.fired], self.edits, self.logs,
                        None, ended_by, skipped, self.trace, self.branches, message=self.message,
                        response_edits=self.responses if outcome == "route" and self.responses else ())

    def _document_for(self, name: str):
        bodies = self.copies.get(name)
        if not bodies:
            return self.document
        copy = self.document.copy()
        self.destination = name
        try:
            for body, rule in bodies:
                self.rule = self.current = rule  # a copy's edits and conditions belong to its rule
                body(copy, self)
        finally:
            self.destination = None
        return copy

    def failed(self, message: str, exception: BaseException | None = None) -> Decision:
        rules = self.ruleset.rules
        outcome = "quarantine" if self.message == STORE else "reject"  # a request is never kept
        return Decision(outcome, message, {}, [rules[i] for i in self.fired], self.edits, self.logs,
                        message, rules[self.rule] if self.rule >= 0 else None, {}, self.trace, self.branches,
                        exception, self.message)


_NO_OPERAND = object()
NO_OPERAND = _NO_OPERAND


@dataclass(frozen=True)
class Predicate:
    """A condition leaf, for --explain and test failure messages."""

    index: int
    span: Span
    text: str
    kind: str
    left_text: str = ""  # the source of each operand, to say "X is 5"
    right_text: str = ""
    right_is_literal: bool = False


@dataclass(frozen=True)
class Branch:
    """A branch of a rule or block for --coverage; `description` says what it means when never taken."""

    index: int
    rule: int | None  # None: a branch inside a block (which any rule may apply)
    span: Span
    description: str
    block: str | None = None  # the block it is in, if any


class RuleSet:
    """Compiled rules. `evaluate(document)` returns a Decision; nothing is sent anywhere."""

    def __init__(self, *, program, analysis, rules: list[RuleInfo], spans: list[Span],
                 fast: dict[str, Callable], traced: dict[str, Callable], code: GeneratedModule,
                 traced_code: GeneratedModule, constants: dict[str, Any], predicates: list[Predicate],
                 branches: list[Branch], tags_read: frozenset[int] | None, no_destination: str,
                 destinations=None, can_reject: bool = False, rejecting: frozenset[str] = frozenset(),
                 fallbacks: dict[bool, dict[str, Callable]] | None = None):
        self.program = program
        # Rules over the instances of a series or a study (groups.GroupRule); set by the compiler.
        self.group_rules: tuple = ()
        self.analysis = analysis
        self.rules = rules
        self.spans = spans
        # One function per message some rule handles; C-STORE's is bound apart: the hot path.
        self._fast_by_message = fast
        self._traced_by_message = traced
        self._fast = fast[STORE]
        self._traced = traced[STORE]
        self._rejecting = rejecting
        # The fallback rule of each message that has one, fast and traced: run when the others decided nothing.
        self._fallbacks = fallbacks or {False: {}, True: {}}
        self._code = {False: code, True: traced_code}
        self._modules = {module.filename: module for module in (code, traced_code)}
        for module in self._modules.values():
            module.forget_with(self)
        self._constants = constants
        self.predicates = predicates
        self.branches = branches
        self.tags_read = tags_read
        self.no_destination = no_destination
        self.destinations = destinations
        self._can_reject = can_reject

    @property
    def can_reject(self) -> bool:
        """Can evaluation end in reject? Then the router runs the rules before answering a sender.
        The checks found out, once (Analysis.can_reject): the router asks for every instance."""
        return self.no_destination == "reject" or self._can_reject

    def can_reject_for(self, message: str) -> bool:
        """Can evaluating `message` end in reject? For C-STORE, `can_reject`; a request that no
        rule routes is always answered with a failure, so for requests: whether some rule handles
        it with a reject (the router answers a request only after the rules ran anyway)."""
        if message == STORE:
            return self.can_reject
        return message in self._rejecting

    @property
    def messages(self) -> frozenset[str]:
        """The messages some rule handles (C-STORE among them only when a rule handles it)."""
        return frozenset(m for rule in self.rules for m in rule.messages)

    def generated_code(self, traced: bool = False, constants: bool = True) -> str:
        """The Python module the rules were compiled to, as a person reads it.

        `traced`: the variant that --explain, tests and coverage run, which records every
        predicate and branch. Each line ends with a comment naming its rule-file position
        (`# main.rules:12:5`); the operators and functions it calls are named for what they
        do (`not_in`, `fn_lower`) and its constants for what they hold (`text_CT`). With
        `constants`, a header lists each constant's value.
        """
        source = self._code[traced].source
        if not constants or not self._constants:
            return source
        header = ["# Constants (values from the rule files, passed in, never spliced into the code):"]
        header += [f"#   {name} = {_shown(value)}" for name, value in self._constants.items()]
        return "\n".join(header) + "\n\n" + source

    @property
    def version(self) -> str:
        """A content hash of every rule file and table that went into this rule set."""
        return self.program.version

    @property
    def files(self) -> list[str]:
        return list(self.program.files)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return list(self.analysis.diagnostics)

    def evaluate(self, document: RuleDocument, trace: bool = False, message: str = STORE) -> Decision:
        """Run the rules that handle `message`, in file order, on `document` (for a request, its
        identifier with its command set) and decide. The document is edited in place."""
        if message == STORE:
            function = self._traced if trace else self._fast
            evaluation = Evaluation(self, document, trace)
        else:
            function = (self._traced_by_message if trace else self._fast_by_message).get(message, _no_rules)
            evaluation = Evaluation(self, document, tracing=trace, message=message)
        try:
            function(document, evaluation)
            fallback = self._fallbacks[trace].get(message)
            if fallback is not None and not evaluation.routes and evaluation.outcome in (None, "stop"):
                fallback(document, evaluation)
            return evaluation.finish(self.no_destination)
        except Exception as exc:  # noqa: BLE001 - a failing rule quarantines, never loses, the document
            description = self._describe_failure(exc, evaluation)
            return evaluation.failed(description, rewrite_traceback(exc, self._modules))

    def edit_response(self, decision: Decision, response: RuleDocument) -> bool:
        """Run the `on response` actions of every rule that fired for the request, in order, on one
        response (its identifier or data set, with its command set). False: a rule dropped it,
        and it is not returned to the requester. Raises ResponseEditError when an action fails."""
        if not decision.response_edits:
            return True
        evaluation = Evaluation(self, response, tracing=decision.branches is not None, message=decision.message)
        try:
            for body, rule in decision.response_edits:
                evaluation.rule = evaluation.current = rule
                if body(response, evaluation):
                    return False
            return True
        except Exception as exc:  # noqa: BLE001 - said in the rules' words, with the rule-file line
            raise ResponseEditError(self._describe_failure(exc, evaluation)) from rewrite_traceback(
                exc, self._modules)
        finally:
            if evaluation.logs:
                if isinstance(decision.response_log, tuple):
                    decision.response_log = list(decision.response_log)
                decision.response_log.extend(evaluation.logs)
            if evaluation.edits:
                if isinstance(decision.response_changes, tuple):
                    decision.response_changes = list(decision.response_changes)
                decision.response_changes.extend(evaluation.edits)
            if decision.branches is not None:
                decision.branches.update(evaluation.branches)

    def describe_failure(self, exc: Exception, evaluation: Evaluation) -> str:
        """What a rule failing at run time says: the rule-file line and the rule."""
        return self._describe_failure(exc, evaluation)

    def rewrite(self, exc: BaseException) -> BaseException:
        """`exc` with a traceback through the rules' code that names rule-file lines."""
        return rewrite_traceback(exc, self._modules)

    def _describe_failure(self, exc: Exception, evaluation: Evaluation) -> str:
        span = span_of_failure(exc.__traceback__, self._modules)
        rule = self._rule_at(span) if span else None
        if rule is None and evaluation.rule >= 0:
            rule = self.rules[evaluation.rule].name
        where = f"{span.file}:{span.line}: " if span else ""
        who = f"rule {rule!r}: " if rule else ""
        return f"{where}{who}{exc}"

    def _rule_at(self, span: Span) -> str | None:
        for info in self.rules:
            if info.span.file == span.file and info.span.line <= span.line <= info.span.end_line:
                return info.name
        return None

    def loop_reason(self, name: str, document) -> str | None:
        return loop_reason(self.destinations, name, document)


def _no_rules(document, evaluation) -> bool:
    return False  # no rule handles this message


def loop_reason(destinations, name: str, document) -> str | None:
    """Why destination `name` would send the document back to its sender, if it would:
    its AE title is the calling AE title the document came from."""
    if not destinations:
        return None
    info = destinations.get(name)
    calling = getattr(document.arrival, "calling_aet", None)
    if info is None or not info.ae_title or not calling:
        return None
    if info.ae_title.strip() == str(calling).strip():
        return (f"it came from {calling}, the AE title of {name}; "
                f"write `route back to {name}` to send it back")
    return None


def _shown(value) -> str:
    """A constant's value for the header of generated code: one line, not too long."""
    text = value.text if hasattr(value, "steps") else repr(value).replace("\n", "\\n")  # a path: as written
    return text if len(text) <= 100 else text[:97] + "..."
