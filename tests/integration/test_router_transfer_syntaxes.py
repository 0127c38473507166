"""Transfer syntaxes and SOP classes end to end: DCMTK's storescu and dcmsend, pynetdicom,
a watched folder and `dicom-rules send` on one side, the router in its own process, and
storescp, Orthanc and a folder on the other; what the peers hold is checked value by value
against pydicom reading the original."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pydicom
import pytest
from helpers.files import bundled
from helpers.cli import dicom_rules
from helpers.peers import DCMTK_ENV, Orthanc, StoreSCP, require, storescu, wait_until
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.presentation import build_context
from helpers.dataset_values import differences

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
# what a distinct copy of an instance changes, besides the trailing padding one twin has
COPY_CHANGES = {"(0008,0018)", "(FFFC,FFFC)"}


def router_config(port: int, destinations: dict[str, str], listener: str = "", watch: bool = False) -> str:
    lines = "".join(f"  {name}: {text}\n" for name, text in destinations.items())
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nlisteners:\n"
            f"  - {{name: main, ae_title: ROUTER, port: {port}{listener}}}\n"
            + ("watch:\n  - {name: drop, path: drop, settle_seconds: 0.2}\n" if watch else "")
            + f"destinations:\n{lines}")


def dicom(peer_ae: str, port: int) -> str:
    return f"{{type: dicom, ae_title: {peer_ae}, host: 127.0.0.1, port: {port}, retry: {{delay: 0.2, max_attempts: 3}}}}"


def route_to(*names: str) -> str:
    return f'rule "all" {{\n  then route to {", ".join(names)}\n}}\n'


def copy_of(source: str, target: Path) -> Path:
    """`source` with a SOP Instance UID of its own, in its own transfer syntax (pydicom writes
    a data set in the encoding it was read in)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    assert pydicom.filereader.read_file_meta_info(target).TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    return target


def orthanc_files(orthanc: Orthanc, folder: Path) -> list[pydicom.Dataset]:
    """The files Orthanc stored, as its REST API hands them out."""
    datasets = []
    folder.mkdir(parents=True, exist_ok=True)
    for number, instance in enumerate(orthanc.get("/instances")):
        with urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}/file",
                                    timeout=10) as response:
            path = folder / f"{number}.dcm"
            path.write_bytes(response.read())
        datasets.append(pydicom.dcmread(path))
    return datasets


def same_values_as(expected: pydicom.Dataset, received: pydicom.Dataset) -> list[str]:
    return [d for d in differences(expected, received) if d.split()[0] not in COPY_CHANGES]


@pytest.fixture
def peers(tmp_path):
    started = []

    def start(peer):
        started.append(peer.start())
        return peer

    yield start
    for peer in started:
        peer.stop()


# ---- 1. big endian ----------------------------------------------------------------------------


def test_a_big_endian_instance_from_storescu_a_watched_folder_and_send_arrives_with_its_values(
        router_factory, peers, tmp_path, port):
    """storescu -xb, a watched folder and `dicom-rules send`: Orthanc (which is told to refuse
    big endian) gets Explicit VR Little Endian, storescp +xi Implicit; both hold every value
    of MR_small.dcm, the little-endian twin pydicom ships, pixel data included."""
    implicit_only = peers(StoreSCP(tmp_path / "implicit", extra=("+xi",)))
    orthanc = peers(Orthanc(tmp_path / "orthanc", settings={
        "AcceptedTransferSyntaxes": [ExplicitVRLittleEndian, ImplicitVRLittleEndian]}))
    config = router_config(port, {"IMPLICIT": dicom(implicit_only.ae_title, implicit_only.port),
                                  "ORTHANC": dicom(orthanc.ae_title, orthanc.dicom_port)}, watch=True)
    (tmp_path / "drop").mkdir()
    router = router_factory(config, route_to("IMPLICIT", "ORTHANC"), port)
    sent, dropped, direct = (copy_of(bundled("MR_small_bigendian.dcm"), tmp_path / "in" / name)
                             for name in ("sent.dcm", "dropped.dcm", "direct.dcm"))

    result = storescu(port, [sent], "CT1", "ROUTER", "-xb", "-v")
    assert result.returncode == 0, result.stderr
    assert "Big Endian Explicit -> Big Endian Explicit" in result.stderr  # sent as it is
    shutil.copy(dropped, tmp_path / "drop" / "dropped.dcm")
    send = dicom_rules("send", router.config, "IMPLICIT", direct, cwd=tmp_path)
    assert send.returncode == 0 and send.stdout.startswith("1 sent"), send.stdout + send.stderr

    wait_until(lambda: len(implicit_only.files()) == 3 and orthanc.count() == 2, timeout=60,
               what="three instances at storescp and two in Orthanc")
    twin = pydicom.dcmread(bundled("MR_small.dcm"))
    for received in map(pydicom.dcmread, implicit_only.files()):
        assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert same_values_as(twin, received) == []
        assert received.PixelData == twin.PixelData
    stored = orthanc_files(orthanc, tmp_path / "from-orthanc")
    assert {str(ds.SOPInstanceUID) for ds in stored} == {sop_uid(sent), sop_uid(dropped)}
    for received in stored:
        assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert same_values_as(twin, received) == []
        assert received.PixelData == twin.PixelData
    assert "Traceback" not in router.output()


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ---- 2. deflated ------------------------------------------------------------------------------


def test_a_deflated_instance_from_a_watched_folder_reaches_peers_with_and_without_deflate(
        router_factory, peers, tmp_path, port):
    """storescp accepts deflate: it gets the instance deflated (padded to even length, which
    DCMTK insists on); Orthanc, told to refuse deflate, gets it inflated."""
    storescp = peers(StoreSCP(tmp_path / "storescp"))
    orthanc = peers(Orthanc(tmp_path / "orthanc", settings={
        "AcceptedTransferSyntaxes": [ExplicitVRLittleEndian, ImplicitVRLittleEndian]}))
    config = router_config(port, {"ARCHIVE": dicom(storescp.ae_title, storescp.port),
                                  "ORTHANC": dicom(orthanc.ae_title, orthanc.dicom_port)}, watch=True)
    (tmp_path / "drop").mkdir()
    router = router_factory(config, route_to("ARCHIVE", "ORTHANC"), port)
    shutil.copy(bundled("image_dfl.dcm"), tmp_path / "drop" / "image_dfl.dcm")

    wait_until(lambda: len(storescp.files()) == 1 and orthanc.count() == 1, timeout=60,
               what="the instance at storescp and in Orthanc")
    original = pydicom.dcmread(bundled("image_dfl.dcm"))
    [archived] = map(pydicom.dcmread, storescp.files())
    assert archived.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    [in_orthanc] = orthanc_files(orthanc, tmp_path / "from-orthanc")
    assert in_orthanc.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    for received in (archived, in_orthanc):
        assert differences(original, received) == []
        assert received.PixelData == original.PixelData
    assert "Traceback" not in router.output()


# ---- 3. the listener keeps the sender's encoding ------------------------------------------------


def with_private_element(target: Path) -> Path:
    """MR_small with a private element (7001,1153) LO under creator (7001,0011)."""
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.add_new(0x70010010, "LO", "ANOTHER CREATOR")
    ds.add_new(0x70010011, "LO", "RULESENGINE TEST")
    ds.add_new(0x70011153, "LO", "KEEP MY VR")
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def test_the_listener_takes_each_instance_in_the_encoding_its_sender_offers_first(router_factory, peers, tmp_path,
                                                                                  port):
    """storescu offering Explicit and Implicit VR (in one context, +C, or in separate ones):
    the private element reaches Orthanc with its VR. dcmsend's RLE and JPEG-LS files reach
    the folder compressed as they were sent, not decompressed to fit."""
    orthanc = peers(Orthanc(tmp_path / "orthanc"))
    config = router_config(port, {"ORTHANC": dicom(orthanc.ae_title, orthanc.dicom_port),
                                  "FOLDER": "{type: folder, path: received}"})
    router = router_factory(config, route_to("ORTHANC", "FOLDER"), port)
    combined, separate = (with_private_element(tmp_path / "in" / name) for name in ("combined.dcm", "separate.dcm"))
    for path, options in ((combined, ("+C",)), (separate, ())):
        result = storescu(port, [path], "CT1", "ROUTER", "-v", *options)
        assert result.returncode == 0, result.stderr
        assert "Converting transfer syntax: Little Endian Explicit -> Little Endian Explicit" in result.stderr

    compressed = ["SC_rgb_rle.dcm", "JPEGLSNearLossless_08.dcm", "MR_small_jpeg_ls_lossless.dcm"]
    for name in compressed:
        result = subprocess.run([require("dcmsend"), "-v", "-aec", "ROUTER", "127.0.0.1", str(port), bundled(name)],
                                env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Converting transfer syntax" not in result.stderr, result.stderr

    wait_until(lambda: orthanc.count() == 2 + 2, timeout=60, what="the instances in Orthanc")  # one lacks patient UIDs
    for received in orthanc_files(orthanc, tmp_path / "from-orthanc"):
        if received.SOPInstanceUID in (sop_uid(combined), sop_uid(separate)):
            assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert (received[0x70011153].VR, received[0x70011153].value) == ("LO", "KEEP MY VR")
    folder = tmp_path / "received"
    wait_until(lambda: len(list(folder.glob("*.dcm"))) == 5, timeout=60, what="five instances in the folder")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, folder.glob("*.dcm"))}
    for name in compressed:
        original = pydicom.dcmread(bundled(name))
        received = by_uid[str(original.SOPInstanceUID)]
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, name
        assert received.PixelData == original.PixelData, name
    assert "Traceback" not in router.output()


MIXED_ENCODINGS = ("SC_rgb_small_odd.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm")  # Explicit VR, RLE, JPEG


def mixed_encodings_profile(path: Path) -> Path:
    """A storescu profile proposing, for Secondary Capture, one context per encoding, the
    encoding first, then Explicit and Implicit VR: what modalities and the conformance matrix
    propose."""
    lines = ["[[TransferSyntaxes]]"]
    contexts = []
    for number, syntax in enumerate(("LittleEndianExplicit", "RLELossless", "JPEGBaseline"), 1):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {syntax}", "TransferSyntax2 = LittleEndianExplicit",
                  "TransferSyntax3 = LittleEndianImplicit"]
        contexts.append(f"PresentationContext{number} = SecondaryCaptureImageStorage\\TS{number}")
    lines += ["[[PresentationContexts]]", "[Mixed]", *contexts, "[[Profiles]]", "[Mixed]",
              "PresentationContexts = Mixed"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_association_carrying_several_encodings_of_one_sop_class_keeps_each_as_sent(router_factory, tmp_path,
                                                                                      port):
    """storescu with a profile and dcmsend, each sending an Explicit VR, an RLE and a JPEG
    Baseline Secondary Capture in one association: each context is accepted in its own
    encoding, so nothing is decompressed to fit a context made for another file (storescu
    could not even send the JPEG one)."""
    config = router_config(port, {"FOLDER": "{type: folder, path: received}"})
    router = router_factory(config, route_to("FOLDER"), port)
    profile = mixed_encodings_profile(tmp_path / "storescu.cfg")
    result = storescu(port, [bundled(name) for name in MIXED_ENCODINGS], "CT1", "ROUTER", "-v", "-xf", str(profile),
                      "Mixed")
    assert result.returncode == 0, result.stderr
    conversions = [line for line in result.stderr.splitlines() if "Converting transfer syntax" in line]
    assert conversions == ["I: Converting transfer syntax: Little Endian Explicit -> Little Endian Explicit",
                           "I: Converting transfer syntax: RLE Lossless -> RLE Lossless",
                           "I: Converting transfer syntax: JPEG Baseline -> JPEG Baseline"], result.stderr
    copies = [copy_of(bundled(name), tmp_path / "in" / name) for name in MIXED_ENCODINGS]
    result = subprocess.run([require("dcmsend"), "-v", "-aec", "ROUTER", "127.0.0.1", str(port), *map(str, copies)],
                            env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Converting transfer syntax" not in result.stderr, result.stderr

    folder = tmp_path / "received"
    wait_until(lambda: len(list(folder.glob("*.dcm"))) == 6, timeout=60, what="six instances in the folder")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, folder.glob("*.dcm"))}
    for sent in [*map(bundled, MIXED_ENCODINGS), *copies]:
        original = pydicom.dcmread(sent)
        received = by_uid[str(original.SOPInstanceUID)]
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, sent
        assert received.PixelData == original.PixelData, sent
    assert "Traceback" not in router.output()


# ---- 4. unknown storage SOP classes -------------------------------------------------------------


def csa_non_image(target: Path) -> Path:
    """An instance of Siemens CSA Non-Image Storage, a private SOP class."""
    ds = Dataset()
    ds.SOPClassUID = SIEMENS_CSA_NON_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "CSA-1", "CSA^Spectroscopy", "MR"
    ds.add_new(0x00290010, "LO", "SIEMENS CSA NON-IMAGE")
    ds.add_new(0x00291008, "CS", "SPEC NUM 4")
    ds.add_new(0x00291010, "OB", bytes(range(256)) * 4)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return target


def storescu_of_a_private_class(port: int, path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """DCMTK's storescu refuses a file of a SOP class it does not know unless a configuration
    file names it in a profile."""
    profile = tmp_path / "storescu.cfg"
    profile.write_text("[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LittleEndianExplicit\n"
                       "TransferSyntax2 = LittleEndianImplicit\n\n[[PresentationContexts]]\n[Private]\n"
                       f"PresentationContext1 = {SIEMENS_CSA_NON_IMAGE}\\Uncompressed\n\n"
                       "[[Profiles]]\n[Private]\nPresentationContexts = Private\n")
    return subprocess.run([require("storescu"), "-v", "-xf", str(profile), "Private", "-aet", "CT1", "-aec", "ROUTER",
                           "127.0.0.1", str(port), str(path)], env=DCMTK_ENV, capture_output=True, text=True,
                          timeout=60)


def pynetdicom_store(port: int, path: Path) -> int:
    ae = AE(ae_title="PYSCU")
    assoc = ae.associate("127.0.0.1", port, [build_context(SIEMENS_CSA_NON_IMAGE, [ExplicitVRLittleEndian])],
                         ae_title="ROUTER")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(pydicom.dcmread(path)).Status)
    finally:
        assoc.release()


def test_a_private_storage_sop_class_reaches_storescp_orthanc_and_a_folder(router_factory, peers, tmp_path, port):
    storescp = peers(StoreSCP(tmp_path / "storescp", extra=("-pm",)))  # promiscuous: takes unknown classes
    orthanc = peers(Orthanc(tmp_path / "orthanc", settings={"UnknownSopClassAccepted": True}))
    config = router_config(port, {"ARCHIVE": dicom(storescp.ae_title, storescp.port),
                                  "ORTHANC": dicom(orthanc.ae_title, orthanc.dicom_port),
                                  "FOLDER": "{type: folder, path: received}"})
    router = router_factory(config, route_to("ARCHIVE", "ORTHANC", "FOLDER"), port)
    by_dcmtk, by_pynetdicom = csa_non_image(tmp_path / "in" / "dcmtk.dcm"), csa_non_image(tmp_path / "in" / "py.dcm")

    result = storescu_of_a_private_class(port, by_dcmtk, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Received Store Response (Success)" in result.stderr
    assert pynetdicom_store(port, by_pynetdicom) == 0x0000

    folder = tmp_path / "received"
    wait_until(lambda: len(storescp.files()) == 2 and orthanc.count() == 2 and len(list(folder.glob("*.dcm"))) == 2,
               timeout=60, what="both instances at storescp, in Orthanc and in the folder")
    expected = {sop_uid(path): pydicom.dcmread(path) for path in (by_dcmtk, by_pynetdicom)}
    received = [*map(pydicom.dcmread, storescp.files()), *orthanc_files(orthanc, tmp_path / "from-orthanc"),
                *map(pydicom.dcmread, folder.glob("*.dcm"))]
    for ds in received:
        assert ds.SOPClassUID == SIEMENS_CSA_NON_IMAGE
        assert differences(expected[str(ds.SOPInstanceUID)], ds) == []
    assert "Traceback" not in router.output()


def test_a_listener_refusing_unknown_sop_classes_logs_each_refusal_with_the_sender(router_factory, tmp_path, port):
    config = router_config(port, {"FOLDER": "{type: folder, path: received}"},
                           listener=", accept_unknown_sop_classes: false")
    router = router_factory(config, route_to("FOLDER"), port)
    result = storescu_of_a_private_class(port, csa_non_image(tmp_path / "in" / "csa.dcm"), tmp_path)
    assert result.returncode != 0
    assert "No Acceptable Presentation Contexts" in result.stderr, result.stderr
    router.wait_for_log(f"context 1 ({SIEMENS_CSA_NON_IMAGE}): an unknown SOP class, and "
                        "accept_unknown_sop_classes is false")
    [line] = [line for line in router.output().splitlines() if "refused" in line]
    assert " WARNING rulesengine.listener: listener main: association from CT1 (127.0.0.1:" in line
    assert not (tmp_path / "received").exists()
