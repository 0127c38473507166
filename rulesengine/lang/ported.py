"""Forms that rule files ported from other tools carry, and how each is written here.

People port CTP DicomFilter and DicomAnonymizer scripts, pydicom/deid recipes,
dcm4che coercions and Orthanc Lua. What they paste is a syntax error (or, for a
tag written as a list or a number, a comparison that can never be true); the
finding keeps its error and gets a hint with the rewrite in this language.
"""

from __future__ import annotations

import re

_HEX4 = r"([0-9A-Fa-f]{4})"
# [0028,0301] (CTP), (0010-0010) and (0010.0010), 00180015 (dcm4che, CTP's t="..." attributes).
_TAG_FORMS = (
    re.compile(r"\[\s*" + _HEX4 + r"\s*,\s*" + _HEX4 + r"\s*\]"),
    re.compile(r"\(\s*" + _HEX4 + r"\s*[-.:|/ ]\s*" + _HEX4 + r"\s*\)"),
    re.compile(r"(?<![\w])(?<!\d\.)" + r"([0-9][0-9A-Fa-f]{3})([0-9A-Fa-f]{4})" + r"(?![\w(.])"),
)
_ROOTS = ("DataSet.", "CommandSet.", "FileMeta.", "Association.", "Source.", "Retrieve.")
_STEP = r"(?:[A-Za-z_]\w*|\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)|\[[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\])"
_PATH = r"(" + _STEP + r"(?:(?:\.|::)" + _STEP + r"(?:\[\d+\])?)*)"
# CTP DicomFilter: identifier.method("string"); Java and Python string methods.
_METHOD = re.compile(_PATH + r"\.(equals|equalsIgnoreCase|contains|containsIgnoreCase|startsWith|startswith|"
                     r"endsWith|endswith|matches|isBlank|exists|lower|upper|strip|trim|toLowerCase|toUpperCase)"
                     r"\(\s*(\"(?:\\.|[^\"\\])*\")?\s*\)")
# CTP DicomAnonymizer functions, as @name(...); what does their job here.
_ANONYMIZER = {
    "remove": "delete DataSet.Keyword",
    "empty": "blank DataSet.Keyword",
    "blank": "blank DataSet.Keyword",
    "keep": "nothing: an element stays unless an action removes it",
    "lowercase": "lower(DataSet.Keyword)",
    "uppercase": "upper(DataSet.Keyword)",
    "hashuid": "uid(DataSet.Keyword)",
    "hash": "hash(DataSet.Keyword)",
    "hashname": "hash(DataSet.Keyword)",
    "hashptid": "hash(DataSet.PatientID)",
    "incrementdate": "shift_date(DataSet.Keyword, DAYS)",
    "date": "today()",
    "time": "a time literal such as \"120000\"",
    "append": "set DataSet.Keyword = DataSet.Keyword + \"...\"",
    "initials": "substr(DataSet.PatientName, 1, 1)",
    "if": "if CONDITION { ... } else { ... }",
    "contents": "DataSet.Keyword",
    "value": "DataSet.Keyword",
    "lookup": "lookup(table.column, key)",
    "process": "for each item in DataSet.Sequence { ... }",
    "skip": "nothing: a sequence's items are edited with for each",
}
# pydicom/deid recipe lines: ACTION Keyword [value].
_DEID = re.compile(r"^\s*(REMOVE|BLANK|REPLACE|ADD|KEEP|JITTER)\s+([A-Za-z][\w]*|\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\))"
                   r"(?:\s+(.*?))?\s*$")
# What a CTP DicomAnonymizer element script does, written as an action on `path`.
_ANONYMIZER_ACTIONS = {
    "remove": "delete {path}",
    "empty": "blank {path}",
    "blank": "blank {path}",
    "keep": None,
    "hashuid": "set {path} = uid({path})",
    "hash": "set {path} = hash({path})",
    "hashname": "set {path} = hash({path})",
    "lowercase": "set {path} = lower({path})",
    "uppercase": "set {path} = upper({path})",
    "incrementdate": "set {path} = shift_date({path}, DAYS)",
}
# A CTP DicomAnonymizer script line: <e en="T" t="00100010" n="PatientName">@empty()</e>.
_CTP_ELEMENT = re.compile(r"<e\b([^>]*)>(.*?)</e>")
# deid recipe headers.
_DEID_HEADER = re.compile(r"^\s*(FORMAT\s+dicom|%header|%filter\b.*)\s*$", re.IGNORECASE)
# Orthanc Lua: tags['Modality'] or tags["Modality"], tags.Modality.
_LUA_TAGS = re.compile(r"\btags\s*\[\s*['\"]([A-Za-z][\w]*)['\"]\s*\]")
_OPERATORS = (
    ("&&", "write and"), ("||", "write or"), ("~=", "write != (Lua's ~= is not equal)"), ("===", "write =="),
    ("!==", "write !="),
)


_WINDOW = 240


def _tag(group: str, element: str) -> str:
    return f"({group.upper()},{element.upper()})"


def foreign_tag(text: str) -> str | None:
    """The path for a tag written as another tool writes it (the whole `text`), or None."""
    text = text.strip()
    for form in _TAG_FORMS:
        match = form.fullmatch(text)
        if match:
            return "DataSet." + _tag(*match.groups())
    return None


def _as_path(identifier: str) -> str:
    """A CTP identifier (`Modality`, `[0008,0060]`, `Seq::Item`) as a path of this language."""
    parts = re.split(r"::|\.", identifier)
    steps = []
    for part in parts:
        bracket = re.fullmatch(r"\[" + _HEX4 + "," + _HEX4 + r"\]", part)
        steps.append(_tag(*bracket.groups()) if bracket else part)
    if identifier.startswith(_ROOTS):
        return ".".join(steps)
    # CTP's `::` names the first item of a sequence
    return "DataSet." + ".".join(step + "[1]" if i < len(steps) - 1 and "::" in identifier else step
                                 for i, step in enumerate(steps))


def _method_rewrite(match: re.Match) -> str:
    path, method, argument = _as_path(match.group(1)), match.group(2), match.group(3) or '""'
    lowered = argument.lower()
    return {
        "equals": f"{path} == {argument}",
        "equalsIgnoreCase": f"lower({path}) == {lowered}",
        "contains": f"{path} contains {argument}",
        "containsIgnoreCase": f"lower({path}) contains {lowered}",
        "startsWith": f"{path} startswith {argument}",
        "startswith": f"{path} startswith {argument}",
        "endsWith": f"{path} endswith {argument}",
        "endswith": f"{path} endswith {argument}",
        "matches": f"{path} matches /{argument[1:-1]}/",
        "isBlank": f"missing {path} or empty {path}",
        "exists": f"exists {path}",
        "lower": f"lower({path})", "toLowerCase": f"lower({path})",
        "upper": f"upper({path})", "toUpperCase": f"upper({path})",
        "strip": f"trim({path})", "trim": f"trim({path})",
    }[method]


def line_hint(line: str, column: int) -> str | None:
    """A rewrite for a form from another tool on this line, at or just before `column` (1-based)
    where the parser stopped; None when the line holds none."""
    # Only around the error: a pasted line can be long, and the patterns need not see all of it.
    start = max(0, column - 1 - _WINDOW)
    line, at = line[start:column - 1 + _WINDOW // 2], column - 1 - start
    element = _CTP_ELEMENT.search(line)
    if element:
        return _ctp_element_hint(element.group(1), element.group(2).strip())
    if start == 0 and _DEID_HEADER.match(line):
        return "a deid recipe's header: rule files need none; write each action inside a rule or a block"
    deid = _DEID.match(line) if start == 0 else None
    if deid:
        action, name, value = deid.group(1), deid.group(2), (deid.group(3) or "").strip()
        path = "DataSet." + (_tag(*re.findall(_HEX4, name)) if name.startswith("(") else name)
        if value.startswith(("var:", "func:")):
            value = "a value, a let or a function"
        rewrite = {
            "REMOVE": f"delete {path}",
            "BLANK": f"blank {path}",
            "REPLACE": f"set {path} = {value or 'VALUE'}",
            "ADD": f"set {path} = {_quoted(value) if value else 'VALUE'}",
            "JITTER": f"set {path} = shift_date({path}, DAYS)",
            "KEEP": None,
        }[action]
        if rewrite is None:
            return f"a deid recipe's KEEP: nothing to write, {path} stays unless an action removes it"
        return f"a deid recipe's {action} is written in a rule's actions here: {rewrite}"
    candidates: list[tuple[int, str]] = []
    for match in _METHOD.finditer(line):
        candidates.append((match.start(), f"write {_method_rewrite(match)}"))
    for match in _LUA_TAGS.finditer(line):
        candidates.append((match.start(), f"write DataSet.{match.group(1)}"))
    for form in _TAG_FORMS:
        for match in form.finditer(line):
            candidates.append((match.start(), "write DataSet." + _tag(*match.groups())))
    for match in re.finditer(r"@(\w+)", line):
        instead = _ANONYMIZER.get(match.group(1).lower())
        if instead:
            candidates.append((match.start(), f"@{match.group(1)} is CTP's anonymizer script; here write {instead}"))
        else:
            candidates.append((match.start(), "functions are called by name, without @: name(argument)"))
    for word, hint in _OPERATORS:
        position = line.find(word)
        if position >= 0:
            candidates.append((position, hint))
    before = [c for c in candidates if c[0] <= at]
    if before:
        return max(before)[1]  # the nearest form before the error
    return min(candidates)[1] if candidates else None


def _quoted(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) > 1:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# In CTP's DicomFilter `*` is and, `+` is or and `!` is not.
def operator_hint(operator: str) -> str | None:
    """How a logical operator from another tool is written here; also for a condition used as a
    number in arithmetic (`A * B` where A and B are conditions)."""
    return {"*": "to require both conditions, write and", "+": "to accept either condition, write or",
            "!": "write not", "&": "write and", "|": "write or"}.get(operator)


def _ctp_element_hint(attributes: str, script: str) -> str:
    """The action for one element of a CTP DicomAnonymizer script."""
    tag = re.search(r'\bt="([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})"', attributes)
    name = re.search(r'\bn="([A-Za-z][\w]*)"', attributes)
    path = "DataSet." + (name.group(1) if name else _tag(*tag.groups()) if tag else "Keyword")
    if re.search(r'\ben="F"', attributes):
        return f"CTP does not run this element's script (en=\"F\"): nothing to write for {path}"
    call = re.match(r"@(\w+)\s*\(", script)
    if call:
        action = _ANONYMIZER_ACTIONS.get(call.group(1).lower(), "")
        if action is None:
            return f"CTP's @keep(): nothing to write, {path} stays unless an action removes it"
        if action:
            return _IN_ACTIONS + action.format(path=path)
        return _IN_ACTIONS + f"set {path} = ..."
    if not script:
        return _IN_ACTIONS + f"blank {path}"
    return _IN_ACTIONS + f"set {path} = {_quoted(script)}"


_IN_ACTIONS = "a CTP anonymizer element is written in a rule's or a block's actions here: "
