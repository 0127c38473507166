"""Regular expressions of the language, matched by RE2 in time linear in the text.

A pattern runs against whatever a sender put in a data set. With a backtracking
engine, `/^(a+)+$/` against a 31-character PatientID takes half a minute, in
the listener when the rules can reject; RE2 never backtracks. What it cannot do
for that reason (backreferences, lookaround, atomic groups, possessive
quantifiers, conditionals) is reported when the rule file is checked, with the
reason and the position, rather than left to surprise at run time.

The pattern a rule file writes is RE2's syntax, with the language's flags (i, m,
s as inline flags; x, which RE2 lacks, by dropping spaces and # comments here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import re2

FLAG_LETTERS = "imsx"
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every bad pattern on standard error

# RE2's own message for what it lacks by design -> the reason, in plain words.
_LINEAR_ONLY = "regular expressions are matched by RE2, in time linear in the text, which rules it out"
_UNSUPPORTED_GROUPS = {
    "(?=": "a lookahead (?=...) is not supported",
    "(?!": "a negative lookahead (?!...) is not supported",
    "(?<=": "a lookbehind (?<=...) is not supported",
    "(?<!": "a negative lookbehind (?<!...) is not supported",
    "(?>": "an atomic group (?>...) is not supported",
    "(?(": "a conditional (?(...)...) is not supported",
    "(?P=": "a backreference (?P=name) is not supported",
}
_OCTAL = "01234567"


class RegexError(Exception):
    """A pattern RE2 cannot compile. `offset` is 0-based in the pattern as written."""

    def __init__(self, message: str, offset: int = 0, hint: str | None = None):
        super().__init__(message)
        self.message, self.offset, self.hint = message, offset, hint


@dataclass(frozen=True, eq=False)
class Regex:
    """A compiled pattern: `search` and `sub` as re's, matched by RE2."""

    pattern: str  # as written in the rule file
    flags: str
    compiled: object  # re2's compiled pattern
    found: Callable[[str], bool] = field(init=False, repr=False)  # is there a match? (for `matches`)

    def __post_init__(self):
        object.__setattr__(self, "found", _finder(self.compiled))

    def search(self, value: str):
        """The first match (re2's match object), or None."""
        return self.compiled.search(value)

    @property
    def groups(self) -> int:
        return self.compiled.groups

    @property
    def groupindex(self) -> dict[str, int]:
        return self.compiled.groupindex

    def sub(self, replacement: str, value: str) -> str:
        """Every match replaced; in `replacement`, \\1 or \\g<1> or \\g<name> is a group."""
        pieces = replacement_pieces(replacement, self.groups, tuple(self.groupindex.items()))
        if len(pieces) == 1 and isinstance(pieces[0], str):
            literal = pieces[0]
            return self.compiled.sub(lambda match: literal, value)
        return self.compiled.sub(
            lambda match: "".join(p if isinstance(p, str) else (match.group(p) or "") for p in pieces), value)

    def __repr__(self) -> str:
        return f"/{self.pattern}/{self.flags}"


def _finder(compiled):
    """found(text) -> bool, for `matches` on the hot path.

    RE2's own Match, called without the Python wrapper's generator and offset
    decoding that a boolean answer does not need: about 0.5 µs instead of 3 µs
    a call. The wrapper's search where a release of google-re2 lacks it."""
    match = getattr(getattr(compiled, "_regexp", None), "Match", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if match is None or anchor is None:
        return lambda value: compiled.search(value) is not None

    def found(value: str) -> bool:
        data = value.encode("utf-8", "surrogatepass")
        return match(anchor, data, 0, len(data))[0][0] != -1
    return found


def compile_regex(pattern: str, flags: str = "") -> Regex:
    """Compile a rule file's pattern with its flags. Raises RegexError."""
    translated, origin = _translate(pattern, "x" in flags)
    inline = "".join(letter for letter in "ims" if letter in flags)
    prefix = f"(?{inline})" if inline else ""
    try:
        compiled = re2.compile(prefix + translated, _OPTIONS)
    except re2.error as exc:
        raise _explain(exc, translated, origin, pattern) from None
    return Regex(pattern, flags, compiled)


def _translate(pattern: str, verbose: bool) -> tuple[str, list[int]]:
    """The pattern for RE2, and for each of its characters the offset it came from.

    Also refuses what RE2 would read differently from the way it is usually meant
    (a backreference \\12 that RE2 takes for an octal escape, {,n})."""
    out: list[str] = []
    origin: list[int] = []
    in_class = False
    i, size = 0, len(pattern)

    def keep(text: str, at: int) -> None:
        out.append(text)
        origin.extend([at] * len(text))

    while i < size:
        ch = pattern[i]
        if ch == "\\":
            escape = pattern[i:i + 2]
            nxt = escape[1:]
            if nxt in "123456789" and nxt and not (len(pattern[i + 1:i + 4]) == 3 and
                                                 all(c in _OCTAL for c in pattern[i + 1:i + 4])):
                reference = "\\" + re.match(r"\d\d?", pattern[i + 1:]).group()
                raise RegexError(f"a backreference {reference} is not supported: {_LINEAR_ONLY}", i,
                                 "match the text itself, or test the parts separately")
            if nxt == "C":
                raise RegexError("\\C (any byte) is not supported: it can split a character in two", i,
                                 "use . for any character")
            keep(escape, i)
            i += len(escape)
            continue
        if in_class:
            if pattern.startswith("[:", i) and ":]" in pattern[i + 2:]:  # [[:alpha:]]
                end = pattern.index(":]", i + 2) + 2
                keep(pattern[i:end], i)
                i = end
                continue
            if ch == "]" and not _class_start(pattern, i):
                in_class = False
            keep(ch, i)
        elif ch == "[":
            in_class = True
            keep(ch, i)
        elif verbose and ch in " \t\r\n\f\v":
            pass
        elif verbose and ch == "#":
            break  # a comment runs to the end of the pattern (a pattern is one line)
        elif ch == "{" and re.match(r"\{,\d+\}", pattern[i:]):
            raise RegexError("{,n} is read as literal text by RE2", i, "write {0,n} for 0 to n times")
        else:
            keep(ch, i)
        i += 1
    return "".join(out), origin


def _class_start(pattern: str, i: int) -> bool:
    """True when the ] at i is the first character of a class ([]a] or [^]a]), so a literal."""
    j = i - 1
    if j >= 0 and pattern[j] == "^":
        j -= 1
    return j >= 0 and pattern[j] == "[" and (j == 0 or pattern[j - 1] != "\\")


def _explain(exc: re2.error, translated: str, origin: list[int], pattern: str) -> RegexError:
    """RE2's error ("missing ): (abc") as a finding: the reason, and where in the pattern."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    what, _, fragment = text.partition(": ")
    at = _find(translated, fragment)
    offset = origin[at] if 0 <= at < len(origin) else 0
    hint = None
    if what == "invalid perl operator":
        found = [(where, opening) for opening in _UNSUPPORTED_GROUPS
                 for where in [_find(translated, opening)] if where >= 0]
        if found:
            where, opening = min(found, key=lambda f: (f[0], -len(f[1])))
            return RegexError(f"{_UNSUPPORTED_GROUPS[opening]}: {_LINEAR_ONLY}", origin[where],
                              "test the parts separately, e.g. with `and not ... matches`")
        message = f"unknown group syntax {fragment}"
    elif what == "bad repetition operator" and fragment.endswith("+") and len(fragment) >= 2:
        return RegexError(f"a possessive quantifier {fragment} is not supported: RE2 never backtracks, "
                          "so it is not needed", offset, f"write {fragment[:-1]}")
    elif what == "invalid escape sequence":
        message = f"unknown escape {fragment}"
        hint = {"\\Z": "write \\z for the end of the text", "\\u": "write \\x{00E9} for a character by its code",
                "\\U": "write \\x{1F600} for a character by its code"}.get(fragment[:2])
    elif what == "invalid repetition size":
        message = f"repetition count too large in {fragment} (at most 1000 in all)"
    elif what.startswith("pattern too large"):
        message = "the pattern is too large for RE2's memory limit"
        hint = "use smaller repetition counts"
    else:
        message = f"{what} in {fragment}" if fragment else what
    return RegexError(message, offset, hint)


def _find(translated: str, fragment: str) -> int:
    """Where RE2's fragment is: its first occurrence that is not itself escaped (-1: none)."""
    start = 0
    while fragment:
        at = translated.find(fragment, start)
        if at < 0:
            return -1
        backslashes = len(translated[:at]) - len(translated[:at].rstrip("\\"))
        if backslashes % 2 == 0:
            return at
        start = at + 1
    return -1


@lru_cache(maxsize=1024)
def replacement_pieces(replacement: str, groups: int, names: tuple[tuple[str, int], ...]) -> tuple:
    """A replacement as literal text and group numbers. Raises RegexError.

    \\1 to \\99, \\g<1> and \\g<name> are groups (empty when a group took no part);
    \\\\ is a backslash; \\n, \\t, \\r are a new line, a tab, a carriage return."""
    named = dict(names)
    pieces: list = []
    literal: list[str] = []
    i, size = 0, len(replacement)
    while i < size:
        ch = replacement[i]
        if ch != "\\":
            literal.append(ch)
            i += 1
            continue
        nxt = replacement[i + 1:i + 2]
        group: int | None = None
        if nxt == "":
            raise RegexError("a replacement cannot end with a single backslash", i, "write \\\\ for a backslash")
        if nxt.isdigit() and nxt != "0":
            digits = nxt + (replacement[i + 2] if replacement[i + 2:i + 3].isdigit() else "")
            group, i = int(digits), i + 1 + len(digits)
        elif nxt == "g":
            m = re.match(r"<([^>]*)>", replacement[i + 2:])
            if m is None:
                raise RegexError("\\g needs a group in angle brackets: \\g<1> or \\g<name>", i)
            name = m.group(1)
            if name.isdigit():
                group = int(name)
            elif name in named:
                group = named[name]
            else:
                raise RegexError(f"the pattern has no group named {name!r}", i)
            i += 2 + m.end()
        elif nxt in "ntr\\":
            literal.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[nxt])
            i += 2
            continue
        elif nxt.isascii() and nxt.isalnum():
            raise RegexError(f"unknown escape \\{nxt} in a replacement", i, "write \\\\ for a backslash")
        else:
            literal.append(replacement[i:i + 2])
            i += 2
            continue
        if group > groups:
            raise RegexError(f"the replacement refers to group {group}; the pattern has "
                             f"{groups} group{'s' * (groups != 1)}", i)
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(group)
    if literal or not pieces:
        pieces.append("".join(literal))
    return tuple(pieces)
