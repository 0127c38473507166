"""Worklist items of our own for DCMTK's wlmscpfs as an upstream Modality Worklist provider:
each written with dump2dcm into the folder of the called AE title, served by peers.WorklistSCP."""

from __future__ import annotations

from pathlib import Path

from helpers.peers import WorklistSCP, dump2dcm

# One scheduled procedure step, as DCMTK's example worklist files hold them: the attributes
# wlmscpfs requires of a file (it refuses incomplete ones) with the values a test gives.
ITEM = """\
(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{AccessionNumber}]
(0010,0010) PN [{PatientName}]
(0010,0020) LO [{PatientID}]
(0010,0030) DA [19700101]
(0010,0040) CS [O]
(0020,000d) UI [{StudyInstanceUID}]
(0032,1032) PN [REFERRER]
(0032,1060) LO [{RequestedProcedureDescription}]
(0040,0100) SQ
(fffe,e000) -
(0008,0060) CS [{Modality}]
(0040,0001) AE [{ScheduledStationAETitle}]
(0040,0002) DA [{ScheduledProcedureStepStartDate}]
(0040,0003) TM [090000]
(0040,0006) PN [PERFORMER]
(0040,0007) LO [{RequestedProcedureDescription}]
(0040,0009) SH [{ScheduledProcedureStepID}]
(0040,0010) SH [STATION]
(0040,0011) SH [ROOM1]
(fffe,e00d) -
(fffe,e0dd) -
(0040,1001) SH [{RequestedProcedureID}]
(0040,1003) SH [LOW]
"""


def worklist_item(number: int, **values: str) -> dict[str, str]:
    """The values of one worklist item: numbered defaults, `values` over them."""
    return {"AccessionNumber": f"ACC{number:04d}", "PatientName": f"PATIENT^{number}", "PatientID": f"WL{number:04d}",
            "StudyInstanceUID": f"1.2.826.0.1.3680043.10.1234.{number}", "RequestedProcedureDescription": "CT HEAD",
            "Modality": "CT", "ScheduledStationAETitle": "CT1", "ScheduledProcedureStepStartDate": "20261202",
            "ScheduledProcedureStepID": f"SPS{number:04d}", "RequestedProcedureID": f"RP{number:04d}"} | values


def worklist_provider(folder: Path, items: list[dict[str, str]], *extra: str, ae_title: str = "WLM") -> WorklistSCP:
    """wlmscpfs (peers.WorklistSCP) serving the worklist items given to calls for `ae_title`,
    each written as a file with dump2dcm; `extra` are more wlmscpfs options."""
    peer = WorklistSCP(folder / "worklists", ae_title=ae_title, extra=extra)
    peer.items.mkdir(parents=True, exist_ok=True)
    for number, values in enumerate(items, 1):
        dump = folder / f"item{number}.dump"
        dump.write_text(ITEM.format(**values), encoding="latin-1")
        dump2dcm(dump, peer.items / f"item{number}.wl")
    return peer.start()
