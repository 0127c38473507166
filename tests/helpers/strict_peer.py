"""A pynetdicom storage SCP that behaves as strict PACS do: aborts on chosen instances,
rejects chosen SOP classes, checks AE titles, limits its associations."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from helpers.deliveries import FAST
from helpers.peers import free_port
from rulesengine.config import DicomDestination


class StrictPeer:
    """A pynetdicom SCP over real TCP: CT storage and C-ECHO. It aborts the association when
    it receives one of `abort_on` (SOP Instance UIDs), rejects without a reason an
    association that proposes one of `refuse_classes` (SOP classes), and can check AE titles
    and limit its associations, as PACS do."""

    def __init__(self, abort_on=(), refuse_classes=(), ae_title: str = "PEER", callers=(),
                 max_associations: int = 10):
        self.abort_on = set(abort_on)
        self.refuse_classes = set(refuse_classes)
        self.ae_title = ae_title
        self.port = free_port()
        self.stored: list[str] = []
        self.aborted: list[str] = []
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(callers)
        ae.maximum_associations = max_associations
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store),
                                                    (evt.EVT_REQUESTED, self._requested)])

    def _requested(self, event) -> None:
        proposed = {str(cx.abstract_syntax)
                    for cx in event.assoc.requestor.primitive.presentation_context_definition_list}
        if proposed & self.refuse_classes:
            event.assoc.acse.send_reject(0x01, 0x01, 0x01)  # rejected permanent by the service user, no reason
            evt.trigger(event.assoc, evt.EVT_REJECTED, {})
            event.assoc.kill()

    def _store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.abort_on:
            self.aborted.append(uid)
            event.assoc.abort()
            return 0xC000  # never sent: the association is gone
        self.stored.append(uid)
        return 0x0000

    def destination(self, **options) -> DicomDestination:
        return DicomDestination("PEER", options.pop("ae_title", self.ae_title), "127.0.0.1", self.port,
                                timeouts=FAST, **options)

    def stop(self) -> None:
        self.server.shutdown()
