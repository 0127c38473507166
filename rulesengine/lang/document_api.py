"""What compiled rules may ask of a document.

The generated code (compiler.py) and the Evaluation (ruleset.py) call a document
through these methods and attributes only; rulesengine.document.Document is the
implementation. Paths come resolved by the checks (paths.ResolvedPath); an item or
element reference is whatever `item_refs` and `element_refs` return, handed back
unopened.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

from .paths import ResolvedPath


class RuleEdit(Protocol):
    """One change an edit made: the concrete path, and the values before and after."""

    path: str
    old: Any
    new: Any


@runtime_checkable
class RuleDocument(Protocol):
    """A document as compiled rules see it."""

    # Values read by path, keyed by the path's text (and by what the compiler adds for computed
    # values): read through by generated code to skip a call, emptied in place on every edit.
    cache: dict[str, Any]
    arrival: Any  # the facts of its arrival: loop_reason reads calling_aet

    def read_path(self, path: ResolvedPath, base: Any = None) -> Any:
        """The value at `path` (from the item `base`, if given), or None when absent."""

    def write_path(self, path: ResolvedPath, value: Any, base: Any = None) -> Sequence[RuleEdit]: ...

    def blank_path(self, path: ResolvedPath, base: Any = None) -> Sequence[RuleEdit]: ...

    def delete_path(self, path: ResolvedPath, base: Any = None) -> Sequence[RuleEdit]: ...

    def delete_private(self) -> Sequence[RuleEdit]: ...

    def blank_pixels(self, regions: Sequence[tuple[Any, Any, Any, Any]], fill: Any = 0) -> Sequence[RuleEdit]:
        """`blank pixels`: rectangles (x, y, width, height) of every frame set to `fill`."""

    def delete_private_blocks(self, creators: Any, keep: bool) -> Sequence[RuleEdit]: ...

    def keep_only(self, kept: Any) -> Sequence[RuleEdit]: ...

    def item_refs(self, path: ResolvedPath, base: Any = None) -> Iterable[Any]:
        """The items of the sequences `path` reaches, for `for each` and `any`/`all`."""

    def element_refs(self, path: ResolvedPath, base: Any = None) -> Iterable[Any]:
        """The elements `path` reaches, for `for each` over elements."""

    def append_items(self, path: ResolvedPath, base: Any = None) -> Sequence[RuleEdit]:
        """A new item at the end of each sequence `path` names; each edit holds it as `item`."""

    def delete_items(self, path: ResolvedPath, doomed: Sequence[Any], base: Any = None) -> Sequence[RuleEdit]:
        """Remove these items (from `item_refs` of the same path)."""

    def copy_path(self, source: ResolvedPath, target: ResolvedPath, source_base: Any = None,
                  target_base: Any = None) -> Sequence[RuleEdit]: ...

    def copy_ref(self, ref: Any, target: ResolvedPath, target_base: Any = None) -> Sequence[RuleEdit]:
        """`copy NAME to PATH`: the item or element a loop variable is bound to."""

    def read_ref(self, ref: Any) -> Any: ...

    def write_ref(self, ref: Any, value: Any) -> Sequence[RuleEdit]: ...

    def blank_ref(self, ref: Any) -> Sequence[RuleEdit]: ...

    def delete_ref(self, ref: Any) -> Sequence[RuleEdit]: ...

    def copy(self) -> "RuleDocument":
        """An independent copy, which a `copy to` block edits for its destination."""
