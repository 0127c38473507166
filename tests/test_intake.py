"""One intake decision for the listener, the watched folders and dry-run: what is taken, what is
refused and why, on real files (pydicom's bundled ones and damaged ones generated here); and
dry-run predicting what the router does with each of pydicom's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from conftest import SAMPLES, bundled, dicom_rules, write
from damaged import bad_value_length, corrupt_deflate, deeply_nested, with_command_element, without
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rulesengine.config import load_config
from rulesengine.document import Arrival, DocumentReadError
from rulesengine.intake import RefusedAtIntake, needs_file_meta, read_instance
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

FOLDER = Arrival(source_name="inbox", source_kind="folder")
BUNDLED = Path(pydicom.__file__).parent / "data"


def bundled_files() -> list[Path]:
    """Every file pydicom ships in its test and character set folders."""
    return sorted(p for folder in ("test_files", "charset_files") for p in (BUNDLED / folder).rglob("*")
                  if p.is_file())


# ---- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, reason", [
    (lambda tmp: Path(bundled("DICOMDIR")), "a DICOMDIR (a media directory) is not an instance to route"),
    (lambda tmp: BUNDLED / "test_files" / "dicomdirtests" / "DICOMDIR-bigEnd",
     "a DICOMDIR (a media directory) is not an instance to route"),
    (lambda tmp: Path(bundled("priv_SQ.dcm")), "no SOP Class UID and no SOP Instance UID in the data set"),
    (lambda tmp: without(tmp / "x.dcm", "SOPInstanceUID"), "no SOP Instance UID in the data set"),
    (lambda tmp: without(tmp / "x.dcm", "SOPClassUID"), "no SOP Class UID in the data set"),
], ids=["DICOMDIR", "big-endian DICOMDIR", "no SOP UIDs", "no SOP Instance UID", "no SOP Class UID"])
def test_files_the_router_cannot_route_are_refused_with_the_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(RefusedAtIntake) as refused:
        read_instance(path)
    assert refused.value.reason == reason
    assert str(refused.value) == f"{path}: {reason}"
    assert len(reason) <= 64  # it goes into a C-STORE response's Error Comment whole


@pytest.mark.parametrize("make, reason", [
    (lambda tmp: Path(bundled("SC_rgb_jpeg.dcm")),
     "the file is truncated: the pixel data declares 65535 bytes, 3522 remain"),
    (lambda tmp: Path(bundled("no_meta.dcm")), "not a DICOM file (no DICM header and no SOP instance found)"),
    (lambda tmp: deeply_nested(tmp / "x.dcm"), "cannot read: sequences nested too deeply"),
    (lambda tmp: corrupt_deflate(tmp / "x.dcm"), "cannot read: Error -3 while decompressing data: invalid block type"),
], ids=["truncated JPEG", "no meta, no UIDs", "nested 1000 deep", "corrupt deflate"])
def test_files_that_cannot_be_read_are_unreadable_with_the_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(DocumentReadError) as unreadable:
        read_instance(path)
    assert not isinstance(unreadable.value, RefusedAtIntake)
    assert str(unreadable.value) == f"{path}: {reason}"


@pytest.mark.parametrize("name, syntax", [
    ("rtstruct.dcm", ImplicitVRLittleEndian), ("ExplVR_LitEndNoMeta.dcm", ExplicitVRLittleEndian),
    ("ExplVR_BigEndNoMeta.dcm", ExplicitVRBigEndian)])
def test_a_data_set_without_file_meta_that_names_its_instance_is_taken(name, syntax):
    document = read_instance(bundled(name))
    assert needs_file_meta(document)
    assert document.file_meta.TransferSyntaxUID == syntax
    assert document.get("DataSet.SOPInstanceUID") == pydicom.dcmread(bundled(name), force=True).SOPInstanceUID


# ---- the router keeps such a file as a proper DICOM file -----------------------------------------------


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "router.yaml", "storage: var\nrules: main.rules\ndestinations:\n"
                                    "  PACS: {type: folder, path: pacs}\n  ARCHIVE: {type: folder, path: archive}\n")
    write(tmp_path / "main.rules", ROUTE_AND_EDIT_A_COPY)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    rules = RulesHolder(config, journal)
    yield Pipeline(storage, journal, rules, lambda _names: None, on_accepted=lambda _id: None)
    journal.close()


ROUTE_AND_EDIT_A_COPY = """
rule "to both" {
  then {
    route to PACS
    copy to ARCHIVE {
      set DataSet.InstitutionName = "ARCHIVED"
    }
  }
}
"""


def take(pipeline: Pipeline, source) -> tuple[str, str | None]:
    """What the router does with a file in a watched folder: ("refused", reason), or the outcome
    once processed (route, quarantine) with the reason."""
    path = pipeline.storage.temp_path()
    shutil.copyfile(source, path)
    try:
        result = pipeline.intake(path, FOLDER)
    except DocumentReadError as exc:
        pipeline.storage.remove(path)
        return "refused", str(exc).replace(path + ": ", "")
    pipeline.process(result.instance_id)
    row = pipeline.journal.instance(result.instance_id)
    return row["outcome"], row["reason"]


@pytest.mark.parametrize("name", ["rtstruct.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"])
def test_an_instance_without_file_meta_reaches_destinations_as_a_dicom_file(pipeline, name):
    original = pydicom.dcmread(bundled(name), force=True)
    assert take(pipeline, bundled(name)) == ("route", None)
    for delivery in pipeline.journal.deliveries(limit=10):
        copy = pydicom.dcmread(delivery["path"])  # a Part 10 file: no force needed
        assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert copy.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        for element in original:
            if element.keyword != "InstitutionName" or delivery["destination"] == "PACS":
                assert copy[element.tag].value == element.value, (delivery["destination"], element)
        if delivery["destination"] == "ARCHIVE":
            assert copy.InstitutionName == "ARCHIVED"


# ---- dry-run predicts the router ------------------------------------------------------------------------


def generated(folder: Path) -> list[Path]:
    folder.mkdir()
    return [deeply_nested(folder / "nested.dcm"), corrupt_deflate(folder / "deflate.dcm"),
            bad_value_length(folder / "rows.dcm"), with_command_element(folder / "command.dcm"),
            without(folder / "no-uid.dcm", "SOPInstanceUID"), SAMPLES / "ct_head.dcm"]


def test_dry_run_and_the_router_decide_alike_for_every_file_pydicom_ships(pipeline, tmp_path):
    inputs = bundled_files() + generated(tmp_path / "generated")
    result = dicom_rules("dry-run", "main.rules", *inputs, "--format", "json", "--config", "router.yaml")
    assert result.stdout, result.stderr
    predicted = {}
    for line in result.stdout.splitlines():
        report = json.loads(line)
        predicted[report["file"]] = ("refused", report["error"]) if report["outcome"] is None else (
            report["outcome"], report["reason"])
    assert sorted(predicted) == sorted(map(str, inputs))

    done = {str(path): take(pipeline, path) for path in inputs}
    disagree = {path: (predicted[path], done[path]) for path in done if predicted[path] != done[path]}
    assert disagree == {}
    outcomes = {outcome for outcome, _ in done.values()}
    assert outcomes == {"route", "refused", "quarantine"}  # each kind occurs
    assert result.returncode == 1  # some inputs were refused
    assert done[str(tmp_path / "generated" / "command.dcm")][1].startswith(
        "the copy for ARCHIVE cannot be written: Command Set elements")
    assert done[str(Path(bundled("rtstruct.dcm")))] == ("route", None)
