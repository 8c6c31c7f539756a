"""Benchmark: time of a whole ``bmdpipe run`` per series and per stage, against a bare DICOM read.

Makes three synthetic series of realistic size (512 x 512 pixels of 0.7 mm, 1 mm slices, L3-L5,
about 110 slices, VerSe labels given): pre-operative with a Mindways phantom, pre-operative without
one (phantomless calibration) and a follow-up with 6 screws joined by rods. Then, in this one
process (start-up and imports paid once, a warm-up run first), it runs each series through the
same batch code as ``bmdpipe run`` (discovery, processing, the single writer with SQLite, CSVs, ROI
maps and QC images) ``--repeats`` times, and a bare pydicom read and stack of the same files.

It prints the median seconds per stage (the pipeline logs each stage's wall time), the whole run,
its ratio to the bare read, and the peak resident memory during the run against the series'
float32 volume; ``--out`` also writes them as a Markdown table with the date, the commit and the
machine. By default it pins itself to one core and one thread per library (``--cores``)::

    .venv/bin/python scripts/bench/pipeline_speed.py --repeats 3 --out docs/benchmarks/pipeline_speed.md

Numbers depend on the machine and its load; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
               "NUMEXPR_NUM_THREADS")


def _pin(cores: int) -> None:
    """Use ``cores`` CPUs and as many threads per library (before numpy and SimpleITK are imported)."""
    for var in THREAD_VARS:
        os.environ[var] = str(cores)
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


if __name__ == "__main__":
    _early = argparse.ArgumentParser(add_help=False)
    _early.add_argument("--cores", type=int, default=1)
    _pin(_early.parse_known_args()[0].cores)

import csv  # noqa: E402
import datetime as dt  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

STAGES = ("discover", "load", "calibrate", "noise", "anatomy", "screws", "roi", "measure", "roi_maps", "report",
          "store")
SHAPE_YX_MM = (358.4, 358.4)  # 512 x 512 pixels of 0.7 mm
SPACING_MM = (1.0, 0.7, 0.7)


# ------------------------------------------------------------------------------------------ inputs


def make_series(root: Path) -> dict[str, Path]:
    """Write the three benchmark series (DICOM, labels, a one-row manifest); returns ``{kind: manifest}``.
    Series already written under ``root`` are kept."""
    from bmdpipe.synthetic import CaseSpec, ScrewSpec, make_case
    from bmdpipe.synthetic.dicom import write_dicom_series, write_labels_nifti

    levels = ("L3", "L4", "L5")
    screws = tuple(ScrewSpec(level, side, halo_width_mm=1.5 if (level, side) == ("L4", "left") else 0.0,
                             halo_arc_fraction=0.7) for level in levels for side in ("left", "right"))
    base = dict(levels=levels, spacing_mm=SPACING_MM, fov_mm=SHAPE_YX_MM)
    specs = {
        "preop, phantom": (CaseSpec(**base, phantom="mindways"), "mindways-model3-ct"),
        "preop, phantomless": (CaseSpec(**base, phantom=None), "none"),
        "follow-up, 6 screws": (CaseSpec(**base, phantom=None, screws=screws, fusion_rods=True), "none"),
    }
    manifests = {}
    for i, (kind, (spec, phantom)) in enumerate(specs.items()):
        folder = root / f"series{i}"
        manifests[kind] = folder / "manifest.csv"
        if manifests[kind].exists():
            continue
        case = make_case(700 + i, spec)
        write_dicom_series(case, folder / "dicom", add_localizer=False, add_stray_files=False)
        row = {"path": str(folder / "dicom"), "study_id": f"BENCH{i}", "timepoint": "baseline", "phantom": phantom,
               "labels": str(write_labels_nifti(case, folder / "labels.nii.gz")), "levels": ""}
        with open(manifests[kind], "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
    return manifests


# ------------------------------------------------------------------------------------------ measuring


class _StageTimes(logging.Handler):
    """Collects the pipeline's per-stage DEBUG records (attributes ``stage`` and ``seconds``)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, float] = {}

    def emit(self, record):
        if hasattr(record, "stage"):
            self.seconds[record.stage] = self.seconds.get(record.stage, 0.0) + record.seconds


class _PeakRss:
    """Peak resident set size of this process while in the ``with`` block, sampled every 5 ms (bytes)."""

    def __enter__(self):
        self.peak, self._stop = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bare_read(folder: str) -> tuple[float, int]:
    """Seconds to read every DICOM file of ``folder`` with pydicom and stack the pixels (sorted by
    position), and the float32 volume's size in bytes."""
    import pydicom

    start = time.perf_counter()
    slices = [pydicom.dcmread(p) for p in sorted(Path(folder).iterdir())]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    stack = np.stack([ds.pixel_array for ds in slices])
    return time.perf_counter() - start, stack.size * 4


def run_series(manifest: Path, out: Path) -> dict[str, float]:
    """The series of ``manifest`` through discovery and the batch (in this process) into ``out``; seconds
    per stage and in all."""
    from bmdpipe.batch import RunOptions, run_batch
    from bmdpipe.config import load_settings
    from bmdpipe.ingest import discover
    from bmdpipe.manifest import read_manifest

    settings = load_settings()
    rows = tuple(read_manifest(manifest))
    handler, pipeline_log = _StageTimes(), logging.getLogger("bmdpipe.pipeline")
    pipeline_log.addHandler(handler)
    level, pipeline_log.level = pipeline_log.level, logging.DEBUG
    try:
        start = time.perf_counter()
        discovery = discover([r.path for r in rows], settings.ingest, settings.pseudonym)
        discovered = time.perf_counter()
        summary = run_batch(discovery, RunOptions(out_dir=out, manifest=rows, workers=0, resume=False), settings,
                            command="pipeline_speed")
        end = time.perf_counter()
    finally:
        pipeline_log.removeHandler(handler)
        pipeline_log.setLevel(level)
    if summary.exit_code != 0 or summary.processed != 1:
        sys.exit(f"the run of {manifest} did not succeed (exit {summary.exit_code}); see {out}")
    seconds = dict(handler.seconds)
    seconds["discover"] = discovered - start
    seconds["store"] = (end - discovered) - sum(v for k, v in handler.seconds.items())
    seconds["total"] = end - start
    return seconds


# ------------------------------------------------------------------------------------------ report


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores used, Python {platform.python_version()}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(results: dict[str, dict], repeats: int) -> str:
    """Markdown table: median seconds per stage (rows) and series kind (columns)."""
    kinds = list(results)
    lines = ["| stage | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    med = {k: {s: float(np.median([r.get(s, 0.0) for r in res["runs"]])) for s in STAGES + ("total",)}
           for k, res in results.items()}
    for stage in STAGES:
        lines.append(f"| {stage} | " + " | ".join(f"{med[k][stage]:.2f}" for k in kinds) + " |")
    lines.append("| **whole run** | " + " | ".join(f"**{med[k]['total']:.2f}**" for k in kinds) + " |")
    bare = {k: float(np.median(res["bare"])) for k, res in results.items()}
    lines.append("| bare pydicom read | " + " | ".join(f"{bare[k]:.2f}" for k in kinds) + " |")
    lines.append("| **run / bare read** | " + " | ".join(f"**{med[k]['total'] / bare[k]:.1f} x**" for k in kinds)
                 + " |")
    lines.append("| peak RSS, GB | " + " | ".join(f"{max(res['rss']) / 1e9:.2f}" for res in results.values()) + " |")
    lines.append("| peak RSS above start, GB | " + " | ".join(
        f"{max(res['rss_above']) / 1e9:.2f}" for res in results.values()) + " |")
    lines.append("| float32 volume, GB | " + " | ".join(f"{res['volume_bytes'] / 1e9:.3f}" for res in results.values())
                 + " |")
    lines.append("| (peak RSS above start) / volume | " + " | ".join(
        f"{max(res['rss_above']) / res['volume_bytes']:.1f} x" for res in results.values()) + " |")
    lines.append(f"\nSeconds, median of {repeats} runs each; one process, imports paid once (a warm-up run of "
                 "each series first); QC images, ROI maps, CSVs and SQLite written.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per series (after one warm-up run)")
    ap.add_argument("--cores", type=int, default=1, help="CPUs (and threads per library) to use")
    ap.add_argument("--out", type=Path, help="also write the results as Markdown to this file")
    ap.add_argument("--keep", type=Path, help="write the series and the runs' outputs here (kept)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bmdpipe_speed_")) if args.keep is None else args.keep
    try:
        print("making the series ...", flush=True)
        manifests = make_series(root / "inputs")
        results = {}
        for kind, manifest in manifests.items():
            folder = str(manifest.parent / "dicom")
            res = results[kind] = {"runs": [], "bare": [], "rss": [], "rss_above": []}
            for i in range(args.repeats + 1):
                out = root / "runs" / f"{kind.replace(', ', '_').replace(' ', '_')}_{i}"
                shutil.rmtree(out, ignore_errors=True)
                seconds, res["volume_bytes"] = bare_read(folder)
                res["bare"].append(seconds)
                start_rss = _rss()
                with _PeakRss() as rss:
                    seconds = run_series(manifest, out)
                if i == 0:
                    continue  # warm-up
                res["runs"].append(seconds)
                res["rss"].append(rss.peak)
                res["rss_above"].append(rss.peak - start_rss)
                print(f"{kind} run {i}: {seconds['total']:.2f} s, bare read {res['bare'][-1]:.2f} s", flush=True)
            res["bare"] = res["bare"][1:]
        text = table(results, args.repeats)
        header = (f"# Pipeline speed\n\n{dt.date.today().isoformat()}, commit {_commit()}, {_machine()}.\n"
                  f"Command: `.venv/bin/python scripts/bench/pipeline_speed.py --repeats {args.repeats} "
                  f"--cores {args.cores}`\n\n")
        print("\n" + header + text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(header + text + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
