"""What a broken or hostile peer sends the listener: truncated and garbage PDUs, requests
sent a byte at a time, connections opened and dropped in a tight loop, an association
request with 128 presentation contexts. After each, a normal storescu is served and the
router's memory, threads and open files come back to their baseline."""

from __future__ import annotations

import os
import random
import socket
import struct
import time

from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import AllStoragePresentationContexts

from .pdus import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RQ,
    CT_IMAGE_STORAGE,
    EXPLICIT_LITTLE,
    P_DATA_TF,
    accepted_contexts,
    associate,
    associate_rq,
    c_store_rq,
    connect,
    p_data_tf,
    pdu,
    read_pdu,
    release,
    wait_closed,
)
from helpers.peers import wait_until

# 128 storage SOP classes (the most presentation contexts an association can have: odd IDs 1 to 255)
STORAGE_CLASSES = [context.abstract_syntax for context in AllStoragePresentationContexts[:128]]
SYNTAXES = list(ALL_TRANSFER_SYNTAXES)


def test_truncated_association_requests(router):
    """Half a request, then the peer closes; half a request, then nothing (closed at ARTIM);
    a header alone; a PDU header cut short."""
    request = associate_rq()
    waiting = []
    for cut, then_close in ((len(request) // 2, True), (len(request) // 2, False), (6, False), (3, False)):
        sock = connect(router.ports["main"])
        sock.sendall(request[:cut])
        if then_close:
            sock.close()
        else:
            waiting.append(sock)
    for sock in waiting:
        assert wait_closed(sock, timeout=30) == b""
        sock.close()
    router.assert_recovered()


def test_garbage_pdus_before_the_association(router):
    """An unknown PDU type, an A-ASSOCIATE-RQ whose body is noise, a release request where an
    association request is due: each is aborted or closed."""
    rng = random.Random(11)
    noise = rng.randbytes(300)
    for data in (pdu(0x09, noise), pdu(A_ASSOCIATE_RQ, noise), pdu(0x05, bytes(4)), pdu(A_ASSOCIATE_AC, noise)):
        sock = connect(router.ports["main"])
        sock.sendall(data)
        answer = wait_closed(sock, timeout=30)
        sock.close()
        assert answer[:1] in (bytes([A_ABORT]), b"", bytes([3])), answer[:16]
    router.assert_recovered()


def test_garbage_inside_an_association(router):
    """Noise as a command set, a P-DATA PDU whose item overruns it, an unknown PDU type: the
    association is aborted, the router goes on."""
    rng = random.Random(12)
    bad_item = pdu(P_DATA_TF, struct.pack(">LBB", 5000, 1, 3) + bytes(10))
    for data in (p_data_tf(1, 0x03, rng.randbytes(200)), bad_item, pdu(0x0A, rng.randbytes(50))):
        sock, _ = associate(router.ports["main"])
        sock.sendall(data)
        answer = wait_closed(sock, timeout=30)
        sock.close()
        assert answer[:1] in (bytes([A_ABORT]), b""), answer[:16]
    router.assert_recovered()


def test_a_request_sent_a_byte_at_a_time_is_closed_at_artim(router):
    """Slow-loris: a byte every 0.1 s keeps the connection busy, not associated; ARTIM (2 s on
    `main`) counts from the connection, not from the last byte. The request would take
    about 20 s at that pace."""
    request = associate_rq()
    sock = connect(router.ports["main"])
    sent = 0
    try:
        for byte in request:
            sock.send(bytes([byte]))
            sent += 1
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert sent < len(request), "the router waited for a whole request sent a byte at a time"
    sock.close()
    router.assert_recovered()


def test_a_pdu_sent_a_byte_at_a_time_inside_an_association_is_cut_at_the_network_timeout(router):
    """After the association, a PDU must arrive whole within the network timeout (3 s on `main`)."""
    sock, _ = associate(router.ports["main"])
    data = p_data_tf(1, 0x01, bytes(400))
    sent = 0
    try:
        for byte in data:
            sock.send(bytes([byte]))
            sent += 1
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert sent < len(data), "the router waited for a whole PDU sent a byte at a time"
    sock.close()
    router.assert_recovered()


def test_connections_opened_and_dropped_in_a_tight_loop(router):
    """Port scanners and health checks: connect and close, connect and reset, connect and
    drop after part of a request, after a whole request, after an association."""
    port = router.ports["main"]
    request = associate_rq()
    for n in range(300):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if n % 3 == 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        elif n % 3 == 2:
            sock.sendall(request[: n % len(request)])
        sock.close()
    for _ in range(50):
        sock = connect(port)
        sock.sendall(request)
        sock.close()
    for _ in range(10):
        sock, _ = associate(port)
        sock.close()
    router.assert_recovered()


def test_an_association_request_with_128_presentation_contexts(router):
    """The largest request there is: 128 contexts (IDs 1 to 255), each a storage SOP class
    with every transfer syntax pydicom knows (about 160 KB). The listener accepts every
    context, and the association works; ten more such requests leave nothing behind."""
    contexts = [(uid, SYNTAXES) for uid in STORAGE_CLASSES]
    assert len(associate_rq(contexts=contexts)) > 150_000
    sock, answer = associate(router.ports["main"], contexts=contexts)
    assert accepted_contexts(answer) == list(range(1, 256, 2))
    release(sock)
    for _ in range(10):
        sock, answer = associate(router.ports["main"], contexts=contexts)
        release(sock)
    router.assert_recovered()


def test_an_association_request_for_nothing_the_router_supports(router):
    """A request whose only context is unknown is answered (accepted with no usable context,
    or rejected), never left hanging."""
    sock = connect(router.ports["main"])
    sock.sendall(associate_rq(contexts=[("1.2.3.4.5.6.7", ["1.2.3.4"])]))
    pdu_type, _ = read_pdu(sock)
    assert pdu_type in (A_ASSOCIATE_AC, 3)
    sock.close()
    router.assert_recovered()



def test_a_transfer_broken_off_leaves_nothing_in_the_spool(router):
    """A C-STORE whose sender drops the connection in the middle of the data set: the partial
    file the router was writing into spool/tmp is removed (it used to stay there)."""
    spool_tmp = router.folder / "var" / "spool" / "tmp"
    sock, _ = associate(router.ports["main"], contexts=[(CT_IMAGE_STORAGE, [EXPLICIT_LITTLE])])
    sock.sendall(p_data_tf(1, 0x03, c_store_rq(CT_IMAGE_STORAGE, "1.2.826.0.1.3680043.9.7433.2.1")))
    sock.sendall(p_data_tf(1, 0x00, bytes(8000)))  # a first fragment of the data set, not the last
    wait_until(lambda: os.listdir(spool_tmp), timeout=30, what="the partial data set in spool/tmp")
    sock.close()
    wait_until(lambda: not os.listdir(spool_tmp), timeout=30, what="spool/tmp to be empty again")
    router.assert_recovered()
