#!/usr/bin/env python3
"""Generate rules/profiles/basic-confidentiality.rules from PS3.15 Table E.1-1.

    python tools/make_basic_profile.py           # (re)write the rules file
    python tools/make_basic_profile.py --check   # exit 1 when the committed file differs

The table is data/ps3-15-basic-profile.csv (its provenance is in
data/ps3-15-basic-profile.SOURCE.txt). Each row of the table becomes one action
of `block basic`, in table order, with a comment on its line that names the
attribute and its action code, so a reviewer can hold the file against the
standard row by row. The layout is the one `dicom-rules fmt` gives.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

from pydicom import datadict

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path("data/ps3-15-basic-profile.csv")
OUTPUT = Path("rules/profiles/basic-confidentiality.rules")
EDITION = "2026d"

# What a D (replace with a dummy value) row writes, by VR. Each value is valid
# for its VR and fits the shortest of them (SH, AE and CS hold 16 characters).
DUMMY_BY_VR = {
    "PN": "ANONYMOUS",
    "LO": "ANONYMOUS", "SH": "ANONYMOUS", "LT": "ANONYMOUS", "ST": "ANONYMOUS", "UT": "ANONYMOUS",
    "UC": "ANONYMOUS",
    "CS": "ANONYMOUS",
    "AE": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "IS": "0", "DS": "0",
}

# The composite codes offer a choice; the profile takes the option that keeps a
# conforming instance conforming (type 1 and 2 elements stay present) without
# leaking the original value.
EFFECTIVE_CODE = {
    "X": "X", "Z": "Z", "D": "D", "U": "U",
    "X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D",
    "X/Z/U*": "KEEP",
}

PATIENT_IDENTITY_REMOVED = "YES"
DEIDENTIFICATION_METHOD = f"PS3.15 Basic Application Level Confidentiality Profile {EDITION}"
METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1."""

    tag: str  # as the standard prints it: (0010,0010), (60xx,3000), (gggg,eeee)
    keyword: str
    name: str
    code: str

    @property
    def group(self) -> str:
        return self.tag[1:5]

    @property
    def is_pattern(self) -> bool:
        return any(c in "xge" for c in self.tag)

    def tag_value(self) -> int:
        return int(self.tag.strip("()").replace(",", ""), 16)


def read_table(path: Path) -> list[Row]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [Row(r["tag"], r["keyword"], r["name"], r["basic_profile_action"]) for r in csv.DictReader(fh)]
    unknown = sorted({r.code for r in rows} - set(EFFECTIVE_CODE))
    if unknown:
        raise SystemExit(f"{path}: action codes this generator does not know: {', '.join(unknown)}")
    return rows


def element(row: Row) -> str:
    """The path element for a row: its keyword when pydicom's dictionary knows it, else its tag."""
    if row.keyword:
        tag = datadict.tag_for_keyword(row.keyword)
        if tag is not None:
            if tag != row.tag_value():
                raise SystemExit(f"{row.tag} {row.keyword}: pydicom gives this keyword the tag {tag:08X}")
            return row.keyword
    return row.tag


def vr_of(row: Row) -> str | None:
    try:
        return datadict.dictionary_VR(row.tag_value()).split(" or ")[0]
    except KeyError:
        return None


def _replace_uids(path: str) -> str:
    # uid() keeps an empty UID empty. Laid out as `dicom-rules fmt` lays it out; the row
    # comment goes on the first line.
    return f"for each e in {path} {{\n  set e = uid(e)\n}}"


def action_for(row: Row) -> tuple[str | None, str]:
    """(the action, or None when the row needs none; a note for the trailing comment)."""
    code = EFFECTIVE_CODE[row.code]
    if row.tag.startswith("(gggg,eeee)"):  # printed "(gggg,eeee) where gggg is odd"
        return "delete private", ""
    if row.is_pattern:
        if code != "X":
            raise SystemExit(f"{row.tag}: a tag mask can only be deleted, not {row.code}")
        return f"delete DataSet.**.{row.tag}", ""
    if row.group == "0000":
        return None, ("not in the data set: a DIMSE command field, which rules cannot edit; "
                      "the command that sends a copy must carry the copy's own SOPInstanceUID")
    if row.group == "0002":
        return None, "file meta, which rules cannot edit: Document.write sets it from the replaced SOPInstanceUID"
    path = f"DataSet.**.{element(row)}"
    if code == "KEEP":
        return None, "kept: the U rows replace the UIDs inside its items"
    if code == "X":
        return f"delete {path}", ""
    if code == "Z":
        return f"blank {path}", ""
    if code == "U":
        return _replace_uids(path), ""
    vr = vr_of(row)  # code == "D"
    if vr == "UI":
        return _replace_uids(path), "a UID, so a new UID"
    dummy = DUMMY_BY_VR.get(vr)
    if dummy is None:
        why = "a sequence" if vr == "SQ" else f"{vr}: no dummy value" if vr else "VR unknown"
        return f"blank {path}", f"{why}, so blanked"
    return f'set {path} = "{dummy}"', ""


def comment_for(row: Row, note: str) -> str:
    """# (0008,0050) Accession Number: Z, with the option taken for a composite code and a note."""
    code = EFFECTIVE_CODE[row.code]
    chosen = f" -> {code}" if code not in (row.code, "KEEP") else ""
    return f"# {row.tag} {row.name}: {row.code}{chosen}" + (f"; {note}" if note else "")


HEADER = f"""\
# PS3.15 Basic Application Level Confidentiality Profile (DICOM PS3.15 Annex E,
# Table E.1-1, edition {EDITION}) as one block of edits: `apply deid.basic` after
# `import "profiles/basic-confidentiality.rules" as deid`.
#
# GENERATED: do not edit. Made by `python tools/make_basic_profile.py` from
# data/ps3-15-basic-profile.csv (provenance: data/ps3-15-basic-profile.SOURCE.txt);
# `python tools/make_basic_profile.py --check` tells whether this file is current.
#
# One action per table row, in table order; its comment names the attribute and
# its action code. Elements are named by keyword, or by tag where pydicom's
# dictionary has no keyword yet. DataSet.**.X reaches X at any depth, in every
# sequence item.
# Retired attributes are listed too: old instances still carry them.
#
#   X  delete.
#   Z  blank: zero length where present; absent stays absent.
#   D  set a dummy value where present, by VR: PN, LO, SH, LT, ST, UT, UC, CS and
#      AE "ANONYMOUS"; DA "19000101"; TM "000000"; DT "19000101000000"; AS "000D";
#      IS and DS "0"; UI a new UID as for U. A sequence, a binary element (OB, UN)
#      or a URI (UR) is blanked instead: there is no dummy value to write.
#   U  replace each UID with uid(UID): keyed and deterministic, so the same
#      original gets the same new UID in every instance and references inside
#      sequences still point at the replaced instances. Empty UIDs stay empty.
#   Composite codes take the option that keeps a conforming instance conforming
#   without leaking: X/Z -> Z, X/D -> D, X/Z/D -> D, Z/D -> D. X/Z/U* sequences
#   (Referenced Image, Source Image) are kept: the U rows replace their UIDs.
#   (gggg,eeee) odd groups: delete private (every private element, any depth).
#   (50xx,xxxx), (60xx,3000), (60xx,4000): deleted by tag mask at any depth.
#   (0000,1000), (0000,1001) are DIMSE command fields and (0002,0003) is file
#   meta: rules cannot edit those, so their lines hold only a comment.
#
# Last, the block records the de-identification as PS3.15 E.1.1 asks:
# PatientIdentityRemoved, DeidentificationMethod and DeidentificationMethodCodeSequence
# (113100, DCM). A record already present is replaced, not appended to.
"""


def render(rows: list[Row]) -> str:
    lines = [HEADER, "block basic {"]
    for row in rows:
        action, note = action_for(row)
        comment = comment_for(row, note)
        if action is None:
            lines.append(f"  {comment}")
            continue
        first, *rest = action.split("\n")
        lines.append(f"  {first}  {comment}")
        lines += [f"  {line}" for line in rest]
    value, scheme, meaning = METHOD_CODE
    lines += [
        "",
        "  # PS3.15 E.1.1: record that the identity was removed, and how",
        f'  set DataSet.PatientIdentityRemoved = "{PATIENT_IDENTITY_REMOVED}"',
        f'  set DataSet.DeidentificationMethod = "{DEIDENTIFICATION_METHOD}"',
        "  delete DataSet.DeidentificationMethodCodeSequence",
        f'  set DataSet.DeidentificationMethodCodeSequence[1].CodeValue = "{value}"',
        f'  set DataSet.DeidentificationMethodCodeSequence[1].CodingSchemeDesignator = "{scheme}"',
        f'  set DataSet.DeidentificationMethodCodeSequence[1].CodeMeaning = "{meaning}"',
        "}",
    ]
    return "\n".join(lines) + "\n"


def generate(root: Path = ROOT) -> str:
    return render(read_table(root / TABLE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the rules file differs")
    args = parser.parse_args(argv)
    text = generate()
    target = ROOT / OUTPUT
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   str(OUTPUT), f"{OUTPUT} (generated)"))
        print(f"{OUTPUT} is out of date: run python tools/make_basic_profile.py", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
