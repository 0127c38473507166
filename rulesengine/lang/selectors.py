"""The `*` path segment: every element at a level, or those whose own properties pass a filter.

`DataSet.*[VR == "PN"]`, `DataSet.**.*[Keyword endswith "Date"]`. A filter reads the bare names
VR, Keyword, Tag, Group and Creator and the conditions `private` and `public`; it is checked
here (names, literals) and compiled to a predicate the document model calls per element.
Private creator elements (gggg,0010-00FF) are never selected: they name their block, which
`delete private "CREATOR"` removes whole.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from pydicom.datadict import keyword_for_tag
from pydicom.valuerep import VR as _VR

from ..diagnostics import Diagnostic, error
from . import nodes as n
from . import operators as ops
from .regex import RegexError, compile_regex

PROPERTIES = ("VR", "Keyword", "Tag", "Group", "Creator")
CONDITIONS = ("private", "public")
KNOWN_VRS = frozenset(v.value for v in _VR if len(v.value) == 2)
_NAMES_HINT = "a filter reads VR, Keyword, Tag, Group, Creator, private and public"


# ---- text ----------------------------------------------------------------------

def selector_text(condition: n.Expr | None) -> str:
    return "*" if condition is None else f"*[{filter_text(condition)}]"


_LOOSENESS = {n.Or: 0, n.And: 1, n.Not: 2}


def _operand(expr, level: int) -> str:
    text = filter_text(expr)
    return f"({text})" if _LOOSENESS.get(type(expr), 9) <= level else text


def filter_text(expr) -> str:
    """The canonical text of a filter (any expression, so that a wrong one is shown as written)."""
    if isinstance(expr, n.Or):
        return " or ".join(_operand(e, 0) for e in expr.operands)
    if isinstance(expr, n.And):
        return " and ".join(_operand(e, 1) for e in expr.operands)
    if isinstance(expr, n.Not):
        return "not " + _operand(expr.operand, 1)
    if isinstance(expr, n.Binary):
        return f"{_operand(expr.left, 2)} {expr.op} {_operand(expr.right, 2)}"
    if isinstance(expr, n.Matches):
        pattern = "/" + expr.regex.pattern.replace("/", "\\/") + "/" + expr.regex.flags
        return f"{_operand(expr.subject, 2)} {'not matches' if expr.negated else 'matches'} {pattern}"
    if isinstance(expr, n.Variable):
        return expr.name
    if isinstance(expr, n.StringLit):
        return n.quote_string(expr.value)
    if isinstance(expr, n.NumberLit):
        return expr.text
    if isinstance(expr, n.ListLit):
        return "[" + ", ".join(filter_text(e) for e in expr.items) + "]"
    if isinstance(expr, n.PathRef):
        return expr.path.text()
    if isinstance(expr, n.Call):
        return expr.name + "(" + ", ".join(filter_text(a) for a in expr.args) + ")"
    if isinstance(expr, n.Concat):
        return " + ".join(_operand(e, 2) for e in expr.parts)
    if isinstance(expr, n.Presence):
        return f"{expr.kind} {filter_text(expr.target)}"
    if isinstance(expr, n.Quantifier):
        return f"{expr.kind} {expr.var} in {expr.source.text()}: {_operand(expr.body, 1)}"
    return "?"


# ---- checks ----------------------------------------------------------------------

def check(condition: n.Expr | None) -> list[Diagnostic]:
    """Findings on a filter: only the element's properties, literals the properties can hold."""
    diags: list[Diagnostic] = []
    if condition is not None:
        _check(condition, diags, top=True)
    return diags


def _check(expr, diags: list[Diagnostic], top: bool = False) -> None:
    if isinstance(expr, (n.And, n.Or)):
        for operand in expr.operands:
            _check(operand, diags, top=True)
    elif isinstance(expr, n.Not):
        _check(expr.operand, diags, top=True)
    elif isinstance(expr, n.Binary):
        for side in (expr.left, expr.right):
            _check_value(side, diags)
        _check_literals(expr, diags)
    elif isinstance(expr, n.Matches):
        _check_value(expr.subject, diags)
        try:
            compile_regex(expr.regex.pattern, expr.regex.flags)
        except RegexError as exc:
            diags.append(error("bad-regex", str(exc), expr.regex.span, exc.hint))
    elif isinstance(expr, n.Variable) and expr.name in CONDITIONS:
        return
    elif top:
        hint = None
        if isinstance(expr, n.Variable) and expr.name in PROPERTIES:
            hint = f'compare it: {expr.name} == "..."'
        diags.append(error("bad-filter", f"{filter_text(expr)} is not a condition on the element", expr.span,
                           hint or _NAMES_HINT))
    else:
        _check_value(expr, diags)


def _check_value(expr, diags: list[Diagnostic]) -> None:
    if isinstance(expr, n.Variable):
        if expr.name in PROPERTIES:
            return
        if expr.name in CONDITIONS:
            diags.append(error("bad-filter", f"{expr.name} is a condition, not a value", expr.span,
                               f"write it alone: *[{expr.name}]"))
            return
        close = difflib.get_close_matches(expr.name, PROPERTIES + CONDITIONS, n=1, cutoff=0.6)
        folded = {p.lower(): p for p in PROPERTIES + CONDITIONS}.get(expr.name.lower())
        suggestion = folded or (close[0] if close else None)
        diags.append(error("bad-filter", f"a filter knows no {expr.name!r}", expr.span,
                           f"did you mean {suggestion}?" if suggestion else _NAMES_HINT))
    elif isinstance(expr, (n.StringLit, n.RegexLit)):
        return
    elif isinstance(expr, n.NumberLit):
        return
    elif isinstance(expr, n.ListLit):
        for item in expr.items:
            if not isinstance(item, (n.StringLit, n.NumberLit)):
                diags.append(error("bad-filter", "a filter's lists hold literals only", item.span))
    else:
        what = "paths" if isinstance(expr, n.PathRef) else "only properties and literals"
        diags.append(error("bad-filter", f"a filter reads the element's own properties, not {what}" if what ==
                           "paths" else f"a filter compares {what}", expr.span, _NAMES_HINT))


def _literals(expr) -> list:
    if isinstance(expr, (n.StringLit, n.NumberLit)):
        return [expr]
    if isinstance(expr, n.ListLit):
        return [item for item in expr.items if isinstance(item, (n.StringLit, n.NumberLit))]
    return []


def _check_literals(expr: n.Binary, diags: list[Diagnostic]) -> None:
    for name_side, literal_side in ((expr.left, expr.right), (expr.right, expr.left)):
        if not isinstance(name_side, n.Variable) or name_side.name not in PROPERTIES:
            continue
        exact = expr.op in ("==", "!=", "in", "not in")
        for literal in _literals(literal_side):
            if isinstance(literal, n.NumberLit):
                diags.append(error("bad-filter", f"{name_side.name} is text; {literal.text} is a number",
                                   literal.span, f'write it as text: {name_side.name} == "{literal.text}"'))
                continue
            value = literal.value
            if name_side.name == "VR" and exact and value not in KNOWN_VRS:
                close = difflib.get_close_matches(value.upper(), sorted(KNOWN_VRS), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]}?" if close else None
                diags.append(error("bad-filter", f"{value!r} is not a value representation", literal.span,
                                   hint or "VRs are two capital letters such as PN, DA, UI"))
            elif name_side.name == "Group" and exact and not _is_group(value):
                diags.append(error("bad-filter", f"{value!r} is not a group: four hex digits", literal.span,
                                   'for example Group == "0018"'))
            elif name_side.name == "Tag" and exact and not _is_tag(value):
                diags.append(error("bad-filter", f"{value!r} is not a tag", literal.span,
                                   'write it as Tag == "(0010,0010)"'))


def _is_group(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789ABCDEF" for c in text)


def _is_tag(text: str) -> bool:
    return len(text) == 11 and text[0] == "(" and text[5] == "," and text[10] == ")" and \
        _is_group(text[1:5]) and _is_group(text[6:10])


def fixed_vr(condition: n.Expr | None) -> str | None:
    """The one VR every selected element has, when the filter says so (`VR == "DA" and ...`)."""
    if isinstance(condition, n.Binary) and condition.op == "==":
        for a, b in ((condition.left, condition.right), (condition.right, condition.left)):
            if isinstance(a, n.Variable) and a.name == "VR" and isinstance(b, n.StringLit) and \
                    b.value in KNOWN_VRS:
                return b.value
    if isinstance(condition, n.And):
        found = {fixed_vr(operand) for operand in condition.operands} - {None}
        return found.pop() if len(found) == 1 else None
    return None


# ---- evaluation ------------------------------------------------------------------

# A property read off (tag, VR, creator); creator is None for public elements.
_GETTERS: dict[str, Callable[[int, str, Any], Any]] = {
    "VR": lambda tag, vr, creator: vr,
    "Keyword": lambda tag, vr, creator: "" if (tag >> 16) % 2 else keyword_for_tag(tag),
    "Tag": lambda tag, vr, creator: f"({tag >> 16:04X},{tag & 0xFFFF:04X})",
    "Group": lambda tag, vr, creator: f"{tag >> 16:04X}",
    "Creator": lambda tag, vr, creator: creator,
    "private": lambda tag, vr, creator: (tag >> 16) % 2 == 1,
    "public": lambda tag, vr, creator: (tag >> 16) % 2 == 0,
}


def _compile(expr) -> Callable[[int, str, Any], Any]:
    if isinstance(expr, n.Or):
        parts = [_compile(e) for e in expr.operands]
        return lambda *p: any(part(*p) for part in parts)
    if isinstance(expr, n.And):
        parts = [_compile(e) for e in expr.operands]
        return lambda *p: all(part(*p) for part in parts)
    if isinstance(expr, n.Not):
        inner = _compile(expr.operand)
        return lambda *p: not inner(*p)
    if isinstance(expr, n.Binary):
        op, left, right = ops.BINARY[expr.op], _compile(expr.left), _compile(expr.right)
        return lambda *p: op(left(*p), right(*p))
    if isinstance(expr, n.Matches):
        regex = compile_regex(expr.regex.pattern, expr.regex.flags)
        subject, test = _compile(expr.subject), (ops.not_matches if expr.negated else ops.matches)
        return lambda *p: test(subject(*p), regex)
    if isinstance(expr, n.Variable):
        return _GETTERS[expr.name]
    if isinstance(expr, n.StringLit):
        value = expr.value
    elif isinstance(expr, n.NumberLit):
        value = expr.value
    elif isinstance(expr, n.ListLit):
        value = tuple(item.value for item in expr.items)
    else:  # the checks reported it
        raise ValueError(f"not a filter: {filter_text(expr)}")
    return lambda *p: value


@dataclass(eq=False)
class Select:
    """A compiled selector. `passes` is asked once per (tag, VR, creator) and remembered."""

    text: str
    test: Callable[[int, str, Any], Any] | None
    seen: dict = field(default_factory=dict, repr=False)

    def __eq__(self, other) -> bool:
        return isinstance(other, Select) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def passes(self, tag: int, vr: str, creator: str | None) -> bool:
        key = (tag, vr, creator)
        found = self.seen.get(key)
        if found is None:
            if len(self.seen) > 65536:  # creators come from the files: bound what is remembered
                self.seen.clear()
            found = self.seen[key] = self.test is None or bool(self.test(tag, vr, creator))
        return found


def compile_selector(selector: n.Selector) -> Select:
    return Select(selector.text, None if selector.condition is None else _compile(selector.condition))
