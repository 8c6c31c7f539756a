"""No PHI in any output: markers planted in every DICOM PS3.15 Annex E tag never come out.

Two synthetic series (a Latin-1 and a UTF-8 header, with a localizer) carry a marker in every
attribute of the Basic Application Level Confidentiality Profile (Table E.1-1, as listed by the
``dicom-anonymizer`` package), in private tags and in sequence items. ``bmdpipe run`` runs on
them as a subprocess, with QC images, and every byte it writes or prints is searched for the
markers: the CSVs, the SQLite file, the NIfTI files (decompressed), the PNGs (raw, their text
chunks, and every text matplotlib drew into them), stdout and stderr, in each encoding and case.

Kept on purpose: SeriesInstanceUID (the contract's ``series_uid``, how a site finds the scan
again) and the descriptions written out, cleaned of identifying words
(``bmdpipe/ingest/_descriptors.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import importlib
import os
import pkgutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset

from bmdpipe.store.csv import read_csv_rows
from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti

pytest.importorskip("dicomanonymizer", reason="the Annex E tag list comes from dicom-anonymizer (dev extra)")

REPO = Path(__file__).resolve().parents[1]
KEY = "zqphi-key-of-the-trial"        # the pseudonym key is a secret: it must not come out either
OTHER_KEY = "zqphi-other-key"
MARK = "ZQPHI"                        # every planted text holds it (any case, any encoding)
DATE = "19370511"                     # every DA; also searched as 1937-05-11, 11.05.1937 ...
TIME = "041517"
NUMBERS = ("7319.4651", "918273", "087Y")  # DS, IS, AS values
UID_ROOT = "2.25.6661337"             # every UI but SeriesInstanceUID
KEPT = {"SeriesInstanceUID"}          # the contract's series_uid

#: per series: (SpecificCharacterSet, PatientName with non-ASCII letters, PatientID)
CHARSETS = {
    "latin1": ("ISO_IR 100", "Zqphimüller^Zqphijürgen^Zqphiweiß", "ZQPHI-PID-4711"),
    "utf8": ("ISO_IR 192", "Zqphiπαπαδόπουλος^Zqphiζωούλα^Zqphi山田太郎", "ZQPHI-PID-0815"),
}


def profile_tags() -> list[tuple[int, ...]]:
    """(group, element[, masks]) of every attribute in Table E.1-1, newest edition shipped."""
    import dicomanonymizer.dicom_anonymization_databases as dbs

    newest = max(m.name for m in pkgutil.iter_modules(dbs.__path__) if m.name.startswith("dicomfields_"))
    return sorted(importlib.import_module(f"{dbs.__name__}.{newest}").ALL_TAGS)


def _marker_value(i: int, vr: str, keyword: str, k: int):
    """A value of VR ``vr`` that is the i-th marker; None for VRs not planted."""
    text = {"PN": f"Zqphi{i:03d}^Given{MARK}{i:03d}", "UR": f"http://{MARK.lower()}{i:03d}.example.org",
            "DA": DATE, "TM": TIME, "DT": DATE + TIME, "DS": NUMBERS[0], "IS": NUMBERS[1], "AS": NUMBERS[2]}
    if vr in text:
        return text[vr]
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "AE", "CS"):
        return f"{MARK}{i:03d}"
    if vr == "UI":
        return f"{UID_ROOT}{i:04d}" + (f"{k:05d}" if keyword == "SOPInstanceUID" else "")
    if vr in ("OB", "OB or OW", "UN"):
        return f"{MARK}{i:03d}".encode()
    if vr == "SQ":
        item = Dataset()
        item.CodeMeaning = f"{MARK}{i:03d}"
        return [item]
    return None


def plant_phi(path: Path, k: int, charset: str, name: str, patient_id: str) -> list[str]:
    """Rewrite ``path`` with a marker in every Annex E attribute; returns the keywords planted."""
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = charset
    planted = []
    for i, tag in enumerate(profile_tags()):
        g, e = tag[:2]
        if g < 0x0008 or e == 0:  # command / file meta groups, group lengths
            continue
        try:
            vr, keyword = dictionary_VR((g << 16) | e), keyword_for_tag((g << 16) | e)
        except KeyError:
            continue
        value = None if keyword in KEPT else _marker_value(i, vr, keyword, k)
        if value is not None:
            ds.add_new((g << 16) | e, "OB" if isinstance(value, bytes) else vr, value)
            planted.append(keyword)
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.OtherPatientIDs = [f"{MARK}-OTHER-1", f"{MARK}-OTHER-2"]
    ds.PatientBirthDate = DATE
    ds.AccessionNumber = f"{MARK}ACC9"
    # the descriptions written out repeat identifying values: they come out cleaned
    family = name.split("^")[0]
    ds.SeriesDescription = f"QCT LSPINE {family.upper()} {patient_id} 11.05.1937 {MARK}ACC9"
    ds.ContrastBolusAgent = f"IOPAMIDOL {family.lower()}"
    ds.add_new(0x00291010, "LO", f"{MARK} private")  # a private tag (Annex E removes them)
    ds.add_new(0x00290010, "LO", f"{MARK} CREATOR")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return planted


@pytest.fixture(scope="module")
def phi_inputs(tmp_path_factory):
    """Two series with PHI in every identifying tag, their labels and a manifest (no study ids)."""
    root = tmp_path_factory.mktemp("phi")
    lines = ["path,study_id,timepoint,phantom,labels,levels"]
    planted = set()
    for seed, (case_name, (charset, name, pid)) in zip((300, 301), CHARSETS.items()):
        spec = CaseSpec(levels=("L3", "L4"), spacing_mm=(2.0, 1.5, 1.5),
                        phantom="mindways" if case_name == "latin1" else None)
        case = make_case(seed, spec)
        files = write_dicom_series(case, root / case_name / "dicom", add_localizer=True, add_stray_files=False)
        for k, f in enumerate(files):
            planted.update(plant_phi(f, k, charset, name, pid))
        write_labels_nifti(case, root / case_name / "labels.nii.gz")
        phantom = "mindways-model3-ct" if case_name == "latin1" else "none"
        lines.append(f"{case_name}/dicom,,baseline,{phantom},{case_name}/labels.nii.gz,")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root, planted


DRIVER = textwrap.dedent("""
    # bmdpipe's CLI with every text matplotlib draws (titles, labels, legends) logged to a file
    import os
    import sys

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.text

    _draw = matplotlib.text.Text.draw

    def _draw_logged(self, renderer):
        with open(os.environ["QC_TEXT_LOG"], "a", encoding="utf-8") as fh:
            fh.write(self.get_text() + "\\n")
        return _draw(self, renderer)

    matplotlib.text.Text.draw = _draw_logged
    from bmdpipe.cli import app

    app(prog_name="bmdpipe")
""")


def run_cli(tmp: Path, args: list, *, key: str | None = KEY) -> subprocess.CompletedProcess:
    """``bmdpipe run ARGS -v`` in a subprocess; the texts drawn in the QC images go to tmp/qc_text.log."""
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "BMDPIPE_PSEUDONYM_KEY"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               QC_TEXT_LOG=str(tmp / "qc_text.log"), COLUMNS="200")
    if key is not None:
        env["BMDPIPE_PSEUDONYM_KEY"] = key
    return subprocess.run([sys.executable, str(driver), "run", *map(str, args), "-v"], capture_output=True,
                          text=True, env=env, timeout=900, cwd=tmp)


@pytest.fixture(scope="module")
def phi_run(phi_inputs, tmp_path_factory):
    root, planted = phi_inputs
    tmp = tmp_path_factory.mktemp("phi_run")
    out = tmp / "out"
    proc = run_cli(tmp, ["--manifest", root / "manifest.csv", "--out", out])
    return out, proc, tmp


def _png_texts(data: bytes) -> list[bytes]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt; compressed ones inflated)."""
    import struct
    import zlib

    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            out.append(body)
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out.append(key + b"\0" + zlib.decompress(rest[1:]))
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            text = rest.split(b"\0", 2)[-1]
            out.append(key + b"\0" + (zlib.decompress(text) if compressed else text))
        pos += 12 + length
    return out


def output_blobs(out: Path) -> dict[str, bytes]:
    """Every output as bytes: raw files, gzip members inflated, PNG text chunks, the database's rows."""
    blobs = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        blobs[str(p)] = data
        if p.name.endswith(".gz"):
            blobs[f"{p} (inflated)"] = gzip.decompress(data)
        if p.suffix == ".png":
            blobs[f"{p} (text chunks)"] = b"\n".join(_png_texts(data))
        if p.suffix == ".sqlite":
            with sqlite3.connect(p) as conn:
                blobs[f"{p} (rows)"] = "\n".join(conn.iterdump()).encode("utf-8")
    return blobs


def _encodings(text: str) -> set[bytes]:
    """``text`` in upper, lower and its own case, in the encodings a file or log might use."""
    out = set()
    for variant in {text, text.upper(), text.lower(), text.casefold()}:
        for enc in ("utf-8", "latin-1", "utf-16-le", "utf-16-be", "cp1252"):
            try:
                out.add(variant.encode(enc))
            except UnicodeEncodeError:
                pass
    return out


def forbidden() -> set[bytes]:
    """Byte strings no output may hold: the marker, the names' non-ASCII words, dates, numbers, UIDs, keys."""
    words = {MARK, UID_ROOT, KEY, OTHER_KEY, TIME, "04:15:17", *NUMBERS}
    words |= {"1937-05-11", "11.05.1937", "05/11/1937", "11/05/1937", "1937/05/11", DATE}
    for _, name, pid in CHARSETS.values():
        words |= {pid, name, *name.split("^"), *(w[5:] for w in name.split("^"))}  # also without 'Zqphi'
    return {b for w in words for b in _encodings(w)}


def leaks(blobs: dict[str, bytes]) -> list[str]:
    """'where: what' for every forbidden byte string found."""
    bad = sorted(forbidden(), key=len, reverse=True)
    return [f"{where}: {needle!r}" for where, data in blobs.items() for needle in bad if needle in data]


def test_run_succeeds_on_phi_laden_series(phi_run, phi_inputs):
    """Both series are processed (markers in every tag do not break ingestion), and the profile
    planted covers the tags the brief names."""
    out, proc, _ = phi_run
    _, planted = phi_inputs
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = read_csv_rows(out / "series.csv")
    assert sorted(r["status"] for r in rows) == ["processed", "processed", "skipped", "skipped"]
    assert {"PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientAddress", "AccessionNumber",
            "InstitutionName", "ReferringPhysicianName", "StudyID", "StudyDescription", "SeriesDescription",
            "OperatorsName", "StationName", "StudyInstanceUID", "SOPInstanceUID", "PatientAge",
            "ContrastBolusAgent"} <= planted
    assert len(planted) > 500


def test_no_marker_in_any_output_log_or_qc_text(phi_run):
    """No byte of any output file, of stdout/stderr nor of any text drawn in a QC image holds a marker."""
    out, proc, tmp = phi_run
    blobs = output_blobs(out)
    assert any(k.endswith(".png") for k in blobs) and any(k.endswith("(inflated)") for k in blobs)
    qc_text = (tmp / "qc_text.log").read_text(encoding="utf-8")
    assert "L3" in qc_text  # the hook saw the QC titles
    blobs.update({"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode(), "QC texts": qc_text.encode()})
    assert not leaks(blobs)


def test_descriptions_are_kept_without_identifying_words(phi_run):
    """series.csv keeps each description's words and drops the name, ID, date and accession it repeated;
    the contrast agent is named in the warning, cleaned the same way."""
    out, proc, _ = phi_run
    rows = {r["series_uid"]: r for r in read_csv_rows(out / "series.csv") if r["status"] == "processed"}
    for row in rows.values():
        assert row["description"] == "QCT LSPINE *** *** *** ***"
        assert "contrast-enhanced scan (ContrastBolusAgent 'IOPAMIDOL ***')" in row["reason"]


def _expected_study_id(key: str, patient_id: str) -> str:
    return "S" + hmac.new(key.encode(), f"patient:{patient_id}".encode(), hashlib.sha256).hexdigest()[:10]


def _study_ids(out: Path) -> dict[str, str]:
    """series_uid -> study_id of the processed series."""
    return {r["series_uid"]: r["study_id"] for r in read_csv_rows(out / "calibration.csv")}


def test_study_id_is_the_keyed_hash_of_patient_id(phi_run):
    """study_id is HMAC-SHA256(key, PatientID), computed here independently; one per patient."""
    out, _, _ = phi_run
    ids = set(_study_ids(out).values())
    assert ids == {_expected_study_id(KEY, pid) for _, _, pid in CHARSETS.values()}


def test_pseudonyms_stable_for_one_key_and_differ_across_keys(phi_run, phi_inputs, tmp_path):
    """The same key (environment) gives the same study_id in a new run; another key (given as
    pseudonym.key in a --config file) gives another, and neither key comes out."""
    out, _, _ = phi_run
    root, _ = phi_inputs
    base = [root / "latin1" / "dicom", "--labels", root / "latin1" / "labels.nii.gz",
            "--phantom", "mindways-model3-ct"]
    again = run_cli(tmp_path, [*base, "--out", tmp_path / "again"])
    assert again.returncode == 0, again.stderr[-3000:]
    (tmp_path / "other.yaml").write_text(f"pseudonym:\n  key: {OTHER_KEY}\n")
    other = run_cli(tmp_path, [*base, "--config", tmp_path / "other.yaml", "--out", tmp_path / "other"], key=None)
    assert other.returncode == 0, other.stderr[-3000:]
    first = _study_ids(out)
    uid = next(iter(_study_ids(tmp_path / "again")))
    assert _study_ids(tmp_path / "again")[uid] == first[uid]
    assert _study_ids(tmp_path / "other")[uid] == _expected_study_id(OTHER_KEY, CHARSETS["latin1"][2]) != first[uid]
    for run_out, proc in ((tmp_path / "again", again), (tmp_path / "other", other)):
        blobs = output_blobs(run_out) | {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
        assert not leaks(blobs)
