"""The comparison the matrix relies on finds what it must, and allows only what is documented."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .compare import can_hold, differences


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def write(ds: pydicom.Dataset, path: Path, syntax: str = ExplicitVRLittleEndian,
          file_meta_as_read: bool = False) -> Path:
    """`ds` as a destination would store it: its file meta naming its data set's SOP class and
    instance (as the router sends it), or, with `file_meta_as_read`, whatever its file meta said."""
    ds.file_meta.TransferSyntaxUID = syntax
    if not file_meta_as_read:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.preamble = b"\0" * 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # force_encoding: pydicom would refuse to write a big-endian data set as little endian
        pydicom.dcmwrite(path, ds, force_encoding=True, implicit_vr=syntax == ImplicitVRLittleEndian,
                         little_endian=True)
    return path


def test_a_copy_as_written_again_is_identical(tmp_path):
    source = bundled("CT_small.dcm")
    assert differences(source, write(read(source), tmp_path / "copy.dcm")) == []


def test_a_copy_whose_file_meta_names_another_instance_is_a_difference(tmp_path):
    """As DCMTK's storescp stores a C-STORE sent with another instance's UIDs than its data set's."""
    source = Path(get_charset_files("chrJapMulti.dcm")[0])  # its own file meta names another instance
    ds = read(source)
    assert differences(source, write(read(source), tmp_path / "as-is.dcm", file_meta_as_read=True)) == [
        "the copy's file meta names MediaStorageSOPInstanceUID "
        f"{ds.file_meta.MediaStorageSOPInstanceUID}, its data set SOPInstanceUID {ds.SOPInstanceUID}"]
    assert differences(source, write(ds, tmp_path / "mended.dcm")) == []


def test_a_changed_value_a_missing_and_an_added_element_are_named(tmp_path):
    source = bundled("CT_small.dcm")
    ds = read(source)
    ds.PatientName = "SOMEONE^ELSE"
    del ds.StudyDescription
    assert "PatientComments" not in ds
    ds.PatientComments = "added"
    found = differences(source, write(ds, tmp_path / "copy.dcm"))
    assert found == ["(0008,1030) StudyDescription: missing from the copy",
                     "(0010,0010) PatientName: 'CompressedSamples^CT1' became 'SOMEONE^ELSE'",
                     "(0010,4000) PatientComments: added in the copy ('added')"]


def test_big_endian_converted_value_by_value_is_identical_and_unswapped_pixels_are_not(tmp_path):
    source = bundled("MR_small_bigendian.dcm")
    ds = read(source)
    raw = ds.PixelData
    naive = write(read(source), tmp_path / "naive.dcm")  # pydicom swaps numbers, not the OW bytes
    found = differences(source, naive)
    assert len(found) == 1 and found[0].startswith("(7FE0,0010) PixelData: bytes differ from offset 0"), found
    ds.PixelData = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    assert differences(source, write(ds, tmp_path / "swapped.dcm")) == []


def test_a_private_vr_lost_on_an_implicit_hop_is_named(tmp_path):
    ds = read(bundled("CT_small.dcm"))
    block = ds.private_block(0x0029, "NO DICTIONARY KNOWS ME", create=True)
    block.add_new(0x01, "LO", "private text")
    tag = block.get_tag(0x01)
    source = write(ds, tmp_path / "explicit.dcm")
    found = differences(source, write(read(source), tmp_path / "implicit.dcm", ImplicitVRLittleEndian))
    assert found == [f"({tag >> 16:04X},{tag & 0xFFFF:04X}): VR LO became UN"]


def test_a_private_vr_of_an_implicit_source_may_change(tmp_path):
    source = bundled("MR_small_implicit.dcm")
    assert differences(source, write(read(source), tmp_path / "explicit.dcm")) == []


def test_decompressed_pixel_data_is_named(tmp_path):
    source = bundled("MR_small_RLE.dcm")
    uncompressed = read(bundled("MR_small.dcm"))
    found = differences(source, write(uncompressed, tmp_path / "decompressed.dcm"))
    assert found[0].startswith("transfer syntax changed from RLE Lossless (1.2.840.10008.1.2.5) to Explicit VR "
                               "Little Endian (1.2.840.10008.1.2.1): the pixel data was decompressed"), found


def test_an_edit_must_be_in_bytes_the_character_set_holds(tmp_path):
    source = Path([p for p in get_charset_files() if p.endswith("chrJapMulti.dcm")][0])
    edits = {"InstitutionName": "Hôpital Genève"}
    latin = read(source)
    latin.InstitutionName = "Hôpital Genève"  # written as pydicom's Latin-1 fallback, character set unchanged
    found = differences(source, write(latin, tmp_path / "latin.dcm"), edits)
    assert found == ["(0008,0080) InstitutionName: 'Hôpital Genève' cannot be written in the copy's character "
                     "set ['', 'ISO 2022 IR 87']: the character set should have become 'ISO_IR 192'"]
    utf8 = read(source)
    for elem in utf8.iterall():  # every text value decoded, then all written again in UTF-8
        elem.value
    utf8.SpecificCharacterSet = "ISO_IR 192"
    utf8.InstitutionName = "Hôpital Genève"
    assert differences(source, write(utf8, tmp_path / "utf8.dcm"), edits) == []


def test_the_default_repertoire_is_ascii():
    assert can_hold(None, "HOSPITAL") and not can_hold(None, "Hôpital")
    assert can_hold("ISO_IR 100", "Hôpital Genève") and not can_hold("ISO_IR 144", "Hôpital")
    assert can_hold(["", "ISO 2022 IR 87"], "山田") and not can_hold(["", "ISO 2022 IR 87"], "ô")
