"""`bmdpipe measure` (ROIs drawn in another tool) and `bmdpipe review` without napari, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bmdpipe.store.csv import read_csv_rows

#: run the CLI with napari made unimportable (as on an install without the review extra)
WITHOUT_NAPARI = "import sys; sys.modules['napari'] = None; from bmdpipe.cli import app; app()"


def _bmdpipe(*args, without_napari=False):
    code = ["-c", WITHOUT_NAPARI] if without_napari else ["-m", "bmdpipe.cli"]
    env = {**os.environ, "MPLBACKEND": "Agg", "BMDPIPE_PSEUDONYM_KEY": "review-test"}
    return subprocess.run([sys.executable, *code, *args], capture_output=True, text=True, env=env, timeout=600)


def _edited_map(out, uid, region, folder, edit, *, flip_i=False):
    """Save the run's map of ``region`` under ``folder`` after ``edit(data)``, as another tool would
    (``flip_i``: stored with its first axis reversed and the affine saying so, as a tool writing in
    another orientation does)."""
    img = nib.load(out / "rois" / f"{uid}_{region}.nii.gz")
    data = np.asarray(img.dataobj).copy()
    edit(data)
    affine, stored = img.affine, data
    if flip_i:
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
        affine, stored = img.affine @ flip, data[::-1]
    folder.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), affine), folder / f"slicer_{region}.nii.gz")
    return data


@pytest.mark.parametrize("flip_i", [False, True])
def test_measure_remeasures_rois_drawn_elsewhere(run_copy, tmp_path, flip_i):
    """`bmdpipe measure --rois DIR` re-measures the ROI changed in the folder's map and only that one, also
    from a map stored in another orientation (resampled through its affine)."""
    case, out, uid = run_copy
    before = {(r["vertebra"], r["region"], r["side"]): r for r in read_csv_rows(out / "vbmd.csv")}

    def grow_l5_a(data):  # NIfTI order (i, j, k): one more slice of L5's ROI A below it
        k = np.nonzero(data == 240)[2]
        data[..., k.min() - 1][data[..., k.min()] == 240] = 240

    data = _edited_map(out, uid, "A", tmp_path / "drawn", grow_l5_a, flip_i=flip_i)
    proc = _bmdpipe("measure", str(out), "--series", uid, "--rois", str(tmp_path / "drawn"), "--reviewer", "EF")
    assert proc.returncode == 0, proc.stderr
    assert "L5 A center" in proc.stdout and "(manual)" in proc.stdout
    after = {(r["vertebra"], r["region"], r["side"]): r for r in read_csv_rows(out / "vbmd.csv")}
    assert [k for k in before if before[k] != after[k]] == [("L5", "A", "center")]
    assert int(after[("L5", "A", "center")]["n_voxels"]) == int((data == 240).sum()) > int(
        before[("L5", "A", "center")]["n_voxels"])
    assert after[("L5", "A", "center")]["reviewer"] == "EF"


def test_measure_refuses_codes_of_no_roi(run_copy, tmp_path):
    """A map holding a code that names no ROI of the series is a usage error naming the codes; nothing is saved."""
    case, out, uid = run_copy
    before = (out / "vbmd.csv").read_bytes()
    _edited_map(out, uid, "B", tmp_path / "drawn", lambda d: d.__setitem__((d == 231), 251))
    proc = _bmdpipe("measure", str(out), "--series", uid, "--rois", str(tmp_path / "drawn"), "--reviewer", "EF")
    assert proc.returncode == 2
    assert "[251]" in proc.stderr and "name no ROI" in proc.stderr
    assert (out / "vbmd.csv").read_bytes() == before


def test_review_help_works_without_napari():
    """`bmdpipe review --help` needs no napari and says how to install the review extra."""
    proc = _bmdpipe("review", "--help", without_napari=True)
    assert proc.returncode == 0, proc.stderr
    assert "Review and correct" in proc.stdout and "bmdpipe[review]" in proc.stdout


def test_review_without_napari_says_how_to_install_it(processed_run):
    """Without napari `bmdpipe review OUT` exits 2 with the install command, not a traceback."""
    case, out, uid = processed_run
    proc = _bmdpipe("review", str(out), without_napari=True)
    assert proc.returncode == 2
    assert "pip install 'bmdpipe[review]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["auto", "a b"])
def test_reviewer_names_are_checked(processed_run, name):
    """A reviewer name that cannot name a folder, or the automatic reading's, is a usage error."""
    case, out, uid = processed_run
    proc = _bmdpipe("measure", str(out), "--series", uid, "--rois", str(out / "rois"), "--reviewer", name)
    assert proc.returncode == 2 and "reviewer name" in proc.stderr


def test_npe2_discovers_the_plugin_through_its_entry_point():
    """The installed package registers its manifest (napari.manifest entry point), as `npe2 list` shows it."""
    npe2 = pytest.importorskip("npe2", reason="the review extra is not installed: pip install -e '.[review]'")
    manifest = npe2.PluginManifest.from_distribution("bmdpipe")
    assert manifest.name == "bmdpipe"
    assert [c.python_name for c in manifest.contributions.commands] == ["bmdpipe.review._qt:ReviewWidget"]
    assert [w.command for w in manifest.contributions.widgets] == ["bmdpipe.review_widget"]
