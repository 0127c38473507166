"""From a received file to queued deliveries.

Receiving (`Pipeline.receive`) is what happens before the sender is answered:
the file is fsynced and moved into the spool and the journal commits it. The
rules run then too, but only when they can reject (a rejection must reach the
sender as a failure status); otherwise they run afterwards.

Processing (`Pipeline.process`) is the rest, after the answer: the rules run
on the instance's header, a quarantine or a drop is settled, and for a route
the copy each destination receives is written and its delivery queued. It
runs in a thread of this process, or in the router's worker process, which
reads what to process from the journal. A restart processes whatever was
received and not yet processed: nothing answered is ever lost.

What is taken is decided once, by `rulesengine.intake` (shared with dry-run):
a file that cannot be read, or is not an instance to route, is refused before
the answer; one whose file meta information does not describe its data set (none,
or naming another SOP class, instance or transfer syntax) is kept with file meta
made from the data set, and read again from there, before the rules see it. The
rule set version an instance follows is fixed at its answer and journaled with
it; processing uses exactly that version (see rules.py).

After processing, every instance the journal holds is settled: routed (its
deliveries queued), dropped, or quarantined with its reason. A failure after
the answer (the recorded rules cannot be compiled again, a copy cannot be
written, a bug) quarantines the instance; it never stays `accepted`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from ..copies import CopyError, is_received_file, keep_with_file_meta, write_copy
from ..arrival import HEADER_KEYWORDS, Arrival
from ..document import Document, DocumentReadError
from ..intake import file_meta_problem, read_instance, short_error
from ..lang.ruleset import Decision, RuleSet
from .journal import (ACCEPTED, DONE, MAX_TRACE_EDITS, ClaimLost, Instance, Journal, NewDelivery, Outcome, URGENT,
                      trace_text, unreachable)
from .events import NO_EVENTS, Events
from .journal.errors import never_connected
from .groups import GroupRunner, Joined
from .rules import RuleSetVersions, RulesHolder, RulesUnavailable
from .storage import Storage, fsync_file, move_durably

log = logging.getLogger("rulesengine.router")



@dataclass
class Result:
    """What happened to one instance when it was received."""

    outcome: str  # accepted | reject (and, when the rules ran at once: route | drop | quarantine)
    reason: str | None = None
    instance_id: int | None = None
    decision: Decision | None = None
    path: str | None = None  # where the instance is now


def received_facts(document: Document) -> Arrival:
    """How the document arrived, with the instance it brought (the data set's UIDs, else the
    file meta's), as the journal records it."""
    arrival = document.arrival
    if not arrival.source_kind:
        arrival = replace(arrival, source_kind="file")
    return arrival.with_instance(*instance_uids(document), header_facts(document))


def instance_uids(document: Document) -> tuple[str | None, str | None]:
    """The SOP class and instance UIDs of the data set, else of the file meta."""
    return (document.get("DataSet.SOPClassUID") or document.get("FileMeta.MediaStorageSOPClassUID"),
            document.get("DataSet.SOPInstanceUID") or document.get("FileMeta.MediaStorageSOPInstanceUID"))


def header_facts(document: Document) -> dict[str, object]:
    """The header facts the journal keeps for searching (Arrival.HEADER_COLUMNS), by keyword,
    as the data set has them; a value that cannot be read (a damaged element) is left out."""
    facts = {}
    for keyword in HEADER_KEYWORDS.values():
        try:
            facts[keyword] = document.dataset.get(keyword)
        except Exception:  # noqa: BLE001 - pydicom converting a damaged value; the rules report it
            continue
    return facts


def outcome_of(decision: Decision, ruleset: RuleSet) -> Outcome:
    """The decision as the journal records it, with its trace: the rules fired and the edits."""
    fired = [{"name": rule.name, "file": rule.file, "line": rule.line} for rule in decision.rules_fired]
    edits = [edit.to_json() for edit in decision.edits[:MAX_TRACE_EDITS]]
    trace = trace_text(decision.outcome, decision.reason, ruleset.version, fired, edits,
                       len(decision.edits) - len(edits))
    return Outcome(ruleset.version, decision.outcome, decision.reason,
                   tuple(rule.name for rule in decision.rules_fired), tuple(decision.destinations), trace)


def failed_outcome(outcome: str, reason: str, version: str | None, decided: Outcome | None = None) -> Outcome:
    """An instance that could not be handled as decided (or not decided at all): quarantined, or
    refused, with the reason; its trace keeps what the rules did, when they ran."""
    trace = None
    if decided is not None and decided.trace:
        trace = json.loads(decided.trace)
    rules_fired = trace["rules_fired"] if trace else []
    edits = trace["edits"] if trace else []
    truncated = trace["truncated"] if trace else 0
    return Outcome(version, outcome, reason, decided.rules_fired if decided is not None else (), (),
                   trace_text(outcome, reason, version, rules_fired, edits, truncated))


def describe(document: Document, decision: Decision, ruleset: RuleSet, held: tuple[str, ...] = (),
             late: bool = False) -> str:
    """The one log line per instance: source, rule set version, rules fired, destinations (and
    the open groups that hold it, `held`; `late`: it came after its group fired, and the group
    rule's `late` policy, logged before, handled it)."""
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
    elif held and decision.unrouted:
        result = ""
    elif late and decision.unrouted:
        result = "late for its group: handled by the group rule's late policy"
    else:
        result = f"{decision.outcome}" + (f": {decision.reason}" if decision.reason else "")
    if held:
        result = "; ".join(part for part in (result, f"held for {', '.join(held)}") if part)
    if decision.notifications:
        result += "; notify " + ", ".join(dict.fromkeys(note.notifier for note in decision.notifications))
    return f"{sop} via {source}: rules {ruleset.version} fired {fired} {result}"


def _rejected(decision: Decision, ruleset: RuleSet) -> bool:
    """A decision answered with a rejection at reception: a rule's reject, or the no-destination
    policy's, unless the instance is held for its group rules, which may route it."""
    return decision.outcome == "reject" and not GroupRunner.joins(ruleset, decision)


HOLD_SECONDS = (1.0, 300.0)  # an instance that could not even be quarantined is tried again after 1 s, doubling
CLAIM_BATCH = 4  # instances claimed at once by process_pending: few, so that other processes share the work


class ClaimKeeper:
    """The instances this process is processing: their claims are renewed every third of a
    lease (a thread started with the first claim), however long one takes (a 1 GB copy).
    `renew`: the journal's call that renews them (the groups this process fires have one)."""

    def __init__(self, journal: Journal, clock: Callable[[], float] = time.time,
                 renew: Callable[..., int] | None = None, name: str = "instance-claims"):
        self.journal = journal
        self.clock = clock
        self.renew = renew or journal.renew_instance_leases
        self.name = name
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def hold(self, instance_ids) -> None:
        with self._lock:
            self._ids.update(instance_ids)
            if self._thread is None:
                self._stopping = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stopping,), name=self.name,
                                                daemon=True)
                self._thread.start()

    def drop(self, instance_ids) -> None:
        with self._lock:
            self._ids.difference_update(instance_ids)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)

    def tick(self, now: float | None = None) -> int:
        """One round: how many claims were renewed (fewer than held: lost to another process,
        which settling finds out)."""
        held = self.held()
        return self.renew(held, self.clock() if now is None else now) if held else 0

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.journal.lease_seconds / 3):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the database may be away a while: try again next round
                log.debug("%s: cannot renew them", self.name, exc_info=True)

    def stop(self) -> None:
        """The renewing thread ends (a later claim starts another)."""
        with self._lock:
            self._stopping.set()
            self._thread = None


class Pipeline:
    def __init__(self, storage: Storage, journal: Journal, rules: RulesHolder | None,
                 notify: Callable[[set[str]], None], on_accepted: Callable[[int], None] | None = None,
                 versions: RuleSetVersions | None = None, clock: Callable[[], float] = time.time,
                 events: Events = NO_EVENTS):
        """`rules`: the rules running here, for receiving (None in the worker process, which
        only processes). `versions`: the rule sets instances are processed with, by the version
        recorded at their answer (by default, `rules` and what the journal kept of others).
        `on_accepted(instance_id)` hands a received instance to whoever processes it (the
        worker process); without it, a thread of this process does (`start`)."""
        self.storage = storage
        self.journal = journal
        self.clock = clock  # the arrival time of what is received (Arrival.* in the rules), in seconds
        self.events = events  # an instance quarantined (events.py)
        self.rules = rules
        self.versions = versions or RuleSetVersions(journal, rules.config, rules)
        self.notify = notify
        self.on_accepted = on_accepted or self._enqueue
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # processing one instance at a time, whoever asks
        self._held: dict[int, tuple[float, float]] = {}  # instance -> (next try, wait after it)
        self.claims = ClaimKeeper(journal)  # what this process is processing, claimed in the journal
        # the groups this process fires (groups.py): their leases renewed while they fire
        self.group_leases = ClaimKeeper(journal, self.clock, renew=journal.renew_group_leases, name="group-leases")
        self.groups = GroupRunner(self)  # group rules: joining, firing (fire_due, the timer), late instances

    describe = staticmethod(describe)  # the log line of a decision, for the group rules' too
    outcome_of = staticmethod(outcome_of)  # a decision as the journal records it, the group rules' too

    # ---- receiving ----------------------------------------------------------------------------

    def decide(self, path: str, arrival: Arrival) -> tuple[Document, Decision, RuleSet]:
        """Take the file in (`rulesengine.intake`) and run the current rules.
        Raises DocumentReadError (RefusedAtIntake among them)."""
        document = self.take(path, arrival)
        ruleset = self.rules.current
        return document, ruleset.evaluate(document), ruleset

    def take(self, path: str, arrival: Arrival) -> Document:
        """The instance in `path` (a file we own) as the router keeps it: read and checked by
        `rulesengine.intake`; when its file meta does not describe its data set, the file is
        rewritten with file meta made from the data set, and read again. Raises DocumentReadError
        (RefusedAtIntake among them)."""
        if arrival.received_at is None:
            arrival = replace(arrival, received_at=self.clock())
        document = read_instance(path, arrival)
        problem = file_meta_problem(document)
        if problem is None:
            return document
        self._add_file_meta(path, document)
        log.info("%s from %s: %s; kept with file meta information made from its data set",
                 document.get("DataSet.SOPInstanceUID"), arrival.calling_aet or arrival.source_name, problem)
        return read_instance(path, arrival)

    def receive(self, path: str, arrival: Arrival, decide: bool | None = None) -> Result:
        """Take a file we own (in the spool's temporary folder); when this returns, the
        sender may be answered. The rules run now when `decide`, or by default when they
        can reject. Raises DocumentReadError (RefusedAtIntake among them) when the file is
        not an instance the router takes: the caller still owns the file then."""
        document = self.take(path, arrival)
        ruleset = self.rules.current  # the version this instance follows, whoever processes it
        if decide or (decide is None and ruleset.can_reject):
            decision = ruleset.evaluate(document)
            if _rejected(decision, ruleset):
                return self._reject(path, document, decision, ruleset)
        return self._accept(path, document, ruleset)

    def intake(self, path: str, arrival: Arrival) -> Result:
        """receive() with the rules run at once (a watched folder sorts out rejected files)."""
        return self.receive(path, arrival, decide=True)

    def settle(self, path: str, document: Document, decision: Decision, ruleset: RuleSet) -> Result:
        """The rules ran at reception: a reject is answered; anything else is received."""
        if _rejected(decision, ruleset):
            return self._reject(path, document, decision, ruleset)
        return self._accept(path, document, ruleset)

    def _accept(self, path: str, document: Document, ruleset: RuleSet) -> Result:
        received = received_facts(document)
        spooled = self.storage.accept(path, received)
        # processing reads the file without checking it again while it still matches (see intake);
        # the rename into the spool keeps what the fingerprint holds
        try:
            instance_id = self.journal.record(received, spooled, None, ACCEPTED, ruleset.version, document.fingerprint)
        except Exception as exc:
            if never_connected(exc):  # surely not journaled: the file goes back to the caller, who refuses it
                os.replace(spooled, path)
            raise  # otherwise it may have been: the file stays, and a start journals it again if not
        self.on_accepted(instance_id)
        return Result("accepted", None, instance_id, None, spooled)

    def _add_file_meta(self, path: str, document: Document) -> None:
        """Rewrite `path` with file meta information that describes its data set, so that it is
        a proper DICOM file, which destinations can be sent as it is and under the data set's
        UIDs. Raises DocumentReadError if it cannot be written."""
        temp = self.storage.temp_path()
        try:
            keep_with_file_meta(document, temp)
            move_durably(temp, path)
        except (CopyError, OSError) as exc:
            self.storage.remove(temp)
            raise DocumentReadError(f"{path}: cannot be kept with file meta information: {exc}") from None

    def _reject(self, path: str, document: Document, decision: Decision, ruleset: RuleSet) -> Result:
        log.info(describe(document, decision, ruleset))
        instance_id = self.journal.record(received_facts(document), None, outcome_of(decision, ruleset), DONE)
        self.storage.remove(path)
        self.events.rule_notifications(decision.notifications, received_facts(document), instance_id)
        return Result("reject", decision.reason, instance_id, decision)

    # ---- processing -----------------------------------------------------------------------------

    def process(self, instance_id: int) -> None:
        """Run the rules the instance was answered under and settle it: quarantine, drop, or
        route (copies written, deliveries queued). Whatever fails, it ends quarantined with the
        reason; only when even that fails (the storage folder) is it tried again, later. The
        instance is claimed in the journal first: one process, of any node, processes it."""
        with self._lock:
            if not self._due(instance_id):
                return
            instance = self.journal.claim_instance(instance_id)
            if instance is None:
                return  # processed already (a wake-up can come twice), or another process has it
            self._process_claimed(instance)

    def _due(self, instance_id: int) -> bool:
        held = self._held.get(instance_id)
        return held is None or held[0] <= time.monotonic()

    def _process_claimed(self, instance: Instance) -> None:
        """With the lock held, an instance this process claimed: processed, and its claim let go."""
        instance_id = instance.id
        self.claims.hold([instance_id])
        try:
            self._process(instance)
        except ClaimLost as exc:  # this process stalled past its lease: the other one's work stands
            log.warning("instance %s: processing it again elsewhere; this process leaves it (%s)", instance_id, exc)
        except Exception as exc:  # noqa: BLE001 - could not be settled, not even quarantined: try later
            if unreachable(exc):  # the journal's database is away: the caller waits for it, this instance is fine
                with contextlib.suppress(Exception):
                    self.journal.release_instances([instance_id])  # else its claim expires
                raise
            self._hold(instance_id, first=instance_id not in self._held)
            self.journal.release_instances([instance_id])
        else:
            self._held.pop(instance_id, None)
        finally:
            self.claims.drop([instance_id])

    def _hold(self, instance_id: int, first: bool) -> None:
        wait = self._held.get(instance_id, (0.0, HOLD_SECONDS[0]))[1]
        self._held[instance_id] = (time.monotonic() + wait, min(wait * 2, HOLD_SECONDS[1]))
        if first:
            log.exception("instance %s could not be processed nor quarantined; it stays in the spool and is tried "
                          "again in %.0f s, then less and less often", instance_id, wait)
        else:
            log.debug("instance %s still cannot be processed", instance_id, exc_info=True)

    def _process(self, instance: Instance) -> None:
        instance_id, path, version = instance.id, instance.path, instance.outcome.ruleset_version
        received = instance.arrival
        if received.received_at is None:  # the journal keeps the arrival time beside the arrival
            received = replace(received, received_at=instance.received_at)
        try:
            ruleset = self.versions.get(version)
        except RulesUnavailable as exc:
            self._quarantine_failure(instance_id, path, received, version, str(exc))
            return
        try:
            document = read_instance(path, received, instance.checked)
        except DocumentReadError as exc:
            self._quarantine_failure(instance_id, path, received, ruleset.version,
                                     str(exc).replace(path, "the received file"))
            return
        # as received, for the group rules: the instance rules edit `document`
        received_copy = document.copy() if getattr(ruleset, "group_rules", ()) else None
        decision = ruleset.evaluate(document)
        joined = (self.groups.join(instance, document, ruleset, received_copy) if GroupRunner.joins(ruleset, decision)
                  else None)
        log.info(describe(document, decision, ruleset, joined.held if joined is not None else (),
                          late=joined is not None and not joined.held and bool(
                              joined.deliveries or joined.quarantine or joined.dropped)))
        if decision.error:
            log.warning("instance %s: %s", instance_id, decision.error)
            if decision.exception is not None:  # its traceback names the rule-file lines (run -v)
                log.debug("instance %s: where the rules failed", instance_id, exc_info=decision.exception)
        outcome = outcome_of(decision, ruleset)
        if joined is not None:
            self._settle_grouped(instance, path, document, decision, outcome, joined)
        elif decision.outcome == "route":
            self._route(instance_id, path, document, decision, outcome)
        elif decision.outcome == "drop":
            retained = self.storage.keep(self.journal, instance_id)  # for replay (retention.delivered)
            self.journal.settle(instance_id, outcome, path if retained else None)
            if not retained:
                self.storage.remove(path)
        else:
            # quarantine; or a reject the sender can no longer be told of (an instance released
            # from the quarantine follows the rules in place now): kept aside either way
            reason = decision.reason or ""
            if decision.outcome == "reject":
                reason = f"rejected after the sender was answered: {reason}"
            self._keep_aside(instance_id, path, received_facts(document), reason, outcome)
        # `notify`: queued once the instance is settled (a crash before leaves it to be processed again)
        self.events.rule_notifications(decision.notifications, received_facts(document), instance_id)

    def _settle_grouped(self, instance: Instance, path: str, document: Document, decision: Decision,
                        outcome: Outcome, joined: Joined) -> None:
        """An instance that joined its groups (groups.py): routed as its instance rules say, with
        what late refires add; held (its file kept) while a group it joined is open; else
        quarantined or dropped as its late groups' policies say. Then the `complete when` of
        its open groups is checked: one that holds fires at once."""
        instance_id, version = instance.id, outcome.ruleset_version
        if decision.outcome == "route" or joined.deliveries:
            for reason in joined.quarantine:
                self.groups.quarantine_copy(instance, reason)
            if decision.outcome != "route":
                outcome = replace(outcome, outcome="route", reason=None,
                                  destinations=tuple(dict.fromkeys(item.destination for item in joined.deliveries)))
            self._route(instance_id, path, document, decision, outcome, extra=joined.deliveries, keep=True)
        elif joined.held:
            for reason in joined.quarantine:
                self.groups.quarantine_copy(instance, reason)
            self.journal.settle(instance_id, failed_outcome("held", f"held for {', '.join(joined.held)}", version,
                                                            outcome), path)
        elif joined.quarantine:
            self._keep_aside(instance_id, path, received_facts(document), "; ".join(joined.quarantine),
                             failed_outcome("quarantine", "; ".join(joined.quarantine), version, outcome))
        else:  # late and dropped, or its groups fired with no place for it
            reason = "; ".join(joined.dropped) or decision.reason or "no rule routed it"
            self.journal.settle(instance_id, failed_outcome("drop", reason, version, outcome), None)
        for notifications, group in joined.notifications:  # a late refire's `notify`
            self.events.rule_notifications(notifications, received_facts(document), instance_id, group)
        self.groups.complete(joined.completing)
        if not self.journal.path_in_use(path):
            # no open group holds it and no delivery needs it (also when its groups fired meanwhile,
            # or fired with it before a crash made it processed again): it leaves the spool
            self.storage.remove(path)

    def _route(self, instance_id: int, path: str, document: Document, decision: Decision, outcome: Outcome,
               extra: tuple[NewDelivery, ...] = (), keep: bool = False) -> None:
        """Write the copies the decision's destinations receive and queue them (with `extra`,
        written already); the received file leaves the spool when none of them needs it
        (`keep`: the caller decides, for its groups)."""
        try:
            deliveries = self.write_copies(instance_id, path, document, decision) + list(extra)
        except (CopyError, OSError) as exc:
            reason = str(exc) if isinstance(exc, CopyError) else f"its copies cannot be written: {short_error(exc)}"
            self._quarantine_failure(instance_id, path, received_facts(document), outcome.ruleset_version, reason,
                                     outcome)
            return
        except Exception as exc:  # noqa: BLE001 - a bug; the instance is kept, with the traceback logged once
            log.exception("instance %s: internal error while writing its copies", instance_id)
            self._quarantine_failure(instance_id, path, received_facts(document), outcome.ruleset_version,
                                     f"internal error while writing its copies: {short_error(exc)}",
                                     outcome, logged=True)
            return
        retained = self.storage.keep(self.journal, instance_id)  # before a delivery can end and remove it
        self.journal.add_deliveries(instance_id, deliveries, outcome)
        if not retained and not keep and all(item.path != path for item in deliveries):
            self.storage.remove(path)  # every destination has its own copy
        self.notify({item.destination for item in deliveries})

    def _quarantine_failure(self, instance_id: int, path: str, received: Arrival, version: str | None, reason: str,
                            decided: Outcome | None = None, logged: bool = False) -> None:
        """A failure after the answer: one WARNING line, and the instance kept aside with the reason."""
        if not logged:
            log.warning("instance %s from %s: %s; quarantined", instance_id,
                        received.calling_aet or received.source_name, reason)
        self._keep_aside(instance_id, path, received, reason, failed_outcome("quarantine", reason, version, decided))

    def _keep_aside(self, instance_id: int, path: str, received: Arrival, reason: str, outcome: Outcome) -> None:
        # The file moves before the journal says so: only while this process's claim holds
        # (renewed, it holds for a lease more), never from under another process that took it.
        if self.journal.renew_instance_leases([instance_id]) == 0:
            raise ClaimLost(f"instance {instance_id} is no longer claimed by this process")
        kept = self.storage.quarantine(path, reason, {**received.to_quarantine(),
                                                      "rules_version": outcome.ruleset_version})
        self.journal.settle(instance_id, outcome, kept)
        self.events.instance_quarantined(instance_id, received, reason)

    def write_copies(self, instance_id: int, path: str, document: Document, decision: Decision,
                     prefix: str = "", durable: bool = True) -> list[NewDelivery]:
        """The file each destination receives: the received file itself when nothing was
        edited, otherwise an edited copy (header rewritten, pixel data copied). Raises
        CopyError or OSError when one cannot be written; none of them is left behind then.
        `durable=False` skips the fsyncs, for copies sent at once and removed whatever
        happens (sync mode, retrievals): a crash before they are sent loses nothing, since
        whoever asked was not answered yet."""
        deliveries: list[NewDelivery] = []
        written: list[str] = []
        try:
            for name, copy in decision.destinations.items():
                if is_received_file(document, copy, decision):
                    target = path
                else:
                    target = self.storage.output_path(instance_id, prefix + name)
                    temp = self.storage.temp_path()
                    written.append(temp)
                    write_copy(copy, name, temp)
                    written.append(target)
                    if durable:
                        fsync_file(temp)
                        move_durably(temp, target)
                    else:
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        os.replace(temp, target)
                sop_class_uid, sop_instance_uid = instance_uids(copy)  # only these: not every header fact
                deliveries.append(NewDelivery(name, target, sop_class_uid, sop_instance_uid,
                                              copy.get("FileMeta.TransferSyntaxUID"),
                                              URGENT if decision.urgent else 0,
                                              decision.windows.get(name) if decision.windows else None))
        except BaseException:
            for written_path in written:
                self.storage.remove(written_path)
            raise
        return deliveries

    def process_pending(self, interrupted: Callable[[], bool] | None = None) -> int:
        """Process every instance received and not yet processed, oldest first, that no other
        process holds: a few claimed at a time (claim_instances), each processed by this
        process alone. Returns how many this process claimed. `interrupted`: asked before each
        batch; True ends the pass there (a worker process's reload comes first)."""
        count = 0
        after = 0
        while True:
            if interrupted is not None and interrupted():
                return count
            batch = self.journal.claim_instances(CLAIM_BATCH, after=after)
            if not batch:
                return count
            after = batch[-1].id
            count += len(batch)
            self.claims.hold([instance.id for instance in batch])
            left = [instance.id for instance in batch]
            try:
                for instance in batch:
                    left.remove(instance.id)
                    with self._lock:
                        if not self._due(instance.id):
                            self.journal.release_instances([instance.id])  # waits its turn (see _hold)
                            continue
                        try:
                            self._process_claimed(instance)
                        except Exception as exc:  # noqa: BLE001 - left accepted: tried again at the next wake-up or start
                            if unreachable(exc):
                                raise  # the journal's database is away: no use trying the others now
                            log.exception("instance %s could not be processed; it stays in the spool", instance.id)
            finally:
                self.claims.drop([instance.id for instance in batch])
                if left:  # an error (the database away) before these: free for any process
                    self.journal.release_instances(left)

    def recover(self) -> int:
        """After a restart: files in the spool the journal does not know (their entry was
        lost with a power cut) are received again; then everything unprocessed is processed."""
        count = self.process_pending()
        if count:
            log.info("processed %d instance(s) received before the last stop", count)
        return count

    def reingest(self, paths: list[str]) -> int:
        """Spool files without a journal entry: they were fsynced before any answer, so they
        may have been answered; journal them again (a duplicate is possible, a loss is not),
        with what their name kept of the lost entry (see Arrival.to_filename): how and when
        they arrived and the C-STORE command set, so that the rules decide as they would
        have. A name written before it kept the time leaves the file's modification time
        (the end of its reception); the log line says what could not be recovered."""
        for path in paths:
            received, lost, sources = self._recovered_facts(path)
            instance_id = self.journal.record(received, path, None, ACCEPTED)
            log.warning("spool file %s had no journal entry; received again as instance %s (%s)", path, instance_id,
                        "; ".join(sources + ([f"not recovered: {', '.join(lost)}"] if lost else [])))
        return len(paths)

    def _recovered_facts(self, path: str) -> tuple[Arrival, list[str], list[str]]:
        """The arrival of a spool file without a journal entry, what of it is lost, and where
        the rest came from, in words for the log."""
        try:
            document = Document.read_header(path)
            uids = (document.get("DataSet.SOPClassUID") or document.get("FileMeta.MediaStorageSOPClassUID"),
                    document.get("DataSet.SOPInstanceUID") or document.get("FileMeta.MediaStorageSOPInstanceUID"))
        except Exception:  # noqa: BLE001 - unreadable: processing quarantines it with the reason
            uids = (None, None)
        received, gaps = self.storage.recover_facts_from_name(path, *uids)
        lost: list[str] = []
        sources: list[str] = []
        if "received_at" in gaps:
            try:
                received = replace(received, received_at=os.stat(path).st_mtime)
                sources.append("arrival time from the file's modification time")
            except OSError:
                lost.append("arrival time (the restart time instead)")
        else:
            sources.append("arrival time from its name")
        if "store_command" in gaps:
            lost.append("the C-STORE command set (CommandSet.*)")
        elif received.store_command is not None:
            kept = [keyword for keyword, _ in received.store_command]
            sources.append("C-STORE command set from its name" if not kept else
                           f"C-STORE command set from its name ({', '.join(kept)})")
            lost.extend(f"CommandSet.{keyword}" for keyword in gaps)
        return received, lost, sources

    # ---- the in-process processor thread ------------------------------------------------------------

    def _enqueue(self, instance_id: int) -> None:
        self._queue.put(instance_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what was received, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self.claims.stop()
        self.group_leases.stop()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self.process(item)
            except Exception:  # noqa: BLE001 - journaled as accepted: the next start takes it again
                log.exception("instance %s could not be processed; it stays in the spool for the next start", item)

    def wait_idle(self) -> None:
        """Until everything received so far by this process's thread is processed."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()

