"""DICOM Upper Layer PDUs as bytes (PS3.8 9.3), written by hand so that a test can send
exactly what a broken or hostile peer sends: wrong lengths, truncations, garbage."""

from __future__ import annotations

import socket
import struct
import time

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.7433.1.1"

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = range(1, 8)


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _uid(uid: str) -> bytes:
    return uid.encode("ascii")


def presentation_context(context_id: int, abstract_syntax: str, transfer_syntaxes: list[str]) -> bytes:
    body = struct.pack(">BBBB", context_id, 0, 0, 0) + _item(0x30, _uid(abstract_syntax))
    return _item(0x20, body + b"".join(_item(0x40, _uid(syntax)) for syntax in transfer_syntaxes))


def associate_rq(called: str = "ROUTER", calling: str = "PROBE",
                 contexts: list[tuple[str, list[str]]] | None = None, max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ; contexts get the odd IDs 1, 3, 5... in order."""
    contexts = contexts if contexts is not None else [(VERIFICATION, [IMPLICIT_LITTLE]),
                                                      (CT_IMAGE_STORAGE, [EXPLICIT_LITTLE, IMPLICIT_LITTLE])]
    header = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    items = _item(0x10, _uid(APPLICATION_CONTEXT))
    items += b"".join(presentation_context(2 * n + 1, abstract, syntaxes)
                      for n, (abstract, syntaxes) in enumerate(contexts))
    items += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, _uid(IMPLEMENTATION_CLASS_UID)))
    return pdu(A_ASSOCIATE_RQ, header + items)


def release_rq() -> bytes:
    return pdu(A_RELEASE_RQ, bytes(4))


def p_data_tf(context_id: int, control: int, data: bytes) -> bytes:
    """One PDV: `control` is the message control header (bit 0 command, bit 1 last fragment)."""
    return pdu(P_DATA_TF, struct.pack(">LBB", len(data) + 2, context_id, control) + data)


def _element(group: int, element: int, value: bytes) -> bytes:
    """A data element in Implicit VR Little Endian, the encoding of every command set."""
    return struct.pack("<HHL", group, element, len(value)) + value


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    """The command set of a C-STORE request announcing a data set."""
    def ui(uid: str) -> bytes:
        raw = uid.encode("ascii")
        return raw + b"\0" * (len(raw) % 2)

    body = (_element(0x0000, 0x0002, ui(sop_class)) + _element(0x0000, 0x0100, struct.pack("<H", 0x0001))
            + _element(0x0000, 0x0110, struct.pack("<H", message_id)) + _element(0x0000, 0x0700, struct.pack("<H", 0))
            + _element(0x0000, 0x0800, struct.pack("<H", 0x0000)) + _element(0x0000, 0x1000, ui(sop_instance)))
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def accepted_contexts(associate_ac: bytes) -> list[int]:
    """The context IDs an A-ASSOCIATE-AC body accepts (result 0)."""
    ids, offset = [], 68  # protocol version, reserved, AE titles echoed, reserved
    while offset + 4 <= len(associate_ac):
        item_type, _, length = struct.unpack_from(">BBH", associate_ac, offset)
        if item_type == 0x21 and associate_ac[offset + 6] == 0:
            ids.append(associate_ac[offset + 4])
        offset += 4 + length
    return ids


class PeerClosed(Exception):
    """The router closed the connection (or reset it)."""


def read_pdu(sock: socket.socket, timeout: float = 30) -> tuple[int, bytes]:
    """The next PDU from the router as (type, body); PeerClosed when the connection ends first."""
    header = _read_exactly(sock, 6, timeout)
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _read_exactly(sock, length, timeout)


def _read_exactly(sock: socket.socket, count: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < count:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(count - len(data))
        except ConnectionResetError:
            raise PeerClosed(f"reset after {len(data)} of {count} bytes") from None
        if not chunk:
            raise PeerClosed(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def wait_closed(sock: socket.socket, timeout: float = 30) -> bytes:
    """Read until the router closes the connection; returns what it sent before closing.
    Raises TimeoutError when the connection is still open after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the router kept the connection open for {timeout} s (it sent {data[:32]!r})")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except (TimeoutError, socket.timeout):
            continue
        if not chunk:
            return data
        data += chunk


def is_open(sock: socket.socket) -> bool:
    """True while the router has neither closed nor reset the connection (nothing is read)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def associate(port: int, **kwargs) -> tuple[socket.socket, bytes]:
    """A connection with an accepted association; returns the socket and the A-ASSOCIATE-AC body."""
    sock = connect(port)
    sock.sendall(associate_rq(**kwargs))
    pdu_type, body = read_pdu(sock)
    assert pdu_type == A_ASSOCIATE_AC, f"association not accepted: PDU type {pdu_type}, {body!r}"
    return sock, body


def release(sock: socket.socket) -> None:
    sock.sendall(release_rq())
    pdu_type, _ = read_pdu(sock)
    assert pdu_type == A_RELEASE_RP, f"expected A-RELEASE-RP, got PDU type {pdu_type}"
    sock.close()
