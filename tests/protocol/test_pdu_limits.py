"""A PDU longer than the listener allows is refused (A-ABORT, connection closed) from its
announced length, before it is read: a peer cannot make the router hold what it announces.

Allowed: 1 MiB for an A-ASSOCIATE-RQ (before anything is known of the peer), then the
maximum PDU length the listener announced (`max_pdu`, 16384 on `main`) plus the PDU header.
"""

from __future__ import annotations

import struct

from .pdus import (
    A_ABORT,
    A_ASSOCIATE_RQ,
    P_DATA_TF,
    PeerClosed,
    associate,
    connect,
    p_data_tf,
    read_pdu,
    release,
    wait_closed,
)

MAIN_MAX_PDU = 16384


def stream(sock, total: int, chunk: int = 1 << 20) -> int:
    """Send up to `total` zero bytes; returns how many went before the router cut the connection."""
    block = bytes(chunk)
    sent = 0
    try:
        while sent < total:
            sock.sendall(block)
            sent += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_an_association_request_announcing_4_gib_is_aborted_at_once(router):
    sock = connect(router.ports["main"])
    sock.sendall(struct.pack(">BBL", A_ASSOCIATE_RQ, 0, 0xFFFFFFFF))
    pdu_type, body = read_pdu(sock, timeout=30)
    assert pdu_type == A_ABORT, (pdu_type, body)
    assert body[2] == 2, "the abort's source is the service provider (the router's upper layer)"
    assert wait_closed(sock, timeout=30) == b""
    sock.close()
    router.assert_recovered()


def test_streaming_the_announced_gigabytes_does_not_grow_the_router(router):
    """`01 00 FF FF FF FF` then data: the router used to read it all into memory (1 GiB sent,
    1 GB more resident). It cuts the connection long before 256 MiB have gone, and its
    resident memory stays where it was."""
    sock = connect(router.ports["main"])
    sock.sendall(struct.pack(">BBL", A_ASSOCIATE_RQ, 0, 0xFFFFFFFF))
    sent = stream(sock, 256 << 20)
    during = router.usage()  # the connection is still open on this side
    sock.close()
    assert sent < 256 << 20, "the router read 256 MiB of a PDU it should have refused"
    assert during.within(router.baseline), f"{during} against {router.baseline}"
    router.assert_recovered()


def test_an_association_request_up_to_1_mib_is_read(router):
    """The cap is generous: a request of 1 MiB is read (and refused as not valid), 1 MiB and a
    byte is aborted unread."""
    for length, expected in ((1 << 20, "read"), ((1 << 20) + 1, "aborted")):
        sock = connect(router.ports["main"])
        sock.sendall(struct.pack(">BBL", A_ASSOCIATE_RQ, 0, length))
        if expected == "read":
            sock.sendall(bytes(length))  # all of it is taken in: no reset while sending
        answer = wait_closed(sock, timeout=30)
        sock.close()
        if expected == "aborted":
            assert answer[:1] == bytes([A_ABORT]), answer[:16]
        else:
            assert answer[:1] in (bytes([A_ABORT]), b""), answer[:16]
    router.assert_recovered()


def test_a_p_data_pdu_longer_than_announced_is_aborted_unread(router):
    sock, _ = associate(router.ports["main"])
    too_long = MAIN_MAX_PDU + 6 + 1
    sock.sendall(struct.pack(">BBL", P_DATA_TF, 0, too_long))
    pdu_type, _ = read_pdu(sock, timeout=30)
    assert pdu_type == A_ABORT
    assert wait_closed(sock, timeout=30) == b""
    sock.close()
    router.assert_recovered()


def test_a_p_data_pdu_of_the_announced_length_is_taken(router):
    """The limit is not off by one: a PDU of exactly the announced maximum is read (a
    command fragment, not the last: the association stays up and is released)."""
    sock, _ = associate(router.ports["main"])
    whole = p_data_tf(1, 0x01, bytes(MAIN_MAX_PDU - 6))
    assert struct.unpack(">L", whole[2:6])[0] == MAIN_MAX_PDU
    sock.sendall(whole)
    try:
        release(sock)
    except PeerClosed as exc:  # the release must come back: the PDU was accepted
        raise AssertionError(f"the router dropped the association after a PDU of {MAIN_MAX_PDU} bytes: {exc}")
    router.assert_recovered()
