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
import traceback
import weakref
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

    def execute(self, namespace: dict, rule_sources: dict[str, str] | None = None) -> dict:
        """Compile and run the module in `namespace` (which it fills with its functions).

        `rule_sources` (rule file -> text) are registered too: a traceback then shows the
        rule-file lines the rules were compiled from, even when the file changed since or
        the rules never were a file.
        """
        code = compile(self.source, self.filename, "exec")
        _register(self.filename, self.source)
        for filename, text in (rule_sources or {}).items():
            _register(filename, text)
        exec(code, namespace)  # noqa: S102 - generated from checked nodes only
        return namespace


    def forget_with(self, owner: object) -> None:
        """Drop the source from linecache once `owner` (what runs the code) is gone: a router
        that reloads its rules, or a test suite that compiles thousands, would otherwise keep them all."""
        weakref.finalize(owner, linecache.cache.pop, self.filename, None)


def _register(filename: str, text: str) -> None:
    # No modification time: linecache.checkcache keeps such entries instead of reading the disk.
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)


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
    # A decision keeps the exception: its frames should not keep the document they were editing.
    traceback.clear_frames(tb_next)
    return exc.with_traceback(tb_next)


def _frame_at(exc: BaseException, span: Span, label: str) -> TracebackType | None:
    """A traceback entry whose frame runs `span.file` at `span.line`, in a function named `label`."""
    filename = span.file
    # Blank lines put the raise on the rule's line, and under an `if` it starts at the node's
    # column and spans its width, which the traceback underlines; the code takes the rule's name.
    width = span.end_column - span.column if span.end_line == span.line else 0
    statement = "raise (e" + " " * (width - 9) + ")" if width >= 9 else "raise e"
    if span.column > len("if 1: "):
        text = "\n" * (span.line - 1) + "if 1:" + " " * (span.column - 1 - len("if 1:")) + statement
    elif span.line > 1:
        text = "\n" * (span.line - 2) + "if 1:\n" + " " * max(span.column - 1, 1) + statement
    else:
        text = "raise e"
    code = compile(text, filename, "exec")
    code = code.replace(co_name=label)
    namespace = {"__name__": filename, "__file__": filename, "e": exc}
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
