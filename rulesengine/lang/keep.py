"""`keep only PATH, ...`: what an allow-list keeps, built once from its resolved paths.

A level holds what is named at one depth: tags (with what is named inside their items),
tag masks, private elements by creator (a whole block with `xx`), selectors. `**.X` names
X at every level. The document model walks a data set against it (Document.keep_only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.datadict import tag_for_keyword

from ..diagnostics import Diagnostic, error, warning
from . import nodes as n
from .paths import DATASET, ResolvedPath, Step
from .selectors import Select

# The Image Pixel module (PS3.3 C.7.6.3), the number of frames and the pixel data elements:
# kept at the top level whatever the list says, so the image stays readable.
IMAGE_PIXEL_KEYWORDS = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio", "SmallestImagePixelValue",
    "LargestImagePixelValue", "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "ICCProfile", "ColorSpace", "PixelDataProviderURL", "PixelPaddingRangeLimit",
    "NumberOfFrames", "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
IMAGE_PIXEL_TAGS = frozenset(tag_for_keyword(k) for k in IMAGE_PIXEL_KEYWORDS)
SOP_UIDS = {0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID"}


@dataclass(eq=False)
class KeepLevel:
    tags: dict[int, "KeepLevel | None"] = field(default_factory=dict)  # None: the element whole
    masks: list[tuple[int, int]] = field(default_factory=list)
    blocks: list[tuple[int, str, int | None]] = field(default_factory=list)
    selects: list[Select] = field(default_factory=list)

    def names(self, tag: int) -> bool:
        return tag in self.tags or any(tag & care == value for value, care in self.masks)


@dataclass(eq=False)
class KeepList:
    """What one `keep only` keeps: `top` at the data set's level, `anywhere` at every level.
    With `private_only` (`keep only private`), public elements are all kept."""

    text: str
    top: KeepLevel = field(default_factory=KeepLevel)
    anywhere: KeepLevel = field(default_factory=KeepLevel)
    private_only: bool = False


def _add_last(level: KeepLevel, step: Step) -> None:
    if step.select is not None:
        level.selects.append(step.select)
    elif step.private is not None:
        level.blocks.append(step.private)
    elif step.mask is not None:
        level.masks.append(step.mask)
    else:
        level.tags.setdefault(step.tag, None)


def check_path(path: ResolvedPath, span, private: bool = False) -> list[Diagnostic]:
    """The shapes a keep list takes: DataSet paths, `[*]` through sequences, `**` before the last step;
    for `keep only private`, a private element or block by its creator last."""
    if path.root != DATASET:
        return [error("bad-path", f"keep only names elements of the data set, not {path.root}", span,
                      "the file meta and the command set are never touched by keep only")]
    *middle, last = path.steps
    if private and last.private is None:
        return [error("bad-path", f"keep only private names private elements by their creator, not {last.text}",
                      span, 'for example DataSet.**.(0019,"GEMS_ACQU_01",23), or a whole block '
                      'DataSet.(0009,"GEMS_IDEN_01",xx); public elements are all kept')]
    for step in middle:
        if step.any_depth:
            return [error("bad-path", "in keep only, ** goes before the last element only", span,
                          "for example keep only DataSet.**.CodeValue")]
        if step.index != n.STAR:
            return [error("bad-path", f"keep only keeps in every item: write {step.text.split('[')[0]}[*]",
                          span)]
    if last.index is not None:
        return [error("bad-path", "keep only keeps whole elements, not one value or item", span,
                      f"write {last.text.split('[')[0]}")]
    return []


def build(paths: list[ResolvedPath], text: str, private_only: bool = False) -> KeepList:
    keep = KeepList(text, private_only=private_only)
    for path in paths:
        *middle, last = path.steps
        if last.any_depth and not middle:
            _add_last(keep.anywhere, last)
            continue
        level = keep.top
        for step in middle:
            child = level.tags.get(step.tag)
            if child is None:
                child = level.tags[step.tag] = KeepLevel()
            level = child
        if last.any_depth:  # Seq[*].**.X: X at any depth below Seq; kept simply: anywhere
            _add_last(keep.anywhere, last)
        else:
            _add_last(level, last)
    return keep


def unkept_uids(keep: KeepList) -> list[str]:
    """The SOP UIDs this list deletes (none reported when a selector may keep them)."""
    if keep.top.selects or keep.anywhere.selects:
        return []
    return [keyword for tag, keyword in SOP_UIDS.items()
            if not keep.top.names(tag) and not keep.anywhere.names(tag)]


def unkept_warning(keep: KeepList, span) -> Diagnostic | None:
    missing = unkept_uids(keep)
    if not missing:
        return None
    return warning("not-kept", f"keep only deletes {' and '.join(missing)}: the instance cannot be stored or "
                   "sent without it", span, "add " + ", ".join(f"DataSet.{k}" for k in missing) + " to the list")


__all__ = ["IMAGE_PIXEL_TAGS", "KeepLevel", "KeepList", "build", "check_path", "unkept_warning"]
