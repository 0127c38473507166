"""What a listener accepts in association negotiation: a real listener on a free port, a
pynetdicom requestor proposing presentation contexts, and what comes back accepted, in
which transfer syntax, or refused (and logged). Only the negotiation: instances sent
through a listener are in tests/integration/test_router_transfer_syntaxes.py."""

from __future__ import annotations

import logging

import pytest
from helpers.peers import free_port, wait_until
from pydicom.uid import (
    JPEG2000,
    JPEGBaseline8Bit,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, acse, presentation
from pynetdicom.presentation import build_context, build_role
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ModalityPerformedProcedureStep,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    SecondaryCaptureImageStorage,
    StorageCommitmentPushModel,
    UltrasoundImageStorage,
    Verification,
)

from rulesengine.config import Listener
from rulesengine.runtime.listener import DicomListener
from rulesengine.runtime.negotiation import ProposalDrivenContext, install_per_context_negotiation
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR
NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def listen():
    """Start a listener with these settings, pynetdicom configured as the router does; only
    negotiation is exercised (no pipeline)."""
    configure_pynetdicom()
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


def test_mpps_is_accepted_in_whatever_the_sender_proposes_unless_the_services_leave_it_out(listen, tmp_path):
    """Like C-ECHO and C-FIND: the association file and `transfer_syntaxes` choose how
    instances arrive, not MPPS messages."""
    (tmp_path / "contexts.txt").write_text(f"{CTImageStorage}\\{ImplicitVRLittleEndian}\n")
    proposed = [(ModalityPerformedProcedureStep, [ExplicitVRBigEndian, ImplicitVRLittleEndian]),
                (ModalityPerformedProcedureStep, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])]
    for config in (listen(), listen(transfer_syntaxes=(ExplicitVRLittleEndian,)),
                   listen(association_file=str(tmp_path / "contexts.txt"))):
        assert negotiate(config, *proposed) == [(ModalityPerformedProcedureStep, ExplicitVRBigEndian),
                                                (ModalityPerformedProcedureStep, ExplicitVRLittleEndian)]
    config = listen(services=("echo", "store", "find"))
    assert negotiate(config, (Verification, [ImplicitVRLittleEndian]), *proposed) == [
        (Verification, ImplicitVRLittleEndian), (ModalityPerformedProcedureStep, None),
        (ModalityPerformedProcedureStep, None)]


def test_any_storage_sop_class_is_accepted_and_other_services_are_not(listen):
    config = listen()
    assert negotiate(
        config,
        (SIEMENS_CSA_NON_IMAGE, [ExplicitVRLittleEndian]),
        ("1.2.826.0.1.3680043.8.498.7.7.7", [ImplicitVRLittleEndian]),  # any private class
        (PatientRootQueryRetrieveInformationModelMove, [ExplicitVRLittleEndian]),
        (StorageCommitmentPushModel, [ExplicitVRLittleEndian]),
        (MEDIA_STORAGE_DIRECTORY, [ExplicitVRLittleEndian]),
    ) == [
        (SIEMENS_CSA_NON_IMAGE, ExplicitVRLittleEndian),
        ("1.2.826.0.1.3680043.8.498.7.7.7", ImplicitVRLittleEndian),
        (PatientRootQueryRetrieveInformationModelMove, ExplicitVRLittleEndian),
        (StorageCommitmentPushModel, None),
        (MEDIA_STORAGE_DIRECTORY, None),
    ]


def test_an_abstract_syntax_that_is_no_uid_is_refused(listen):
    """A garbled SOP class (pydicom's UID check takes '31') is not an unknown storage class."""
    config = listen()
    assert negotiate(
        config,
        ("31", [ExplicitVRLittleEndian]),
        ("3.12.840", [ExplicitVRLittleEndian]),
        ("1.2.840.10008.5.1.4.1.1.2.", [ExplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ) == [("31", None), ("3.12.840", None), ("1.2.840.10008.5.1.4.1.1.2.", None),
          (str(CTImageStorage), ExplicitVRLittleEndian)]


def test_unknown_sop_classes_can_be_refused_and_every_refusal_is_logged_with_the_peer_and_why(listen, caplog):
    config = listen(accept_unknown_sop_classes=False, transfer_syntaxes=(ExplicitVRLittleEndian,))
    with caplog.at_level(logging.DEBUG, logger="rulesengine.listener"):
        result = negotiate(
            config,
            (SIEMENS_CSA_NON_IMAGE, [ExplicitVRLittleEndian]),
            (StorageCommitmentPushModel, [ExplicitVRLittleEndian]),
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
    assert (f"context 3 ({StorageCommitmentPushModel} Storage Commitment Push Model SOP Class): "
            "a service the router does not provide") in line
    assert (f"context 5 ({MRImageStorage} MR Image Storage): none of its transfer syntaxes is accepted "
            f"({JPEG2000} JPEG 2000 Image Compression)") in line
    [debug] = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
               and r.name == "rulesengine.listener" and "another context" in r.getMessage()]
    assert f"context 9 ({CTImageStorage} CT Image Storage)" in debug
    assert "CT Image Storage" not in line


def test_a_context_refused_for_its_own_transfer_syntaxes_is_logged_with_them(listen, caplog):
    """By default too: a context is refused for what it proposes, whatever the other contexts
    of its SOP class propose; at WARNING when its SOP class is accepted in no other context."""
    config = listen()
    with caplog.at_level(logging.DEBUG, logger="rulesengine.listener"):
        result = negotiate(
            config,
            (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian]),
            (CTImageStorage, [NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS]),
            (MRImageStorage, [NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS]),
        )
        [line] = wait_until(lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING],
                            timeout=10, what="the refusal logged")
    assert result == [(CTImageStorage, JPEGBaseline8Bit), (CTImageStorage, None), (MRImageStorage, None)]
    assert line.endswith(f"refused 1 presentation context(s): context 5 ({MRImageStorage} MR Image Storage): none "
                         f"of its transfer syntaxes is accepted ({NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS})")
    [debug] = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "another context" in
               r.getMessage()]
    assert debug.endswith(f"context 3 ({CTImageStorage} CT Image Storage): none of its transfer syntaxes is accepted "
                          f"({NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS})")


def test_an_association_with_nothing_refused_logs_nothing(listen, caplog):
    config = listen()
    with caplog.at_level(logging.DEBUG, logger="rulesengine.listener"):
        negotiate(config, (CTImageStorage, [ExplicitVRLittleEndian]), (Verification, [ImplicitVRLittleEndian]))
        # the next association's refusal is logged after anything the first one logs
        negotiate(config, (StorageCommitmentPushModel, [ExplicitVRLittleEndian]),
                  (Verification, [ImplicitVRLittleEndian]))
        wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records), timeout=10,
                   what="the second association's refusal logged")
    [line] = [r.getMessage() for r in caplog.records if r.name == "rulesengine.listener" and "refused" in r.getMessage()]
    assert "Storage Commitment" in line



def test_each_context_of_one_sop_class_is_accepted_in_its_own_first_choice(listen):
    """What DCMTK's storescu -xf and dcmsend propose for a mix of files of one SOP class: one
    context per encoding, the file's own first. Each is accepted in its own first choice, so
    no sender has to decompress a file to fit a context accepted for another file."""
    config = listen()
    assert negotiate(
        config,
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [ImplicitVRLittleEndian]),
        (CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
        (CTImageStorage, [ImplicitVRLittleEndian, RLELossless, ExplicitVRLittleEndian]),
        (CTImageStorage, [NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS, JPEG2000]),
        (CTImageStorage, [NOT_A_TRANSFER_SYNTAX_PYDICOM_KNOWS]),
    ) == [
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, JPEGBaseline8Bit),  # not Explicit VR, though an earlier context has it first
        (CTImageStorage, ImplicitVRLittleEndian),  # nothing else offered
        (CTImageStorage, ExplicitVRLittleEndian),  # Explicit before Implicit
        (CTImageStorage, RLELossless),
        (CTImageStorage, JPEG2000),  # the first one the router takes
        (CTImageStorage, None),
    ]
    # the same proposals the other way round: each context's answer is its own
    assert negotiate(
        config,
        (MRImageStorage, [JPEGLSLossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MRImageStorage, [ImplicitVRLittleEndian]),
        (MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MRImageStorage, [RLELossless, ImplicitVRLittleEndian]),
    ) == [
        (MRImageStorage, JPEGLSLossless),
        (MRImageStorage, ImplicitVRLittleEndian),
        (MRImageStorage, ExplicitVRLittleEndian),
        (MRImageStorage, RLELossless),
    ]


def test_a_configured_order_of_preference_applies_to_each_context_of_a_sop_class(listen):
    config = listen(transfer_syntaxes=(ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit))
    assert negotiate(
        config,
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian]),
        (CTImageStorage, [JPEGBaseline8Bit]),
        (CTImageStorage, [RLELossless]),
        (Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (Verification, [ExplicitVRBigEndian]),
    ) == [
        (CTImageStorage, ImplicitVRLittleEndian),
        (CTImageStorage, ImplicitVRLittleEndian),  # the list's order, not the sender's
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, JPEGBaseline8Bit),
        (CTImageStorage, None),
        (Verification, ExplicitVRLittleEndian),  # C-ECHO: whatever each context proposes first
        (Verification, ExplicitVRBigEndian),
    ]


def test_the_association_files_order_applies_to_each_context_of_a_sop_class(listen, tmp_path):
    (tmp_path / "contexts.txt").write_text(f"{CTImageStorage}\\{ImplicitVRLittleEndian}\n"
                                           f"{CTImageStorage}\\{JPEGBaseline8Bit}\n")
    config = listen(association_file=str(tmp_path / "contexts.txt"))
    assert negotiate(
        config,
        (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ) == [
        (CTImageStorage, ImplicitVRLittleEndian),
        (CTImageStorage, JPEGBaseline8Bit),
        (CTImageStorage, None),
    ]


@pytest.mark.parametrize("services, roles", [
    (None, (True, True)),  # `get` offered: the roles a C-GET requester proposes are accepted
    (("echo", "store"), (True, False)),  # no C-GET: the default roles
])
def test_role_selection_proposed_for_a_sop_class_of_several_contexts_gets_pynetdicoms_answer(listen, services,
                                                                                              roles):
    """A sender proposing SCP/SCU roles for a SOP class it proposes in two contexts: both are
    accepted in their own encoding, with the roles proposed where the listener offers C-GET
    (the instances go back to the requester as its SCP), else with the default roles."""
    config = listen(services=services)
    ae = AE(ae_title="CT1")
    requested = [build_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
                 build_context(CTImageStorage, [RLELossless, ExplicitVRLittleEndian])]
    assoc = ae.associate("127.0.0.1", config.port, requested, ae_title="ROUTER",
                         ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=True)])
    assert assoc.is_established
    try:
        accepted = sorted((cx.context_id, str(cx.transfer_syntax[0]), cx.as_scu, cx.as_scp)
                          for cx in assoc.accepted_contexts)
    finally:
        assoc.release()
    assert accepted == [(1, ExplicitVRLittleEndian, *roles), (3, RLELossless, *roles)]


def proposals(*contexts):
    made = []
    for number, (abstract_syntax, syntaxes) in enumerate(contexts):
        context = build_context(abstract_syntax, syntaxes)
        context.context_id = 2 * number + 1
        made.append(context)
    return made


def outcome(result):
    contexts, roles = result
    return ([(cx.context_id, str(cx.abstract_syntax), [str(s) for s in cx.transfer_syntax], cx.result, cx.as_scu,
              cx.as_scp) for cx in contexts],
            [(str(role.sop_class_uid), role.scu_role, role.scp_role) for role in roles])


@pytest.mark.parametrize("acceptor_roles", [(None, None), (True, True), (True, False), (False, True)])
def test_per_context_negotiation_answers_as_pynetdicom_does_when_the_choice_is_the_same(acceptor_roles):
    """Results, transfer syntaxes, roles and SCP/SCU role replies (one per SOP class, however
    many contexts it has) are pynetdicom's own, for acceptor contexts whose choice does not
    depend on the proposal: the hook changes which transfer syntaxes are offered, nothing else."""
    install_per_context_negotiation()
    offered = [ExplicitVRLittleEndian, RLELossless, ImplicitVRLittleEndian]
    plain, driven = [], []
    for abstract_syntax in (CTImageStorage, MRImageStorage):
        context = build_context(abstract_syntax, offered)
        context.scu_role, context.scp_role = acceptor_roles
        plain.append(context)
        context = ProposalDrivenContext(abstract_syntax, lambda proposed: list(offered), [])
        context.scu_role, context.scp_role = acceptor_roles
        driven.append(context)
    requested = proposals(
        (CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
        (CTImageStorage, [RLELossless]),
        (MRImageStorage, [JPEG2000]),
        (CTImageStorage, [JPEGBaseline8Bit, ImplicitVRLittleEndian]),
        (UltrasoundImageStorage, [ExplicitVRLittleEndian]),
        (MRImageStorage, [ExplicitVRLittleEndian]),
    )
    roles = {CTImageStorage: (True, True), MRImageStorage: (False, True), UltrasoundImageStorage: (True, False)}
    expected = outcome(presentation.negotiate_as_acceptor(requested, plain, roles))
    assert outcome(acse.negotiate_as_acceptor(requested, driven, roles)) == expected
    assert outcome(acse.negotiate_as_acceptor(requested, plain, roles)) == expected
    results = [cx[3] for cx in expected[0]]
    assert (results[2], results[4]) == (0x04, 0x03)  # no transfer syntax in common; a SOP class not offered
    if None not in acceptor_roles:  # one reply per SOP class, though CT is accepted in three contexts
        assert [uid for uid, _, _ in expected[1]].count(CTImageStorage) == 1


def test_installing_the_per_context_negotiation_twice_wraps_pynetdicom_once():
    install_per_context_negotiation()
    installed = acse.negotiate_as_acceptor
    install_per_context_negotiation()
    assert acse.negotiate_as_acceptor is installed is not presentation.negotiate_as_acceptor
    assert installed.pynetdicom is presentation.negotiate_as_acceptor
