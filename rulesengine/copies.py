"""The copy each destination receives, written as the router writes it: shared with dry-run, so
that a copy that cannot be written fails the same way in both, with the same reason.

A destination whose copy nothing edited receives the received file itself (the router
never writes it again); any other gets an edited copy, written by `Document.write`.
A received file whose file meta information does not describe its data set (there is
none, or it names another SOP class, instance or transfer syntax) is kept with file meta
made from the data set, its data set's bytes as received (`keep_with_file_meta`).
A data set can hold what cannot be written back (a command element (0000,xxxx) among
its elements, a value pydicom cannot encode in its VR), or a copy can lack what
sending it needs (a rule deleted or emptied its SOP Class UID or SOP Instance UID):
writing its copy raises CopyError, and the router quarantines the instance with
that reason.
"""

from __future__ import annotations

import os
import struct

from pydicom.errors import BytesLengthException

from .dicomfile import encode_file_meta, write_with_file_meta
from .document import Document
from .intake import kept_file_meta, needs_file_meta, short_error, uid_problem
from .lang.ruleset import Decision

# What pydicom raises for a value it cannot encode; anything else writing a copy is a bug.
_ENCODING_ERRORS = (ValueError, TypeError, struct.error, OverflowError, LookupError, NotImplementedError,
                    RecursionError, BytesLengthException)


class CopyError(Exception):
    """A destination's copy that cannot be written; the message is the reason."""


def is_received_file(document: Document, copy: Document, decision: Decision) -> bool:
    """Does this destination receive the received file itself, unwritten?"""
    edited_main = any(edit.destination is None for edit in decision.edits)
    return copy is document and not edited_main and not needs_file_meta(document)


def write_copy(copy: Document, destination: str, target: str | os.PathLike) -> None:
    """Write a destination's edited copy to `target`. Raises CopyError with the reason when the
    data set cannot be written, OSError when the file cannot."""
    problem = sop_problem(copy)
    if problem is not None:
        raise CopyError(f"the copy for {destination} cannot be written: {problem}")
    try:
        copy.write(target)
    except OSError:
        raise
    except _ENCODING_ERRORS as exc:
        raise CopyError(copy_failure(destination, exc)) from None


def sop_problem(copy: Document) -> str | None:
    """Why a copy cannot be sent as an instance: a destination is sent it under its own SOP
    class and instance, so the data set must still name them (a rule may have deleted or
    emptied one, or set one to what is not a UID). None when it can."""
    for keyword, name in (("SOPClassUID", "SOP Class UID"), ("SOPInstanceUID", "SOP Instance UID")):
        value = copy.get(f"DataSet.{keyword}")
        if value is None:
            return f"its data set has no {name} (a rule deleted it)"
        if not isinstance(value, str):
            return f"its data set has several {name}s"
        text = value.strip("\0 ")
        if not text:
            return f"its {name} is empty (a rule emptied it)"
        problem = uid_problem(text, sop_class=keyword == "SOPClassUID")
        if problem is not None:
            return f"its {name} is not a UID ({problem}): {text!r}"
    return None


def keep_with_file_meta(document: Document, target: str | os.PathLike) -> None:
    """Write the received file `document` was read from to `target` with file meta information
    made from its data set (`intake.kept_file_meta`), its data set's bytes as received
    (`dicomfile.write_with_file_meta`). Raises CopyError when the file meta cannot be written,
    OSError when a file cannot."""
    try:
        encoded = encode_file_meta(kept_file_meta(document))
    except _ENCODING_ERRORS as exc:
        raise CopyError(short_error(exc)) from None
    write_with_file_meta(document.filename, encoded, target)


def copy_failure(destination: str, exc: BaseException) -> str:
    return f"the copy for {destination} cannot be written: {short_error(exc)}"
