"""The document model: one DICOM instance with the verbs of the paths.

`get(path)`, `set(path, value)`, `get_next(path, index)`, `delete(path)` and
`blank(path)` take the same paths as rule files (`DataSet.PatientID`,
`DataSet.Seq[1].Modality`, `CommandSet.MessageID`, `Association.CallingAET`).
A document holds the data set, the file meta information, the DIMSE command
set when it came over the network, and the facts of its arrival.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Iterator, NamedTuple

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue

from .arrival import Arrival
from .diagnostics import RulesError
from .lang import nodes as n
from .lang.keep import IMAGE_PIXEL_TAGS, KeepLevel, KeepList
from .lang.paths import ARRIVAL_FIELDS, COMMAND_SET, DATASET, FILE_META, READ_ONLY_ROOTS, ResolvedPath, Step, \
    private_vr, resolve, tag_text
from .lang.syntax import parse_path
from . import charsets, dicomfile, pixels
from .dicomfile import DocumentReadError  # what Document.read and read_header raise
from .values import BINARY_VRS, CHARSET_VRS, UnreadBytes, ValueError_, concrete_vr, is_multi_vm, read_value, \
    to_dicom, value_of


class PathError(Exception):
    """A path that cannot be read or written in this document (a bad path, a bad value)."""


@dataclass(frozen=True)
class Change:
    """One edit: the concrete path (items numbered), the old and the new value."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class AppendedItem(Change):
    """The edit that appended an item, with the item, for the actions that fill it."""

    item: "ItemRef | None" = None


@lru_cache(maxsize=4096)
def compile_path(text: str) -> ResolvedPath:
    """A path string resolved against the dictionary (cached)."""
    try:
        node = parse_path(text)
    except RulesError as exc:
        raise PathError(f"bad path {text!r}: {exc.diagnostics[0].message}") from None
    resolved, diags = resolve(node)
    errors = [d for d in diags if d.is_error]
    if resolved is None or errors:
        d = errors[0]
        raise PathError(f"bad path {text!r}: {d.message}" + (f" ({d.hint})" if d.hint else ""))
    return resolved


def _as_path(path: str | ResolvedPath) -> ResolvedPath:
    return path if isinstance(path, ResolvedPath) else compile_path(path)


# ---- walking -----------------------------------------------------------------------

_MISS = object()
_FIRST_PIXEL_DATA_TAG = 0x7FE00008  # Float Pixel Data: read_header stops at the first of the three


def _reaches_tail(path: ResolvedPath) -> bool:
    """Whether a path may reach an element `read_header` left in the file: its first step
    walks or filters the data set, or names an element after the header."""
    first = path.steps[0]
    if first.any_depth or first.select is not None:
        return True
    if first.private is not None:  # a block of a group before the pixel data is in the header
        return first.private[0] << 16 | 0xFFFF >= _FIRST_PIXEL_DATA_TAG
    if first.mask is not None:  # (60xx,3000): the highest tag it matches
        value, care = first.mask
        return value | (~care & 0xFFFFFFFF) >= _FIRST_PIXEL_DATA_TAG
    return first.tag is None or first.tag >= _FIRST_PIXEL_DATA_TAG


def _private_tag(ds: Dataset, step: Step, create: bool) -> int | None:
    group, creator, offset = step.private
    try:
        block = ds.private_block(group, creator, create=create)
    except KeyError:
        return None
    return block.get_tag(offset)


def _datasets_below(ds: Dataset, prefix: str) -> Iterator[tuple[Dataset, str]]:
    """This data set and every item nested in it, depth first, with their paths."""
    yield ds, prefix
    for elem in list(ds):
        if elem.VR == "SQ" and elem.value:
            for number, item in enumerate(elem.value, 1):
                yield from _datasets_below(item, f"{prefix}.{_elem_name(elem.tag)}[{number}]")


def _elem_name(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag
    return keyword_for_tag(tag) or tag_text(tag)


def _elements(step: Step, containers, create: bool = False) -> Iterator[tuple[Dataset, int, str]]:
    """(data set, tag, path text) for each element the step names in `containers`.

    Elements are yielded whether or not they exist, except for masks and `**`,
    which only ever find existing elements.
    """
    name = step.text.replace("**.", "").split("[")[0]
    for container, where in containers:
        if step.mask is not None:
            value, care = step.mask
            for tag in [t for t in container.keys() if (int(t) & care) == value]:
                yield container, int(tag), f"{where}.{tag_text(tag)}"
            continue
        if step.private is not None:
            if step.private[2] is None:
                yield from _block_elements(step, container, where)
                continue
            tag = _private_tag(container, step, create and not step.any_depth)
            if tag is None:
                continue
        elif step.select is not None:
            yield from _selected(step, container, where)
            continue
        else:
            tag = step.tag
        if step.any_depth and tag not in container:
            continue
        yield container, tag, f"{where}.{name}"


_NOTHING = KeepLevel()


def _kept(ds: Dataset, tag: int, level: KeepLevel | None, anywhere: KeepLevel, creators: dict[int, str]):
    """Whether a keep list names an element here, and what it names inside its items."""
    for where in (level, anywhere):
        if where is None:
            continue
        if tag in where.tags:
            return True, where.tags[tag] if where is level else None
        if any(tag & care == value for value, care in where.masks):
            return True, None
    creator = None
    group = tag >> 16
    if group % 2 and tag & 0xFFFF >= 0x1000:
        creator = creators.get((group << 16) | (tag >> 8 & 0xFF))
        for where in (level, anywhere):
            if where is not None and any(g == group and c == creator and (o is None or o == tag & 0xFF)
                                         for g, c, o in where.blocks):
                return True, None
    selects = (level.selects if level is not None else []) + anywhere.selects
    if selects:
        elem = ds._dict[tag]
        vr = elem.VR if elem.VR is not None else _element(ds, tag).VR
        if any(select.passes(tag, vr, creator) for select in selects):
            return True, None
    return False, None


def _block_elements(step: Step, container: Dataset, where: str) -> Iterator[tuple[Dataset, int, str]]:
    """The elements of a private block that exist, for (gggg,"CREATOR",xx)."""
    group, creator, _ = step.private
    try:
        block = container.private_block(group, creator)
    except KeyError:
        return
    prefix = (group << 8) | (block.block_start >> 8)  # block_start: the element number, gg00
    for tag in sorted(t for t in container._dict if t >> 8 == prefix):
        yield container, int(tag), f"{where}.{tag_text(tag)}"


def _selected(step: Step, container: Dataset, where: str) -> Iterator[tuple[Dataset, int, str]]:
    """The elements of `container` a `*[FILTER]` step picks: in the data set never the file meta
    or command groups, never a private creator element (it names its block)."""
    passes = step.select.passes
    in_data_set = where.startswith(DATASET)
    for tag in sorted(container._dict):
        group, number = tag >> 16, tag & 0xFFFF
        if group <= 0x0002 and in_data_set:
            continue
        creator = None
        if group % 2:
            if number < 0x1000:
                if number >= 0x0010:
                    continue  # a creator element
            else:
                owner = container._dict.get((group << 16) | (number >> 8))
                creator = _element(container, owner.tag).value if owner is not None else None
                creator = creator.strip() if isinstance(creator, str) else creator
        elem = container._dict[tag]
        vr = elem.VR
        if vr is None:  # implicit VR: the dictionary's
            vr = _element(container, tag).VR
        if passes(int(tag), vr, creator):
            yield container, int(tag), f"{where}.{_elem_name(tag) if group % 2 == 0 else tag_text(tag)}"


def _element(ds: Dataset, tag: int):
    """The element at `tag` in `ds`, or None; pydicom converts a raw element on first access."""
    elem = ds._dict.get(tag)
    if elem is not None and isinstance(elem, RawDataElement):
        return ds[tag]
    return elem


class _DepthIndex:
    """Every data set of a document (the root and all nested items) in depth-first
    order, and which of them hold each tag: `**` steps read it instead of walking the
    whole tree again. Valid until an element is created or a sequence or item removed."""

    def __init__(self, root: Dataset, prefix: str):
        self.all = list(_datasets_below(root, prefix))
        self.by_tag: dict[int, list[tuple[Dataset, str]]] = {}
        for ds, where in self.all:
            for tag in ds.keys():
                self.by_tag.setdefault(int(tag), []).append((ds, where))


def _items(elem, step: Step, where: str) -> Iterator[tuple[Dataset, str]]:
    items = elem.value or ()
    if step.index == n.STAR or step.index is None:
        for number, item in enumerate(items, 1):
            yield item, f"{where}[{number}]"
    elif step.index <= len(items):
        yield items[step.index - 1], f"{where}[{step.index}]"


class Document:
    """One DICOM instance and the facts of its arrival."""

    __slots__ = ("dataset", "file_meta", "command_set", "arrival", "filename", "tail", "fingerprint", "cache",
                 "_index", "_ranges", "_dirty", "_tail_elements", "_unread")

    def __init__(self, dataset: Dataset | None = None, file_meta: Dataset | None = None,
                 command_set: Dataset | None = None, arrival: Arrival | None = None,
                 filename: str | None = None):
        self.dataset = dataset if dataset is not None else Dataset()
        if file_meta is None:
            file_meta = getattr(self.dataset, "file_meta", None)
        self.file_meta = file_meta if file_meta is not None else FileMetaDataset()
        self.arrival = arrival or Arrival()
        if command_set is None:  # an instance a listener received: its C-STORE request, kept with its arrival
            command_set = self.arrival.command_set()
        self.command_set = command_set if command_set is not None else Dataset()
        self.filename = filename
        self.tail: int | None = None  # read_header: where the pixel data starts in `filename`
        # read_header: the file as it was read (dicomfile.fingerprint_of), which the journal
        # keeps when the intake checked it (see rulesengine.intake)
        self.fingerprint: str | None = None
        self.cache: dict = {}  # values read by path, for the rules (lang.document_api); emptied on every edit
        self._index: _DepthIndex | None = None
        # read_header: where each top-level element lies in `filename`, and which ones edits
        # touched since (None: anything may have changed), so that `write` copies the others' bytes.
        self._ranges: dict[int, tuple[int, int]] | None = None
        self._dirty: set[int] | None = None
        self._tail_elements: dict[int, dicomfile.TailElement] | None = None  # read_header: what `tail` holds
        self._unread = False  # _open_tail: binary values left in `filename` are in the data set (UnreadBytes)

    # ---- construction and output ----

    @classmethod
    def read(cls, path: str | os.PathLike, arrival: Arrival | None = None, **dcmread_options) -> "Document":
        """Read a DICOM file. Raises DocumentReadError with the reason when it cannot."""
        path = os.fspath(path)
        ds = dicomfile.read_file(path, **dcmread_options)
        if arrival is None:
            arrival = Arrival(source_kind="file", source_path=path)
        return cls(ds, getattr(ds, "file_meta", None), None, arrival, path)

    @classmethod
    def read_header(cls, path: str | os.PathLike, arrival: Arrival | None = None) -> "Document":
        """Read everything before the pixel data; the pixel data stays in the file and
        `write` copies it from there, so a 1 GB instance never enters memory."""
        path = os.fspath(path)
        header = dicomfile.read_header(path)
        ds = header.dataset
        document = cls(ds, getattr(ds, "file_meta", None), None, arrival or Arrival(source_kind="file",
                                                                                     source_path=path), path)
        document.tail = header.pixel_data_at
        document.fingerprint = header.fingerprint
        document._ranges = header.element_ranges
        document._dirty = set() if document._ranges is not None else None
        return document

    def copy(self) -> "Document":
        """An independent copy. Values are shared until replaced (they are immutable, or
        copied here when they are lists), so pixel data is never copied."""
        file_meta = _copy_dataset(self.file_meta)
        dataset = _copy_dataset(self.dataset)
        dataset.file_meta = file_meta
        copy = Document(dataset, file_meta, _copy_dataset(self.command_set), self.arrival, self.filename)
        copy.tail, copy.fingerprint = self.tail, self.fingerprint
        copy._ranges = self._ranges
        copy._dirty = set(self._dirty) if self._dirty is not None else None
        copy._tail_elements = self._tail_elements
        copy._unread = self._unread
        return copy

    def write(self, target) -> None:
        """Write as a DICOM Part 10 file; the file meta is kept consistent with the data set."""
        dicomfile.write_file(target, self.dataset, self.file_meta, self.filename, self.tail, self._ranges,
                             self._dirty)

    def _touched(self, container: Dataset, tag: int) -> None:
        """Remember which top-level element an edit changed, for `write`."""
        if self._dirty is None or container is self.file_meta or container is self.command_set:
            return
        if container is self.dataset:
            self._dirty.add(int(tag))
            return
        for top, elem in self.dataset._dict.items():
            if not isinstance(elem, RawDataElement) and elem.VR == "SQ" and _holds(elem, container):
                self._dirty.add(int(top))
                return
        self._dirty = None  # not found: assume anything changed

    # ---- the verbs ----

    def get(self, path: str | ResolvedPath) -> Any:
        """Read a path: None when missing, "" when empty, a value, a tuple of values,
        or a list when the path fans out with [*] or **."""
        return self.read_path(_as_path(path))

    def set(self, path: str | ResolvedPath, value: Any) -> list[Change]:
        """Write a value, creating the element and sequence items when absent."""
        return self.write_path(_as_path(path), value)

    def delete(self, path: str | ResolvedPath) -> list[Change]:
        return self.delete_path(_as_path(path))

    def blank(self, path: str | ResolvedPath) -> list[Change]:
        """Empty an element where it is present (zero length); absent elements stay absent."""
        return self.blank_path(_as_path(path))

    def get_next(self, path: str | ResolvedPath, index: int) -> "Item | None":
        """Item number `index` (1-based) of the sequence at `path`, or None past the end:
        walk a sequence with index = 1, 2, ... until None."""
        resolved = _as_path(path)
        items = self.read_path(resolved)
        if not isinstance(items, tuple) or (items and not isinstance(items[0], Dataset)):
            if items in (None, "", ()):
                return None
            raise PathError(f"{resolved.text} is not a sequence")
        if not 1 <= index <= len(items):
            return None
        return Item(self, items[index - 1], f"{resolved.text}[{index}]")

    # ---- resolved paths (what compiled rules call) ----

    def read_path(self, path: ResolvedPath, base: "ItemRef | None" = None) -> Any:
        if base is None:
            cached = self.cache.get(path.text, _MISS)  # text: a str keeps its hash
            if cached is not _MISS:
                return cached
            tag = path.direct_tag
            if tag is not None:  # most paths: one element of the data set, no walking needed
                elem = _element(self._root(path.root), tag)
                if elem is not None:
                    value = value_of(elem.VR, elem.value, path.multi)
                else:
                    value = self._left_in_file(path) if self.tail is not None else None
            else:
                value = self._read_uncached(path, None)
            self.cache[path.text] = value
            return value
        return self._read_uncached(path, base)

    def _read_uncached(self, path: ResolvedPath, base: "ItemRef | None") -> Any:
        if path.is_arrival:
            return self.arrival.value(path.root, path.field)
        start, prefix = self._start(path, base)
        tag = path.direct_tag
        if tag is not None:  # most paths: one element of the data set, no walking needed
            elem = _element(start, tag)
            if elem is None:
                return self._left_in_file(path) if self.tail is not None and base is None else None
            return read_value(elem, multi=path.multi)
        found = [value for _, _, _, value in self._find(path, start, prefix)]
        if not path.fans_out:
            return found[0] if found else None
        values: list = []
        for value in found:
            if isinstance(value, list):  # a [*] on the last element
                values.extend(value)
            elif value is not None:
                values.append(value)
        return values

    def _containers(self, ds: Dataset, prefix: str, step: Step):
        """The data sets a step looks in: `ds` itself, or with `**` every data set below it."""
        if not step.any_depth:
            return ((ds, prefix),)
        if ds is not self.dataset:
            return _datasets_below(ds, prefix)
        if self._index is None:
            self._index = _DepthIndex(ds, prefix)
        if step.tag is not None:
            return self._index.by_tag.get(step.tag, ())
        return self._index.all

    def _structure_changed(self) -> None:
        self._index = None

    def _find(self, path: ResolvedPath, start: Dataset, prefix: str, raw: bool = False):
        """(container, tag, path text, value) for every element the path reaches;
        with `raw`, the element itself instead of its value."""
        current = [(start, prefix)]
        steps = path.steps
        for position, step in enumerate(steps):
            last = position == len(steps) - 1
            following = []
            for ds, where in current:
                for container, tag, text in _elements(step, self._containers(ds, where, step)):
                    elem = container.get(tag) if tag in container else None
                    if last:
                        if raw:
                            yield container, tag, text, elem
                        else:
                            yield container, tag, text, self._value(elem, step) if elem is not None else None
                        continue
                    if elem is None or elem.VR != "SQ":
                        continue
                    following.extend(_items(elem, step, text))
            current = following

    @staticmethod
    def _value(elem, step: Step) -> Any:
        value = read_value(elem, multi=is_multi_vm(step.vm) and step.index is None)
        if step.index is None or elem.VR == "SQ":
            if elem.VR == "SQ" and step.index is not None:
                if step.index == n.STAR:
                    return list(value)
                return value[step.index - 1] if step.index <= len(value) else None
            return value
        values = value if isinstance(value, tuple) else (() if value == "" else (value,))
        if step.index == n.STAR:
            return list(values)
        return values[step.index - 1] if step.index <= len(values) else None

    def _root(self, root: str) -> Dataset:
        if root == DATASET:
            return self.dataset
        if root == FILE_META:
            return self.file_meta
        if root == COMMAND_SET:
            return self.command_set
        raise PathError(f"{root} is not a data set")

    def write_path(self, path: ResolvedPath, value: Any, base: "ItemRef | None" = None) -> list[Change]:
        if path.is_arrival:
            self.cache.clear()
            old = self.arrival.value(path.root, path.field)
            try:
                self.arrival = self.arrival.with_value(path.root, path.field, value)
            except ValueError as exc:  # a test's arrival time that is no date or time
                raise PathError(str(exc)) from None
            return [Change(path.text, old, value)]
        start, prefix = self._start(path, base)
        changes: list[Change] = []
        try:
            for container, tag, text, step in list(self._targets(path, start, prefix, write=True)):
                if step.select is not None and container[tag].VR == "SQ":
                    continue  # a selector sets values; a sequence's are inside its items
                changes.extend(self._write_element(container, tag, step, value, text))
        except Exception:
            self.cache.clear()  # items may have been created before the failure
            raise
        if changes:  # writing the value already there changes nothing: what was read stays valid
            self.cache.clear()
        return changes

    def _targets(self, path: ResolvedPath, start: Dataset, prefix: str, write: bool = False):
        """(container, tag, path text, last step) for each element an edit reaches.

        A write (set) creates what is missing on the way: sequences, numbered items,
        private creator blocks. Paths that fan out ([*], **) never create items.
        """
        create = write and not path.fans_out
        current = [(start, prefix)]
        for position, step in enumerate(path.steps):
            last = position == len(path.steps) - 1
            make_block = write and not step.any_depth if last else create
            following = []
            for ds, where in current:
                for container, tag, text in _elements(step, self._containers(ds, where, step), create=make_block):
                    if last:
                        if step.any_depth and tag not in container:
                            continue
                        yield container, tag, text, step
                        continue
                    elem = container[tag] if tag in container else None
                    if elem is None and create and isinstance(step.index, int):
                        container.add_new(tag, "SQ", [])
                        elem = container[tag]
                        self._structure_changed()
                        self._touched(container, tag)
                    if elem is None or elem.VR != "SQ":
                        continue
                    if create and isinstance(step.index, int):
                        while len(elem.value) < step.index:
                            elem.value.append(Dataset())
                            self._structure_changed()
                            self._touched(container, tag)
                    following.extend(_items(elem, step, text))
            current = following

    def _write_element(self, container: Dataset, tag: int, step: Step, value: Any, text: str) -> list[Change]:
        elem = _element(container, tag)
        vr = elem.VR if elem is not None else self._vr_for(tag, step, value)
        if vr == "SQ":
            raise PathError(f"{text} is a sequence: set elements inside its items instead")
        multi = is_multi_vm(step.vm)
        old = read_value(elem, multi) if elem is not None else None
        indexed = step.index is not None and step.index != n.STAR
        if indexed:
            values = list(old) if isinstance(old, tuple) else ([] if old in (None, "") else [old])
            while len(values) < step.index:
                values.append("")
            values[step.index - 1] = value
            new_value = values
            text = f"{text}[{step.index}]"
        else:
            new_value = value
        try:
            stored = to_dicom(vr, new_value)
        except ValueError_ as exc:
            raise PathError(f"{text}: {exc}") from None
        if step.vm == "1" and isinstance(stored, list) and len(stored) > 1:
            raise PathError(f"{text} takes one value, not {len(stored)}")
        new = value_of(vr, stored, multi)
        if elem is not None and new == old:
            return []  # the value is already there
        self._redeclare(container, tag, stored, text)
        self._ensure_charset(container, vr, stored)
        self._touched(container, tag)
        if elem is None:
            container.add_new(tag, concrete_vr(vr), stored)
            self._structure_changed()
        else:
            elem.value = stored
        if indexed:
            old = old[step.index - 1] if isinstance(old, tuple) and step.index <= len(old) else (
                old if step.index == 1 and not isinstance(old, tuple) else None)
            new = value
        return [Change(text, old, new)]

    @staticmethod
    def _vr_for(tag: int, step: Step, value: Any) -> str | None:
        if step.private is not None:
            return step.vr or private_vr(*step.private) or _private_vr_from_value(value)
        if step.tag == tag and step.vr:
            return step.vr
        from pydicom.datadict import dictionary_VR
        try:
            return dictionary_VR(tag)
        except KeyError:
            raise PathError(f"{tag_text(tag)} is not in the dictionary, so its VR is unknown "
                            "and it cannot be created") from None

    def _ensure_charset(self, container: Dataset, vr: str, stored: Any) -> None:
        """Text the character set in effect cannot hold switches the data set to UTF-8
        (ISO_IR 192): every text value is decoded first and written anew, so none is read
        in the wrong character set; text that fits leaves the declaration as it is."""
        if vr not in CHARSET_VRS or stored is None:
            return
        found = charsets.declaration_of(self.dataset, container)
        if found is None or charsets.fits(stored, vr, found[1]):
            return
        self._open_tail()  # text after the pixel data is written in the new character set too
        self._recoded(charsets.switch_to_utf8(self.dataset))

    def _redeclare(self, container: Dataset, tag: int, new: Any, text: str) -> None:
        """Before Specific Character Set is set, deleted or blanked: every text value is
        decoded in the character set it was written in and is written in the new one, so the
        text rules read is the text written (the bytes are not relabelled); text the new one
        cannot hold is an error, never a '?'."""
        found = charsets.declaration_of(self.dataset, container) if int(tag) == charsets.SPECIFIC_CHARACTER_SET \
            else None
        if found is None:
            return
        self._open_tail()  # text after the pixel data is written in the new character set too
        declared = new if new not in (None, "", []) else found[0]  # none of its own: it inherits
        changed = charsets.decode(self.dataset)
        unfit = charsets.first_unfit(container, declared)
        if unfit is not None:
            raise PathError(f"{text}: {charsets.name(declared)} cannot hold the text of {unfit}")
        self._recoded(changed)

    def _recoded(self, tags: set[int]) -> None:
        self._structure_changed()
        if self._dirty is not None:
            self._dirty |= tags  # copied from the file, their bytes would be read in the new character set

    def delete_path(self, path: ResolvedPath, base: "ItemRef | None" = None) -> list[Change]:
        if path.is_arrival:
            raise PathError(f"{path.text} cannot be deleted")
        self.cache.clear()
        start, prefix = self._start(path, base)
        if path.last.select is not None:
            return self._delete_selected(path, start, prefix)
        changes = []
        for container, tag, text, step in list(self._targets(path, start, prefix)):
            if tag not in container:
                continue
            elem = container[tag]
            self._redeclare(container, tag, None, text)
            self._touched(container, tag)
            if elem.VR == "SQ":
                self._structure_changed()
            if step.index is None or step.index == n.STAR and elem.VR != "SQ":
                old = self._value(elem, replace(step, index=None))
                del container[tag]
                changes.append(Change(text, old, None))
            elif elem.VR == "SQ":
                if step.index == n.STAR:
                    count = len(elem.value)
                    elem.value = []
                    changes.append(Change(text, f"{count} items", "0 items"))
                elif step.index <= len(elem.value):
                    del elem.value[step.index - 1]
                    changes.append(Change(f"{text}[{step.index}]", "item", None))
            else:
                values = list(elem.value) if isinstance(elem.value, (list, tuple)) or \
                    type(elem.value).__name__ == "MultiValue" else [elem.value]
                if step.index <= len(values):
                    old = values.pop(step.index - 1)
                    elem.value = values
                    changes.append(Change(f"{text}[{step.index}]", old, None))
        return changes

    def _delete_selected(self, path: ResolvedPath, start: Dataset, prefix: str) -> list[Change]:
        """Delete what a `*[FILTER]` selects; a private block it empties loses its creator element too."""
        changes: list[Change] = []
        emptied: dict[int, tuple[Dataset, str, set[int]]] = {}
        for ref in self.element_refs(path, ItemRef(start, prefix)):
            changes.extend(self.delete_ref(ref))
            if (ref.tag >> 16) % 2:
                emptied.setdefault(id(ref.container), (ref.container, ref.text.rsplit(".", 1)[0], set())
                                   )[2].add(ref.tag >> 8)
        for container, where, blocks in emptied.values():
            remaining = {tag >> 8 for tag in container._dict if (tag >> 16) % 2 and tag & 0xFFFF >= 0x1000}
            for block in sorted(blocks - remaining):
                creator_tag = ((block >> 8) << 16) | (block & 0xFF)
                if creator_tag in container._dict:
                    changes.extend(self.delete_ref(ElementRef(container, creator_tag,
                                                              f"{where}.{tag_text(creator_tag)}", Step(""))))
        return changes

    def blank_path(self, path: ResolvedPath, base: "ItemRef | None" = None) -> list[Change]:
        if path.is_arrival:
            raise PathError(f"{path.text} cannot be blanked")
        changes = []
        for ref in self.element_refs(path, base):
            changes.extend(self.blank_ref(ref))
        return changes

    # ---- pixel regions (`blank pixels`) ----

    def blank_pixels(self, regions: list, fill: Any = 0) -> list[Change]:
        """Set rectangles of the pixel data (`regions`: (x, y, width, height) each, evaluated) to
        `fill`, in every frame (pixels.py says how). A document read without its pixel data loads
        it first; it is written whole from then on. Raises PathError with the reason."""
        try:
            self._load_pixel_data()
            pixels.pixel_data_tag(self.dataset)  # no pixel data: said before anything about the regions
            checked = [pixels.region(values, number) for number, values in enumerate(regions, 1)]
            changed = pixels.blank(self.dataset, self.file_meta, checked, fill)
        except pixels.PixelError as exc:
            raise PathError(f"blank pixels: {exc}") from None
        self.cache.clear()
        self._dirty = None
        return [Change(path, old, new) for path, old, new in changed]

    def _left_in_file(self, path: ResolvedPath) -> Any:
        """A top-level element `read_header` left in the file (the pixel data, what follows it),
        as a whole read would give it; a binary value is not read: it stands for itself
        (values.UnreadBytes), its length answering `exists`, `empty` and `len()`."""
        tag = path.direct_tag
        if path.root != DATASET or tag is None or tag < _FIRST_PIXEL_DATA_TAG:
            return None
        if self._tail_elements is None:
            try:
                self._tail_elements = dicomfile.tail_elements(self.filename, self.tail, self.dataset)
            except OSError:
                self._tail_elements = {}
        found = self._tail_elements.get(tag)
        if found is None:
            return None
        if found.vr in BINARY_VRS:
            if not found.length:
                return ""
            source = (self.filename, found.value_at) if found.value_at is not None else None
            return UnreadBytes(found.length, source, f"{DATASET}.{_elem_name(tag)}")
        # Anything else after the pixel data (a sequence, text) is rare and small: read it.
        self._open_tail()
        elem = _element(self.dataset, tag)
        return None if elem is None else read_value(elem, multi=path.multi)

    def _open_tail(self) -> None:
        """Put the elements `read_header` left in the file into the data set, for what finds
        elements by walking the data set (`*[FILTER]`, `**`, private blocks, `keep only`,
        `delete private`): their values are read, but for binary ones longer than a few
        bytes (the pixel data), which stay in the file as values.UnreadBytes, and `write`
        copies them from there."""
        if self.tail is None:
            return
        try:
            pieces = dicomfile.open_tail(self.filename, self.tail, self.dataset)
        except DocumentReadError as exc:
            raise PathError(str(exc)) from None
        little = self.dataset.original_encoding[1] is not False
        for piece in pieces:
            tag = piece.element.tag  # a BaseTag, as pydicom keys its elements
            if tag in self.dataset._dict:
                continue
            if piece.value_at is None:
                self.dataset._dict[tag] = piece.element
                try:
                    self.dataset[tag]  # read now: a value pydicom cannot convert is said here
                except Exception as exc:  # noqa: BLE001 - pydicom converting a damaged value can raise anything
                    del self.dataset._dict[tag]
                    raise PathError(f"{DATASET}.{_elem_name(tag)} cannot be read: {exc}") from None
                continue
            elem = DataElement(tag, piece.vr, b"", is_undefined_length=piece.element.length == 0xFFFFFFFF)
            if piece.element.VR is None:  # implicit VR: OB or OW as a whole read decides
                elem.VR = dictionary_VR(tag) if dictionary_has_tag(tag) else piece.vr
                correct_ambiguous_vr_element(elem, self.dataset, little)
                if " or " in elem.VR:
                    elem.VR = piece.vr
            elem._value = UnreadBytes(piece.length, (self.filename, piece.value_at), f"{DATASET}.{_elem_name(tag)}",
                                      (piece.start, piece.end))
            self.dataset._dict[tag] = elem
        self.tail = None
        self._unread = True
        self.cache.clear()
        self._structure_changed()

    def _load_pixel_data(self) -> None:
        """Read the pixel data (and what follows it) that `read_header` left in the file."""
        if self._unread:
            for elem in self.dataset._dict.values():
                value = getattr(elem, "_value", None)
                if isinstance(value, UnreadBytes):
                    try:
                        elem._value = value.read(bounded=False)
                    except OSError as exc:
                        raise pixels.PixelError(f"{value.name} cannot be read: {exc}") from None
            self._unread = False
            self._ranges = None
            self._structure_changed()
        if self.tail is None:
            return
        try:
            tail = dicomfile.read_tail(self.filename, self.tail, self.dataset)
        except DocumentReadError as exc:
            raise pixels.PixelError(str(exc)) from None
        for tag, elem in tail._dict.items():
            if tag not in self.dataset._dict:
                self.dataset._dict[tag] = elem
        self.tail = None
        self._ranges = None
        self._structure_changed()

    # ---- element references (what `for each e in DataSet.**.Keyword` binds) ----

    def element_refs(self, path: ResolvedPath, base: "ItemRef | None" = None) -> list["ElementRef"]:
        """The elements a path reaches that exist, as references that can be read and edited."""
        start, prefix = self._start(path, base)
        return [ElementRef(container, tag, text, replace(step, index=None))
                for container, tag, text, step in self._targets(path, start, prefix) if tag in container]

    def item_refs(self, path: ResolvedPath, base: "ItemRef | None" = None) -> list["ItemRef"]:
        """The items a sequence path reaches (what `for each` and any/all walk), with their paths."""
        start, prefix = self._start(path, base)
        refs: list[ItemRef] = []
        last = path.last
        for _container, _tag, text, elem_value in self._find(path, start, prefix, raw=True):
            if elem_value is None or elem_value.VR != "SQ":
                continue
            for item, item_text in _items(elem_value, last, text):
                refs.append(ItemRef(item, item_text))
        return refs

    def _start(self, path: ResolvedPath, base: "ItemRef | None") -> tuple[Dataset, str]:
        if base is not None:
            return base.dataset, base.text
        if self.tail is not None and path.root == DATASET and _reaches_tail(path):
            self._open_tail()
        return self._root(path.root), path.root

    def read_ref(self, ref: "ElementRef") -> Any:
        if ref.tag not in ref.container:
            return None
        return self._value(ref.container[ref.tag], ref.step)

    def write_ref(self, ref: "ElementRef", value: Any) -> list[Change]:
        changes = self._write_element(ref.container, ref.tag, ref.step, value, ref.text)
        if changes:
            self.cache.clear()
        return changes

    def delete_ref(self, ref: "ElementRef") -> list[Change]:
        if ref.tag not in ref.container:
            return []
        self.cache.clear()
        old = self.read_ref(ref)
        self._redeclare(ref.container, ref.tag, None, ref.text)
        self._touched(ref.container, ref.tag)
        if ref.container[ref.tag].VR == "SQ":
            self._structure_changed()
        del ref.container[ref.tag]
        return [Change(ref.text, old, None)]

    def blank_ref(self, ref: "ElementRef") -> list[Change]:
        old = self.read_ref(ref)
        if old in (None, "", ()):
            return []
        self.cache.clear()
        self._redeclare(ref.container, ref.tag, None, ref.text)
        elem = ref.container[ref.tag]
        self._touched(ref.container, ref.tag)
        if elem.VR == "SQ":
            self._structure_changed()
        elem.value = [] if elem.VR == "SQ" else None
        return [Change(ref.text, old, "")]

    # ---- sequence items (append, delete each ... where, copy PATH to PATH) ----

    def _sequences(self, path: ResolvedPath, base: "ItemRef | None", create: bool):
        """(container, tag, path text, sequence element) for each sequence the path names. With
        `create` (a path that does not fan out), what is missing on the way is created, and the
        sequence itself when absent; a path that fans out only finds existing sequences.
        Raises PathError where the path names an element that is not a sequence."""
        start, prefix = self._start(path, base)
        if create and not path.fans_out:
            found = []
            for container, tag, text, step in list(self._targets(path, start, prefix, write=True)):
                elem = _element(container, tag)
                if elem is None:
                    vr = step.vr if step.private is None else (step.vr or "SQ")
                    if vr not in (None, "SQ"):
                        raise PathError(f"{text} is not a sequence ({vr})")
                    container.add_new(tag, "SQ", [])
                    self._structure_changed()
                    self._touched(container, tag)
                    elem = container[tag]
                found.append((container, tag, text, elem))
        else:
            found = [(c, tag, text, elem) for c, tag, text, elem in self._find(path, start, prefix, raw=True)
                     if elem is not None]
        for _container, _tag, text, elem in found:
            if elem.VR != "SQ":
                raise PathError(f"{text} is not a sequence ({elem.VR})")
        return found

    def append_items(self, path: ResolvedPath, base: "ItemRef | None" = None) -> list[Change]:
        """A new, empty item at the end of each sequence the path names (created when missing,
        for a path that does not fan out); each change holds the new item (`AppendedItem.item`)."""
        self.cache.clear()
        changes: list[Change] = []
        for container, tag, text, elem in self._sequences(path, base, create=True):
            item = Dataset()
            elem.value.append(item)
            item = elem.value[-1]  # the sequence may hold its own object for the item
            self._structure_changed()
            self._touched(container, tag)
            where = f"{text}[{len(elem.value)}]"
            changes.append(AppendedItem(where, None, "item", ItemRef(item, where)))
        return changes

    def delete_items(self, path: ResolvedPath, doomed: list["ItemRef"], base: "ItemRef | None" = None) \
            -> list[Change]:
        """Remove the items `doomed` (from `item_refs` of the same path) from the sequences the
        path reaches; each is reported under its number before the removal."""
        if not doomed:
            return []
        self.cache.clear()
        chosen = {id(ref.dataset) for ref in doomed}
        changes: list[Change] = []
        for container, tag, text, elem in self._sequences(path, base, create=False):
            kept = [item for item in elem.value if id(item) not in chosen]
            if len(kept) == len(elem.value):
                continue
            changes.extend(Change(f"{text}[{number}]", "item", None)
                           for number, item in enumerate(elem.value, 1) if id(item) in chosen)
            elem.value = kept
            self._structure_changed()
            self._touched(container, tag)
        return changes

    def copy_path(self, source: ResolvedPath, target: ResolvedPath, source_base: "ItemRef | None" = None,
                  target_base: "ItemRef | None" = None) -> list[Change]:
        """`copy SOURCE to TARGET`. An element is copied with its VR and values; a sequence
        (no index) replaces the target sequence's items with copies of its own; an item
        (`Seq[2]`) or every item (`Seq[*]`) is appended to the target sequence, or replaces
        the target item when the target names one (`Other[1]`). A missing source copies
        nothing, an empty one copies its emptiness. Raises PathError when the kinds differ."""
        start, prefix = self._start(source, source_base)
        found = [elem for _c, _t, _text, elem in self._find(source, start, prefix, raw=True) if elem is not None]
        if not found:
            return []
        elem = found[0]
        step = source.last
        if elem.VR != "SQ":
            return self._copy_element(elem, target, target_base)
        if step.index is None:
            items = [_copy_dataset(item) for item in elem.value]
            return self._replace_items(target, target_base, items, source.text)
        items = [_copy_dataset(item) for item in _items_of(elem, step)]
        if not items:
            return []
        return self._put_items(target, target_base, items, source.text)

    def copy_ref(self, ref: "ItemRef | ElementRef", target: ResolvedPath, target_base: "ItemRef | None" = None) \
            -> list[Change]:
        """`copy NAME to PATH` of a loop variable: its item (appended, or in place of the target
        item), or its element (as `copy_path` copies an element or a sequence)."""
        if isinstance(ref, ItemRef):
            return self._put_items(target, target_base, [_copy_dataset(ref.dataset)], ref.text)
        if ref.tag not in ref.container:
            return []
        elem = ref.container[ref.tag]
        if elem.VR == "SQ":
            return self._replace_items(target, target_base, [_copy_dataset(item) for item in elem.value], ref.text)
        return self._copy_element(elem, target, target_base)

    def _copy_element(self, elem, target: ResolvedPath, target_base: "ItemRef | None") -> list[Change]:
        self.cache.clear()
        start, prefix = self._start(target, target_base)
        changes: list[Change] = []
        for container, tag, text, step in list(self._targets(target, start, prefix, write=True)):
            existing = _element(container, tag)
            if existing is not None and existing.VR == "SQ":
                raise PathError(f"{text} is a sequence; {elem.VR} values cannot be copied to it")
            value = copy.copy(elem.value)
            if isinstance(value, UnreadBytes):  # copied elsewhere: no longer where the file has it
                value = value.read()
            if isinstance(value, MultiValue):
                value = list(value)
            old = read_value(existing, is_multi_vm(step.vm)) if existing is not None else None
            if step.vm == "1" and isinstance(value, list) and len(value) > 1:
                raise PathError(f"{text} takes one value, not {len(value)}")
            self._redeclare(container, tag, value, text)
            self._ensure_charset(container, elem.VR, value)
            if existing is not None:
                del container[tag]
            container.add_new(tag, elem.VR, value)
            self._structure_changed()
            self._touched(container, tag)
            new = read_value(container[tag], is_multi_vm(step.vm))
            if existing is None or new != old or existing.VR != elem.VR:
                changes.append(Change(text, old, new))
        return changes

    def _replace_items(self, target: ResolvedPath, target_base, items: list, source_text: str) -> list[Change]:
        self.cache.clear()
        changes: list[Change] = []
        for container, tag, text, elem in self._sequences(target, target_base, create=True):
            if isinstance(target.last.index, int) or target.last.index == n.STAR:
                raise PathError(f"{source_text} is a whole sequence; copy it to a sequence, not to an item")
            before = len(elem.value)
            elem.value = [_copy_dataset(item) for item in items]
            self._structure_changed()
            self._touched(container, tag)
            changes.append(Change(text, f"{before} items", f"{len(items)} items (copied from {source_text})"))
        return changes

    def _put_items(self, target: ResolvedPath, target_base, items: list, source_text: str) -> list[Change]:
        """Items appended to the target sequence, or one item in place of the target item."""
        self.cache.clear()
        index = target.last.index
        if index == n.STAR:
            raise PathError(f"{target.text} names every item; copy to the sequence, or to one item")
        if isinstance(index, int):
            if len(items) != 1:
                raise PathError(f"{source_text} is {len(items)} items; one item can replace one item")
            whole = ResolvedPath(target.root, target.steps[:-1] + (replace(target.last, index=None),), None,
                                 target.text.rsplit("[", 1)[0])
        else:
            whole = target
        changes: list[Change] = []
        for container, tag, text, elem in self._sequences(whole, target_base, create=True):
            if isinstance(index, int):
                while len(elem.value) < index:
                    elem.value.append(Dataset())
                elem.value[index - 1] = _copy_dataset(items[0])
                changes.append(Change(f"{text}[{index}]", "item", f"item (copied from {source_text})"))
            else:
                for item in items:
                    elem.value.append(_copy_dataset(item))
                    changes.append(Change(f"{text}[{len(elem.value)}]", None, f"item (copied from {source_text})"))
            self._structure_changed()
            self._touched(container, tag)
        return changes

    def delete_private(self) -> list[Change]:
        """Remove every private element (odd groups), at any depth; reported as one change."""
        self._open_tail()
        self.cache.clear()
        self._structure_changed()
        self._dirty = None
        removed = 0
        for ds, _where in list(_datasets_below(self.dataset, DATASET)):
            for tag in [t for t in ds.keys() if t.group % 2 == 1]:
                del ds[tag]
                removed += 1
        if not removed:
            return []
        return [Change(f"{DATASET} private elements", f"{removed} element{'s' * (removed != 1)}", None)]

    def delete_private_blocks(self, creators: Any, keep: bool = False) -> list[Change]:
        """Remove the private blocks of these creators (text or several texts), creator elements
        included, at any depth; with `keep`, remove every private element but those blocks."""
        names = {str(c).strip() for c in (creators if isinstance(creators, (list, tuple)) else
                                          () if creators in (None, "") else (creators,))}
        self._open_tail()
        changes: list[Change] = []
        for ds, where in list(_datasets_below(self.dataset, DATASET)):
            blocks: dict[int, str] = {}  # (group << 8 | block number) -> creator, for this data set
            for tag in ds._dict:
                if tag >> 16 & 1 and 0x0010 <= tag & 0xFFFF <= 0x00FF:
                    value = _element(ds, tag).value
                    blocks[(tag >> 16) << 8 | (tag & 0xFF)] = str(value).strip() if value is not None else ""
            doomed: dict[str, list[int]] = {}
            for tag in ds._dict:
                if not tag >> 16 & 1:
                    continue
                number = tag & 0xFFFF
                if 0x0010 <= number <= 0x00FF:
                    creator = blocks[(tag >> 16) << 8 | number]
                elif number >= 0x1000:
                    creator = blocks.get((tag >> 16) << 8 | number >> 8)
                else:
                    creator = None  # group length and reserved elements: no block
                if (creator in names) != keep:
                    doomed.setdefault(creator if creator is not None else "", []).append(tag)
            for creator, tags in doomed.items():
                for tag in tags:
                    del ds[tag]
                what = f"private block {creator!r}" if creator else "private elements of no block"
                changes.append(Change(f"{where} {what}", f"{len(tags)} element{'s' * (len(tags) != 1)}", None))
        if changes:
            self.cache.clear()
            self._structure_changed()
            self._dirty = None
        return changes

    def keep_only(self, kept: KeepList) -> list[Change]:
        """Delete every element of the data set the keep list does not name, at every depth
        (`keep only`); the Image Pixel module stays at the top level. A private creator element
        stays while an element of its block does."""
        self._open_tail()
        changes: list[Change] = []
        self._keep_in(self.dataset, DATASET, kept.top, kept, True, changes)
        if changes:
            self.cache.clear()
            self._structure_changed()
            self._dirty = None
        return changes

    def _keep_in(self, ds: Dataset, where: str, level: KeepLevel | None, kept: KeepList, top: bool,
                 changes: list[Change]) -> None:
        anywhere = kept.anywhere
        filters_items = bool(anywhere.tags or anywhere.masks or anywhere.blocks or anywhere.selects)
        removed = 0
        creators: dict[int, str] = {}
        for tag in sorted(ds._dict):
            group, number = tag >> 16, tag & 0xFFFF
            if group <= 0x0002:
                continue  # never in a data set read from a file: left alone
            if group % 2 and 0x0010 <= number <= 0x00FF:
                value = _element(ds, tag).value
                creators[tag] = str(value).strip() if value is not None else ""
                continue  # decided below, once its block is known
            named, inner = _kept(ds, tag, level, anywhere, creators)
            if kept.private_only and not group % 2:
                named = True  # keep only private: public elements stay, their items are filtered
                if inner is None:
                    inner = _NOTHING
            if not named and not (top and tag in IMAGE_PIXEL_TAGS):
                del ds[tag]
                removed += 1
                continue
            if inner is None and not filters_items and not kept.private_only:
                continue  # kept whole
            if ds._dict[tag].VR not in (None, "SQ"):
                continue  # no items to filter
            elem = _element(ds, tag)
            if elem.VR == "SQ":
                name = _elem_name(tag)
                for number_, item in enumerate(elem.value or (), 1):
                    self._keep_in(item, f"{where}.{name}[{number_}]", inner or _NOTHING, kept, False, changes)
        live = {t >> 8 for t in ds._dict if t >> 16 & 1 and t & 0xFFFF >= 0x1000} if creators else set()
        for tag in creators:  # a creator without a block left, unless named itself
            if (tag >> 16) << 8 | (tag & 0xFF) not in live \
                    and not (level is not None and level.names(tag)) and not anywhere.names(tag):
                del ds[tag]
                removed += 1
        if removed:
            changes.append(Change(f"{where} elements not kept", f"{removed} element{'s' * (removed != 1)}", None))

    def invalidate(self) -> None:
        """Call after editing `dataset` directly through pydicom: forget what was read."""
        self.cache.clear()
        self._structure_changed()
        self._dirty = None

    def __repr__(self) -> str:
        sop = self.dataset.get("SOPInstanceUID", "?")
        return f"<Document {self.filename or ''} SOPInstanceUID={sop}>"


class ItemRef(NamedTuple):
    """A sequence item and its path, e.g. DataSet.ScheduledProcedureStepSequence[2]."""

    dataset: Dataset
    text: str


class ElementRef(NamedTuple):
    container: Dataset
    tag: int
    text: str
    step: Step


class Item:
    """One item of a sequence, from `Document.get_next`; paths are relative to it."""

    def __init__(self, document: Document, dataset: Dataset, path: str):
        self.document, self.dataset, self.path = document, dataset, path

    def _relative(self, relative: str) -> ResolvedPath:
        full = compile_path(f"{DATASET}.{relative}")
        return ResolvedPath("item", full.steps, None, f"{self.path}.{relative}")

    def get(self, relative: str) -> Any:
        return self.document.read_path(self._relative(relative), base=ItemRef(self.dataset, self.path))

    def set(self, relative: str, value: Any) -> list[Change]:
        return self.document.write_path(self._relative(relative), value, base=ItemRef(self.dataset, self.path))

    def delete(self, relative: str) -> list[Change]:
        return self.document.delete_path(self._relative(relative), base=ItemRef(self.dataset, self.path))


def _items_of(sequence, step: Step) -> list[Dataset]:
    """The items of a sequence element a step names: one (`[2]`) or all (`[*]`)."""
    return [item for item, _text in _items(sequence, step, "")]


def _private_vr_from_value(value: Any) -> str:
    """A new private element of a creator the dictionary does not know: text is
    stored as LO (UT when longer than LO allows), whole numbers as SL, others as FD."""
    sample = value[0] if isinstance(value, (list, tuple)) and value else value
    if isinstance(sample, bool) or sample is None or isinstance(sample, str):
        texts = value if isinstance(value, (list, tuple)) else [value]
        return "LO" if all(len(str(t or "")) <= 64 for t in texts) else "UT"
    if isinstance(sample, int):
        return "SL"
    if isinstance(sample, float):
        return "FD"
    return "UN"


def _copy_dataset(ds: Dataset) -> Dataset:
    """A copy of a data set that can be edited without touching the original: unread
    (raw) elements are immutable and shared, read ones are copied, sequences recursively;
    a deepcopy would also copy pixel data, 100 times slower for a small CT."""
    new = copy.copy(ds)
    elements = {}
    for tag, elem in ds._dict.items():
        if isinstance(elem, RawDataElement):
            elements[tag] = elem
            continue
        duplicate = copy.copy(elem)
        if elem.VR == "SQ":
            duplicate.value = [_copy_dataset(item) for item in elem.value]
        elif isinstance(elem.value, (list, MultiValue)):
            duplicate.value = list(elem.value)
        elements[tag] = duplicate
    object.__setattr__(new, "_dict", elements)
    object.__setattr__(new, "_private_blocks", {})
    return new


def _holds(sequence, dataset: Dataset) -> bool:
    for item in sequence.value or ():
        if item is dataset:
            return True
        for elem in item._dict.values():
            if not isinstance(elem, RawDataElement) and elem.VR == "SQ" and _holds(elem, dataset):
                return True
    return False


def is_read_only(root: str) -> bool:
    return root in READ_ONLY_ROOTS


__all__ = ["Arrival", "Change", "Document", "DocumentReadError", "Item", "PathError", "compile_path",
           "ARRIVAL_FIELDS"]
