"""Findings about rule files: where, how bad, what, and how to show them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns are 1-based."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, file: str, line: int, column: int) -> "Span":
        return cls(file, line, column, line, column + 1)

    def to(self, other: "Span") -> "Span":
        """The span from the start of this one to the end of `other`."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column)


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span | None = None
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple:
        s = self.span
        return (s.file, s.line, s.column) if s else ("", 0, 0)

    def location(self) -> str:
        s = self.span
        return f"{s.file}:{s.line}:{s.column}" if s else "<unknown>"

    def one_line(self) -> str:
        text = f"{self.location()}: {self.severity.value} {self.code} {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def to_json(self) -> dict:
        s = self.span
        return {
            "file": s.file if s else None,
            "line": s.line if s else None,
            "column": s.column if s else None,
            "end_line": s.end_line if s else None,
            "end_column": s.end_column if s else None,
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


def error(code: str, message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, span, hint)


def warning(code: str, message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, message, span, hint)


class RulesError(Exception):
    """Raised by the public API when rule files have errors; carries every finding."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        errors = [d for d in self.diagnostics if d.is_error] or self.diagnostics
        summary = errors[0].one_line() if errors else "rule files have errors"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(summary + more)


@dataclass
class SourceCache:
    """Reads source files once so that excerpts can be shown under findings."""

    texts: dict[str, str] = field(default_factory=dict)

    def line(self, file: str, number: int) -> str | None:
        if file not in self.texts:
            try:
                with open(file, encoding="utf-8-sig", errors="replace") as fh:
                    self.texts[file] = fh.read()
            except OSError:
                self.texts[file] = ""
        lines = self.texts[file].splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else None


def render_text(diagnostics: Iterable[Diagnostic], sources: SourceCache | None = None) -> str:
    """One finding per line, each followed by the source line and a caret."""
    sources = sources or SourceCache()
    out: list[str] = []
    for d in diagnostics:
        out.append(d.one_line())
        if d.span is None:
            continue
        text = sources.line(d.span.file, d.span.line)
        if text is None:
            continue
        width = 1
        if d.span.end_line == d.span.line:
            width = max(1, d.span.end_column - d.span.column)
        out.append(f"    {text}")
        out.append("    " + " " * (d.span.column - 1) + "^" * min(width, max(1, len(text) - d.span.column + 1)))
    return "\n".join(out)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diagnostics], indent=2, ensure_ascii=False)


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    """Property values end at ',' and ':' unless escaped."""
    return _github_escape(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """GitHub Actions workflow commands, one annotation per finding."""
    out = []
    for d in diagnostics:
        props = []
        if d.span:
            props = [f"file={_github_property(d.span.file)}", f"line={d.span.line}", f"col={d.span.column}",
                     f"endLine={d.span.end_line}", f"endColumn={d.span.end_column}"]
        props.append(f"title={_github_property(d.code)}")
        message = d.message + (f" ({d.hint})" if d.hint else "")
        out.append(f"::{d.severity.value} {','.join(props)}::{_github_escape(message)}")
    return "\n".join(out)
