"""The journal in SQLite: WAL mode, one file under the storage folder.

Several threads (and both router processes) use it at once, each through its own
connection (a thread that ends leaves it to the next). Commits use synchronous=NORMAL:
committed is durable against a crash of the router (SIGKILL included); a power cut may lose
the last commits. That never loses an instance: the received file is fsynced before its
entry is committed and its name carries its arrival, so a start journals any spool file
without an entry again; a lost "delivered" means a duplicate delivery, never a loss.
"""

from __future__ import annotations

import os
import sqlite3

from ...arrival import Arrival
from .exclusive import FileLock
from .sql import SQLJournal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused after a purge: log lines name these numbers
    received_at REAL NOT NULL,
    source_kind TEXT, source_name TEXT,
    calling_aet TEXT, called_aet TEXT, peer TEXT,
    sop_class_uid TEXT, sop_instance_uid TEXT,
    store_command TEXT,  -- the C-STORE request's command set (JSON)
    path TEXT,
    state TEXT NOT NULL,
    ruleset_version TEXT,
    outcome TEXT, reason TEXT,
    rules_fired TEXT,
    destinations TEXT,
    processed_at REAL,
    -- read from the header at intake, for searching (Arrival.HEADER_COLUMNS)
    patient_id TEXT, patient_name TEXT, accession_number TEXT,
    study_instance_uid TEXT, series_instance_uid TEXT, modality TEXT,
    -- the process claiming it to process it (sql.py: claim_instances); once settled, who processed it
    lease_owner TEXT, lease_process INTEGER, lease_expires REAL,
    trace TEXT,  -- the decision in detail (JSON, records.trace_text)
    checked TEXT  -- the spool file's fingerprint as the intake checked it (Document.fingerprint)
);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    destination TEXT NOT NULL,
    path TEXT,
    sop_class_uid TEXT, sop_instance_uid TEXT, transfer_syntax TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL,
    lease_owner TEXT,  -- the node sending it (sql.py: claim, renew_leases, requeue_expired)
    lease_process INTEGER,  -- which process of that node
    lease_expires REAL,
    priority INTEGER NOT NULL DEFAULT 0,  -- 1: urgent, claimed first (sql.py: claim)
    delivery_window TEXT  -- claimed only while this window of the configuration is open
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, state, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS deliveries_path ON deliveries(path);
CREATE INDEX IF NOT EXISTS deliveries_instance ON deliveries(instance_id);  -- an instance's trace
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(delivery_id);
-- A destination found unreachable: nothing of its queue is claimed before `until`, so that
-- nothing overtakes the delivery that failed, in any worker, also after a restart.
CREATE TABLE IF NOT EXISTS pauses (
    destination TEXT PRIMARY KEY,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rulesets (
    version TEXT PRIMARY KEY,
    loaded_at REAL NOT NULL,
    files TEXT
);
-- What each file of a rule set version held when it was compiled (the main rule file first):
-- an instance is processed with the version it was answered under, compiled again from here.
CREATE TABLE IF NOT EXISTS ruleset_files (
    version TEXT NOT NULL,
    position INTEGER NOT NULL,
    path TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (version, position)
);
-- Requests answered (C-FIND, C-MOVE, C-GET, N-CREATE, N-SET): who asked what, which destinations
-- answered and how, the counts, how long it took. The outcome columns are empty while it runs.
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    finished_at REAL,
    message TEXT NOT NULL,
    source_kind TEXT, source_name TEXT,
    calling_aet TEXT, called_aet TEXT, peer TEXT,
    sop_class_uid TEXT, sop_instance_uid TEXT,
    store_command TEXT,  -- empty: a request is not a C-STORE
    level TEXT,
    matching_keys TEXT,
    move_destination TEXT,
    outcome TEXT, status INTEGER, answers TEXT,
    matches INTEGER, completed INTEGER, failed INTEGER, warning INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS requests_received ON requests(received_at);
CREATE INDEX IF NOT EXISTS requests_calling_aet ON requests(calling_aet);
-- Counters for metrics, each changed in the transaction of the event it counts, and never by a
-- purge: they only grow (see SQLiteJournal.counters for the names and labels).
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (name, label)
) WITHOUT ROWID;
-- What each router says of itself (heartbeat, rules in use, last reload, listeners), as JSON.
CREATE TABLE IF NOT EXISTS router_status (
    node TEXT PRIMARY KEY,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL
);
-- Notifications waiting to be sent, sent, or dead after their retries (outbox.py).
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notifier TEXT NOT NULL,
    event TEXT NOT NULL,
    context TEXT NOT NULL,  -- the values its templates read (JSON)
    state TEXT NOT NULL,  -- queued, retrying, sent, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(state, next_attempt_at);
-- Destinations found unreachable, for the event destination-unreachable: since when, and which
-- subscriptions were told, shared by every process so that an outage is told once (outbox.py).
CREATE TABLE IF NOT EXISTS outages (
    destination TEXT PRIMARY KEY,
    since REAL NOT NULL,
    told TEXT NOT NULL DEFAULT ','  -- the subscriptions told, as ',0,2,'
);
-- What users of the console did (and every login, failed or not): who, when, what, on what, how it ended.
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    result TEXT NOT NULL
);
-- Replays (`dicom-rules replay`): retained instances queued for processing again, each as a new
-- instance (instances.replay_id, replay_of), processed with rules_version; who asked, when, for
-- which period of arrival.
CREATE TABLE IF NOT EXISTS replays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    requested_by TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    rules_file TEXT,  -- the rule file named (--rules); NULL: the rules in place
    received_from REAL, received_to REAL,
    instances INTEGER NOT NULL,
    missing INTEGER NOT NULL  -- retained instances whose file was gone
);
-- Group rules (per series, per study): a group per rule and study (and series), open while it
-- collects its instances, fired once (sql.py: join_group, claim_due_groups, fire_group).
-- series_uid is '' for a study-level group. A fired group stays: a late instance finds it.
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    ruleset_version TEXT,  -- the version it is evaluated with: its first instance's
    level TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,  -- open | fired
    first_arrival REAL NOT NULL,
    last_arrival REAL NOT NULL,
    due_at REAL NOT NULL,  -- its timer: the quiet time after its last arrival
    lease_owner TEXT, lease_process INTEGER, lease_expires REAL,  -- the process firing it
    fired_at REAL,
    UNIQUE (rule, study_uid, series_uid)
);
CREATE INDEX IF NOT EXISTS groups_due ON groups(state, due_at);
-- A group's instances: their spool files are kept while it is open (paths_in_use).
CREATE TABLE IF NOT EXISTS group_members (
    group_id INTEGER NOT NULL REFERENCES groups(id),
    instance_id INTEGER NOT NULL,
    arrived_at REAL NOT NULL,
    member_header TEXT,  -- what the group rules read of it (JSON): `complete when` reads no file
    PRIMARY KEY (group_id, instance_id)
);
CREATE INDEX IF NOT EXISTS group_members_instance ON group_members(instance_id);
"""

# Indexes on columns a journal from before may lack: created once they are added.
_INDEXES = """
CREATE INDEX IF NOT EXISTS instances_received_at ON instances(received_at);
CREATE INDEX IF NOT EXISTS instances_patient_id ON instances(patient_id);
CREATE INDEX IF NOT EXISTS instances_accession_number ON instances(accession_number);
CREATE INDEX IF NOT EXISTS instances_study_instance_uid ON instances(study_instance_uid);
CREATE INDEX IF NOT EXISTS instances_series_instance_uid ON instances(series_instance_uid);
CREATE INDEX IF NOT EXISTS instances_sop_instance_uid ON instances(sop_instance_uid);
CREATE INDEX IF NOT EXISTS instances_calling_aet ON instances(calling_aet);
CREATE INDEX IF NOT EXISTS instances_source_name ON instances(source_name);
CREATE INDEX IF NOT EXISTS instances_outcome ON instances(outcome);
-- Deliveries by when they were delivered, for the console's activity (Journal.activity): only
-- those delivered, so a queued delivery costs no entry, and a delivery one entry, at its end.
CREATE INDEX IF NOT EXISTS deliveries_delivered_at ON deliveries(delivered_at) WHERE delivered_at IS NOT NULL;
-- Leases by expiry, for requeue_expired: only the deliveries being sent have an entry.
CREATE INDEX IF NOT EXISTS deliveries_lease ON deliveries(lease_expires) WHERE lease_expires IS NOT NULL;
-- Retained instances by the end of their retention (the cleanup) and by path (path_in_use): only those
-- retained have an entry.
CREATE INDEX IF NOT EXISTS instances_retained ON instances(retained_until) WHERE retained_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS instances_retained_path ON instances(path) WHERE retained_until IS NOT NULL;
-- A replay's instances (Journal.replays): only replayed instances have an entry.
CREATE INDEX IF NOT EXISTS instances_replay ON instances(replay_id) WHERE replay_id IS NOT NULL;
"""

# Deliveries by destination and state, kept by triggers in the transaction of every change: the
# queue counts (counts(), which the console reads every few seconds) read a few rows, never every
# delivery the journal holds (two million take a core a fifth of a second to count). A journal
# from before gets them, counted once, when it is opened (_add_delivery_counts).
_DELIVERY_COUNTS = (
    """CREATE TABLE delivery_counts (
        destination TEXT NOT NULL,
        state TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (destination, state)
    ) WITHOUT ROWID""",
    "INSERT INTO delivery_counts SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state",
    """CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries BEGIN
        INSERT INTO delivery_counts VALUES (NEW.destination, NEW.state, 1)
            ON CONFLICT (destination, state) DO UPDATE SET count = count + 1;
    END""",
    """CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries BEGIN
        UPDATE delivery_counts SET count = count - 1 WHERE destination = OLD.destination AND state = OLD.state;
    END""",
    """CREATE TRIGGER deliveries_counted_update AFTER UPDATE OF destination, state ON deliveries
    WHEN OLD.destination IS NOT NEW.destination OR OLD.state IS NOT NEW.state BEGIN
        UPDATE delivery_counts SET count = count - 1 WHERE destination = OLD.destination AND state = OLD.state;
        INSERT INTO delivery_counts VALUES (NEW.destination, NEW.state, 1)
            ON CONFLICT (destination, state) DO UPDATE SET count = count + 1;
    END""",
)


def _add_delivery_counts(db: sqlite3.Connection) -> None:
    """The counts and their triggers, made in one write transaction: the other process, or a
    delivery changed meanwhile, waits for them, so they start exact."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name='delivery_counts'").fetchone():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='delivery_counts'").fetchone():
            for statement in _DELIVERY_COUNTS:
                db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# Columns added since the first release: a journal made before gets them (empty) when opened.
_ADDED_COLUMNS = (("instances", "store_command", "TEXT"), ("requests", "store_command", "TEXT"),
                  *(("instances", column, "TEXT") for column in Arrival.HEADER_COLUMNS), ("instances", "trace", "TEXT"),
                  ("deliveries", "lease_owner", "TEXT"), ("deliveries", "lease_expires", "REAL"),
                  ("deliveries", "lease_process", "INTEGER"), ("instances", "lease_owner", "TEXT"),
                  ("instances", "lease_process", "INTEGER"), ("instances", "lease_expires", "REAL"),
                  ("instances", "checked", "TEXT"), ("instances", "retained_until", "REAL"),
                  # delivery windows and urgency
                  ("deliveries", "priority", "INTEGER NOT NULL DEFAULT 0"), ("deliveries", "delivery_window", "TEXT"),
                  # replays: the replay that queued an instance again, and the instance it replays
                  ("instances", "replay_id", "INTEGER"), ("instances", "replay_of", "INTEGER"),
                  # group rules: what they read of a member, kept when it joined
                  ("group_members", "member_header", "TEXT"))


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # the other process added it first
                if "duplicate column" not in str(exc):
                    raise




class SQLiteJournal(SQLJournal):
    """One per process; each thread gets its own SQLite connection."""

    _BEGIN_WRITE = "BEGIN IMMEDIATE"  # one writer at a time, decided at BEGIN: never a deadlock

    def __init__(self, path: str, node: str | None = None, process: int | None = None):
        if sqlite3.sqlite_version_info < (3, 35):  # INSERT ... RETURNING (sql.py)
            raise RuntimeError(f"the journal needs SQLite 3.35 or later; this Python has {sqlite3.sqlite_version}")
        super().__init__(node, process)
        self.path = path
        db = self._connection()
        db.execute("PRAGMA journal_mode=WAL")  # kept in the file: once is enough
        db.executescript(_SCHEMA)
        _add_missing_columns(db)
        db.executescript(_INDEXES)
        _add_delivery_counts(db)


    def size_bytes(self) -> int:
        size = 0
        for path in (self.path, self.path + "-wal"):
            try:
                size += os.path.getsize(path)
            except OSError:  # no WAL file between two checkpoints
                pass
        return size

    def try_exclusive(self, name: str) -> FileLock | None:
        # SQLite serves one node (the storage folder's lock): a file lock reaches all its processes.
        return FileLock.take(os.path.join(os.path.dirname(os.path.abspath(self.path)), "locks"), name)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # No fsync per commit: the spool file is fsynced before, and carries what a lost
        # entry would say (see record), so a commit lost to a power cut is found again.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.row_factory = sqlite3.Row
        return db
