"""The DIMSE statuses the router answers and checks, by name.

The codes are pynetdicom.status's (its tables follow PS3.4 Annex B and PS3.7 Annex C);
`is_stored` asks it which categories an answer falls in.
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.dataset import Dataset
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, Status, code_to_category


class StoreStatus(IntEnum):
    """What the listener answers a C-STORE (and a C-ECHO: SUCCESS)."""

    SUCCESS = Status.SUCCESS
    # not stored (a full disk, a storage error) or, sync, not delivered
    OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources"
    # a DICOMDIR, an instance without SOP UIDs
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # "Error: Data Set does not match SOP Class"
    CANNOT_UNDERSTAND = 0xC000  # "Error: Cannot understand": not a DICOM data set we can read
    # a C-STORE naming a SOP class no service of the association serves
    SOP_CLASS_NOT_SUPPORTED = 0x0122  # "Refused: SOP Class Not Supported"
    # A rule rejected the instance. Not 0x0124 (Refused: Not Authorized), a general DIMSE status
    # that DCMTK's storescu calls "Unknown Status" and dcmsend counts apart from the errors:
    # a code of the Storage Service's "Error: Cannot understand" range (C000-CFFF), which every
    # sender reports as a failure; its low byte recalls 0124.
    REJECTED_BY_RULES = 0xC124


ERROR_COMMENT_LENGTH = 64


def with_comment(code: int, comment: str | None) -> Dataset:
    """A status with its Error Comment: an LO of the command set, so default repertoire only
    (the command set has no Specific Character Set), no backslash (it would split the
    value), at most 64 characters."""
    status = Dataset()
    status.Status = int(code)
    if comment:
        status.ErrorComment = "".join(c if " " <= c <= "~" and c != "\\" else "?"
                                      for c in comment)[:ERROR_COMMENT_LENGTH]
    return status


def is_stored(code: int) -> bool:
    """Did a destination take the instance: success, or a warning (coerced, elements discarded)?"""
    return code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING)


class QueryStatus(IntEnum):
    """What the listener answers a C-FIND (find_service.py)."""

    SUCCESS = Status.SUCCESS
    PENDING = Status.PENDING  # 0xFF00: one match
    CANCEL = Status.CANCEL  # 0xFE00: after the requester's C-CANCEL
    # Some destinations failed, the others' matches were returned: a warning (PS3.7 C.4) whose
    # Error Comment names the failed ones. Not a code of the Query/Retrieve tables (0xB001 says
    # "response limit reached"), so pynetdicom sends it as the final response as it is.
    PARTIAL = 0xB000
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # undecodable, or a level the model does not have
    UNABLE_TO_PROCESS = 0xC000  # every destination failed, a rule failed, an internal error
    REJECTED_BY_RULES = 0xC124  # a rule's `reject`: as for C-STORE, in the "Unable to process" range


class RetrieveStatus(IntEnum):
    """What the listener answers a C-MOVE or C-GET (retrieve_service.py)."""

    SUCCESS = Status.SUCCESS  # every sub-operation completed
    PENDING = Status.PENDING  # 0xFF00: progress, with the sub-operation counts
    CANCEL = Status.CANCEL  # 0xFE00: after the requester's C-CANCEL
    SUBOPERATIONS_FAILED = 0xB000  # "Sub-operations Complete - One or more Failures or Warnings"
    MOVE_DESTINATION_UNKNOWN = 0xA801  # "Refused: Move Destination unknown"
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # undecodable, or a level the model does not have
    UNABLE_TO_PROCESS = 0xC000  # the source failed, a rule failed, an internal error
    REJECTED_BY_RULES = 0xC124  # a rule's `reject`: as for C-FIND


class MppsStatus(IntEnum):
    """What the listener answers an N-CREATE or N-SET of MPPS (mpps_service.py), besides the
    statuses the destination answered, which are passed back as they are. Codes of PS3.7
    Annex C (the DIMSE-N statuses PS3.4 F.7.2 lists for MPPS); the reason is in Error Comment."""

    SUCCESS = Status.SUCCESS
    INVALID_ATTRIBUTE_VALUE = 0x0106  # the data set cannot be decoded
    # A rule failed, a destination cannot answer the message, an internal error. For N-SET the
    # standard also gives it the meaning "may no longer be updated": the Error Comment says which.
    PROCESSING_FAILURE = 0x0110
    NO_SUCH_SOP_CLASS = 0x0118  # a request on another SOP class than MPPS
    # A rule's `reject`, or a request no rule routes: "Refused: Not authorized" is the DIMSE-N
    # status for a request the SCP will not perform, which modalities report as a failure.
    REFUSED_BY_RULES = 0x0124
    # A destination unreachable or silent: like 0xA700 for a C-STORE, it tells the modality that
    # trying again later may work (most queue the message and do).
    RESOURCE_LIMITATION = 0x0213
