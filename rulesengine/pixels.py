"""Rectangles of the pixel data set to one value: burned-in text blanked (`blank pixels`).

Uncompressed pixel data is edited where it lies, in its own byte order and transfer syntax:
only the samples inside the rectangles change. Compressed (encapsulated) pixel data is
decoded first (pydicom with the pylibjpeg plugins; JPEG-LS with pyjpegls, that is CharLS),
then written uncompressed in Explicit VR Little Endian: the file meta's transfer syntax
changes, YBR colour decoded to RGB says so in Photometric Interpretation, and colour is
written with Planar Configuration 0. Uncompressed YBR colour is written as RGB too (its
transfer syntax kept), so that a fill value means one colour in every colour image.

A rectangle is (x, y, width, height) in pixels, from the top left corner (column 0, row 0),
as CTP's DicomPixelAnonymizer writes its regions; it applies to every frame. The part of a
rectangle outside the image is ignored (a rectangle wholly outside changes nothing). The fill
value is a stored pixel value (before any rescale or LUT), one for every sample, or one per
sample for colour: it must fit Bits Stored and Pixel Representation.

Every failure is a PixelError whose message is the reason, in words.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import pydicom.uid
from pydicom.dataset import Dataset

PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
_NAMES = {PIXEL_DATA: "PixelData", FLOAT_PIXEL_DATA: "FloatPixelData", DOUBLE_FLOAT_PIXEL_DATA: "DoubleFloatPixelData"}
MAX_DECODED_BYTES = 4 << 30  # a declared size past this is a damaged header, not an image to decode
_NATIVE = {pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian,
           pydicom.uid.DeflatedExplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian}
# The one decoder of a transfer syntax, where pydicom's first choice will not do. JPEG-LS: CharLS
# (pyjpegls) alone, because libjpeg (pylibjpeg), which pydicom tries first, returns a truncated or
# damaged JPEG-LS stream as an image (of zeros) instead of failing, and the blanked copy would carry it.
_JPEG_LS = (pydicom.uid.JPEGLSLossless, pydicom.uid.JPEGLSNearLossless)
_DECODER = {syntax: "pyjpegls" for syntax in _JPEG_LS}


class PixelError(Exception):
    """Pixel data that cannot be blanked as asked; the message says why."""


class Region(NamedTuple):
    x: int
    y: int
    width: int
    height: int

    def __str__(self) -> str:
        return f"({self.x}, {self.y}, {self.width}, {self.height})"


def region(values: Sequence[Any], number: int) -> Region:
    """Region number `number` (from 1) from its four evaluated values; PixelError when one is
    missing, not a whole number, or the size is not positive."""
    names = ("x", "y", "width", "height")
    whole = []
    for name, value in zip(names, values):
        if value in (None, "", ()):
            raise PixelError(f"region {number}: its {name} has no value")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise PixelError(f"region {number}: its {name} is {value!r}, not a number")
        try:
            number_value = float(value)
        except ValueError:
            raise PixelError(f"region {number}: its {name} is {value!r}, not a number") from None
        if not math.isfinite(number_value) or number_value != int(number_value):
            raise PixelError(f"region {number}: its {name} is {value!r}, not a whole number of pixels")
        whole.append(int(number_value))
    result = Region(*whole)
    if result.width <= 0 or result.height <= 0:
        raise PixelError(f"region {number} {result}: its width and height must be at least 1")
    return result


def pixel_data_tag(dataset: Dataset) -> int:
    """The tag of the data set's pixel data (integer, float or double float); PixelError if none."""
    tag = next((tag for tag in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA) if tag in dataset._dict), None)
    if tag is None:
        raise PixelError("there is no pixel data to blank")
    return tag


def blank(dataset: Dataset, file_meta: Dataset, regions: Sequence[Region], fill: Any = 0) -> list[tuple[str, Any, Any]]:
    """Set every sample inside `regions` to `fill`, in every frame. `dataset` holds the pixel data
    (the caller loads it); `file_meta` gets the new transfer syntax when compressed data is decoded.
    Returns what changed, as (path, old, new) for the document's list of edits."""
    tag = pixel_data_tag(dataset)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    changes: list[tuple[str, Any, Any]] = []
    try:
        element = dataset[tag]
    except Exception as exc:  # noqa: BLE001 - whatever pydicom raises: the element is unreadable
        raise PixelError(f"the pixel data cannot be read: {exc}") from None
    if not isinstance(element.value, (bytes, bytearray)) or not element.value:
        raise PixelError("the pixel data is empty")
    geometry = _geometry(dataset, tag)
    value = _fill_value(fill, geometry)  # before any decoding: a fill value that cannot be is said first
    encapsulated = element.is_undefined_length or (syntax is not None and syntax not in _NATIVE)
    if encapsulated:
        decoded = geometry.frames * geometry.rows * geometry.columns * geometry.samples * int(geometry.dtype[1:])
        if decoded > MAX_DECODED_BYTES:
            raise PixelError(f"the pixel data would take {decoded / (1 << 30):.1f} GiB decoded "
                             f"({geometry.columns}x{geometry.rows}, {geometry.frames} frames); "
                             f"at most {MAX_DECODED_BYTES >> 30} GiB are decoded")
        changes += _decode(dataset, file_meta, syntax)
        element = dataset[tag]
        geometry = _geometry(dataset, tag)
    little = syntax != pydicom.uid.ExplicitVRBigEndian or encapsulated
    if not encapsulated and tag == PIXEL_DATA and dataset.get("PhotometricInterpretation") in ("YBR_FULL",
                                                                                              "YBR_FULL_422"):
        changes += _to_rgb(dataset, little)
        element = dataset[tag]
        geometry = _geometry(dataset, tag)
    raw = bytes(element.value)
    # Big endian OW holds 16-bit words: 8-bit samples come swapped in pairs (as pydicom reads them).
    swapped = not little and geometry.dtype.endswith("1") and element.VR == "OW"
    if swapped:
        raw = _swap_pairs(raw)
    buffer = bytearray(raw)  # the one copy: the array below is a view of it, edited in place
    array = _array(buffer, geometry, little)
    inside = 0
    for each in regions:
        left, top = max(each.x, 0), max(each.y, 0)
        right, bottom = min(each.x + each.width, geometry.columns), min(each.y + each.height, geometry.rows)
        if left >= right or top >= bottom:
            continue  # wholly outside the image
        inside += 1
        if geometry.planar:
            for sample in range(geometry.samples):
                array[:, sample, top:bottom, left:right] = value[sample]
        else:
            array[:, top:bottom, left:right, :] = value
    data = bytes(buffer)  # the padding byte, if any, kept
    if swapped:
        data = _swap_pairs(data)
    element.value = data
    shown = ", ".join(str(each) for each in regions)
    frames = f"{geometry.frames} frames" if geometry.frames != 1 else "1 frame"
    outside = "" if inside == len(regions) else f"; {len(regions) - inside} outside the image"
    changes.append((f"DataSet.{_NAMES[tag]}", f"{geometry.columns}x{geometry.rows}, {frames}",
                    f"{shown} set to {fill!r}{outside}"))
    return changes


class _Geometry(NamedTuple):
    rows: int
    columns: int
    frames: int
    samples: int
    planar: bool
    dtype: str  # numpy's type code, without byte order: u2, i2, f4 ...
    bits_stored: int
    signed: bool


def _geometry(ds: Dataset, tag: int) -> _Geometry:
    def number(keyword: str, default: int | None = None) -> int:
        value = ds.get(keyword, default)
        if value in (None, ""):
            if default is not None:
                return default
            raise PixelError(f"the pixel data cannot be blanked: {keyword} is missing")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise PixelError(f"the pixel data cannot be blanked: {keyword} is {value!r}") from None

    rows, columns = number("Rows"), number("Columns")
    frames, samples = number("NumberOfFrames", 1), number("SamplesPerPixel", 1)
    if min(rows, columns, frames, samples) < 1:
        raise PixelError(f"the pixel data cannot be blanked: {columns}x{rows} pixels, {frames} frames, "
                         f"{samples} samples per pixel")
    planar = samples > 1 and number("PlanarConfiguration", 0) == 1
    if tag == FLOAT_PIXEL_DATA:
        return _Geometry(rows, columns, frames, samples, planar, "f4", 32, True)
    if tag == DOUBLE_FLOAT_PIXEL_DATA:
        return _Geometry(rows, columns, frames, samples, planar, "f8", 64, True)
    allocated = number("BitsAllocated")
    stored = number("BitsStored", allocated)
    signed = number("PixelRepresentation", 0) == 1
    if allocated not in (8, 16, 32, 64):
        raise PixelError(f"pixel data of {allocated} bits allocated cannot be blanked (8, 16, 32 or 64 can)")
    if not 1 <= stored <= allocated:
        raise PixelError(f"the pixel data cannot be blanked: BitsStored is {stored}, BitsAllocated {allocated}")
    return _Geometry(rows, columns, frames, samples, planar, f"{'i' if signed else 'u'}{allocated // 8}", stored,
                     signed)


def _array(data: bytearray, geometry: _Geometry, little: bool):
    import numpy as np  # only documents that blank pixels pay for importing it

    dtype = np.dtype(("<" if little else ">") + geometry.dtype)
    count = geometry.frames * geometry.rows * geometry.columns * geometry.samples
    if len(data) < count * dtype.itemsize:
        raise PixelError(f"the pixel data holds {len(data)} bytes; {geometry.columns}x{geometry.rows} pixels, "
                         f"{geometry.frames} frame(s) of {geometry.samples} sample(s) of {dtype.itemsize} byte(s) "
                         f"need {count * dtype.itemsize}")
    flat = np.frombuffer(data, dtype=dtype, count=count)
    if geometry.planar:
        return flat.reshape(geometry.frames, geometry.samples, geometry.rows, geometry.columns)
    return flat.reshape(geometry.frames, geometry.rows, geometry.columns, geometry.samples)


def _swap_pairs(data: bytes) -> bytes:
    import numpy as np

    even = data + b"\0" * (len(data) % 2)
    return np.frombuffer(even, dtype=">u2").astype("<u2").tobytes()[:len(data)]


def _fill_value(fill: Any, geometry: _Geometry) -> list:
    values = list(fill) if isinstance(fill, (list, tuple)) else [fill] * geometry.samples
    if len(values) != geometry.samples:
        raise PixelError(f"the fill value has {len(values)} values; the image has {geometry.samples} "
                         "sample(s) per pixel")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PixelError(f"the fill value {value!r} is not a number")
        if geometry.dtype[0] == "f":
            out.append(float(value))
            continue
        if value != int(value):
            raise PixelError(f"the fill value {value!r} is not a whole number: the pixel data holds integers")
        value = int(value)
        low, high = ((-(1 << (geometry.bits_stored - 1)), (1 << (geometry.bits_stored - 1)) - 1) if geometry.signed
                     else (0, (1 << geometry.bits_stored) - 1))
        if not low <= value <= high:
            kind = "signed" if geometry.signed else "unsigned"
            raise PixelError(f"the fill value {value} does not fit {geometry.bits_stored} bits stored, {kind} "
                             f"({low} to {high})")
        out.append(value)
    return out


def _to_rgb(dataset: Dataset, little: bool) -> list[tuple[str, Any, Any]]:
    """Uncompressed YBR colour as RGB, as pydicom decodes it: a fill value then means the same
    colour in every colour image, and YBR_FULL_422's shared colour needs no special case."""
    before = {keyword: dataset.get(keyword) for keyword in ("PhotometricInterpretation", "PlanarConfiguration")}
    try:
        rgb = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder failure: the data cannot be converted
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PixelError(f"the {before['PhotometricInterpretation']} pixel data cannot be read as RGB: {reason}") from None
    data = rgb.astype(rgb.dtype.newbyteorder("<" if little else ">")).tobytes()
    dataset.PixelData = data + b"\0" * (len(data) % 2)
    dataset["PixelData"].VR = "OB" if rgb.dtype.itemsize == 1 else "OW"
    dataset.PhotometricInterpretation = "RGB"
    dataset.PlanarConfiguration = 0
    return [(f"DataSet.{keyword}", old, dataset.get(keyword)) for keyword, old in before.items()
            if dataset.get(keyword) != old]


def _decode(dataset: Dataset, file_meta: Dataset, syntax) -> list[tuple[str, Any, Any]]:
    """Compressed pixel data decoded in place: native, Explicit VR Little Endian from now on."""
    if syntax is None:
        raise PixelError("the pixel data is compressed, and there is no transfer syntax saying how")
    name = getattr(syntax, "name", str(syntax))
    before = {keyword: dataset.get(keyword) for keyword in ("PhotometricInterpretation", "PlanarConfiguration")}
    dataset.file_meta = file_meta
    plugin = _DECODER.get(syntax, "")
    if plugin and plugin not in _available_plugins(syntax):
        raise PixelError(f"the pixel data ({name}) cannot be decoded: a decoder is missing ({plugin} is not "
                         "installed)")
    if syntax in _JPEG_LS:
        _refuse_cut_short(dataset, name)
    try:
        dataset.decompress(generate_instance_uid=False, decoding_plugin=plugin)
    except ImportError as exc:
        raise PixelError(f"the pixel data ({name}) cannot be decoded: a decoder is missing ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure: the data cannot be decoded
        raise PixelError(f"the pixel data ({name}) cannot be decoded: {_decoder_reason(exc)}") from None
    changes = [("FileMeta.TransferSyntaxUID", str(syntax), str(pydicom.uid.ExplicitVRLittleEndian))]
    for keyword, old in before.items():
        new = dataset.get(keyword)
        if new != old:
            changes.append((f"DataSet.{keyword}", old, new))
    return changes


def _refuse_cut_short(dataset: Dataset, name: str) -> None:
    """A JPEG-LS frame that does not end with its end-of-image marker (after any padding) is cut
    short, and CharLS would refuse it too, but only after seconds per frame (holding the
    interpreter meanwhile): refused here, at once."""
    from pydicom.encaps import generate_frames

    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
        for number, frame in enumerate(generate_frames(dataset.PixelData, number_of_frames=frames), 1):
            if not frame.rstrip(b"\0").endswith(b"\xff\xd9"):
                shown = f"frame {number}" if frames > 1 else "the frame"
                raise PixelError(f"the pixel data ({name}) cannot be decoded: {shown} is cut short "
                                 "(no end-of-image marker)")
    except PixelError:
        raise
    except Exception:  # noqa: BLE001 - fragments that cannot be split into frames: the decoder says why
        return


def _available_plugins(syntax) -> tuple[str, ...]:
    from pydicom.pixels import get_decoder

    return get_decoder(syntax).available_plugins


def _decoder_reason(exc: Exception) -> str:
    """The decoder's own words, on one line. pydicom heads the reasons of its plugins with a line
    that ends in a colon ("... raised by all available plugins:"): the reasons are what says why."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[0].endswith(":"):
        return "; ".join(lines[1:])
    return lines[0]
