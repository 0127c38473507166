"""The journal: every instance received, every decision, every delivery attempt.

`Journal` (interface.py) is what the router asks of it; `SQLiteJournal` (sqlite.py) keeps
it in a SQLite file of the storage folder, `PostgresJournal` (postgres.py, imported only where
the configuration names a PostgreSQL journal) in a PostgreSQL database; both are sql.py's
`SQLJournal`, which holds the statements they share. records.py holds what it returns.
"""

from .errors import unreachable
from .interface import Journal
from .outbox import Notification, NotificationState
from .records import (MAX_TRACE_BYTES, MAX_TRACE_EDITS, Attempt, ClaimLost, Counter, Delivery, DeliveryState, DeliveryTrace,
                      DestinationAnswer, Group, GroupChanged, GroupJoin, GroupState, Instance, InstanceState,
                      InstanceTrace, Lease, ListedDelivery, NewDelivery, NewRequest, Outcome, Request, RequestOutcome,
                      RequestResult, RetainedFile, RouterStatus, trace_text)
from .records import URGENT
from .sql import LEASE_SECONDS
from .sqlite import SQLiteJournal

QUEUED, SENDING, DELIVERED, RETRYING, DEAD = DeliveryState
DELIVERY_STATES = tuple(DeliveryState)
ACCEPTED, PROCESSED, DONE = InstanceState

__all__ = ["ACCEPTED", "Attempt", "ClaimLost", "Counter", "DEAD", "DELIVERED", "DELIVERY_STATES", "DONE", "Delivery",
           "DeliveryState", "DeliveryTrace", "DestinationAnswer", "Group", "GroupChanged", "GroupJoin", "GroupState",
           "Instance", "InstanceState", "InstanceTrace",
           "Journal", "LEASE_SECONDS", "Lease", "ListedDelivery", "MAX_TRACE_BYTES", "MAX_TRACE_EDITS", "NewDelivery", "NewRequest", "Notification",
           "NotificationState", "Outcome",
           "PROCESSED", "QUEUED", "RETRYING", "Request", "RequestOutcome", "RequestResult", "RetainedFile", "RouterStatus", "SENDING",
           "SQLiteJournal", "trace_text", "unreachable", "URGENT"]
