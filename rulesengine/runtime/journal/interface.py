"""The journal's interface: what the router asks of it, whatever stores it.

Every instance received, every decision, every delivery attempt, every request answered. The router's
guarantees rest on these promises, which every backend keeps:

- what a method changes is committed when it returns, and visible at once to every
  other connection (other threads, the worker process, `dicom-rules queue`);
- `claim` never hands one delivery, nor `claim_instances` one instance, to two callers,
  whichever process they run in, until the claim's lease expires; a claim is held by one
  process of one node (`node`, `process`), and only that process renews, releases or
  settles it;
- numbers (instance and delivery ids) are never reused, also after a purge: log lines
  name them.

A backend is one module that implements this class (sqlite.py, postgres.py; both build on sql.py); tests/runtime/test_journal.py
runs the same tests on each.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol

from ...arrival import Arrival
from .exclusive import ExclusiveLock
from .outbox import Notification, NotificationState
from .records import (Attempt, Counter, Delivery, DeliveryState, Group, GroupJoin, Instance, InstanceState,
                      InstanceTrace, Lease, ListedDelivery, NewDelivery, NewReplay, NewRequest, Outcome, Replay,
                      ReplayedInstance, Request, RequestResult, RetainedFile, RouterStatus)


class Journal(Protocol):
    """One per process; safe to use from several threads at once."""

    node: str  # the router node whose leases this journal's claims take
    process: int  # which process of the node holds them (this process's id, unless given when opened)
    lease_seconds: float  # how long a claim's lease runs before it must be renewed

    def close(self) -> None:
        """Close the calling thread's connection (the next call opens another)."""

    def size_bytes(self) -> int:
        """What the journal takes where it is kept: its files, or its database on the server."""

    def try_exclusive(self, name: str) -> ExclusiveLock | None:
        """The lock called `name`, if no other process of any node (nor another thread of this
        one) holds it; None otherwise. Released when the holder dies (exclusive.py)."""

    # ---- instances ------------------------------------------------------------------------------

    def record(self, arrival: Arrival, path: str | None, outcome: Outcome | None, state: InstanceState,
               ruleset_version: str | None = None, checked: str | None = None) -> int:
        """An instance, how it arrived, and its decision when the rules ran already (else the rule
        set version it will be processed with); returns its number. After this the sender may
        be answered. `checked`: its file's fingerprint as the intake checked it (Instance.checked)."""

    def add_deliveries(self, instance_id: int, deliveries: Iterable[NewDelivery], outcome: Outcome | None = None,
                       state: DeliveryState = DeliveryState.QUEUED) -> list[int]:
        """Queue an accepted instance's deliveries and mark it processed, at once. Raises
        ClaimLost, changing nothing, when another process claimed it since this one did."""

    def settle(self, instance_id: int, outcome: Outcome, path: str | None) -> None:
        """An accepted instance that needs no delivery: dropped, or kept aside at `path`. Raises
        ClaimLost, changing nothing, when another process claimed it since this one did."""

    def accepted_instances(self) -> list[Instance]:
        """Instances answered but not yet processed, oldest first: what a restart must finish."""

    def claim_instances(self, limit: int, now: float | None = None, after: int = 0) -> list[Instance]:
        """The next accepted instances numbered above `after`, oldest first, that no process
        holds or whose claim expired: leased to this process for `lease_seconds`."""

    def claim_instance(self, instance_id: int, now: float | None = None) -> Instance | None:
        """This accepted instance, claimed as claim_instances does; None when it is processed
        already or another process holds it."""

    def renew_instance_leases(self, instance_ids: Iterable[int], now: float | None = None) -> int:
        """This process still processes these: their claims run `lease_seconds` from `now`
        again. Returns how many it still held."""

    def release_instances(self, instance_ids: Iterable[int]) -> int:
        """Claimed and not processed: free for any process again (only this process's claims)."""

    def instance_lease(self, instance_id: int) -> Lease | None:
        """Who holds an accepted instance's claim and until when; None when no process does."""

    def instance(self, instance_id: int) -> Instance | None: ...

    def purge_instances(self, older_than: float | None = None) -> int:
        """Forget instances that are finished and have no delivery left; returns how many."""

    # ---- rule set versions ----------------------------------------------------------------------

    def record_ruleset(self, version: str, sources: dict[str, bytes]) -> None:
        """A rule set version about to be put in place, with what each of its files held
        (in the order they were read: the main rule file first)."""

    def ruleset_sources(self, version: str) -> dict[str, bytes]:
        """The files of a recorded rule set version, the main rule file first; empty if unknown."""

    def latest_ruleset(self) -> str | None:
        """The rule set version put in place last."""

    # ---- deliveries -----------------------------------------------------------------------------

    def claim(self, destination: str, limit: int, now: float | None = None, ordered: bool = False,
              closed_windows: Iterable[str] = ()) -> list[Delivery]:
        """The next due deliveries of a destination, in order, marked sending and leased to this
        process for `lease_seconds`; none while the destination is paused. `ordered`: in the
        order of their instances, never past an instance not yet processed. Urgent ones
        (priority URGENT) first, in that order among themselves; none that waits for one of
        `closed_windows`."""

    def renew_leases(self, deliveries: Iterable[Delivery], now: float | None = None) -> int:
        """This process still sends these: their leases run `lease_seconds` from `now` again.
        Returns how many it still held."""

    def requeue_expired(self, now: float | None = None) -> int:
        """Deliveries whose lease expired, whichever node held them: back in the queue."""

    def lease(self, delivery_id: int) -> Lease | None:
        """Who holds a delivery (node and process) and until when; None when no process holds it."""

    def delivery(self, delivery_id: int) -> Delivery | None: ...

    def next_due(self, destination: str, closed_windows: Iterable[str] = ()) -> float | None:
        """When something of the destination's queue is due next; None when nothing waits
        (or only what waits for one of `closed_windows`)."""

    def delivered(self, delivery: Delivery, started: float, detail: str | None = None) -> None:
        """A successful attempt (`detail`: the status the destination answered)."""

    def failed(self, delivery: Delivery, started: float, error: str, retry_at: float | None,
               keep_file: bool = True) -> DeliveryState:
        """A failed attempt: retrying at `retry_at`, or dead when it is None (with `keep_file=False`,
        dead for good: the file is gone and `retry_dead` leaves it alone). Returns the new state;
        for a delivery this node no longer holds (its lease expired and another node took it
        over), the attempt is recorded and the state is left as it is, and returned."""

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Claimed but not attempted: back in the queue, untouched (only what this process holds)."""

    def requeue_interrupted(self) -> int:
        """On start: what any process of this node was sending when it stopped is sent again,
        with what no node holds and what expired leases held; another node's sends in flight
        are left to it; the instances (and groups) this node had claimed are free again. Returns how many
        deliveries were queued again."""

    def requeue_process(self, process: int, now: float | None = None) -> tuple[int, int]:
        """A process of this node ended unexpectedly: what it held (deliveries being sent,
        its sync deliveries, instances and groups claimed) is given back at once; nobody else's claims
        are touched. Returns (deliveries queued again, instances freed)."""

    def postpone(self, destination: str, until: float) -> None:
        """A destination is unreachable: nothing of it is claimed before `until` (a later pause
        is never brought forward)."""

    def postponed_until(self, destination: str, now: float | None = None) -> float:
        """When the destination's pause ends; 0 if it is not paused."""

    def resume(self, destination: str, now: float | None = None) -> int:
        """A changed destination starts afresh: its pause ends and what waits for a retry is due
        now. Returns how many deliveries were waiting."""

    def attempts(self, delivery_id: int) -> list[Attempt]: ...

    # ---- files ----------------------------------------------------------------------------------

    def path_in_use(self, path: str) -> bool:
        """Does an unfinished delivery, an unprocessed instance, or a retained one still need this file?"""

    def paths_in_use(self) -> set[str]:
        """Every file path_in_use names: what the start-up sweep keeps."""

    # ---- retention (retention.delivered; the cleanup, and replay, read it) -----------------------

    def retain(self, instance_id: int, until: float, path: str | None = None) -> None:
        """Keep the instance's spool file, as received, until `until` (a later time recorded
        stands); path_in_use names it meanwhile. `path`: where the file is now, when it moved."""

    def extend_retention(self, instance_id: int, until: float) -> bool:
        """A delivery of a retained instance ended: once none is left to send, its retention runs
        until `until` (never shortened). True when extended."""

    def retained_instances(self, received_from: float | None = None, received_to: float | None = None,
                           after: int = 0, limit: int = 1000) -> list[Instance]:
        """Retained instances numbered above `after`, oldest first, received in
        [received_from, received_to) when given; as received only (never one a replay queued)."""

    def expired_retentions(self, now: float, limit: int = 1000) -> list[RetainedFile]:
        """Retained instances whose retention ended before `now`, the longest ended first."""

    def retained_count(self) -> int:
        """How many instances are retained now."""

    def end_retention(self, instance_ids: Iterable[int]) -> int:
        """Their retention is over (the caller removed their files first); returns how many were retained."""

    # ---- replays (`dicom-rules replay`) -----------------------------------------------------------

    def keep_ruleset(self, version: str, sources: dict[str, bytes]) -> None:
        """The files of a rule set version instances are to be processed with (a replay's rule
        file), kept as record_ruleset keeps them, but not put in place: latest_ruleset never names it."""

    def record_replay(self, replay: NewReplay, instances: Iterable[ReplayedInstance], now: float | None = None) -> int:
        """A replay and its instances, in one transaction: each a new accepted instance with its
        original's arrival (its time too), its file's name for the replay, the replay's rule set
        version and the replay's number (instances.replay_id, replay_of); not counted as received.
        Returns the replay's number."""

    def replays(self, limit: int = 50, before_id: int | None = None) -> list[Replay]:
        """The latest replays, newest first, each with its instances waiting, those processed by
        outcome, and their deliveries by state."""

    def replayed_instances(self, replay_id: int, after: int = 0, limit: int = 1000) -> list[tuple[int, Instance]]:
        """A replay's instances numbered above `after`, oldest first, each with the number of the
        instance it replays."""

    # ---- groups (group rules: per series, per study) ----------------------------------------

    def join_group(self, rule: str, ruleset_version: str | None, level: str, study_uid: str, series_uid: str | None,
                   instance_id: int, quiet_seconds: float, now: float | None = None,
                   header: str | None = None) -> GroupJoin:
        """The instance joins its group of `rule` (one per study, or series): opened by its first
        instance (whose rule set version it keeps); an open group is due `quiet_seconds` after
        its last arrival; a fired one is left as it is and the instance is late (unless it was
        a member before). Its file is in use while the group is open. `header`: what the group's
        rules read of it (JSON), kept with the member so that they need not read its file again."""

    def group(self, group_id: int) -> Group | None: ...

    def groups_of(self, instance_id: int) -> list[Group]:
        """The groups an instance joined, oldest first."""

    def group_members(self, group_id: int) -> list[Instance]:
        """A group's instances, in the order they joined it."""

    def group_member_ids(self, group_id: int) -> list[int]:
        """The ids of a group's members, in the order they joined it."""

    def group_member_headers(self, group_id: int, instance_ids: Iterable[int]) -> dict[int, str | None]:
        """Instance id -> the header its group rules read, kept when it joined (None: none was)."""

    def due_groups(self, now: float | None = None, limit: int = 100) -> list[Group]:
        """Open groups due by `now` that no process is firing, the oldest due first."""

    def claim_due_groups(self, limit: int, now: float | None = None) -> list[Group]:
        """Due groups, leased to this process for `lease_seconds`: no other process, of any
        node, fires them until the lease expires."""

    def claim_group(self, group_id: int, now: float | None = None) -> Group | None:
        """This open group, leased to this process, due or not; None when it fired already or
        another process is firing it."""

    def renew_group_leases(self, group_ids: Iterable[int], now: float | None = None) -> int:
        """This process is still firing these: their leases run `lease_seconds` again."""

    def release_groups(self, group_ids: Iterable[int]) -> int:
        """Claimed and not fired: free for any process again (only this process's claims)."""

    def fire_group(self, group_id: int, deliveries: Iterable[tuple[int, NewDelivery]],
                   members: Iterable[int] | None = None, outcomes: Mapping[int, Outcome] | None = None,
                   now: float | None = None) -> list[int]:
        """Queue a claimed group's deliveries ((instance, delivery), group order) and mark it
        fired, at once; raises ClaimLost, changing nothing, when this process no longer holds it,
        and GroupChanged when it holds instances besides `members` (those it was evaluated over).
        `outcomes`: the final decisions of instances held for their groups (outcome `held`)."""

    def pending_groups(self, limit: int = 100) -> list[Group]:
        """Open groups, the next due first, with how many instances each holds."""

    # ---- for `dicom-rules queue` ------------------------------------------------------------------

    def counts(self) -> dict[str, dict[DeliveryState, int]]:
        """Deliveries by destination and state."""

    def deliveries(self, states: Iterable[DeliveryState] = tuple(DeliveryState), destination: str | None = None,
                   limit: int = 100) -> list[ListedDelivery]:
        """Deliveries in these states, newest first."""

    def retry_dead(self, destination: str | None = None, ids: Iterable[int] = ()) -> int:
        """Dead deliveries (whose file is kept) back in the queue, attempts counted from zero."""

    def purge(self, states: Iterable[DeliveryState], older_than: float | None = None,
              destination: str | None = None) -> list[str]:
        """Forget deliveries in these states (the caller decides which may go); returns the files
        they named, which may no longer be needed (ask `path_in_use`)."""

    # ---- requests (C-FIND, C-MOVE, C-GET, N-CREATE, N-SET) ----------------------------------------

    def record_request(self, request: NewRequest, now: float | None = None) -> int:
        """A request as it arrives; returns its number (never reused)."""

    def finish_request(self, request_id: int, result: RequestResult, now: float | None = None) -> None:
        """How the request ended: the final status answered, the destinations' answers, the counts."""

    def request(self, request_id: int) -> Request | None: ...

    def requests(self, messages: Iterable[str] = (), limit: int = 100, *, calling_aet: str | None = None,
                 received_from: float | None = None, received_to: float | None = None,
                 before_id: int | None = None) -> list[Request]:
        """The latest requests, newest first, matching every filter given: these messages, this
        calling AE, received_from <= received_at < received_to; the next page starts before the
        last id of this one (`before_id`)."""

    def purge_requests(self, older_than: float | None = None) -> int:
        """Forget finished requests (received before `older_than`, when given); returns how many."""

    # ---- for the operations console (a process of its own, reading this journal) --------------

    def search_instances(self, *, patient_id: str | None = None, accession_number: str | None = None,
                         study_instance_uid: str | None = None, series_instance_uid: str | None = None,
                         sop_instance_uid: str | None = None, calling_aet: str | None = None,
                         source_name: str | None = None, outcome: str | None = None,
                         received_from: float | None = None, received_to: float | None = None,
                         before_id: int | None = None, limit: int = 50) -> list[Instance]:
        """Instances matching every filter given (exact values; received_from <= received_at <
        received_to), newest first, at most `limit`, without their trace (`outcome.trace` is
        None). Paged by id: the next page is `before_id=` the last id of this one. A filter on
        a header fact or the SOP Instance UID is answered from an index, whatever the journal holds."""

    def trace(self, instance_id: int) -> InstanceTrace | None:
        """The instance with its trace (the outcome, reason, rule set version, rules fired and
        edits, as a JSON object), its deliveries and each one's attempts; None if unknown."""

    def counters(self) -> list[Counter]:
        """Every counter (name, label, value), changed in the transaction of the event it counts;
        never lowered, also by a purge."""

    def count_reload(self, ok: bool) -> None:
        """A reload of the rules or the configuration: put in place (ok) or refused (failed)."""

    def activity(self, start: float, bucket_seconds: float, buckets: int) -> list[tuple[float, int, int]]:
        """Instances received and deliveries delivered in each of `buckets` spans of
        `bucket_seconds` from `start`, oldest first: (span start, received, delivered). Read
        from indexes on the times: what it costs grows with the spans' traffic, never with
        the journal."""

    def write_status(self, node: str, status: dict, now: float | None = None) -> None:
        """What the router on `node` says of itself (heartbeat, rules in use, last reload,
        listeners): replaces what it said before."""

    def statuses(self) -> list[RouterStatus]:
        """What each router said of itself last (node, updated_at, status), the latest first."""
    # ---- the console --------------------------------------------------------------------

    def record_audit(self, user: str, action: str, target: str | None, result: str,
                     now: float | None = None) -> int:
        """One action of a console user, a login too; returns its number."""

    def audit_log(self, limit: int = 100) -> list[dict]:
        """The latest audit rows, newest first."""

    def deliveries_page(self, states: Iterable[DeliveryState], destination: str | None = None,
                        before_id: int | None = None, limit: int = 50) -> list[ListedDelivery]:
        """Deliveries in these states, newest first, numbered below `before_id` when given."""

    def pauses(self, now: float | None = None) -> dict[str, float]:
        """Destinations whose queue waits, with until when."""

    # ---- notifications (outbox.py) --------------------------------------------------------------

    def add_notification(self, notifier: str, event: str, context: dict, now: float | None = None) -> int:
        """A notification to send, with the values its templates read; returns its number."""

    def outage(self, destination: str, now: float | None = None) -> tuple[float, frozenset[int]]:
        """A failed attempt found `destination` unreachable: (since when, for the whole cluster,
        the subscriptions already told of this outage)."""

    def outage_told(self, destination: str, since: float, subscription: int) -> bool:
        """Mark the subscription told of the outage that began at `since`; False when another
        process did first."""

    def outage_known(self, destination: str) -> bool:
        """Whether the journal holds an outage of `destination`."""

    def outage_over(self, destination: str) -> None:
        """A delivery reached the destination: its outage, if any, is over."""

    def due_notifications(self, limit: int, now: float | None = None) -> list[Notification]:
        """What is due to be sent, oldest first (for the holder of the lock "notifications")."""

    def next_notification_due(self) -> float | None:
        """When the next waiting notification is due; None when none waits."""

    def notification_sent(self, notification_id: int, now: float | None = None) -> None: ...

    def notification_failed(self, notification_id: int, error: str, retry_at: float | None,
                            now: float | None = None) -> NotificationState:
        """A failed attempt: retried at `retry_at`, or dead (with `error`) when it is None."""

    def notification(self, notification_id: int) -> Notification | None: ...

    def notifications(self, states: Iterable[NotificationState] = tuple(NotificationState),
                      limit: int = 100) -> list[Notification]:
        """Notifications in these states, newest first."""

    def notification_counts(self) -> dict[NotificationState, int]: ...

    def purge_notifications(self, older_than: float | None = None) -> int:
        """Forget sent and dead notifications (last changed before `older_than`); returns how many."""
