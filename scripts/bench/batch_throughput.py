"""Benchmark: batch throughput (series/minute) with 1 vs 2 Dask workers (and in-process).

Generates N synthetic lumbar CT series (DICOM, Mindways phantom, VerSe labels) with a
manifest, then runs the batch on each worker count into a fresh output folder (no
resume) and prints series/minute. Also times a second, resumed run (everything skipped).

    .venv/bin/python scripts/bench/batch_throughput.py --n 6 --workers 0 1 2

Numbers depend on the machine and its load; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path


def make_series(root: Path, n: int, spacing: tuple[float, float, float], seed: int = 300) -> Path:
    from bmdpipe.synthetic import CaseSpec, make_case
    from bmdpipe.synthetic.dicom import write_dicom_series, write_labels_nifti

    rows = []
    for i in range(n):
        case = make_case(seed + i, CaseSpec(levels=("L3", "L4", "L5"), spacing_mm=spacing,
                                           phantom="mindways"))
        folder = root / f"case{i:02d}"
        write_dicom_series(case, folder / "dicom", add_localizer=False, add_stray_files=False)
        write_labels_nifti(case, folder / "labels.nii.gz")
        rows.append({"path": str(folder / "dicom"), "study_id": f"P{i // 2:03d}",
                     "timepoint": ("baseline", "month_12")[i % 2], "phantom": "mindways-model3-ct",
                     "labels": str(folder / "labels.nii.gz"), "levels": ""})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def run_once(manifest: Path, out: Path, workers: int, resume: bool) -> tuple[float, object]:
    from bmdpipe.batch import RunOptions, run_batch
    from bmdpipe.config import load_settings
    from bmdpipe.ingest import discover
    from bmdpipe.manifest import read_manifest

    settings = load_settings()
    rows = tuple(read_manifest(manifest))
    t0 = time.perf_counter()
    discovery = discover([r.path for r in rows], settings.ingest, settings.pseudonym)
    options = RunOptions(out_dir=out, manifest=rows, workers=workers, resume=resume)
    summary = run_batch(discovery, options, settings, command="batch_throughput")
    return time.perf_counter() - t0, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="number of synthetic series")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--spacing", type=float, nargs=3, default=(2.0, 1.5, 1.5), help="z y x mm")
    ap.add_argument("--seed", type=int, default=300, help="seed of the first synthetic case")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bmdpipe-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = make_series(root / "inputs", args.n, tuple(args.spacing), args.seed)
    print(f"{args.n} synthetic series (spacing {args.spacing} mm) in {time.perf_counter() - t0:.1f} s")
    base = None
    for workers in args.workers:
        out = root / f"out_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, summary = run_once(manifest, out, workers, resume=False)
        rate = args.n / seconds * 60
        base = base or rate
        print(f"workers={workers}: {seconds:6.1f} s, {rate:6.1f} series/min "
              f"(x{rate / base:.2f}), processed {summary.processed}, failed {summary.failed}")
        again, summary2 = run_once(manifest, out, workers, resume=True)
        print(f"           resumed run: {again:6.1f} s ({again / seconds:.1%} of the first), "
              f"skipped {summary2.resumed}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
