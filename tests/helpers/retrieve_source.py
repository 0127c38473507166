"""A pynetdicom C-MOVE and C-GET SCP over real TCP, as a source the router retrieves from:
it moves its instances to a port a test chooses (the router's listener), or returns them
on a C-GET's association. With `fail`, that many of its instances are of a SOP class no
context carries, so their sub-operations fail; with `hold`, it never answers a request
until the test ends; with `stall_after`, it goes silent part-way."""

from __future__ import annotations

import threading

import pydicom
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (CTImageStorage, PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from helpers.instances import CT_SMALL
from helpers.peers import free_port

RETRIEVE_CLASSES = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
                    PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
UNCARRIED_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"  # no storage context proposes it


class RetrieveSource:
    def __init__(self, move_port: int, count: int = 3, fail: int = 0, hold: bool = False,
                 stall_after: int | None = None, ae_title: str = "SOURCE"):
        self.move_port = move_port  # where a C-MOVE's instances go, whatever its move destination
        self.hold = hold
        self.stall_after = stall_after  # sends this many instances, then nothing until the test ends
        self.ae_title = ae_title
        self.port = free_port()
        self.requests: list[Dataset] = []
        self.message_ids: list[int] = []  # of each C-MOVE and C-GET received, in order
        self.released = threading.Event()  # the test is over: held requests end
        self.instances = []
        study = generate_uid()
        for number in range(1, count + 1):
            instance = pydicom.dcmread(CT_SMALL)
            instance.StudyInstanceUID = study
            instance.SOPInstanceUID = instance.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            instance.InstanceNumber = number
            if number > count - fail:
                instance.SOPClassUID = instance.file_meta.MediaStorageSOPClassUID = UNCARRIED_SOP_CLASS
            self.instances.append(instance)
        self.failing_uids = [str(i.SOPInstanceUID) for i in self.instances[count - fail:]]
        ae = AE(ae_title=ae_title)
        for sop_class in RETRIEVE_CLASSES:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        # A C-GET's instances go back on its association: the storage roles its requester proposes.
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], scu_role=True,
                                 scp_role=True)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_MOVE, self._move), (evt.EVT_C_GET, self._get)])

    def _move(self, event):
        self.message_ids.append(int(event.request.MessageID))
        self.requests.append(event.identifier)
        if self.hold:
            self.released.wait(60)
            yield "127.0.0.1", self.move_port
            yield 0  # the requester has gone by then: nothing to move
            return
        yield "127.0.0.1", self.move_port
        yield from self._sub_operations(event)

    def _get(self, event):
        self.requests.append(event.identifier)
        if self.hold:
            self.released.wait(60)
            yield 0
            return
        yield from self._sub_operations(event)

    def _sub_operations(self, event):
        yield len(self.instances)
        for number, instance in enumerate(self.instances):
            if number == self.stall_after:
                self.released.wait(60)
                return
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, instance

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
