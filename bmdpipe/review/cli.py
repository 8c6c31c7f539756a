"""``bmdpipe review`` (napari) and ``bmdpipe measure`` (ROIs drawn elsewhere): thin commands.

Registered on the main app in :mod:`bmdpipe.cli`. napari and Qt are imported inside
``review`` only, so that ``--help`` of both commands works without the ``review`` extra.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_USAGE = 2
INSTALL_HINT = "pip install 'bmdpipe[review]'"


def _reviewer(name: str | None) -> str:
    """``--reviewer`` checked (default: the login name); a name the database cannot hold is a usage error."""
    from ..errors import ConfigError
    from .io import check_reviewer

    try:
        return check_reviewer(name or getpass.getuser())
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USAGE)


OutDir = Annotated[Path, typer.Argument(help="The --out folder of a `bmdpipe run` (series.csv, rois/, database).",
                                        exists=True, file_okay=False)]
Reviewer = Annotated[Optional[str], typer.Option(
    help="Who reviews (initials or login; letters, digits, . _ -). Each reviewer's ROIs are kept side by side "
    "(vbmd_reviewers.csv). Default: your login name.", callback=_reviewer)]
ReviewDatabase = Annotated[Optional[str], typer.Option(
    "--db", help="The run's database URL (default sqlite:///OUT_DIR/bmdpipe.sqlite).")]


def review(
    out_dir: OutDir,
    series: Annotated[Optional[str], typer.Option(help="SeriesInstanceUID to open (default: pick one in the "
                                                  "widget by study_id, timepoint and series).")] = None,
    reviewer: Reviewer = None,
    db: ReviewDatabase = None,
    exit_when_shown: Annotated[bool, typer.Option(hidden=True, help="Print the time the viewer is shown, then "
                                                  "quit (scripts/bench/review_startup.py).")] = False,
) -> None:
    """Review and correct a processed series' ROIs in napari, then re-measure and save.

    Opens the CT with a bone window and the ROI maps A, B and C as labels ("L4 B left"), a
    table of each ROI's vBMD, SE and voxels that follows your edits, and tools to redraw
    ROI A as an ellipse, paint or erase B and C, place C along a line you draw, and reset a
    vertebra. Save writes your maps to rois/reviewed/REVIEWER/, re-measures the changed ROIs
    with the series' stored calibration (roi_source = manual), records who changed what in the
    database and rewrites vbmd.csv. Needs the review extra: pip install 'bmdpipe[review]'.
    """
    try:
        import napari  # noqa: F401
    except ImportError:
        _fail(f"`bmdpipe review` needs napari and a Qt binding: {INSTALL_HINT}")
    from ..errors import BmdpipeError
    from ._qt import run_viewer

    try:
        run_viewer(out_dir, series_uid=series, reviewer=reviewer, db_url=db, exit_when_shown=exit_when_shown)
    except BmdpipeError as exc:
        _fail(str(exc))


def measure(
    out_dir: OutDir,
    series: Annotated[str, typer.Option(help="SeriesInstanceUID whose ROIs you drew.")],
    rois: Annotated[Path, typer.Option(help="Folder with your ROI label maps on that CT: NAME_A.nii.gz, _B, _C "
                                       "(the run's rois/ files edited in 3D Slicer or ITK-SNAP; contract codes). "
                                       "A region without a file is left as it is.", exists=True, file_okay=False)],
    reviewer: Reviewer = None,
    db: ReviewDatabase = None,
) -> None:
    """Re-measure a series with ROIs drawn in another tool, as `bmdpipe review` saves them.

    The ROIs that differ from the automatic ones are measured with the series' stored
    calibration by the code `bmdpipe run` uses; vbmd.csv and the database get them with
    roi_source = manual, the audit records the values before and after, and
    vbmd_reviewers.csv holds one row per ROI and reviewer. No GUI, no napari needed.
    """
    from ..errors import BmdpipeError
    from .io import open_review, read_roi_folder, save_review
    from .model import ReviewSession

    try:
        start = open_review(out_dir, series, reviewer, db_url=db)
        session = ReviewSession(start)
        for region, label_map in read_roi_folder(rois, series, start.volume).items():
            session.set_map(region, label_map)
            unknown = session.unknown_codes(region)
            if unknown:
                _fail(f"the {region} map in {rois} holds label codes {unknown} that name no ROI of series {series}; "
                      "use the codes of the run's rois/ maps (10 x VerSe id + side: 0 center, 1 left, 2 right)")
        saved = save_review(session, out_dir, db_url=db)
    except BmdpipeError as exc:
        _fail(str(exc))
    if not saved.changes:
        typer.echo("no ROI differs from the ones already stored: nothing to save")
        return
    for change in saved.changes:
        b, a = change.before, change.after
        typer.echo(f"{change.key.name}: {_value(b.vbmd_mg_cm3)} -> {_value(a.vbmd_mg_cm3)} mg/cm3, "
                   f"{b.n_voxels} -> {a.n_voxels} voxels ({a.roi_source})")
    typer.echo(f"saved by {reviewer}: ROI maps in {saved.maps[0].parent}, vbmd.csv and vbmd_reviewers.csv rewritten")


def _value(x) -> str:
    return "-" if x is None or x != x else f"{x:.1f}"
