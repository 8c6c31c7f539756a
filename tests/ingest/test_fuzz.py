"""Fuzzing header parsing and series assembly with hypothesis: real files, any header, our errors only.

Each example writes a small series to disk with pydicom: every geometry, size, pixel-format and
rescale attribute either well formed, missing, or raw bytes of any multiplicity (non-numbers,
NaN, inf, huge, negative, zero), on one slice or on all of them, and pixel data of the right,
a short or a long length. Then header reading, discovery and loading run on it:

- ``read_file_header`` never raises (a bad header is a ``NotDicom`` with its reason);
- ``discover`` and ``load_series`` raise nothing but bmdpipe's own errors (``bmdpipe/errors.py``);
- a series that loads has a sane geometry: finite positive spacing, an orthonormal direction,
  finite origin and voxels, the header's image size.

Bounded for CI: ``BMDPIPE_FUZZ_EXAMPLES`` examples (default 100, ~5 s), derandomised (the same
examples on every run); set it to thousands, and ``BMDPIPE_FUZZ_RANDOM=1`` for new examples on
each run, to search harder. Every bug found is kept as an ``@example``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from bmdpipe.config import IngestSettings, PseudonymSettings
from bmdpipe.errors import BmdpipeError, SeriesError
from bmdpipe.ingest import discover, load_series
from bmdpipe.ingest._header import FileHeader, NotDicom, read_file_header

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SETTINGS = IngestSettings(min_slices=1)
FUZZ = settings(max_examples=int(os.environ.get("BMDPIPE_FUZZ_EXAMPLES", "100")), deadline=None,
                derandomize="BMDPIPE_FUZZ_RANDOM" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: attribute -> (VR, well-formed value of slice k of a series of rows x columns pixels)
WELL_FORMED = {
    "ImagePositionPatient": ("DS", lambda k, r, c: [-10.0, -20.0, 30.0 + 2.5 * k]),
    "ImageOrientationPatient": ("DS", lambda k, r, c: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    "PixelSpacing": ("DS", lambda k, r, c: [0.8, 0.7]),
    "SliceThickness": ("DS", lambda k, r, c: 2.5),
    "RescaleSlope": ("DS", lambda k, r, c: 1.0),
    "RescaleIntercept": ("DS", lambda k, r, c: -1024.0),
    "Rows": ("US", lambda k, r, c: r),
    "Columns": ("US", lambda k, r, c: c),
    "BitsAllocated": ("US", lambda k, r, c: 16),
    "BitsStored": ("US", lambda k, r, c: 16),
    "HighBit": ("US", lambda k, r, c: 15),
    "PixelRepresentation": ("US", lambda k, r, c: 1),
    "SamplesPerPixel": ("US", lambda k, r, c: 1),
    "PhotometricInterpretation": ("CS", lambda k, r, c: "MONOCHROME2"),
    "NumberOfFrames": ("IS", lambda k, r, c: None),
    "Modality": ("CS", lambda k, r, c: "CT"),
    "SOPClassUID": ("UI", lambda k, r, c: CT_IMAGE),
    "ImageType": ("CS", lambda k, r, c: ["ORIGINAL", "PRIMARY", "AXIAL"]),
    "RescaleType": ("LO", lambda k, r, c: None),
    "GantryDetectorTilt": ("DS", lambda k, r, c: None),
    "KVP": ("DS", lambda k, r, c: 120.0),
}

_NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda f: f"{f:.6g}"),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["", " ", "abc", "NaN", "-inf", "1e400", "1,5", "0x10", "--1", "1.2.3", "\x00", "é"]),
)


@st.composite
def raw_value(draw, vr: str) -> bytes:
    """Bytes of an element of ``vr`` as a broken export might hold them (any multiplicity or length)."""
    if vr == "US":
        values = st.sampled_from([0, 1, 2, 3, 7, 8, 12, 15, 32, 64, 4096, 4097, 65535])
        return b"".join(v.to_bytes(2, "little") for v in draw(st.lists(values, min_size=0, max_size=3)))
    if vr in ("DS", "IS"):
        text = "\\".join(draw(st.lists(_NUMBER_TEXT, min_size=0, max_size=7)))
    else:
        text = "\\".join(draw(st.lists(st.text(max_size=12), max_size=4)))
    data = text.encode("utf-8", "surrogatepass")
    return data + b" " * (len(data) % 2)


@st.composite
def series_specs(draw):
    """(rows, columns, per-slice attribute edits, pixel data length change, transfer syntax)."""
    n = draw(st.integers(1, 4))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    edits: list[dict] = [{} for _ in range(n)]
    for keyword in draw(st.lists(st.sampled_from(sorted(WELL_FORMED)), max_size=4, unique=True)):
        vr = WELL_FORMED[keyword][0]
        change = draw(st.one_of(st.just(None), raw_value(vr)))  # None: the attribute is missing
        slices = range(n) if draw(st.booleans()) else [draw(st.integers(0, n - 1))]
        for k in slices:
            edits[k][keyword] = change
    pixel_bytes = draw(st.sampled_from([0, 0, 0, -1, -rows * cols, 2, None]))  # None: no PixelData
    syntax = draw(st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return rows, cols, edits, pixel_bytes, syntax


def _set_raw(ds: Dataset, keyword: str, vr: str, value: bytes, syntax: str) -> None:
    """``value`` written as it is (pydicom would refuse or convert most of them)."""
    tag = Tag(keyword)
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, syntax == ImplicitVRLittleEndian, True)


def write_series(folder: Path, spec) -> list[Path]:
    """Write the series of ``spec`` (files named in no particular order)."""
    with _writing_unchecked():
        return _write_series(folder, spec)


@contextmanager
def _writing_unchecked():
    """pydicom writes broken values without logging about them."""
    saved = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.writing_validation_mode = saved


def _write_series(folder: Path, spec) -> list[Path]:
    rows, cols, edits, pixel_bytes, syntax = spec
    series_uid, study_uid = generate_uid(), generate_uid()
    paths = []
    for k, edit in enumerate(edits):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = syntax
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = sop_uid, series_uid, study_uid
        ds.PatientID = "FUZZ-1"
        for keyword, (vr, good) in WELL_FORMED.items():
            value = edit.get(keyword, good(k, rows, cols))
            if keyword in edit and value is not None:
                _set_raw(ds, keyword, vr, value, syntax)
            elif value is not None:
                setattr(ds, keyword, value)
        stored = (np.arange(rows * cols, dtype="<i2") + 100 * k).tobytes()
        if pixel_bytes is not None:
            n_bytes = max(0, len(stored) + pixel_bytes)
            data = (stored * 2)[:n_bytes]
            ds.add_new("PixelData", "OW", data + b"\0" * (len(data) % 2))
        path = folder / f"f{(7 * k) % len(edits)}_{k}"
        ds.set_original_encoding(syntax == ImplicitVRLittleEndian, True, "iso8859")  # raw elements stay raw
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def assert_sane(vol, ref) -> None:
    """What a loaded volume must be whatever header it came from."""
    assert vol.array.ndim == 3 and vol.array.dtype == np.float32 and vol.array.shape[0] >= 1
    assert vol.array.shape[1:] == (ref.rows, ref.columns)
    assert np.isfinite(vol.array).all()
    assert all(np.isfinite(s) and s > 0 for s in vol.spacing), vol.spacing
    assert np.isfinite(vol.origin).all()
    np.testing.assert_allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-6)


@FUZZ
@given(spec=series_specs())
# an intercept beyond float range was taken for 0 (HU off by 1024) or, decoded by GDCM, made inf HU
@example(spec=(1, 1, [{"RescaleIntercept": b"1e400 ", "BitsStored": None}, {"BitsAllocated": None}], 0,
               ExplicitVRLittleEndian))
def test_series_assembly_raises_only_our_errors(spec):
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_series(Path(tmp), spec)
        for p in paths:
            assert isinstance(read_file_header(p), (FileHeader, NotDicom))
        found = discover([Path(tmp)], SETTINGS, PseudonymSettings(key="k"))
        assert sum(s.n_files for s in found.series) + sum(s.n_files for s in found.skipped) == len(paths)
        event(f"{len(found.series)} series, {len(found.skipped)} skipped")
        for ref in found.series:
            try:
                vol = load_series(ref, SETTINGS)
            except BmdpipeError as exc:
                assert str(exc)
                event(f"refused at {exc.stage}")
                continue
            event("loaded")
            assert_sane(vol, ref)


@FUZZ
@given(head=st.binary(max_size=300), cut=st.integers(0, 2000))
def test_header_parsing_of_any_bytes(head, cut):
    """Bytes after a valid preamble, or a valid file cut anywhere, give a FileHeader or a NotDicom."""
    with tempfile.TemporaryDirectory() as tmp:
        good = write_series(Path(tmp), (4, 4, [{}], 0, ExplicitVRLittleEndian))[0]
        data = good.read_bytes()
        for content in (b"\0" * 128 + b"DICM" + head, data[:cut] + head, head):
            good.write_bytes(content)
            assert isinstance(read_file_header(good), (FileHeader, NotDicom))


@pytest.mark.parametrize("keyword, value", [("RescaleIntercept", b"1e400 "), ("RescaleSlope", b"abc "),
                                            ("RescaleIntercept", b"-1024\\0 ")])
def test_unreadable_rescale_refuses_the_series(tmp_path, keyword, value):
    """A rescale that is there but is not one finite number was taken for the default (intercept 0: every
    HU 1024 too high, silently); the series is refused, naming the file."""
    paths = write_series(tmp_path, (3, 3, [{}, {keyword: value}, {}], 0, ExplicitVRLittleEndian))
    (ref,) = discover([tmp_path], SETTINGS, PseudonymSettings(key="k")).series
    with pytest.raises(SeriesError, match=f"RescaleSlope/RescaleIntercept of {paths[1].name} is not a number"):
        load_series(ref, SETTINGS)
