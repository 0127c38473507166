"""Senders: how one delivery reaches a DICOM SCP (C-STORE) or a folder.

A sender raises LinkError when the destination cannot be reached at all (the
whole queue of that destination waits and keeps its order), and ItemError when
the destination refuses this one instance (it is retried on its own).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import ssl
import uuid
import time

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context

from ..config import TLS, DicomDestination, FolderDestination, check_naming, naming_fields  # noqa: F401
from ..lang.paths import lookup_keyword
from .journal import Delivery
from .storage import fsync_dir, fsync_file
from .transcode import CONVERTIBLE, LITTLE_ENDIAN, ConversionError, can_convert, convert, deflated_for_the_network

log = logging.getLogger("rulesengine.delivery")

MAX_CONTEXTS = 128


class LinkError(Exception):
    """The destination cannot be reached: association refused, aborted, timed out."""


class ItemError(Exception):
    """The destination refused this instance (a failure status, no acceptable transfer syntax)."""


MAX_QUEUED_PDUS = 16  # PDUs waiting to be written to one association's socket


def set_nodelay(event) -> None:
    """Handler of EVT_CONN_OPEN, the two hooks the router puts around pynetdicom's transport:

    - pynetdicom leaves Nagle's algorithm on: each small PDU would then wait for the
      peer's delayed ACK (tens of milliseconds per instance);
    - sending a data set from a file, pynetdicom queues PDUs faster than the socket
      takes them, so a 1 GB instance would pile up in memory: the queue is bounded.
    """
    dul = event.assoc.dul
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    _bound_send_queue(dul)


def _bound_send_queue(dul) -> None:
    send_pdu = dul.send_pdu

    def bounded_send_pdu(primitive) -> None:
        queued = dul.to_provider_queue
        while queued.qsize() >= MAX_QUEUED_PDUS and dul.is_alive() and not dul._kill_thread:
            time.sleep(0.0005)
        send_pdu(primitive)

    dul.send_pdu = bounded_send_pdu


def client_tls_args(tls: TLS, host: str) -> tuple[ssl.SSLContext, str | None]:
    """pynetdicom's tls_args for a destination: the context, and the name its certificate must carry."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificates)
    context.check_hostname = tls.check_hostname
    context.load_cert_chain(tls.certificate, tls.private_key)
    return context, host if tls.check_hostname else None


def tls_failure(destination: DicomDestination) -> str | None:
    """Why a TLS connection to the destination fails, found by trying the handshake alone:
    pynetdicom only logs it. None when the handshake succeeds (or TCP alone fails)."""
    context, server_hostname = client_tls_args(destination.tls, destination.host)
    try:
        with socket.create_connection((destination.host, destination.port), destination.timeouts.connect) as raw:
            with context.wrap_socket(raw, server_hostname=server_hostname):
                return None
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the destination's certificate is not accepted: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except OSError:
        return None


class DicomSender:
    """C-STORE over an association kept open for a batch of instances."""

    def __init__(self, destination: DicomDestination):
        self.destination = destination
        self.ae = AE(ae_title=destination.calling_ae_title)
        self.ae.maximum_pdu_size = destination.max_pdu
        self.ae.acse_timeout = destination.timeouts.acse
        self.ae.dimse_timeout = destination.timeouts.dimse
        self.ae.network_timeout = destination.timeouts.network
        self.ae.connection_timeout = destination.timeouts.connect
        self.assoc = None
        self.sent = 0

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
        """An association that can carry these items: the one open, or a new one."""
        if self.assoc is not None and self.assoc.is_established and self.sent < self.destination.batch \
                and self._covers(items):
            return
        self.close()
        assoc = self._associate(self._contexts(items))
        self.assoc, self.sent = assoc, 0

    def _associate(self, contexts):
        """A new association with the destination, or LinkError saying why not."""
        destination = self.destination
        kwargs = {"ae_title": destination.ae_title, "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)],
                  "max_pdu": destination.max_pdu}
        if destination.tls is not None:
            kwargs["tls_args"] = client_tls_args(destination.tls, destination.host)
        assoc = self.ae.associate(destination.host, destination.port, contexts, **kwargs)
        if assoc.is_established:
            return assoc
        # pynetdicom marks a refused or dropped connection as aborted too, and only logs a TLS failure
        if assoc.is_rejected:
            why = "rejected by the destination"
        elif destination.tls is not None and (tls_problem := tls_failure(destination)):
            why = f"not established: {tls_problem}"
        else:
            why = "not established (connection refused, closed, or no answer)"
        raise LinkError(f"association with {destination.ae_title}@{destination.host}:{destination.port} {why}")

    def close(self) -> None:
        if self.assoc is not None:
            try:
                if self.assoc.is_established:
                    self.assoc.release()
            finally:
                self.assoc = None

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
        try:
            status = self.assoc.send_c_store(path)
        except (OSError, RuntimeError) as exc:
            raise LinkError(f"sending to {self.destination.name} failed: {exc}") from None
        except (ValueError, AttributeError) as exc:
            raise ItemError(f"cannot send {item.path}: {exc}") from None
        finally:
            if path != item.path:
                _remove(path)  # a converted copy serves one attempt
        self.sent += 1
        if not status or "Status" not in status:
            raise LinkError(f"{self.destination.name} did not answer (association "
                            f"{'aborted' if self.assoc.is_aborted else 'lost'})")
        code = int(status.Status)
        comment = status.get("ErrorComment")
        if code == 0 or code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
            return f"0x{code:04X}" + (f" {comment}" if comment else "")
        raise ItemError(f"{self.destination.name} answered 0x{code:04X}" + (f": {comment}" if comment else ""))

    def echo(self) -> str:
        """C-ECHO: the status the destination answers, as text; LinkError when it cannot be reached."""
        assoc = self._associate([build_context("1.2.840.10008.1.1")])
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or "Status" not in status:
            raise LinkError("no answer to C-ECHO")
        return f"0x{int(status.Status):04X}"


# ---- folders -----------------------------------------------------------------------------

_ILLEGAL = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


MAX_NAME_BYTES = 200  # of one path component (file systems allow 255)


def _fit(text: str, limit: int = MAX_NAME_BYTES) -> str:
    """At most `limit` bytes of UTF-8, cut on a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _safe_value(value) -> str:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = "_".join(str(v) for v in value)
    text = _ILLEGAL.sub("_", str(value)).strip().strip(".")
    return _fit(text, 100) or "UNKNOWN"


def render_name(template: str, dataset) -> str:
    """A relative path from a naming template; values can never escape the folder."""
    values = {}
    for field in naming_fields(template):
        value = dataset.get(field) if lookup_keyword(field) else None
        values[field] = _safe_value(value) if value not in (None, "") else "UNKNOWN"
    try:
        rendered = template.format(**values)
    except (IndexError, KeyError, ValueError) as exc:
        raise ItemError(f"the naming template {template!r} cannot be used: {exc}") from None
    parts = [p for p in rendered.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return os.path.join(*[_fit(_ILLEGAL.sub("_", p).lstrip(".")) or "_" for p in parts]) if parts else "UNKNOWN.dcm"


class FolderSender:
    """Writes each instance as a file: a temporary name first, then a rename."""

    def __init__(self, destination: FolderDestination):
        self.destination = destination

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
            target = os.path.join(self.destination.path, relative)
            folder = os.path.dirname(target)
            os.makedirs(folder, exist_ok=True)
            temp = os.path.join(folder, f".{uuid.uuid4().hex[:12]}.tmp")
            shutil.copyfile(item.path, temp)
            fsync_file(temp)
            os.replace(temp, target)
            temp = None
            fsync_dir(folder)
        except OSError as exc:
            raise ItemError(f"cannot write to {self.destination.path}: {exc.strerror or exc}") from None
        finally:
            if temp is not None:
                _remove(temp)
        return target


def sender_for(destination) -> DicomSender | FolderSender:
    return DicomSender(destination) if destination.type == "dicom" else FolderSender(destination)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
