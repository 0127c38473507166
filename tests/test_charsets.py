"""Character sets: text set into an instance is written so that a strict reader reads it
back, in the instance's own character set when it can hold the text, else in UTF-8 with
every other text value re-encoded; on every instance pydicom bundles that declares one."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.uid import MediaStorageDirectoryStorage

from rulesengine import Document, PathError

from helpers.files import bundled

BUNDLED = Path(bundled("CT_small.dcm")).parent
# No single character set but a Unicode one holds Latin, Greek, Cyrillic, Hebrew, Arabic,
# Thai, Korean and Japanese at once; 62 characters, within LO's 64.
FOREIGN = "Hôpital Genève Ελλάδα Москва תל אביב القاهرة ภูเก็ต 서울 東京"
UNICODE_SETS = ("ISO_IR 192", "GB18030")
LATIN = "Hôpital Genève"  # Latin-1, which pydicom takes the default repertoire (ASCII) for
CHARSET_VRS = ("SH", "LO", "ST", "LT", "UT", "PN", "UC")


def _declared(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SpecificCharacterSet"])
    return ds


def _instances_declaring_a_character_set() -> list[Path]:
    found = []
    for path in sorted(BUNDLED.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = _declared(path)
        except Exception:  # noqa: BLE001 - not a DICOM file (JSON, ICC profile, gzip...)
            continue
        meta = getattr(ds, "file_meta", None)
        if "SpecificCharacterSet" in ds and (meta is None or
                                             meta.get("MediaStorageSOPClassUID") != MediaStorageDirectoryStorage):
            found.append(path)
    return found


# Every character-set file pydicom ships, every bundled instance that declares a character
# set (DICOMDIRs are not instances), and some that declare none (the default repertoire,
# ASCII) in each transfer syntax the writer treats differently.
FILES = sorted(set(map(Path, get_charset_files("chr*.dcm"))) | set(_instances_declaring_a_character_set())) + \
    [Path(bundled(name)) for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                      "image_dfl.dcm", "rtplan.dcm")]


def _name(path: Path) -> str:
    return str(path.relative_to(path.parent.parent)) if "dicomdirtests" in path.parts else path.name


def _texts(ds, prefix: str = "") -> dict[str, str]:
    """Every text value of a character-set VR, at any depth, as pydicom decodes it."""
    texts = {}
    for elem in ds:
        where = f"{prefix}{elem.tag}"
        if elem.VR == "SQ":
            for number, item in enumerate(elem.value, 1):
                texts.update(_texts(item, f"{where}[{number}]."))
        elif elem.VR in CHARSET_VRS and not elem.is_empty:
            values = elem.value if elem.VM > 1 else [elem.value]
            texts[where] = "\\".join(_text(elem.VR, value) for value in values)
    return texts


def _text(vr: str, value) -> str:
    """A value as text; a person name without its empty trailing components and groups,
    which writers may drop (pydicom does)."""
    if vr != "PN":
        return str(value)
    return "=".join(group.rstrip("^") for group in str(value).split("=")).rstrip("=")


def _read_back(path: Path) -> dict[str, str]:
    """The texts of a written file, read with pydicom's warnings as errors: a value pydicom
    cannot decode in the declared character set fails here instead of reading as '?'."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _texts(pydicom.dcmread(path, force=True))


def _raw_utf8(path: Path) -> dict[str, str]:
    """The texts of a file that are declared UTF-8 (by the data set or their item), decoded
    strictly from their bytes."""
    def walk(ds, declared, prefix=""):
        declared = ds.get("SpecificCharacterSet") or declared
        texts = {}
        for tag in ds.keys():
            raw = ds.get_item(tag).value  # the bytes as written
            elem = ds[tag]  # the VR, also of implicit VR files
            where = f"{prefix}{elem.tag}"
            if elem.VR == "SQ":
                for number, item in enumerate(elem.value, 1):
                    texts.update(walk(item, declared, f"{where}[{number}]."))
            elif elem.VR in CHARSET_VRS and declared == "ISO_IR 192" and raw:
                text = raw.decode("utf-8").rstrip(" \0")  # strict: invalid UTF-8 raises
                if text:
                    texts[where] = "\\".join(_text(elem.VR, value) for value in text.split("\\"))
        return texts
    return walk(pydicom.dcmread(path, force=True), None)


def _original(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some bundled files declare misspelt character sets
        ds = pydicom.dcmread(path, force=True)
    return ds, _texts(ds)


def _declaration(ds):
    value = ds.get("SpecificCharacterSet")
    return list(value) if isinstance(value, (list, pydicom.multival.MultiValue)) else value


def _document(reader: str, path: Path) -> Document:
    document = getattr(Document, reader)(path)
    if document.get("DataSet.SOPInstanceUID") is None:  # empty_charset_LEI.dcm has no UIDs, a Part 10 file needs them
        document.set("DataSet.SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
        document.set("DataSet.SOPInstanceUID", "2.25.1")
    return document


INSTITUTION = "(0008,0080)"
REFERRING = "(0008,0090)"


@pytest.mark.parametrize("path", FILES, ids=_name)
@pytest.mark.parametrize("reader", ["read", "read_header"])
@pytest.mark.parametrize("value", [LATIN, FOREIGN], ids=["latin", "foreign"])
def test_text_the_character_set_cannot_hold_switches_to_utf8_and_keeps_every_text(path, reader, value, tmp_path):
    original, texts = _original(path)
    document = _document(reader, path)
    document.set("DataSet.InstitutionName", value)
    out = tmp_path / "out.dcm"
    document.write(out)

    declared = _declaration(original)
    written = pydicom.dcmread(out, force=True)
    if declared in UNICODE_SETS or (value == LATIN and declared == "ISO_IR 100"):
        assert _declaration(written) == declared  # it holds everything: nothing to change
    else:
        assert _declaration(written) == "ISO_IR 192"
    assert _read_back(out) == {**texts, INSTITUTION: value}
    if _declaration(written) == "ISO_IR 192":
        strict = _raw_utf8(out)
        assert strict == {where: text for where, text in {**texts, INSTITUTION: value}.items() if where in strict}
        assert INSTITUTION in strict
    if "PixelData" in original:
        assert written.PixelData == original.PixelData


def _fitting_value(path: Path, texts: dict[str, str]) -> str:
    """A name the file's own character set holds: its patient's name, or plain ASCII."""
    name = texts.get("(0010,0010)", "")
    return name if name and not name.isascii() and "\\" not in name else "Doe^Jane"


@pytest.mark.parametrize("path", FILES, ids=_name)
@pytest.mark.parametrize("reader", ["read", "read_header"])
def test_text_the_character_set_holds_keeps_it_and_every_other_byte(path, reader, tmp_path):
    original, texts = _original(path)
    value = _fitting_value(path, texts)
    document = _document(reader, path)
    document.set("DataSet.ReferringPhysicianName", value)
    out = tmp_path / "out.dcm"
    document.write(out)

    written = pydicom.dcmread(out, force=True)
    assert _declaration(written) == _declaration(original)
    assert _read_back(out) == {**texts, REFERRING: value}
    # Nothing else was encoded anew: the bytes of every other element are the file's own.
    original, written = pydicom.dcmread(path, force=True), pydicom.dcmread(out, force=True)  # unread
    for tag in original.keys():
        if tag != 0x00080090 and tag in written and original.get_item(tag).VR != "SQ":
            assert written.get_item(tag).value == original.get_item(tag).value, tag


CHARSET_FILE = {Path(p).name: Path(p) for p in get_charset_files("chr*.dcm")}


@pytest.mark.parametrize("reader", ["read", "read_header"])
def test_text_set_in_an_item_with_a_character_set_of_its_own(reader, tmp_path):
    """chrSQEncoding.dcm: UTF-8 at the top, ISO 2022 IR 13 and IR 87 in the item."""
    path = CHARSET_FILE["chrSQEncoding.dcm"]
    _, texts = _original(path)

    fitting = tmp_path / "fitting.dcm"
    document = getattr(Document, reader)(path)
    document.set("DataSet.RequestedProcedureCodeSequence[1].CodeMeaning", "山田 ﾔﾏﾀﾞ")
    document.write(fitting)
    item = pydicom.dcmread(fitting).RequestedProcedureCodeSequence[0]
    assert list(item.SpecificCharacterSet) == ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    assert item.get_item("CodeMeaning").value.startswith(b"\x1b$B")  # JIS X 0208, as declared
    assert _read_back(fitting) == {**texts, "(0032,1064)[1].(0008,0104)": "山田 ﾔﾏﾀﾞ"}

    foreign = tmp_path / "foreign.dcm"
    document = getattr(Document, reader)(path)
    document.set("DataSet.RequestedProcedureCodeSequence[1].CodeMeaning", "Genève")
    document.write(foreign)
    item = pydicom.dcmread(foreign).RequestedProcedureCodeSequence[0]
    assert item.SpecificCharacterSet == "ISO_IR 192"
    expected = {**texts, "(0032,1064)[1].(0008,0104)": "Genève"}
    assert _read_back(foreign) == expected == _raw_utf8(foreign)


def test_an_item_inherits_the_switch_of_the_data_set(tmp_path):
    """chrSQEncoding1.dcm declares ISO 2022 IR 13/87 once, at the top; its items inherit it."""
    path = CHARSET_FILE["chrSQEncoding1.dcm"]
    _, texts = _original(path)
    document = Document.read_header(path)
    document.set("DataSet.RequestedProcedureCodeSequence[1].CodeMeaning", "Genève")
    document.write(tmp_path / "out.dcm")
    written = pydicom.dcmread(tmp_path / "out.dcm")
    assert written.SpecificCharacterSet == "ISO_IR 192"
    assert "SpecificCharacterSet" not in written.RequestedProcedureCodeSequence[0]
    expected = {**texts, "(0032,1064)[1].(0008,0104)": "Genève"}
    assert _read_back(tmp_path / "out.dcm") == expected == _raw_utf8(tmp_path / "out.dcm")


@pytest.mark.parametrize("declared,text,holds", [
    (None, "Geneva", True),
    (None, "Genève", False),  # the default repertoire is ASCII, not Latin-1
    ("ISO_IR 6", "Genève", False),
    ("ISO_IR 100", "Genève", True),
    ("ISO_IR 100", "Ελλάδα", False),
    (["", "ISO 2022 IR 87"], "Genève", False),  # written raw, G1 undeclared: Orthanc drops it
    (["", "ISO 2022 IR 87"], "山田", True),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], "Genève", False),
    # Latin-1 is declared as an extension, but pydicom writes it without its escape sequence
    # (it takes the default repertoire for Latin-1): UTF-8 rather than bytes a reader drops.
    (["ISO 2022 IR 6", "ISO 2022 IR 100"], "Genève", False),
    (["ISO 2022 IR 100", "ISO 2022 IR 87"], "Genève 山田", True),
    (["", "ISO 2022 IR 149"], "홍길동", True),
    (["", "ISO 2022 IR 149"], "홍\r\n길동", False),  # the line end returns to ASCII; pydicom does not
    (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ 山田", True),
    ("ISO_IR 13", "山田", False),  # JIS X 0201 has no kanji, though Shift JIS has
    ("ISO_IR 192", FOREIGN, True),
    ("GB18030", FOREIGN, True),
    ("ISO_IR 999", "Genève", False),  # unknown: do not guess
])
def test_which_text_a_character_set_holds(declared, text, holds):
    from rulesengine.charsets import fits
    assert fits(text, "LO", declared) is holds


def test_values_of_default_repertoire_vrs_stay_ascii():
    document = Document.read(bundled("MR_small.dcm"))
    with pytest.raises(Exception, match="DS"):
        document.set("DataSet.SliceThickness", "１２")  # full-width digits: not a DS


@pytest.mark.parametrize("reader", ["read", "read_header"])
def test_setting_the_character_set_writes_the_text_anew_in_it(reader, tmp_path):
    """What rules read is what is written: declaring another character set encodes the text
    in it; the bytes are not relabelled (copied from the file, Latin-1 would be declared UTF-8)."""
    path = CHARSET_FILE["chrFren.dcm"]  # ISO_IR 100
    _, texts = _original(path)
    document = getattr(Document, reader)(path)
    document.set("DataSet.SpecificCharacterSet", "ISO_IR 192")
    document.write(tmp_path / "out.dcm")
    assert pydicom.dcmread(tmp_path / "out.dcm").SpecificCharacterSet == "ISO_IR 192"
    assert _read_back(tmp_path / "out.dcm") == texts == _raw_utf8(tmp_path / "out.dcm")


@pytest.mark.parametrize("reader", ["read", "read_header"])
def test_a_character_set_that_cannot_hold_the_text_is_refused(reader, tmp_path):
    document = getattr(Document, reader)(CHARSET_FILE["chrFren.dcm"])
    with pytest.raises(PathError, match=r"DataSet.SpecificCharacterSet: the default repertoire \(ASCII\) cannot "
                                        r"hold the text of PatientName"):
        document.delete("DataSet.SpecificCharacterSet")
    with pytest.raises(PathError, match="ISO_IR 126 cannot hold the text of PatientName"):
        document.set("DataSet.SpecificCharacterSet", "ISO_IR 126")  # Greek: no é
    document.set("DataSet.PatientName", "Buc^Jerome")
    document.delete("DataSet.SpecificCharacterSet")  # ASCII holds all now
    document.write(tmp_path / "out.dcm")
    written = pydicom.dcmread(tmp_path / "out.dcm")
    assert "SpecificCharacterSet" not in written and str(written.PatientName) == "Buc^Jerome"


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrGreek.dcm", "chrI2.dcm"])
def test_a_switch_logs_nothing(name, caplog, tmp_path):
    """pydicom logs a warning for text it cannot encode: the check must not make it try."""
    document = Document.read_header(CHARSET_FILE[name])
    caplog.clear()
    with caplog.at_level("DEBUG", logger="pydicom"):
        document.set("DataSet.InstitutionName", FOREIGN)
        document.set("DataSet.StudyDescription", LATIN)
        document.write(tmp_path / "out.dcm")
    assert caplog.records == []
