"""How long `blank pixels` takes per instance, as the router runs it: the instance read
without its pixel data, the rules evaluated (the pixel data loaded, decoded when compressed,
blanked), and the copy written to a file; beside the same instance routed by a rule that
does not blank. A 512x512 CT made here (uncompressed, RLE, JPEG 2000 lossless, JPEG-LS
lossless) and pydicom's bundled compressed images; the median of 5, in milliseconds."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, \
    generate_uid

import rulesengine

RUNS = 5
BLANK = 'rule "screen" {\n then {\n blank pixels (0, 0, DataSet.Columns, 40)\n route to OUT\n }\n}\n'
ROUTE = 'rule "route" {\n then route to OUT\n}\n'
BUNDLED = ("SC_rgb_jpeg_dcmtk.dcm", "JPGExtended.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
           "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jls_lossy_line.dcm")


_NAMES = {ExplicitVRLittleEndian: "ct512-uncompressed.dcm", RLELossless: "ct512-rle.dcm",
          JPEG2000Lossless: "ct512-jpeg2000-lossless.dcm", JPEGLSLossless: "ct512-jpeg-ls-lossless.dcm"}


def ct_512(folder: Path, syntax=ExplicitVRLittleEndian) -> Path:
    """A 512x512 16-bit CT slice of noise over a disc, in `syntax`."""
    rows = columns = 512
    y, x = np.mgrid[:rows, :columns]
    disc = ((x - 256) ** 2 + (y - 256) ** 2 < 200 ** 2) * 1000
    pixels = (disc + np.random.default_rng(512).integers(0, 64, (rows, columns))).astype(np.int16)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if syntax != ExplicitVRLittleEndian:
        # pylibjpeg encodes no JPEG-LS; pyjpegls (CharLS) does
        plugin = "pyjpegls" if syntax == JPEGLSLossless else "pylibjpeg"
        ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
    path = folder / _NAMES[syntax]
    ds.save_as(path, enforce_file_format=True)
    return path


def milliseconds(ruleset, path: Path, out: Path) -> float:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        document = rulesengine.Document.read_header(path)
        decision = ruleset.evaluate(document)
        decision.destinations["OUT"].write(out)
        runs.append(time.perf_counter() - started)
        if decision.outcome != "route":
            raise RuntimeError(f"{path.name}: {decision.reason}")
    return statistics.median(runs) * 1000


def table() -> None:
    blank = rulesengine.compile_source(BLANK, ["OUT"])
    route = rulesengine.compile_source(ROUTE, ["OUT"])
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = [ct_512(folder)] + [ct_512(folder, syntax) for syntax in (RLELossless, JPEG2000Lossless,
                                                                           JPEGLSLossless)]
        paths += [Path(get_testdata_file(name, download=False)) for name in BUNDLED]
        print(f"blank pixels (0, 0, DataSet.Columns, 40): read, evaluated, written (median of {RUNS}):")
        print(f"  {'instance':30} {'size':>10} {'routed':>9} {'blanked':>9}")
        for path in paths:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            size = f"{header.Columns}x{header.Rows}"
            print(f"  {path.name:30} {size:>10} {milliseconds(route, path, folder / 'out.dcm'):6.1f} ms "
                  f"{milliseconds(blank, path, folder / 'out.dcm'):6.1f} ms")


if __name__ == "__main__":
    table()
