"""Instances a source stores for a C-MOVE another receiving process made, handed to it.

With several receiving processes (receiver.py) on one port, the association a source opens
to store what the router asked it to move goes to whichever process the kernel picks, not
necessarily the one whose retrieval waits for those instances (retrieve_service.py). So each
receiving process answers, on a Unix socket of its own in a folder only the router's user
can enter, two questions of the others:

- `count`: how many of its C-MOVEs wait on a source of this AE title (for a source that
  names no Move Originator: an instance goes to the one C-MOVE waiting on that source in the
  whole node, or to none);
- `claim`: here is an instance (a file in the node's spool) with its C-STORE's Move
  Originator AE title and Message ID; is it for one of your C-MOVEs? The answer is the
  status to send the source once the retrieval queued it (its queue is short: a reader
  that falls behind slows the source down, across processes as within one).

Which process made a C-MOVE is in its Message ID: process `number` uses the IDs congruent
to it modulo MAX_PROCESSES (`message_ids`), so a C-STORE that names its Message ID is asked
of one process only. A process restarting (its socket gone) answers nothing: its
retrievals ended with it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import socketserver
import tempfile
import threading
from typing import Callable, Iterator

from ..config import MAX_PROCESSES

log = logging.getLogger("rulesengine.retrieve")

ANSWER_SECONDS = 600.0  # the longest a claim waits for the retrieval's reader to queue the instance
COUNT_SECONDS = 5.0  # the longest a count may take
MAX_REQUEST = 64 * 1024  # bytes of one request: paths, AE titles and a number


def message_ids(number: int) -> Iterator[int]:
    """The Message IDs receiving process `number` (0, 1, ...) gives its C-MOVEs and C-GETs, in
    turn and forever: 1 to 65535 (an US), each process its own residue modulo MAX_PROCESSES."""
    per_process = (65535 - number - 1) // MAX_PROCESSES + 1
    while True:
        for turn in range(per_process):
            yield number + 1 + turn * MAX_PROCESSES


def process_of(message_id) -> int | None:
    """The receiving process that gave this Message ID (None: not a Message ID at all)."""
    try:
        value = int(message_id)
    except (TypeError, ValueError):
        return None
    return (value - 1) % MAX_PROCESSES if 1 <= value <= 65535 else None


def exchange_folder() -> str:
    """A new folder for the node's sockets: private to the router's user, and short enough a
    path for a Unix socket's address (108 bytes), wherever the storage folder is."""
    base = os.environ.get("TMPDIR") or "/tmp"
    if not os.path.isdir(base) or len(base) > 60:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="rulesengine-", dir=base)


def remove_exchange_folder(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def socket_path(folder: str, number: int) -> str:
    return os.path.join(folder, f"receiving-{number}.sock")


# What a process answers with: (status, comment) for a claimed instance, None for one that is
# not for any of its C-MOVEs; and how many C-MOVEs wait on a source's AE title.
ClaimHere = Callable[[str, str, "int | None", str], "tuple[int, str | None] | None"]
CountHere = Callable[[str], int]


class RetrievalExchange:
    """This receiving process's side: it answers the others (`start`) and asks them (`count`,
    `claim`)."""

    def __init__(self, folder: str, number: int, processes: int, spool_tmp: str):
        self.folder = folder
        self.number = number
        self.processes = processes
        self.spool_tmp = os.path.realpath(spool_tmp)  # the only place an instance handed over may be
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    # ---- answering ----

    def start(self, claim_here: ClaimHere, count_here: CountHere) -> None:
        exchange = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                try:
                    line = self.rfile.readline(MAX_REQUEST)
                    answer = exchange._answer(json.loads(line), claim_here, count_here)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    answer = {"error": f"bad request: {exc}"}
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        path = socket_path(self.folder, self.number)
        if os.path.lexists(path):
            os.unlink(path)  # this process's predecessor's
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
        server.daemon_threads = True
        os.chmod(path, 0o600)
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.1,), name="retrieval-exchange", daemon=True).start()

    def _answer(self, request: dict, claim_here: ClaimHere, count_here: CountHere) -> dict:
        if request["op"] == "count":
            return {"count": count_here(str(request["calling"]))}
        if request["op"] != "claim":
            raise ValueError(f"no operation {request['op']!r}")
        path = str(request["path"])
        if os.path.dirname(os.path.realpath(path)) != self.spool_tmp:
            raise ValueError("an instance outside the spool")
        message_id = request.get("message_id")
        answer = claim_here(str(request["calling"]), str(request["originator"]),
                            int(message_id) if message_id is not None else None, path)
        return {"claimed": False} if answer is None else {"claimed": True, "status": answer[0], "comment": answer[1]}

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            try:
                os.unlink(socket_path(self.folder, self.number))
            except OSError:
                pass

    # ---- asking ----

    def others(self) -> list[int]:
        return [number for number in range(self.processes) if number != self.number]

    def count(self, calling: str) -> dict[int, int]:
        """Per other process, its C-MOVEs waiting on a source of AE title `calling`."""
        counts = {}
        for number in self.others():
            answer = self._ask(number, {"op": "count", "calling": calling}, COUNT_SECONDS)
            if answer and answer.get("count"):
                counts[number] = int(answer["count"])
        return counts

    def claim(self, number: int, calling: str, originator: str, message_id: int | None,
              path: str) -> tuple[int, str | None] | None:
        """Ask process `number` whether the instance at `path` is for one of its C-MOVEs: its
        status for the source if it took it (it linked the file into its own), else None."""
        if number == self.number or not 0 <= number < self.processes:
            return None
        answer = self._ask(number, {"op": "claim", "calling": calling, "originator": originator,
                                    "message_id": message_id, "path": path}, ANSWER_SECONDS)
        if not answer or not answer.get("claimed"):
            return None
        return int(answer["status"]), answer.get("comment")

    def _ask(self, number: int, request: dict, timeout: float) -> dict | None:
        """One question to process `number`; None when it cannot be asked (restarting, gone)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(timeout)
                connection.connect(socket_path(self.folder, number))
                connection.sendall(json.dumps(request).encode() + b"\n")
                with connection.makefile("rb") as answers:
                    answer = json.loads(answers.readline(MAX_REQUEST) or b"null")
        except (OSError, ValueError) as exc:
            log.debug("receiving process %d not asked about a retrieved instance: %s", number, exc)
            return None
        if isinstance(answer, dict) and "error" in answer:
            log.warning("receiving process %d refused a question about a retrieved instance: %s", number,
                        answer["error"])
            return None
        return answer if isinstance(answer, dict) else None
