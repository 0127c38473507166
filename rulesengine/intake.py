"""What the router takes in: one decision, shared by the listener, the watched folders and dry-run.

A file is taken when it is a DICOM instance the router can route: its header
reads (everything before the pixel data, with the completeness checks of
`Document.read_header`: a transfer cut short is found here), and its data set
names its SOP class and instance. Otherwise it is refused here, with the
reason: a listener answers a failure status, a watched folder moves the file to
failed/, dry-run reports it. Taken, it is read the same way again wherever the
rules run, so what dry-run shows is what the router does.

A data set without file meta information (no DICM header) is taken when it names
its SOP class and instance; the router keeps it with a file meta written for
it (`needs_file_meta`), so that destinations receive a proper DICOM file.
"""

from __future__ import annotations

import os

import pydicom

from .document import TOO_DEEP, Arrival, Document, DocumentReadError
from .wellformed import NotWellFormed, check_file

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR
MAX_REASON_LENGTH = 200  # a reason quoting pydicom is cut here: it goes into logs and .reason.txt files


class RefusedAtIntake(DocumentReadError):
    """A file that reads, but that the router does not route: not an instance (a DICOMDIR),
    or an instance without its SOP class or instance UID. `reason` says which."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def read_instance(path: str | os.PathLike, arrival: Arrival | None = None) -> Document:
    """The header of an instance the router takes. Raises DocumentReadError with the reason
    when the file cannot be read, RefusedAtIntake (a DocumentReadError) when it is refused."""
    path = os.fspath(path)
    try:
        document = Document.read_header(path, arrival)
        reason = refusal(document)
    except DocumentReadError:
        raise
    except RecursionError:
        raise DocumentReadError(f"{path}: cannot read: {TOO_DEEP}") from None
    except Exception as exc:  # noqa: BLE001 - pydicom parsing a damaged file can raise anything
        raise DocumentReadError(f"{path}: cannot read: {short_error(exc)}") from None
    if reason is not None:
        raise RefusedAtIntake(path, reason)
    check_well_formed(path, document)
    return document


def check_well_formed(path: str, document: Document) -> None:
    """The whole data set, pixel data and what follows it included, as a strict parser reads it
    (`rulesengine.wellformed`): what no destination could take is refused here, not answered
    Success and then failed at every destination. Raises DocumentReadError with the reason."""
    syntax = document.file_meta.get("TransferSyntaxUID")
    try:
        check_file(path, document.dataset.original_encoding,
                   deflated=syntax == pydicom.uid.DeflatedExplicitVRLittleEndian)
    except NotWellFormed as exc:
        raise DocumentReadError(f"{path}: the data set is damaged: {exc}") from None
    except OSError as exc:
        raise DocumentReadError(f"{path}: cannot read: {exc.strerror or exc}") from None


def refusal(document: Document) -> str | None:
    """Why the router does not route this document, or None when it does."""
    if MEDIA_STORAGE_DIRECTORY in (document.get("FileMeta.MediaStorageSOPClassUID"),
                                   document.get("DataSet.SOPClassUID")):
        return "a DICOMDIR (a media directory) is not an instance to route"
    missing = [name for name, path in (("SOP Class UID", "DataSet.SOPClassUID"),
                                       ("SOP Instance UID", "DataSet.SOPInstanceUID"))
               if not document.get(path)]
    if missing:
        return f"no {' and no '.join(missing)} in the data set"
    return None


def needs_file_meta(document: Document) -> bool:
    """Read without (complete) file meta information: the router writes it before it keeps the
    instance, so that destinations receive a proper DICOM file."""
    return any(not document.file_meta.get(keyword) for keyword in
               ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"))


def short_error(exc: BaseException) -> str:
    """An exception from pydicom as one line of a reason: its first line, cut to a readable length."""
    text = (str(exc).strip().splitlines() or [""])[0].strip() or type(exc).__name__
    return text if len(text) <= MAX_REASON_LENGTH else text[:MAX_REASON_LENGTH - 3] + "..."
