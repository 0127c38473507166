"""storescu -> router -> Orthanc, checked in Orthanc."""

from __future__ import annotations

from pydicom import dcmread
from pydicom.data import get_charset_files

from helpers.peers import storescu, wait_until

from helpers.files import ROOT, bundled  # noqa: F401

SAMPLES = ROOT / "examples" / "samples"


def config(port: int, orthanc) -> str:
    return f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, allowed_calling_aets: ["CT*", "MR1"]}}
destinations:
  PACS: {{type: dicom, ae_title: {orthanc.ae_title}, host: 127.0.0.1, port: {orthanc.dicom_port},
          retry: {{delay: 0.2, max_attempts: 5}}}}
"""


RULES = """
rule "prefix" {
  when Association.CallingAET == "CT1" and DataSet.PatientID matches /^[0-9]{6}$/
  then {
    set DataSet.PatientID = "H1-" + DataSet.PatientID
    set DataSet.InstitutionName = "ROUTED"
  }
}

rule "all" {
  then route to PACS
}
"""


def test_storescu_to_router_to_orthanc_with_edits(router_factory, orthanc, port):
    router_factory(config(port, orthanc), RULES, port)
    result = storescu(port, [SAMPLES / "ct_head.dcm", SAMPLES / "mr_knee.dcm"], "CT1")
    assert result.returncode == 0, result.stderr
    instances = wait_until(lambda: orthanc.instances() if orthanc.count() == 2 else None, what="two instances")
    by_id = {i["PatientID"]: i for i in instances}
    assert set(by_id) == {"H1-654321", "MR-0001"}
    assert by_id["H1-654321"]["InstitutionName"] == "ROUTED"
    assert by_id["MR-0001"]["InstitutionName"] == "TOSHIBA"  # its ID is not six digits: untouched


CHARSET_RULES = """
rule "institution" {
  then {
    set DataSet.InstitutionName = "Hôpital Genève"
    route to PACS
  }
}
"""


def test_text_set_in_any_character_set_reaches_orthanc_as_set(router_factory, orthanc, port):
    """Latin-1 text set into instances declaring ISO 2022 (Japanese, Korean), Greek or no
    character set (ASCII) must not be written as Latin-1 under that declaration: Orthanc
    would drop the accented letters ("Hpital Genve")."""
    files = [get_charset_files(name)[0] for name in ("chrH31.dcm", "chrJapMultiExplicitIR6.dcm", "chrI2.dcm",
                                                     "chrGreek.dcm", "chrFren.dcm")]
    files.append(bundled("MR_small.dcm"))
    names = {dcmread(f).SOPInstanceUID: str(dcmread(f).PatientName) for f in files}
    router_factory(config(port, orthanc), CHARSET_RULES, port)
    result = storescu(port, files, "CT1")
    assert result.returncode == 0, result.stderr
    instances = wait_until(lambda: orthanc.instances() if orthanc.count() == len(files) else None,
                           what=f"{len(files)} instances")
    for instance in instances:
        assert instance["InstitutionName"] == "Hôpital Genève", instance
        assert instance["PatientName"] == names[instance["SOPInstanceUID"]], instance  # other text intact
        # Latin-1 holds the new value: the French instance keeps its character set, the others are UTF-8.
        french = instance["PatientID"] == "SCSFREN"
        assert instance["SpecificCharacterSet"] == ("ISO_IR 100" if french else "ISO_IR 192"), instance
