"""Comparing DICOM data sets value by value, as pydicom reads them: what a conversion or a
delivery must leave identical."""

from __future__ import annotations

from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

BYTE_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def as_vr(elem, vr: str):
    """The value of `elem`, read as UN (raw bytes), decoded as `vr`."""
    raw = RawDataElement(elem.tag, vr, len(elem.value or b""), elem.value or b"", 0, True, True)
    return convert_raw_data_element(raw).value


def differences(source: Dataset, converted: Dataset, where: str = "", skip_bytes: bool = False) -> list[str]:
    """How `converted` differs from `source`, element by element, sequences included.
    Documented differences are allowed: group lengths left out, an element Implicit VR
    could not type arriving as UN (its bytes decoded as the other side's VR then).
    `skip_bytes`: OB, OW, OF... values are compared elsewhere (big endian: pydicom keeps
    their bytes in the file's byte order)."""
    found = []
    for elem in source:
        here = f"{where}{elem.tag}"
        if elem.tag not in converted:
            if elem.tag.element != 0:
                found.append(f"{here} missing")
            continue
        other = converted[elem.tag]
        if elem.VR == "SQ" or other.VR == "SQ":
            if elem.VR != other.VR or len(elem.value) != len(other.value):
                found.append(f"{here} {elem.VR} of {len(elem.value or [])} != {other.VR}")
                continue
            for number, (a, b) in enumerate(zip(elem.value, other.value)):
                found += differences(a, b, f"{here}[{number}].", skip_bytes)
            continue
        if skip_bytes and (elem.VR in BYTE_VRS or other.VR in BYTE_VRS):
            continue
        mine, theirs = elem.value, other.value
        if elem.VR != other.VR and "UN" in (elem.VR, other.VR):
            mine, theirs = (as_vr(elem, other.VR), theirs) if elem.VR == "UN" else (mine, as_vr(other, elem.VR))
        if mine != theirs and (mine or theirs):  # empty: None, "" and b"" alike
            found.append(f"{here} {elem.VR} {str(mine)[:40]!r} != {other.VR} {str(theirs)[:40]!r}")
    found += [f"{where}{elem.tag} added" for elem in converted if elem.tag not in source]
    return found
