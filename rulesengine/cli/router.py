"""The router's commands: run, check-config, schema, echo, send, queue, quarantine.

The modules that load pynetdicom (the service, destinations, negotiation and the
configuration check) are imported by the commands that use them, so that the language
commands start without it."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time

from ..config import ConfigError, load_config, schema_text
from ..document import Document, DocumentReadError
from ..runtime.journal import DEAD, DELIVERED, DELIVERY_STATES, QUEUED, RETRYING, SENDING, Delivery
from ..runtime import queue_operations
from ..runtime.logs import setup_logging
from ..runtime.queue_operations import PurgeRefused
from ..runtime.router_status import heartbeat_of, is_running
from ..runtime.storage import JournalUnavailable, Storage
from .common import EXIT_FINDINGS, EXIT_OK, UsageError, require_journal, input_files, print_diagnostics


# ---- run ----------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from ..runtime.negotiation import AssociationFileError
    from ..runtime.service import Router
    config = load_config(args.config)
    setup_logging(config.log_level, args.verbose, config.log_file)
    log = logging.getLogger("rulesengine.router")
    try:
        router = Router(config, verbose=args.verbose)
    except JournalUnavailable as exc:  # the journal's database (its message names the key)
        log.error("cannot start: %s", exc)
        return EXIT_FINDINGS
    except (OSError, sqlite3.Error) as exc:  # the storage folder or its journal
        log.error("cannot start: storage %s: %s", config.storage, getattr(exc, "strerror", None) or exc)
        return EXIT_FINDINGS
    stopping = threading.Event()

    def on_signal(number, _frame):
        log.info("%s received: stopping after the work in flight", signal.Signals(number).name)
        stopping.set()

    def on_hangup(_number, _frame):
        log.info("SIGHUP received: reading the configuration and the rules again")
        router.reload_now()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)  # one during start-up is carried out once reloading runs
    try:
        router.start()
    except AssociationFileError as exc:
        router.stop()
        raise ConfigError(f"{config.path}: {exc}") from None
    except OSError as exc:
        log.error("cannot start: %s", exc)
        router.stop()
        return EXIT_FINDINGS
    log.info("router running (storage %s); stop with Ctrl-C or SIGTERM", config.storage)
    while not stopping.wait(1.0):
        pass
    router.stop()
    return EXIT_OK


# ---- check-config and schema -----------------------------------------------------------------


def cmd_check_config(args) -> int:
    from ..runtime.config_check import config_findings
    findings = config_findings(args.config)
    print_diagnostics(findings, args.format)
    errors = sum(d.is_error for d in findings)
    if args.format == "text":
        print(f"{errors} error{'s' * (errors != 1)}, {len(findings) - errors} warning"
              f"{'s' * (len(findings) - errors != 1)}", file=sys.stderr)
    return EXIT_FINDINGS if errors else EXIT_OK


def cmd_schema(args) -> int:
    sys.stdout.write(schema_text())
    return EXIT_OK


# ---- echo and send ------------------------------------------------------------------------------


def _destination(config, name: str):
    destination = config.destinations.get(name)
    if destination is None:
        known = ", ".join(sorted(config.destinations)) or "none"
        raise UsageError(f"no destination {name!r} in {config.path} (destinations: {known})")
    return destination


def cmd_echo(args) -> int:
    from ..runtime.destinations import LinkError, sender_for
    config = load_config(args.config, secrets=False)
    destination = _destination(config, args.destination)
    if destination.type == "folder":
        ok, state = _folder_state(destination.path)
        print(f"{destination.name}: folder {destination.path} {state}")
        return EXIT_OK if ok else EXIT_FINDINGS
    if destination.type == "worklist":
        from ..runtime.worklist import folder_state
        ok, state = folder_state(destination.path)
        print(f"{destination.name}: worklist folder {destination.path} {state}")
        return EXIT_OK if ok else EXIT_FINDINGS
    try:
        status = sender_for(destination).echo()
    except LinkError as exc:
        print(f"{destination.name}: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    print(f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port}): C-ECHO {status}")
    return EXIT_OK if status == "0x0000" else EXIT_FINDINGS


def _folder_state(path: str) -> tuple[bool, str]:
    """Whether a delivery could be written into a folder destination, in words. Found by
    writing: permissions say nothing of a read-only or pseudo file system, and root passes
    them all. A missing folder is made by the first delivery, so what counts then is
    whether a folder can be made in its nearest existing parent."""
    if os.path.isdir(path):
        problem = _write_fails(path)
        return (False, f"is not writable: writing a file there fails: {problem}") if problem else \
            (True, "is writable")
    if os.path.exists(path):
        return False, "is not a folder"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return False, f"does not exist and cannot be created: {parent} is not a folder"
    problem = _write_fails(parent, in_new_folder=True)
    if problem:
        return False, f"does not exist and cannot be created in {parent}: {problem}"
    return True, f"does not exist yet; the first delivery creates it in {parent}"


def _write_fails(folder: str, in_new_folder: bool = False) -> str | None:
    """Why a file cannot be written in `folder` (in a new folder made there), as the system
    says; None when it was written, flushed and removed."""
    made = None
    try:
        if in_new_folder:
            folder = made = tempfile.mkdtemp(prefix=".dicom-rules-echo-", dir=folder)
        with tempfile.NamedTemporaryFile(prefix=".dicom-rules-echo-", dir=folder) as probe:
            probe.write(b"dicom-rules echo\n")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return None


def _progress(done: int, total: int, failed: int) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total}"
                     + (f", {failed} failed" if failed else ""))
    sys.stderr.flush()


def cmd_send(args) -> int:
    from ..runtime.destinations import ItemError, LinkError, sender_for
    from ..runtime.pynetdicom_setup import configure_pynetdicom
    configure_pynetdicom()
    config = load_config(args.config, secrets=False)
    destination = _destination(config, args.destination)
    if destination.type == "worklist":
        raise UsageError(f"{destination.name} is a worklist destination: it answers worklist queries and takes "
                         "no instances; send to a dicom or folder destination")
    files = [found.path for found in input_files(args.files)]
    sender = sender_for(destination)
    sent = failed = 0
    started = time.time()
    try:
        for number, path in enumerate(files, 1):
            try:
                document = Document.read_header(path)
            except DocumentReadError as exc:
                failed += 1
                print(f"\n{exc}" if sys.stderr.isatty() else str(exc), file=sys.stderr)
                continue
            item = Delivery(number, 0, destination.name, path, document.get("DataSet.SOPClassUID"),
                            document.get("DataSet.SOPInstanceUID"), document.get("FileMeta.TransferSyntaxUID"),
                            SENDING, 0, 0, None)
            try:
                sender.open([item])
                sender.send(item)
                sent += 1
            except (LinkError, ItemError) as exc:
                failed += 1
                print(f"\n{path}: {exc}" if sys.stderr.isatty() else f"{path}: {exc}", file=sys.stderr)
                if isinstance(exc, LinkError):
                    sender.close()
            _progress(number, len(files), failed)
    finally:
        sender.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    seconds = time.time() - started
    print(f"{sent} sent, {failed} failed to {destination.name} in {seconds:.1f} s")
    return EXIT_FINDINGS if failed else EXIT_OK


# ---- queue ---------------------------------------------------------------------------------------


def cmd_queue(args) -> int:
    config = load_config(args.config, secrets=False)
    require_journal(config)
    storage = Storage.of(config)
    journal = storage.journal()
    if args.action == "retry":
        count = journal.retry_dead(args.destination, args.id or ())
        print(f"{count} dead deliver{'y' if count == 1 else 'ies'} queued again")
        return EXIT_OK
    if args.action == "purge":
        states = tuple(args.state or (DELIVERED,))
        if args.id:
            raise UsageError("--id chooses deliveries to retry; purge chooses by --state, --destination, --older-than")
        try:
            queue_operations.check_purge(states, args.destination, config.destinations, "with --destination")
        except PurgeRefused as exc:
            raise UsageError(f"{exc} ({config.path})") from None
        older = time.time() - args.older_than if args.older_than is not None else None
        result = queue_operations.purge(storage, journal, states, args.destination, older)
        print(f"purged {', '.join(states)} deliveries and {result['instances_forgotten']} finished instance(s) "
              f"({result['spool_files_removed']} spool file(s) removed)")
        return EXIT_OK
    counts = journal.counts()
    if args.destination:
        counts = {name: value for name, value in counts.items() if name == args.destination}
    if not counts:
        print("no deliveries")
        _print_groups(journal.pending_groups(args.limit), time.time())
        _print_routers(journal.statuses(), time.time())
        return EXIT_OK
    print(f"{'destination':<20}" + "".join(f"{state:>11}" for state in DELIVERY_STATES))
    for name in sorted(counts):
        print(f"{name:<20}" + "".join(f"{counts[name].get(state, 0):>11}" for state in DELIVERY_STATES))
    states = tuple(args.state or (QUEUED, SENDING, RETRYING, DEAD))
    rows = journal.deliveries(states, args.destination, args.limit)
    if rows:
        print()
        now = time.time()
        for row in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["updated_at"]))
            error_text = f"  {row['last_error']}" if row["last_error"] else ""
            print(f"#{row['id']:<6} {row['destination']:<14} {row['state']:<9} attempts {row['attempts']:<3} "
                  f"{when}  {row['sop_instance_uid'] or '?'}{_waiting(row, config, now)}{error_text}")
    _print_groups(journal.pending_groups(args.limit), time.time())
    _print_routers(journal.statuses(), time.time())
    return EXIT_OK


def _waiting(row, config, now: float) -> str:
    """What a listed delivery waits for besides its turn: `  urgent`, and the window (its route's, or
    its destination's) that is closed now, with when it opens."""
    words = "  urgent" if row["priority"] else ""
    destination = config.destinations.get(row["destination"])
    waits = queue_operations.waiting_for_window(config.windows, row["state"], row["delivery_window"],
                                                getattr(destination, "window", None), now)
    if waits is None:
        return words
    then = time.strftime(" until %Y-%m-%d %H:%M", time.localtime(waits.until)) if waits.until is not None else ""
    return f"{words}  waiting for window {waits.name}{then}"


def _print_groups(groups, now: float) -> None:
    """The groups of group rules still open (holding their instances), the next to fire first:
    each with its rule, its instances and when its quiet time runs out."""
    if not groups:
        return
    print()
    print(f"{len(groups)} pending group(s)")
    for group in groups:
        due = group.due_at - now
        when = f"fires in {due:.0f} s" if due > 0 else "due now"
        where = f"series {group.series_uid}" if group.series_uid else f"study {group.study_uid}"
        print(f"group #{group.id:<5} {group.rule!r} per {group.level}: {group.members} instance(s), {when}  {where}")


def _print_routers(statuses, now: float) -> None:
    """The routers (nodes) that wrote their status to this journal: running or not, the rule set
    version each runs, the age of its heartbeat; and a warning when running nodes differ in version."""
    if not statuses:
        return
    print()
    print(f"{'router':<20}{'state':<13}{'rules':<14}heartbeat")
    for row in statuses:
        state = "running" if is_running(row, now) else "not running"
        age = max(0.0, now - heartbeat_of(row))
        print(f"{row.node:<20}{state:<13}{str(row.status.get('ruleset_version') or '-'):<14}{age:.0f} s ago")
    versions = {row.node: row.status.get("ruleset_version") for row in statuses if is_running(row, now)}
    if len(set(versions.values())) > 1:
        print("warning: the running routers use different rule set versions: "
              + ", ".join(f"{node} {version}" for node, version in sorted(versions.items())))


# ---- quarantine ----------------------------------------------------------------------------------


def cmd_quarantine(args) -> int:
    config = load_config(args.config, secrets=False)
    require_journal(config)
    storage = Storage.of(config)
    held = storage.quarantined()
    if args.action == "list":
        if args.instances or args.all:
            raise UsageError("quarantine list takes no instances and no --all")
        if not held:
            print("no quarantined instances")
            return EXIT_OK
        for path, info in held:
            source = " ".join(str(info.get(key)) for key in ("source", "calling_aet") if info.get(key))
            print(f"{os.path.relpath(path, storage.quarantine_dir)}  {info.get('quarantined_at', '?')}  "
                  f"{source or '-'}  {info.get('reason', '')}")
        return EXIT_OK
    if bool(args.instances) == args.all:
        raise UsageError("quarantine release needs instances (SOP Instance UIDs or paths from `list`) or --all")
    chosen = held if args.all else _chosen(held, args.instances, storage.quarantine_dir)
    journal = storage.journal()
    try:
        for path, info in chosen:
            instance_id = storage.release(path, info, journal)
            print(f"{os.path.relpath(path, storage.quarantine_dir)}: released as instance {instance_id}")
    finally:
        journal.close()
    print(f"{len(chosen)} instance(s) released; the rules run on them again "
          "(a running router takes them within seconds, a stopped one at its next start)")
    return EXIT_OK


def _chosen(held: list[tuple[str, dict]], wanted: list[str], root: str) -> list[tuple[str, dict]]:
    chosen, missing = [], []
    for name in wanted:
        matches = [(path, info) for path, info in held
                   if name in (os.path.relpath(path, root), info.get("sop_instance_uid"))]
        if not matches:
            missing.append(name)
        chosen += [m for m in matches if m not in chosen]
    if missing:
        raise UsageError(f"not in the quarantine: {', '.join(missing)} (see `dicom-rules quarantine CONFIG`)")
    return chosen
