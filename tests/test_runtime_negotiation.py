"""What a listener accepts in association negotiation: a real listener on a free port, a
pynetdicom requestor proposing presentation contexts, and what comes back accepted, in
which transfer syntax, or refused (and logged). Only the negotiation: instances sent
through a listener are in tests/integration/test_router_transfer_syntaxes.py."""

from __future__ import annotations

import logging

import pytest
from peers import free_port, wait_until
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    SecondaryCaptureImageStorage,
    StorageCommitmentPushModel,
    UltrasoundImageStorage,
    Verification,
)

from rulesengine.config import Listener
from rulesengine.runtime.listener import DicomListener

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR
NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def listen():
    """Start a listener with these settings; only negotiation is exercised (no pipeline)."""
    started = []

    def start(**settings) -> Listener:
        config = Listener(name="main", ae_title="ROUTER", port=free_port(), **settings)
        listener = DicomListener(config, pipeline=None)
        listener.start()
        started.append(listener)
        return config

    yield start
    for listener in started:
        listener.stop()


def negotiate(config: Listener, *contexts) -> dict[int, tuple[str, str | None]]:
    """Propose `contexts` (abstract syntax, [transfer syntaxes]) in one association; for each,
    in order: (abstract syntax, the transfer syntax accepted or None when refused)."""
    ae = AE(ae_title="CT1")
    requested = [build_context(abstract, syntaxes) for abstract, syntaxes in contexts]
    assoc = ae.associate("127.0.0.1", config.port, requested, ae_title="ROUTER")
    assert assoc.is_established
    try:
        accepted = {cx.context_id: str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        ids = sorted({cx.context_id for cx in assoc.accepted_contexts} | {cx.context_id for cx in assoc.rejected_contexts})
    finally:
        assoc.release()
    return [(str(abstract), accepted.get(cid)) for (abstract, _), cid in zip(contexts, ids)]


def test_each_context_is_accepted_in_the_senders_first_choice_with_implicit_vr_last(listen):
    config = listen()
    assert negotiate(
        config,
        (CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
        (MRImageStorage, [JPEGLSLossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (SecondaryCaptureImageStorage, [RLELossless, ImplicitVRLittleEndian]),
        (UltrasoundImageStorage, [ExplicitVRBigEndian, ExplicitVRLittleEndian]),
        (ComputedRadiographyImageStorage, [ImplicitVRLittleEndian]),
        (Verification, [NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS, ImplicitVRLittleEndian]),
    ) == [
        (CTImageStorage, ExplicitVRLittleEndian),  # private elements keep their VR
        (MRImageStorage, JPEGLSLossless),  # compressed as sent, never decompressed to fit
        (SecondaryCaptureImageStorage, RLELossless),
        (UltrasoundImageStorage, ExplicitVRBigEndian),  # the sender's own encoding; converted on delivery
        (ComputedRadiographyImageStorage, ImplicitVRLittleEndian),
        (Verification, ImplicitVRLittleEndian),
    ]


def test_a_configured_list_of_transfer_syntaxes_is_an_order_of_preference(listen):
    config = listen(transfer_syntaxes=(ImplicitVRLittleEndian, ExplicitVRLittleEndian))
    assert negotiate(
        config,
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MRImageStorage, [ExplicitVRLittleEndian, ExplicitVRBigEndian]),
        (SecondaryCaptureImageStorage, [JPEG2000]),
        (Verification, [ExplicitVRBigEndian]),  # C-ECHO in whatever the sender proposes
    ) == [
        (CTImageStorage, ImplicitVRLittleEndian),
        (MRImageStorage, ExplicitVRLittleEndian),
        (SecondaryCaptureImageStorage, None),
        (Verification, ExplicitVRBigEndian),
    ]


def test_the_association_file_is_the_order_of_preference(listen, tmp_path):
    (tmp_path / "contexts.txt").write_text(f"{CTImageStorage}\\{ImplicitVRLittleEndian}\n"
                                           f"{CTImageStorage}\\{ExplicitVRLittleEndian}\n"
                                           f"{SIEMENS_CSA_NON_IMAGE}\\{ExplicitVRLittleEndian}\n")
    config = listen(association_file=str(tmp_path / "contexts.txt"), accept_unknown_sop_classes=False)
    assert negotiate(
        config,
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MRImageStorage, [ExplicitVRLittleEndian]),
        (SIEMENS_CSA_NON_IMAGE, [ExplicitVRLittleEndian]),  # the file names it: taken
        (Verification, [ImplicitVRLittleEndian]),
    ) == [
        (CTImageStorage, ImplicitVRLittleEndian),
        (MRImageStorage, None),
        (SIEMENS_CSA_NON_IMAGE, ExplicitVRLittleEndian),
        (Verification, ImplicitVRLittleEndian),
    ]


def test_any_storage_sop_class_is_accepted_and_other_services_are_not(listen):
    config = listen()
    assert negotiate(
        config,
        (SIEMENS_CSA_NON_IMAGE, [ExplicitVRLittleEndian]),
        ("1.2.826.0.1.3680043.8.498.7.7.7", [ImplicitVRLittleEndian]),  # any private class
        (PatientRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]),
        (StorageCommitmentPushModel, [ExplicitVRLittleEndian]),
        (MEDIA_STORAGE_DIRECTORY, [ExplicitVRLittleEndian]),
    ) == [
        (SIEMENS_CSA_NON_IMAGE, ExplicitVRLittleEndian),
        ("1.2.826.0.1.3680043.8.498.7.7.7", ImplicitVRLittleEndian),
        (PatientRootQueryRetrieveInformationModelFind, None),
        (StorageCommitmentPushModel, None),
        (MEDIA_STORAGE_DIRECTORY, None),
    ]


def test_unknown_sop_classes_can_be_refused_and_every_refusal_is_logged_with_the_peer_and_why(listen, caplog):
    config = listen(accept_unknown_sop_classes=False, transfer_syntaxes=(ExplicitVRLittleEndian,))
    with caplog.at_level(logging.DEBUG, logger="rulesengine.listener"):
        result = negotiate(
            config,
            (SIEMENS_CSA_NON_IMAGE, [ExplicitVRLittleEndian]),
            (PatientRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]),
            (MRImageStorage, [JPEG2000]),
            (CTImageStorage, [ExplicitVRLittleEndian]),
            (CTImageStorage, [ImplicitVRLittleEndian]),  # refused, but CT goes in the context before
        )
        warnings = wait_until(lambda: [r for r in caplog.records if r.levelno == logging.WARNING],
                              timeout=10, what="the refusals logged")
    assert [syntax for _, syntax in result] == [None, None, None, ExplicitVRLittleEndian, None]
    [line] = [r.getMessage() for r in warnings]
    assert line.startswith("listener main: association from CT1 (127.0.0.1:")
    assert "refused 3 presentation context(s): " in line
    assert f"context 1 ({SIEMENS_CSA_NON_IMAGE}): an unknown SOP class, and accept_unknown_sop_classes is false" \
        in line
    assert (f"context 3 ({PatientRootQueryRetrieveInformationModelFind} Patient Root Query/Retrieve Information "
            "Model - FIND): a service the router does not provide") in line
    assert (f"context 5 ({MRImageStorage} MR Image Storage): none of its transfer syntaxes is accepted "
            f"({JPEG2000} JPEG 2000 Image Compression)") in line
    [debug] = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
               and r.name == "rulesengine.listener" and "another context" in r.getMessage()]
    assert f"context 9 ({CTImageStorage} CT Image Storage)" in debug
    assert "CT Image Storage" not in line


def test_an_association_with_nothing_refused_logs_nothing(listen, caplog):
    config = listen()
    with caplog.at_level(logging.DEBUG, logger="rulesengine.listener"):
        negotiate(config, (CTImageStorage, [ExplicitVRLittleEndian]), (Verification, [ImplicitVRLittleEndian]))
        # the next association's refusal is logged after anything the first one logs
        negotiate(config, (PatientRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]),
                  (Verification, [ImplicitVRLittleEndian]))
        wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records), timeout=10,
                   what="the second association's refusal logged")
    [line] = [r.getMessage() for r in caplog.records if r.name == "rulesengine.listener" and "refused" in r.getMessage()]
    assert "Query/Retrieve" in line
