"""MPPS over real TCP with pynetdicom on both sides: neither DCMTK nor Orthanc has an MPPS
SCP or SCU, so a RIS (an MPPS SCP whose answers a test chooses) and a modality (N-CREATE,
N-SET) are pynetdicom's."""

from __future__ import annotations

import threading
import time
from io import BytesIO

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import N_CREATE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from helpers.peers import free_port
from rulesengine.config import DicomDestination, Timeouts

MPPS = ModalityPerformedProcedureStep


def step_in_progress(patient_id: str = "H1-123", **values) -> Dataset:
    """An N-CREATE's attribute list: a step started."""
    ds = Dataset()
    ds.PatientID = patient_id
    ds.PatientName = "DOE^JANE"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.Modality = "CT"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def step_completed(**values) -> Dataset:
    """An N-SET's modification list: the step ended."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261202"
    ds.PerformedProcedureStepEndTime = "101500"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


class MppsPeer:
    """A RIS: answers every N-CREATE and N-SET with `status` (and `comment`), and, on success,
    an attribute list holding the request's PatientID and PerformedProcedureStepStatus. It
    keeps each request as ("N-CREATE" or "N-SET", SOP Instance UID, data set). With `silent`,
    it answers nothing until the test ends."""

    def __init__(self, status: int = 0x0000, comment: str | None = None, silent: bool = False,
                 ae_title: str = "RIS"):
        self.status = status
        self.comment = comment
        self.silent = silent
        self.ae_title = ae_title
        self.port = free_port()
        self.requests: list[tuple[str, str, Dataset]] = []
        self.released = threading.Event()  # the test is over: silent answers end
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        ae.add_supported_context(MPPS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set)])

    def _answer(self, message: str, uid: str, dataset: Dataset):
        self.requests.append((message, uid, dataset))
        if self.silent:
            self.released.wait(60)
        status = Dataset()
        status.Status = self.status
        if self.comment:
            status.ErrorComment = self.comment
        answer = Dataset()
        for keyword in ("PatientID", "PerformedProcedureStepStatus"):
            if keyword in dataset:
                setattr(answer, keyword, dataset.get(keyword))
        return status, answer

    def _create(self, event):
        return self._answer("N-CREATE", str(event.request.AffectedSOPInstanceUID), event.attribute_list)

    def _set(self, event):
        return self._answer("N-SET", str(event.request.RequestedSOPInstanceUID), event.modification_list)

    def destination(self, name: str = "RIS", **options) -> DicomDestination:
        return DicomDestination(name, options.pop("ae_title", self.ae_title), "127.0.0.1", self.port,
                                timeouts=options.pop("timeouts", Timeouts(connect=5, acse=10, dimse=30, network=30)),
                                **options)

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()


class Modality:
    """A modality sending MPPS to the router over one association: `create` and `update`
    return (status Dataset, attribute list or None) as pynetdicom got them."""

    def __init__(self, port: int, calling: str = "CT1", called: str = "ROUTER", timeout: float = 30,
                 transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian)):
        ae = AE(ae_title=calling)
        ae.add_requested_context(MPPS, list(transfer_syntaxes))
        ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = timeout
        self.assoc = ae.associate("127.0.0.1", port, ae_title=called)

    @property
    def accepted(self) -> bool:
        return self.assoc.is_established

    def create(self, dataset: Dataset | None, uid: str | None):
        return self.assoc.send_n_create(dataset, MPPS, uid)

    def update(self, dataset: Dataset, uid: str):
        return self.assoc.send_n_set(dataset, MPPS, uid)

    def create_raw(self, attribute_list: bytes, uid: str):
        """An N-CREATE whose attribute list is these bytes, as a faulty modality sends them
        (pynetdicom's send_n_create only sends what it encodes itself); the response primitive."""
        request = N_CREATE()
        request.MessageID = 1
        request.AffectedSOPClassUID = MPPS
        request.AffectedSOPInstanceUID = uid
        request.AttributeList = BytesIO(attribute_list)
        [context] = self.assoc.accepted_contexts
        assoc = self.assoc
        assoc._reactor_checkpoint.clear()  # as send_n_create does: the reactor must not take the answer
        while not assoc._is_paused:
            time.sleep(0.0001)
        try:
            assoc.dimse.send_msg(request, context.context_id)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        return response

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()

    def __enter__(self) -> "Modality":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
