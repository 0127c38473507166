"""The conformance corpus: every file pydicom bundles, and what the router must do with each.

The corpus is every regular file `pydicom.data.get_testdata_files()` and
`get_charset_files()` return (images in every transfer syntax, big endian, deflated,
character sets, private tags, files without file meta, DICOMDIRs and the CD layout they
index, and files that are not DICOM at all), and a few generated here for what pydicom
does not ship (a private SOP class). Names are relative to pydicom's `test_files`
folder; the character-set files keep their `charset_files/` prefix, generated ones have
`generated/`.

`EXPECTED` says, for every file, what every intake must do with it: deliver it to every
destination with everything the rules did not touch identical, or refuse it at intake
with a reason matching a pattern. `SENDER_SKIPS` lists what DCMTK's senders will not
send at all (they never reach the router), `SENDER_MANGLES` what they send otherwise
than the file has it (the router must answer a failure). `ISSUE_ITEMS` names the numbered defects of
issue 6 a failure of that file points at.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_charset_files, get_testdata_files

TEST_FILES = Path(get_testdata_files("CT_small.dcm")[0]).parent
CHARSET_FILES = Path(get_charset_files("chrX1.dcm")[0]).parent


@dataclass(frozen=True)
class Expect:
    refused: str | None = None  # None: delivered; else a regular expression the reason must match
    items: tuple[int, ...] = ()  # the numbered defects of issue 6 this file exercises

    @property
    def delivered(self) -> bool:
        return self.refused is None

    def describe(self) -> str:
        return "delivered" if self.delivered else f"refused: /{self.refused}/"


def delivered(*items: int) -> Expect:
    return Expect(None, items)


def refused(reason: str, *items: int) -> Expect:
    return Expect(reason, items)


# Reasons, as patterns (case-insensitive): the wording is the router's, the meaning is fixed here.
NOT_DICOM = r"not (a )?DICOM"
NO_UIDS = r"SOP ?(Class|Instance) ?UID"
# A DICOMDIR is not an instance; its data set has no SOP Class or Instance UID either.
DICOMDIR = r"DICOMDIR|media storage directory|" + NO_UIDS
TRUNCATED = r"truncated|cut short|premature end|ends before"
# SC_rgb_jpeg.dcm declares JPEG Baseline (explicit VR) and is encoded in implicit VR: pydicom
# guesses its way through, DCMTK cannot, and its pixel data item lengths do not add up.
MISENCODED = TRUNCATED + r"|transfer syntax|implicit|explicit|encod"

# An image of the CD layout under dicomdirtests/ (indexed by its DICOMDIR): an ordinary instance.
CD_IMAGE = delivered(8)

EXPECTED: dict[str, Expect] = {
    # ---- character sets: delivered unchanged; the edited variant writes non-Latin text into each (5)
    "charset_files/FileInfo.txt": refused(NOT_DICOM, 8, 23, 24),
    "charset_files/chrArab.dcm": delivered(5),
    "charset_files/chrFren.dcm": delivered(5),
    "charset_files/chrFrenMulti.dcm": delivered(5),
    "charset_files/chrGerm.dcm": delivered(5),
    "charset_files/chrGreek.dcm": delivered(5),
    "charset_files/chrH31.dcm": delivered(5),
    "charset_files/chrH32.dcm": delivered(5),
    "charset_files/chrHbrw.dcm": delivered(5),
    "charset_files/chrI2.dcm": delivered(5),
    "charset_files/chrJapMulti.dcm": delivered(5),
    "charset_files/chrJapMultiExplicitIR6.dcm": delivered(5),
    "charset_files/chrKoreanMulti.dcm": delivered(5),
    "charset_files/chrRuss.dcm": delivered(5),
    # The data sets of these two have no SOP Class or Instance UID (only their file meta has).
    "charset_files/chrSQEncoding.dcm": refused(NO_UIDS, 9),
    "charset_files/chrSQEncoding1.dcm": refused(NO_UIDS, 9),
    "charset_files/chrX1.dcm": delivered(5),
    "charset_files/chrX2.dcm": delivered(5),
    # ---- compressed images: delivered as compressed, never decompressed (3)
    "693_J2KI.dcm": delivered(3),
    "CT_small.dcm": delivered(3),
    "ExplVR_BigEnd.dcm": delivered(1),
    "ExplVR_BigEndNoMeta.dcm": delivered(1, 24),  # big endian without file meta
    "ExplVR_LitEndNoMeta.dcm": delivered(24),  # a data set without file meta, with its UIDs
    "GDCMJ2K_TextGBR.dcm": delivered(3),
    "J2K_pixelrep_mismatch.dcm": delivered(3, 5),  # ISO 2022 IR 13 / IR 87
    "JPEG-lossy.dcm": delivered(3),
    "JPEG2000-embedded-sequence-delimiter.dcm": delivered(3),
    "JPEG2000.dcm": delivered(3),
    "JPEGLSNearLossless_08.dcm": delivered(3),
    "JPEGLSNearLossless_16.dcm": delivered(3),
    "JPGExtended.dcm": delivered(3),
    "MR_small.dcm": delivered(3),
    "MR_small_RLE.dcm": delivered(3),
    "MR_small_bigendian.dcm": delivered(1),
    "MR_small_expb.dcm": delivered(1),
    "MR_small_implicit.dcm": delivered(3),
    "MR_small_jp2klossless.dcm": delivered(3),
    "MR_small_jpeg_ls_lossless.dcm": delivered(3),
    "MR_small_padded.dcm": delivered(3),
    "MR_truncated.dcm": refused(TRUNCATED, 23, 24),  # the pixel data is cut short
    "README.txt": refused(NOT_DICOM, 8, 23, 24),
    "SC_jpeg_no_color_transform.dcm": delivered(3),
    "SC_jpeg_no_color_transform_2.dcm": delivered(3),
    "SC_rgb_dcmtk_+eb+cr.dcm": delivered(3),
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": delivered(3),
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": delivered(3),
    "SC_rgb_dcmtk_+eb+cy+np.dcm": delivered(3),
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": delivered(3),
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": delivered(3),
    "SC_rgb_gdcm_KY.dcm": delivered(3),
    "SC_rgb_jls_lossy_line.dcm": delivered(3),
    "SC_rgb_jls_lossy_sample.dcm": delivered(3),
    "SC_rgb_jpeg.dcm": refused(MISENCODED, 23, 24),
    "SC_rgb_jpeg_app14_dcmd.dcm": delivered(3),
    "SC_rgb_jpeg_dcmd.dcm": delivered(3),
    "SC_rgb_jpeg_dcmtk.dcm": delivered(3),
    "SC_rgb_jpeg_gdcm.dcm": delivered(3),
    "SC_rgb_jpeg_lossy_gdcm.dcm": delivered(3),
    "SC_rgb_rle.dcm": delivered(3),
    "SC_rgb_rle_16bit.dcm": delivered(3),
    "SC_rgb_rle_16bit_2frame.dcm": delivered(3),
    "SC_rgb_rle_2frame.dcm": delivered(3),
    "SC_rgb_rle_32bit.dcm": delivered(3),
    "SC_rgb_rle_32bit_2frame.dcm": delivered(3),
    "SC_rgb_small_odd.dcm": delivered(3),
    "SC_rgb_small_odd_big_endian.dcm": delivered(1),
    "SC_rgb_small_odd_jpeg.dcm": delivered(3),
    "SC_ybr_full_422_uncompressed.dcm": delivered(3),
    "UN_sequence.dcm": refused(NO_UIDS, 9),  # one private UN sequence, nothing else
    "badVR.dcm": delivered(3),
    "crayons.icc": refused(NOT_DICOM, 8, 23, 24),
    # ---- a CD: DICOMDIR files are not instances (9); the images they index are (8: subfolders)
    **{f"dicomdirtests/{name}": CD_IMAGE for name in (
        "77654033/CR1/6154", "77654033/CR2/6247", "77654033/CR3/6278", "77654033/CT2/17106",
        "77654033/CT2/17136", "77654033/CT2/17166", "77654033/CT2/17196", "98892001/CT2N/6293",
        "98892001/CT2N/6924", "98892001/CT5N/2062", "98892001/CT5N/2392", "98892001/CT5N/2693",
        "98892001/CT5N/3023", "98892001/CT5N/3353", "98892003/MR1/15820", "98892003/MR1/4919",
        "98892003/MR1/5641", "98892003/MR2/15970", "98892003/MR2/4950", "98892003/MR2/4981",
        "98892003/MR2/5011", "98892003/MR2/6273", "98892003/MR2/6605", "98892003/MR2/6935",
        "98892003/MR700/4467", "98892003/MR700/4528", "98892003/MR700/4558", "98892003/MR700/4588",
        "98892003/MR700/4618", "98892003/MR700/4648", "98892003/MR700/4678")},
    "dicomdirtests/DICOMDIR": refused(DICOMDIR, 9),
    "dicomdirtests/DICOMDIR-bigEnd": refused(DICOMDIR, 9),
    "dicomdirtests/DICOMDIR-empty.dcm": refused(DICOMDIR, 9),
    "dicomdirtests/DICOMDIR-implicit": refused(DICOMDIR, 9),
    "dicomdirtests/DICOMDIR-nooffset": refused(DICOMDIR, 9),
    "dicomdirtests/DICOMDIR-nopatient": refused(DICOMDIR, 9),
    "dicomdirtests/DICOMDIR-reordered": refused(DICOMDIR, 9),
    "dicomdirtests/README.txt": refused(NOT_DICOM, 8, 23, 24),
    "dicomdirtests/TINY_ALPHA/DICOMDIR": refused(DICOMDIR, 9),
    **{f"dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM0000{suffix}": CD_IMAGE
       for suffix in [f"{n:02d}" for n in range(10)] + [f"0{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
       + [f"{n}" for n in range(10, 20)] + ["1A", "1B", "1C", "1D"]},
    "dicomdirtests/TINY_ALPHA/README": refused(NOT_DICOM, 8, 23, 24),
    "empty_charset_LEI.dcm": refused(NO_UIDS, 9),
    "examples_jpeg2k.dcm": delivered(3),
    "examples_overlay.dcm": delivered(3),
    "examples_palette.dcm": delivered(3),
    "examples_rgb_color.dcm": delivered(3),
    "examples_ybr_color.dcm": delivered(3),
    "image_dfl.dcm": delivered(2),  # deflated: inflated for a peer that did not accept deflate
    "liver_1frame.dcm": delivered(3),
    "liver_expb_1frame.dcm": delivered(1),
    "meta_missing_tsyntax.dcm": refused(NO_UIDS, 9),
    "nested_priv_SQ.dcm": refused(NO_UIDS, 9),
    # CT_small.dcm without its file meta, and in Explicit VR Big Endian: neither pydicom nor
    # DCMTK can tell its encoding, so it reads as garbage.
    "no_meta.dcm": refused(NOT_DICOM, 23, 24),
    "no_meta_group_length.dcm": refused(NO_UIDS, 9),
    "priv_SQ.dcm": refused(NO_UIDS, 9),
    "reportsi.dcm": delivered(3),
    "reportsi_with_empty_number_tags.dcm": delivered(3),
    "rtdose.dcm": delivered(3),
    "rtdose_1frame.dcm": delivered(3),
    "rtdose_expb.dcm": delivered(1),
    "rtdose_expb_1frame.dcm": delivered(1),
    "rtdose_rle.dcm": delivered(3),
    "rtdose_rle_1frame.dcm": delivered(3),
    "rtplan.dcm": delivered(3),
    "rtplan.dump": refused(NOT_DICOM, 8, 23, 24),
    "rtplan_truncated.dcm": refused(TRUNCATED, 23, 24),
    "rtstruct.dcm": delivered(24),  # implicit VR, without file meta
    "rtstruct.dump": refused(NOT_DICOM, 8, 23, 24),
    "test-SR.dcm": delivered(3),
    "test1.json": refused(NOT_DICOM, 8, 23, 24),
    "test_PN.json": refused(NOT_DICOM, 8, 23, 24),
    "waveform_ecg.dcm": delivered(3),
    "zipMR.gz": refused(NOT_DICOM, 8, 23, 24),
}

# What DCMTK's senders will not send, by file: the pattern their own output matches. These
# files never reach the router through that sender; every other file does.
_STORESCU_CANNOT_READ = r"No SOP Class or Instance UID in file|Bad DICOM file"
_DCMSEND_NO_META = r"File meta information header missing"
_DCMSEND_NO_SOP_CLASS = r"Invalid SOP Class UID"
_DCMSEND_NOT_SENT = r"dcmsend did not send it"
SENDER_SKIPS: dict[str, dict[str, str]] = {
    "storescu": {
        **{name: _STORESCU_CANNOT_READ for name, expect in EXPECTED.items() if not expect.delivered},
        # DCMTK parses their RLE pixel data as native OW of odd length and loses the rest
        "rtdose_rle.dcm": _STORESCU_CANNOT_READ,
        "rtdose_rle_1frame.dcm": _STORESCU_CANNOT_READ,
    },
    # dcmsend reads Part 10 files only, sends what has a SOP class in its file meta, and gives
    # up on a data set it cannot parse or that lacks its own UIDs.
    "dcmsend": {
        **{name: _DCMSEND_NO_META for name in (
            "charset_files/FileInfo.txt", "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "README.txt",
            "crayons.icc", "dicomdirtests/README.txt", "dicomdirtests/TINY_ALPHA/README", "no_meta.dcm",
            "rtplan.dump", "rtstruct.dcm", "rtstruct.dump", "test1.json", "test_PN.json", "zipMR.gz")},
        **{name: _DCMSEND_NO_SOP_CLASS for name, expect in EXPECTED.items() if expect.refused == DICOMDIR},
        **{name: _DCMSEND_NO_SOP_CLASS for name in (
            "empty_charset_LEI.dcm", "meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm")},
        **{name: _DCMSEND_NOT_SENT for name in (
            "charset_files/chrSQEncoding.dcm", "charset_files/chrSQEncoding1.dcm", "UN_sequence.dcm",
            "no_meta_group_length.dcm", "priv_SQ.dcm", "MR_truncated.dcm", "rtplan_truncated.dcm",
            "SC_rgb_jpeg.dcm")},
    },
}

# What a DCMTK sender sends otherwise than the file has it: sender -> {file: a pattern of the
# failure status the router must answer}. DCMTK parses the RLE pixel data of rtdose_rle*.dcm as
# native OW of odd length and loses the rest; dcmsend then sends a C-STORE whose SOP Class UID
# is the '31' it read there, in the RT Dose presentation context. No service of the association
# serves that class: the router answers 0x0122 (pynetdicom alone would abort the association).
SENDER_MANGLES: dict[str, dict[str, str]] = {
    "dcmsend": {name: r"0x0122" for name in ("rtdose_rle.dcm", "rtdose_rle_1frame.dcm")},
}

# What a destination itself refuses, whoever sends it: (file, destination) -> a pattern of the
# error the router records for that delivery. Orthanc stores nothing without Study and Series
# Instance UIDs ("required tags ... are missing"), and parses RLE pixel data of odd length as
# DCMTK does (see SENDER_SKIPS).
PEER_REFUSES: dict[tuple[str, str], str] = {
    **{(name, "ORTHANC"): r"0xA700" for name in (
        "JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm")},
    **{(name, "ORTHANC"): r"0xC000" for name in ("rtdose_rle.dcm", "rtdose_rle_1frame.dcm")},
}


# ---- generated files: what pydicom does not bundle -------------------------------------------------

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # a private storage SOP class (spectroscopy raw data)


def _siemens_csa_non_image(path: Path) -> None:
    """A Siemens CSA Non-Image instance: a private SOP class with its private CSA header."""
    uid = "2.25.2026120219"
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = SIEMENS_CSA_NON_IMAGE, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".1", uid + ".2"
    ds.Modality, ds.PatientID, ds.PatientName = "MR", "CSA-1", "SPECTRO^SCOPY"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 7, 1
    block = ds.private_block(0x0029, "SIEMENS CSA NON-IMAGE", create=True)
    block.add_new(0x08, "CS", "SPEC NUM 4")
    block.add_new(0x10, "OB", bytes(range(256)) * 4)  # the CSA header: bytes only Siemens reads
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = SIEMENS_CSA_NON_IMAGE, uid
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


GENERATED = {"generated/siemens-csa-non-image.dcm": _siemens_csa_non_image}
EXPECTED["generated/siemens-csa-non-image.dcm"] = delivered(4)


@dataclass(frozen=True)
class Source:
    name: str  # relative to pydicom's test_files; character-set files under charset_files/
    path: Path
    uid: str | None  # SOP Instance UID of the data set, else of the file meta; None when neither
    expect: Expect = field(compare=False)


def _instance_uid(path: Path) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: no UID
            return None
        try:
            uid = ds.get("SOPInstanceUID")
        except Exception:  # noqa: BLE001 - a value pydicom cannot decode
            uid = None
        meta = getattr(ds, "file_meta", None)
        if not uid and meta is not None:
            uid = meta.get("MediaStorageSOPInstanceUID")
    return str(uid).strip() if uid else None


def _name(path: str) -> str:
    path = Path(path)
    if path.is_relative_to(CHARSET_FILES):
        return "charset_files/" + path.relative_to(CHARSET_FILES).as_posix()
    return path.relative_to(TEST_FILES).as_posix()


def corpus(generated: Path | None = None) -> list[Source]:
    """Every regular file pydicom bundles, in name order, then the generated ones (written
    into `generated`; without it, their paths are only names), each with its expectation."""
    paths = [p for p in get_testdata_files() + get_charset_files() if os.path.isfile(p)]
    sources = []
    for path in sorted(paths, key=_name):
        name = _name(path)
        sources.append(Source(name, Path(path), _instance_uid(Path(path)),
                              EXPECTED.get(name, Expect("(no expectation)"))))
    for name, make in GENERATED.items():
        path = Path(name)
        if generated is not None:
            path = generated / name
            make(path)
        sources.append(Source(name, path, _instance_uid(path) if generated is not None else None, EXPECTED[name]))
    return sources


def rounds(sources: list[Source]) -> list[list[Source]]:
    """Sources in rounds in which no two share a SOP Instance UID: pydicom ships up to nine
    encodings of one instance, and a destination keeps one instance per UID (Orthanc, a
    folder named by UID). Files without a UID all go in the first round."""
    seen: dict[str, int] = defaultdict(int)
    result: list[list[Source]] = []
    for source in sources:
        index = 0
        if source.uid is not None:
            index = seen[source.uid]
            seen[source.uid] += 1
        while len(result) <= index:
            result.append([])
        result[index].append(source)
    return result


def matches(pattern: str, text: str | None) -> bool:
    return text is not None and re.search(pattern, text, re.IGNORECASE) is not None
