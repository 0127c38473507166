"""A pynetdicom C-FIND SCP over real TCP whose answers a test chooses: matches, a final
status, a pause before the final status that only a C-CANCEL (or the end of the test) ends,
or silence after the request."""

from __future__ import annotations

import threading

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind)

from helpers.peers import free_port
from rulesengine.config import DicomDestination, Timeouts

FIND_CLASSES = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
                ModalityWorklistInformationFind)


def study(uid: str, patient_id: str = "P1", **values) -> Dataset:
    """A STUDY-level match."""
    match = Dataset()
    match.QueryRetrieveLevel = "STUDY"
    match.PatientID = patient_id
    match.StudyInstanceUID = uid
    for keyword, value in values.items():
        setattr(match, keyword, value)
    return match


class FindPeer:
    """Answers every C-FIND with `matches`, then `final` (a status code). With `endless`, the
    last match comes again without end. With `hold`, it waits after the matches: a C-CANCEL
    then ends the query with 0xFE00 unless `ignore_cancel`; the end of the test ends it too.
    With `silent`, it sends nothing at all after the C-FIND request."""

    def __init__(self, matches=(), final: int = 0x0000, hold: bool = False, silent: bool = False,
                 ignore_cancel: bool = False, ae_title: str = "FINDSCP", comment: str | None = None,
                 endless: bool = False):
        self.matches = list(matches)
        self.endless = endless  # after the matches, the last one again and again, until aborted
        self.final = final
        self.hold = hold
        self.silent = silent
        self.ignore_cancel = ignore_cancel
        self.comment = comment
        self.ae_title = ae_title
        self.port = free_port()
        self.requests: list[Dataset] = []
        self.cancelled = threading.Event()  # a C-CANCEL came
        self.released = threading.Event()  # the test is over: held queries end
        self.aborted = threading.Event()  # an association holding a query was aborted
        self.endings: list[str] = []  # how each association ended: "released" or "aborted"
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        for sop_class in FIND_CLASSES:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self._find), (evt.EVT_RELEASED, lambda _: self.endings.append("released")),
            (evt.EVT_ABORTED, lambda _: self.endings.append("aborted"))])

    def _find(self, event):
        self.requests.append(event.identifier)
        if self.silent:
            self.released.wait(60)
            return
        for match in self.matches:
            yield 0xFF00, match
        while self.endless and not self.released.is_set():
            if event.assoc.acse.is_aborted():
                self.aborted.set()
                return
            yield 0xFF00, self.matches[-1]
        while self.hold and not self.released.wait(0.02):
            if event.assoc.acse.is_aborted():
                self.aborted.set()
                return
            if event.is_cancelled:
                self.cancelled.set()
                if not self.ignore_cancel:
                    yield 0xFE00, None
                    return
        status = Dataset()
        status.Status = self.final
        if self.comment:
            status.ErrorComment = self.comment
        yield status, None

    def destination(self, name: str = "PEER", **options) -> DicomDestination:
        return DicomDestination(name, options.pop("ae_title", self.ae_title), "127.0.0.1", self.port,
                                timeouts=options.pop("timeouts", Timeouts(connect=5, acse=10, dimse=30, network=30)),
                                **options)

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
