"""A reproducible workload: N typical rules and the sample document they run on.

The rules look like a hospital's routing file: equality tests on the modality,
the sender's AE title and the station name, `in` lists, regular expressions,
`lower(...) contains`, `exists`/`missing` and and/or/not combinations. Most
actions route; some fix the institution name, one kind logs, one kind sends
an edited copy to a research store.

As in a real rule file, most rules do not fire for a given document: one rule
in FIRING_EVERY is written to fire for the sample document (rule 0 always
does, so even a one-rule file routes it). Every edit that fires on the sample
writes the same value to the same element, so evaluating the sample again is
idempotent: after the first evaluation nothing changes any more.
"""

from __future__ import annotations

import random

from pydicom.data import get_testdata_file

from rulesengine import Arrival, Document

DEFAULT_SEED = 20240131
FIRING_EVERY = 20  # one rule in twenty fires for the sample document

# Only files bundled with pydicom: asking for any other name makes pydicom try to download it.
SAMPLE_FILE = "CT_small.dcm"
SAMPLE_CALLING_AET = "CT_EAST_1"

# What the sample holds (CT_small.dcm), so that the generator knows which rules fire.
SAMPLE_MODALITY = "CT"
SAMPLE_STATION_PATTERN = "^CT0[0-9]_"  # the sample's StationName is CT01_OC0
FIRING_INSTITUTION = "General Hospital"  # the one value firing edits write: keeps them idempotent

DESTINATIONS = ("PACS_MAIN", "PACS_BACKUP", "VNA", "RESEARCH", "AI_TRIAGE", "MAMMO_WS", "CARDIO_PACS",
                "TELERAD", "QA_HOLD")

# Values that never match the sample (it is a CT from CT_EAST_1 at station CT01_OC0).
_OTHER_MODALITIES = ("MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "OT", "SC", "ECG")
_SITES = ("WEST", "NORTH", "SOUTH", "ANNEX", "CLINIC")
_BODY_PARTS = ("KNEE", "ANKLE", "HAND", "SHOULDER", "HIP", "SPINE", "BREAST", "HEART")
_DESCRIPTION_WORDS = ("chest", "knee", "brain", "abdomen", "pelvis", "spine", "cardiac", "breast")
_VENDORS = ("SIEMENS", "Philips", "TOSHIBA", "FUJIFILM", "Hologic", "Canon")
_INSTITUTIONS = ("Breast Centre", "Heart Institute", "North Clinic", "Imaging Annex")


def _quoted(values) -> str:
    return ", ".join(f'"{value}"' for value in values)


def _aet(rng: random.Random, modality: str) -> str:
    return f"{modality}_{rng.choice(_SITES)}_{rng.randint(1, 9)}"


# ---- rules that do not fire for the sample ----------------------------------
# Each returns (name, condition, actions); `i` keeps rule names unique.

def _modality_from_sender(rng, i):
    modality = rng.choice(_OTHER_MODALITIES)
    aet = _aet(rng, modality)
    return (f"{modality} from {aet} #{i}",
            f'DataSet.Modality == "{modality}" and Association.CallingAET == "{aet}"',
            [f"route to {rng.choice(DESTINATIONS)}"])


def _sender_list(rng, i):
    modality = rng.choice(_OTHER_MODALITIES)
    senders = sorted({_aet(rng, modality) for _ in range(rng.randint(2, 5))})
    return (f"{modality} senders #{i}",
            f"Association.CallingAET in [{_quoted(senders)}]",
            [f"route to {rng.choice(DESTINATIONS)}"])


def _station_pattern(rng, i):
    modality = rng.choice(_OTHER_MODALITIES)
    return (f"{modality} stations #{i}",
            f"DataSet.StationName matches /^{modality}[0-9]{{2}}_/",
            [f"route to {rng.choice(DESTINATIONS)}"])


def _description_for_triage(rng, i):
    word = rng.choice(_DESCRIPTION_WORDS)
    modalities = rng.sample(("CR", "DX", "MR", "US", "XA"), 2)
    return (f"{word} studies to triage #{i}",
            f'lower(DataSet.StudyDescription) contains "{word}" and DataSet.Modality in [{_quoted(modalities)}]',
            ["route to AI_TRIAGE"])


def _body_part(rng, i):
    part = rng.choice(_BODY_PARTS)
    return (f"{part.lower()} studies #{i}",
            f'exists DataSet.BodyPartExamined and DataSet.BodyPartExamined == "{part}"',
            [f"route to {rng.choice(DESTINATIONS)}"])


def _missing_identifiers(rng, i):
    modality = rng.choice(_OTHER_MODALITIES)
    aet = _aet(rng, modality)
    return (f"{aet} without identifiers #{i}",
            f'Association.CallingAET == "{aet}" and (missing DataSet.AccessionNumber or missing DataSet.StudyID)',
            [f'quarantine "no accession number or study ID from {aet}"'])


def _vendor_outside_ct(rng, i):
    vendor = rng.choice(_VENDORS)
    return (f"{vendor} outside CT and PET #{i}",
            f'not (DataSet.Modality in ["CT", "PT"]) and DataSet.Manufacturer == "{vendor}"',
            [f"route to {rng.choice(DESTINATIONS)}"])


def _institution_fix(rng, i):
    modality = rng.choice(("MG", "US", "XA"))
    institution = rng.choice(_INSTITUTIONS)
    return (f"{modality} institution name #{i}",
            f'DataSet.Modality == "{modality}" or DataSet.StationName == "{modality}_ROOM_{rng.randint(1, 4)}"',
            [f'set DataSet.InstitutionName = "{institution}"', f"route to {rng.choice(DESTINATIONS)}"])


def _research_copy(rng, i):
    modality = rng.choice(("PT", "NM", "MR"))
    return (f"{modality} research copy #{i}",
            f'DataSet.Modality == "{modality}" and Association.CallingAET startswith "{modality}_"',
            ['copy to RESEARCH { set DataSet.PatientName = "RESEARCH^SUBJECT" }', "route to PACS_MAIN"])


def _logged_route(rng, i):
    modality = rng.choice(_OTHER_MODALITIES)
    return (f"{modality} logged #{i}",
            f'DataSet.Modality == "{modality}" and not (Association.CallingAET in ["TEST_AE", "QA_PHANTOM"])',
            [f'log "{modality} study from " + Association.CallingAET', f"route to {rng.choice(DESTINATIONS)}"])


def _description_pattern(rng, i):
    words = rng.sample(_DESCRIPTION_WORDS[1:], 3)
    return (f"{'/'.join(words)} descriptions #{i}",
            f"DataSet.StudyDescription matches /{'|'.join(words)}/i and DataSet.Modality != \"{SAMPLE_MODALITY}\"",
            [f"route to {rng.choice(DESTINATIONS)}"])


# Weighted: plain routing tests dominate, edits, copies and logs are rarer.
_QUIET_RULES = (
    (_modality_from_sender, 5), (_sender_list, 4), (_station_pattern, 3), (_description_for_triage, 2),
    (_body_part, 2), (_missing_identifiers, 1), (_vendor_outside_ct, 2), (_institution_fix, 2), (_research_copy, 1),
    (_logged_route, 1), (_description_pattern, 2),
)


# ---- rules that fire for the sample ------------------------------------------

def _ct_from_sample_sender(rng, i):
    return (f"CT from {SAMPLE_CALLING_AET} #{i}",
            f'DataSet.Modality == "{SAMPLE_MODALITY}" and Association.CallingAET == "{SAMPLE_CALLING_AET}"',
            ["route to PACS_MAIN"])


def _east_wing_institution(rng, i):
    return (f"east wing institution #{i}",
            f'Association.CallingAET in ["{SAMPLE_CALLING_AET}", "CT_EAST_2", "MR_EAST_1"]',
            [f'set DataSet.InstitutionName = "{FIRING_INSTITUTION}"', "route to VNA"])


def _ct_station_logged(rng, i):
    return (f"CT station logged #{i}",
            f"DataSet.StationName matches /{SAMPLE_STATION_PATTERN}/ and not (missing DataSet.PatientID)",
            ['log "CT study from station " + DataSet.StationName', "route to PACS_BACKUP"])


def _cross_sectional_triage(rng, i):
    return (f"cross-sectional triage #{i}",
            'DataSet.Modality in ["CT", "MR"] and (exists DataSet.StudyInstanceUID '
            'or lower(DataSet.StudyDescription) contains "chest")',
            ["route to AI_TRIAGE"])


_FIRING_RULES = (_ct_from_sample_sender, _east_wing_institution, _ct_station_logged, _cross_sectional_triage)


def _format_rule(name: str, condition: str, actions: list[str]) -> str:
    body = "\n".join(f"    {action}" for action in actions)
    return f'rule "{name}" {{\n  when {condition}\n  then\n{body}\n}}\n'


def generate_rules(count: int, seed: int = DEFAULT_SEED) -> str:
    """The text of a rule file with `count` rules; the same count and seed give the same text."""
    rng = random.Random(seed)
    makers = [maker for maker, _ in _QUIET_RULES]
    weights = [weight for _, weight in _QUIET_RULES]
    parts = [f"# {count} generated rules (seed {seed})\n"]
    for i in range(count):
        if i % FIRING_EVERY == 0:
            maker = _FIRING_RULES[(i // FIRING_EVERY) % len(_FIRING_RULES)]
        else:
            maker = rng.choices(makers, weights)[0]
        parts.append(_format_rule(*maker(rng, i)))
    return "\n".join(parts)


def firing_count(count: int) -> int:
    """How many of `count` generated rules fire for the sample document."""
    return len(range(0, count, FIRING_EVERY))


def sample_document(file_name: str = SAMPLE_FILE, calling_aet: str = SAMPLE_CALLING_AET) -> Document:
    """A bundled pydicom test file read as if `calling_aet` had sent it."""
    return Document.read(get_testdata_file(file_name), Arrival(calling_aet=calling_aet, called_aet="ROUTER"))
