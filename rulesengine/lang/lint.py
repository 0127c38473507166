"""Whole-file lint passes over an Analysis, run in order:

- unreachable: rules after a rule that ends evaluation for every document, and
  rules whose condition contradicts itself;
- shadowed: rules whose every match is ended earlier by a narrower-or-equal rule;
- fall-through: documents that can end with no destination (the configured
  no_destination policy then applies);
- loop: routes that could send a document back to the AE title it came from.
- catch-all: a rule without `when` that drops, rejects or quarantines after a rule
  that routes and goes on, so it ends what was routed too.
- group rules (`per series`, `per study`) run apart, over a group's instances: left out of
  the passes above but `loop`; a study rule testing a series or instance attribute outside an
  aggregate reads the first instance only, which is said.
"""

from __future__ import annotations

import dataclasses

from . import nodes as n
from .checks import Analysis, literal_value
from .visitor import walk, walk_actions

_SPAN_FIELDS = {"span", "name_span", "var_span", "else_span", "file_span"}
_ROUTES = (n.RouteAction, n.CopyAction)
_DECIDES = (n.RouteAction, n.CopyAction, n.DropAction, n.RejectAction, n.QuarantineAction)


def lint_program(analysis: Analysis) -> None:
    """The passes run once per message, over the rules that handle it: a C-FIND rule neither
    shadows nor is shadowed by a C-STORE rule. A rule handling several messages is reported once."""
    rules = analysis.program.main.file.rules
    before = len(analysis.diagnostics)
    for message in n.MESSAGES:
        handling = [rule for rule in rules if message in rule.handles and not rule.is_group]
        if not handling:
            continue
        # A fallback rule runs after the others whatever their order: it neither ends nor shadows them.
        ordinary = [rule for rule in handling if not rule.fallback]
        fallbacks = [rule for rule in handling if rule.fallback]
        for lint_pass in (_unreachable, _shadowed, _catch_all_after_routes):
            lint_pass(ordinary, analysis)
        _loops(handling, analysis)
        _fall_through(ordinary + fallbacks, analysis, message, bool(fallbacks))
    groups = [rule for rule in rules if rule.is_group]
    if groups:
        _loops(groups, analysis)
        _first_instance_reads(groups, analysis)
    found = analysis.diagnostics[before:]
    del analysis.diagnostics[before:]
    analysis.diagnostics.extend(dict.fromkeys(found))


# ---- helpers -------------------------------------------------------------------

# Attributes that differ from one series or instance of a study to the next.
_PER_SERIES_KEYWORDS = frozenset({"SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "InstanceNumber",
                                  "SOPInstanceUID", "ImageType", "ProtocolName", "SequenceName",
                                  "BodyPartExamined", "SliceThickness", "ImageOrientationPatient"})


def _outside_aggregates(node):
    """The nodes of an expression that are not inside an aggregate."""
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, n.Aggregate):
            stack.extend(node.children())


def _first_instance_reads(rules: list[n.Rule], analysis: Analysis) -> None:
    for rule in rules:
        if rule.level is None or rule.level.value != "study":
            continue
        complete = rule.clause(n.CompleteWhen)
        for condition in (rule.when, complete.condition if complete else None):
            if condition is None:
                continue
            for node in _outside_aggregates(condition):
                if not (isinstance(node, n.PathRef) and node.path.root == "DataSet" and node.path.elements
                        and node.path.elements[0].keyword in _PER_SERIES_KEYWORDS):
                    continue
                keyword = node.path.elements[0].keyword
                analysis._warn("first-instance", f"{node.path.text()} outside an aggregate reads the first instance "
                               f"of the study only; its {keyword} may differ from series to series", node.span,
                               f"write any({node.path.text()} ...) or all(...) to test every instance")


def structural_key(node):
    """A node's content without positions: equal keys mean the same source meaning."""
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            structural_key(getattr(node, f.name)) for f in dataclasses.fields(node) if f.name not in _SPAN_FIELDS)
    if isinstance(node, (tuple, list)):
        return tuple(structural_key(item) for item in node)
    return node


def _conjuncts(expr) -> list:
    if expr is None:
        return []
    if isinstance(expr, n.And):
        return [atom for operand in expr.operands for atom in _conjuncts(operand)]
    return [expr]


def _ending_action(rule: n.Rule):
    """The first action at the top of a rule that ends evaluation, if any."""
    for action in rule.actions:
        if isinstance(action, n.ENDING_ACTIONS):
            return action
    return None


def _path_key(expr) -> tuple | None:
    if isinstance(expr, n.PathRef):
        return structural_key(expr.path)
    return None


def _comparison(atom):
    """(path key, op, literal) for `PATH op LITERAL`, else None."""
    if isinstance(atom, n.Binary):
        key = _path_key(atom.left)
        literal = literal_value(atom.right)
        if key is not None and literal is not None:
            return key, atom.op, literal
    return None


# ---- unreachable -----------------------------------------------------------------


def _unreachable(rules: list[n.Rule], analysis: Analysis) -> None:
    blocker = None
    for rule in rules:
        if blocker is not None:
            analysis._warn("unreachable", f"rule {rule.name!r} can never run: rule {blocker.name!r} "
                           f"(line {blocker.span.line}) ends evaluation for every document", rule.name_span)
            continue
        contradiction = _contradiction(_conjuncts(rule.when))
        if contradiction:
            analysis._warn("unreachable", f"rule {rule.name!r} can never run: {contradiction}", rule.when.span)
        if rule.when is None and _ending_action(rule) is not None:
            blocker = rule


def _contradiction(atoms: list) -> str | None:
    equal: dict = {}
    presence: dict = {}
    for atom in atoms:
        comparison = _comparison(atom)
        if comparison and comparison[1] == "==":
            key, _, value = comparison
            if key in equal and equal[key] != value:
                return "the condition asks for two different values of the same element"
            equal[key] = value
        if isinstance(atom, n.Presence) and isinstance(atom.target, n.PathRef):
            key = structural_key(atom.target.path)
            kind = "present" if atom.kind in ("exists", "empty") else "missing"
            if presence.get(key, kind) != kind:
                return "the condition asks for an element to be both present and missing"
            presence[key] = kind
    for key, kind in presence.items():
        if kind == "missing" and key in equal:
            return "the condition compares an element it also requires to be missing"
    return None


# ---- shadowed ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Atom:
    """One conjunct of a condition, with what the implication test needs computed once."""

    key: tuple
    comparison: tuple | None  # (path key, op, literal) for PATH op LITERAL
    exists_path: tuple | None  # the path key of `exists PATH`

    @classmethod
    def of(cls, atom) -> "_Atom":
        exists_path = None
        if isinstance(atom, n.Presence) and atom.kind == "exists" and isinstance(atom.target, n.PathRef):
            exists_path = structural_key(atom.target.path)
        return cls(structural_key(atom), _comparison(atom), exists_path)


def _implies(stronger: _Atom, weaker: _Atom) -> bool:
    """Does atom `stronger` (of a later rule) guarantee atom `weaker` (of an earlier one)?"""
    if stronger.key == weaker.key:
        return True
    strong, weak = stronger.comparison, weaker.comparison
    if strong and weak and strong[0] == weak[0]:
        s_op, s_val, w_op, w_val = strong[1], strong[2], weak[1], weak[2]
        if w_op == "in" and isinstance(w_val, tuple):
            if s_op == "==":
                return s_val in w_val
            if s_op == "in" and isinstance(s_val, tuple):
                return set(s_val) <= set(w_val)
        if w_op == "not in" and isinstance(w_val, tuple) and s_op == "==":
            return s_val not in w_val
    if weaker.exists_path is not None and strong:
        return strong[0] == weaker.exists_path and strong[1] in ("==", "in")
    return False


def _paths_read(expr) -> set:
    return {structural_key(node) for node in walk(expr) if isinstance(node, n.Path)}


def _edits(rule: n.Rule) -> set | None:
    """Paths a rule's main-document actions edit; None when it could edit anything."""
    keys = set()
    for action in rule.actions:
        for inner in walk_actions((action,)):
            if isinstance(inner, n.CopyAction):
                continue
            if isinstance(inner, (n.ApplyAction, n.DeletePrivateAction, n.BlankPixelsAction, n.KeepOnlyAction)):
                return None
            if isinstance(inner, (n.AppendAction, n.DeleteItemsAction, n.CopyPathAction)):
                return None  # edits of sequences and copies: counted as editing anything
            if isinstance(inner, n.EDIT_ACTIONS) and isinstance(inner.target, n.PathRef):
                keys.add(structural_key(inner.target.path))
            elif isinstance(inner, n.EDIT_ACTIONS):
                return None
    return keys


def _shadowed(rules: list[n.Rule], analysis: Analysis) -> None:
    atoms = [[_Atom.of(atom) for atom in _conjuncts(rule.when)] for rule in rules]
    edits = [_edits(rule) for rule in rules]
    warned: set[int] = set()
    for i, earlier in enumerate(rules):
        if earlier.when is None or _ending_action(earlier) is None:
            continue
        read = _paths_read(earlier.when)
        for j in range(i + 1, len(rules)):
            between = edits[j - 1] if j > i + 1 else set()
            if between is None or (between & read):
                break  # a rule in between may change what the earlier rule tested
            later = rules[j]
            if j in warned or later.when is None:
                continue
            if all(any(_implies(s, w) for s in atoms[j]) for w in atoms[i]):
                warned.add(j)
                analysis._warn("shadowed", f"rule {later.name!r} never runs: every document it matches is ended "
                               f"by rule {earlier.name!r} (line {earlier.span.line})", later.name_span,
                               "move it above that rule, or narrow that rule's condition")


# ---- fall-through -----------------------------------------------------------------


def _fall_through(rules: list[n.Rule], analysis: Analysis, message: str = n.STORE,
                  has_fallback: bool = False) -> None:
    """`rules` in the order they run: the fallback rule, if any, last."""
    if not rules:
        return
    # What happens to what no rule routes: an instance goes to the no_destination policy, a
    # request is answered with a failure.
    if message == n.STORE:
        subject, what, fate = ("document", "a document that no rule routes, drops, rejects or quarantines",
                               "goes to the configured no_destination policy (quarantine by default)")
    else:
        subject, what, fate = message, f"a {message} that no rule routes, drops or rejects", \
            "is answered with a failure"
    routed_before = False
    for rule in rules:
        for action in rule.actions:
            if isinstance(action, n.StopAction) and not routed_before and not has_fallback:
                analysis._warn("no-destination", "this stop can end evaluation before any rule has routed the "
                               f"{subject}; it then {fate.replace(' the configured', ' the')}",
                               action.span)
            if any(isinstance(a, _ROUTES) for a in walk_actions((action,))):
                routed_before = True
        if rule.when is None and any(isinstance(a, _DECIDES) for a in rule.actions):
            return
    last = rules[-1]
    analysis._warn("no-destination", f"{what} {fate}",
                   last.name_span,
                   "end the file with a rule without `when` that decides, e.g. route to a default destination")


# ---- catch-all after routes -----------------------------------------------------------


_DISCARDS = {n.DropAction: "drop", n.RejectAction: "reject", n.QuarantineAction: "quarantine"}


def _catch_all_after_routes(rules: list[n.Rule], analysis: Analysis) -> None:
    """A rule without `when` that drops, rejects or quarantines, after rules that route and go
    on: it also ends what they routed, and sends it nowhere. Written to catch what no rule
    routed, it catches everything."""
    router = None  # the first rule that routes and lets evaluation go on
    for rule in rules:
        if rule.when is None and router is not None:
            for action in rule.actions:
                word = _DISCARDS.get(type(action))
                if word is None:
                    continue
                analysis._warn(
                    "catch-all", f"this {word} runs for every document, also those that rule {router.name!r} "
                    f"(line {router.span.line}) routed: it sends them nowhere, whatever was routed before",
                    action.span, "end each rule that routes with stop, so that only what no rule routed gets "
                    f"here; or write this rule as fallback rule \"{rule.name}\" {{ ... }}, which runs only when no "
                    "other rule routed the document")
                return
        if rule.when is None and _ending_action(rule) is not None:
            return  # nothing runs after it (unreachable says so)
        inner = list(walk_actions(rule.actions))
        if router is None and any(isinstance(a, _ROUTES) for a in inner) and \
                not any(isinstance(a, n.StopAction) for a in inner):
            router = rule


# ---- loops -----------------------------------------------------------------------


def _excludes_sender(atoms: list, ae_title: str) -> bool:
    for atom in atoms:
        if not isinstance(atom, n.Binary) or not isinstance(atom.left, n.PathRef):
            continue
        if atom.left.path.text() != "Association.CallingAET":
            continue
        value = literal_value(atom.right)
        if atom.op == "==" and isinstance(value, str) and value != ae_title:
            return True
        if atom.op == "!=" and value == ae_title:
            return True
        if atom.op == "in" and isinstance(value, tuple) and ae_title not in value:
            return True
        if atom.op == "not in" and isinstance(value, tuple) and ae_title in value:
            return True
    return False


# What a rule handling each message routes, one and several, for the loop warning's words.
_ROUTED = {n.STORE: ("document", "documents"), "C-FIND": ("query", "queries"), "C-MOVE": ("retrieval", "retrievals"),
           "C-GET": ("retrieval", "retrievals")}


def _routed(rule: n.Rule) -> tuple[str, str]:
    """What the rule routes, in words: one kind of message by its own name; several by one
    name when they share it, else "request" (or "document or request" with C-STORE)."""
    words = {_ROUTED.get(message, ("request", "requests")) for message in rule.handles}
    if len(words) == 1:
        return words.pop()
    if n.STORE in rule.handles:
        return "document or request", "documents or requests"
    return "request", "requests"


def _loops(rules: list[n.Rule], analysis: Analysis) -> None:
    known = analysis.destinations
    if not known:
        return
    for rule in rules:
        atoms = _conjuncts(rule.when)
        for action in walk_actions(rule.actions):
            if not isinstance(action, _ROUTES) or action.back:
                continue
            for name in action.destinations:
                info = known.get(name.value)
                if info is None or not info.ae_title or _excludes_sender(atoms, info.ae_title):
                    continue
                one, several = _routed(rule)
                analysis._warn(
                    "loop", f"this route can send a {one} back to its sender: {name.value} is AE title "
                    f"{info.ae_title}, and {several} from {info.ae_title} also match; the router will not send "
                    "them back", name.span,
                    f"write `route back to {name.value}` to send them back, or add "
                    f"Association.CallingAET != \"{info.ae_title}\" to the condition")
