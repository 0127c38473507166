"""The journal: every instance received, every decision, every delivery attempt.

`Journal` (interface.py) is what the router asks of it; `SQLiteJournal` (sqlite.py) keeps
it in a SQLite file of the storage folder; records.py holds what it returns.
"""

from .interface import Journal
from .records import (Attempt, Delivery, DeliveryState, DestinationAnswer, Instance, InstanceState, ListedDelivery,
                      NewDelivery, NewRequest, Outcome, Request, RequestOutcome, RequestResult)
from .sqlite import SQLiteJournal

QUEUED, SENDING, DELIVERED, RETRYING, DEAD = DeliveryState
DELIVERY_STATES = tuple(DeliveryState)
ACCEPTED, PROCESSED, DONE = InstanceState

__all__ = ["ACCEPTED", "Attempt", "DEAD", "DELIVERED", "DELIVERY_STATES", "DONE", "Delivery", "DeliveryState",
           "DestinationAnswer", "Instance", "InstanceState", "Journal", "ListedDelivery", "NewDelivery", "NewRequest",
           "Outcome", "PROCESSED", "QUEUED", "RETRYING", "Request", "RequestOutcome", "RequestResult", "SENDING",
           "SQLiteJournal"]
