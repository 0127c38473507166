"""Elements after the pixel data (a private block, trailing padding) on an instance read
without its pixel data, as the router and dry-run read it: selectors, `**` walks, `keep only`
and `delete private` see them as a whole read does, the copies written hold what the rules
left of them, and the pixel data itself stays in the file unless a value of it is used."""

from __future__ import annotations

import hashlib

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import rulesengine
from rulesengine import Document, values
from rulesengine.intake import read_instance

from helpers.files import bundled

PIXELS = bytes(range(256)) * 8  # 32 x 32, 16 bits: 2048 bytes
PRIVATE_BINARY = b"\x01\x02" * 1000  # longer than what is read with the tail: left in the file
PADDING = b"\0" * 2000


def _instance(path, syntax=ExplicitVRLittleEndian, header_private=False):
    """A small secondary capture with, after its pixel data, a private block of text and
    binary data and trailing padding (a private block before it too, with `header_private`)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "P1"
    ds.PatientName = "DOE^JOHN"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if header_private:
        ds.add_new(0x00090010, "LO", "OTHER")
        ds.add_new(0x00091001, "LO", "kept")
    ds.PixelData = PIXELS
    ds.add_new(0x7FE10010, "LO", "ACME")
    ds.add_new(0x7FE11001, "LO", "secret")
    ds.add_new(0x7FE11002, "OB", PRIVATE_BINARY)
    ds.add_new(0xFFFCFFFC, "OB", PADDING)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.fixture(params=["explicit", "implicit", "big endian"])
def instance(request, tmp_path):
    syntax = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
              "big endian": ExplicitVRBigEndian}[request.param]
    return _instance(tmp_path / "tail.dcm", syntax, header_private=True)


def _rule(actions: str) -> str:
    body = "\n".join(f"    {line}" for line in actions.strip().splitlines())
    return f'rule "edit" {{\n  then {{\n{body}\n    route to A\n  }}\n}}\n'


def _elements(path) -> list[tuple[str, str, str]]:
    """What a written file holds, element by element (values by digest, to compare)."""
    ds = pydicom.dcmread(path)
    return [(str(elem.tag), elem.VR, hashlib.sha256(repr(elem.value).encode()).hexdigest()[:16]) for elem in ds]


def _tags(path) -> list[int]:
    return [int(elem.tag) for elem in pydicom.dcmread(path)]


def _lazy_and_whole(source, rules, tmp_path):
    """The decision on the header (as the router reads it) and on the whole file, and the
    copies each wrote."""
    ruleset = rulesengine.compile_source(rules, ["A"])
    results = []
    for name, read in (("header", read_instance), ("whole", Document.read)):
        decision = ruleset.evaluate(read(source))
        assert decision.error is None, decision.error
        target = tmp_path / f"{name}.dcm"
        decision.destinations["A"].write(target)
        results.append((decision, target))
    return results


EDITS = {
    "delete a selector": 'delete DataSet.*[private]',
    "delete at any depth": 'delete DataSet.**.*[Creator == "ACME"]',
    "blank by group": 'blank DataSet.**.*[Group == "FFFC"]',
    "set through a selector": 'set DataSet.*[Creator == "ACME" and VR == "LO"] = "X"',
    "delete private": 'delete private',
    "delete a private block": 'delete private "ACME"',
    "delete private except": 'delete private except ["ACME"]',
    "keep only": 'keep only DataSet.SOPClassUID, DataSet.SOPInstanceUID, DataSet.PatientID',
    "keep only a block": 'keep only DataSet.SOPClassUID, DataSet.SOPInstanceUID, DataSet.(7FE1,"ACME",xx)',
    "for each": 'for each e in DataSet.*[VR == "LO" and private] {\n  set e = upper(e)\n}',
    "delete each": 'for each e in DataSet.**.*[Group == "7FE1"] {\n  delete e\n}',
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_an_edit_through_a_walk_writes_what_a_whole_read_writes(instance, edit, tmp_path):
    (_, on_header), (_, on_whole) = _lazy_and_whole(instance, _rule(EDITS[edit]), tmp_path)
    assert _elements(on_header) == _elements(on_whole)


def test_keep_only_removes_what_follows_the_pixel_data_and_keeps_the_pixel_data(instance, tmp_path):
    (decision, on_header), _ = _lazy_and_whole(instance, _rule(EDITS["keep only"]), tmp_path)
    assert _tags(on_header) == [0x00080016, 0x00080018, 0x00100020, 0x00280002, 0x00280004, 0x00280010,
                                0x00280011, 0x00280100, 0x00280101, 0x00280102, 0x00280103, 0x7FE00010]
    assert pydicom.dcmread(on_header).PixelData == PIXELS
    assert [edit.path for edit in decision.edits] == ["DataSet elements not kept"]


def test_delete_private_removes_a_block_after_the_pixel_data(tmp_path):
    source = _instance(tmp_path / "in.dcm")
    (_, on_header), _ = _lazy_and_whole(source, _rule("delete private"), tmp_path)
    written = pydicom.dcmread(on_header)
    assert not [elem for elem in written if elem.tag.is_private]
    assert written.PixelData == PIXELS and written[0xFFFCFFFC].value == PADDING


@pytest.mark.parametrize("trace", [False, True], ids=["fast", "traced"])
def test_conditions_and_logs_over_walks_read_alike(instance, trace):
    rules = """
rule "see the tail" {
  then {
    for each e in DataSet.*[private] {
      log "private " + len(e)
    }
    for each e in DataSet.*[Group == "7FE0"] {
      log "pixels " + hash(e) + " " + len(e)
    }
    for each e in DataSet.**.*[Tag == "(7FE1,1001)" and Creator == "ACME"] {
      log "text " + e
    }
    if any e in DataSet.**.*[Group == "FFFC"]: exists e {
      log "padded"
    }
    if all e in DataSet.*[Group == "7FE1"]: exists e {
      log "all private there"
    }
    route to A
  }
}
"""
    ruleset = rulesengine.compile_source(rules, ["A"])
    on_header = ruleset.evaluate(read_instance(instance), trace=trace)
    on_whole = ruleset.evaluate(Document.read(instance), trace=trace)
    assert on_header.error is None, on_header.error
    logs = [line.message for line in on_header.log]
    assert logs == [line.message for line in on_whole.log]
    assert "padded" in logs and "all private there" in logs
    assert [line for line in logs if line.startswith("text ")] in (["text secret"], ["text b'secret'"])  # UN: implicit
    assert "private 2000" in logs


def test_the_pixel_data_stays_in_the_file_while_nothing_reads_its_value(tmp_path):
    source = _instance(tmp_path / "in.dcm")
    document = read_instance(source)
    rules = _rule('delete DataSet.*[private]\nlog "length " + len(DataSet.PixelData)')
    decision = rulesengine.compile_source(rules, ["A"]).evaluate(document)
    assert decision.error is None, decision.error
    pixel_data = document.dataset._dict[0x7FE00010]
    assert isinstance(pixel_data.value, values.UnreadBytes) and pixel_data.value._read is None
    assert [line.message for line in decision.log] == ["length 2048"]
    decision.destinations["A"].write(tmp_path / "out.dcm")
    assert pydicom.dcmread(tmp_path / "out.dcm").PixelData == PIXELS


def test_a_value_longer_than_the_bound_quarantines_with_the_reason(tmp_path, monkeypatch):
    """A value of the pixel data is read into memory up to a bound (as the whole file would
    hold it); past it the instance is quarantined, saying why, and never read whole."""
    monkeypatch.setattr(values, "MAX_UNREAD_VALUE_BYTES", 1000)
    source = _instance(tmp_path / "in.dcm")
    rules = _rule('for each e in DataSet.*[Group == "7FE0"] {\n  log hash(e)\n}')
    ruleset = rulesengine.compile_source(rules, ["A"])
    decision = ruleset.evaluate(read_instance(source))
    assert decision.outcome == "quarantine"
    assert "DataSet.PixelData: a value of 2048 bytes after the header is not read into memory (at most 1000 bytes " \
        "are)" in decision.reason
    assert "exists, missing, empty and len() answer without reading it" in decision.reason
    # Its length still answers.
    lengths = rulesengine.compile_source(_rule('for each e in DataSet.*[Group == "7FE0"] {\n  log len(e)\n}'),
                                         ["A"]).evaluate(read_instance(source))
    assert lengths.error is None and [line.message for line in lengths.log] == ["2048"]


def test_encapsulated_pixel_data_followed_by_a_private_block(tmp_path):
    ds = pydicom.dcmread(bundled("JPEG2000.dcm"))
    ds.add_new(0x7FE10010, "LO", "ACME")
    ds.add_new(0x7FE11001, "OB", PRIVATE_BINARY)
    source = tmp_path / "j2k.dcm"
    ds.save_as(source)
    rules = _rule('for each e in DataSet.*[Group == "7FE0"] {\n  log hash(e) + " " + len(e)\n}\n'
                  'delete DataSet.*[private]')
    (on_header_decision, on_header), (on_whole_decision, on_whole) = _lazy_and_whole(str(source), rules, tmp_path)
    assert [line.message for line in on_header_decision.log] == [line.message for line in on_whole_decision.log]
    assert _elements(on_header) == _elements(on_whole)
    assert not [elem for elem in pydicom.dcmread(on_header) if elem.tag.is_private]


def test_a_sequence_after_the_pixel_data_is_walked(tmp_path):
    meta_source = _instance(tmp_path / "base.dcm")
    ds = pydicom.dcmread(meta_source)
    item = Dataset()
    item.PatientID = "INNER"
    ds.add_new(0x7FE11003, "SQ", [item])
    ds.save_as(tmp_path / "seq.dcm")
    source = str(tmp_path / "seq.dcm")
    rules = _rule('if any v in DataSet.**.PatientID: v == "INNER" {\n  log "inner seen"\n}\n'
                  'set DataSet.**.PatientID = "ANON"')
    (decision, on_header), (whole_decision, on_whole) = _lazy_and_whole(source, rules, tmp_path)
    assert [line.message for line in decision.log] == [line.message for line in whole_decision.log] \
        == ["inner seen"]
    assert _elements(on_header) == _elements(on_whole)
    assert pydicom.dcmread(on_header)[0x7FE11003].value[0].PatientID == "ANON"


@pytest.mark.parametrize("action", ["delete DataSet.PixelData", "blank DataSet.PixelData",
                                    "delete DataSet.DataSetTrailingPadding", "blank DataSet.DataSetTrailingPadding"])
def test_an_edit_by_path_of_what_follows_the_header_reads_no_pixel_data(action, tmp_path):
    source = _instance(tmp_path / "in.dcm")
    document = read_instance(source)
    decision = rulesengine.compile_source(_rule(action), ["A"]).evaluate(document)
    assert decision.error is None, decision.error
    left = [elem.value for elem in document.dataset._dict.values() if isinstance(elem.value, values.UnreadBytes)]
    assert left and all(value._read is None for value in left)
    (_, on_header), (_, on_whole) = _lazy_and_whole(source, _rule(action), tmp_path)
    assert _elements(on_header) == _elements(on_whole)


def test_blank_pixels_after_a_walk_reads_the_pixel_data_left_in_the_file(tmp_path):
    source = _instance(tmp_path / "in.dcm")
    rules = _rule('delete DataSet.*[private]\nblank pixels (0, 0, 4, 4)')
    (_, on_header), (_, on_whole) = _lazy_and_whole(source, rules, tmp_path)
    assert _elements(on_header) == _elements(on_whole)
    assert pydicom.dcmread(on_header).PixelData != PIXELS


@pytest.mark.parametrize("walk", ['delete DataSet.**.*[Group == "FFFC"]\n', ""], ids=["after a walk", "alone"])
def test_a_character_set_change_keeps_what_follows_the_header(walk, tmp_path):
    """A switch to UTF-8 recodes the text after the pixel data too; the pixel data is copied."""
    source = _instance(tmp_path / "in.dcm")
    rules = _rule(walk + 'set DataSet.PatientName = "Ærøskøbing^Å"')
    (_, on_header), (_, on_whole) = _lazy_and_whole(source, rules, tmp_path)
    assert _elements(on_header) == _elements(on_whole)
    written = pydicom.dcmread(on_header)
    assert written.PatientName == "Ærøskøbing^Å" and written.PixelData == PIXELS


def _with_long_text(tmp_path):
    ds = pydicom.dcmread(_instance(tmp_path / "base.dcm"))
    ds.add_new(0x7FE11004, "UT", "long text " * 300)  # 3000 bytes: read alone, after the pixel data
    ds.save_as(tmp_path / "text.dcm")
    return str(tmp_path / "text.dcm")


def test_long_text_after_the_pixel_data_is_read(tmp_path):
    source = _with_long_text(tmp_path)
    rules = _rule('for each e in DataSet.*[VR == "UT"] {\n  log "text " + len(e) + " " + substr(e, 1, 9)\n}\n'
                  'set DataSet.*[VR == "UT"] = "short"')
    (decision, on_header), (whole_decision, on_whole) = _lazy_and_whole(source, rules, tmp_path)
    assert [line.message for line in decision.log] == [line.message for line in whole_decision.log] \
        == ["text 2999 long text"]  # its trailing space is padding
    assert _elements(on_header) == _elements(on_whole)


def test_text_after_the_pixel_data_longer_than_the_bound_quarantines(tmp_path, monkeypatch):
    monkeypatch.setattr(values, "MAX_UNREAD_VALUE_BYTES", 2000)
    source = _with_long_text(tmp_path)
    decision = rulesengine.compile_source(_rule("delete private"), ["A"]).evaluate(read_instance(source))
    assert decision.outcome == "quarantine"
    assert "(7FE1,1004) after the pixel data holds 3000 bytes of UT: more than the 2000 bytes read into memory" \
        in decision.reason


def test_a_walk_over_a_tail_cut_short_quarantines_with_the_reason(tmp_path):
    """The router refuses such a file on arrival (its well-formedness check); a document read
    from it directly still never writes the cut element as if whole."""
    source = _instance(tmp_path / "in.dcm")
    with open(source, "r+b") as fh:
        fh.truncate(len(open(source, "rb").read()) - 500)  # within the trailing padding
    document = Document.read_header(source)
    decision = rulesengine.compile_source(_rule("delete private"), ["A"]).evaluate(document)
    assert decision.outcome == "quarantine"
    assert "the file is truncated: (FFFC,FFFC) declares 2000 bytes, 1500 remain" in decision.reason


@pytest.mark.parametrize("path", ['DataSet.PatientID', 'DataSet.(0009,"OTHER",01)', 'DataSet.(0009,xx01)',
                                  'DataSet.OtherPatientIDsSequence[1].PatientID'])
def test_paths_before_the_pixel_data_read_nothing_after_it(path, tmp_path):
    document = read_instance(_instance(tmp_path / "in.dcm", header_private=True))
    edit = f"blank {path}" if "xx" in path else f'set {path} = "X"'  # a mask is only deleted or blanked
    decision = rulesengine.compile_source(_rule(f'log "seen " + {path}\n{edit}'), ["A"]).evaluate(document)
    assert decision.error is None, decision.error
    assert document.tail is not None and not any(tag >= 0x7FE00008 for tag in document.dataset._dict)


@pytest.mark.parametrize("path", ['DataSet.(7FE1,"ACME",01)', 'DataSet.(7FE1,xx01)', 'DataSet.**.PatientID'])
def test_paths_that_may_reach_after_the_pixel_data_see_it(path, tmp_path):
    source = _instance(tmp_path / "in.dcm")
    rules = _rule(f'if any v in {path}: exists v {{\n  log "seen"\n}}') if "**" in path else \
        _rule(f'log "seen " + {path}')
    (decision, _), (whole_decision, _) = _lazy_and_whole(source, rules, tmp_path)
    assert [line.message for line in decision.log] == [line.message for line in whole_decision.log]
