"""The templates of notifications (a webhook's JSON body, an e-mail's subject and body).

Jinja2 in its sandbox: a template from the configuration reads the values it is given and
calls the filters, never Python's internals (an attribute or item whose name starts with
`_` is refused when the configuration is read, and by the sandbox when it runs), and has
none of Jinja's globals but `range` (bounded by the sandbox), and cannot change a list or a
mapping (the immutable sandbox: no `append` that doubles a list in a loop). What a template
writes is bounded too (MAX_OUTPUT_CHARS): a `'x' * 10**9`, a `~` or `+` that doubles a text, a
`center(10**9)`, a `'%999999999s'`, a `join` of a list of long texts fail before the text is
built, they do not fill the memory; and so is the work of one rendering (MAX_STEPS loop
iterations and calls): nested loops or a macro that calls itself twice fail, they do not hang
the notification sender.

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
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Mapping

from jinja2 import TemplateError, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.visitor import NodeTransformer
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment, SecurityError

from .notification_context import WHOLE

MAX_OUTPUT_CHARS = 1_000_000  # a rendered body or subject, and any string a template builds on the way
MAX_STEPS = 100_000  # loop iterations and calls in one rendering (a real template makes a few dozen)
_BIG_NUMBER = re.compile(r"\d{7,}")  # a width or precision of a format above MAX_OUTPUT_CHARS, at least
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


def _size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """About how many characters `value` writes as text (stops counting past `limit`)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        total = 2
        for item in (value.items() if isinstance(value, dict) else value):
            total += _size(item, limit) + 2
            if total > limit:
                break
        return total
    return 24  # a number, None, a boolean: short


def _too_long() -> SecurityError:
    return SecurityError(f"the template builds a text longer than {MAX_OUTPUT_CHARS} characters")


def _bounded(value: Any) -> Any:
    if _size(value) > MAX_OUTPUT_CHARS:
        raise _too_long()
    return value


def _check_size(projected: int) -> None:
    if projected > MAX_OUTPUT_CHARS:
        raise _too_long()


def _check_format(text: Any) -> None:
    """A format (`%` or `str.format`) whose width or precision alone is too long."""
    if isinstance(text, str) and _BIG_NUMBER.search(text) and any(
            int(number) > MAX_OUTPUT_CHARS for number in _BIG_NUMBER.findall(text)):
        raise SecurityError(f"a width or precision above {MAX_OUTPUT_CHARS} is refused in a template")


# What one rendering may still do: [steps, characters written through {{ ... }}].
_steps_left: ContextVar[list[int] | None] = ContextVar("template_steps_left", default=None)


def _step() -> None:
    left = _steps_left.get()
    if left is not None:
        left[0] -= 1
        if left[0] < 0:
            raise SecurityError(f"the template takes more than {MAX_STEPS} steps (loop iterations and calls)")


def _counted(iterable: Any) -> Iterable[Any]:
    """What a `{% for %}` goes through: each iteration is a step."""
    for item in iterable:
        _step()
        yield item


def _joined(*parts: Any) -> str:
    """`a ~ b`: bounded before it is built (a macro doubling a text 40 times)."""
    _check_size(sum(_size(part) for part in parts))
    return "".join(str(part) for part in parts)


def _bounded_filters() -> dict[str, Any]:
    """Jinja's filters whose output can be far longer than their input, checked first."""
    def center(value, width=80):
        _check_size(max(_size(value), width if isinstance(width, int) else 0))
        return FILTERS["center"](value, width)

    def indent(value, width=4, *args, **kwargs):
        value = str(value)
        prefix = _size(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
        _check_size(len(value) + (value.count("\n") + 1) * prefix)
        return FILTERS["indent"](value, width, *args, **kwargs)

    def replace(eval_ctx, value, old, new, count=None):
        text, old_text = str(value), str(old)
        occurrences = text.count(old_text) if old_text else len(text) + 1
        _check_size(len(text) + occurrences * _size(new))
        return FILTERS["replace"](eval_ctx, value, old, new, count)
    replace.jinja_pass_arg = FILTERS["replace"].jinja_pass_arg  # type: ignore[attr-defined]

    def format_(value, *args, **kwargs):
        _check_format(value)
        _check_size(_size(value) + sum(_size(arg) for arg in (*args, *kwargs.values())))
        return FILTERS["format"](value, *args, **kwargs)

    def join(eval_ctx, value, d="", attribute=None):
        items = list(value)
        _check_size(sum(_size(item) for item in items) + len(items) * _size(d))
        return FILTERS["join"](eval_ctx, items, d, attribute)
    join.jinja_pass_arg = FILTERS["join"].jinja_pass_arg  # type: ignore[attr-defined]

    def wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None, *args, **kwargs):
        _check_size(len(str(s)) * (1 + _size(wrapstring or "")))
        return FILTERS["wordwrap"](environment, s, width, break_long_words, wrapstring, *args, **kwargs)
    wordwrap.jinja_pass_arg = FILTERS["wordwrap"].jinja_pass_arg  # type: ignore[attr-defined]

    def string(value):
        return FILTERS["string"](_bounded(value))

    def pprint(value):
        return FILTERS["pprint"](_bounded(value))

    return {"center": center, "indent": indent, "replace": replace, "format": format_, "join": join,
            "wordwrap": wordwrap, "string": string, "pprint": pprint, "tojson": lambda value: _tojson(_bounded(value)),
            "__counted": _counted, "__joined": _joined}


class _Bounder(NodeTransformer):
    """Puts every loop's iterable through `__counted` and every `~` through `__joined`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "__counted", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.Tuple(node.nodes, "load", lineno=node.lineno), "__joined_tuple", [], [], None,
                            None, lineno=node.lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*`, `**`, `+` and `%` bounded (a string repeated, a power, a
    string doubled, a format's width), each call a step, and no globals but range."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("an exponent above 64 is refused in a template")
            return _bounded(operator.pow(left, right))
        if operator_name == "+":
            if not isinstance(left, (int, float)) or not isinstance(right, (int, float)):
                _check_size(_size(left) + _size(right))
            return operator.add(left, right)
        if operator_name == "%":
            if isinstance(left, str):
                _check_format(left)
                _check_size(_size(left) + _size(right))
            return operator.mod(left, right)
        if isinstance(left, (str, list, tuple)) and isinstance(right, int):
            _check_size(_size(left) * right)
        if isinstance(right, (str, list, tuple)) and isinstance(left, int):
            _check_size(_size(right) * left)
        return operator.mul(left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - the sandbox's own signature
        _step()
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(value.__self__)
            _check_size(_size(value.__self__) + sum(_size(arg) for arg in (*args, *kwargs.values())))
            return _bounded(wrapped(*args, **kwargs))
        return checked


def _written(value: Any) -> Any:
    """What `{{ ... }}` writes, checked before it is written: alone, and with what the rendering
    wrote before (a loop writing a long text each time; a macro's output is counted again where
    it is written, hence the margin)."""
    _bounded(value)
    left = _steps_left.get()
    if left is not None:
        left[1] -= _size(value)
        if left[1] < 0:
            raise SecurityError(f"the template writes more than {MAX_OUTPUT_CHARS} characters")
    return value


def _finalized(kind: str):
    if kind == "json":
        return lambda value: _json_value(_written(value))
    return _written


def _environment(kind: str) -> SandboxedEnvironment:
    options: dict[str, Any] = {"autoescape": False, "keep_trailing_newline": True, "finalize": _finalized(kind)}
    environment = _Sandbox(**options)
    environment.globals.clear()
    environment.globals["range"] = SandboxedEnvironment().globals["range"]  # the sandbox's bounded range
    environment.filters.update(_bounded_filters())
    environment.filters["__joined_tuple"] = lambda parts: _joined(*parts)
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
    steps = _steps_left.set([MAX_STEPS, 10 * MAX_OUTPUT_CHARS])
    try:
        tree = _Bounder().visit(environment.parse(source))
        text = environment.from_string(tree).render(dict(context))
    except SecurityError as exc:
        raise TemplateProblem(f"refused by the template sandbox: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"the template cannot be rendered: {exc}", getattr(exc, "lineno", None)) from None
    except (ArithmeticError, LookupError, AttributeError, TypeError, ValueError, RecursionError, MemoryError) as exc:
        raise TemplateProblem(f"the template cannot be rendered: {type(exc).__name__}: {exc}") from None
    finally:
        _steps_left.reset(steps)
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
                   refused: Mapping[str, str] = {}, fields: Mapping[str, Iterable[str]] = {},
                   unknown_field: Callable[[str, str], str] | None = None) -> None:
    """What reading the configuration checks of a template: its syntax, no internals, only
    `known` names, only the `fields` of a path's root (`DataSet.Modality`, also written
    `DataSet["Modality"]` or `notification.DataSet.Modality`; `unknown_field(root, name)`
    says why another is not), and rendered with `sample` values, valid output. A `refused`
    name (why not: e.g. patient data not opted in) is refused wherever the template names it:
    bare, as a path's field, an attribute, an item, or a text (`attr("PatientName")`).
    Raises TemplateProblem."""
    tree = parse(source, kind)
    # Jinja's compiler folds constants in the tree as it goes: `"Patient" ~ "Name"` is then a name too.
    used = set(meta.find_undeclared_variables(tree))
    for name, line, label in _names_anywhere(tree):
        if name in refused:
            raise TemplateProblem(f"{label}: {refused[name]}", line)
    unknown = sorted(used - set(known))
    if unknown:
        raise TemplateProblem(f"unknown name{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; a template reads "
                              f"{', '.join(sorted(known))}", _line_of_name(source, unknown[0]))
    for root, name, line in _path_fields(tree, fields):
        if name not in set(fields[root]):
            why = unknown_field(root, name) if unknown_field is not None else f"a notification gives {root}." + \
                ", ".join(fields[root])
            raise TemplateProblem(f"{root}.{name}: {why}", line)
    render(source, kind, sample)


def _names_anywhere(tree: nodes.Template) -> Iterable[tuple[str, int, str]]:
    """Every name the template could reach a value by: (name, line, how it is written)."""
    for node in tree.find_all(nodes.Name):
        yield node.name, node.lineno, node.name
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = _field_name(node)
        if name is not None:
            yield name, node.lineno, _written_as(node)
    for node in tree.find_all(nodes.Const):
        if isinstance(node.value, str):
            yield node.value, node.lineno, repr(node.value)


def _written_as(node: nodes.Node) -> str:
    """`notification.DataSet.PatientName` for the node of that path (`?` for what is not a name)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        return f"{_written_as(node.node)}.{_field_name(node) or '?'}"
    return "?"


def _field_name(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    return node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None


_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})  # DataSet.get("Modality"): a mapping's own


def _path_fields(tree: nodes.Template, fields: Mapping[str, Iterable[str]]) -> Iterable[tuple[str, str, int]]:
    """(root, field, line) of each path the template writes: `Root.Field`, `Root["Field"]`, and
    through the whole mapping, `notification.Root.Field`."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        owner, name = node.node, _field_name(node)
        if name is None or name in _MAPPING_METHODS:
            continue
        if isinstance(owner, nodes.Name) and owner.name in fields:
            yield owner.name, name, node.lineno
        elif isinstance(owner, (nodes.Getattr, nodes.Getitem)) and isinstance(owner.node, nodes.Name) \
                and owner.node.name == WHOLE and _field_name(owner) in fields:
            yield str(_field_name(owner)), name, node.lineno


def _line_of_name(source: str, name: str) -> int | None:
    for number, line in enumerate(source.splitlines(), 1):
        if re.search(rf"\b{re.escape(name)}\b", line):
            return number
    return None
