"""From a received file to queued deliveries.

`Pipeline.intake` decides: it reads the header, runs the rules, and settles a
reject, a drop or a quarantine at once; an instance to route is moved into
the spool and journaled before it returns, so the caller may then answer the
sender. The processor thread then writes the copy each destination receives
and queues the deliveries. A restart finishes what the processor had not.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Callable

from ..document import Arrival, Document, DocumentReadError
from ..lang.ruleset import Decision, RuleSet
from .journal import ACCEPTED, DONE, Journal, NewDelivery, Outcome, Received
from .rules import RulesHolder
from .storage import Storage, fsync_file, move_durably

log = logging.getLogger("rulesengine.router")


@dataclass
class Result:
    """What happened to one instance at intake."""

    outcome: str  # route | drop | reject | quarantine
    reason: str | None = None
    instance_id: int | None = None
    decision: Decision | None = None
    document: Document | None = None
    ruleset: RuleSet | None = None
    path: str | None = None  # where the instance is now (spool or quarantine)


@dataclass
class _Pending:
    instance_id: int
    path: str
    document: Document
    decision: Decision
    ruleset: RuleSet


def received_facts(document: Document) -> Received:
    arrival = document.arrival
    peer = f"{arrival.peer_address}:{arrival.peer_port}" if arrival.peer_address else None
    return Received(arrival.source_kind or "file", arrival.source_name, arrival.calling_aet, arrival.called_aet,
                    peer, document.get("DataSet.SOPClassUID") or document.get("FileMeta.MediaStorageSOPClassUID"),
                    document.get("DataSet.SOPInstanceUID") or document.get("FileMeta.MediaStorageSOPInstanceUID"))


def outcome_of(decision: Decision, ruleset: RuleSet) -> Outcome:
    return Outcome(ruleset.version, decision.outcome, decision.reason,
                   tuple(rule.name for rule in decision.rules_fired), tuple(decision.destinations))


def describe(document: Document, decision: Decision, ruleset: RuleSet) -> str:
    """The one log line per instance: source, rule set version, rules fired, destinations."""
    arrival = document.arrival
    source = arrival.source_name or arrival.source_kind or "?"
    if arrival.calling_aet:
        source += f" from {arrival.calling_aet}"
        if arrival.peer_address:
            source += f"@{arrival.peer_address}"
    sop = document.get("DataSet.SOPInstanceUID") or "?"
    fired = ", ".join(repr(rule.name) for rule in decision.rules_fired) or "none"
    if decision.outcome == "route":
        result = "-> " + ", ".join(decision.destinations)
    else:
        result = f"{decision.outcome}" + (f": {decision.reason}" if decision.reason else "")
    return f"{sop} via {source}: rules {ruleset.version} fired {fired} {result}"


class Pipeline:
    def __init__(self, storage: Storage, journal: Journal, rules: RulesHolder,
                 notify: Callable[[set[str]], None]):
        self.storage = storage
        self.journal = journal
        self.rules = rules
        self.notify = notify
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # ---- intake ---------------------------------------------------------------------------

    def decide(self, path: str, arrival: Arrival) -> tuple[Document, Decision, RuleSet]:
        """Read the header and run the current rules. Raises DocumentReadError."""
        document = Document.read_header(path, arrival)
        ruleset = self.rules.current
        return document, ruleset.evaluate(document), ruleset

    def intake(self, path: str, arrival: Arrival) -> Result:
        """Take a file we own (in the spool's temporary folder). Raises DocumentReadError
        for a file that is not a DICOM instance (the file is left in place)."""
        document, decision, ruleset = self.decide(path, arrival)
        return self.settle(path, document, decision, ruleset)

    def settle(self, path: str, document: Document, decision: Decision, ruleset: RuleSet) -> Result:
        received = received_facts(document)
        outcome = outcome_of(decision, ruleset)
        log.info(describe(document, decision, ruleset))
        if decision.error:
            log.warning("%s: %s", received.sop_instance_uid, decision.error)
        result = Result(decision.outcome, decision.reason, None, decision, document, ruleset)
        if decision.outcome in ("reject", "drop"):
            result.instance_id = self.journal.record(received, None, outcome, DONE)
            self.storage.remove(path)
        elif decision.outcome == "quarantine":
            result.path = self.storage.quarantine(path, decision.reason or "", self._facts(received, ruleset))
            result.instance_id = self.journal.record(received, result.path, outcome, DONE)
        else:
            result.path = self.storage.accept(path)
            # The document was read from the temporary name; its pixel data is at the new one.
            document.filename = result.path
            for copy in decision.destinations.values():
                copy.filename = result.path
            result.instance_id = self.journal.record(received, result.path, outcome, ACCEPTED)
            self._queue.put(_Pending(result.instance_id, result.path, document, decision, ruleset))
        return result

    @staticmethod
    def _facts(received: Received, ruleset: RuleSet) -> dict:
        return {"sop_instance_uid": received.sop_instance_uid, "sop_class_uid": received.sop_class_uid,
                "source": received.source_name, "calling_aet": received.calling_aet, "peer": received.peer,
                "rules_version": ruleset.version}

    # ---- processing ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what was accepted, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            pending = self._queue.get()
            if pending is None:
                return
            if isinstance(pending, _Marker):
                pending.event.set()
                continue
            try:
                self.process(pending)
            except Exception:  # noqa: BLE001 - journaled as accepted: the next start takes it again
                log.exception("instance %s could not be processed; it stays in the spool for the next start",
                              pending.instance_id)

    def write_copies(self, instance_id: int, path: str, document: Document, decision: Decision,
                     prefix: str = "") -> list[NewDelivery]:
        """The file each destination receives: the received file itself when nothing was
        edited, otherwise an edited copy (header rewritten, pixel data copied)."""
        edited_main = any(edit.destination is None for edit in decision.edits)
        deliveries = []
        for name, copy in decision.destinations.items():
            if copy is document and not edited_main:
                target = path
            else:
                target = self.storage.output_path(instance_id, prefix + name)
                temp = self.storage.temp_path()
                copy.write(temp)
                fsync_file(temp)
                move_durably(temp, target)
            deliveries.append(NewDelivery(name, target, copy.get("DataSet.SOPClassUID"),
                                          copy.get("DataSet.SOPInstanceUID"),
                                          copy.get("FileMeta.TransferSyntaxUID")))
        return deliveries

    def process(self, pending: _Pending) -> None:
        deliveries = self.write_copies(pending.instance_id, pending.path, pending.document, pending.decision)
        self.journal.add_deliveries(pending.instance_id, deliveries)
        if all(item.path != pending.path for item in deliveries):
            self.storage.remove(pending.path)  # every destination has its own copy
        self.notify({item.destination for item in deliveries})

    def recover(self) -> int:
        """After a restart: process what was accepted before the stop, with the current rules."""
        count = 0
        for row in self.journal.accepted_instances():
            count += 1
            path = row["path"]
            peer_address, _, peer_port = (row["peer"] or "").partition(":")
            arrival = Arrival(row["calling_aet"], row["called_aet"], peer_address or None,
                              int(peer_port) if peer_port.isdigit() else None, row["source_name"],
                              row["source_kind"], None)
            try:
                document, decision, ruleset = self.decide(path, arrival)
            except DocumentReadError as exc:
                log.error("instance %s (%s) cannot be read after the restart: %s", row["id"], path, exc)
                continue
            if decision.outcome != "route":
                # Answered already: a new decision to reject or drop it keeps it aside instead.
                reason = f"decided {decision.outcome} after a restart" + (
                    f": {decision.reason}" if decision.reason else "")
                quarantined = self.storage.quarantine(path, reason, self._facts(received_facts(document), ruleset))
                self.journal.add_deliveries(row["id"], [], outcome_of(decision, ruleset))
                log.warning("instance %s: %s; kept in %s", row["id"], reason, quarantined)
                continue
            self.process(_Pending(row["id"], path, document, decision, ruleset))
        if count:
            log.info("finished %d instance(s) accepted before the last stop", count)
        return count

    def wait_idle(self) -> None:
        """For tests and shutdown: until everything accepted so far is processed."""
        done = threading.Event()
        self._queue.put(_Marker(done))  # type: ignore[arg-type]
        done.wait()


class _Marker:
    def __init__(self, event: threading.Event):
        self.event = event
