"""The test blocks of *_test.rules files: checked (for `lint`) and run (for `test`).

A test file `X_test.rules` tests its sibling `X.rules`. Each test builds a
document (`given file`, `given`/`with` values and arrival facts), evaluates
the rules (or, with `apply BLOCK`, applies one block), and checks what it
expects: destinations, outcome, rules fired and values, per destination copy.

A test of a request (`given message C-FIND`) evaluates the rules handling that
message on the identifier it gives; each `given response` then builds one
response, which the rules' `on response` actions edit, and the `expect
response` statements after it check that response (its values, or that it
was dropped).
A test of several instances (several `given file`, each followed by its own
`given`/`with` values) evaluates the rules on each instance, then the group
rules over them, grouped per series or study as the router groups them. A
plain `expect` must hold for every instance; `expect for "FILE" ...` for the
instance built from that file only. A test of one instance runs the group
rules too, over a group of one.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from .diagnostics import Diagnostic, RulesError, Span, error, warning
from .document import Arrival, Document, DocumentReadError, PathError
from .explain import operand_values
from .lang import nodes as n
from .lang.api import analyse
from .lang.checks import Analysis
from .lang.compiler import RULE_FIRED, Snippets, compile_program, compile_snippets
from .lang.loader import Program, display_path, load_program
from .lang.ruleset import STORE, Decision, Evaluation, RuleSet
from .lang.syntax import parse
from .lang.visitor import NodeVisitor

TEST_SUFFIX = "_test.rules"
_ROUTING_EXPECTATIONS = (n.ExpectRoute, n.ExpectCopy, n.ExpectOutcome, n.ExpectFired, n.ExpectNotify, n.ExpectFor)
_RESPONSE_STATEMENTS = (n.GivenResponse, n.ExpectResponse)
_EXPECTATIONS = (n.ExpectRoute, n.ExpectCopy, n.ExpectOutcome, n.ExpectFired, n.ExpectNotify, n.ExpectCondition,
                 n.ExpectResponse,
                 n.ExpectFor)
# The DIMSE command fields (PS3.7 E.1) a test's request and responses carry in their command sets.
COMMAND_FIELDS = {"C-STORE": 0x0001, "C-FIND": 0x0020, "C-GET": 0x0010, "C-MOVE": 0x0021,
                  "N-CREATE": 0x0140, "N-SET": 0x0120}
RESPONSE_BIT = 0x8000
PENDING, SUCCESS = 0xFF00, 0x0000


@dataclass
class Failure:
    span: Span
    message: str


@dataclass
class TestResult:
    file: str
    name: str
    span: Span
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Suite:
    """A test file with the rules it tests, checked and compiled."""

    test_path: str
    rules_path: str
    tests: list[n.Test]
    diagnostics: list[Diagnostic]
    program: Program | None = None
    analysis: Analysis | None = None
    ruleset: RuleSet | None = None
    snippets: Snippets | None = None
    source: str = ""

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


def rules_file_for(test_path: str) -> str:
    return test_path[: -len(TEST_SUFFIX)] + ".rules"


def _read_test_file(test_path: str, diagnostics: list[Diagnostic]) -> tuple[list[n.Test], str]:
    shown = display_path(test_path)
    try:
        with open(test_path, encoding="utf-8-sig") as fh:
            text = fh.read()
        rule_file = parse(text, shown)
    except OSError as exc:
        diagnostics.append(error("test-file", f"cannot read {shown}: {exc.strerror or exc}"))
        return [], ""
    except RulesError as exc:
        diagnostics.extend(exc.diagnostics)
        return [], ""
    tests = []
    for item in rule_file.items:
        if isinstance(item, n.Test):
            tests.append(item)
        else:
            diagnostics.append(error("test-file", "a test file holds tests only; rules, blocks, imports and "
                                     f"tables belong in {os.path.basename(rules_file_for(test_path))}", item.span))
    return tests, text


def _check_statements(test: n.Test, test_dir: str, diagnostics: list[Diagnostic]) -> None:
    files = [s for s in test.statements if isinstance(s, n.GivenFile)]
    names = [given.file for given in files]
    for statement in test.statements:
        if isinstance(statement, n.ExpectFor) and statement.file not in names:
            diagnostics.append(error("test-file", f"no `given file {n.quote_string(statement.file)}` in this test",
                                     statement.span, "expect for names one of the test's given files"))
        if isinstance(statement, n.ExpectFor) and names.count(statement.file) > 1:
            diagnostics.append(error("test-file", f"{statement.file!r} is given twice: expect for cannot tell "
                                     "which instance", statement.span))
    if len(files) > 1 and any(isinstance(s, (n.GivenMessage, n.ApplyAction)) for s in test.statements):
        diagnostics.append(error("test-file", "a test of several instances evaluates stored instances: "
                                 "no `given message` nor `apply`", files[1].span))
    if files and test.statements[0] is not files[0]:
        diagnostics.append(error("test-file", "`given file` comes first: values given before it would be lost",
                                 files[0].span))
    for given in files:
        if not os.path.isfile(os.path.join(test_dir, given.file)):
            diagnostics.append(error("test-file", f"no file {given.file!r} (paths are relative to the test file)",
                                     given.span))
    applies = [s for s in test.statements if isinstance(s, n.ApplyAction)]
    if applies:
        for statement in test.statements:
            if isinstance(statement, _ROUTING_EXPECTATIONS + _RESPONSE_STATEMENTS + (n.GivenMessage,)):
                diagnostics.append(error("test-file", "a test that applies a block runs no rules, so it cannot "
                                         "expect routes, outcomes, fired rules or responses", statement.span))
    _check_request_statements(test, diagnostics)
    if not any(isinstance(s, _EXPECTATIONS) for s in test.statements):
        diagnostics.append(warning("test-file", f"test {test.name!r} expects nothing", test.span))


def _check_request_statements(test: n.Test, diagnostics: list[Diagnostic]) -> None:
    """One `given message`, before the responses; responses only for a request, each
    `expect response` after a `given response`."""
    messages = [s for s in test.statements if isinstance(s, n.GivenMessage)]
    if len(messages) > 1:
        diagnostics.append(error("test-file", "one `given message` per test", messages[1].span))
    message = messages[0].message.value if messages else STORE
    responded = False
    for statement in test.statements:
        if isinstance(statement, n.GivenMessage) and responded:
            diagnostics.append(error("test-file", "`given message` comes before the responses", statement.span))
        if isinstance(statement, n.GivenResponse):
            responded = True
            if message == STORE:
                diagnostics.append(error("test-file", "a stored instance gets no response: a test of responses "
                                         "names its request first", statement.span, "given message C-FIND"))
        elif isinstance(statement, n.ExpectResponse) and not responded:
            diagnostics.append(error("test-file", "`expect response` checks the last response given before it, "
                                     "and none is", statement.span,
                                     'given response DataSet.PatientID = "..." before it'))


def _pieces(tests: list[n.Test]) -> dict[str, tuple[str, object]]:
    """The code each test needs, named by test and statement position."""
    pieces: dict[str, tuple[str, object]] = {}
    for t_index, test in enumerate(tests):
        for s_index, statement in enumerate(test.statements):
            key = f"_t{t_index}_{s_index}"
            if isinstance(statement, n.ExpectFor):
                statement = statement.expectation
            if isinstance(statement, (n.GivenValues, n.GivenResponse)):
                for a_index, assignment in enumerate(statement.assignments):
                    pieces[f"{key}_{a_index}"] = ("value", assignment.value)
            elif isinstance(statement, n.ApplyAction):
                pieces[key] = ("actions", (statement,))
            elif isinstance(statement, (n.ExpectCondition, n.ExpectCopy)):
                pieces[key] = ("condition", statement.condition)
            elif isinstance(statement, n.ExpectResponse) and statement.condition is not None:
                pieces[key] = ("condition", statement.condition)
    return pieces


def load_suite(test_path: str, destinations=None, no_destination: str = "quarantine",
               folders: tuple[str, ...] = (), windows=None, notifiers=None) -> Suite:
    rules_path = rules_file_for(test_path)
    diagnostics: list[Diagnostic] = []
    tests, text = _read_test_file(test_path, diagnostics)
    suite = Suite(test_path, rules_path, tests, diagnostics, source=text)
    if not os.path.isfile(rules_path):
        diagnostics.append(error("test-file", f"{display_path(test_path)} tests {display_path(rules_path)}, "
                                 "which does not exist", Span.point(display_path(test_path), 1, 1)))
        return suite
    suite.program = load_program(rules_path, folders=folders)
    suite.analysis = analyse(suite.program, destinations, windows, notifiers)
    test_dir = os.path.dirname(test_path)
    for test in tests:
        suite.analysis.check_test(test, suite.program.main)
        _check_statements(test, test_dir, diagnostics)
    diagnostics.extend(suite.analysis.diagnostics)
    if not suite.errors:
        suite.ruleset = compile_program(suite.program, suite.analysis, no_destination=no_destination)
        suite.snippets = compile_snippets(suite.analysis, _pieces(tests),
                                          sources={display_path(test_path): text})
    return suite


def check_test_file(path: str, destinations=None, folders: tuple[str, ...] = (), windows=None,
                    notifiers=None) -> list[Diagnostic]:
    """Findings for a test file (and the rules it tests), for `lint`."""
    return sorted(load_suite(path, destinations, folders=folders, windows=windows,
                             notifiers=notifiers).diagnostics,
                  key=Diagnostic.sort_key)


# ---- running ------------------------------------------------------------------------


class _TestRun(NodeVisitor):
    def __init__(self, suite: Suite, t_index: int, test: n.Test):
        self.suite, self.t_index, self.test = suite, t_index, test
        self.failures: list[Failure] = []
        self.document: Document | None = None
        self.decision: Decision | None = None
        self.message = STORE
        self.response: Document | None = None  # the last response given, as the rules left it
        self.response_kept = True  # False: a rule dropped it
        self.instances: list[tuple[str | None, Document]] = []  # (given file, document) of each instance
        self.decisions: list[Decision] = []  # each instance's, in a test of several instances or group rules

    def fail(self, span: Span, message: str) -> None:
        self.failures.append(Failure(span, message))

    def piece(self, key: str):
        return self.suite.snippets.functions[key]

    def evaluation(self, document) -> Evaluation:
        return Evaluation(self.suite.snippets, document, tracing=True)

    def run(self) -> TestResult:
        started = time.perf_counter()
        try:
            self._run()
        except (PathError, DocumentReadError) as exc:
            self.fail(self.test.span, f"could not build the document: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken test is reported, the run goes on
            self.fail(self.test.span, f"{type(exc).__name__}: {exc}")
        return TestResult(display_path(self.suite.test_path), self.test.name, self.test.span, self.failures,
                          time.perf_counter() - started)

    def _run(self) -> None:
        test_dir = os.path.dirname(self.suite.test_path)
        applies = any(isinstance(s, n.ApplyAction) for s in self.test.statements)
        self.document = Document(arrival=Arrival(source_kind="test"))
        given = _Given(self, test_dir)
        for s_index, statement in enumerate(self.test.statements):
            given.visit(statement, f"_t{self.t_index}_{s_index}")
        if self.message != STORE:
            fill_command_set(self.document, self.message, response=False)
        ruleset = self.suite.ruleset
        if not applies and self.message == STORE and (len(self.instances) > 1 or ruleset.group_rules):
            self._run_instances(ruleset)
            return
        if not applies:
            self.decision = self.suite.ruleset.evaluate(self.document, trace=True, message=self.message)
            expects_quarantine = any(isinstance(s, n.ExpectOutcome) and s.outcome == "quarantine"
                                     for s in self.test.statements)
            if self.decision.error and not expects_quarantine:
                self.fail(self.test.span, f"evaluation failed: {self.decision.error}")
        for s_index, statement in enumerate(self.test.statements):
            self.visit(statement, f"_t{self.t_index}_{s_index}")

    def _run_instances(self, ruleset: RuleSet) -> None:
        """Several instances (or group rules): the rules on each, the group rules over the groups
        they make; every expectation checked against each instance it names."""
        if not self.instances:
            self.instances = [(None, self.document)]
        received = [document.copy() for _, document in self.instances]  # as received: what groups get
        decisions = [ruleset.evaluate(document, trace=True) for _, document in self.instances]
        joined = [i for i, d in enumerate(decisions) if d.unrouted or d.outcome not in ("drop", "reject", "quarantine")]
        by_group = group_decisions(ruleset, [received[i] for i in joined])
        merged = [merge_decisions(decision, by_group.get(id(received[i]), [])) for i, decision in enumerate(decisions)]
        self.decisions = merged
        expects_quarantine = any(isinstance(getattr(s, "expectation", s), n.ExpectOutcome)
                                 and getattr(s, "expectation", s).outcome == "quarantine" for s in self.test.statements)
        several = len(self.instances) > 1
        for (name, _), decision in zip(self.instances, merged):
            if decision.error and not expects_quarantine:
                self.fail(self.test.span, f"evaluation failed{f' for {name}' if several else ''}: {decision.error}")
        for s_index, statement in enumerate(self.test.statements):
            if not isinstance(statement, _EXPECTATIONS):
                continue
            wanted = statement.file if isinstance(statement, n.ExpectFor) else None
            expectation = statement.expectation if isinstance(statement, n.ExpectFor) else statement
            for (name, document), decision in zip(self.instances, merged):
                if wanted is not None and name != wanted:
                    continue
                self.document, self.decision = document, decision
                before = len(self.failures)
                self.visit(expectation, f"_t{self.t_index}_{s_index}")
                if several:
                    for i in range(before, len(self.failures)):
                        failure = self.failures[i]
                        self.failures[i] = Failure(statement.span, f"{name}: {failure.message}")

    def generic_visit(self, statement, key: str) -> None:
        """A statement that expects nothing (given, apply) checks nothing."""

    def assign(self, statement: n.GivenValues | n.GivenResponse, key: str, document=None) -> None:
        document = document if document is not None else self.document
        for a_index, assignment in enumerate(statement.assignments):
            value = self.piece(f"{key}_{a_index}")(document, self.evaluation(document))
            path = self.suite.analysis.paths[id(assignment.path)]
            document.write_path(path, value)

    def visit_GivenResponse(self, statement: n.GivenResponse, key: str) -> None:
        """A response to the request: built, then edited by the `on response` actions of the rules
        that fired, in order."""
        response = Document(arrival=self.document.arrival)
        fill_command_set(response, self.message, response=True)
        self.assign(statement, key, response)
        self.response = response
        self.response_kept = self.suite.ruleset.edit_response(self.decision, response)

    def visit_ExpectResponse(self, statement: n.ExpectResponse, key: str) -> None:
        if statement.condition is None:
            if self.response_kept:
                self.fail(statement.span, "expected the response to be dropped, but it is returned")
            return
        if not self.response_kept:
            self.fail(statement.span, "expected a response, but a rule dropped it")
            return
        self._condition(statement, key, self.response, " in the response")

    def _destinations(self) -> str:
        names = ", ".join(self.decision.destinations) or "none"
        reason = f" ({self.decision.reason})" if self.decision.reason else ""
        return f"destinations: {names}; outcome: {self.decision.outcome}{reason}"

    def visit_ExpectRoute(self, statement: n.ExpectRoute, key: str) -> None:
        for name in statement.destinations:
            routed = name.value in self.decision.destinations
            if routed == statement.negated:
                verb = "no route" if statement.negated else "a route"
                skipped = self.decision.skipped.get(name.value)
                extra = f"; {name.value} was skipped: {skipped}" if skipped else ""
                self.fail(statement.span, f"expected {verb} to {name.value}; {self._destinations()}{extra}")

    def visit_ExpectOutcome(self, statement: n.ExpectOutcome, key: str) -> None:
        decision = self.decision
        if decision.outcome != statement.outcome:
            self.fail(statement.span, f"expected outcome {statement.outcome}; {self._destinations()}")
        elif statement.reason is not None and decision.reason != statement.reason:
            self.fail(statement.span, f"expected the reason {statement.reason!r}; "
                      f"the reason was {decision.reason!r}")

    def visit_ExpectFired(self, statement: n.ExpectFired, key: str) -> None:
        fired = [rule.name for rule in self.decision.rules_fired]
        if (statement.rule in fired) == statement.negated:
            verb = "not to fire" if statement.negated else "to fire"
            listed = ", ".join(repr(name) for name in fired) or "none"
            self.fail(statement.span, f"expected rule {statement.rule!r} {verb}; rules fired: {listed}")

    def visit_ExpectNotify(self, statement: n.ExpectNotify, key: str) -> None:
        name = statement.notifier.value
        sent = [note for note in self.decision.notifications if note.notifier == name]
        asked = ", ".join(note.notifier + (f" {note.message!r}" if note.message is not None else "")
                          for note in self.decision.notifications) or "none"
        if statement.negated:
            if sent:
                self.fail(statement.span, f"expected no notification to {name}; notifications: {asked}")
            return
        if not sent:
            self.fail(statement.span, f"expected a notification to {name}; notifications: {asked}")
        elif statement.message is not None and all(note.message != statement.message for note in sent):
            self.fail(statement.span, f"expected a notification to {name} saying {statement.message!r}; "
                      f"notifications: {asked}")

    def visit_ExpectCondition(self, statement: n.ExpectCondition, key: str) -> None:
        self._condition(statement, key, self.document, "")

    def visit_ExpectCopy(self, statement: n.ExpectCopy, key: str) -> None:
        name = statement.destination.value
        copy = self.decision.destinations.get(name)
        if copy is None:
            self.fail(statement.span, f"expected a copy to {name}; {self._destinations()}")
            return
        self._condition(statement, key, copy, f" in the copy to {name}")

    def _condition(self, statement, key: str, document, where: str) -> None:
        evaluation = self.evaluation(document)
        if self.piece(key)(document, evaluation):
            return
        predicates = self.suite.snippets.predicates
        facts = [operand_values(predicates[e.predicate], e) for e in evaluation.trace]
        facts = [f for f in dict.fromkeys(facts) if f]
        text = predicates[evaluation.trace[0].predicate].text if len(evaluation.trace) == 1 else None
        expected = text or _source_text(self.suite, statement.condition.span)
        self.fail(statement.span, f"expected {expected}{where}, but " + ("; ".join(facts) or "it is false"))


class _Given(NodeVisitor):
    """Builds a test's document from its `given` statements and the blocks it applies, in order."""

    def __init__(self, run: _TestRun, test_dir: str):
        self.run, self.test_dir = run, test_dir

    def visit_GivenFile(self, statement: n.GivenFile, key: str) -> None:
        path = os.path.join(self.test_dir, statement.file)
        self.run.document = Document.read(path, Arrival(source_kind="file", source_path=path))
        self.run.instances.append((statement.file, self.run.document))  # `with` values after it are its own

    def visit_GivenValues(self, statement: n.GivenValues, key: str) -> None:
        self.run.assign(statement, key)

    def visit_GivenMessage(self, statement: n.GivenMessage, key: str) -> None:
        self.run.message = statement.message.value

    def visit_ApplyAction(self, statement: n.ApplyAction, key: str) -> None:
        self.run.piece(key)(self.run.document, self.run.evaluation(self.run.document))

    def generic_visit(self, statement, key: str) -> None:
        """An `expect` statement builds nothing."""


def group_decisions(ruleset: RuleSet, documents: list) -> dict[int, list[Decision]]:
    """The group rules over `documents` (as received), grouped per series or study: for each
    document (by id), the decisions of the group rules, in file order."""
    found: dict[int, list[Decision]] = {}
    for rule in ruleset.group_rules:
        groups: dict = {}
        for document in documents:
            key = rule.key(document)
            if key is not None:
                groups.setdefault(key, []).append(document)
        for members in groups.values():
            for document, decision in zip(rule.order(members), rule.evaluate(members, trace=True)):
                found.setdefault(id(document), []).append(decision)
    return found


def merge_decisions(instance: Decision, groups: list[Decision]) -> Decision:
    """What becomes of one instance: its instance rules' decision, then its group rules'. A group
    rule's drop or quarantine ends it; its routes add to the instance's; an instance no rule of
    either kind routed keeps the no_destination policy's outcome."""
    if not groups:
        return instance
    destinations = dict(instance.destinations) if instance.outcome == "route" else {}
    outcome, reason, error = instance.outcome, instance.reason, instance.error
    for decision in groups:
        if decision.outcome in ("drop", "quarantine"):
            outcome, reason, error = decision.outcome, decision.reason, decision.error or error
            destinations = {}
            break
        destinations.update(decision.destinations)
    else:
        if destinations:
            outcome, reason = "route", None
    merged = Decision(outcome, reason, destinations, list(instance.rules_fired), list(instance.edits),
                      list(instance.log), error, instance.ended_by, dict(instance.skipped),
                      list(instance.trace or ()), set(instance.branches or ()), unrouted=not destinations and
                      instance.unrouted)
    for decision in groups:
        merged.rules_fired.extend(decision.rules_fired)
        merged.edits.extend(decision.edits)
        merged.log.extend(decision.log)
        merged.skipped.update(decision.skipped)
        merged.trace.extend(decision.trace or ())
        merged.branches.update(decision.branches or ())
    merged.notifications = [*instance.notifications, *(note for decision in groups for note in decision.notifications)]
    return merged


def fill_command_set(document: Document, message: str, response: bool) -> None:
    """What a test's request or response carries in its command set unless the test gives it:
    the command field, and a response's status (pending for C-FIND, C-MOVE and C-GET, success
    for N-CREATE and N-SET)."""
    command_set = document.command_set
    if "CommandField" not in command_set:
        command_set.CommandField = COMMAND_FIELDS[message] | (RESPONSE_BIT if response else 0)
    if response and "Status" not in command_set:
        command_set.Status = PENDING if message.startswith("C-") else SUCCESS


def _source_text(suite: Suite, span: Span) -> str:
    lines = suite.source.splitlines()
    if span.line == span.end_line and span.line <= len(lines):
        return lines[span.line - 1][span.column - 1:span.end_column - 1]
    return "the condition"


def run_suite(suite: Suite, pattern: re.Pattern | None) -> list[TestResult]:
    results = []
    for t_index, test in enumerate(suite.tests):
        if pattern is not None and not pattern.search(test.name):
            continue
        run = _TestRun(suite, t_index, test)
        result = run.run()
        result.decision = run.decision  # kept for coverage
        result.decisions = run.decisions or ([run.decision] if run.decision is not None else [])
        results.append(result)
    return results


# ---- coverage ----------------------------------------------------------------------------


def coverage_lines(suite: Suite, results: list[TestResult]) -> list[str]:
    """Rules no test fired, and branches of the file under test no test took."""
    ruleset = suite.ruleset
    if not ruleset.rules:
        return []  # a library of blocks: its tests apply blocks, no rule can fire
    fired: set[int] = set()
    branches: set[int] = set()
    for result in results:
        for decision in getattr(result, "decisions", ()):
            fired.update(rule.index for rule in decision.rules_fired)
            branches.update(decision.branches or ())
    shown = suite.program.main.path
    arms = [b for b in ruleset.branches if b.description != RULE_FIRED and b.span.file == shown]
    taken = [b for b in arms if b.index in branches]
    lines = [f"coverage of {shown}: {len(fired)}/{len(ruleset.rules)} rules fired, "
             f"{len(taken)}/{len(arms)} branches taken"]
    for rule in ruleset.rules:
        if rule.index not in fired:
            lines.append(f"  {rule.file}:{rule.line}: rule {rule.name!r} never fired")
    # A block's branches are listed once some test ran the block (took one of its branches),
    # as a rule's are once it fired.
    blocks_run = {(b.span.file, b.block) for b in ruleset.branches if b.rule is None and b.index in branches}
    for branch in arms:
        if branch.index in branches:
            continue
        if branch.rule is None and (branch.span.file, branch.block) in blocks_run:
            lines.append(f"  {branch.span.file}:{branch.span.line}: {branch.description} (block {branch.block})")
        elif branch.rule is not None and branch.rule in fired:
            lines.append(f"  {branch.span.file}:{branch.span.line}: {branch.description} "
                         f"(rule {ruleset.rules[branch.rule].name!r})")
    return lines


def why_not_run(suite: Suite) -> str:
    """Why a test file's tests could not run: the rules it tests do not compile, or it has errors."""
    test_file = display_path(suite.test_path)
    errors = suite.errors
    elsewhere = [d for d in errors if d.span is None or d.span.file != test_file]
    if not os.path.isfile(suite.rules_path):
        return f"{display_path(suite.rules_path)} does not exist"
    if elsewhere:
        count = len(elsewhere)
        return f"{display_path(suite.rules_path)} does not compile ({count} error{'s' * (count != 1)} above)"
    count = len(errors)
    return f"it has {count} error{'s' * (count != 1)} (above)"
