"""Time from ``bmdpipe review OUT`` to a visible napari viewer with the series loaded.

Each repeat starts ``bmdpipe review OUT --series UID --exit-when-shown`` as a new process
(Python start, imports, database, DICOM loading, ROI maps, napari window) and reads the
time the viewer printed once it was shown; the median over the repeats is printed. Needs
the ``review`` extra and a display (run under ``xvfb-run -a`` on a headless machine).

Usage::

    xvfb-run -a python scripts/bench/review_startup.py OUT_DIR [--series UID] [--repeats 5]

OUT_DIR is the ``--out`` folder of a ``bmdpipe run`` (e.g. on ``bmdpipe synth`` cases);
without ``--series`` the first processed series of its series.csv is opened.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bmdpipe.store.csv import read_csv_rows


def time_to_viewer(out_dir: Path, series_uid: str) -> float:
    """Seconds from starting ``bmdpipe review`` to the viewer shown (one new process)."""
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "xcb")}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "bmdpipe.cli", "review", str(out_dir), "--series", series_uid,
                           "--reviewer", "bench", "--exit-when-shown"], capture_output=True, text=True, env=env,
                          timeout=600)
    shown = [line for line in proc.stdout.splitlines() if line.startswith("viewer shown ")]
    if proc.returncode != 0 or not shown:
        raise SystemExit(f"bmdpipe review failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return float(shown[-1].split()[-1]) - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--series", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    uid = args.series or next(r["series_uid"] for r in read_csv_rows(args.out_dir / "series.csv")
                              if r["status"] == "processed")
    times = [time_to_viewer(args.out_dir, uid) for _ in range(args.repeats)]
    print(f"series {uid}: " + ", ".join(f"{t:.2f}" for t in times) + " s")
    print(f"time from `bmdpipe review` to a visible viewer: median {statistics.median(times):.2f} s "
          f"over {len(times)} runs (min {min(times):.2f}, max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
