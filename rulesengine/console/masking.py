"""What a viewer may not see of the patients: their names, identifiers, birth dates and the
other dates and times of the patient and the study, in every page and API answer of the
console. Operators and admins see everything.

What is masked is decided here alone:
- the journal's header facts `patient_id`, `patient_name` and `accession_number`;
- the value of any element whose VR is PN, DA, DT, TM (names, dates, times) or SQ (a
  sequence's items may hold any of these), or whose keyword is one of IDENTIFYING, or that
  sits in a sequence named there; the VR is the DICOM dictionary's (pydicom);
- the value of an element the dictionary does not know (a private element, a misspelt or
  masked tag): what it holds cannot be told, so it is hidden.

A masked value reads MASK; a value that is absent stays absent (None), which tells nothing
of the patient. Text a rule writes itself (a reason, a log line) is shown as written.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from .auth import role_allows

MASK = "********"

# The journal's header facts that name or identify the patient or the study.
IDENTIFYING_FACTS = ("patient_id", "patient_name", "accession_number")

# Elements that identify the patient or the study whatever their VR (names, dates and times
# are caught by their VR: PERSON_VRS).
IDENTIFYING = frozenset({
    "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "PatientAge", "PatientSex",
    "PatientSize", "PatientWeight", "PatientComments", "AdditionalPatientHistory", "MedicalRecordLocator",
    "MilitaryRank", "BranchOfService", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyID", "AdmissionID", "IssuerOfAdmissionIDSequence",
    "ReferencedPatientSequence", "RequestedProcedureID", "ScheduledProcedureStepID",
    "PerformedProcedureStepID", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest", "PersonName", "PersonAddress", "PersonTelephoneNumbers",
})
PERSON_VRS = frozenset({"PN", "DA", "DT", "TM", "SQ"})
# The roots of a path that are not the data set: what the router knows of the arrival, the
# command set, the file meta information; none of them is the patient's.
NOT_THE_DATASET = frozenset({"FileMeta", "Association", "Source", "Arrival", "CommandSet", "Retrieve"})

_TAG = re.compile(r"^\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)$")
_INDEX = re.compile(r"(\[[^\]]*\])+$")


def sees_patient_data(role: str) -> bool:
    """Operators and admins see patient data; a viewer sees it masked."""
    return role_allows(role, "operator")


def _components(path: str) -> list[str]:
    """A dotted path's parts, a part's dots inside parentheses or quotes kept
    (`DataSet.(0009,"ACME 1.1",10)`), each without its item index (`[0]`)."""
    parts, current, depth, quoted = [], [], 0, False
    for char in path:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth = max(0, depth - 1)
        if char == "." and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [_INDEX.sub("", part).strip() for part in parts]


def _keyword(part: str) -> str:
    """A part named by its tag, (0010,0020), as its keyword, PatientID; any other part as it is."""
    match = _TAG.match(part)
    return keyword_for_tag(int(match.group(1) + match.group(2), 16)) or part if match else part


def _vr(part: str) -> str | None:
    """The dictionary's VR of an element named by keyword or tag; None when it does not know it."""
    match = _TAG.match(part)
    tag = int(match.group(1) + match.group(2), 16) if match else tag_for_keyword(part)
    if tag is None or (tag >> 16) % 2:  # unknown, or private
        return None
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def identifying(path: str) -> bool:
    """Whether the element at `path` (`DataSet.PatientName`, `DataSet.OtherPatientIDsSequence[0].IssuerOfPatientID`,
    `DataSet.(0010,0030)`, a C-FIND key `ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate`)
    may hold patient data a viewer does not see."""
    parts = [part for part in _components(path) if part]
    if parts and parts[0] in NOT_THE_DATASET:
        return False
    if parts and parts[0] == "DataSet":
        parts = parts[1:]
    if not parts:
        return True
    if any(_keyword(part) in IDENTIFYING for part in parts):
        return True
    vr = _vr(parts[-1])
    return vr is None or any(kind in PERSON_VRS for kind in vr.split(" or "))


def _masked(value: Any) -> Any:
    return None if value is None else MASK


def instance_facts(facts: dict, role: str) -> dict:
    """An instance's facts (a dict with the header facts among its keys), masked for `role`."""
    if sees_patient_data(role):
        return facts
    return {key: _masked(value) if key in IDENTIFYING_FACTS else value for key, value in facts.items()}


def edit(change: Mapping[str, Any], role: str) -> dict:
    """One edit of a trace ({path, old, new, ...}): its old and new values masked for `role`
    when the element may hold patient data."""
    if sees_patient_data(role) or not identifying(str(change.get("path") or "")):
        return dict(change)
    return {**change, "old": _masked(change.get("old")), "new": _masked(change.get("new"))}


def trace(decided: Mapping[str, Any] | None, role: str) -> dict | None:
    """A trace (see rulesengine.runtime.journal.trace_text) with its edits masked for `role`."""
    if decided is None:
        return None
    return {**decided, "edits": [edit(change, role) for change in decided.get("edits") or ()]}


def matching_keys(keys: Mapping[str, str], role: str) -> dict:
    """A request's matching keys (keyword -> value), masked for `role`."""
    if sees_patient_data(role):
        return dict(keys)
    return {key: _masked(value) if identifying(key) else value for key, value in keys.items()}
