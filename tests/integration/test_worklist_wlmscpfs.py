"""The worklist folder source against DCMTK's wlmscpfs on the same folder: worklist files
made by DCMTK's dump2dcm (DCMTK's own example worklist, and items of our own), queried
over the network with pynetdicom; the router's WorklistFolder.find must find the same
items and answer the same return keys with the same values.

The identifiers use the keys wlmscpfs matches (it answers other keys not at all) and no
wildcards in Patient ID, Scheduled Station AE Title or Modality (wlmscpfs takes them
literally there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from rulesengine.runtime.worklist import WorklistFolder

from helpers.peers import WorklistSCP, dump2dcm, require

DCMTK_EXAMPLES = Path("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS")

# Items of our own: Latin-1 names, times that test the combined date-time range.
OWN_ITEMS = {
    "latin1": ("MÜLLER^HANS", "P900", "A900", "SPS900", "CT", "CT9", "20260302", "093000"),
    "latin1b": ("MÜLLERSOHN^JÜRGEN", "P901", "A901", "SPS901", "MR", "MR9", "20260302", "173000"),
    "morning": ("EARLY^BIRD", "P902", "A902", "SPS902", "CT", "CT9", "20260303", "071500"),
    "evening": ("LATE^OWL", "P903", "A903", "SPS903", "CT", "CT9", "20260301", "221500"),
}


def own_dump(name, patient, patient_id, accession, step_id, modality, station, date, time) -> bytes:
    return f"""(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{accession}]
(0010,0010) PN [{patient}]
(0010,0020) LO [{patient_id}]
(0010,0030) DA [19700101]
(0010,0040) CS [O]
(0020,000d) UI [1.2.826.0.1.3680043.2.1143.{step_id[3:]}]
(0032,1060) LO [Procedure {name}]
(0040,0100) SQ
(fffe,e000) -
(0008,0060) CS [{modality}]
(0040,0001) AE [{station}]
(0040,0002) DA [{date}]
(0040,0003) TM [{time}]
(0040,0006) PN [DOCTOR^{name.upper()}]
(0040,0007) LO [Step {name}]
(0040,0009) SH [{step_id}]
(fffe,e00d) -
(fffe,e0dd) -
(0040,1001) SH [RP{step_id[3:]}]
""".encode("latin-1")


@pytest.fixture(scope="module")
def worklists(tmp_path_factory):
    """wlmscpfs on a folder of worklist files, and the router's WorklistFolder on the same folder."""
    require("wlmscpfs")
    root = tmp_path_factory.mktemp("worklists")
    peer = WorklistSCP(root / "db")
    peer.items.mkdir(parents=True)
    dumps = root / "dumps"
    dumps.mkdir()
    for dump in sorted(DCMTK_EXAMPLES.glob("*.dump")):
        dump2dcm(dump, peer.items / (dump.stem + ".wl"))
    for name, values in OWN_ITEMS.items():
        (dumps / f"{name}.dump").write_bytes(own_dump(name, *values))
        dump2dcm(dumps / f"{name}.dump", peer.items / f"{name}.wl")
    shutil.copy(peer.items / "wklist1.wl", peer.items / "not-a-worklist.dcm")  # neither reads it
    # -dfr: files lacking attributes the standard requires are answered (the router does not refuse them)
    peer.extra = ("-dfr", "-csk")
    peer.start()
    yield peer, WorklistFolder(peer.items)
    peer.stop()


def dcmtk_find(peer: WorklistSCP, identifier: Dataset) -> list[Dataset]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", peer.port, ae_title=peer.ae_title)
    assert assoc.is_established
    try:
        found = []
        for status, response in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
            assert status is not None and status.Status in (0xFF00, 0xFF01, 0x0000), status
            if status.Status in (0xFF00, 0xFF01):
                found.append(response)
        return found
    finally:
        assoc.release()


def identifier(charset: str | None = None, **keys) -> Dataset:
    """Every return key wlmscpfs answers among the common ones, with the given matching keys."""
    top = dict(PatientName="", PatientID="", AccessionNumber="", PatientBirthDate="", PatientSex="",
               StudyInstanceUID="", RequestedProcedureID="", RequestedProcedureDescription="")
    step = dict(ScheduledStationAETitle="", ScheduledProcedureStepStartDate="", ScheduledProcedureStepStartTime="",
                Modality="", ScheduledPerformingPhysicianName="", ScheduledProcedureStepDescription="",
                ScheduledProcedureStepID="", ScheduledStationName="", ScheduledProcedureStepLocation="")
    for keyword, value in keys.items():
        (step if keyword in step else top)[keyword] = value
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    for keyword, value in step.items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def values(ds: Dataset) -> dict:
    """Keyword -> value as text (items as lists of such dicts), Specific Character Set left out."""
    out = {}
    for element in ds:
        if element.keyword == "SpecificCharacterSet":
            continue
        if element.VR == "SQ":
            out[element.keyword] = [values(item) for item in element.value]
        else:
            out[element.keyword] = "" if element.value in (None, "") else str(element.value)
    return out


def by_step(responses: list[Dataset]) -> dict[str, dict]:
    return {r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID: values(r) for r in responses}


QUERIES = {
    "universal": {},
    "date range": dict(ScheduledProcedureStepStartDate="19950101-19960430"),
    "dates from": dict(ScheduledProcedureStepStartDate="19960101-"),
    "dates until": dict(ScheduledProcedureStepStartDate="-19951231"),
    "one date": dict(ScheduledProcedureStepStartDate="20260302"),
    "times only": dict(ScheduledProcedureStepStartTime="-1000"),
    "date and time combined": dict(ScheduledProcedureStepStartDate="20260301-20260303",
                                   ScheduledProcedureStepStartTime="2200-0800"),
    "date and time combined, open": dict(ScheduledProcedureStepStartDate="20260302-",
                                         ScheduledProcedureStepStartTime="0930-"),
    "date and time combined, a morning": dict(ScheduledProcedureStepStartDate="20260301-20260303",
                                              ScheduledProcedureStepStartTime="0700-1000"),
    "date and time in other forms": dict(ScheduledProcedureStepStartDate="20260301-20260303",
                                         ScheduledProcedureStepStartTime="093000"),
    "station": dict(ScheduledStationAETitle="AB45"),
    "station among several": dict(ScheduledStationAETitle="NN77"),
    "modality": dict(Modality="CT"),
    "modality and date": dict(Modality="CT", ScheduledProcedureStepStartDate="19960101-"),
    "name wildcard": dict(PatientName="HAYDN*"),
    "name with ?": dict(PatientName="?OZART^*"),
    "name ending": dict(PatientName="*VAN"),
    "name exact": dict(PatientName="VIVALDI^ANTONIO"),
    "name, case differs": dict(PatientName="vivaldi^antonio"),
    "accession": dict(AccessionNumber="00003"),
    "patient id": dict(PatientID="P902"),
    "sex and birth date range": dict(PatientSex="O", PatientBirthDate="19600101-19800101"),
    "nothing": dict(PatientName="NOBODY*"),
    "physician wildcard": dict(ScheduledPerformingPhysicianName="DOCTOR^L*"),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_the_router_finds_and_answers_what_wlmscpfs_does(worklists, name):
    peer, folder = worklists
    query = identifier(**QUERIES[name])
    theirs = by_step(dcmtk_find(peer, query))
    ours = by_step(folder.find(query))
    assert sorted(ours) == sorted(theirs)
    for step_id in theirs:
        assert ours[step_id] == theirs[step_id], step_id
    if name == "universal":
        assert len(ours) == 14


@pytest.mark.parametrize("pattern, expected", [("MÜLLER*", {"SPS900", "SPS901"}), ("*J?RGEN", {"SPS901"}),
                                               ("MÜLLER^HANS", {"SPS900"})])
def test_names_in_latin1_match_alike(worklists, pattern, expected):
    peer, folder = worklists
    query = identifier(charset="ISO_IR 100", PatientName=pattern)
    theirs = by_step(dcmtk_find(peer, query))
    ours = by_step(folder.find(query))
    assert set(ours) == set(theirs) == expected
    for step_id in theirs:
        assert ours[step_id] == theirs[step_id]
