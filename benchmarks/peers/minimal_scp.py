"""The ceiling of the Python stack: a pynetdicom storage SCP that only writes what it
receives (chunked to a file, 128 KiB PDUs, TCP_NODELAY). Usage: minimal_scp.py PORT FOLDER"""

import os
import shutil
import signal
import socket
import sys

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts

_config.STORE_RECV_CHUNKED_DATASET = True
port, folder = int(sys.argv[1]), sys.argv[2]


def store(event):
    shutil.move(event.dataset_path, os.path.join(folder, event.request.AffectedSOPInstanceUID))
    return 0x0000


ae = AE(ae_title="MINIMAL")
ae.maximum_pdu_size = 131072
for context in AllStoragePresentationContexts:
    ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
server.shutdown()
