"""What a user would write by hand: a pynetdicom SCP that forwards each instance it
receives to another SCP, one association per instance, defaults everywhere.
Usage: naive_forwarder.py PORT DEST_HOST DEST_PORT DEST_AE"""

import signal
import sys

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts

port, host, dest_port, dest_ae = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
forwarder = AE(ae_title="FORWARDER")
forwarder.requested_contexts = AllStoragePresentationContexts[:120]


def store(event):
    dataset = event.dataset
    dataset.file_meta = event.file_meta
    assoc = forwarder.associate(host, dest_port, ae_title=dest_ae)
    if not assoc.is_established:
        return 0xA700
    status = assoc.send_c_store(dataset)
    assoc.release()
    return status.Status if status else 0xA700


ae = AE(ae_title="FORWARDER")
for context in AllStoragePresentationContexts:
    ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
signal.sigwait({signal.SIGTERM, signal.SIGINT})
server.shutdown()
