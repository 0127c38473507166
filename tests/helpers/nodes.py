"""Router nodes on one machine: each `dicom-rules run` process with its own configuration
(`node:`, listener port) on one storage folder and one PostgreSQL journal, as a cluster of
machines sharing a database and a network folder would run them."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pydicom
import pydicom.errors

from helpers.instances import read_header
from helpers.peers import RouterProcess, free_port

# Every instance edited (the copy each destination receives is written into the node's spool/out).
ROUTE_EDITED = """
rule "everything" {
  then {
    set DataSet.InstitutionName = "ROUTED"
    route to STORE
  }
}
"""


def node_config(name: str, port: int, journal_url: str, peer_port: int, lease_seconds: float,
                watch: Path | None = None) -> str:
    watched = f"watch:\n  - {{name: inbox, path: {watch}, settle_seconds: 0.5}}\n" if watch else ""
    return f"""
storage: var
rules: main.rules
node: {name}
journal: {journal_url}
journal_lease_seconds: {lease_seconds}
{watched}listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
destinations:
  STORE: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {peer_port},
           retry: {{delay: 0.2, multiplier: 1, max_attempts: 1000}}}}
"""


def start_nodes(folder: Path, names: list[str], journal_url: str, peer_port: int,
                lease_seconds: float = 3, watch: Path | None = None) -> dict[str, RouterProcess]:
    """One router process per name, in that order, all in `folder` (one storage folder `var`,
    one rule file), each watching `watch` when given."""
    (folder / "main.rules").write_text(ROUTE_EDITED, encoding="utf-8")
    nodes = {}
    for name in names:
        config = folder / f"{name}.yaml"
        port = free_port()
        config.write_text(node_config(name, port, journal_url, peer_port, lease_seconds, watch), encoding="utf-8")
        nodes[name] = RouterProcess(config, port).start()
    return nodes


def journal_rows(journal_url: str, query: str, *args) -> list[tuple]:
    with psycopg.connect(journal_url, autocommit=True) as db:
        return db.execute(query, args).fetchall()


def arrived_uids(folder: Path) -> set[str]:
    """The SOP Instance UIDs of the files a storescp wrote to `folder`; a file it is still
    writing (it serves several associations at once) is left for the next look."""
    found = set()
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                found.add(str(read_header(path).SOPInstanceUID))
            except (pydicom.errors.InvalidDicomError, EOFError, AttributeError, OSError):
                continue
    return found
