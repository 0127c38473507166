"""`exists`, `missing`, `empty` and `len()` of the pixel data elements (and of what follows
them in the file) on an instance read without its pixel data, as the router and dry-run
read it: the same answers as for the whole file, and the pixel data still unread."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import rulesengine
from rulesengine import Document
from rulesengine.intake import read_instance

from helpers.cli import dicom_rules
from helpers.files import bundled

PATHS = ("DataSet.PixelData", "DataSet.FloatPixelData", "DataSet.DoubleFloatPixelData",
         "DataSet.DataSetTrailingPadding")

PRESENCE = """
rule "present" {
  when exists DataSet.PixelData
  then route to PRESENT
}

rule "missing" {
  when missing DataSet.PixelData and missing DataSet.FloatPixelData and missing DataSet.DoubleFloatPixelData
  then route to MISSING
}

rule "empty" {
  when empty DataSet.PixelData
  then route to EMPTY
}

rule "float" {
  when exists DataSet.FloatPixelData and not empty DataSet.FloatPixelData
  then route to FLOAT
}

rule "padded" {
  when exists DataSet.DataSetTrailingPadding
  then route to PADDED
}

rule "lengths" {
  then log "lengths " + coalesce(len(DataSet.PixelData), -1) + " " + coalesce(len(DataSet.FloatPixelData), -1)
           + " " + coalesce(len(DataSet.DataSetTrailingPadding), -1)
}
"""
DESTINATIONS = ["PRESENT", "MISSING", "EMPTY", "FLOAT", "PADDED"]


def _instance(path, syntax=ExplicitVRLittleEndian, **elements):
    """A small secondary capture instance with the elements given (by keyword)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID = "P1"
    dataset.Rows, dataset.Columns, dataset.BitsAllocated = 2, 2, 8
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.fixture(params=["CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "MR_small_bigendian.dcm",
                        "MR_small_implicit.dcm", "rtplan.dcm", "empty", "float", "double", "implicit float"])
def instance(request, tmp_path):
    """Real files: native and encapsulated pixel data, big endian, implicit VR, no pixel data
    (an RT plan); and made ones: empty pixel data, float and double float pixel data."""
    made = {
        "empty": lambda: _instance(tmp_path / "empty.dcm", PixelData=b""),
        "float": lambda: _instance(tmp_path / "float.dcm", FloatPixelData=b"\0" * 16),
        "double": lambda: _instance(tmp_path / "double.dcm", ExplicitVRBigEndian, DoubleFloatPixelData=b"\0" * 32),
        "implicit float": lambda: _instance(tmp_path / "implicit.dcm", ImplicitVRLittleEndian,
                                            FloatPixelData=b"\0" * 16, DataSetTrailingPadding=b"\0" * 6),
    }
    return made[request.param]() if request.param in made else bundled(request.param)


def whole_answers(path):
    whole = Document.read(path)
    return [whole.get(path_) for path_ in PATHS]


def test_the_header_answers_as_the_whole_file_without_reading_the_pixel_data(instance):
    header = read_instance(instance)  # as the router and dry-run read it
    expected = whole_answers(instance)
    for path, value in zip(PATHS, expected):
        got = header.get(path)
        if value is None or value == "":
            assert got == value, path
        else:
            assert got is not None and got != "" and len(got) == len(value), path
    assert not any(tag >= 0x7FE00008 for tag in header.dataset._dict)  # nothing of the tail was read


@pytest.mark.parametrize("trace", [False, True], ids=["fast", "traced"])
def test_the_rules_decide_alike_on_the_header_and_the_whole_file(instance, trace):
    ruleset = rulesengine.compile_source(PRESENCE, DESTINATIONS)
    on_header = ruleset.evaluate(read_instance(instance), trace=trace)
    on_whole = ruleset.evaluate(Document.read(instance), trace=trace)
    assert on_header.error is None, on_header.error
    assert set(on_header.destinations) == set(on_whole.destinations)
    assert [line.message for line in on_header.log] == [line.message for line in on_whole.log]


def test_what_each_file_holds():
    """The answers themselves, for three real files: a native CT with trailing padding, a
    JPEG 2000 one, an RT plan without pixel data."""
    ruleset = rulesengine.compile_source(PRESENCE, DESTINATIONS)
    answers = {}
    for name in ("CT_small.dcm", "JPEG2000.dcm", "rtplan.dcm"):
        decision = ruleset.evaluate(read_instance(bundled(name)))
        answers[name] = (sorted(decision.destinations), [line.message for line in decision.log])
    assert answers == {
        "CT_small.dcm": (["PADDED", "PRESENT"], ["lengths 32768 -1 126"]),
        "JPEG2000.dcm": (["PRESENT"], ["lengths 266 -1 -1"]),
        "rtplan.dcm": (["MISSING"], ["lengths -1 -1 -1"]),
    }


def test_a_written_copy_still_carries_the_pixel_data(tmp_path):
    source = bundled("CT_small.dcm")
    document = read_instance(source)
    assert len(document.get("DataSet.PixelData")) == 32768
    document.set("DataSet.PatientID", "EDITED")
    document.write(tmp_path / "out.dcm")
    assert pydicom.dcmread(tmp_path / "out.dcm").PixelData == pydicom.dcmread(source).PixelData


@pytest.mark.parametrize("action", ["delete DataSet.PixelData", "blank DataSet.PixelData",
                                    "delete DataSet.DataSetTrailingPadding"])
def test_an_edit_of_the_pixel_data_reads_it_first_and_is_written(action, tmp_path):
    """Deleting or blanking what read_header left in the file acts on the copy written, and
    the rules read the edited value afterwards."""
    source = bundled("CT_small.dcm")
    keyword = action.split(".")[-1]
    rules = f'rule "edit" {{\n  then {{\n    {action}\n    route to A\n  }}\n}}\n'
    decision = rulesengine.compile_source(rules, ["A"]).evaluate(read_instance(source))
    assert decision.error is None, decision.error
    document = decision.destinations["A"]
    document.write(tmp_path / "out.dcm")
    written = pydicom.dcmread(tmp_path / "out.dcm")
    if action.startswith("delete"):
        assert keyword not in written and document.get(f"DataSet.{keyword}") is None
    else:
        assert written.PixelData in (b"", None) and document.get("DataSet.PixelData") == ""
    assert written.PatientID == pydicom.dcmread(source).PatientID


def test_dry_run_sees_the_pixel_data_it_does_not_read(tmp_path):
    rules = tmp_path / "main.rules"
    rules.write_text('rule "images" {\n  when exists DataSet.PixelData and len(DataSet.PixelData) == 266\n'
                     '  then route to PACS\n}\n\nrule "no image" {\n  when missing DataSet.PixelData\n'
                     '  then route to ARCHIVE\n}\n', encoding="utf-8")
    result = dicom_rules("dry-run", rules, bundled("JPEG2000.dcm"), bundled("rtplan.dcm"))
    assert result.returncode == 0, result.stderr
    outcomes = [line.strip() for line in result.stdout.splitlines() if "outcome:" in line]
    assert outcomes == ["outcome: route to PACS", "outcome: route to ARCHIVE"], result.stdout
