"""`blank pixels` in the running router: a watched folder to a folder destination. An uncompressed
CT and a JPEG baseline image arrive blanked (the JPEG one decoded, in Explicit VR Little Endian),
every pixel outside the region as it was; an instance without pixel data is quarantined with
the reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
from helpers.files import bundled
from helpers.peers import ROOT, wait_until
from pydicom.uid import ExplicitVRLittleEndian

RULES = """
rule "screen" {
  then {
    blank pixels (0, 0, DataSet.Columns, 10) with 1
    route to OUT
  }
}
"""


def test_watched_folder_to_folder_destination_blanks_pixels(router_factory, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    router = router_factory("storage: var\nprocesses: 1\nrules: main.rules\nwatch:\n  - {name: inbox, path: inbox, settle_seconds: 0.2}\n"
                            "destinations:\n  OUT: {type: folder, path: out}\n", RULES)
    sources = {name: pydicom.dcmread(bundled(name)) for name in ("CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm")}
    for name in sources:
        shutil.copy(bundled(name), inbox / name)
    shutil.copy(ROOT / "examples" / "samples" / "sr_report.dcm", inbox / "sr_report.dcm")
    out = tmp_path / "out"
    quarantine = tmp_path / "var" / "quarantine"
    wait_until(lambda: out.exists() and len(list(out.rglob("*.dcm"))) == 2, what="two blanked instances")
    wait_until(lambda: quarantine.exists() and list(quarantine.rglob("*.json")), what="the report quarantined")

    arrived = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, out.rglob("*.dcm"))}
    for name, original in sources.items():
        copy = arrived[str(original.SOPInstanceUID)]
        before, after = original.pixel_array, copy.pixel_array
        assert np.array_equal(after[10:], before[10:]), f"{name}: pixels below the region changed"
        assert (after[:10] == 1).all(), name
    assert arrived[str(sources["SC_rgb_jpeg_dcmtk.dcm"].SOPInstanceUID)].file_meta.TransferSyntaxUID == \
        ExplicitVRLittleEndian
    (why,) = list(quarantine.rglob("*.json"))
    assert "blank pixels: there is no pixel data to blank" in json.loads(why.read_text(encoding="utf-8"))["reason"]
    assert "Traceback" not in router.output()
