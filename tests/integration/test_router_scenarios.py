"""The router as a user meets it: DCMTK and Orthanc on one side, `dicom-rules run` in its own
process in the middle, and only what the peers really received is checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from jsonschema import Draft202012Validator
from helpers.cli import dicom_rules
from helpers.peers import DCMTK_ENV, ROOT, StoreSCP, echoscu, free_port, require, storescu, wait_until
from ruamel.yaml import YAML

from rulesengine.runtime.watcher import POLL_SECONDS

SAMPLES = ROOT / "examples" / "samples"
NOT_DICOM = ROOT / "examples" / "bad" / "not_dicom.dcm"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


# ---- helpers ----------------------------------------------------------------------------------


def dicom_destination(ae_title: str, port: int, retry: str = "{delay: 0.2, max_attempts: 5}") -> str:
    return f"{{type: dicom, ae_title: {ae_title}, host: 127.0.0.1, port: {port}, retry: {retry}}}"


def router_config(port: int, listener_extra: str = "", **destinations: str) -> str:
    """A configuration with one listener `main` (ROUTER on `port`) and these destinations."""
    lines = "".join(f"  {name}: {text}\n" for name, text in destinations.items())
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nlisteners:\n"
            f"  - {{name: main, ae_title: ROUTER, port: {port}{listener_extra}}}\n"
            f"destinations:\n{lines}")


def sop_instance_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def received_by(storescp: StoreSCP) -> dict[str, pydicom.Dataset]:
    """What storescp wrote, by SOP Instance UID."""
    datasets = [pydicom.dcmread(path) for path in storescp.files()]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}


def data_set_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the file meta information."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", f"{path} is not a Part 10 file"
    # (0002,0000) UL in explicit VR: tag 4 bytes, VR 2, length 2, then the group's length.
    assert raw[132:136] == b"\x02\x00\x00\x00"
    group_length = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_length:]


def journal(storage: Path, query: str, *args) -> list[dict]:
    """Rows of the router's journal, read with plain SQLite as an operator would."""
    db = sqlite3.connect(storage / "journal.sqlite", timeout=10)
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query, args)]
    finally:
        db.close()


def wait_delivered(storage: Path, count: int) -> None:
    """Until `count` deliveries are acknowledged by their peers. A peer answers after it has
    written the instance, so its files are complete from then on."""
    wait_until(lambda: len(journal(storage, "SELECT id FROM deliveries WHERE state = 'delivered'")) == count,
               what=f"{count} acknowledged deliveries")


def storescu_debug(port: int, path: Path, calling: str = "CT1") -> subprocess.CompletedProcess:
    """storescu -d: the full C-STORE response, Error Comment included. Bytes outside UTF-8 in
    that dump are replaced (U+FFFD) instead of failing the decode."""
    return subprocess.run([require("storescu"), "-d", "-aet", calling, "-aec", "ROUTER", "127.0.0.1", str(port),
                           str(path)], env=DCMTK_ENV, capture_output=True, text=True, errors="replace",
                          timeout=60, check=False)


def store_response(stderr: str) -> tuple[int, list[str]]:
    """The DIMSE status and the Error Comment values of the C-STORE response in a storescu -d dump."""
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", stderr)
    assert status, f"no C-STORE response in storescu's output:\n{stderr}"
    comment = re.search(r"\(0000,0902\) LO \[(.*)\]\s+#", stderr)
    return int(status.group(1), 16), comment.group(1).split("\\") if comment else []


@pytest.fixture
def archive(tmp_path):
    """storescp writing the bytes of each data set as received (+B), so a comparison with
    the source file is a comparison of what travelled."""
    peer = StoreSCP(tmp_path / "archive", extra=("+B",)).start()
    yield peer
    peer.stop()


# ---- 1. two destinations, each with its own edits ------------------------------------------------


def test_one_instance_to_two_destinations_with_their_own_edits(router_factory, orthanc, storescp, port):
    config = router_config(port, PACS=dicom_destination(orthanc.ae_title, orthanc.dicom_port),
                           ARCHIVE=dicom_destination(storescp.ae_title, storescp.port))
    rules = """
rule "mark what the router handled" {
  then set DataSet.InstitutionName = "ROUTED"
}

rule "each destination gets its own copy" {
  then {
    copy to PACS {
      set DataSet.StudyDescription = "FOR THE PACS"
    }
    copy to ARCHIVE {
      set DataSet.StudyDescription = "FOR THE ARCHIVE"
      set DataSet.PatientName = "ANON"
    }
  }
}

rule "copies are made when evaluation ends, so this edit reaches them too" {
  then set DataSet.AccessionNumber = "ACC-ROUTED"
}
"""
    router = router_factory(config, rules, port)
    source = pydicom.dcmread(SAMPLES / "ct_chest.dcm")
    result = storescu(port, [SAMPLES / "ct_chest.dcm"], "CT1")
    assert result.returncode == 0, result.stderr

    wait_delivered(router.config.parent / "var", 2)
    assert orthanc.count() == 1
    in_pacs = orthanc.instances()[0]
    in_archive = received_by(storescp)
    assert list(in_archive) == [source.SOPInstanceUID]
    in_archive = in_archive[source.SOPInstanceUID]

    assert in_pacs["SOPInstanceUID"] == source.SOPInstanceUID
    assert in_pacs["StudyDescription"] == "FOR THE PACS"
    assert in_pacs["PatientName"] == "DOE^JOHN"  # the archive's anonymisation stays in the archive's copy
    assert in_archive.StudyDescription == "FOR THE ARCHIVE"
    assert in_archive.PatientName == "ANON"
    for copy in (in_pacs, in_archive):
        assert copy.get("InstitutionName") == "ROUTED"
        assert copy.get("AccessionNumber") == "ACC-ROUTED"
    assert in_archive.PixelData == source.PixelData


# ---- 2. who may associate ------------------------------------------------------------------------


def test_calling_and_called_ae_titles_are_checked(router_factory, port):
    config = f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, require_called_aet: true,
      allowed_calling_aets: ["CT*", "MR1"]}}
"""
    router = router_factory(config, 'rule "accept and forget" {\n  then drop\n}\n', port)

    for calling in ("US1", "MR12", "ct1"):  # not listed; MR1 is an exact name, not a prefix; case counts
        result = echoscu(port, calling, "ROUTER")
        assert result.returncode != 0, f"{calling} was let in"
        assert "Calling AE Title Not Recognized" in result.stderr, result.stderr
    refused_store = storescu(port, [SAMPLES / "ct_head.dcm"], "XA9")
    assert refused_store.returncode != 0
    assert "Calling AE Title Not Recognized" in refused_store.stderr, refused_store.stderr

    for calling in ("CT7", "MR1"):  # a glob pattern, an exact name
        result = echoscu(port, calling, "ROUTER")
        assert result.returncode == 0, f"{calling}: {result.stderr}"
    stored = storescu(port, [SAMPLES / "ct_head.dcm"], "CT7", "ROUTER", "-v")
    assert stored.returncode == 0, stored.stderr
    assert "Received Store Response (Success)" in stored.stderr

    wrong_called = echoscu(port, "CT1", "NOT-ROUTER")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr, wrong_called.stderr

    log = router.output()
    for calling in ("US1", "MR12", "ct1", "XA9"):
        assert f"association from {calling} (127.0.0.1) rejected: calling AE title not allowed" in log, log
    assert re.search(r"association from CT1 \(127\.0\.0\.1\) rejected: called AE title 'NOT-ROUTER'", log), log
    # Refused associations never reach the rules: only the allowed store is journaled.
    assert [row["calling_aet"] for row in journal(router.config.parent / "var", "SELECT * FROM instances")] == ["CT7"]


# ---- 3. a rule rejects -----------------------------------------------------------------------------


REJECTING_RULES = """
rule "no secondary captures" {
  when DataSet.Modality == "OT"
  then reject "secondary captures are not accepted here"
}

rule "one patient is refused, with a reason made of the document's own text" {
  when DataSet.Modality == "MR" and DataSet.PatientID == "MR-0001"
  then reject "refused for " + DataSet.PatientName + " \\\\ " + DataSet.StudyDescription
}

rule "everything else to the archive" {
  then route to ARCHIVE
}
"""


def test_a_rejected_instance_is_refused_with_the_reason(router_factory, storescp, port):
    config = router_config(port, ARCHIVE=dicom_destination(storescp.ae_title, storescp.port))
    router = router_factory(config, REJECTING_RULES, port)
    rejected = SAMPLES / "ot_secondary.dcm"

    result = storescu_debug(port, rejected)
    assert result.returncode != 0
    status, comment = store_response(result.stderr)
    assert status == 0xC124  # Error: Cannot understand (a rule rejected it)
    assert comment == ["secondary captures are not accepted here"]

    # A later instance goes through the same destination queue: once it is there, the
    # rejected one would have been there before it.
    sentinel = storescu(port, [SAMPLES / "ct_head.dcm"], "CT1")
    assert sentinel.returncode == 0, sentinel.stderr
    wait_delivered(router.config.parent / "var", 1)
    assert list(received_by(storescp)) == [sop_instance_uid(SAMPLES / "ct_head.dcm")]

    rows = journal(router.config.parent / "var", "SELECT * FROM instances WHERE sop_instance_uid = ?",
                   sop_instance_uid(rejected))
    assert [(row["outcome"], row["reason"], row["calling_aet"]) for row in rows] == [
        ("reject", "secondary captures are not accepted here", "CT1")]
    assert journal(router.config.parent / "var", "SELECT * FROM deliveries WHERE instance_id = ?",
                   rows[0]["id"]) == []


def test_a_reject_reason_reaches_the_sender_as_one_plain_error_comment(router_factory, storescp, port):
    """Error Comment is an LO of the command set: default repertoire, no backslash, 64 characters.
    A reason built from the document's own text (here Latin-1) must still arrive whole and legible."""
    config = router_config(port, ARCHIVE=dicom_destination(storescp.ae_title, storescp.port))
    router_factory(config, REJECTING_RULES, port)

    result = storescu_debug(port, SAMPLES / "mr_knee.dcm")
    assert result.returncode != 0
    status, comment = store_response(result.stderr)
    assert status == 0xC124
    assert len(comment) == 1, f"the reason was split into several values: {comment}"
    assert comment[0].isascii(), comment
    assert comment[0].startswith("refused for M?ller^J?rgen"), comment


# ---- 4. a rule quarantines --------------------------------------------------------------------------


def test_a_quarantined_instance_is_accepted_and_kept_aside(router_factory, storescp, port):
    config = router_config(port, ARCHIVE=dicom_destination(storescp.ae_title, storescp.port))
    rules = """
rule "reports wait for a person" {
  when DataSet.Modality == "SR"
  then quarantine "reports are reviewed before routing"
}

rule "everything else to the archive" {
  then route to ARCHIVE
}
"""
    router = router_factory(config, rules, port)
    report = SAMPLES / "sr_report.dcm"
    day_before = time.strftime("%Y%m%d")
    result = storescu(port, [report], "CT1", "ROUTER", "-v")
    assert result.returncode == 0, result.stderr
    assert "Received Store Response (Success)" in result.stderr

    # The sender's success may come before the rules run (they cannot reject here): wait for
    # the .json, written after the instance is in place.
    quarantine = router.config.parent / "var" / "quarantine"
    wait_until(lambda: list(quarantine.glob("*/*.dcm.json")), what="the quarantined instance and its reason")
    day_after = time.strftime("%Y%m%d")
    kept = sorted(quarantine.glob("*/*.dcm"))
    assert [path.parent.name for path in kept] in ([day_before], [day_after])
    assert pydicom.dcmread(kept[0]) == pydicom.dcmread(report)
    facts = json.loads(Path(f"{kept[0]}.json").read_text(encoding="utf-8"))
    assert facts["reason"] == "reports are reviewed before routing"
    assert facts["sop_instance_uid"] == sop_instance_uid(report)
    assert facts["calling_aet"] == "CT1"

    sentinel = storescu(port, [SAMPLES / "ct_head.dcm"], "CT1")
    assert sentinel.returncode == 0, sentinel.stderr
    wait_delivered(router.config.parent / "var", 1)
    assert list(received_by(storescp)) == [sop_instance_uid(SAMPLES / "ct_head.dcm")]
    outcomes = journal(router.config.parent / "var", "SELECT outcome FROM instances ORDER BY id")
    assert [row["outcome"] for row in outcomes] == ["quarantine", "route"]


# ---- 5. a watched folder ------------------------------------------------------------------------------


def write_slowly(source: Path, target: Path, chunks: int, pause: float) -> None:
    """A writer that stops between chunks, as a copy over a slow share does."""
    data = source.read_bytes()
    size = -(-len(data) // chunks)
    with open(target, "wb") as fh:
        for start in range(0, len(data), size):
            fh.write(data[start:start + size])
            fh.flush()
            os.fsync(fh.fileno())
            time.sleep(pause)


def test_watched_folder_takes_only_complete_files_and_sorts_the_originals(router_factory, archive, tmp_path):
    settle_seconds = 1.5
    pause = 0.6
    assert POLL_SECONDS < pause < settle_seconds  # the slow writer pauses across several polls
    config = f"""
storage: var
processes: 1
rules: main.rules
watch:
  - {{name: inbox, path: inbox, settle_seconds: {settle_seconds}}}
destinations:
  ARCHIVE: {dicom_destination(archive.ae_title, archive.port)}
"""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "ct_head.dcm", inbox / "before-start.dcm")
    router = router_factory(config, 'rule "all" {\n  then route to ARCHIVE\n}\n')

    shutil.copy(SAMPLES / "mr_knee.dcm", inbox / "copied-in.dcm")
    shutil.copy(NOT_DICOM, inbox / "not-dicom.dcm")
    write_slowly(SAMPLES / "ct_chest.dcm", inbox / "slow.dcm", chunks=5, pause=pause)

    sources = {"before-start.dcm": SAMPLES / "ct_head.dcm", "copied-in.dcm": SAMPLES / "mr_knee.dcm",
               "slow.dcm": SAMPLES / "ct_chest.dcm"}
    expected = {sop_instance_uid(path): path for path in sources.values()}
    failed_reason = inbox / "failed" / "not-dicom.dcm.reason.txt"
    # A file leaves the inbox only after its instance is journaled; the reason follows the move.
    wait_until(lambda: not [p for p in inbox.iterdir() if p.is_file()] and failed_reason.exists(),
               what="every file taken from the inbox")
    # The rules run (again) after the file is journaled: wait for what reaches the destination.
    wait_until(lambda: set(expected) <= {sop_instance_uid(path) for path in archive.files()},
               what="the three instances at the destination")

    assert sorted(p.name for p in (inbox / "done").iterdir()) == sorted(sources)
    for name, source in sources.items():
        assert (inbox / "done" / name).read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["not-dicom.dcm", "not-dicom.dcm.reason.txt"]
    assert (inbox / "failed" / "not-dicom.dcm").read_bytes() == NOT_DICOM.read_bytes()
    assert "not a DICOM file" in failed_reason.read_text(encoding="utf-8")

    arrived = {sop_instance_uid(path): path for path in archive.files()}
    assert set(arrived) == set(expected)
    for uid, source in expected.items():
        assert data_set_bytes(arrived[uid]) == data_set_bytes(source), f"{source.name} arrived altered"
    assert "Traceback" not in router.output()


# ---- 6. presentation contexts from an association file ----------------------------------------------


ASSOCIATION_FILE = f"""\
# CT Image Storage alone on its line: Implicit VR Little Endian only
{CT_IMAGE_STORAGE}
{MR_IMAGE_STORAGE}\\{EXPLICIT_VR_LITTLE_ENDIAN}   # MR Image Storage, Explicit VR Little Endian
"""


def test_association_file_decides_the_presentation_contexts(router_factory, tmp_path, port):
    config = router_config(port, ", association_file: contexts.txt", FOLDER="{type: folder, path: received}")
    router_factory(config, 'rule "all" {\n  then route to FOLDER\n}\n', port,
                   files={"contexts.txt": ASSOCIATION_FILE})

    assert echoscu(port, "CT1", "ROUTER").returncode == 0

    ct = storescu(port, [SAMPLES / "ct_head.dcm"], "CT1", "ROUTER", "-v")
    assert ct.returncode == 0, ct.stderr
    assert "Converting transfer syntax: Little Endian Explicit -> Little Endian Implicit" in ct.stderr
    mr = storescu(port, [SAMPLES / "mr_knee.dcm"], "CT1", "ROUTER", "-v")
    assert mr.returncode == 0, mr.stderr

    secondary = storescu(port, [SAMPLES / "ot_secondary.dcm"], "CT1", "ROUTER", "-v")
    assert secondary.returncode != 0
    assert "No presentation context for: (SC) 1.2.840.10008.5.1.4.1.1.7" in secondary.stderr, secondary.stderr
    implicit_mr = storescu(port, [SAMPLES / "mr_knee.dcm"], "CT1", "ROUTER", "-v", "-xi")
    assert implicit_mr.returncode != 0
    assert f"No presentation context for: (MR) {MR_IMAGE_STORAGE}" in implicit_mr.stderr, implicit_mr.stderr

    folder = tmp_path / "received"
    wait_until(lambda: len(list(folder.glob("*.dcm"))) == 2, what="two instances in the folder")
    syntaxes = {str(ds.SOPClassUID): str(ds.file_meta.TransferSyntaxUID)
                for ds in map(pydicom.dcmread, folder.glob("*.dcm"))}
    assert syntaxes == {CT_IMAGE_STORAGE: IMPLICIT_VR_LITTLE_ENDIAN, MR_IMAGE_STORAGE: EXPLICIT_VR_LITTLE_ENDIAN}


def test_an_instance_received_in_implicit_vr_reaches_a_peer_that_takes_only_explicit(router_factory, tmp_path,
                                                                                     port, request):
    """storescp told to take CT in Explicit VR only: the router converts what it received in
    Implicit VR, and a failed conversion must not stop the destination's queue."""
    profile = tmp_path / "explicit-only.cfg"
    profile.write_text("[[TransferSyntaxes]]\n[ExplicitOnly]\nTransferSyntax1 = LittleEndianExplicit\n\n"
                       "[[PresentationContexts]]\n[CT]\nPresentationContext1 = CTImageStorage\\ExplicitOnly\n\n"
                       "[[Profiles]]\n[ExplicitOnly]\nPresentationContexts = CT\n")
    storescp = StoreSCP(tmp_path / "explicit-only", extra=("-xf", str(profile), "ExplicitOnly")).start()
    request.addfinalizer(storescp.stop)
    config = router_config(port, ", association_file: contexts.txt",
                           ARCHIVE=dicom_destination(storescp.ae_title, storescp.port))
    router = router_factory(config, 'rule "all" {\n  then route to ARCHIVE\n}\n', port,
                            files={"contexts.txt": f"{CT_IMAGE_STORAGE}\n"})
    result = storescu(port, [SAMPLES / "ct_head.dcm", SAMPLES / "ct_chest.dcm"], "CT1")
    assert result.returncode == 0, result.stderr

    def settled():
        """Both deliveries attempted (whatever the result), or a failure the router could not handle."""
        states = [row["state"] for row in journal(router.config.parent / "var", "SELECT state FROM deliveries")]
        return (len(states) == 2 and not {"queued", "sending"} & set(states)) or "Traceback" in router.output()

    wait_until(settled, what="both deliveries attempted")
    assert "Traceback" not in router.output()
    sources = {sop_instance_uid(path): pydicom.dcmread(path) for path in (SAMPLES / "ct_head.dcm",
                                                                          SAMPLES / "ct_chest.dcm")}
    arrived = received_by(storescp)
    assert set(arrived) == set(sources)
    for uid, ds in arrived.items():
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN  # converted by the router
        for keyword in ("PatientID", "StudyInstanceUID", "PixelData"):
            assert ds[keyword].value == sources[uid][keyword].value, keyword


# ---- 7. sync mode ------------------------------------------------------------------------------------


def test_sync_mode_answers_after_the_destination(router_factory, storescp, port):
    config = router_config(port, ", mode: sync", ARCHIVE=dicom_destination(storescp.ae_title, storescp.port))
    router = router_factory(config, 'rule "all" {\n  then route to ARCHIVE\n}\n', port)
    storage = router.config.parent / "var"

    delivered = storescu(port, [SAMPLES / "ct_head.dcm"], "CT1")
    assert delivered.returncode == 0, delivered.stderr
    # No waiting: in sync mode the sender's success means the destination already has it.
    assert list(received_by(storescp)) == [sop_instance_uid(SAMPLES / "ct_head.dcm")]

    storescp.stop()
    refused = storescu_debug(port, SAMPLES / "ct_chest.dcm")
    assert refused.returncode != 0
    status, comment = store_response(refused.stderr)
    assert status == 0xA700  # Refused: Out of Resources
    assert comment and comment[0].startswith("ARCHIVE: "), comment

    # The sender was told it failed: the router keeps nothing to send later.
    failed = journal(storage, "SELECT state FROM deliveries WHERE sop_instance_uid = ?",
                     sop_instance_uid(SAMPLES / "ct_chest.dcm"))
    assert [row["state"] for row in failed] == ["dead"]
    pending = journal(storage, "SELECT * FROM deliveries WHERE state IN ('queued', 'sending', 'retrying')")
    assert pending == []
    assert [p for p in (storage / "spool").rglob("*") if p.is_file()] == []


def test_sync_mode_does_not_hold_the_destination_after_answering(router_factory, storescp, tmp_path, port):
    config = f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, mode: sync}}
destinations:
  ARCHIVE: {{type: dicom, ae_title: {storescp.ae_title}, host: 127.0.0.1, port: {storescp.port},
            timeouts: {{acse: 3}}}}
"""
    router = router_factory(config, 'rule "all" {\n  then route to ARCHIVE\n}\n', port)
    delivered = storescu(port, [SAMPLES / "ct_head.dcm"], "CT1")
    assert delivered.returncode == 0, delivered.stderr
    # The operator checks the destination once the sender has its answer.
    echo = dicom_rules("echo", router.config, "ARCHIVE", cwd=tmp_path)
    assert echo.returncode == 0, echo.stderr


def test_retrying_a_failed_sync_delivery_does_not_hold_back_the_destination(router_factory, storescp, tmp_path,
                                                                            port):
    queued_port = free_port()
    config = f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: sync, ae_title: ROUTER, port: {port}, mode: sync}}
  - {{name: queued, ae_title: ROUTER, port: {queued_port}}}
destinations:
  ARCHIVE: {dicom_destination(storescp.ae_title, storescp.port, "{delay: 60, max_attempts: 3}")}
"""
    router = router_factory(config, 'rule "all" {\n  then route to ARCHIVE\n}\n', port)
    storescp.stop()
    assert storescu(port, [SAMPLES / "ct_head.dcm"], "CT1").returncode != 0
    restarted = StoreSCP(storescp.folder, port=storescp.port).start()
    try:
        # The sender was told of the failure and sends again: there is nothing to retry.
        retry = dicom_rules("queue", router.config, "retry", cwd=tmp_path)
        assert (retry.returncode, retry.stdout.strip()) == (0, "0 dead deliveries queued again"), retry.stderr
        later = storescu(queued_port, [SAMPLES / "mr_knee.dcm"], "CT1")
        assert later.returncode == 0, later.stderr
        wait_until(lambda: sop_instance_uid(SAMPLES / "mr_knee.dcm") in received_by(restarted), timeout=10,
                   what="the instance queued after the retry")
    finally:
        restarted.stop()


# ---- 8. the command line against a running router and real peers ---------------------------------------


CLEAN_RULES = """
rule "CT to the archive" {
  when Association.CallingAET == "CT1" and DataSet.Modality == "CT"
  then {
    route to ARCHIVE
    stop
  }
}

rule "everything else from CT1 to the offline store" {
  when Association.CallingAET == "CT1"
  then {
    route to OFFLINE
    stop
  }
}

rule "other senders are refused" {
  then reject "unknown sender"
}
"""


def queue_counts(output: str) -> dict[str, dict[str, int]]:
    """The table `dicom-rules queue` prints: a header of states, then one line per destination."""
    lines = output.splitlines()
    states = lines[0].split()[1:]
    counts = {}
    for line in lines[1:]:
        if not line.strip():
            break
        name, *numbers = line.split()
        counts[name] = dict(zip(states, map(int, numbers), strict=True))
    return counts


def test_cli_echo_send_and_queue(router_factory, orthanc, storescp, tmp_path, port):
    offline_port = free_port()  # nothing listens there
    config = router_config(port, ARCHIVE=dicom_destination(storescp.ae_title, storescp.port),
                           PACS=dicom_destination(orthanc.ae_title, orthanc.dicom_port),
                           OFFLINE=dicom_destination("NOBODY", offline_port, "{delay: 60}"))
    router = router_factory(config, CLEAN_RULES, port)
    config_path = router.config
    result = storescu(port, [SAMPLES / "ct_head.dcm", SAMPLES / "mr_knee.dcm"], "CT1")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: journal(tmp_path / "var", "SELECT destination, state FROM deliveries ORDER BY destination")
               == [{"destination": "ARCHIVE", "state": "delivered"}, {"destination": "OFFLINE", "state": "retrying"}],
               what="one delivery done and one waiting to retry")

    for name, peer in (("ARCHIVE", f"STORESCP@127.0.0.1:{storescp.port}"),
                       ("PACS", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}")):
        echo = dicom_rules("echo", config_path, name, cwd=tmp_path)
        assert (echo.returncode, echo.stdout.strip()) == (0, f"{name} ({peer}): C-ECHO 0x0000"), echo.stderr
    echo = dicom_rules("echo", config_path, "OFFLINE", cwd=tmp_path)
    assert echo.returncode == 1
    assert f"OFFLINE: association with NOBODY@127.0.0.1:{offline_port}" in echo.stderr, echo.stderr

    outbox = tmp_path / "outbox"
    outbox.mkdir()
    for source in (SAMPLES / "ct_chest.dcm", SAMPLES / "sr_report.dcm", NOT_DICOM):
        shutil.copy(source, outbox)
    send = dicom_rules("send", config_path, "ARCHIVE", outbox, cwd=tmp_path)
    assert send.returncode == 1
    assert f"{outbox / 'not_dicom.dcm'}: not a DICOM file" in send.stderr, send.stderr
    assert send.stdout.startswith("2 sent, 1 failed to ARCHIVE"), send.stdout
    # `send` bypasses the rules: both arrive beside the instance the router delivered.
    assert set(received_by(storescp)) == {sop_instance_uid(SAMPLES / name)
                                          for name in ("ct_head.dcm", "ct_chest.dcm", "sr_report.dcm")}

    queue = dicom_rules("queue", config_path, cwd=tmp_path)
    assert queue.returncode == 0, queue.stderr
    assert queue_counts(queue.stdout) == {
        "ARCHIVE": {"queued": 0, "sending": 0, "delivered": 1, "retrying": 0, "dead": 0},
        "OFFLINE": {"queued": 0, "sending": 0, "delivered": 0, "retrying": 1, "dead": 0},
    }
    waiting = [line for line in queue.stdout.splitlines() if line.startswith("#")]
    assert len(waiting) == 1 and "OFFLINE" in waiting[0] and "retrying" in waiting[0], queue.stdout
    assert sop_instance_uid(SAMPLES / "mr_knee.dcm") in waiting[0]

    # A configuration whose storage the router never used has no queue to show: saying "no
    # deliveries" (and creating an empty journal there) would hide a wrong path.
    (tmp_path / "elsewhere.yaml").write_text(config.replace("storage: var", "storage: elsewhere"), encoding="utf-8")
    unused = dicom_rules("queue", "elsewhere.yaml", cwd=tmp_path)
    assert unused.returncode == 2
    assert f"no journal in {tmp_path / 'elsewhere'}" in unused.stderr, unused.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_cli_check_config(tmp_path):
    destinations = """
destinations:
  ARCHIVE: {type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: 11112}
  OFFLINE: {type: dicom, ae_title: NOBODY, host: 127.0.0.1, port: 11113}
"""
    (tmp_path / "clean.rules").write_text(CLEAN_RULES, encoding="utf-8")
    (tmp_path / "clean.yaml").write_text("storage: var\nrules: clean.rules\n" + destinations, encoding="utf-8")
    clean = dicom_rules("check-config", "clean.yaml", cwd=tmp_path)
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "0 errors, 0 warnings\n")

    (tmp_path / "typo.rules").write_text(CLEAN_RULES.replace("route to ARCHIVE", "route to ARCHVE"),
                                         encoding="utf-8")
    (tmp_path / "typo.yaml").write_text("storage: var\nrules: typo.rules\n" + destinations, encoding="utf-8")
    typo = dicom_rules("check-config", "typo.yaml", cwd=tmp_path)
    assert typo.returncode == 1
    assert "typo.rules:5:14: error unknown-destination unknown destination 'ARCHVE'" in typo.stdout, typo.stdout

    (tmp_path / "broken.yaml").write_text("storage: var\nrules: clean.rules\nlisteners: main: x\n", encoding="utf-8")
    broken = dicom_rules("check-config", "broken.yaml", cwd=tmp_path)
    assert broken.returncode == 1
    assert broken.stdout.startswith("broken.yaml:3:16: error config not valid YAML: mapping values are not allowed"), \
        broken.stdout
    # Placed like any finding, so that CI annotations land on the line.
    as_json = dicom_rules("check-config", "--format", "json", "broken.yaml", cwd=tmp_path)
    assert as_json.returncode == 1
    assert [(f["file"], f["line"], f["code"]) for f in json.loads(as_json.stdout)] == [("broken.yaml", 3, "config")]


def test_cli_schema_is_a_draft_2020_12_schema_of_the_configuration(tmp_path):
    result = dicom_rules("schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)

    # The schema describes what the router reads: a configuration it runs validates, a bad one does not.
    good = YAML(typ="safe").load("""
storage: var
processes: 1
rules: main.rules
listeners:
  - {name: main, ae_title: ROUTER, port: 11112, mode: sync, allowed_calling_aets: ["CT*"]}
watch:
  - {name: inbox, path: inbox, settle_seconds: 1.5}
destinations:
  ARCHIVE: {type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: 11113}
  FOLDER: {type: folder, path: out}
""")
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(good)) == []
    bad = {**good, "listeners": [{**good["listeners"][0], "mode": "fast"}]}
    assert [error.validator for error in validator.iter_errors(bad)] == ["enum"]
