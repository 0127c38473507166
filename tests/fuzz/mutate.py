"""A seeded generator of broken DICOM files, from pydicom's bundled files and generated ones.

`mutants(seed, count)` yields the same mutants for the same seed, and the first N of a
long run are those of a short one (each mutant has a random generator of its own, seeded
with the seed and its number). Each mutant has two forms:

- `data`, a whole file, for the watched folder and dry-run;
- `network`, what a sender's C-STORE would carry: a SOP class, a SOP instance UID, a
  transfer syntax and the data set bytes (None when the mutation is of the file meta
  only, which never travels).

What is done to the bytes (`KINDS`): nothing (the generated bases are broken already), bit flips, truncation, wrong element lengths
(odd, short, long, huge, undefined on a non-sequence), wrong lengths in the file meta
group, bad VRs, elements out of order, stray delimiters, splices of another file, deep
nesting of sequences (generated), garbage (with and without a DICM header), zero-length
files, values the data set's character set cannot hold, and SOP Class, SOP Instance and
transfer syntax UIDs garbled into what no UID holds.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pydicom
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
UID_ROOT = "2.25.6"  # UIDs of generated data sets: 2.25.6<seed><number>, unique and stable

# Small bundled files of many kinds: uncompressed in three encodings, deflated, compressed,
# nested sequences (SR), private elements, character sets.
BUNDLED = ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm",
           "test-SR.dcm", "image_dfl.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm",
           "reportsi.dcm", "rtdose_1frame.dcm", "liver_1frame.dcm")
CHARSETS = ("chrX1.dcm", "chrJapMulti.dcm", "chrRuss.dcm")


@dataclass(frozen=True)
class Base:
    name: str
    data: bytes  # the whole file
    meta_end: int  # where the data set starts (after the preamble, DICM and the file meta)
    sop_class: str
    sop_instance: str
    syntax: str


@dataclass(frozen=True)
class Network:
    sop_class: str
    sop_instance: str
    syntax: str
    dataset: bytes


@dataclass(frozen=True)
class Mutant:
    number: int
    kind: str
    base: str
    data: bytes
    network: Network | None

    @property
    def name(self) -> str:
        return f"{self.number:05d}-{self.kind}-{self.base}.dcm"


# ---- bases ---------------------------------------------------------------------------------


def _meta_end(data: bytes) -> int:
    """Offset of the data set in a Part 10 file (after its file meta group)."""
    if data[128:132] != b"DICM":
        return 0
    offset = 132
    while offset + 8 <= len(data) and data[offset:offset + 2] == b"\x02\x00":
        vr = data[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack("<I", data[offset + 8:offset + 12])[0]
            offset += 12 + length
        else:
            length = struct.unpack("<H", data[offset + 6:offset + 8])[0]
            offset += 8 + length
    return offset


def _base_from_bytes(name: str, data: bytes) -> Base:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    meta = ds.file_meta
    return Base(name, data, _meta_end(data), str(ds.get("SOPClassUID") or meta.MediaStorageSOPClassUID),
                str(ds.get("SOPInstanceUID") or meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID))


def _write(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(out, ds, enforce_file_format=True,
                         implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=syntax != ExplicitVRBigEndian)
    return out.getvalue()


def _dataset(uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.PatientID = "FUZZ"
    ds.PatientName = "FUZZ^GENERATED"
    ds.Modality = "OT"
    return ds


def _generated() -> list[Base]:
    """Data sets made here: private elements, a command element in the data set, nesting
    deep enough to break a recursive reader, long values, big endian, implicit VR."""
    found = []
    ds = _dataset(f"{UID_ROOT}.1")
    block = ds.private_block(0x0029, "FUZZ PRIVATE", create=True)
    block.add_new(0x01, "LO", "private text")
    block.add_new(0x02, "OB", b"\x00\x01\x02\x03")
    inner = Dataset()
    inner.CodeValue = "1"
    block.add_new(0x03, "SQ", [inner])
    found.append(("private.dcm", _write(ds)))

    # pydicom refuses to write group 0000 into a data set; a broken modality does not
    data = _write(_dataset(f"{UID_ROOT}.2"))
    comment = b"a command element in a data set "
    element = struct.pack("<HH", 0x0000, 0x0902) + b"LO" + struct.pack("<H", len(comment)) + comment
    found.append(("command-element.dcm", data[:_meta_end(data)] + element + data[_meta_end(data):]))

    ds = _dataset(f"{UID_ROOT}.3")
    ds.StudyDescription = "x" * 64
    ds.add_new(0x00204000, "LT", "long text " * 1000)
    found.append(("long-values.dcm", _write(ds)))

    found.append(("big-endian.dcm", _write(_dataset(f"{UID_ROOT}.4"), ExplicitVRBigEndian)))
    found.append(("implicit.dcm", _write(_dataset(f"{UID_ROOT}.5"), ImplicitVRLittleEndian)))

    ds = _dataset(f"{UID_ROOT}.6")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstitutionName = "HOSPITAL"
    data = _write(ds).replace(b"HOSPITAL", b"HOSP\xff\xfeAL")  # not UTF-8
    found.append(("invalid-utf8.dcm", data))
    for depth in (64, 1000):
        found.append((f"nested-{depth}.dcm", _nested(f"{UID_ROOT}.7.{depth}", depth)))
    # Made here: their UIDs and encoding are known without reading them back (a 1,000 deep
    # nesting is more than pydicom's recursive reader can take).
    return [Base(name, data, _meta_end(data), SECONDARY_CAPTURE, _uid_of(data), _syntax_of(data))
            for name, data in found]


def _meta(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = io.BytesIO(data)
        stream.seek(132)
        return pydicom.filereader._read_file_meta_info(stream)


def _uid_of(data: bytes) -> str:
    return str(_meta(data).MediaStorageSOPInstanceUID)


def _syntax_of(data: bytes) -> str:
    return str(_meta(data).TransferSyntaxUID)


def _nested(uid: str, depth: int) -> bytes:
    """Content Sequence items nested `depth` deep, in undefined lengths."""
    head = _write(_dataset(uid))
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    sequence = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    body = (sequence + item_start) * depth + (item_end + sequence_end) * depth
    return head + body  # (0040,A730) sorts after every element of the head


@lru_cache(maxsize=1)
def bases() -> tuple[Base, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _bases()


def _bases() -> tuple[Base, ...]:
    found = [(name, Path(get_testdata_file(name, download=False)).read_bytes()) for name in BUNDLED]
    charsets = {Path(p).name: p for p in get_charset_files()}
    found += [(name, Path(charsets[name]).read_bytes()) for name in CHARSETS]
    return tuple(_base_from_bytes(name, data) for name, data in found) + tuple(_generated())


# ---- element headers ---------------------------------------------------------------------------

LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass(frozen=True)
class Header:
    offset: int  # of the tag
    length_at: int  # of the length field
    length_size: int  # 2 or 4
    vr_at: int | None  # of the VR (explicit VR only)


def headers(data: bytes, start: int, end: int, implicit: bool, little: bool) -> list[Header]:
    """Top-level element headers of a data set in data[start:end] (stops at anything odd)."""
    order = "<" if little else ">"
    found = []
    offset = start
    while offset + 8 <= end:
        group, element = struct.unpack(order + "HH", data[offset:offset + 4])
        if implicit:
            header = Header(offset, offset + 4, 4, None)
            length = struct.unpack(order + "I", data[offset + 4:offset + 8])[0]
            value = offset + 8
        else:
            vr = data[offset + 4:offset + 6]
            if vr in LONG_VRS:
                header = Header(offset, offset + 8, 4, offset + 4)
                length = struct.unpack(order + "I", data[offset + 8:offset + 12])[0]
                value = offset + 12
            else:
                header = Header(offset, offset + 6, 2, offset + 4)
                length = struct.unpack(order + "H", data[offset + 6:offset + 8])[0]
                value = offset + 8
        found.append(header)
        if length == 0xFFFFFFFF or (group, element) == (0x7FE0, 0x0010):
            break  # an undefined length (a sequence, encapsulated pixel data): stop here
        offset = value + length
    return found


def _encoding(syntax: str) -> tuple[bool, bool] | None:
    uid = pydicom.uid.UID(syntax)
    if uid == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return None  # its data set is deflated: no headers to find
    return uid.is_implicit_VR, uid.is_little_endian


# ---- mutations --------------------------------------------------------------------------------


def bit_flips(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    data = bytearray(base.data)
    for _ in range(rng.randint(1, 16)):
        position = rng.randrange(base.meta_end, len(data)) if len(data) > base.meta_end else rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data), True


def truncation(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    cut = rng.randrange(base.meta_end, len(base.data)) if rng.random() < 0.8 else rng.randrange(base.meta_end or 1)
    return base.data[:cut], cut >= base.meta_end


def _data_set_headers(base: Base) -> list[Header]:
    encoding = _encoding(base.syntax)
    if encoding is None:
        return []
    return headers(base.data, base.meta_end, len(base.data), *encoding)


def _set_length(data: bytearray, header: Header, value: int, little: bool) -> None:
    order = "<" if little else ">"
    if header.length_size == 2:
        data[header.length_at:header.length_at + 2] = struct.pack(order + "H", value & 0xFFFF)
    else:
        data[header.length_at:header.length_at + 4] = struct.pack(order + "I", value & 0xFFFFFFFF)


def wrong_length(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    found = _data_set_headers(base)
    if not found:
        return bit_flips(rng, base)
    header = rng.choice(found)
    data = bytearray(base.data)
    order = "<" if pydicom.uid.UID(base.syntax).is_little_endian else ">"
    size = "H" if header.length_size == 2 else "I"
    current = struct.unpack(order + size, data[header.length_at:header.length_at + header.length_size])[0]
    value = rng.choice([0, 1, current + 1, max(0, current - 1), current * 2 + 3, rng.randrange(1 << 16)])
    _set_length(data, header, value, order == "<")
    return bytes(data), True


def huge_length(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    found = [h for h in _data_set_headers(base) if h.length_size == 4] or _data_set_headers(base)
    if not found:
        return bit_flips(rng, base)
    header = rng.choice(found)
    data = bytearray(base.data)
    value = rng.choice([0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x40000000, len(data) * 4])
    _set_length(data, header, value, pydicom.uid.UID(base.syntax).is_little_endian)
    return bytes(data), True


def meta_length(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    """A wrong (0002,0000) group length, or a wrong length of another file meta element."""
    found = headers(base.data, 132, base.meta_end, False, True) if base.meta_end else []
    if not found:
        return bit_flips(rng, base)
    data = bytearray(base.data)
    if rng.random() < 0.5 and found[0].length_size == 2 and base.data[132:136] == b"\x02\x00\x00\x00":
        group_length = found[0].length_at + 2
        value = rng.choice([0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, base.meta_end * 3, base.meta_end - 140 - 7])
        data[group_length:group_length + 4] = struct.pack("<I", value & 0xFFFFFFFF)
    else:
        header = rng.choice(found)
        _set_length(data, header, rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, 3]), True)
    return bytes(data), False


def bad_vr(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    found = [h for h in _data_set_headers(base) if h.vr_at is not None]
    if not found:
        return bit_flips(rng, base)
    data = bytearray(base.data)
    for header in rng.sample(found, min(len(found), rng.randint(1, 3))):
        vr = rng.choice([b"XX", b"  ", b"\x00\x00", b"ob", b"SQ", b"UN", b"OB", bytes([rng.randrange(256)] * 2)])
        data[header.vr_at:header.vr_at + 2] = vr
    return bytes(data), True


def out_of_order(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    found = _data_set_headers(base)
    if len(found) < 3:
        return bit_flips(rng, base)
    index = rng.randrange(len(found) - 2)
    first, second, third = found[index], found[index + 1], found[index + 2]
    data = base.data
    swapped = data[:first.offset] + data[second.offset:third.offset] + data[first.offset:second.offset] + \
        data[third.offset:]
    return swapped, True


def stray_delimiter(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    found = _data_set_headers(base)
    position = rng.choice(found).offset if found else base.meta_end
    little = pydicom.uid.UID(base.syntax).is_little_endian
    delimiter = struct.pack("<HHI" if little else ">HHI", 0xFFFE, rng.choice([0xE000, 0xE00D, 0xE0DD]),
                            rng.choice([0, 0xFFFFFFFF, 8]))
    return base.data[:position] + delimiter + base.data[position:], True


def splice(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    other = rng.choice(bases())
    start = rng.randrange(other.meta_end, len(other.data))
    chunk = other.data[start:start + rng.randint(8, 512)]
    position = rng.randrange(base.meta_end, len(base.data))
    return base.data[:position] + chunk + base.data[position + rng.randint(0, 64):], True


def garbage(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    noise = rng.randbytes(rng.randint(1, 4096))
    if rng.random() < 0.5:
        return base.data[:base.meta_end] + noise, True  # a valid file meta, then noise
    return noise, True


def zero_length(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    return b"" if rng.random() < 0.5 else base.data[:base.meta_end], True


def charset_misfit(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    """Bytes no character set allows, in a text value."""
    found = [h for h in _data_set_headers(base) if h.vr_at is not None
             and base.data[h.vr_at:h.vr_at + 2] in (b"LO", b"SH", b"PN", b"LT", b"ST")]
    if not found:
        return bit_flips(rng, base)
    header = rng.choice(found)
    value = header.length_at + header.length_size
    data = bytearray(base.data)
    for position in range(value, min(value + 4, len(data))):
        data[position] = rng.choice([0x1B, 0xFF, 0x80, 0xC3, 0x00])
    return bytes(data), True


def garbled_uid(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    """A character of the SOP Class or Instance UID in the data set, or of the transfer syntax in
    the file meta, made something no UID holds (a flipped bit in a high byte, a letter)."""
    if rng.random() < 0.25 and base.meta_end:
        at = base.data.find(base.syntax.encode(), 128, base.meta_end)
        data, travels = bytearray(base.data), False  # the file meta never travels
    else:
        uid = rng.choice([base.sop_class, base.sop_instance]).encode()
        at = base.data.find(uid, base.meta_end)
        data, travels = bytearray(base.data), True
    if at < 0:
        return bit_flips(rng, base)
    length = len(base.syntax) if not travels else len(uid)
    position = at + rng.randrange(length)
    data[position] = rng.choice([0xAE, 0xB1, ord("x"), ord(" "), data[position] | 0x80])
    return bytes(data), travels


def deep_nesting(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    return _nested(base.sop_instance[:60] + ".9", rng.choice([200, 1000, 3000])), True


def as_is(rng: random.Random, base: Base) -> tuple[bytes, bool]:
    """The base itself: the generated ones are broken enough (a command element in the data
    set, 1,000 nested sequences, text that is not UTF-8 in an ISO_IR 192 data set)."""
    return base.data, True


KINDS = {
    "as-is": as_is, "bitflip": bit_flips, "truncated": truncation, "length": wrong_length, "huge-length": huge_length,
    "meta-length": meta_length, "bad-vr": bad_vr, "out-of-order": out_of_order, "delimiter": stray_delimiter,
    "splice": splice, "garbage": garbage, "empty": zero_length, "charset": charset_misfit,
    "deep-nesting": deep_nesting, "uid": garbled_uid,
}


def mutant(seed: int, number: int) -> Mutant:
    rng = random.Random(f"{seed}:{number}")
    kind = list(KINDS)[number % len(KINDS)]  # every kind in turn: a short run covers them all
    base = rng.choice(bases())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's opinion of the values made here
        data, travels = KINDS[kind](rng, base)
    network = None
    if travels:  # the file meta is as it was: what follows it is the data set a sender would send
        dataset = data[_meta_end(data):] if data[128:132] == b"DICM" else data
        network = Network(base.sop_class, base.sop_instance, base.syntax, dataset)
    return Mutant(number, kind, base.name.removesuffix(".dcm"), data, network)


def mutants(seed: int, count: int):
    for number in range(count):
        yield mutant(seed, number)


def network_file(item: Mutant, folder: Path) -> Path:
    """A file pynetdicom sends as is: a valid file meta naming the SOP class, instance and
    transfer syntax, then the mutated data set bytes, never parsed on the sending side."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = item.network.sop_class
    meta.MediaStorageSOPInstanceUID = item.network.sop_instance
    meta.TransferSyntaxUID = item.network.syntax
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(out, meta, enforce_standard=True)
    path = folder / item.name
    path.write_bytes(out.getvalue() + item.network.dataset)
    return path
