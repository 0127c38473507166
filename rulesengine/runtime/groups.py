"""Group rules at run time: instances held in their series' or study's group, then fired together.

After the instance rules (which run first, unchanged), an instance of a rule set version with
group rules joins one group per group rule (the journal's `groups`, keyed by rule, study and
series); an instance the instance rules dropped, rejected or quarantined joins none. While its
group is open, the instance's spool file is kept (the journal counts it in use).

A group fires once: when its rule's `complete when` holds (checked after each arrival, by the
process that processed it, over the members' headers as the journal kept them when they joined:
`member_header`, the elements the rule set reads, so that no member's file is read again at
each arrival, nor by a late refire; a process decodes each member's header once), or when its timer runs out, `complete after` (else the
configuration's `group_quiet_time`) after its last arrival. The timer lives in the journal
(`due_at`): every worker process looks for due groups at each round (`fire_due`), claims
them with a lease (one process of one node fires a group; one that dies loses it when the
lease expires; renewed while it fires, however long that takes), evaluates the rule over the members in group order, turns each decision
into deliveries as an instance's decision is turned (Pipeline.write_copies), and queues them
together as it marks the group fired. A restart loses nothing: what is open is in the journal.
The rule's `notify` actions are queued once per firing (lang.groups.group_notifications), after
the journal marked it fired, with the group's values (level, UIDs, instance count).

An instance that arrives after its group fired is late, handled by the rule's `late`
policy: refire (its actions for that instance alone, the aggregates over the whole group,
its `notify` once for it),
quarantine (the reason names the group), or drop (journaled and logged). Never silent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable

from pydicom.dataset import Dataset, FileMetaDataset

from ..copies import CopyError
from ..document import Document, DocumentReadError
from ..intake import read_instance, short_error
from ..lang.groups import group_notifications
from ..lang.ruleset import Decision, RuleSet
from .journal import ClaimLost, Group, GroupChanged, Instance, NewDelivery
from .journal.errors import unreachable

log = logging.getLogger("rulesengine.router")

HELD = "held"  # the outcome of an instance no instance rule routed, kept for its groups (Pipeline._settle_grouped)
FIRE_BATCH = 4  # due groups claimed at once: few, so that other processes share the work
FIRE_TRIES = 3  # a group that gained a member while it fired is evaluated again, at most this often
HEADERS_KEPT = 20_000  # members' headers a process keeps decoded (for `complete when`), the least recent dropped
LARGEST_HEADER = 256 * 1024  # a member header longer than this is not kept: its file is read instead
RECEIVED_KEPT = 2_000  # members' headers as received a process keeps for their group's firing
SPECIFIC_CHARACTER_SET = 0x00080005


@dataclass(frozen=True)
class Joined:
    """What joining its groups made of an instance."""

    held: tuple[str, ...]  # the open groups it joined (named): its file is kept until they fired
    deliveries: tuple[NewDelivery, ...] = ()  # late refires: queued with the instance's own
    quarantine: tuple[str, ...] = ()  # late quarantines: the reasons
    dropped: tuple[str, ...] = ()  # late drops: the reasons (logged, journaled as its outcome)
    completing: tuple[int, ...] = ()  # open groups to check `complete when` on, once it is settled
    # late refires' `notify`: (notifications, (level, study, series, 1)), queued once it is settled
    notifications: tuple = ()


def group_name(group: Group) -> str:
    """A group as log lines and reasons name it."""
    where = f"series {group.series_uid}" if group.series_uid else f"study {group.study_uid}"
    return f"group {group.id} of rule {group.rule!r} ({where})"


def _as_received(decision: Decision, document: Document) -> Decision:
    """A group rule's actions run on a copy of each instance (its aggregates read the instances
    as received): a destination whose copy nothing edited receives the received file itself,
    as it would from an instance rule."""
    edited = {edit.destination for edit in decision.edits}
    if None in edited:
        return decision
    return replace(decision, destinations={name: copy if name in edited else document
                                           for name, copy in decision.destinations.items()})


def kept_header(document: Document, ruleset: RuleSet) -> Document | None:
    """What the group rules read of an instance, as the journal keeps it with its groups: the
    top-level elements the rule set reads (`RuleSet.tags_read`, which holds the group's key and
    order) and the file meta, with its arrival, shared with `document` (a copy as received,
    which nothing edits). None without group rules, or when the rules read everything: its
    file is read instead."""
    tags = getattr(ruleset, "tags_read", None)
    if tags is None or not getattr(ruleset, "group_rules", ()):
        return None
    kept = Dataset()
    source = document.dataset
    for tag in sorted({*tags, SPECIFIC_CHARACTER_SET}):
        if tag in source:
            kept[tag] = source[tag]
    return Document(kept, FileMetaDataset(document.file_meta), arrival=document.arrival)


def member_header(kept: Document) -> str | None:
    """A kept header (kept_header) as the journal holds it, JSON; None when it cannot be
    written so, or would be large: the member's file is read instead."""
    try:
        text = json.dumps({"dataset": kept.dataset.to_json_dict(), "file_meta": kept.file_meta.to_json_dict()},
                          separators=(",", ":"))
    except Exception:  # noqa: BLE001 - a value JSON cannot hold: the file is read instead
        log.debug("a member header cannot be kept", exc_info=True)
        return None
    return text if len(text) <= LARGEST_HEADER else None


def document_of_header(text: str, instance: Instance) -> Document:
    """A member as its rules read it, from the header the journal kept (member_header)."""
    data = json.loads(text)
    dataset = Dataset.from_json(data["dataset"])
    file_meta = FileMetaDataset(Dataset.from_json(data["file_meta"]))
    return Document(dataset, file_meta, arrival=_arrival(instance))


def replace_arrival(kept: Document, instance: Instance) -> Document:
    """A kept header with its instance's arrival as the journal holds it (as other processes read it)."""
    kept.arrival = _arrival(instance)
    return kept


def _arrival(instance: Instance):
    received = instance.arrival
    if received.received_at is None:
        received = replace(received, received_at=instance.received_at)
    return received


class GroupRunner:
    """The group rules of one process's pipeline: joining, firing, late instances."""

    def __init__(self, pipeline: Any, clock: Callable[[], float] | None = None):
        """`pipeline`: the Pipeline whose instances these are (its journal, storage, rule set
        versions, write_copies, describe and notify)."""
        self.pipeline = pipeline
        self.journal = pipeline.journal
        self.storage = pipeline.storage
        self.clock = clock or pipeline.clock
        # The groups this process fires: their leases renewed every third of a lease, however
        # long a firing takes (another process would take it over, and fire_group refuse it).
        self.leases = pipeline.group_leases
        # Members' headers decoded for `complete when` (instance id -> Document), most recent last.
        self._headers: OrderedDict[int, Document] = OrderedDict()
        # Members' headers as received, from their processing in this process (instance id ->
        # Document, most recent last): their group's firing here reads no file for them.
        self._received: OrderedDict[int, Document] = OrderedDict()

    @property
    def default_quiet_seconds(self) -> float:
        return float(getattr(self.pipeline.versions.config, "group_quiet_time", 300.0))

    # ---- joining ------------------------------------------------------------------------------

    @staticmethod
    def joins(ruleset: RuleSet, decision: Decision) -> bool:
        """Does an instance so decided join its groups? Only when the rule set has group rules,
        and no instance rule dropped, rejected or quarantined it (the no-destination policy is
        not a rule's decision: the group rules may route it)."""
        if not getattr(ruleset, "group_rules", ()):
            return False
        return decision.outcome == "route" or decision.unrouted

    def join(self, instance: Instance, document: Document, ruleset: RuleSet,
             received: Document | None = None) -> Joined | None:
        """The instance joins one group per group rule of its rule set version (None: it has none
        of their UIDs); a late one is handled by the rule's `late` policy. `received`: a copy
        of its header as received (the instance rules edit `document`), kept in this process
        for its group's firing, which then need not read its file again."""
        held, deliveries, quarantine, dropped, completing, notifications = [], [], [], [], [], []
        joined_any = False
        header: str | None = None
        kept: Document | None = None
        document = received if received is not None else document.copy()
        for rule in ruleset.group_rules:
            key = rule.key(document)
            if key is None:
                continue
            if not joined_any:
                kept = kept_header(document, ruleset)
                header = member_header(kept) if kept is not None else None
            joined_any = True
            quiet = rule.quiet_seconds if rule.quiet_seconds is not None else self.default_quiet_seconds
            joined = self.journal.join_group(rule.name, ruleset.version, rule.level, key[0], key[1], instance.id,
                                             quiet, now=self.clock(), header=header)
            group = joined.group
            if kept is not None and instance.id not in self._headers:
                self._remember(instance.id, replace_arrival(kept, instance))
            if not joined.late:
                if group.state == "open":
                    if received is not None and instance.path:
                        self._keep_received(instance.id, received)
                    held.append(group_name(group))
                    if rule.has_completion:
                        completing.append(group.id)
                continue
            reason = f"arrived after {group_name(group)} fired"
            if rule.late == "drop":
                log.warning("instance %s %s: dropped (late drop)", instance.id, reason)
                dropped.append(f"{reason} (late drop)")
            elif rule.late == "quarantine":
                quarantine.append(f"{reason} (late quarantine)")
            else:
                items, notes = self._refire(instance, document, rule, group, ruleset)
                deliveries.extend(items)
                if notes:
                    notifications.append((tuple(notes), (group.level, group.study_uid, group.series_uid or None, 1)))
        if not joined_any:
            return None
        return Joined(tuple(held), tuple(deliveries), tuple(quarantine), tuple(dropped), tuple(completing),
                      tuple(notifications))

    def _refire(self, instance: Instance, document: Document, rule, group: Group,
                ruleset: RuleSet) -> tuple[list[NewDelivery], list]:
        """A late instance, `late refire`: the rule's actions for it alone, its aggregates over
        the whole group (its members as the journal kept their headers, and this one)."""
        everyone = self._member_documents(group.id, leave_out=instance.id) + [document]
        decision = rule.evaluate_late(everyone, document)
        log.info("late for %s, refired: %s", group_name(group), self.pipeline.describe(document, decision, ruleset))
        items = self._turn(instance, document, decision, group)
        return items, list(decision.notifications)

    # ---- firing -------------------------------------------------------------------------------

    def complete(self, group_ids) -> int:
        """Open groups whose `complete when` may hold now (an instance joined): fired when it
        does. Returns how many fired."""
        fired = 0
        for group_id in group_ids:
            group = self.journal.group(group_id)
            if group is None or group.state != "open":
                continue
            rule, ruleset = self._rule_of(group)
            if rule is None or not rule.has_completion:
                continue
            if not rule.is_complete(self._member_documents(group_id)):
                continue
            claimed = self.journal.claim_group(group_id, now=self.clock())
            if claimed is not None and self.fire(claimed, complete=True):
                fired += 1
        return fired

    def fire_due(self) -> int:
        """One round of the timer: every due group no other process fires is claimed and fired.
        Returns how many fired."""
        fired = 0
        while True:
            batch = self.journal.claim_due_groups(FIRE_BATCH, now=self.clock())
            if not batch:
                return fired
            left = [group.id for group in batch]
            self.leases.hold(left)  # the last of the batch waits while the first fire
            try:
                for group in batch:
                    left.remove(group.id)
                    fired += self.fire(group)
            finally:
                self.leases.drop(left)
                if left:  # an error (the database away) before these: free for any process
                    self.journal.release_groups(left)

    def fire(self, group: Group, complete: bool = False) -> bool:
        """A group this process claimed: evaluated over its members in group order, its
        deliveries queued together, marked fired. False when it could not be (tried again at a
        later round), or another process took it over."""
        self.leases.hold([group.id])
        try:
            return self._fire(group, complete)
        finally:
            self.leases.drop([group.id])

    def _fire(self, group: Group, complete: bool) -> bool:
        for _ in range(FIRE_TRIES):
            try:
                destinations = self._fire_once(group, complete)
            except GroupChanged:
                continue  # an instance joined while it was evaluated: evaluated again, with it
            except ClaimLost as exc:
                log.warning("%s: fired elsewhere; this process leaves it (%s)", group_name(group), exc)
                return False
            except Exception as exc:  # noqa: BLE001 - tried again at a later round, by any process
                if unreachable(exc):
                    raise
                log.exception("%s could not be fired; tried again at the next round", group_name(group))
                self.journal.release_groups([group.id])
                return False
            self.pipeline.notify(destinations)
            return True
        self.journal.release_groups([group.id])
        return False

    def _fire_once(self, group: Group, complete: bool) -> set[str]:
        rule, ruleset = self._rule_of(group)
        members = self.journal.group_members(group.id)
        documents = self._read(members)
        deliveries: list[tuple[int, NewDelivery]] = []
        how = "complete" if complete else "quiet"
        if rule is None:
            log.error("%s: its rule set version %s has no such group rule now; fired with no delivery",
                      group_name(group), group.ruleset_version)
        else:
            by_document = {id(document): instance for instance, document in documents}
            ordered = rule.order([document for _, document in documents])
            decisions = rule.evaluate([document for _, document in documents])
            log.info("%s fired (%s): %d instance(s)", group_name(group), how, len(documents))
            try:
                outcomes = {}
                for document, decision in zip(ordered, decisions):
                    instance = by_document[id(document)]
                    if instance.outcome.outcome == HELD and decision.unrouted and not self._held_elsewhere(
                            instance, group):
                        decision = self._no_destination(decision, group)
                    if log.isEnabledFor(logging.INFO):  # a line per instance: not made when not logged
                        log.info("%s: %s", group_name(group), self.pipeline.describe(document, decision, ruleset))
                    items = self._turn(instance, document, decision, group)
                    deliveries.extend((instance.id, item) for item in items)
                    if instance.outcome.outcome == HELD and not decision.unrouted:
                        outcomes[instance.id] = self.pipeline.outcome_of(decision, ruleset)
                self.journal.fire_group(group.id, deliveries, members=[member.id for member in members],
                                        outcomes=outcomes, now=self.clock())
            except BaseException:
                self._remove_copies(deliveries, members)
                raise
            notifications = group_notifications(decisions)
            if notifications and ordered:
                first = by_document[id(ordered[0])]
                self.pipeline.events.rule_notifications(
                    notifications, first.arrival, group=(group.level, group.study_uid, group.series_uid or None,
                                                         len(documents)))
        if rule is None:
            self.journal.fire_group(group.id, [], members=[member.id for member in members], now=self.clock())
        self._release_files(members)
        for member in members:  # kept for `complete when` and the firing: not needed once it fired
            self._headers.pop(member.id, None)
            self._received.pop(member.id, None)
        return {item.destination for _, item in deliveries}

    def _held_elsewhere(self, instance: Instance, group: Group) -> bool:
        """Is the instance in another open group, which may still route it?"""
        return any(other.id != group.id and other.state == "open" for other in self.journal.groups_of(instance.id))

    def _no_destination(self, decision: Decision, group: Group) -> Decision:
        """An instance held for its groups that no rule routed, its last group fired: the
        configuration's no_destination policy, as for an instance no instance rule routes (a
        reject, which the sender can no longer be told of, keeps it aside)."""
        policy = getattr(self.pipeline.versions.config, "no_destination", "quarantine")
        reason = f"no rule routed this document (nor {group_name(group)})"
        return replace(decision, outcome="drop" if policy == "drop" else "quarantine", reason=reason, unrouted=False)

    def _turn(self, instance: Instance, document: Document, decision: Decision, group: Group) -> list[NewDelivery]:
        """A group rule's decision for one instance, as an instance's decision is turned: its
        destinations' copies written (Pipeline.write_copies), a quarantine kept aside (a copy:
        the received file may serve its other groups and deliveries), a drop logged."""
        if decision.error:
            log.warning("%s, instance %s: %s", group_name(group), instance.id, decision.error)
        if decision.outcome == "route":
            decision = _as_received(decision, document)
            try:
                return self.pipeline.write_copies(instance.id, instance.path, document, decision,
                                                  prefix=f"g{group.id}-")
            except (CopyError, OSError) as exc:
                reason = str(exc) if isinstance(exc, CopyError) else f"its copies cannot be written: {short_error(exc)}"
                self.quarantine_copy(instance, f"{group_name(group)}: {reason}")
                return []
        if decision.outcome in ("quarantine", "reject"):
            self.quarantine_copy(instance, f"{group_name(group)}: {decision.reason or decision.outcome}")
        return []

    def quarantine_copy(self, instance: Instance, reason: str) -> None:
        """A copy of the instance kept aside with `reason` (its received file stays where it serves)."""
        temp = self.storage.temp_path()
        try:
            shutil.copyfile(instance.path, temp)
            self.storage.quarantine(temp, reason, {**instance.arrival.to_quarantine(),
                                                   "rules_version": instance.outcome.ruleset_version})
        except OSError as exc:
            self.storage.remove(temp)
            log.error("instance %s: cannot be quarantined (%s): %s", instance.id, reason, short_error(exc))
            return
        log.warning("instance %s quarantined: %s", instance.id, reason)

    # ---- helpers ------------------------------------------------------------------------------

    def _rule_of(self, group: Group):
        """The group's rule, from the rule set version that opened it (None: it has none now)."""
        ruleset = self.pipeline.versions.get(group.ruleset_version)
        rule = next((rule for rule in getattr(ruleset, "group_rules", ()) if rule.name == group.rule), None)
        return rule, ruleset

    def _member_documents(self, group_id: int, leave_out: int | None = None) -> list[Document]:
        """A group's members, in the order they joined, as its rules read them: from the headers
        the journal kept (decoded once by this process), else (none kept) from their files."""
        ids = [instance_id for instance_id in self.journal.group_member_ids(group_id) if instance_id != leave_out]
        missing = [instance_id for instance_id in ids if instance_id not in self._headers]
        headers = self.journal.group_member_headers(group_id, missing) if missing else {}
        documents = []
        for instance_id in ids:
            document = self._headers.get(instance_id)
            if document is None:
                document = self._member_document(instance_id, headers.get(instance_id))
                if document is None:
                    continue
                self._remember(instance_id, document)
            else:
                self._headers.move_to_end(instance_id)
            documents.append(document)
        return documents

    def _keep_received(self, instance_id: int, document: Document) -> None:
        self._received[instance_id] = document
        while len(self._received) > RECEIVED_KEPT:
            self._received.popitem(last=False)

    def _remember(self, instance_id: int, document: Document) -> None:
        self._headers[instance_id] = document
        while len(self._headers) > HEADERS_KEPT:
            self._headers.popitem(last=False)

    def _member_document(self, instance_id: int, header: str | None) -> Document | None:
        instance = self.journal.instance(instance_id)
        if instance is None:  # forgotten by the journal (purged)
            return None
        if header is not None:
            try:
                return document_of_header(header, instance)
            except Exception:  # noqa: BLE001 - a header that cannot be read back: its file is read instead
                log.warning("instance %s: its header kept for its groups cannot be read; its file is read",
                            instance_id)
        read = self._read([instance])
        return read[0][1] if read else None

    def _read(self, members: list[Instance]) -> list[tuple[Instance, Document]]:
        """The members' headers from their spool files; one that cannot be read is left out (said once)."""
        documents = []
        for member in members:
            if not member.path:
                continue
            kept = self._received.get(member.id)
            if kept is not None and kept.filename == member.path:
                documents.append((member, kept))
                continue
            try:
                documents.append((member, read_instance(member.path, _arrival(member), member.checked)))
            except DocumentReadError as exc:
                log.warning("instance %s of a group cannot be read (%s); left out of it", member.id,
                            str(exc).replace(member.path, "its file"))
        return documents

    def _remove_copies(self, deliveries: list[tuple[int, NewDelivery]], members: list[Instance]) -> None:
        received = {member.path for member in members}
        for _, item in deliveries:
            if item.path not in received:
                self.storage.remove(item.path)

    def _release_files(self, members: list[Instance]) -> None:
        """After a group fired: the files of its members nothing needs any more (no delivery,
        no other open group) leave the spool."""
        kept_aside = os.path.abspath(self.storage.quarantine_dir)
        for member in members:
            path = member.path
            if not path or os.path.commonpath([kept_aside, os.path.abspath(path)]) == kept_aside:
                continue  # quarantined since: the quarantine's, not the spool's
            if os.path.exists(path) and not self.journal.path_in_use(path):
                self.storage.remove(path)
