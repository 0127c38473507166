"""Senders: how one delivery reaches a DICOM SCP (C-STORE) or a folder. A worklist
destination answers queries and takes no instances: its sender refuses each one.

A sender raises LinkError when the destination cannot be reached at all (the
whole queue of that destination waits and keeps its order), and ItemError when
this one instance failed while the destination works (it is retried on its own).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import string
import uuid

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from ..config import DicomDestination, FolderDestination, WorklistDestination, check_naming, naming_fields  # noqa: F401
from ..lang.paths import lookup_keyword
from .associations import NO_CONTEXT, UNREACHABLE, AssociationFailed, PeerWatch, client_ae, request, unanswered
from .journal import Delivery
from .pynetdicom_setup import tune_connection
from .statuses import is_stored
from .storage import fsync_dir, fsync_file
from .transcode import CONVERTIBLE, LITTLE_ENDIAN, ConversionError, can_convert, convert, deflated_for_the_network

log = logging.getLogger("rulesengine.delivery")

MAX_CONTEXTS = 128


class LinkError(Exception):
    """The destination cannot be reached: no connection, no association, or a C-ECHO on a
    fresh association fails too."""


class ItemError(Exception):
    """This instance failed and the destination works: a failure status, no acceptable
    transfer syntax, or an association or a C-STORE the peer refused or aborted for it while
    it answers a C-ECHO."""


class DicomSender:
    """C-STORE over an association kept open for a batch of instances."""

    def __init__(self, destination: DicomDestination):
        self.destination = destination
        self.ae = client_ae(destination)
        self.assoc = None
        self.watch: PeerWatch | None = None  # what the peer did on self.assoc
        self.proposed: set = set()  # (SOP class, transfer syntaxes) proposed for self.assoc
        self.sent = 0
        # A C-STORE sub-operation of a C-MOVE or C-GET names the request it serves:
        # (Move Originator AE title, Move Originator Message ID).
        self.originator: tuple[str, int] | None = None

    # ---- association ----

    def _contexts(self, items: list[Delivery]):
        """One presentation context per SOP class and transfer syntax, as DCMTK's storescu
        proposes them: each instance's own syntax, and Explicit and Implicit VR Little
        Endian, so that the peer can take each as it is or in one the router converts to."""
        contexts = []
        seen = set()
        for item in items:
            if not item.sop_class_uid:
                continue  # send() refuses it
            for syntax in (item.transfer_syntax, *LITTLE_ENDIAN):
                key = (item.sop_class_uid, syntax)
                if syntax and key not in seen and len(contexts) < MAX_CONTEXTS:
                    seen.add(key)
                    contexts.append(build_context(item.sop_class_uid, [syntax]))
        return contexts

    def _covers(self, items: list[Delivery]) -> bool:
        """Can the open association carry these items, each in its own or a convertible syntax?"""
        return all(self._syntax_for(item) is not None for item in items)

    def _syntax_for(self, item: Delivery) -> str | None:
        """The transfer syntax the item goes in on the open association: its own when the
        peer accepts it, else one it can be converted to; None when there is none."""
        if self._accepted(item.sop_class_uid, item.transfer_syntax):
            return item.transfer_syntax
        return next((syntax for syntax in LITTLE_ENDIAN if can_convert(item.transfer_syntax, syntax)
                     and self._accepted(item.sop_class_uid, syntax)), None)

    def open(self, items: list[Delivery]) -> None:
        """An association that can carry items[0], and as many of the others as it can: the
        one open, or a new one. LinkError when the destination cannot be reached; ItemError
        when the peer refuses an association for items[0] yet answers a C-ECHO."""
        first = items[:1]
        if self.assoc is not None and self.assoc.is_established and self.sent < self.destination.batch \
                and (self._covers(first) or self._keys(first) <= self.proposed):
            return  # what it cannot carry was proposed to it already: send() says why
        self.close()
        refusal = self._try_start(items)
        if refusal is None:
            return
        # Rejected without a reason, aborted or closed: because of the destination, or of what was proposed?
        self._check_reachable(str(refusal))
        if len(items) > 1:
            refusal = self._try_start(first)
            if refusal is None:
                return
        raise ItemError(self._refused_for(first[0], f"{refusal}; the destination answers C-ECHO"))

    def _try_start(self, items: list[Delivery]) -> AssociationFailed | None:
        """An association for these items: None when it is established; the failure when only
        a C-ECHO can tell whose it is; LinkError when the destination cannot be reached;
        ItemError when it accepts none of the presentation contexts of items[0]."""
        try:
            self._start(items)
            return None
        except AssociationFailed as failure:
            if failure.kind == UNREACHABLE:
                raise LinkError(str(failure)) from None
            if failure.kind == NO_CONTEXT:
                raise ItemError(self._refused_for(items[0], str(failure))) from None
            return failure

    def _start(self, items: list[Delivery]) -> None:
        contexts = self._contexts(items)
        self.assoc, self.watch = request(self.ae, self.destination, contexts, [(evt.EVT_CONN_OPEN, tune_connection)])
        self.proposed, self.sent = self._keys(items, contexts), 0

    def _keys(self, items: list[Delivery], contexts=None) -> set:
        return {(cx.abstract_syntax, tuple(cx.transfer_syntax)) for cx in contexts or self._contexts(items)}

    @staticmethod
    def _refused_for(item: Delivery, why: str) -> str:
        return f"association for {item.sop_instance_uid} ({item.sop_class_uid} in {item.transfer_syntax}): {why}"

    def _check_reachable(self, after: str) -> None:
        """LinkError unless a C-ECHO on a fresh association is answered."""
        try:
            self._echo_status()
        except AssociationFailed as failure:
            if failure.kind != NO_CONTEXT:  # accepted, without C-ECHO: it does answer
                raise LinkError(f"{after}; then C-ECHO: {failure}") from None
        except LinkError as exc:
            raise LinkError(f"{after}; then C-ECHO: {exc}") from None

    def close(self) -> None:
        if self.assoc is not None:
            try:
                if self.assoc.is_established:
                    self.assoc.release()
            finally:
                self.assoc, self.watch, self.proposed = None, None, set()

    # ---- sending ----

    def _accepted(self, sop_class: str, syntax: str) -> bool:
        return any(cx.abstract_syntax == sop_class and syntax in cx.transfer_syntax
                   for cx in self.assoc.accepted_contexts)

    def _path_for(self, item: Delivery) -> str:
        """The file to send: as stored, or a copy converted to a syntax the peer accepts
        (a deflated one padded to an even length). A copy serves one attempt."""
        syntax = self._syntax_for(item)
        if syntax is None:
            offered = sorted({ts for cx in self.assoc.accepted_contexts if cx.abstract_syntax == item.sop_class_uid
                              for ts in cx.transfer_syntax})
            if not item.transfer_syntax:
                why = "the instance's file meta names no transfer syntax"
            elif item.transfer_syntax in CONVERTIBLE:
                why = f"the instance is {item.transfer_syntax}, convertible only to Explicit or Implicit VR Little Endian"
            else:
                why = f"the instance is {item.transfer_syntax}, which cannot be converted without decompressing"
            raise ItemError(f"{self.destination.name} accepts {item.sop_class_uid} only as "
                            f"{', '.join(offered) or 'nothing'}; {why}")
        try:
            if syntax != item.transfer_syntax:
                return convert(item.path, syntax)
            if syntax == DeflatedExplicitVRLittleEndian:
                return deflated_for_the_network(item.path) or item.path
        except ConversionError as exc:
            raise ItemError(str(exc)) from None
        except OSError as exc:
            raise ItemError(f"cannot prepare {item.path} for sending: {exc.strerror or exc}") from None
        return item.path

    def send(self, item: Delivery) -> str:
        """C-STORE one instance; returns the status as text. Raises LinkError or ItemError."""
        if self.assoc is None or not self.assoc.is_established:
            raise LinkError(f"the association with {self.destination.name} was lost")
        if not item.path or not os.path.isfile(item.path):
            raise ItemError(f"the file to send is gone ({item.path})")
        if not item.sop_class_uid:
            raise ItemError(f"{item.path} has no SOP Class UID: no presentation context can carry it")
        path = self._path_for(item)
        originator = {"originator_aet": self.originator[0], "originator_id": self.originator[1]} \
            if self.originator else {}
        try:
            status = self.assoc.send_c_store(path, msg_id=self._message_id(), **originator)
        except RuntimeError:  # the association ended just before
            status = None
        except OSError as exc:
            raise ItemError(f"cannot read {item.path}: {exc.strerror or exc}") from None
        except (ValueError, AttributeError) as exc:
            raise ItemError(f"cannot send {item.path}: {exc}") from None
        finally:
            if path != item.path:
                _remove(path)  # a converted copy serves one attempt
        self.sent += 1
        if not status or "Status" not in status:
            lost = unanswered(self.assoc, self.watch, self.destination.timeouts.dimse,
                              f"sending {item.sop_instance_uid}", f"the C-STORE of {item.sop_instance_uid}")
            self.close()
            self._check_reachable(lost)  # LinkError when the destination is gone
            raise ItemError(f"{lost}; the destination answers C-ECHO")
        code = int(status.Status)
        comment = status.get("ErrorComment")
        if is_stored(code):
            return f"0x{code:04X}" + (f" {comment}" if comment else "")
        raise ItemError(f"{self.destination.name} answered 0x{code:04X}" + (f": {comment}" if comment else ""))

    def _message_id(self) -> int:
        return 1

    def echo(self) -> str:
        """C-ECHO on a fresh association: the status the destination answers, as text;
        LinkError saying why when there is none."""
        try:
            return self._echo_status()
        except AssociationFailed as failure:
            if failure.kind == NO_CONTEXT:
                raise LinkError(f"{failure}: it does not accept C-ECHO (Verification)") from None
            raise LinkError(str(failure)) from None

    def _echo_status(self) -> str:
        assoc, watch = request(self.ae, self.destination, [build_context(Verification)],
                               [(evt.EVT_CONN_OPEN, tune_connection)])
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        if not status or "Status" not in status:
            raise LinkError(unanswered(assoc, watch, self.destination.timeouts.dimse, "sending the C-ECHO",
                                       "the C-ECHO"))
        return f"0x{int(status.Status):04X}"


# ---- folders -----------------------------------------------------------------------------

_ILLEGAL = re.compile(r'[\x00-\x1f/\\:*?"<>|]')

MAX_NAME_BYTES = 200  # of one path component (file systems allow 255)
MAX_VALUE_BYTES = 100  # of one value in a name
UNKNOWN = "UNKNOWN"  # a missing or empty value


class ReturningSender(DicomSender):
    """C-STORE back to a C-GET requester, over its own association: the router is the SCU of
    the storage contexts the requester proposed to be SCP of. Nothing to open or close: the
    association is the requester's."""

    def __init__(self, assoc, name: str, requester: str, message_id: int):
        requestor = assoc.requestor
        super().__init__(DicomDestination(name=name, ae_title=requester or "REQUESTER",
                                          host=str(requestor.address), port=int(requestor.port or 104)))
        self.assoc = assoc
        self.watch = PeerWatch()
        self._next_message_id = message_id

    def open(self, items) -> None:
        if not self.assoc.is_established:
            raise LinkError("the requester's association ended")

    def close(self) -> None:
        pass

    def _check_reachable(self, after: str) -> None:
        raise LinkError(after)

    def _message_id(self) -> int:
        """Each C-STORE its own Message ID, after the C-GET's, as pynetdicom numbers them."""
        self._next_message_id = self._next_message_id % 65535 + 1
        return self._next_message_id


def _fit(text: str, limit: int = MAX_NAME_BYTES) -> str:
    """At most `limit` bytes of UTF-8, cut on a character boundary."""
    data = text.encode("utf-8", "surrogateescape")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _mark(text: str, length: int = 8) -> str:
    """`~` and the first hex digits of the SHA-256 of `text`: what tells apart two values
    that had to be changed into the same safe text."""
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def _marked(text: str, mark: str, limit: int, extension: str = "") -> str:
    """`text` cut so that it, `mark` and `extension` fit in `limit` bytes, then the three joined."""
    room = limit - len(mark.encode()) - len(extension.encode())
    return (_fit(text, room) or "_") + mark + extension


def _safe_value(value) -> str:
    """A data set value as text that is safe in a file name. A value that had to be changed
    for that (characters replaced, dots or blanks at its ends removed, cut) keeps a mark of
    what it was, so that two values never give one name ("." and ".." are not both `_`)."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = "_".join(str(v) for v in value)
    raw = str(value)
    text = raw.strip()  # padding
    if not text:
        return UNKNOWN
    safe = _ILLEGAL.sub("_", text).strip(" .")
    if safe == text and len(safe.encode("utf-8", "surrogateescape")) <= MAX_VALUE_BYTES:
        return safe
    return _marked(safe, _mark(raw), MAX_VALUE_BYTES)


def name_extension(template: str) -> str:
    """The extension a naming template gives its files (`.dcm` in `{SOPInstanceUID}.dcm`):
    the literal text after its last field, from its last dot; empty when a value ends the name."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError:
        return ""
    tail = pieces[-1][0] if pieces and pieces[-1][1] is None else ""
    tail = tail.replace("\\", "/").rsplit("/", 1)[-1]
    dot = tail.rfind(".")
    return _ILLEGAL.sub("_", tail[dot:]) if dot > 0 or (dot == 0 and len(pieces) > 1) else ""


def _split_extension(name: str, extension: str) -> tuple[str, str]:
    if extension and name.endswith(extension) and len(name) > len(extension):
        return name[:-len(extension)], extension
    return name, ""


def _fit_part(part: str, extension: str = "") -> str:
    """One path component, at most MAX_NAME_BYTES: a cut one keeps its extension and a mark
    of what was cut away."""
    if len(part.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES:
        return part
    stem, extension = _split_extension(part, extension)
    return _marked(stem, _mark(part), MAX_NAME_BYTES, extension)


def render_name(template: str, dataset) -> str:
    """A relative path from a naming template; values can never escape the folder, and
    the template's extension survives any cut."""
    values = {}
    for field in naming_fields(template):
        value = dataset.get(field) if lookup_keyword(field) else None
        values[field] = _safe_value(value) if value not in (None, "") else UNKNOWN
    try:
        rendered = template.format(**values)
    except (IndexError, KeyError, ValueError) as exc:
        raise ItemError(f"the naming template {template!r} cannot be used: {exc}") from None
    parts = [_ILLEGAL.sub("_", p).lstrip(".") or "_"
             for p in rendered.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        return UNKNOWN + ".dcm"
    extension = name_extension(template)
    return os.path.join(*[_fit_part(p) for p in parts[:-1]], _fit_part(parts[-1], extension))


def with_mark(relative: str, mark: str, extension: str) -> str:
    """The same name with `mark` before its extension, cut to fit."""
    folder, name = os.path.split(relative)
    stem, extension = _split_extension(name, extension)
    return os.path.join(folder, _marked(stem, mark, MAX_NAME_BYTES, extension))


def instance_uid_of(path: str) -> str | None:
    """The SOP Instance UID of a file already in a destination folder (None: not an instance)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception:  # noqa: BLE001 - whatever is there, it is not a readable instance
        return None
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPInstanceUID") or (meta.get("MediaStorageSOPInstanceUID") if meta is not None else None)
    return str(uid) if uid else None


# A file system without hard links: the name is checked, then the file renamed over it.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV})


def _place(temp: str, target: str) -> bool:
    """Give `temp` the name `target` if no file has it (False if one took it meanwhile)."""
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(target):
            return False
        os.replace(temp, target)
        return True
    os.unlink(temp)
    return True


class FolderSender:
    """Writes each instance as a file: a temporary name first, then a rename.

    Distinct instances never share a file: when the name the template gives is taken by
    a file of another SOP Instance UID (or by anything else), the instance gets that name
    with `~` and hex digits of the SHA-256 of its UID before the extension. The same
    instance delivered again finds its own file under one of those names and replaces it."""

    MARK_LENGTHS = (8, 16, 64)  # hex digits of the UID's hash tried in turn

    def __init__(self, destination: FolderDestination):
        self.destination = destination
        self.extension = name_extension(destination.naming)

    def open(self, items) -> None:
        try:
            os.makedirs(self.destination.path, exist_ok=True)
        except OSError as exc:  # the whole destination is unusable, not one instance: wait and retry
            raise LinkError(f"folder {self.destination.path} cannot be created: {exc.strerror or exc}") from None

    def close(self) -> None:
        pass

    def send(self, item: Delivery) -> str:
        temp = None
        try:
            header = pydicom.dcmread(item.path, stop_before_pixels=True)
            relative = render_name(self.destination.naming, header)
            uid = str(header.get("SOPInstanceUID") or item.sop_instance_uid or "") or None
            folder = os.path.dirname(os.path.join(self.destination.path, relative))
            os.makedirs(folder, exist_ok=True)
            temp = os.path.join(folder, f".{uuid.uuid4().hex[:12]}.tmp")
            shutil.copyfile(item.path, temp)
            fsync_file(temp)
            target = self._put(temp, relative, uid)
            temp = None
            fsync_dir(folder)
        except OSError as exc:
            raise ItemError(f"cannot write to {self.destination.path}: {exc.strerror or exc}") from None
        finally:
            if temp is not None:
                _remove(temp)
        return target

    def _put(self, temp: str, relative: str, uid: str | None) -> str:
        """Rename `temp` to the instance's own name (see the class); returns the path."""
        marks = [_mark(uid, length) for length in self.MARK_LENGTHS] if uid else []
        for mark in (None, *marks):
            target = os.path.join(self.destination.path,
                                  relative if mark is None else with_mark(relative, mark, self.extension))
            if not os.path.lexists(target):
                if _place(temp, target):
                    return target
            if uid and os.path.isfile(target) and instance_uid_of(target) == uid:
                os.replace(temp, target)  # this instance, delivered again
                return target
        while True:  # no UID, or every name taken by others: a name of its own
            target = os.path.join(self.destination.path, with_mark(relative, "~" + uuid.uuid4().hex, self.extension))
            if _place(temp, target):
                return target


class WorklistRefusal:
    """A worklist destination's stand-in sender: every instance routed there fails on its own."""

    def __init__(self, destination: WorklistDestination):
        self.destination = destination

    def open(self, items) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, item: Delivery) -> str:
        raise ItemError(f"{self.destination.name} is a worklist: it answers worklist queries and takes no instances")


def sender_for(destination) -> DicomSender | FolderSender | WorklistRefusal:
    if destination.type == "worklist":
        return WorklistRefusal(destination)
    return DicomSender(destination) if destination.type == "dicom" else FolderSender(destination)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
