"""What the router takes in: one decision, shared by the listener, the watched folders and dry-run.

A file is taken when it is a DICOM instance the router can route: its header
reads (everything before the pixel data, with the completeness checks of
`Document.read_header`: a transfer cut short is found here), and its data set
names its SOP class and instance. Otherwise it is refused here, with the
reason: a listener answers a failure status, a watched folder moves the file to
failed/, dry-run reports it. Taken, it is read the same way again wherever the
rules run, so what dry-run shows is what the router does.

A data set without file meta information (no DICM header) is taken when it names
its SOP class and instance; so is one whose file meta names another SOP class,
instance or transfer syntax than its data set (a file written by a tool that
changed the data set and not its file meta, or by a sender whose C-STORE request
disagreed with what it sent). Either way the router keeps it with file meta
information made from the data set (`needs_file_meta`, `kept_file_meta`), its data
set as received: a destination is sent the instance under the data set's UIDs, and
the journal records those.

Checked once. The router reads a received file twice: at its answer, and when it
is processed (perhaps by another process, after a restart, or by another node).
The first read checks it whole; the journal keeps the file's fingerprint then
(`Document.fingerprint`: its size, modification time and inode, and a CRC-32 of
its header, the bytes before the pixel data, taken from the bytes the read
parsed); the second read skips the checks (the refusal and the walk of
`rulesengine.wellformed`) while the file it reads still matches that fingerprint,
which costs a CRC of a few kilobytes against the walk's hundreds of element
headers and the refusal's conversions. A file changed after its check, written to or replaced (even with
its modification time put back), or whose header was damaged, no longer matches,
and is checked again in full before the rules see it. What the fingerprint does
not cover, damage below the file system inside the pixel data with neither size
nor time changed, no check covers either: the walk reads element headers, never
pixel values.
"""

from __future__ import annotations

import os
import re

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .dicomfile import TOO_DEEP
from .document import Arrival, Document, DocumentReadError
from .wellformed import NotWellFormed, check_file

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR
MAX_REASON_LENGTH = 200  # a reason quoting pydicom is cut here: it goes into logs and .reason.txt files
# The uncompressed transfer syntax of each encoding pydicom can find: (implicit VR, little endian) -> syntax
UNCOMPRESSED = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
                (False, False): ExplicitVRBigEndian}


class RefusedAtIntake(DocumentReadError):
    """A file that reads, but that the router does not route: not an instance (a DICOMDIR), an
    instance without its SOP class or instance UID (or with several), or a data set that no
    transfer syntax describes. `reason` says which."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def read_instance(path: str | os.PathLike, arrival: Arrival | None = None, checked: str | None = None) -> Document:
    """The header of an instance the router takes. Raises DocumentReadError with the reason
    when the file cannot be read, RefusedAtIntake (a DocumentReadError) when it is refused.
    `checked`: the file's fingerprint when it was taken (`Document.fingerprint`); while the
    file still matches it, what was checked then is not checked again (see the module's
    docstring)."""
    path = os.fspath(path)
    try:
        document = Document.read_header(path, arrival)
        if checked is not None and document.fingerprint == checked:
            return document  # as it was when it was checked
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
    several = [name for name, path in (("SOP Class UIDs", "DataSet.SOPClassUID"),
                                       ("SOP Instance UIDs", "DataSet.SOPInstanceUID"))
               if not isinstance(document.get(path), str)]
    if several:
        return f"several {' and '.join(several)} in the data set"
    for name, path in (("SOP Class UID", "DataSet.SOPClassUID"), ("SOP Instance UID", "DataSet.SOPInstanceUID")):
        if uid_problem(_text(document.get(path)), name == "SOP Class UID") is not None:
            return _within_comment(f"the {name} is not a UID: {_text(document.get(path))!r}")
    if syntax_found(document) is None:
        # Every syntax but Implicit VR Little Endian is explicit VR; pydicom tells VR encodings apart only.
        return "the data set is implicit VR; its transfer syntax is explicit VR"
    return None


MAX_UID_LENGTH = 64
_UID_CHARACTERS = re.compile(r"[0-9.]+")


def uid_problem(value: str, sop_class: bool = False) -> str | None:
    """Why `value` cannot serve as a UID in an association or a C-STORE request, or None.
    Components with leading zeros, found in real instances and taken by peers, are let through;
    what cannot be encoded (letters, other characters, more than 64) is not. A SOP class is
    proposed as an abstract syntax: its root arc must be 0, 1 or 2, as negotiation demands."""
    if not _UID_CHARACTERS.fullmatch(value):
        return "not digits and dots only"
    if len(value) > MAX_UID_LENGTH:
        return f"longer than {MAX_UID_LENGTH} characters"
    if sop_class and (value.split(".")[0] not in ("0", "1", "2") or "." not in value or "" in value.split(".")):
        return "not an object identifier"
    return None


def _within_comment(reason: str, limit: int = 64) -> str:
    """A reason that fits a C-STORE response's Error Comment whole."""
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."


def syntax_found(document: Document) -> str | None:
    """The transfer syntax the data set is encoded in: the file meta's when the data set is encoded
    as it says, else the uncompressed syntax of the encoding pydicom found and read it in (the
    document records it: an uncompressed data set declared in another uncompressed syntax, or one
    without file meta). None when no transfer syntax describes it (compressed pixel data or a
    deflated stream, in a data set of implicit VR)."""
    declared = document.file_meta.get("TransferSyntaxUID")
    if declared and uid_problem(_text(declared)) is not None:
        declared = None  # garbled: described by what the data set is found in, as without file meta
    found = tuple(document.dataset.original_encoding)
    if declared and _encoding_of(UID(str(declared))) == found:
        return str(declared)
    if declared and str(declared) not in UNCOMPRESSED.values():
        return None  # a compressed or deflated data set: its bytes cannot be described by another syntax
    return UNCOMPRESSED.get(found)


def _encoding_of(syntax: UID) -> tuple[bool, bool]:
    """The encoding pydicom reads a data set of this transfer syntax in: any syntax it does not
    know is Explicit VR Little Endian, as the compressed ones are."""
    if syntax.is_transfer_syntax:
        return syntax.is_implicit_VR, syntax.is_little_endian
    return False, True


def file_meta_problem(document: Document) -> str | None:
    """Why the file meta information does not describe the data set (there is none, or it names
    another SOP class, instance or transfer syntax); None when it does. Such an instance is kept
    with file meta made from its data set (`kept_file_meta`)."""
    meta = document.file_meta
    if all(element.tag == 0x00020010 for element in meta):  # what the reader makes for a data set without it
        return "no file meta information"
    differences = []
    for keyword, data_set_keyword, name in (("MediaStorageSOPClassUID", "SOPClassUID", "SOP Class UID"),
                                            ("MediaStorageSOPInstanceUID", "SOPInstanceUID", "SOP Instance UID")):
        in_meta, in_data_set = _text(meta.get(keyword)), _text(document.get(f"DataSet.{data_set_keyword}"))
        if in_meta != in_data_set:
            differences.append(f"{name} {in_meta or '(none)'}, its data set {in_data_set}")
    declared, found = _text(meta.get("TransferSyntaxUID")), syntax_found(document)
    if found is not None and declared != found:
        differences.append(f"transfer syntax {declared or '(none)'}, its data set is in {found}")
    if not differences:
        return None
    return "its file meta information names " + "; ".join(differences)


def _text(value) -> str:
    return str(value or "").strip("\0 ")


def needs_file_meta(document: Document) -> bool:
    """Read without file meta information, or with one that does not describe the data set: the
    router keeps such an instance with file meta made from the data set (`kept_file_meta`), so
    that destinations receive a proper DICOM file, sent under the data set's own UIDs."""
    return file_meta_problem(document) is not None


def kept_file_meta(document: Document) -> FileMetaDataset:
    """The file meta information the router keeps an instance with: the file's own elements
    (implementation, source AE title...) where it has them, naming the data set's SOP class and
    instance and the transfer syntax it is encoded in."""
    meta = FileMetaDataset()
    for element in document.file_meta:
        if element.tag != 0x00020000:  # the group length is computed again when written
            meta.add(element)
    values = {0x00020002: document.get("DataSet.SOPClassUID"), 0x00020003: document.get("DataSet.SOPInstanceUID"),
              0x00020010: syntax_found(document)}
    for tag, value in values.items():
        # as the data set has it, valid or not: a peer judges its own, as it does the data set's
        meta[tag] = DataElement(tag, "UI", _text(value), validation_mode=pydicom_config.IGNORE)
    return meta


def reason_of(exc: DocumentReadError, path: str | os.PathLike) -> str:
    """Why a file was not taken, without its name: what a report or a .reason.txt beside the
    file says (DocumentReadError's message starts with the path read)."""
    if isinstance(exc, RefusedAtIntake):
        return exc.reason
    path = os.fspath(path)
    return str(exc).removeprefix(f"{path}: ").replace(path, "the file")


def short_error(exc: BaseException) -> str:
    """An exception from pydicom as one line of a reason: its first line, cut to a readable length."""
    text = (str(exc).strip().splitlines() or [""])[0].strip() or type(exc).__name__
    return text if len(text) <= MAX_REASON_LENGTH else text[:MAX_REASON_LENGTH - 3] + "..."
