"""Batch runs: resume, failures, single writer, SIGKILL safety, local and distributed Dask.

The batch machinery is tested with a deterministic stand-in for ``process_series``
(:func:`fake_process`: rows computed from the series UID, a short sleep, a failing
series, a series that kills its worker once) so that every row of a clean run is known;
the end-to-end test at the bottom runs the real pipeline on synthetic CT through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bmdpipe.store.csv import read_csv_rows


def _load_pg_fixtures():
    """The throwaway-PostgreSQL fixtures of tests/store/conftest.py, for the batch test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_bmdpipe_store_conftest", Path(__file__).resolve().parent / "store" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.postgres_server, module.pg_url


postgres_server, pg_url = _load_pg_fixtures()

TESTS_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable
DASK = str(Path(sys.executable).with_name("dask"))
CSV_NAMES = ("series.csv", "calibration.csv", "vbmd.csv", "screws.csv")


# --------------------------------------------------------------------------- the stand-in

def fake_process(job, settings):
    """Deterministic SeriesResult from the series UID (importable by Dask workers).

    ``bad`` in the UID: failed at stage calibrate. ``die`` in the UID: the worker process
    exits (os._exit) the first time, as if killed; the marker file makes the retry succeed.
    Sleeps ``BMDPIPE_FAKE_DELAY_S`` seconds (default 0.05).
    """
    from bmdpipe.pipeline import SeriesResult
    from bmdpipe.rows import SeriesStatus

    ref = job.ref
    uid = ref.series_uid
    time.sleep(float(os.environ.get("BMDPIPE_FAKE_DELAY_S", "0.05")))
    if "die" in uid:
        marker = Path(ref.paths[0]).with_suffix(".died")
        if not marker.exists():
            marker.write_text("died once")
            os._exit(17)
    if "bad" in uid:
        return SeriesResult.failed(job, "calibrate", "no rods found")
    base = dict(series=ref.series_row(SeriesStatus.processed), study_id=job.study_id or ref.study_id,
                timepoint=job.timepoint)
    h = int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16)
    keys = dict(study_id=base["study_id"], timepoint=job.timepoint, series_uid=uid)
    cal = dict(keys, method="phantom", phantom="mindways-model3-ct", material="K2HPO4",
               slope_hu_per_mg_cm3=1.0 + (h % 100) / 1000, intercept_hu=-(h % 7) / 3,
               r2=0.999, n_references=5)
    vbmd = [dict(keys, vertebra=lev, region=region, side=side, vbmd_mg_cm3=(h % 997) / 7 + i,
                 material="K2HPO4", hu_mean=100.0 + i / 3, hu_median=99.5, hu_sd=20.0,
                 n_voxels=500 + i, volume_mm3=400.25, excluded_fraction=0.1,
                 calibration="phantom", roi_source="auto")
            for i, (lev, region, side) in enumerate(
                (lev, r, s) for lev in job.levels or ("L3", "L4")
                for r, s in (("A", "center"), ("B", "left"), ("B", "right")))]
    screws = [dict(keys, vertebra="L4", side=side, length_mm=45.0, diameter_mm=6.5,
                   entry_x_mm=x, entry_y_mm=1.0, entry_z_mm=2.0, tip_x_mm=x / 2, tip_y_mm=3.0,
                   tip_z_mm=4.0, halo_max_mm=(h % 30) / 10, halo_mean_mm=0.3,
                   halo_circumference_fraction=0.5, loosened=(h % 30) >= 10)
              for side, x in (("left", 20.0), ("right", -20.0))]
    return SeriesResult(**base, calibration_row=cal, vbmd_rows=tuple(vbmd), screw_rows=tuple(screws),
                        roi_maps={"A": b"nifti-bytes-" + uid.encode()},
                        qc_images={"overview": b"png-" + uid.encode()})


def make_inputs(root: Path, uids) -> Path:
    """One folder per series, each with a few small files (what the input digest hashes)."""
    for uid in uids:
        folder = root / "in" / uid
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(3):
            (folder / f"slice{k}.dcm").write_bytes(uid.encode() * (k + 1))
    (root / "in" / "README.txt").write_text("stray file")
    return root / "in"


def fake_discovery(in_dir: Path):
    """Discovery over ``make_inputs``: one SeriesRef per folder, README.txt skipped."""
    from bmdpipe.ingest import Discovery, SeriesRef, skipped_item

    series = []
    for folder in sorted(p for p in in_dir.iterdir() if p.is_dir()):
        files = tuple(sorted(folder.glob("*.dcm")))
        series.append(SeriesRef(series_uid=folder.name, paths=files, n_files=len(files),
                                study_id="S" + folder.name[-4:], description="fake"))
    skipped = (skipped_item(series_uid="", path=str(in_dir / "README.txt"), n_files=1, modality="",
                            description="", reason="not a DICOM file"),)
    return Discovery(series=tuple(series), skipped=skipped)


def manifest_rows(in_dir: Path):
    from bmdpipe.manifest import ManifestRow

    rows = []
    for i, folder in enumerate(sorted(p for p in in_dir.iterdir() if p.is_dir())):
        rows.append(ManifestRow(path=folder, study_id=f"P{i // 2:03d}",
                                timepoint=("baseline", "month_12")[i % 2], levels=("L3", "L4", "L5")))
    return tuple(rows)


def run(in_dir: Path, out: Path, **kw):
    from bmdpipe.batch import RunOptions, run_batch
    from bmdpipe.config import Settings

    progress = kw.pop("progress", None)
    options = RunOptions(out_dir=out, manifest=manifest_rows(in_dir), **kw)
    return run_batch(fake_discovery(in_dir), options, Settings(), progress=progress,
                     process=fake_process, command="test")


def csv_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in CSV_NAMES}


UIDS = tuple(f"1.2.840.{i:04d}" for i in range(1, 7))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A clean sequential run over six series (+ one failing), the reference for every test."""
    root = tmp_path_factory.mktemp("clean")
    in_dir = make_inputs(root, UIDS + ("1.2.840.bad1",))
    summary = run(in_dir, root / "out")
    return root, in_dir, summary


# --------------------------------------------------------------------------- tests

def test_clean_run_outputs(clean_run):
    """Every series is stored once; the failure is recorded with its stage; CSVs = DB export."""
    from bmdpipe.store.db import open_db
    from bmdpipe.store.export import export_csvs

    root, in_dir, summary = clean_run
    out = root / "out"
    assert (summary.processed, summary.failed, summary.skipped, summary.resumed) == (6, 1, 1, 0)
    assert summary.exit_code == 1
    assert summary.failures == (("1.2.840.bad1", "calibrate", "no rods found"),)
    series = {r["series_uid"]: r for r in read_csv_rows(out / "series.csv")}
    assert len(series) == 8
    assert series["1.2.840.bad1"]["status"] == "failed" and series["1.2.840.bad1"]["reason"] == "no rods found"
    assert [r["status"] for r in series.values()].count("skipped") == 1
    vbmd = read_csv_rows(out / "vbmd.csv")
    assert len(vbmd) == 6 * 9  # 3 levels x 3 ROIs per series, levels from the manifest
    keys = [(r["series_uid"], r["vertebra"], r["region"], r["side"]) for r in vbmd]
    assert len(set(keys)) == len(keys)
    first = [r for r in vbmd if r["series_uid"] == UIDS[0]][0]
    assert (first["study_id"], first["timepoint"]) == ("P000", "baseline")
    assert len(read_csv_rows(out / "screws.csv")) == 12
    assert (out / "rois" / f"{UIDS[0]}_A.nii.gz").read_bytes() == b"nifti-bytes-" + UIDS[0].encode()
    assert (out / "qc" / f"{UIDS[0]}_overview.png").exists()
    engine = open_db(summary.db_url)
    export_csvs(engine, root / "exported")
    engine.dispose()
    assert csv_bytes(root / "exported") == csv_bytes(out)


def test_second_run_skips_everything_but_failures(clean_run, tmp_path):
    """Resume skips series done with the same files and settings; failures run again."""
    root, in_dir, _ = clean_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    seen = []
    summary = run(in_dir, out, progress=lambda r, n, total: seen.append((r.series.series_uid, n, total)))
    assert (summary.resumed, summary.processed, summary.failed) == (6, 0, 1)
    assert [n for _, n, _ in seen] == list(range(1, 8)) and seen[-1][2] == 7
    assert csv_bytes(out) == csv_bytes(root / "out")


def test_changed_file_or_settings_runs_again(clean_run, tmp_path):
    """A touched input file or a changed manifest value makes only that series run again."""
    root, _, _ = clean_run
    work = tmp_path / "w"
    shutil.copytree(root, work)
    in_dir = work / "in"
    os.utime(in_dir / UIDS[2] / "slice1.dcm", ns=(1, 1))
    summary = run(in_dir, work / "out", db_url=f"sqlite:///{work / 'out' / 'bmdpipe.sqlite'}")
    assert (summary.resumed, summary.processed) == (5, 1)
    summary = run(in_dir, work / "out", resume=False)
    assert (summary.resumed, summary.processed) == (0, 6)
    for name in ("calibration.csv", "vbmd.csv", "screws.csv"):  # series.csv: new paths
        assert (work / "out" / name).read_bytes() == (root / "out" / name).read_bytes()


KILL_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path

    if __name__ == "__main__":
        sys.path.insert(0, {tests!r})
        import test_batch

        s = test_batch.run(Path(sys.argv[1]), Path(sys.argv[2]), workers=int(sys.argv[3]))
        raise SystemExit(s.exit_code)
""")


def _n_processed(db_path: Path) -> int:
    import sqlite3

    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM series WHERE status='processed'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_midway_then_rerun_equals_clean_run(clean_run, tmp_path, workers):
    """A run killed with SIGKILL (whole process group) and re-run has exactly the clean rows."""
    root, in_dir, _ = clean_run
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER.format(tests=str(TESTS_DIR)))
    out = tmp_path / "out"
    env = {**os.environ, "BMDPIPE_FAKE_DELAY_S": "0.6"}
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([PYTHON, str(driver), str(in_dir), str(out), str(workers)], env=env,
                                start_new_session=True, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while _n_processed(out / "bmdpipe.sqlite") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # power loss: the driver and any Dask workers die
        proc.wait()
    n_at_kill = _n_processed(out / "bmdpipe.sqlite")
    assert 2 <= n_at_kill < 6, "the kill should land midway"
    for name in CSV_NAMES:  # files present are whole CSVs (atomic replace), never half-written
        if (out / name).exists():
            text = (out / name).read_text()
            assert text.endswith("\n")
    rerun = subprocess.run([PYTHON, str(driver), str(in_dir), str(out), str(workers)],
                           env={**os.environ, "BMDPIPE_FAKE_DELAY_S": "0.05"},
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr  # the 'bad' series fails again
    assert csv_bytes(out) == csv_bytes(root / "out")
    for name in CSV_NAMES:
        rows = read_csv_rows(out / name)
        assert len(rows) == len({tuple(r.values()) for r in rows}), "a row is there twice"
    assert not list(out.rglob(".*.tmp"))  # temp files orphaned by the kill are cleaned up


def test_local_dask_cluster_and_a_dying_worker(clean_run, tmp_path):
    """--workers 2: a worker that dies mid-series is replaced, the series retried; same rows."""
    root, _, _ = clean_run
    in_dir = make_inputs(tmp_path, UIDS + ("1.2.840.bad1", "1.2.840.die1"))
    summary = run(in_dir, tmp_path / "out", workers=2)
    assert (summary.processed, summary.failed) == (7, 1)
    assert (in_dir / "1.2.840.die1" / "slice0.died").exists()  # it did die once
    for name in ("calibration.csv", "vbmd.csv", "screws.csv"):
        rows = [r for r in read_csv_rows(tmp_path / "out" / name) if "die" not in r["series_uid"]]
        ref = read_csv_rows(root / "out" / name)
        strip = lambda rs: sorted(tuple(v for k, v in r.items() if k != "path") for r in rs)  # noqa: E731
        assert strip(rows) == strip(ref)


def _scheduler_address(scheduler_file: Path, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> str:
    """The address a `dask scheduler` wrote once it listens; its log if it died or never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler_file.exists():
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (json.JSONDecodeError, KeyError):
                pass  # half-written: read again
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"dask scheduler did not come up within {timeout:.0f} s:\n{log.read_text(errors='replace')}")


@pytest.mark.slow
def test_existing_scheduler_with_separate_worker_processes(clean_run, tmp_path):
    """--scheduler: a real `dask scheduler` and two `dask worker` processes on 127.0.0.1.

    The scheduler chooses its own port and publishes it in a scheduler file, so no other
    process can take a port picked in advance (a CI run once connected to one that never
    answered).
    """
    root, in_dir, _ = clean_run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    logs = tmp_path / "logs"
    logs.mkdir()
    handles = []

    def start(args, name):
        handles.append(open(logs / f"{name}.log", "wb"))
        procs.append(subprocess.Popen([DASK, *args], env=env, cwd=tmp_path, stdout=handles[-1],
                                      stderr=subprocess.STDOUT))

    procs: list[subprocess.Popen] = []
    scheduler_file = tmp_path / "scheduler.json"
    start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
           "--scheduler-file", str(scheduler_file)], "scheduler")
    try:
        address = _scheduler_address(scheduler_file, procs[0], logs / "scheduler.log")
        for i in range(2):
            start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                   "--host", "127.0.0.1", "--name", f"w{i}"], f"worker{i}")
        from distributed import Client

        with Client(address, timeout="120s") as client:
            client.wait_for_workers(2, timeout=180)
        summary = run(in_dir, tmp_path / "out", scheduler=address)
        assert (summary.processed, summary.failed) == (6, 1)
        assert csv_bytes(tmp_path / "out") == csv_bytes(root / "out")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for h in handles:
            h.close()


@pytest.mark.slow
def test_same_batch_on_postgresql_gives_the_same_rows(clean_run, tmp_path, pg_url):
    """The batch against a PostgreSQL server writes the same CSVs, and exports them back."""
    from bmdpipe.store.db import open_db
    from bmdpipe.store.export import export_csvs

    root, in_dir, _ = clean_run
    summary = run(in_dir, tmp_path / "out", db_url=pg_url, workers=2)
    assert (summary.processed, summary.failed) == (6, 1)
    assert not (tmp_path / "out" / "bmdpipe.sqlite").exists()
    assert csv_bytes(tmp_path / "out") == csv_bytes(root / "out")
    engine = open_db(pg_url)
    assert engine.dialect.name == "postgresql"
    export_csvs(engine, tmp_path / "exported")
    engine.dispose()
    assert csv_bytes(tmp_path / "exported") == csv_bytes(root / "out")
    again = run(in_dir, tmp_path / "out", db_url=pg_url)
    assert (again.resumed, again.processed) == (6, 0)


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def synthetic_batch(tmp_path_factory):
    """Three coarse synthetic CT series (DICOM + labels, Mindways phantom) and a manifest."""
    from bmdpipe.synthetic import CaseSpec, make_case, write_dicom_series, write_labels_nifti

    root = tmp_path_factory.mktemp("synthetic_batch")
    lines = ["path,study_id,timepoint,phantom,labels,levels"]
    for i, tp in enumerate(("baseline", "month_12", "baseline")):
        case = make_case(300 + i, CaseSpec(levels=("L3", "L4"), spacing_mm=(2.0, 1.5, 1.5),
                                           phantom="mindways"))
        write_dicom_series(case, root / f"c{i}" / "dicom", add_localizer=i == 0,
                           add_stray_files=False)
        write_labels_nifti(case, root / f"c{i}" / "labels.nii.gz")
        lines.append(f"c{i}/dicom,P{i // 2:03d},{tp},mindways-model3-ct,c{i}/labels.nii.gz,")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def _cli(*args, timeout=900):
    env = {**os.environ, "BMDPIPE_PSEUDONYM_KEY": "test-key", "MPLBACKEND": "Agg"}
    return subprocess.run([PYTHON, "-m", "bmdpipe.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def cli_run(synthetic_batch, tmp_path_factory):
    """`bmdpipe run --manifest M --out OUT --workers 2` on the synthetic batch (SQLite)."""
    out = tmp_path_factory.mktemp("cli_run") / "out"
    proc = _cli("run", "--manifest", synthetic_batch / "manifest.csv", "--out", out, "--workers", 2)
    return out, proc


@pytest.mark.slow
def test_cli_manifest_two_workers_export_and_resume(synthetic_batch, cli_run, tmp_path):
    """`bmdpipe run --manifest --workers 2` exits 0; export = run CSVs; a re-run redoes nothing."""
    import sqlite3

    root = synthetic_batch
    out, proc = cli_run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    series = read_csv_rows(out / "series.csv")
    done = [r for r in series if r["status"] == "processed"]
    assert len(done) == 3 and {r["timepoint"] for r in done} == {"baseline", "month_12"}
    assert len(read_csv_rows(out / "calibration.csv")) == 3
    assert len({r["series_uid"] for r in read_csv_rows(out / "vbmd.csv")}) == 3
    db_url = f"sqlite:///{out / 'bmdpipe.sqlite'}"
    exp = _cli("export", "--db", db_url, "--out", tmp_path / "exported")
    assert exp.returncode == 0, exp.stderr
    assert csv_bytes(tmp_path / "exported") == csv_bytes(out)
    red = _cli("export", "--db", db_url, "--out", tmp_path / "redcap", "--format", "redcap")
    assert red.returncode == 0, red.stderr
    rc_rows = read_csv_rows(tmp_path / "redcap" / "redcap_import.csv")
    assert [(r["record_id"], r["redcap_event_name"]) for r in rc_rows] == [
        ("P000", "baseline_arm_1"), ("P000", "month_12_arm_1"), ("P001", "baseline_arm_1")]
    before = csv_bytes(out)
    again = _cli("run", "--manifest", root / "manifest.csv", "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert csv_bytes(out) == before
    with sqlite3.connect(out / "bmdpipe.sqlite") as conn:
        runs = conn.execute("SELECT id, finished IS NOT NULL FROM runs ORDER BY id").fetchall()
        series_runs = {r for (r,) in conn.execute(
            "SELECT run_id FROM series WHERE status='processed'")}
    assert [f for _, f in runs] == [1, 1]
    assert series_runs == {runs[0][0]}  # nothing was processed again by the second run


@pytest.mark.slow
def test_cli_same_batch_on_postgresql(synthetic_batch, cli_run, tmp_path, pg_url):
    """The same CLI batch with --db postgresql+psycopg://... writes exactly the SQLite run's CSVs."""
    out, proc = cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    pg_out = tmp_path / "out_pg"
    pg = _cli("run", "--manifest", synthetic_batch / "manifest.csv", "--out", pg_out,
              "--db", pg_url, "--workers", 2)
    assert pg.returncode == 0, pg.stderr[-3000:]
    assert not (pg_out / "bmdpipe.sqlite").exists()
    assert csv_bytes(pg_out) == csv_bytes(out)
    exp = _cli("export", "--db", pg_url, "--out", tmp_path / "exported")
    assert exp.returncode == 0, exp.stderr
    assert csv_bytes(tmp_path / "exported") == csv_bytes(out)
