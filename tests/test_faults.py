"""Faults around a run: output folder not writable, disk full mid-run, database locked or unreachable,
a Dask worker killed in every attempt at a series.

Each must end with a clear message naming what failed and what to do, exit 1 (the run had started
writing) or 2 (nothing written), never a traceback, and leave every file and database row whole:
what an earlier run wrote is intact, and a re-run once the fault is gone gives the rows of a clean run.
Real mechanisms throughout: a tmpfs that fills up and a read-only bind mount (in a private user and
mount namespace, ``unshare -rm``; skipped where the kernel refuses one), a second SQLite connection
holding an exclusive lock, a closed TCP port, SIGKILL.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bmdpipe.store.csv import read_csv_rows
from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti

REPO = Path(__file__).resolve().parents[1]
KEY = "fault-test-key"
CSV_NAMES = ("series.csv", "calibration.csv", "vbmd.csv", "screws.csv")
MEASUREMENTS = ("calibration.csv", "vbmd.csv", "screws.csv")


def _env(**extra) -> dict:
    return {**os.environ, "BMDPIPE_PSEUDONYM_KEY": KEY, "MPLBACKEND": "Agg", "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra}


def cli_args(inputs: Path, out: Path, *extra, manifest: str = "manifest.csv") -> list[str]:
    """``bmdpipe run`` over the synthetic series of ``inputs`` (both, or those of ``manifest``)."""
    return [sys.executable, "-m", "bmdpipe.cli", "run", "--manifest", str(inputs / manifest),
            "--out", str(out), *map(str, extra)]


def cli(inputs: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(inputs, out, *extra), capture_output=True, text=True, env=_env(), timeout=900)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two small synthetic series, A and B (Mindways phantom, labels), and a manifest naming them."""
    root = tmp_path_factory.mktemp("fault_inputs")
    lines = ["path,study_id,timepoint,phantom,labels,levels"]
    for name, seed in (("A", 300), ("B", 302)):
        case = make_case(seed, CaseSpec(levels=("L3", "L4"), spacing_mm=(2.0, 1.5, 1.5), phantom="mindways"))
        write_dicom_series(case, root / name / "dicom", add_localizer=False, add_stray_files=False)
        write_labels_nifti(case, root / name / "labels.nii.gz")
        lines.append(f"{name}/dicom,,baseline,mindways-model3-ct,{name}/labels.nii.gz,")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "manifest_A.csv").write_text("\n".join(lines[:2]) + "\n")
    return root


@pytest.fixture(scope="module")
def clean_run(inputs, tmp_path_factory) -> Path:
    """The outputs of a clean run over A and B: what every faulty run must match once re-run."""
    out = tmp_path_factory.mktemp("fault_clean") / "out"
    proc = cli(inputs, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (relative path -> bytes), the database as its rows."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.suffix != ".sqlite"}
    with sqlite3.connect(out / "bmdpipe.sqlite") as conn:
        files["bmdpipe.sqlite rows"] = "\n".join(conn.iterdump()).encode()
    return files


def assert_whole(out: Path) -> None:
    """No half-written output: CSVs end their last row, ROI maps inflate and load, PNGs decode, the
    database passes its integrity check, no temp file is left."""
    import nibabel as nib
    from PIL import Image

    assert not [p for p in out.rglob("*.tmp")]
    for name in CSV_NAMES:
        if (out / name).exists():
            assert (out / name).read_text().endswith("\n")
            rows = read_csv_rows(out / name)  # a cut row has too few fields (None values), a merged one too many
            assert all(None not in r and None not in r.values() for r in rows), name
    for p in out.rglob("*.nii.gz"):
        gzip.decompress(p.read_bytes())
        nib.load(p).get_fdata()
    for p in out.rglob("*.png"):
        with Image.open(p) as im:
            im.load()
    with sqlite3.connect(out / "bmdpipe.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    for fragment in fragments:
        assert fragment in text, (fragment, text[-3000:])


def assert_same_measurements(out: Path, clean: Path) -> None:
    """The measurement rows of ``out`` are the clean run's rows of the series ``out`` processed."""
    done = {r["series_uid"] for r in read_csv_rows(out / "series.csv") if r["status"] == "processed"}
    assert done
    for name in MEASUREMENTS:
        assert read_csv_rows(out / name) == [r for r in read_csv_rows(clean / name) if r["series_uid"] in done]


# ---------------------------------------------------------------- private mount namespace

def _userns_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _userns_available(),
                                  reason="needs a private user and mount namespace (unshare -rm) for tmpfs and "
                                         "read-only bind mounts; this kernel or sandbox refuses one")


def in_namespace(script: str, **env) -> subprocess.CompletedProcess:
    """Run a shell script as root of a private user + mount namespace (its mounts vanish with it)."""
    return subprocess.run(["unshare", "-rm", "sh", "-euc", script], capture_output=True, text=True,
                          env=_env(**env), timeout=900)


def _quote(args) -> str:
    import shlex

    return " ".join(shlex.quote(str(a)) for a in args)


# ---------------------------------------------------------------- output folder

def test_output_under_a_regular_file_is_refused_before_writing(inputs, tmp_path):
    """--out under a regular file (or being one): exit 2 naming the folder; the file is untouched."""
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "out"):
        proc = cli(inputs, out)
        assert_clean_error(proc, 2, f"cannot write to the output folder {out}", "choose another --out")
    assert blocker.read_text() == "not a folder"


@needs_mounts
def test_read_only_output_folder_keeps_the_earlier_outputs(inputs, clean_run, tmp_path):
    """An output folder that became read-only (a read-only mount: even root cannot write it): exit 2 naming
    it, and the earlier run's files and database are exactly as they were."""
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    before = snapshot(out)
    proc = in_namespace(f"mount --bind {out} {out}; mount -o remount,bind,ro {out}; "
                        f"exec {_quote(cli_args(inputs, out, '--no-resume'))}")
    assert_clean_error(proc, 2, f"cannot write to the output folder {out}", "Read-only file system")
    assert snapshot(out) == before


# ---------------------------------------------------------------- disk full

@pytest.mark.slow
@needs_mounts
def test_disk_full_mid_run_stops_cleanly_and_a_rerun_completes(inputs, clean_run, tmp_path):
    """A run (series A) on a disk (tmpfs) that fills up while it rewrites the outputs of an earlier run: exit 1
    with a message naming the file and the full disk; every file and row is whole and the measurements are
    still the clean run's. Once space is freed the same command completes, with the clean run's measurements."""
    disk, after_full, final = tmp_path / "disk", tmp_path / "after_full", tmp_path / "final"
    disk.mkdir()
    out = disk / "out"
    first = _quote(cli_args(inputs, out, manifest="manifest_A.csv"))
    again = _quote(cli_args(inputs, out, "--no-resume", manifest="manifest_A.csv"))
    script = textwrap.dedent(f"""
        run() {{ name=$1; shift; "$@" > {tmp_path}/$name.log 2>&1 && echo 0 > {tmp_path}/$name.rc || echo $? > {tmp_path}/$name.rc; }}
        mount -t tmpfs -o size=16m tmpfs {disk}
        run first {first}
        dd if=/dev/zero of={disk}/filler bs=64k >/dev/null 2>&1 || true
        truncate -s -96K {disk}/filler
        run full {again}
        cp -a {out} {after_full}
        rm {disk}/filler
        run rerun {again}
        cp -a {out} {final}
    """)
    proc = in_namespace(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = {name: subprocess.CompletedProcess([], int((tmp_path / f"{name}.rc").read_text()),
                                              (tmp_path / f"{name}.log").read_text(), "")
            for name in ("first", "full", "rerun")}
    assert_clean_error(logs["first"], 0)
    assert_clean_error(logs["full"], 1, "No space left on device", "stopped", "Run the same command again")
    assert_whole(after_full)
    assert_same_measurements(after_full, clean_run)
    assert_clean_error(logs["rerun"], 0)
    assert_whole(final)
    assert_same_measurements(final, clean_run)


# ---------------------------------------------------------------- database

class ExclusiveLock:
    """Another connection holding the SQLite database with an exclusive lock (no reader, no writer)."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=60)

    def __enter__(self) -> ExclusiveLock:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.fixture
def short_lock_wait(tmp_path) -> Path:
    config = tmp_path / "short_lock_wait.yaml"
    config.write_text("store:\n  sqlite_lock_timeout_s: 0.5\n")
    return config


def test_locked_database_at_start_is_refused_and_changes_nothing(inputs, clean_run, tmp_path, short_lock_wait):
    """The database locked by another connection when the run starts: exit 2 naming the database, what
    holds it and the setting; no file and no row changed."""
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    before = snapshot(out)
    with ExclusiveLock(out / "bmdpipe.sqlite"):
        proc = cli(inputs, out, "--no-resume", "--config", short_lock_wait)
    assert_clean_error(proc, 2, f"database sqlite:///{out / 'bmdpipe.sqlite'} is locked by another connection",
                       "store.sqlite_lock_timeout_s")
    assert snapshot(out) == before


@pytest.mark.slow
def test_database_locked_mid_run_stops_cleanly_and_a_rerun_completes(inputs, clean_run, tmp_path, monkeypatch):
    """The database locked by another connection while the second series is processed: the run stops (exit
    status 1) naming the database, the first series is stored whole; once the lock is gone the same run
    completes with the clean run's measurements."""
    from bmdpipe.batch import RunOptions, run_batch
    from bmdpipe.config import Settings, StoreSettings
    from bmdpipe.ingest import discover
    from bmdpipe.manifest import read_manifest
    from bmdpipe.pipeline import process_series

    monkeypatch.setenv("BMDPIPE_PSEUDONYM_KEY", KEY)
    out = tmp_path / "out"
    settings = Settings(store=StoreSettings(sqlite_lock_timeout_s=0.5))
    options = RunOptions(out_dir=out, manifest=tuple(read_manifest(inputs / "manifest.csv")))
    found = discover([inputs / "A", inputs / "B"], settings.ingest, settings.pseudonym)
    locks = []

    def process_then_lock(job, settings):
        result = process_series(job, settings)
        if job.ref.series_uid == found.series[-1].series_uid:  # another program takes the database meanwhile
            locks.append(ExclusiveLock(out / "bmdpipe.sqlite").__enter__())
        return result

    stopped = run_batch(found, options, settings, process=process_then_lock, command="test")
    locks.pop().__exit__()
    assert stopped.exit_code == 1 and (stopped.processed, stopped.failed) == (1, 0)
    assert f"database sqlite:///{out / 'bmdpipe.sqlite'} is locked" in stopped.stopped
    assert "stopped after storing 1 series of 2" in stopped.stopped
    assert_whole(out)
    done = [r["series_uid"] for r in read_csv_rows(out / "series.csv") if r["status"] == "processed"]
    assert done == [found.series[0].series_uid]
    rerun = run_batch(found, options, settings, command="test")
    assert (rerun.exit_code, rerun.resumed, rerun.processed) == (0, 1, 1)
    assert_whole(out)
    assert_same_measurements(out, clean_run)


def test_recorded_command_hides_url_passwords():
    """The command line stored with a run keeps a --db URL's user and host, not its password."""
    from bmdpipe.batch import recorded_command

    argv = ["bmdpipe", "run", "in", "--db", "postgresql+psycopg://trial:s3cret@db.example:5432/trial", "--out", "o"]
    assert recorded_command(argv) == "bmdpipe run in --db postgresql+psycopg://trial:***@db.example:5432/trial --out o"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_postgresql_is_a_usage_error_without_the_password(inputs, tmp_path):
    """A PostgreSQL URL to a closed port: exit 2 naming the server, the password hidden; nothing written."""
    out = tmp_path / "out"
    url = f"postgresql+psycopg://trial:s3cret-pw@127.0.0.1:{_closed_port()}/trial"
    proc = cli(inputs, out, "--db", url)
    assert_clean_error(proc, 2, "cannot connect to database postgresql+psycopg://trial:***@127.0.0.1",
                       "check that the server runs")
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert not [p for p in out.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- Dask worker killed

def process_or_kill_worker(job, settings):
    """The real pipeline, except that series whose manifest study_id is KILLED kill their worker (SIGKILL, as
    the kernel's OOM killer does) at every attempt. Importable by Dask workers."""
    from bmdpipe.pipeline import process_series

    if job.study_id == "KILLED":
        os.kill(os.getpid(), signal.SIGKILL)
    return process_series(job, settings)


@pytest.mark.slow
def test_series_that_kills_its_worker_every_time_fails_alone(inputs, clean_run, tmp_path, monkeypatch):
    """--workers 2: a series whose worker is killed at every attempt is recorded failed at stage 'worker' with
    the reason and what to do; nothing of it is written, the other series is complete and exact."""
    import dask

    from bmdpipe.batch import RunOptions, run_batch
    from bmdpipe.config import Settings
    from bmdpipe.ingest import discover
    from bmdpipe.manifest import read_manifest

    monkeypatch.setenv("BMDPIPE_PSEUDONYM_KEY", KEY)
    manifest = inputs / "manifest_killed.csv"
    manifest.write_text((inputs / "manifest.csv").read_text().replace("B/dicom,,", "B/dicom,KILLED,"))
    settings = Settings()
    found = discover([inputs / "A", inputs / "B"], settings.ingest, settings.pseudonym)
    options = RunOptions(out_dir=tmp_path / "out", manifest=tuple(read_manifest(manifest)), workers=2)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # a second death ends the series
        summary = run_batch(found, options, settings, process=process_or_kill_worker, command="test")
    (killed,) = [s for s in found.series if "/B/" in str(s.paths[0])]
    assert (summary.processed, summary.failed, summary.exit_code) == (1, 1, 1)
    ((uid, stage, reason),) = summary.failures
    assert (uid, stage) == (killed.series_uid, "worker")
    assert "KilledWorker" in reason and "run again" in reason
    out = tmp_path / "out"
    assert_whole(out)
    assert not [r for r in read_csv_rows(out / "vbmd.csv") if r["series_uid"] == killed.series_uid]
    assert_same_measurements(out, clean_run)
