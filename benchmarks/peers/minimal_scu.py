"""The floor of sending with the Python stack: a pynetdicom storage SCU that sends every file
of a folder on one association, each data set streamed from its file (128 KiB PDUs,
TCP_NODELAY), and prints the CPU seconds it used from the association's request to its
release. Usage: minimal_scu.py HOST PORT CALLED_AE FOLDER"""

import os
import socket
import sys

import pydicom
from pynetdicom import AE, _config, evt

_config.STORE_SEND_CHUNKED_DATASET = True
host, port, called, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
paths = sorted(os.path.join(folder, name) for name in os.listdir(folder)
               if os.path.isfile(os.path.join(folder, name)))
first = pydicom.dcmread(paths[0], stop_before_pixels=True)


def no_delay(event):
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


ae = AE(ae_title="MINIMALSCU")
ae.maximum_pdu_size = 131072
ae.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
started = os.times()
assoc = ae.associate(host, port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
if not assoc.is_established:
    sys.exit("no association")
for path in paths:
    status = assoc.send_c_store(path)
    if not status or status.Status != 0:
        sys.exit(f"{path}: {status}")
assoc.release()
ended = os.times()
print(f"cpu {ended.user + ended.system - started.user - started.system:.6f}")
