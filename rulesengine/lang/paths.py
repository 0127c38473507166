"""Paths against the DICOM dictionary: keywords, tags, private tags, items, values.

A path in a rule file (nodes.Path) resolves to a ResolvedPath: the same steps
with tags, VRs and VMs filled in from the dictionary. The document model walks
ResolvedPaths; the checks use them for types and "did you mean" suggestions.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import lru_cache

from pydicom import datadict

from ..diagnostics import Diagnostic, error
from . import nodes as n
from .selectors import Select, check as check_selector, compile_selector, fixed_vr

DATASET, COMMAND_SET, FILE_META = "DataSet", "CommandSet", "FileMeta"
ASSOCIATION, SOURCE, RETRIEVE = "Association", "Source", "Retrieve"
ARRIVAL = "Arrival"
DOCUMENT_ROOTS = (DATASET, COMMAND_SET, FILE_META)
ARRIVAL_FIELDS = {
    ASSOCIATION: ("CallingAET", "CalledAET", "PeerAddress", "PeerPort"),
    SOURCE: ("Name", "Kind", "Path"),
    # An instance retrieved for a C-MOVE or C-GET: who asked, where it goes, by which message.
    RETRIEVE: ("Requester", "MoveDestination", "Message"),
    # When the document arrived, in local time: a DA, a TM, a DT and the day's English name.
    ARRIVAL: ("Date", "Time", "DateTime", "Weekday"),
}
ROOTS = DOCUMENT_ROOTS + tuple(ARRIVAL_FIELDS)
READ_ONLY_ROOTS = (COMMAND_SET, FILE_META, ASSOCIATION, SOURCE, RETRIEVE, ARRIVAL)
# The VR of each arrival time field (Weekday is text).
ARRIVAL_TIME_VRS = {"Date": "DA", "Time": "TM", "DateTime": "DT"}


@dataclass(frozen=True, slots=True)
class ElementInfo:
    tag: int
    keyword: str
    name: str
    vr: str
    vm: str
    retired: bool
    mask: str | None = None  # a repeating-group element: its tag with x digits, e.g. "60xx3000"

    @property
    def tag_text(self) -> str:
        """(gggg,eeee), or the mask of a repeating-group element: (60xx,3000)."""
        if self.mask is not None:
            return f"({self.mask[:4]},{self.mask[4:]})"
        return tag_text(self.tag)


@dataclass(frozen=True, slots=True)
class Step:
    """One element of a resolved path."""

    text: str
    tag: int | None = None
    mask: tuple[int, int] | None = None
    private: tuple[int, str, int] | None = None
    index: int | str | None = None  # 1-based item or value number, or n.STAR
    any_depth: bool = False
    vr: str | None = None
    vm: str | None = None
    select: Select | None = None  # `*[FILTER]`: every element that passes

    @property
    def is_sequence(self) -> bool:
        return self.vr == "SQ"


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """A path ready for the document model: a root, and steps (or an arrival field)."""

    root: str
    steps: tuple[Step, ...] = ()
    field: str | None = None
    text: str = ""
    # Derived once, read on every evaluation:
    fans_out: bool = dataclass_field(default=False, compare=False)
    direct_tag: int | None = dataclass_field(default=None, compare=False)  # one plain keyword or tag
    multi: bool = dataclass_field(default=False, compare=False)  # the dictionary allows several values

    def __post_init__(self):
        steps = self.steps
        object.__setattr__(self, "fans_out", any(s.index == n.STAR or s.any_depth or s.select is not None
                                                 or (s.private is not None and s.private[2] is None)
                                                 for s in steps))
        if len(steps) == 1 and steps[0].tag is not None and steps[0].index is None and not steps[0].any_depth:
            object.__setattr__(self, "direct_tag", steps[0].tag)
            object.__setattr__(self, "multi", steps[0].vm is not None and steps[0].vm != "1")

    @property
    def last(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def is_arrival(self) -> bool:
        return self.field is not None


# ---- the dictionary --------------------------------------------------------------


def _info(tag: int, entry, mask: str | None = None) -> ElementInfo:
    vr, vm, name, retired, keyword = entry
    return ElementInfo(tag, keyword, name, vr, vm, bool(retired), mask)


def _repeater_info(mask_text: str, entry) -> ElementInfo:
    mask_text = mask_text.lower()
    return _info(int(mask_text.replace("x", "0"), 16), entry, mask_text)


@lru_cache(maxsize=None)
def _repeater_keywords() -> dict[str, ElementInfo]:
    """Keywords of repeating-group elements such as OverlayData (60xx,3000)."""
    return {entry[4]: _repeater_info(mask_text, entry)
            for mask_text, entry in datadict.RepeatersDictionary.items() if entry[4]}


def lookup_keyword(keyword: str) -> ElementInfo | None:
    tag = datadict.tag_for_keyword(keyword)
    if tag is not None:
        return _info(tag, datadict.DicomDictionary[tag])
    return _repeater_keywords().get(keyword)


def lookup_tag(tag: int) -> ElementInfo | None:
    entry = datadict.DicomDictionary.get(tag)
    if entry is not None:
        return _info(tag, entry)
    try:
        return _info(tag, datadict.get_entry(tag))  # repeaters
    except KeyError:
        return None


@lru_cache(maxsize=None)
def _all_keywords() -> tuple[str, ...]:
    return tuple(sorted(set(datadict.keyword_dict) | set(_repeater_keywords())))


@lru_cache(maxsize=4096)
def suggest_keywords(word: str) -> tuple[str, ...]:
    keywords = _all_keywords()
    folded = {k.lower(): k for k in keywords}
    if word.lower() in folded:
        return (folded[word.lower()],)
    return tuple(difflib.get_close_matches(word, keywords, n=3, cutoff=0.75))


def lookup_mask(mask: str) -> list[ElementInfo]:
    """Elements whose tag a mask such as 60xx3000 (x: any hex digit) can name, as the language's
    tag masks do: repeating-group elements (shown with their own mask) and single elements."""
    mask = mask.lower()

    def overlaps(other: str) -> bool:
        return all(a == b or a == "x" or b == "x" for a, b in zip(mask, other))
    found = [_repeater_info(m, entry) for m, entry in datadict.RepeatersDictionary.items() if overlaps(m.lower())]
    found += [_info(tag, entry) for tag, entry in datadict.DicomDictionary.items() if overlaps(f"{tag:08x}")]
    return sorted(found, key=lambda info: (info.tag, info.mask or ""))


def lookup_name(text: str) -> list[ElementInfo]:
    """For `dicom-rules dict`: a keyword, a tag like (0010,0010) or 00100010, a tag mask like
    (60xx,3000), or words of a name."""
    cleaned = text.strip().strip("()").replace(",", "").replace(" ", "")
    if len(cleaned) == 8 and "x" in cleaned.lower() and all(c in "0123456789abcdefx" for c in cleaned.lower()):
        return lookup_mask(cleaned)
    if len(cleaned) == 8:
        try:
            info = lookup_tag(int(cleaned, 16))
        except ValueError:
            info = None
        if info is not None:
            return [info]
    info = lookup_keyword(text.strip())
    if info is None:
        folded = {k.lower(): k for k in _all_keywords()}.get(text.strip().lower())
        info = lookup_keyword(folded) if folded else None
    if info is not None:
        return [info]
    words = text.lower().split()
    matches = [
        _info(tag, entry) for tag, entry in datadict.DicomDictionary.items()
        if words and all(w in entry[2].lower() for w in words)
    ]
    return sorted(matches, key=lambda i: i.tag)


def private_vr(group: int, creator: str, offset: int) -> str | None:
    try:
        return datadict.private_dictionary_VR((group << 16) | 0x1000 | offset, creator)
    except KeyError:
        return None


# ---- resolution ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding:
    """What a loop variable stands for: an item of a sequence, or one element value."""

    kind: str  # "item" | "value"
    source: ResolvedPath | None = None


def resolve(path: n.Path, bindings: dict[str, Binding] | None = None) -> tuple[ResolvedPath | None, list[Diagnostic]]:
    """Resolve a path node; returns (resolved or None, findings)."""
    bindings = bindings or {}
    diags: list[Diagnostic] = []
    root = path.root
    text = path.text()
    if root in ARRIVAL_FIELDS:
        return _resolve_arrival(path, text, diags)
    if root not in DOCUMENT_ROOTS:
        binding = bindings.get(root)
        if binding is None:
            diags.append(_unknown_root(path))
            return None, diags
        if binding.kind == "value":
            diags.append(error("bad-path", f"{root} is one value, not an item: it has no elements",
                               path.span, f"compare {root} itself"))
            return None, diags
    steps: list[Step] = []
    for position, element in enumerate(path.elements):
        is_last = position == len(path.elements) - 1
        step = _resolve_element(element, root, diags)
        if step is None:
            return None, diags
        if len(element.indices) > 1:
            diags.append(error("bad-path", "one index per element: write Seq[1].Element[2]", element.span))
            return None, diags
        if step.select is not None and not is_last:
            diags.append(error("bad-path", f"{element.text()} selects elements; nothing can follow it in a path",
                               element.span, "end the path with it, e.g. DataSet.**.*[VR == \"PN\"]"))
            return None, diags
        if not is_last:
            if step.vr is not None and step.vr != "SQ":
                diags.append(error("bad-path", f"{element.text()} is not a sequence ({step.vr}), so nothing "
                                   "can follow it in a path", element.span))
                return None, diags
            if step.index is None:
                name = step.text.lstrip("*.")
                diags.append(error("bad-path", f"say which item of {name}: {name}[1] for the first, "
                                   f"{name}[*] for every item", element.span))
                return None, diags
        steps.append(step)
    if not steps:
        diags.append(error("bad-path", "a path names an element after the root", path.span))
        return None, diags
    return ResolvedPath(root, tuple(steps), None, text), diags


def _unknown_root(path: n.Path) -> Diagnostic:
    close = difflib.get_close_matches(path.root, ROOTS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "a path starts with " + ", ".join(ROOTS)
    return error("unknown-name", f"unknown name {path.root!r}", path.span, hint)


def _resolve_arrival(path: n.Path, text: str, diags: list[Diagnostic]):
    fields = ARRIVAL_FIELDS[path.root]
    element = path.elements[0]
    if len(path.elements) != 1 or element.keyword is None or element.indices or element.any_depth:
        diags.append(error("bad-path", f"{path.root} has only the fields {', '.join(fields)}", path.span))
        return None, diags
    if element.keyword not in fields:
        close = difflib.get_close_matches(element.keyword, fields, n=1, cutoff=0.5)
        hint = f"did you mean {path.root}.{close[0]}?" if close else f"fields: {', '.join(fields)}"
        diags.append(error("unknown-field", f"{path.root} has no field {element.keyword!r}", element.span, hint))
        return None, diags
    return ResolvedPath(path.root, (), element.keyword, text), diags


def _group_ok(root: str, group: int, element: n.Element, diags: list[Diagnostic]) -> bool:
    expected = {COMMAND_SET: 0x0000, FILE_META: 0x0002}.get(root)
    if expected is not None and group != expected:
        diags.append(error("bad-path", f"{root} holds only group {expected:04X}; "
                           f"{element.text()} is in group {group:04X}", element.span, "use DataSet."))
        return False
    if root == DATASET and group in (0x0000, 0x0002):
        where = COMMAND_SET if group == 0 else FILE_META
        diags.append(error("bad-path", f"{element.text()} belongs to the {'command set' if group == 0 else 'file meta information'}",
                           element.span, f"write {where}.{element.text()}"))
        return False
    return True


def _resolve_element(element: n.Element, root: str, diags: list[Diagnostic]) -> Step | None:
    index = element.indices[0] if element.indices else None
    base = dict(text=element.text(), index=index, any_depth=element.any_depth)
    if element.selector is not None:
        return _resolve_selector(element, root, base, diags)
    if element.keyword is not None:
        info = lookup_keyword(element.keyword)
        if info is None:
            suggestions = suggest_keywords(element.keyword)
            hint = ("did you mean " + " or ".join(suggestions) + "?") if suggestions else \
                "see `dicom-rules dict WORDS` to find a keyword"
            diags.append(error("unknown-keyword", f"unknown DICOM keyword {element.keyword!r}", element.span, hint))
            return None
        if root in DOCUMENT_ROOTS and not _group_ok(root, info.tag >> 16, element, diags):
            return None
        return Step(tag=info.tag, vr=info.vr, vm=info.vm, **base)
    if element.private is not None:
        group, creator, offset = element.private
        if offset is None:  # (gggg,"CREATOR",xx): every element of the block
            return Step(private=element.private, **base)
        return Step(private=element.private, vr=private_vr(group, creator, offset), vm=None, **base)
    if element.mask is not None:
        return Step(mask=element.mask, **base)
    tag = element.tag
    if root in DOCUMENT_ROOTS and not _group_ok(root, tag >> 16, element, diags):
        return None
    info = lookup_tag(tag)
    if (tag >> 16) % 2 == 1 and (tag & 0xFFFF) >= 0x1000:
        diags.append(error("private-by-tag", f"{element.text()} is a private element addressed by its tag; "
                           "its block can differ from file to file",
                           element.span, f'name its creator: ({tag >> 16:04X},"CREATOR",{tag & 0xFF:02X})'))
    return Step(tag=tag, vr=info.vr if info else None, vm=info.vm if info else None, **base)


def _resolve_selector(element: n.Element, root: str, base: dict, diags: list[Diagnostic]) -> Step | None:
    if root in ARRIVAL_FIELDS:
        return None  # reported by _resolve_arrival
    found = check_selector(element.selector.condition)
    diags.extend(found)
    if any(d.is_error for d in found):
        return None
    return Step(select=compile_selector(element.selector), vr=fixed_vr(element.selector.condition), **base)


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
