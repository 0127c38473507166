"""Replay: retained instances (retention.delivered) run through the rules again.

A replay selects the instances received in a period whose file the journal retains, as they
were received (`Journal.retained_instances`: never an instance an earlier replay queued), and
queues each as a new accepted instance (`Journal.record_replay`): any worker of any node claims
it as it claims what arrives, now or when a router starts, and processes it with the rule set
version the replay recorded with it (the rules in place, or a rule file the replay named, whose
files the journal keeps: `Journal.keep_ruleset`). The arrival facts, time included, are the
original's: the rules see what they saw the first time.

Each replayed instance has a file of its own: a hard link to the retained file (a copy where
the file system refuses links) under a spool name that carries its arrival, as `Storage.accept`
names received files. Processing moves or removes that name alone; the cleanup, which removes
the retained file once its time is up, never touches it, since the journal names it as an
accepted instance's (path_in_use) until it is processed. The links are made durable before the
journal records the replay; should the journal fail, they are removed. A crash in between
leaves spool files no entry names: a replay that was never recorded, which did not happen. Their
names start with REPLAY_PREFIX, and the replay holds Storage.replaying while it links and
records, so the next start's sweep removes them (the retained originals stay: the replay can be
asked again), rather than route them again without a record of the replay.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

from ..config import Config
from ..lang.loader import load_program
from ..lang.ruleset import RuleSet
from .journal import Instance, Journal
from .journal.records import NewReplay, ReplayedInstance
from .rules import RuleSetVersions, RulesUnavailable, compile_rules
from .storage import REPLAY_PREFIX, Storage, fsync_dir, fsync_file

SELECTION_BATCH = 1000  # retained instances read from the journal at a time


def retained_between(journal: Journal, since: float | None, until: float | None) -> Iterator[Instance]:
    """The retained instances received in [since, until), oldest first, as received."""
    after = 0
    while True:
        batch = journal.retained_instances(since, until, after=after, limit=SELECTION_BATCH)
        yield from batch
        if len(batch) < SELECTION_BATCH:
            return
        after = batch[-1].id


def arrival_of(instance: Instance):
    """How the instance arrived, with its arrival time (the journal keeps it beside the arrival)."""
    arrival = instance.arrival
    return arrival if arrival.received_at is not None else replace(arrival, received_at=instance.received_at)


class NoRulesInPlace(RuntimeError):
    """The journal names no rule set put in place: no router ever ran with it."""


def rules_in_place(journal: Journal, config: Config) -> RuleSet:
    """The rules the router put in place last (the journal's latest version), compiled again
    from the journal's files of them with `config`. Raises NoRulesInPlace, RulesUnavailable."""
    version = journal.latest_ruleset()
    if version is None:
        raise NoRulesInPlace("the journal names no rules: has the router run with this configuration?")
    return RuleSetVersions(journal, config).get(version)


def rules_from_file(path: str, config: Config) -> RuleSet:
    """Another rule file, compiled with the configuration (its destinations, secrets,
    rules_folders, no_destination), as the router would compile it. Raises RulesError (with
    the findings), NoRulesError, OSError."""
    return compile_rules(config, load_program(os.fspath(path), folders=config.rules_folders))


@dataclass
class QueuedReplay:
    """What a replay queued: its number, the instances queued, and those whose retained
    file was gone (with why)."""

    replay_id: int | None
    queued: list[ReplayedInstance] = field(default_factory=list)
    missing: list[tuple[Instance, str]] = field(default_factory=list)


def queue_replay(storage: Storage, journal: Journal, instances: Iterable[Instance], requested_by: str,
                 ruleset_version: str, rules_file: str | None, since: float | None,
                 until: float | None) -> QueuedReplay:
    """Queue these retained instances for processing again with `ruleset_version` (whose files
    the journal must hold): each file linked into the spool, then the replay and its instances
    recorded in one transaction. Nothing is recorded when no instance has its file left."""
    result = QueuedReplay(None)
    with storage.replaying():
        return _queue(storage, journal, instances, result, NewReplay(requested_by, ruleset_version, rules_file, since,
                                                                     until, 0))


def _queue(storage: Storage, journal: Journal, instances: Iterable[Instance], result: QueuedReplay,
           replay: NewReplay) -> QueuedReplay:
    try:
        for instance in instances:
            try:
                path = _link_for_replay(storage, instance)
            except FileNotFoundError:
                result.missing.append((instance, f"its retained file is gone: {instance.path}"))
                continue
            except OSError as exc:
                result.missing.append((instance, f"its retained file cannot be read: {exc.strerror or exc}"))
                continue
            result.queued.append(ReplayedInstance(instance, path))
        if not result.queued:
            return result
        fsync_dir(storage.incoming)  # the links are durable before the journal names them
        result.replay_id = journal.record_replay(replace(replay, missing=len(result.missing)), result.queued)
    except BaseException:
        for item in result.queued:
            storage.remove(item.path)
        raise
    return result


def _link_for_replay(storage: Storage, instance: Instance) -> str:
    """A name of its own in the spool for a retained instance's file (see the module's
    docstring). Raises FileNotFoundError when the file is gone, OSError when it cannot be read."""
    if not instance.path:
        raise FileNotFoundError(errno.ENOENT, "no file", instance.path)
    target = os.path.join(storage.incoming, arrival_of(instance).to_filename(REPLAY_PREFIX + uuid.uuid4().hex))
    try:
        os.link(instance.path, target)
        return target
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    temp = storage.temp_path()  # no hard link here: a copy, made durable before it gets its name
    try:
        shutil.copyfile(instance.path, temp)
        fsync_file(temp)
        os.replace(temp, target)
    except BaseException:
        storage.remove(temp)
        raise
    return target


__all__ = ["NoRulesInPlace", "QueuedReplay", "RulesUnavailable", "arrival_of", "queue_replay", "retained_between",
           "rules_from_file", "rules_in_place"]
