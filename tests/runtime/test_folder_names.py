"""File names in folder destinations: distinct instances never share a file, the same
instance delivered again replaces its own, and a name cut to fit keeps its extension."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from helpers.files import ROOT, bundled
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from rulesengine.config import FolderDestination
from rulesengine.runtime.destinations import (
    MAX_NAME_BYTES,
    FolderSender,
    name_extension,
    render_name,
)
from rulesengine.runtime.journal import SENDING, Delivery

# Values that a file name cannot carry as they are: before, all four were written as UNKNOWN.dcm.
DOTS = [".", "..", "...", " .. "]


def dataset(**values) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def instance(folder: Path, name: str, **values) -> Path:
    """A real instance (pydicom's CT_small.dcm) with a new SOP Instance UID and these values
    (None: without that element)."""
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def delivery(path: Path, number: int = 1) -> Delivery:
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    return Delivery(number, number, "F", str(path), None, uid, None, SENDING, 0, 0.0, None)


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- render_name ------------------------------------------------------------------------------


def test_values_that_clean_to_nothing_give_distinct_visible_names():
    names = [render_name("{PatientID}.dcm", dataset(PatientID=value)) for value in DOTS]
    assert len(set(names)) == len(DOTS), names
    for name in names:
        assert name.endswith(".dcm") and not name.startswith(".") and "UNKNOWN" not in name, name


def test_a_value_changed_to_be_safe_keeps_a_mark_of_what_it_was_and_a_plain_one_is_kept_as_is():
    with_colon = render_name("{StudyDescription}.dcm", dataset(StudyDescription="CHEST: W/O"))
    with_question_mark = render_name("{StudyDescription}.dcm", dataset(StudyDescription="CHEST? W/O"))
    assert with_colon != with_question_mark
    assert with_colon.startswith("CHEST_ W_O~") and with_colon.endswith(".dcm")
    assert render_name("{StudyDescription}.dcm", dataset(StudyDescription="CT HEAD")) == "CT HEAD.dcm"
    # the mark is the value's own: the same value gives the same name every time
    assert render_name("{StudyDescription}.dcm", dataset(StudyDescription="CHEST: W/O")) == with_colon


def test_long_values_that_differ_only_after_the_cut_give_distinct_names():
    first = render_name("{ImageComments}.dcm", dataset(ImageComments="A" * 300 + "1"))
    second = render_name("{ImageComments}.dcm", dataset(ImageComments="A" * 300 + "2"))
    assert first != second
    assert first.startswith("A" * 80) and first.endswith(".dcm")


@pytest.mark.parametrize("template", ["{ImageComments}{StudyDescription}{PatientID}.dcm",
                                      "{PatientID}/{ImageComments}-{StudyDescription}.dcm",
                                      "{ImageComments}{StudyDescription}{PatientComments}.dcm"])
def test_the_extension_survives_a_name_cut_to_fit(template):
    ds = dataset(PatientID="P" * 64, ImageComments="頭部" * 60, StudyDescription="D" * 64,
                 PatientComments="C" * 300)
    rendered = render_name(template, ds)
    assert rendered.endswith(".dcm"), rendered
    assert all(len(part.encode("utf-8")) <= MAX_NAME_BYTES for part in rendered.split(os.sep))
    # cut differently, it is another name
    other = render_name(template, dataset(PatientID="P" * 64, ImageComments="頭部" * 60, StudyDescription="E" * 64,
                                          PatientComments="C" * 299))
    assert other != rendered and other.endswith(".dcm")


@pytest.mark.parametrize("template, extension", [
    ("{SOPInstanceUID}.dcm", ".dcm"),
    ("{StudyInstanceUID}/{SOPInstanceUID}", ""),  # a UID ends the name: its last digits are no extension
    ("{StudyInstanceUID}/image.dcm", ".dcm"),
    ("{PatientID}-{SOPInstanceUID}.DCM", ".DCM"),
    ("{SOPInstanceUID}.tar.gz", ".gz"),
    ("{{{SOPInstanceUID}}}.dcm", ".dcm"),
])
def test_name_extension_is_the_template_s_own(template, extension):
    assert name_extension(template) == extension


# ---- FolderSender ---------------------------------------------------------------------------


def test_distinct_instances_never_share_a_file(tmp_path):
    folder = tmp_path / "out"
    sources = [instance(tmp_path / "in", f"dots{i}.dcm", PatientID=value) for i, value in enumerate(DOTS)]
    # The same value twice: a template without the SOP Instance UID names both alike.
    sources += [instance(tmp_path / "in", f"same{i}.dcm", PatientID="P1") for i in range(2)]
    sender = FolderSender(FolderDestination("F", str(folder), naming="{PatientID}.dcm"))
    sender.open([])
    written = [sender.send(delivery(source, number)) for number, source in enumerate(sources, 1)]

    assert len(set(written)) == len(sources)
    assert sorted(files_in(folder).values()) == sorted(source.read_bytes() for source in sources)
    assert os.path.basename(written[-2]) == "P1.dcm"  # the first takes the plain name
    assert os.path.basename(written[-1]).startswith("P1~") and written[-1].endswith(".dcm")


def test_the_same_instance_delivered_again_replaces_its_own_file(tmp_path):
    folder = tmp_path / "out"
    sources = [instance(tmp_path / "in", f"same{i}.dcm", PatientID="P1") for i in range(3)]
    sender = FolderSender(FolderDestination("F", str(folder), naming="{PatientID}.dcm"))
    sender.open([])
    first = [sender.send(delivery(source)) for source in sources]

    for source in sources:  # the instances corrected and sent again, in another order
        ds = pydicom.dcmread(source)
        ds.InstitutionName = "CORRECTED"
        ds.save_as(source, enforce_file_format=True)
    again = [sender.send(delivery(source)) for source in reversed(sources)]

    assert again == list(reversed(first))
    assert len(files_in(folder)) == 3
    for source, target in zip(sources, first):
        assert Path(target).read_bytes() == source.read_bytes()


def test_a_name_taken_by_something_that_is_not_this_instance_is_left_alone(tmp_path):
    folder = tmp_path / "out"
    source = instance(tmp_path / "in", "a.dcm", PatientID="P1")
    folder.mkdir()
    (folder / "P1.dcm").write_text("an operator's notes, not an instance")
    (folder / "UNKNOWN.dcm").mkdir()
    sender = FolderSender(FolderDestination("F", str(folder), naming="{PatientID}.dcm"))
    written = sender.send(delivery(source))
    assert (folder / "P1.dcm").read_text() == "an operator's notes, not an instance"
    assert Path(written).read_bytes() == source.read_bytes() and Path(written).parent == folder

    no_id = instance(tmp_path / "in", "b.dcm", PatientID=None)
    written = sender.send(delivery(no_id, 2))
    assert (folder / "UNKNOWN.dcm").is_dir() and Path(written).name.startswith("UNKNOWN~")


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    """A file size limit (as a quota would) makes the copy fail half-written: a real failure
    after the temporary file exists. It runs in a process of its own, which the limit binds."""
    source = instance(tmp_path / "in", "a.dcm", PatientID="P1")
    folder = tmp_path / "out"
    script = f"""
import resource, signal, sys
from rulesengine.config import FolderDestination
from rulesengine.runtime.destinations import FolderSender, ItemError
from rulesengine.runtime.journal import SENDING, Delivery
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
sender = FolderSender(FolderDestination("F", {str(folder)!r}))
sender.open([])
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
try:
    sender.send(Delivery(1, 1, "F", {str(source)!r}, None, "1.2", None, SENDING, 0, 0.0, None))
except ItemError as exc:
    print(exc)
    sys.exit(0)
sys.exit("written despite the limit")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "cannot write to" in result.stdout and "File too large" in result.stdout
    assert list(folder.iterdir()) == []
