"""Command line: ``bmdpipe run``, ``calibrate``, ``synth`` ... Thin: parse, call, print.

Heavy imports live inside the commands so that ``--help`` is instant.
Exit status of ``run``: 0 every CT series processed, 1 at least one failed,
2 usage or configuration error (nothing written).
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="bmdpipe",
    help="Vertebral bone mineral density (vBMD, mg/cm3) and pedicle-screw loosening on CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail_usage(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USAGE)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _version_callback(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"bmdpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """bmdpipe: QCT bone density per vertebra (ROIs A, B, C) and screw halos on follow-up CT."""


def _levels(text: str | None) -> tuple[str, ...]:
    """``--levels L3,L4,L5`` -> ``('L3', 'L4', 'L5')``; an unknown name is a usage error."""
    from .errors import ConfigError
    from .manifest import parse_levels

    try:
        return parse_levels(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


class _Progress:
    """A progress bar on stderr for discovery (files) and the batch (series); gone when done."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.console, transient=True)
        self.task = self.bar.add_task("discovering files", total=None)
        self.failed = 0

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def files(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def series(self, result, done: int, total: int) -> None:
        self.failed += result.series.status == "failed"
        self.bar.update(self.task, completed=done, total=total, description=f"series ({self.failed} failed)")


def _print_run_summary(console, summary, discovery, out: Path) -> None:
    console.print(
        f"{summary.processed} processed, {summary.failed} failed, {summary.skipped} skipped"
        + (f", {summary.resumed} already done" if summary.resumed else "")
    )
    for uid, stage, reason in summary.failures:
        console.print(f"[red]failed[/red] {uid} at {stage}: {reason}")
    if summary.stopped:
        from rich.markup import escape

        console.print(f"[red]stopped[/red]: {escape(summary.stopped)}")
    if not discovery.series and discovery.skipped:
        console.print("[yellow]no CT series to measure in the input[/yellow]: every item was skipped, for these "
                      "reasons (series.csv lists each one):")
        for reason, n in Counter(item.reason for item in discovery.skipped).most_common(5):
            console.print(f"  {n} x {reason}")
    console.print(f"outputs in {out.resolve()} (series.csv, calibration.csv, vbmd.csv, screws.csv, rois/, qc/)")


_FILE = {"exists": True, "dir_okay": False}  # Typer checks the path: a usage error (exit 2) naming it
_FILE_OR_DIR = {"exists": True}

Inputs = Annotated[Optional[list[Path]], typer.Argument(
    help="DICOM folders (searched recursively, any file names), NIfTI files, or both. "
    "May be omitted when --manifest lists the paths.", show_default=False, **_FILE_OR_DIR)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if absent).")]
Phantom = Annotated[Optional[str], typer.Option(
    help="Calibration phantom: a shipped definition name (see `bmdpipe phantoms`), a definition FILE.yaml "
    "with your phantom's certificate, or 'none' for phantomless (internal) calibration. Default: "
    "phantomless, with a warning.")]
Labels = Annotated[Optional[Path], typer.Option(
    help="Vertebra labels on this CT: a VerSe label map, a TotalSegmentator multilabel file or a "
    "TotalSegmentator output folder (vertebrae_L4.nii.gz ...). Default: vertebrae are localised "
    "automatically.", **_FILE_OR_DIR)]
Levels = Annotated[Optional[str], typer.Option(
    help="Vertebrae to measure, e.g. L3,L4,L5. Without --labels: the names of the auto-localised vertebrae, "
    "superior to inferior (default: V1, V2 ... from superior to inferior). With --labels: which labelled "
    "levels to measure (default: the lumbar ones; name thoracic ones such as T12,L1,L2 to include them).",
    callback=_levels)]
Manifest = Annotated[Optional[Path], typer.Option(
    help="CSV with per-series settings: path, study_id, timepoint, phantom, labels, levels (an empty cell = "
    "the command-line value).", **_FILE)]
Config = Annotated[Optional[Path], typer.Option(
    help="Settings YAML overriding configs/default.yaml (only the keys you change).", **_FILE)]
SavedCalibration = Annotated[Optional[Path], typer.Option(
    "--calibration", help="Reuse a saved asynchronous calibration (from `bmdpipe calibrate --save`) instead of a "
    "phantom in the scan.", **_FILE)]
Precalibration = Annotated[Optional[Path], typer.Option(
    help="Phantomless calibration pre-calibrated by a saved phantom calibration of the same scanner and "
    "protocol (from `bmdpipe calibrate --save`): its effective energy anchors each series' tissue fit (more "
    "accurate than phantomless alone; see README). For series without a phantom; not with --calibration.",
    **_FILE)]
RunDatabase = Annotated[Optional[str], typer.Option(
    "--db", help="Database URL. Default sqlite:///OUT/bmdpipe.sqlite; postgresql+psycopg://user:pass@host/db "
    "for a server.")]
Database = Annotated[str, typer.Option(
    "--db", help="Database URL: sqlite:///OUT/bmdpipe.sqlite or postgresql+psycopg://user:pass@host/db.")]
Workers = Annotated[int, typer.Option(
    min=0, help="Start a local Dask cluster with N worker processes (0 = process in this process).")]
Scheduler = Annotated[Optional[str], typer.Option(
    help="Address of an existing Dask distributed scheduler, e.g. tcp://10.0.0.5:8786.")]
Resume = Annotated[bool, typer.Option(
    "--resume/--no-resume", help="Skip series already processed with the same files and settings.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage.")]


@app.command()
def run(inputs: Inputs = None, out: Out = ..., phantom: Phantom = None, labels: Labels = None,
        levels: Levels = None, manifest: Manifest = None, config: Config = None,
        calibration: SavedCalibration = None, precalibration: Precalibration = None, db: RunDatabase = None,
        workers: Workers = 0, scheduler: Scheduler = None, resume: Resume = True, verbose: Verbose = False) -> None:
    """Measure vBMD (ROIs A, B, C) and screw halos for every CT series found in INPUT.

    Writes series.csv, calibration.csv, vbmd.csv, screws.csv, `rois/*.nii.gz` and `qc/*.png`
    under --out (see docs/output-contract.md). Exit status 0 when every CT series was
    processed, 1 when at least one failed (listed in series.csv with its reason), 2 for a
    usage or configuration error.
    """
    _setup_logging(verbose)
    from .batch import RunOptions, run_batch
    from .config import load_settings
    from .errors import BmdpipeError, ConfigError
    from .ingest import discover
    from .manifest import input_paths, read_manifest

    try:
        options = RunOptions(
            out_dir=out, phantom=phantom, labels=_text(labels), levels=levels, calibration_file=_text(calibration),
            precalibration_file=_text(precalibration), manifest=tuple(read_manifest(manifest)) if manifest else (),
            db_url=db, workers=workers, scheduler=scheduler, resume=resume)
        options.check()
        settings = load_settings(config)
        paths = input_paths(inputs or [], list(options.manifest))
    except ConfigError as exc:
        _fail_usage(str(exc))
    with _Progress() as progress:
        try:
            discovery = discover(paths, settings.ingest, settings.pseudonym, progress=progress.files)
            progress.bar.update(progress.task, description="series", completed=0, total=len(discovery.series))
            summary = run_batch(discovery, options, settings, progress=progress.series)
        except BmdpipeError as exc:  # an input that vanished, the database or cluster unreachable: usage
            progress.bar.stop()
            _fail_usage(str(exc))
    _print_run_summary(progress.console, summary, discovery, out)
    raise typer.Exit(summary.exit_code)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


@app.command()
def calibrate(
    scan: Annotated[Path, typer.Argument(help="Phantom scan: a DICOM folder or a NIfTI file.", **_FILE_OR_DIR)],
    phantom: Annotated[str, typer.Option(help="Phantom definition: shipped name or FILE.yaml.")] = ...,
    save: Annotated[Optional[Path], typer.Option(help="Write the calibration (JSON) here, for "
                                                 "`bmdpipe run --calibration FILE` or "
                                                 "`--precalibration FILE`.")] = None,
    config: Config = None,
    qc: Annotated[Optional[Path], typer.Option(help="Write the calibration QC plot (PNG) here.")] = None,
) -> None:
    """Asynchronous calibration: fit a phantom scanned on its own, save it for patient scans.

    Patient scans of the same scanner, kVp and kernel reuse it with `bmdpipe run --calibration`
    (the fit as it is) or `bmdpipe run --phantom none --precalibration` (each scan's phantomless
    fit anchored at this scanner's effective energy); a kVp or kernel mismatch is reported as a
    warning on each series.
    """
    from .calibrate import calibrate_with_phantom, load_phantom, save_calibration
    from .config import load_settings
    from .errors import BmdpipeError, ConfigError
    from .ingest import discover, load_series

    try:
        settings = load_settings(config)
        definition = load_phantom(phantom)
    except ConfigError as exc:
        _fail_usage(str(exc))
    # a phantom-only scan may be short: ingest.min_slices is meant for lumbar volumes
    ingest = settings.ingest.model_copy(update={"min_slices": settings.calibration.phantom_scan_min_slices})
    with _Progress() as progress:
        found = discover([scan], ingest, settings.pseudonym, progress=progress.files)
    if not found.series:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in found.skipped[:5])
        _fail_usage(f"no CT series in {scan}" + (f" ({reasons})" if reasons else ""))
    if len(found.series) > 1:
        typer.secho(f"warning: {len(found.series)} CT series in {scan}; using the first "
                    f"({found.series[0].series_uid})", fg=typer.colors.YELLOW, err=True)
    try:
        volume = load_series(found.series[0], ingest)
        cal = calibrate_with_phantom(volume, definition, settings.calibration)
    except BmdpipeError as exc:
        typer.secho(f"calibration failed ({exc.stage}): {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_FAILED)
    _print_calibration(cal)
    if save:
        save_calibration(cal, save, kvp=volume.meta.kvp, kernel=volume.meta.kernel)
        typer.echo(f"saved {save}")
    if qc:
        from .report.calibration_plot import save_calibration_qc

        save_calibration_qc(cal, volume, qc)
        typer.echo(f"QC plot {qc}")


def _print_calibration(cal) -> None:
    for ref in cal.references:
        typer.echo(f"rod {ref.name:8s} nominal {ref.nominal_mg_cm3:8.2f} mg/cm3  "
                   f"measured {ref.hu_mean:8.1f} HU  residual {ref.residual_hu or 0:+.1f} HU")
    typer.echo(f"HU = {cal.intercept_hu:.3f} + {cal.slope_hu_per_mg_cm3:.5f} x {cal.material.value} "
               f"mg/cm3   R^2 = {cal.r2:.5f}")
    if cal.details.get("kev") is not None:
        typer.echo(f"effective energy implied by the slope: {cal.details['kev']:.1f} keV "
                   "(anchors `bmdpipe run --phantom none --precalibration` of this scanner's scans)")
    for w in cal.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)


@app.command()
def phantoms() -> None:
    """List the shipped calibration phantom definitions.

    One line each: the name to give to `--phantom`, the model, the material, the number of
    rods and the description. A definition marked "example values" holds one phantom's
    certificate: copy its file and put in your own phantom's values.
    """
    from .calibrate import list_phantoms, load_phantom

    for name in list_phantoms():
        d = load_phantom(name)
        example = " [example values: use your own certificate]" if d.example_values else ""
        typer.echo(f"{name:28s} {d.model:13s} {d.material.value:6s} {len(d.rods)} rods  {d.description}{example}")


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic sample cases into.")],
) -> None:
    """Write synthetic lumbar-spine CT cases (DICOM + VerSe labels + truth JSON) and a manifest.

    Three cases: pre-operative with a Mindways phantom, pre-operative with an HA phantom,
    post-operative with screws (some with halos). OUT/manifest.csv lists them for
    `bmdpipe run --manifest OUT/manifest.csv --out RESULTS`.
    """
    from .manifest import MANIFEST_COLUMNS
    from .store.csv import write_csv
    from .synthetic import write_sample_data

    phantoms = {"mindways": "mindways-model3-ct", "ha": "qrm-bdc-6"}
    written = write_sample_data(out)
    rows = []
    for n, (name, files) in enumerate(sorted(written.items()), start=1):
        phantom = next((v for k, v in phantoms.items() if k in name), phantoms["mindways"])
        rows.append({
            "path": files["dicom"].relative_to(out).as_posix(),
            "study_id": f"DEMO{n:02d}",
            "timepoint": "month_12" if "postop" in name else "baseline",
            "phantom": phantom,
            "labels": files["labels"].relative_to(out).as_posix(),
            "levels": "",
        })
        typer.echo(f"{name}: {files['dicom']}")
    write_csv(out / "manifest.csv", rows, MANIFEST_COLUMNS)
    typer.echo(f"manifest: {out / 'manifest.csv'}")


class ExportFormat(str, Enum):
    """What ``bmdpipe export`` writes."""

    csv = "csv"
    redcap = "redcap"


@app.command()
def export(
    db: Database,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (created).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv: the contract CSVs (series, calibration, "
                                              "vbmd, screws, + clinical); redcap: a REDCap import file, its data "
                                              "dictionary, events and instrument designations.")] = ExportFormat.csv,
) -> None:
    """Write the contract CSVs (or a REDCap import file) from the database."""
    from .store.export import export_csvs, export_redcap

    with _database(db) as engine:
        if fmt is ExportFormat.csv:
            for name, n in export_csvs(engine, out).items():
                typer.echo(f"{out / name}: {n} rows")
        else:
            res = export_redcap(engine, out)
            typer.echo(f"{res.import_file}: {res.n_records} records, {res.n_rows} record-events")
            typer.echo(f"{res.dictionary_file} (upload first), {res.events_file}, {res.designations_file}")
            for msg in res.left_out:
                typer.secho(f"left out: {msg}", fg=typer.colors.YELLOW, err=True)


@contextmanager
def _database(url: str):
    """The database at ``url`` (migrated), disposed of afterwards; a store error is a usage error."""
    from .errors import StoreError
    from .store.db import open_db

    try:
        engine = open_db(url)
    except StoreError as exc:
        _fail_usage(str(exc))
    try:
        yield engine
    except StoreError as exc:
        _fail_usage(str(exc))
    finally:
        engine.dispose()


@app.command("import-clinical")
def import_clinical_cmd(
    csv_file: Annotated[Path, typer.Argument(help="Clinical CSV: study_id, timepoint, arm, cement, "
                                             "cage_type, odi_1..odi_10, vas_back, vas_leg, fusion_grade, "
                                             "loosening_reader, age_years, sex, bmi_kg_m2, tscore_lumbar, "
                                             "tscore_hip (one row per study x timepoint).", **_FILE)],
    db: Database,
) -> None:
    """Validate the trial's clinical data and store it (all rows or none). Exit 1 on invalid rows."""
    from .store.clinical import ClinicalImportError, import_clinical

    with _database(db) as engine:
        try:
            summary = import_clinical(engine, csv_file)
        except ClinicalImportError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"{summary.n_rows} rows: {summary.n_inserted} visits added, {summary.n_replaced} replaced, "
               f"{summary.n_new_studies} new studies")


# the review step (napari imported only inside `review`)
from .review.cli import measure as _measure_command, review as _review_command  # noqa: E402

app.command("review")(_review_command)
app.command("measure")(_measure_command)

from .stats.cli import app as _stats_app  # noqa: E402  (the sub-app's commands import their libraries lazily)

app.add_typer(_stats_app, name="stats")


if __name__ == "__main__":  # pragma: no cover
    app()
