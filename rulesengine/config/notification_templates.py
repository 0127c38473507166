"""The templates of notifications (a webhook's JSON body, an e-mail's subject and body).

Jinja2 in its sandbox: a template from the configuration reads the values it is given and
calls the filters, never Python's internals (an attribute or item whose name starts with
`_` is refused when the configuration is read, and by the sandbox when it runs), and has
none of Jinja's globals but `range` (bounded by the sandbox). What a template writes is
bounded too (MAX_OUTPUT_CHARS): a `'x' * 10**9` fails, it does not fill the memory.

In a JSON body every `{{ ... }}` writes a JSON value (a string in quotes, a number, true,
false, null; a list or a mapping as JSON): a value holding quotes, backslashes or new lines
cannot break out of the body. `tojson` gives the same, explicitly. A body that does not
render to valid JSON is found when the configuration is read, rendered with sample values
(`check_template`), or, should only a real value show it, when it is sent: the
notification is dead then, with the reason.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any, Iterable, Mapping

from jinja2 import TemplateError, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

MAX_OUTPUT_CHARS = 1_000_000  # a rendered body or subject, and any string a template builds on the way
KINDS = ("json", "text")  # a webhook's body; an e-mail's subject and body


class TemplateProblem(ValueError):
    """A template that cannot be used: the message says why; `line` is the template's line
    (1-based) when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _JSONText(str):
    """Text that is JSON already (what `tojson` wrote): written as it is."""


def _json_value(value: Any) -> str:
    """What `{{ value }}` writes in a JSON body: the value as JSON."""
    if isinstance(value, _JSONText):
        return value
    if isinstance(value, Undefined):
        return "null"
    return json.dumps(value, ensure_ascii=False, default=str)


def _tojson(value: Any) -> _JSONText:
    return _JSONText("null" if isinstance(value, Undefined) else json.dumps(value, ensure_ascii=False, default=str))


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"the template builds a text longer than {MAX_OUTPUT_CHARS} characters")
    return value


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded (a string repeated, a power), and no globals but range."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("an exponent above 64 is refused in a template")
            return _bounded(operator.pow(left, right))
        if isinstance(left, (str, list)) and isinstance(right, int) and len(left) * right > MAX_OUTPUT_CHARS:
            raise SecurityError(f"the template builds a text longer than {MAX_OUTPUT_CHARS} characters")
        if isinstance(right, (str, list)) and isinstance(left, int) and len(right) * left > MAX_OUTPUT_CHARS:
            raise SecurityError(f"the template builds a text longer than {MAX_OUTPUT_CHARS} characters")
        return operator.mul(left, right)


def _environment(kind: str) -> SandboxedEnvironment:
    options: dict[str, Any] = {"autoescape": False, "keep_trailing_newline": True}
    if kind == "json":
        options["finalize"] = _json_value
    environment = _Sandbox(**options)
    environment.globals.clear()
    environment.globals["range"] = SandboxedEnvironment().globals["range"]  # the sandbox's bounded range
    environment.filters["tojson"] = _tojson
    return environment


_ENVIRONMENTS = {kind: _environment(kind) for kind in KINDS}


def _unsafe_names(tree: nodes.Template) -> Iterable[tuple[str, int]]:
    """Attributes and items named with a leading `_` (Python's internals), with their line."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        if name is not None and name.startswith("_"):
            yield name, node.lineno
    for node in tree.find_all(nodes.Const):  # attr('__class__'), and the like
        if isinstance(node.value, str) and node.value.startswith("__"):
            yield node.value, node.lineno


def parse(source: str, kind: str) -> nodes.Template:
    """The template's tree; TemplateProblem (with the template's line) for a syntax error or a
    name of Python's internals."""
    environment = _ENVIRONMENTS[kind]
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"not a valid template: {exc.message}", exc.lineno) from None
    for name, line in _unsafe_names(tree):
        raise TemplateProblem(f"{name!r}: names starting with _ are refused (templates read values, not Python's "
                              "internals)", line)
    return tree


def names_used(source: str, kind: str) -> set[str]:
    """The values the template reads (the context's keys it names)."""
    return set(meta.find_undeclared_variables(parse(source, kind)))


def render(source: str, kind: str, context: Mapping[str, Any]) -> str:
    """The template rendered with `context`; TemplateProblem saying why it cannot be. A JSON
    body must render to valid JSON; a text is what it writes."""
    parse(source, kind)  # the checks of the configuration, also for a template given otherwise
    environment = _ENVIRONMENTS[kind]
    try:
        text = environment.from_string(source).render(dict(context))
    except SecurityError as exc:
        raise TemplateProblem(f"refused by the template sandbox: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"the template cannot be rendered: {exc}", getattr(exc, "lineno", None)) from None
    except (ArithmeticError, TypeError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        raise TemplateProblem(f"the template cannot be rendered: {type(exc).__name__}: {exc}") from None
    if len(text) > MAX_OUTPUT_CHARS:
        raise TemplateProblem(f"the template writes more than {MAX_OUTPUT_CHARS} characters")
    if kind == "json":
        try:
            json.loads(text)
        except ValueError as exc:
            raise TemplateProblem(f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
                                  "every {{ ... }} writes a JSON value, quotes included; write it outside quotes",
                                  exc.lineno) from None
    return text


def check_template(source: str, kind: str, known: Iterable[str], sample: Mapping[str, Any],
                   refused: Mapping[str, str] = {}) -> None:
    """What reading the configuration checks of a template: its syntax, no internals, only
    `known` names (`refused` names: why not, e.g. patient data not opted in), and rendered
    with `sample` values, valid output. Raises TemplateProblem."""
    used = names_used(source, kind)
    for name in sorted(used):
        if name in refused:
            raise TemplateProblem(f"{name}: {refused[name]}", _line_of_name(source, name))
    unknown = sorted(used - set(known))
    if unknown:
        raise TemplateProblem(f"unknown name{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; a template reads "
                              f"{', '.join(sorted(known))}", _line_of_name(source, unknown[0]))
    render(source, kind, sample)


def _line_of_name(source: str, name: str) -> int | None:
    for number, line in enumerate(source.splitlines(), 1):
        if re.search(rf"\b{re.escape(name)}\b", line):
            return number
    return None
