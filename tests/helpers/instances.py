"""Instances made for a test and instances a peer received, read back by SOP Instance UID;
the router configuration most stress tests share (one listener, one DICOM destination)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from helpers.files import bundled

CT_SMALL = bundled("CT_small.dcm")  # 39 KB, Explicit VR Little Endian


@dataclass(frozen=True)
class Instance:
    path: Path
    sop_instance_uid: str
    number: int


def make_instances(folder: Path, count: int, first_number: int = 1, source: str = CT_SMALL) -> list[Instance]:
    """`count` distinct instances of one new series: each its own SOPInstanceUID and InstanceNumber."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = pydicom.dcmread(source)
    dataset.SeriesInstanceUID = generate_uid()
    made = []
    for number in range(first_number, first_number + count):
        uid = generate_uid()
        dataset.SOPInstanceUID = uid
        dataset.file_meta.MediaStorageSOPInstanceUID = uid
        dataset.InstanceNumber = number
        path = folder / f"{number:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        made.append(Instance(path, uid, number))
    return made


def make_study(folder: Path, series: list[tuple[str, int, int | None]], source: str = CT_SMALL,
               study_uid: str | None = None) -> list[Instance]:
    """One new study of several series, one file each instance: `series` lists (SeriesDescription,
    instance count, SeriesNumber or None to leave it out). Files are named SERIES_INSTANCE.dcm, in
    the order given; the instances of a series are numbered from 1."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = study_uid or generate_uid()
    made = []
    for position, (description, count, series_number) in enumerate(series, start=1):
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SeriesDescription = description
        if series_number is None:
            if "SeriesNumber" in dataset:
                del dataset.SeriesNumber
        else:
            dataset.SeriesNumber = series_number
        for number in range(1, count + 1):
            uid = generate_uid()
            dataset.SOPInstanceUID = uid
            dataset.file_meta.MediaStorageSOPInstanceUID = uid
            dataset.InstanceNumber = number
            path = folder / f"{position:02d}_{number:03d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            made.append(Instance(path, uid, number))
    return made


_HEADERS: dict[tuple[str, int, int], pydicom.Dataset] = {}  # (path, size, mtime) -> header read


def read_header(path: Path) -> pydicom.Dataset:
    """A received file's header, read once for each version of the file: tests poll folders
    with these (wait_until), and reading every file again at each look costs a core."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    header = _HEADERS.get(key)
    if header is None:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if len(_HEADERS) > 100_000:
            _HEADERS.clear()
        _HEADERS[key] = header
    return header


def received_by_uid(folder: Path) -> dict[str, pydicom.Dataset]:
    """What a peer wrote to its folder, read back: SOPInstanceUID -> data set (header only)."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        dataset = read_header(path)
        found[str(dataset.SOPInstanceUID)] = dataset
    return found


def store_router_config(port: int, peer_port: int) -> str:
    """A listener ROUTER on `port` and one DICOM destination STORE that is retried quickly."""
    return f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
destinations:
  STORE: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {peer_port},
           retry: {{delay: 0.2, multiplier: 1, max_attempts: 1000}}}}
"""
