"""DCMTK's wlmscpfs as an upstream Modality Worklist provider: worklist files written with
dump2dcm into DIR/CALLED_AE/*.wl (with the lockfile wlmscpfs wants), served on a free port."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from helpers.peers import DCMTK_ENV, free_port, require, stop_process, wait_for_port

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


@dataclass
class WorklistProvider:
    """wlmscpfs serving the worklist items given, to calls for `ae_title`."""

    folder: Path
    items: list[dict[str, str]]
    ae_title: str = "WLM"
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()  # more wlmscpfs options, e.g. ("--sleep-during", "2")
    process: subprocess.Popen | None = None

    def start(self) -> "WorklistProvider":
        database = self.folder / "worklists" / self.ae_title
        database.mkdir(parents=True, exist_ok=True)
        (database / "lockfile").touch()
        for number, values in enumerate(self.items, 1):
            dump = self.folder / f"item{number}.dump"
            dump.write_text(ITEM.format(**values), encoding="latin-1")
            subprocess.run([require("dump2dcm"), str(dump), str(database / f"item{number}.wl")], env=DCMTK_ENV,
                           check=True, capture_output=True, timeout=60)
        self.log = open(self.folder / f"wlmscpfs-{self.port}.log", "w")
        self.process = subprocess.Popen([require("wlmscpfs"), "-dfp", str(self.folder / "worklists"), *self.extra,
                                         str(self.port)], env=DCMTK_ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.log.close()
