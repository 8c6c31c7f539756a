"""Many series: resume, one job per CT series, local or Dask, one writer for every output.

``run_batch`` is what ``bmdpipe run`` calls. Each series is processed independently by
:func:`bmdpipe.pipeline.process_series` (in this process, on a local Dask cluster of
``--workers N`` processes, or on an existing Dask scheduler); a failure is recorded with
its stage and reason and the batch goes on.

Everything is written here, in the main process (the single writer), in this order per
series: ROI maps and QC images (each atomically: temp file + rename), then the series'
database rows in ONE transaction (old rows deleted, new rows inserted), then the
contract CSVs regenerated from the database (atomically). A run killed at any point
(SIGKILL, power loss) therefore leaves complete files and whole series in the database;
a re-run skips what was committed and completes the rest.

Resume: a series is skipped when the database holds it as *processed* with the same
input digest (paths, sizes and modification times of its files, of the labels and of
the phantom / calibration files) and the same settings digest (settings + the job's
options). Failed series are always tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from .config import Settings, settings_digest
from .errors import ConfigError, StoreError
from .manifest import ManifestRow, match_row
from .pipeline import SeriesJob, SeriesResult, process_series
from .rows import SeriesRow, SeriesStatus
from .store import db as store_db
from .store.export import export_csvs
from .store.files import ensure_writable_folder, write_series_files

__all__ = [
    "RunOptions",
    "RunSummary",
    "build_jobs",
    "job_input_digest",
    "job_settings_digest",
    "recorded_command",
    "run_batch",
]

logger = logging.getLogger(__name__)

#: Dask retries of a series whose task raised (worker deaths are rescheduled by Dask itself)
TASK_RETRIES = 2

_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@")


@dataclass(frozen=True)
class RunOptions:
    """Command-line values of ``bmdpipe run`` (manifest rows override them per series)."""

    out_dir: Path
    phantom: str | None = None
    labels: str | None = None
    levels: tuple[str, ...] = ()
    calibration_file: str | None = None
    precalibration_file: str | None = None
    manifest: tuple[ManifestRow, ...] = ()
    db_url: str | None = None
    workers: int = 0
    scheduler: str | None = None
    resume: bool = True
    csv_interval_s: float = 0.0  # regenerate the CSVs at most this often (0 = after every series)

    def check(self) -> None:
        """Refuse contradictory options, an unknown phantom or an unusable pre-calibration, before
        any work.

        Raises
        ------
        ConfigError
            Naming the options and what to do.
        """
        if self.workers and self.scheduler:
            raise ConfigError("give either --workers or --scheduler, not both")
        named = bool(self.phantom) and self.phantom.lower() != "none"
        if named:
            from .calibrate import load_phantom

            load_phantom(self.phantom)
        if self.precalibration_file is None:
            return
        if self.calibration_file is not None:
            raise ConfigError("give either --calibration (reuse a phantom fit) or --precalibration "
                              "(phantomless fit anchored by a phantom scan), not both")
        if named:
            raise ConfigError(f"--precalibration is for series without a phantom; --phantom {self.phantom} was given")
        from .calibrate import load_calibration, precalibration_kev
        from .errors import BmdpipeError

        try:
            precalibration_kev(load_calibration(self.precalibration_file)[0])
        except BmdpipeError as exc:
            where = "" if str(self.precalibration_file) in str(exc) else f" {self.precalibration_file}"
            raise ConfigError(f"--precalibration{where}: {exc}") from exc


@dataclass(frozen=True)
class RunSummary:
    """Counts of a run: newly processed, failed, skipped by discovery, resumed (already done)."""

    processed: int
    failed: int
    skipped: int
    resumed: int = 0
    out_dir: Path = Path(".")
    failures: tuple[tuple[str, str, str], ...] = field(default=())  # (series_uid, stage, reason)
    run_id: int | None = None
    db_url: str = ""
    stopped: str = ""  # why the run stopped before the end (outputs could not be written), else ''

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.stopped else 0


def build_jobs(series_refs: Sequence, options: RunOptions) -> list[SeriesJob]:
    """Merge the command-line values with each series' manifest row."""
    jobs = []
    for ref in series_refs:
        row = match_row(list(options.manifest), Path(ref.path)) if options.manifest else None
        jobs.append(
            SeriesJob(
                ref=ref,
                study_id=(row.study_id if row else "") or "",
                timepoint=(row.timepoint if row else "") or "",
                phantom=(row.phantom if row and row.phantom else options.phantom),
                labels=(row.labels if row and row.labels else options.labels),
                levels=(row.levels if row and row.levels else options.levels),
                calibration_file=options.calibration_file,
                precalibration_file=options.precalibration_file,
            )
        )
    return jobs


# ---------------------------------------------------------------- digests

def _stat(path: Path, name: str) -> list:
    try:
        st = path.stat()
    except OSError:
        return [name, None, None]
    return [name, st.st_size, st.st_mtime_ns]


def _fingerprint(path: str | os.PathLike | None) -> list:
    """Name, size and mtime (ns) of a file, or of every file under a folder; [] if None.

    A value that is not an existing path (a phantom *name*) enters as itself.
    """
    if not path:
        return []
    p = Path(path)
    if p.is_dir():
        return [_stat(f, str(f.relative_to(p))) for f in sorted(p.rglob("*")) if f.is_file()]
    if p.exists():
        return [_stat(p, p.name)]
    return [str(path)]


def job_input_digest(job: SeriesJob) -> str:
    """SHA-256 of what the series is computed from: its files, labels, phantom, calibration.

    Each file enters by name (relative to the series' folder), size and modification time
    (ns): a changed or replaced file (or label map, or phantom definition) makes the
    series run again, while a folder copied or moved with its times kept does not.
    """
    paths = sorted(Path(f) for f in job.ref.paths)
    root = Path(os.path.commonpath([str(f.parent) for f in paths])) if paths else Path(".")
    parts = {
        "series": [_stat(f, str(f.relative_to(root))) for f in paths],
        "labels": _fingerprint(job.labels),
        "phantom": _fingerprint(job.phantom),
        "calibration": _fingerprint(job.calibration_file),
        "precalibration": _fingerprint(job.precalibration_file),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def job_settings_digest(job: SeriesJob, settings: Settings) -> str:
    """SHA-256 of the settings and the job's options (study, timepoint, phantom, levels...)."""
    from . import __version__

    parts = {
        "settings": settings_digest(settings),
        "version": __version__,
        "study_id": job.study_id,
        "timepoint": job.timepoint,
        "phantom": Path(job.phantom).name if job.phantom else None,
        "labels": Path(job.labels).name if job.labels else None,
        "levels": list(job.levels),
        "calibration_file": Path(job.calibration_file).name if job.calibration_file else None,
        "precalibration_file": Path(job.precalibration_file).name if job.precalibration_file else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _settings_record(settings: Settings) -> dict:
    """Settings as stored with the run; the pseudonym key (a secret) is never stored."""
    record = settings.model_dump(mode="json")
    if record.get("pseudonym", {}).get("key"):
        record["pseudonym"]["key"] = "<set, not stored>"
    return record


# ---------------------------------------------------------------- the single writer

class _Writer:
    """Writes each result: files, one DB transaction, then the CSV views of the run."""

    def __init__(self, engine, run_id: int, out_dir: Path, run_uids: Iterable[str],
                 csv_interval_s: float = 0.0):
        self.engine = engine
        self.run_id = run_id
        self.out_dir = Path(out_dir)
        self.run_uids = list(dict.fromkeys(run_uids))
        self.csv_interval_s = csv_interval_s
        self._last_csv = float("-inf")
        self._export_s = 0.0

    def save(self, result, *, input_digest: str | None = None,
             settings_digest: str | None = None, flush: bool = True) -> None:
        if getattr(result, "roi_maps", None) or getattr(result, "qc_images", None):
            write_series_files(self.out_dir, result)
        with Session(self.engine) as session:
            store_db.save_series_result(
                session, result, self.run_id,
                input_digest=input_digest, settings_digest=settings_digest,
            )
        if flush:
            self.flush(force=False)

    def flush(self, *, force: bool = True) -> None:
        """Regenerate the run's CSVs from the database (atomically).

        Unless forced, at most every ``csv_interval_s`` and never more than 1/5 of the
        time (an export that takes 1 s waits 5 s), so large batches stay linear.
        """
        now = time.monotonic()
        if force or now - self._last_csv >= max(self.csv_interval_s, 5 * self._export_s):
            export_csvs(self.engine, self.out_dir, series_uids=self.run_uids)
            self._export_s = time.monotonic() - now
            self._last_csv = time.monotonic()


def _remove_orphaned_temp_files(out_dir: Path) -> None:
    """Delete ``.<name>.*.tmp`` files left by a killed run's atomic writes (never read)."""
    for folder in (out_dir, out_dir / "rois", out_dir / "qc"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- execution

def _run_local(jobs, settings, process):
    for job in jobs:
        try:
            yield job, process(job, settings)
        except Exception as exc:  # process_series never raises for a bad series: a bug
            logger.exception("series %s raised", job.ref.series_uid)
            yield job, SeriesResult.failed(job, "pipeline", f"internal error ({type(exc).__name__}: {exc})")


def _run_dask(jobs, settings, process, *, workers: int, scheduler: str | None):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); check the address "
                "(tcp://HOST:PORT) and that `dask scheduler` runs there"
            ) from exc
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    try:
        by_key = {}
        futures = []
        for job in jobs:
            key = f"bmdpipe-series-{job.ref.series_uid}-{os.getpid()}-{time.time_ns()}"
            fut = client.submit(process, job, settings, key=key, retries=TASK_RETRIES, pure=False)
            by_key[fut.key] = job
            futures.append(fut)
        for fut in as_completed(futures):
            job = by_key[fut.key]
            try:
                result = fut.result()
            except (Exception, asyncio.CancelledError) as exc:  # KilledWorker, lost scheduler, a bug
                logger.error("series %s: %s", job.ref.series_uid, exc)
                result = SeriesResult.failed(
                    job, "worker",
                    f"the Dask worker failed ({type(exc).__name__}: {exc}); run again to retry",
                )
            fut.release()
            yield job, result
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_batch(
    discovery,
    options: RunOptions,
    settings: Settings,
    *,
    progress: Callable[[SeriesResult, int, int], None] | None = None,
    process: Callable[[SeriesJob, Settings], SeriesResult] = process_series,
    command: str | None = None,
) -> RunSummary:
    """Process every CT series of ``discovery`` and write the outputs under ``options.out_dir``.

    Parameters
    ----------
    discovery : bmdpipe.ingest.Discovery
        Series to process and items skipped (with reasons) by discovery.
    options : RunOptions
        ``db_url`` (default ``sqlite:///OUT/bmdpipe.sqlite``), ``workers`` (local Dask
        cluster of N processes; 0 = in this process), ``scheduler`` (existing Dask
        scheduler address; its workers need bmdpipe installed and the input files at the
        same paths), ``resume``. A series whose worker dies is rescheduled by Dask on
        another worker (``distributed.scheduler.allowed-failures``, default 3); one whose
        task raises is retried :data:`TASK_RETRIES` times; after that it is recorded as
        failed at stage ``worker`` and the batch goes on.
    progress : callable, optional
        Called as ``progress(result, n_done, n_total)`` after each series (series
        skipped by resume come first, as ``processed`` results).
    process : callable
        The per-series function (default :func:`bmdpipe.pipeline.process_series`); must be
        picklable by reference for Dask.
    command : str, optional
        The command line recorded in the run (default ``sys.argv``).

    Returns
    -------
    RunSummary
    """
    out_dir = Path(options.out_dir)
    ensure_writable_folder(out_dir)
    _remove_orphaned_temp_files(out_dir)
    url = options.db_url or store_db.default_url(out_dir)
    engine = store_db.open_db(url, lock_timeout_s=settings.store.sqlite_lock_timeout_s)
    saved: list[SeriesRow] = []
    stopped = ""
    try:
        jobs = build_jobs(discovery.series, options)
        digests = {job.ref.series_uid: (job_input_digest(job), job_settings_digest(job, settings)) for job in jobs}
        with Session(engine) as session:
            run_id = store_db.start_run(session, settings=_settings_record(settings),
                                        settings_digest=settings_digest(settings),
                                        command=recorded_command(sys.argv if command is None else [command]))
            done = store_db.processed_digests(session) if options.resume else {}
        run_uids = [item.series_uid or store_db.stray_key(item.path) for item in discovery.skipped]
        writer = _Writer(engine, run_id, out_dir, run_uids + [j.ref.series_uid for j in jobs], options.csv_interval_s)
        todo = [j for j in jobs if done.get(j.ref.series_uid) != digests[j.ref.series_uid]]
        resumed = [j for j in jobs if done.get(j.ref.series_uid) == digests[j.ref.series_uid]]
        def report(result: SeriesResult, n_done: int) -> None:
            if progress:
                progress(result, n_done, len(jobs))

        try:
            for item in discovery.skipped:
                writer.save(item, flush=False)
            for n_done, job in enumerate(resumed, start=1):  # resumed series come first, as processed
                report(SeriesResult(series=job.ref.series_row(SeriesStatus.processed)), n_done)
            writer.flush()
            _process(todo, options, settings, process, writer, digests,
                     lambda result, i: report(result, len(resumed) + i), saved)
            writer.flush()
            with Session(engine) as session:
                store_db.finish_run(session, run_id)
        except StoreError as exc:  # disk full, folder or database gone read-only, database locked
            stopped = (f"{exc}. The run stopped after storing {len(saved)} series of {len(todo)}: each is complete "
                       "in the database, and the CSVs are rewritten from it by the next run. Run the same command "
                       "again when this is fixed: series already done are skipped (--resume, the default)")
    finally:
        engine.dispose()
    failures = tuple((r.series_uid, r.stage, r.reason) for r in saved if r.status == SeriesStatus.failed)
    return RunSummary(processed=len(saved) - len(failures), failed=len(failures), skipped=len(discovery.skipped),
                      resumed=len(resumed), out_dir=out_dir, failures=failures, run_id=run_id, db_url=url,
                      stopped=stopped)


def _process(todo: list[SeriesJob], options: RunOptions, settings: Settings, process, writer: _Writer,
             digests: dict, progress: Callable[[SeriesResult, int], None], saved: list[SeriesRow]) -> None:
    """Process the series (locally or on Dask), save each result as it comes and append its row to ``saved``."""
    if todo and (options.scheduler or options.workers > 0):
        results = _run_dask(todo, settings, process, workers=options.workers, scheduler=options.scheduler)
    else:
        results = _run_local(todo, settings, process)
    with closing(results):  # a store error stops the run: the Dask cluster is shut down
        for i, (job, result) in enumerate(results, start=1):
            inp, sett = digests[job.ref.series_uid]
            writer.save(result, input_digest=inp, settings_digest=sett)
            saved.append(result.series)
            progress(result, i)


def recorded_command(argv: Sequence[str]) -> str:
    """The command line as stored with the run, with the password of any URL in it (``--db``) hidden."""
    return " ".join(_URL_PASSWORD.sub(r"\1***@", arg) for arg in argv)
