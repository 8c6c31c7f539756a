"""A corpus of bad inputs (tests/ingest/_bad_inputs.py): each one ends as series.csv rows with its status
and reason, and the series ingestion repairs, fills or resamples hold the right values.

In process (discovery + loading, against the good series' volume) and end to end: one ``bmdpipe run``
subprocess over the whole corpus, whose peak memory is measured.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _bad_inputs import GOOD, write_corpus
from bmdpipe.config import IngestSettings, PseudonymSettings
from bmdpipe.errors import SeriesError
from bmdpipe.ingest import discover, load_series
from bmdpipe.store.csv import read_csv_rows
from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti
from conftest import REAL

REPO = Path(__file__).resolve().parents[2]
S = IngestSettings()


@functools.lru_cache(maxsize=1)
def _case():
    """L3-L5 with a Mindways phantom at 2 x 1 x 1 mm (65 x 260 x 360 voxels): small, the whole anatomy."""
    return make_case(11, CaseSpec(levels=("L3", "L4", "L5"), phantom="mindways", spacing_mm=(2.0, 1.0, 1.0),
                                  orientation="HFS"))


@pytest.fixture
def corpus(tmp_path, dicom_factory):
    """(synthetic case, corpus root, the good series' files, the cases) written under tmp_path."""
    case = _case()
    root = tmp_path / "corpus"
    good = write_dicom_series(case, root / GOOD, add_localizer=False, add_stray_files=False)
    l4 = next(v for v in case.truth.vertebrae if v.name == "L4")
    cases = write_corpus(root, good, l4.body_center_lps[2], dicom_factory, REAL if REAL.is_dir() else None)
    return case, root, good, cases


def _check_rows(cases, rows):
    """Every case has series.csv rows, each with the case's status and reason; every row is a case's."""
    wrong = []
    for c in cases:
        mine = [r for r in rows if c.owns(r["path"])]
        wrong += [(c.name, "no series.csv row")] if not mine else []
        wrong += [(c.name, r["status"], r["reason"]) for r in mine
                  if r["status"] != c.status or c.reason not in r["reason"]]
    assert not wrong
    assert not [r for r in rows if not any(c.owns(r["path"]) for c in cases)]


def test_each_bad_input_gets_its_status_and_reason(corpus):
    """Discovery + loading (what ``bmdpipe run`` does before measuring): the statuses and reasons of every
    case; the repaired, filled and resampled copies hold the good series' HU (the filled slice: the mean of
    its neighbours, the tilted copy: the good volume in its last rows, air above)."""
    case, root, good, cases = corpus
    d = discover([root], S, PseudonymSettings(key="k"))
    rows = [{"path": s.path, "status": s.status.value, "reason": s.reason} for s in d.skipped]
    volumes = {}
    for ref in d.series:
        try:
            vol = load_series(ref, S)
        except SeriesError as exc:
            rows.append({"path": ref.source, "status": "failed", "reason": str(exc)})
        else:
            rows.append({"path": ref.source, "status": "processed", "reason": "; ".join(vol.meta.warnings)})
            volumes[Path(ref.source).name] = vol
    _check_rows(cases, rows)
    ref = volumes[Path(GOOD).name]
    np.testing.assert_allclose(ref.array, case.volume.array, atol=0.51)  # the generator's storage rounding
    for name in ("per-slice rescale", "no preamble or file meta", "enhanced CT"):
        vol = volumes[name]
        np.testing.assert_array_equal(vol.array, ref.array, err_msg=name)
        np.testing.assert_allclose(vol.origin, ref.origin, err_msg=name)
        assert vol.spacing == pytest.approx(ref.spacing)
    for name, k in (("truncated pixel data", _victim(cases, good)), ("missing slice", len(good) // 3)):
        vol = volumes[name]
        filled = (ref.array[k - 1] + ref.array[k + 1]) / 2
        np.testing.assert_allclose(vol.array[k], filled, atol=1e-3, err_msg=name)
        np.testing.assert_array_equal(np.delete(vol.array, k, axis=0), np.delete(ref.array, k, axis=0))
    tilted, n = volumes["gantry tilt"], len(good)
    np.testing.assert_allclose(tilted.array[:, n - 1:], ref.array, atol=1e-3)
    assert (tilted.array[:, : n - 1] < -1000).mean() > 0.99
    np.testing.assert_allclose(tilted.origin, np.asarray(ref.origin) - [0.0, (n - 1) * ref.spacing[1], 0.0])


def _victim(cases, good) -> int:
    """Slice index of the truncated file (named in its case's reason)."""
    (c,) = [c for c in cases if c.name.startswith("truncated")]
    return next(k for k, p in enumerate(good) if c.reason.startswith(p.name + ":"))


def _run_with_peak_memory(args: list[str], env: dict, out_dir: Path, timeout_s: float) -> tuple[int, str, float]:
    """Run a command; (exit code, its stderr, its peak resident memory in GB from wait4's rusage)."""
    with open(out_dir / "stdout.txt", "w") as so, open(out_dir / "stderr.txt", "w") as se:
        proc = subprocess.Popen(args, stdout=so, stderr=se, env=env)
        deadline = time.monotonic() + timeout_s  # a safety net against a hang, not a timing assertion
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"bmdpipe run still running after {timeout_s:.0f} s")
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, (out_dir / "stderr.txt").read_text(), usage.ru_maxrss * 1024 / 1e9  # ru_maxrss: KiB


def _vbmd_a(out: Path, folder_name: str) -> dict[str, float]:
    """ROI A vBMD per vertebra of the series read from the folder named ``folder_name``."""
    series = {Path(r["path"]).name: r["series_uid"] for r in read_csv_rows(out / "series.csv")}
    return {r["vertebra"]: float(r["vbmd_mg_cm3"]) for r in read_csv_rows(out / "vbmd.csv")
            if r["series_uid"] == series[folder_name] and r["region"] == "A"}


@pytest.mark.slow
def test_one_run_over_the_corpus(corpus, tmp_path):
    """``bmdpipe run`` over the good series plus every bad input: exit 1 (some series failed), no traceback,
    every input listed in series.csv with its status and reason, the good series' vBMD on the generator's
    truth, every processed copy's ROI A within 2 mg/cm3 of the good series' (the truncated L4 slice among
    them, issue 20), and a peak memory under 6 GB."""
    case, root, good, cases = corpus
    write_labels_nifti(case, tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BMDPIPE_PSEUDONYM_KEY": "k", "MPLBACKEND": "Agg"}
    code, stderr, peak_gb = _run_with_peak_memory(
        [sys.executable, "-m", "bmdpipe.cli", "run", str(root), "--out", str(out), "--phantom", "mindways-model3-ct",
         "--labels", str(tmp_path / "labels.nii.gz")], env, tmp_path, timeout_s=1200)
    print(f"peak memory of bmdpipe run over the corpus: {peak_gb:.2f} GB")
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    assert peak_gb < 6.0
    _check_rows(cases, read_csv_rows(out / "series.csv"))
    # the good series, against the generator's noise-free truth over the ROI the pipeline chose
    good_uid = case.volume.meta.series_uid
    amap = np.asarray(nib.load(out / "rois" / f"{good_uid}_A.nii.gz").dataobj).transpose(2, 1, 0)
    ref = _vbmd_a(out, Path(GOOD).name)
    assert sorted(ref) == ["L3", "L4", "L5"]
    for vt in case.truth.vertebrae:
        truth = float(case.truth.mineral_mg_cm3[amap == 10 * vt.verse_id].mean())
        assert ref[vt.name] == pytest.approx(truth, abs=3.0), vt.name
    for c in cases:
        if c.status == "processed" and c.path.name != Path(GOOD).name:
            got = _vbmd_a(out, c.path.name)
            assert got.keys() == ref.keys(), c.name
            for level, value in got.items():
                assert value == pytest.approx(ref[level], abs=2.0), (c.name, level)
