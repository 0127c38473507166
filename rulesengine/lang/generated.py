"""Generated Python code that a person can read, and tracebacks that name rule-file lines.

A `GeneratedModule` is the Python source the compiler wrote for a rule file, with
where each of its lines came from. Executing it registers the source with
`linecache`, so a traceback through it shows the generated lines;
`rewrite_traceback` goes further, as Jinja's debug module does for templates:
each frame of generated code is replaced by a frame that names the rule file,
the line and the rule (or block), so that `traceback.format_exception` shows the
rule file where the generated code failed.
"""

from __future__ import annotations

import linecache
import sys
from dataclasses import dataclass, field
from types import TracebackType

from ..diagnostics import Span


@dataclass
class GeneratedModule:
    """One generated module: its code's file name, its source, and its lines' origins."""

    filename: str  # the code's file name, which names the rule file: "<rules main.rules #3>"
    source: str
    spans: dict[int, Span] = field(default_factory=dict)  # line -> the node it runs (failure messages)
    places: dict[int, tuple[Span, str]] = field(default_factory=dict)  # line -> (position, "rule 'x'")

    def execute(self, namespace: dict) -> dict:
        """Compile and run the module in `namespace` (which it fills with its functions)."""
        code = compile(self.source, self.filename, "exec")
        lines = self.source.splitlines(keepends=True)
        # No modification time: linecache.checkcache keeps entries without one.
        linecache.cache[self.filename] = (len(self.source), None, lines, self.filename)
        exec(code, namespace)  # noqa: S102 - generated from checked nodes only
        return namespace


def span_of_failure(tb: TracebackType | None, modules: dict[str, GeneratedModule]) -> Span | None:
    """The rule-file span of the innermost line of generated code the traceback passes through."""
    span = None
    while tb is not None:
        module = modules.get(tb.tb_frame.f_code.co_filename)
        if module is not None:
            span = module.spans.get(tb.tb_lineno, span)
        tb = tb.tb_next
    return span


def rewrite_traceback(exc: BaseException, modules: dict[str, GeneratedModule]) -> BaseException:
    """`exc`, its traceback's frames of generated code replaced by frames at their rule-file lines.

    Frames elsewhere (the document model, the operators) are kept as they are; a generated line
    that has no rule-file position keeps its frame, which shows the generated line.
    """
    frames: list[TracebackType] = []
    tb = exc.__traceback__
    while tb is not None:
        module = modules.get(tb.tb_frame.f_code.co_filename)
        place = module.places.get(tb.tb_lineno) if module is not None else None
        fake = _frame_at(exc, *place) if place is not None else None
        frames.append(fake if fake is not None else tb)
        tb = tb.tb_next
    tb_next = None
    for frame in reversed(frames):
        frame.tb_next = tb_next
        tb_next = frame
    return exc.with_traceback(tb_next)


def _frame_at(exc: BaseException, span: Span, label: str) -> TracebackType | None:
    """A traceback entry whose frame runs `span.file` at `span.line`, in a function named `label`."""
    filename = span.file
    # Blank lines put the raise on the rule's line; the code object takes the rule's name.
    code = compile("\n" * (span.line - 1) + "raise __rule_exception__", filename, "exec")
    code = code.replace(co_name=label)
    namespace = {"__name__": filename, "__file__": filename, "__rule_exception__": exc}
    try:
        exec(code, namespace)  # noqa: S102 - only raises
    except BaseException:  # noqa: BLE001 - the exception raised just above
        return sys.exc_info()[2].tb_next
    return None


def position_comment(span: Span | None, file: str | None = None) -> str:
    """The comment a generated line ends with: where in the rule file it comes from."""
    if span is None:
        return f"  # {_printable(file)}" if file else ""
    return f"  # {_printable(span.file)}:{span.line}:{span.column}"


def _printable(text: str) -> str:
    """A file name fit for a comment: no line breaks can end the comment early."""
    return text.replace("\r", " ").replace("\n", " ")
