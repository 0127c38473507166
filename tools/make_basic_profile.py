#!/usr/bin/env python3
"""Generate rules/profiles/basic-confidentiality.rules (and its options) from PS3.15 Table E.1-1.

    python tools/make_basic_profile.py           # (re)write the rules files
    python tools/make_basic_profile.py --check   # exit 1 when a committed file differs

The table is data/ps3-15-basic-profile.csv (its provenance is in
data/ps3-15-basic-profile.SOURCE.txt). Each row of the table becomes one action
of `block basic`, in table order, with a comment on its line that names the
attribute and its action code, so a reviewer can hold the file against the
standard row by row. The layout is the one `dicom-rules fmt` gives.

The table's option columns are data/ps3-15-profile-options.csv (provenance in
data/ps3-15-profile-options.SOURCE.txt). From them and the same rows comes
rules/profiles/basic-confidentiality-options.rules: the basic profile split into
blocks, `core` and one block per option group, and for each option a block that
takes its group's place (see OPTIONS_HEADER). The Retain Safe Private block keeps
the private attributes of Table E.3.10-1, data/ps3-15-safe-private.csv (provenance
in data/ps3-15-safe-private.SOURCE.txt).
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
OPTIONS_TABLE = Path("data/ps3-15-profile-options.csv")
OPTIONS_OUTPUT = Path("rules/profiles/basic-confidentiality-options.rules")
SAFE_PRIVATE_TABLE = Path("data/ps3-15-safe-private.csv")
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


def _record_lines() -> list[str]:
    """The end of a block that de-identifies: the record PS3.15 E.1.1 asks for, replacing any."""
    value, scheme, meaning = METHOD_CODE
    return [
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
    lines += _record_lines()
    return "\n".join(lines) + "\n"


def generate(root: Path = ROOT) -> str:
    return render(read_table(root / TABLE))


# ---- the options --------------------------------------------------------------------

# The groups the options split the rows into, in the order a user applies them after `core`:
# (block of the basic actions, the option's column, its block, its code in CID 7050, its meaning).
# A row listed by several options belongs to the first group here that lists it.
GROUPS = (
    ("device_identity", "retain_device_identity", "retain_device_identity", "113109",
     "Retain Device Identity Option"),
    ("uids", "retain_uids", "retain_uids", "113110", "Retain UIDs Option"),
    ("institution_identity", "retain_institution_identity", "retain_institution_identity", "113112",
     "Retain Institution Identity Option"),
    ("patient_characteristics", "retain_patient_characteristics", "retain_patient_characteristics", "113108",
     "Retain Patient Characteristics Option"),
    ("dates", "retain_full_dates", "retain_full_dates", "113106",
     "Retain Longitudinal Temporal Information Full Dates Option"),
    ("descriptors", "clean_descriptors", None, "113105", "Clean Descriptors Option"),
    ("private_attributes", "retain_safe_private", "retain_safe_private", "113111", "Retain Safe Private Option"),
)
MODIFIED_DATES = ("retain_modified_dates", "113107", "Retain Longitudinal Temporal Information Modified Dates Option")
# The range of the Modified Dates shift, in days: one to ten years back, so no date moves into
# the future. Each patient's shift is hash_int(PatientID, ...) in this range: keyed with the
# router's secret, the same for every study of the patient.
DATE_SHIFT_MIN_DAYS = -3650
DATE_SHIFT_MAX_DAYS = -365


def read_options(path: Path, rows: list[Row]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        options = list(csv.DictReader(fh))
    if [o["tag"] for o in options] != [r.tag for r in rows]:
        raise SystemExit(f"{path}: its rows are not those of {TABLE}, in the same order")
    unknown = sorted({v for o in options for k, v in o.items() if k not in ("tag", "name") and v} - {"K", "C"})
    if unknown:
        raise SystemExit(f"{path}: option codes this generator does not know: {', '.join(unknown)}")
    return options


def group_of(option: dict[str, str]) -> str:
    for group, column, *_ in GROUPS:
        if option[column]:
            return group
    if option["retain_modified_dates"]:
        return "dates"
    return "core"


def _row_lines(row: Row, action: str | None, comment: str) -> list[str]:
    if action is None:
        return [f"  {comment}"]
    first, *rest = action.split("\n")
    return [f"  {first}  {comment}"] + [f"  {line}" for line in rest]


def _basic_lines(row: Row) -> list[str]:
    action, note = action_for(row)
    return _row_lines(row, action, comment_for(row, note))


def _recorded(code: str, meaning: str) -> list[str]:
    return [
        "",
        "  # PS3.15 E.1.1: the option is recorded beside the basic profile's code",
        "  append to DataSet.DeidentificationMethodCodeSequence as code {",
        f'    set code.CodeValue = "{code}"',
        '    set code.CodingSchemeDesignator = "DCM"',
        f'    set code.CodeMeaning = "{meaning}"',
        "  }",
    ]


def _option_lines(row: Row, option: dict[str, str], column: str) -> list[str]:
    """A row in an option's block: kept (K), or cleaned (C), which no rule can do for free text,
    device addresses or patient notes: the basic action then."""
    code = option[column]
    if code == "K":
        return [f"  # {row.tag} {row.name}: K, kept"]
    action, note = action_for(row)
    note = "C: cleaning it takes judgement a rule does not have, so as the basic profile" + \
        (f"; {note}" if note else "")
    return _row_lines(row, action, comment_for(row, note))


def _modified_date_lines(row: Row) -> list[str]:
    vr = vr_of(row)
    path = f"DataSet.**.{element(row)}"
    if vr in ("DA", "DT") and not row.is_pattern and row.group not in ("0000", "0002"):
        return [f"  for each e in {path} {{  # {row.tag} {row.name}: C, shifted ({vr})",
                "    set e = shift_date(e, shift)",
                "  }"]
    if vr == "TM":
        return [f"  # {row.tag} {row.name}: C, a time: whole days shifted leave it as it is"]
    # Not a DA or DT a rule can shift (or its VR is unknown): it must not keep its date.
    action, note = action_for(row)
    note = "C, but not a date a rule can shift, so as the basic profile" + (f"; {note}" if note else "")
    return _row_lines(row, action, comment_for(row, note))


OPTIONS_HEADER = f"""\
# PS3.15 Basic Application Level Confidentiality Profile with its options (DICOM
# PS3.15 Annex E, Table E.1-1, edition {EDITION}), as blocks to compose:
# `import "profiles/basic-confidentiality-options.rules" as deid`, then in a copy:
#
#   apply deid.shift_dates               # only with retain_modified_dates: before core
#   apply deid.core                      # every row no option lists, and the record
#   apply deid.device_identity           # or deid.retain_device_identity
#   apply deid.uids                      # or deid.retain_uids
#   apply deid.institution_identity      # or deid.retain_institution_identity
#   apply deid.patient_characteristics   # or deid.retain_patient_characteristics
#   apply deid.dates                     # or deid.retain_full_dates, or deid.retain_modified_dates
#   apply deid.descriptors
#   apply deid.private_attributes        # or deid.retain_safe_private
#
# `core` first: it records the basic profile (113100) in DeidentificationMethodCodeSequence,
# to which each option's block then appends its own code (CID 7050). With every group's
# basic block this is block `basic` of basic-confidentiality.rules, action for action.
#
# GENERATED: do not edit. Made by `python tools/make_basic_profile.py` from
# data/ps3-15-basic-profile.csv and data/ps3-15-profile-options.csv (provenance beside
# them); `python tools/make_basic_profile.py --check` tells whether this file is current.
#
# Each row of Table E.1-1 is in exactly one group, with the action of the basic profile
# (see basic-confidentiality.rules for the codes). A row that several options list is in
# the first group of: device identity, UIDs, institution identity, patient
# characteristics, dates, descriptors, private attributes. So Device UID is kept by Retain Device
# Identity, not by Retain UIDs, and the calibration dates by Retain Device Identity as
# well as by the date options.
#
# An option's block keeps the rows its column marks K. A row it marks C (clean) gets the
# basic action: cleaning free text, AE titles or patient notes of what identifies takes
# judgement a rule does not have. So there is no block for Clean Descriptors (113105): a
# site that can clean its descriptors writes its own block in the place of `descriptors`,
# and appends the option's code there.
#
# Retain Safe Private (113111): block `retain_safe_private` keeps the private attributes of
# Table E.3.10-1, at any depth, with their creator elements, and removes every other private
# element. The standard's list is a sample: a site that knows more safe attributes of its
# devices copies the block and adds them.
#
# Modified Dates (113107): block `shift_dates` moves every DA and DT the option lists by
# the patient's shift, hash_int(PatientID, {DATE_SHIFT_MIN_DAYS}, {DATE_SHIFT_MAX_DAYS}) days:
# keyed with the router's secret, so
# nobody without it can recompute it, and the same for every study of the patient, so
# intervals between studies stay. Times stay as they are. An instance without a PatientID
# (or with an empty one) has no shift: its shifted dates become empty. The shift reads
# PatientID, which core replaces, so `shift_dates` comes before core;
# `retain_modified_dates`, in the place of `dates`, records the option's code when the
# dates were shifted, and else removes them as `dates` does.
# The date blocks also say what became of the dates, in LongitudinalTemporalInformationModified.
"""


@dataclass(frozen=True)
class SafePrivate:
    """One row of Table E.3.10-1."""

    tag: str  # as the standard prints it: (0019,xx23)
    creator: str
    vr: str
    vm: str
    meaning: str

    def path(self) -> str:
        group, offset = self.tag.strip("()").split(",xx")
        return f'DataSet.**.({group.upper()},"{self.creator}",{offset.upper()})'


def read_safe_private(path: Path) -> list[SafePrivate]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [SafePrivate(r["tag"], r["private_creator"], r["vr"], r["vm"], r["meaning"])
                for r in csv.DictReader(fh)]
    for row in rows:
        if not (len(row.tag) == 11 and row.tag[5:8] == ",xx"):
            raise SystemExit(f"{path}: {row.tag} is not a private element (gggg,xxee)")
    return rows


def _safe_private_lines(safe: list[SafePrivate]) -> list[str]:
    """The option's keep list, with the table row by row above it (fmt keeps no comment inside a list)."""
    lines = ["  # PS3.15 E.3.10: the private attributes of Table E.3.10-1 stay, at any depth, with",
             "  # their creator elements; every other private element goes. The table, row by row:"]
    for row in safe:
        what = " ".join(part for part in (row.vr, row.vm) if part)
        lines.append(f"  #   {row.tag} {row.creator}: {what}" + (f", {row.meaning}" if row.meaning else ""))
    paths = [row.path() for row in safe]
    lines.append(f"  keep only private {paths[0]},")
    lines += [f"    {path}," for path in paths[1:-1]]
    lines.append(f"    {paths[-1]}")
    return lines


def _modified_dates_blocks(rows: list[tuple[Row, dict[str, str]]]) -> list[str]:
    """Modified Dates in two blocks: the shift, keyed on PatientID, runs before core replaces it;
    the record, in the place of `dates`, after core has made the code sequence anew."""
    column, code, code_meaning = MODIFIED_DATES
    lines = ["", "block shift_dates {",
             "  # one shift per patient, the same for each of the patient's studies: before core",
             f"  let shift = hash_int(DataSet.PatientID, {DATE_SHIFT_MIN_DAYS}, {DATE_SHIFT_MAX_DAYS})"]
    for row, option in rows:
        if option[column] == "C":
            lines += _modified_date_lines(row)
        else:
            lines += _basic_lines(row)
    lines += ["", '  set DataSet.LongitudinalTemporalInformationModified = "MODIFIED"', "}"]
    recorded = [("  " + line) if line else line for line in _recorded(code, code_meaning)[1:]]
    lines += ["", "block retain_modified_dates {",
              "  # shift_dates ran before core: record the option. Without it the dates are",
              "  # as received, so they go as the basic profile says.",
              '  if DataSet.LongitudinalTemporalInformationModified == "MODIFIED" {',
              *recorded,
              "  } else {",
              "    apply dates",
              "  }",
              "}"]
    return lines


def render_options(rows: list[Row], options: list[dict[str, str]], safe: list[SafePrivate]) -> str:
    groups: dict[str, list[tuple[Row, dict[str, str]]]] = {"core": []}
    for group, *_ in GROUPS:
        groups[group] = []
    for row, option in zip(rows, options):
        groups[group_of(option)].append((row, option))
    lines = [OPTIONS_HEADER, "block core {"]
    for row, _ in groups["core"]:
        lines += _basic_lines(row)
    lines += _record_lines()
    for group, column, option_block, code, code_meaning in GROUPS:
        lines += ["", f"block {group} {{"]
        for row, _ in groups[group]:
            lines += _basic_lines(row)
        lines.append("}")
        if option_block is None:
            continue
        lines += ["", f"block {option_block} {{"]
        if group == "private_attributes":
            lines += _safe_private_lines(safe)
        else:
            for row, option in groups[group]:
                lines += _option_lines(row, option, column)
        if group == "dates":
            lines += ["", '  set DataSet.LongitudinalTemporalInformationModified = "UNMODIFIED"']
        lines += _recorded(code, code_meaning)
        lines.append("}")
        if group == "dates":
            lines += _modified_dates_blocks(groups[group])
    return "\n".join(lines) + "\n"


def generate_options(root: Path = ROOT) -> str:
    rows = read_table(root / TABLE)
    return render_options(rows, read_options(root / OPTIONS_TABLE, rows), read_safe_private(root / SAFE_PRIVATE_TABLE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the rules file differs")
    args = parser.parse_args(argv)
    status = 0
    for output, text in ((OUTPUT, generate()), (OPTIONS_OUTPUT, generate_options())):
        target = ROOT / output
        if args.check:
            current = target.read_text(encoding="utf-8") if target.exists() else ""
            if current == text:
                continue
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                       str(output), f"{output} (generated)"))
            print(f"{output} is out of date: run python tools/make_basic_profile.py", file=sys.stderr)
            status = 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
