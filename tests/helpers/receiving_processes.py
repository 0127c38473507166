"""Several receiving processes in the real router: the rule files, configurations and
senders the tests of `processes:` share, and what they read from the router's log."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from helpers.instances import make_instances, read_header
from helpers.peers import storescu

ASSOCIATIONS_PER_SENDER = 3  # 8 senders x 3: the kernel's spread leaves one process alone once in 2^23


def rules(label: str) -> str:
    return f"""
rule "label" {{
  then {{
    set DataSet.InstitutionName = "{label}"
    route to STORE
  }}
}}
"""


def config(port: int, processes: int | str = 2) -> str:
    return (f"storage: var\nrules: main.rules\nprocesses: {processes}\n"
            f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            "destinations:\n  STORE: {type: folder, path: received}\n")


def start_router(router_factory, port: int, label: str = "V1", processes: int = 2, text: str | None = None):
    router = router_factory(text or config(port, processes), rules(label), port)
    for number in range(1, processes):
        router.wait_for_log(f"receiving process {number} (")  # its listener is bound: the port is shared
    return router


def receiving_pids(router) -> list[int]:
    """The extra receiving processes the router started, in order (from its log)."""
    return [int(pid) for pid in re.findall(r"receiving process (\d+) started", router.output())]


def accepted_by_process(output: str) -> dict[int, int]:
    """Associations each process accepted, from the lines its listener logs as it stops."""
    accepted: dict[int, int] = {}
    for pid, count in re.findall(r"listener main stopped in process (\d+): (\d+) association", output):
        accepted[int(pid)] = accepted.get(int(pid), 0) + int(count)
    return accepted


def send_concurrently(port: int, folder: Path, senders: int = 8) -> list[str]:
    """`senders` storescu processes at once, each sending ASSOCIATIONS_PER_SENDER times (one
    association each) two new instances; the SOP Instance UIDs sent."""
    batches = [make_instances(folder / f"{sender}-{round_}", 2)
               for sender in range(senders) for round_ in range(ASSOCIATIONS_PER_SENDER)]
    failures: list[str] = []

    def send(sender: int) -> None:
        for batch in batches[sender * ASSOCIATIONS_PER_SENDER:(sender + 1) * ASSOCIATIONS_PER_SENDER]:
            result = storescu(port, [instance.path for instance in batch])
            if result.returncode != 0:
                failures.append(result.stdout + result.stderr)

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]
    return [instance.sop_instance_uid for batch in batches for instance in batch]


def labels(folder: Path) -> dict[str, str]:
    """SOP Instance UID -> InstitutionName of what the destination folder holds."""
    found = {}
    for path in folder.rglob("*.dcm"):
        dataset = read_header(path)
        found[str(dataset.SOPInstanceUID)] = str(dataset.InstitutionName)
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not reaped yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


