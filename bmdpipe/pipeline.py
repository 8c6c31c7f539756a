"""``process_series``: the one place where the stages meet.

One CT series -> :class:`SeriesResult` (rows, ROI maps, QC images, status). The function
never raises for a bad series: the failure is recorded with its stage and reason so
that a batch goes on. It reads the series' files (through :mod:`bmdpipe.ingest`) but
writes nothing: :mod:`bmdpipe.batch` hands the result to the single writer.
"""

from __future__ import annotations

import io
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import Settings
from .errors import AnatomyError, BmdpipeError, CalibrationError, NoiseError
from .noise import NoiseModel, estimate_noise
from .results import Calibration, Material, Screw, Side, Vertebra
from .rows import CalibrationRow, ScrewRow, SeriesRow, SeriesStatus, VbmdRow, join_warnings
from .volume import Volume

__all__ = ["SeriesJob", "SeriesResult", "process_series", "process_volume", "series_noise",
           "roi_map_nifti_bytes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesJob:
    """What to do with one series (command-line values merged with its manifest row).

    Attributes
    ----------
    ref : bmdpipe.ingest.SeriesRef
        The series found by discovery (files, UID, pseudonymised study_id).
    study_id, timepoint : str
        Manifest values; empty = keep the pseudonym from ingest / no timepoint.
    phantom : str or None
        Shipped phantom name, a definition YAML path, ``"none"`` (phantomless) or None
        (phantomless, with a warning that no phantom was named).
    labels : str or None
        Vertebra label file or TotalSegmentator folder on this CT.
    levels : tuple of str
        Levels to measure: the names of auto-localised vertebrae (superior to inferior), or
        with ``labels`` the labelled levels to measure (empty: the lumbar ones).
    calibration_file : str or None
        A saved asynchronous calibration (``bmdpipe calibrate --save``) to reuse.
    precalibration_file : str or None
        A saved phantom calibration of the same scanner and protocol whose effective energy
        pre-calibrates the phantomless calibration of this series (used when no phantom is named).
    """

    ref: object
    study_id: str = ""
    timepoint: str = ""
    phantom: str | None = None
    labels: str | None = None
    levels: tuple[str, ...] = ()
    calibration_file: str | None = None
    precalibration_file: str | None = None


@dataclass(frozen=True)
class SeriesResult:
    """Everything one series produced; picklable (sent back from Dask workers).

    ``series`` is its ``series.csv`` row: processed (``reason``: the warnings), or failed with
    the stage and the reason.
    """

    series: SeriesRow
    study_id: str = ""
    timepoint: str = ""
    calibration_row: CalibrationRow | None = None
    vbmd_rows: tuple[VbmdRow, ...] = ()
    screw_rows: tuple[ScrewRow, ...] = ()
    roi_maps: dict = field(default_factory=dict)  # "A"/"B"/"C" -> NIfTI (.nii.gz) bytes
    qc_images: dict = field(default_factory=dict)  # file suffix -> PNG bytes
    warnings: tuple[str, ...] = ()

    @classmethod
    def failed(cls, job: SeriesJob, stage: str, reason: str) -> SeriesResult:
        """The result of a series that failed at ``stage`` for ``reason``."""
        return cls(series=job.ref.series_row(SeriesStatus.failed, reason, stage),
                   study_id=job.study_id or job.ref.study_id, timepoint=job.timepoint)


# --------------------------------------------------------------------------- stages


class InternalError(BmdpipeError):
    """An unexpected exception inside a stage (a bug): recorded with the stage's name."""


@contextmanager
def _stage(name: str):
    """Tag unexpected exceptions with the stage they came from; log the stage's wall time (DEBUG, with the
    record attributes ``stage`` and ``seconds``, read by ``scripts/bench/pipeline_speed.py``)."""
    start = time.perf_counter()
    try:
        yield
    except (BmdpipeError, MemoryError):
        raise
    except Exception as exc:
        logger.exception("unexpected error in stage %s", name)
        err = InternalError(
            f"internal error in stage {name} ({type(exc).__name__}: {exc}); "
            "please report it with the log"
        )
        err.stage = name
        raise err from exc
    seconds = time.perf_counter() - start
    logger.debug("stage %s: %.2f s", name, seconds, extra={"stage": name, "seconds": seconds})


def _calibrate(volume: Volume, job: SeriesJob, settings: Settings) -> Calibration:
    from .calibrate import (calibrate_internal, calibrate_with_phantom, check_compatible, load_calibration,
                            load_phantom, phantom_hint, precalibration_kev, to_ha_equivalent)

    def saved(path: str) -> tuple[Calibration, tuple[str, ...]]:  # a saved calibration and its protocol check
        cal, kvp, kernel = load_calibration(Path(path))
        return cal, tuple(check_compatible(kvp, kernel, volume.meta.kvp, volume.meta.kernel))

    if job.calibration_file:
        cal, notes = saved(job.calibration_file)
        cal = replace(cal, warnings=cal.warnings + notes)
    elif job.phantom is None or job.phantom.lower() == "none":
        scanner_kev, notes = None, ()
        if job.precalibration_file:
            pre, notes = saved(job.precalibration_file)
            scanner_kev = precalibration_kev(pre)
        cal = calibrate_internal(volume, settings.calibration, scanner_kev=scanner_kev)
        hint = phantom_hint(volume, settings.calibration)
        cal = replace(cal, warnings=cal.warnings + notes + ((hint,) if hint else ()))
        if job.phantom is None and not job.precalibration_file:
            cal = replace(
                cal,
                warnings=cal.warnings
                + ("no --phantom given: phantomless (internal) calibration used",),
            )
    else:
        cal = calibrate_with_phantom(volume, load_phantom(job.phantom), settings.calibration)
    if settings.calibration.convert_to_ha and cal.material == Material.K2HPO4:
        cal = to_ha_equivalent(cal, volume.meta.kvp)
    return cal


def series_noise(volume: Volume, settings: Settings) -> tuple[NoiseModel | None, tuple[str, ...]]:
    """The series' noise model (:func:`bmdpipe.noise.estimate_noise`) and a note when it could not be
    estimated (then None: the standard errors are left empty)."""
    try:
        return estimate_noise(volume.array, volume.spacing, settings.noise), ()
    except NoiseError as exc:
        return None, (str(exc),)


def _vertebrae(volume: Volume, job: SeriesJob, settings: Settings) -> tuple[list[Vertebra], tuple[str, ...]]:
    """The whole vertebrae of the series, and a note for each one cut by the scan's field of view (and,
    when localised, for each body much taller than the others)."""
    from .anatomy import localize_vertebrae, scan_edge_cut, tall_bodies, vertebrae_from_labels

    if job.labels:
        found = vertebrae_from_labels(Path(job.labels), volume, settings.anatomy, levels=job.levels or None)
        notes = ()
    else:
        found = localize_vertebrae(volume, settings.anatomy, levels=job.levels or None)
        notes = tuple(tall_bodies(found, settings.anatomy.max_body_height_ratio))
    cut = {v.name: scan_edge_cut(v, volume, settings.anatomy.fov_edge_margin_mm) for v in found}
    notes += tuple(f"{name} not measured: its vertebral body reaches the {edge} end of the scan (cut by the field "
                   "of view; ROI A needs the whole body)" for name, edge in cut.items() if edge)
    whole = [v for v in found if not cut[v.name]]
    if not whole:
        raise AnatomyError("no whole vertebra to measure: " + "; ".join(notes))
    return whole, notes


def _screws(volume: Volume, vertebrae: list[Vertebra], settings: Settings) -> tuple[list[Screw], list, tuple[str, ...]]:
    """Pedicle screws of the measured vertebrae with their halos, each halo's
    :class:`~bmdpipe.screws.halo.HaloDetail` (for the QC figures), and a note for each other metal object."""
    from .screws import detect_screws, measure_halo_details

    found = detect_screws(volume, settings.screws, vertebrae=vertebrae)
    screws = [s for s in found if s.vertebra]
    levels = ", ".join(v.name for v in vertebrae)
    notes = tuple(
        f"straight metal object that is not a pedicle screw of a measured vertebra ({levels}) ignored: "
        f"{s.length_mm:.0f} mm long, {s.diameter_mm:.0f} mm wide, LPS ({', '.join(f'{c:.0f}' for c in s.entry_lps)}) "
        f"to ({', '.join(f'{c:.0f}' for c in s.tip_lps)}) mm (a crosslink, an interbody cage, an implant elsewhere, "
        "or a screw of a level not measured)"
        for s in found if not s.vertebra)
    details = measure_halo_details(volume, screws, settings.halo, settings.screws) if screws else []
    return [replace(s, halo=d.halo) for s, d in zip(screws, details)], details, notes


def roi_map_nifti_bytes(volume: Volume, label_map: np.ndarray) -> bytes:
    """Encode a label map on the CT grid as gzipped NIfTI bytes with the CT's RAS affine."""
    import gzip

    # zlib's fastest level: a label map is mostly zeros (a 133 x 512 x 512 map of three ROIs: 0.16 s and ~310 kB,
    # against 0.33 s and ~75 kB at level 6; a series' CT is ~70 MB)
    return gzip.compress(volume.nifti_image(label_map).to_bytes(), compresslevel=1, mtime=0)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # zlib's fastest level: QC figures are mostly flat colour and text, and compress almost as well
    fig.savefig(buf, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return buf.getvalue()


def _qc_images(volume, cal, vertebrae, rois, screws, halo_details, settings: Settings) -> dict[str, bytes]:
    """QC figures as PNG bytes, keyed by the file-name suffix (``qc/<uid>_<key>.png``)."""
    from .report.calibration_plot import plot_calibration
    from .report.roi_qc import roi_figure
    from .report.screw_qc import screw_qc_figure

    images = {"calibration": _png(plot_calibration(cal, volume))} if cal is not None else {}
    for vert in vertebrae:
        images[f"roi_{vert.name}"] = _png(roi_figure(volume, vert, rois))
    for screw, detail in zip(screws, halo_details):
        key = f"screw_{screw.vertebra or 'unassigned'}_{screw.side.value}"
        images[key if key not in images else f"{key}_{len(images)}"] = _png(
            screw_qc_figure(volume, screw, settings.halo, settings.screws, detail=detail))
    return images


def process_volume(volume: Volume, job: SeriesJob, settings: Settings) -> dict:
    """Run calibration, noise estimation, anatomy, screws, ROIs and measurement on a loaded volume.

    Returns the fields of :class:`SeriesResult` that depend on the image, and
    ``calibration_error``: the :class:`~bmdpipe.errors.CalibrationError` of a calibration that
    failed (else None). A failed calibration loses nothing that does not depend on it: the ROIs
    are measured in HU (their ``vbmd.csv`` rows have no density and ``calibration`` =
    ``failed``), screws, halos and QC images are made. Other stages raise
    :class:`~bmdpipe.errors.BmdpipeError` subclasses; ``process_series`` catches them.
    """
    from .measure import imprecise_roi_note, measure_rois, refused_roi_note, roi_label_map
    from .roi import place_rois

    with _stage("calibrate"):
        try:
            cal, cal_error = _calibrate(volume, job, settings), None
        except CalibrationError as exc:
            cal, cal_error = None, exc
    with _stage("noise"):
        noise, noise_notes = series_noise(volume, settings)
    with _stage("anatomy"):
        vertebrae, anatomy_notes = _vertebrae(volume, job, settings)
    with _stage("screws"):
        screws, halo_details, screw_notes = _screws(volume, vertebrae, settings)
    with _stage("roi"):
        rois = place_rois(volume, vertebrae, settings, screws=screws)
    with _stage("measure"):
        vbmd_rows = measure_rois(volume, rois, cal, noise, settings)
        screw_rows = tuple(ScrewRow.of(s, volume.meta) for s in screws)
        roi_notes = tuple(note for note in (
            refused_roi_note(vbmd_rows),
            imprecise_roi_note(vbmd_rows, settings.roi.max_standard_error_mg_cm3,
                               screw_sides={(s.vertebra, Side(s.side).value) for s in screws})) if note)
    out = {
        "calibration_row": None if cal is None else CalibrationRow.of(cal, volume.meta),
        "calibration_error": cal_error,
        "vbmd_rows": vbmd_rows,
        "screw_rows": screw_rows,
        "warnings": (tuple(volume.meta.warnings) + (tuple(cal.warnings) if cal else ()) + noise_notes
                     + anatomy_notes + screw_notes + roi_notes),
        "roi_maps": {},
        "qc_images": {},
    }
    if settings.output.roi_maps:
        with _stage("roi_maps"):
            out["roi_maps"] = {
                region: roi_map_nifti_bytes(volume, roi_label_map(volume.shape, rois, region))
                for region in ("A", "B", "C")
            }
    if settings.output.qc_images:
        with _stage("report"):
            out["qc_images"] = _qc_images(volume, cal, vertebrae, rois, screws, halo_details, settings)
    return out


def _calibration_failure(error: CalibrationError, out: dict) -> str:
    """series.csv's reason for a series whose calibration failed: why, and what was still written."""
    kept = [f"{len(out['vbmd_rows'])} ROIs in HU (no vBMD)"]
    if out["screw_rows"]:
        kept.append(f"{len(out['screw_rows'])} screws with their halos")
    if out["qc_images"]:
        kept.append("QC images")
    return f"calibration failed: {error} (written all the same: {', '.join(kept)})"


def process_series(job: SeriesJob, settings: Settings) -> SeriesResult:
    """Process one CT series end to end; failures become a ``failed`` result, never an exception."""
    from .ingest import load_series

    ref = job.ref
    study_id = job.study_id or ref.study_id
    try:
        with _stage("load"):
            volume = load_series(ref, settings.ingest)
        volume = volume.with_meta(study_id=study_id, timepoint=job.timepoint)
        out = process_volume(volume, job, settings)
    except BmdpipeError as exc:
        logger.warning("series %s failed at stage %s: %s", ref.series_uid, exc.stage, exc)
        return SeriesResult.failed(job, exc.stage, str(exc))
    except MemoryError:
        return SeriesResult.failed(job, "pipeline", "out of memory while processing; run with fewer --workers")
    cal_error = out.pop("calibration_error")
    if cal_error is not None:
        logger.warning("series %s: calibration failed, the rest is kept: %s", ref.series_uid, cal_error)
        series = ref.series_row(SeriesStatus.failed, _calibration_failure(cal_error, out), cal_error.stage)
    else:
        series = ref.series_row(SeriesStatus.processed, join_warnings(out["warnings"]))
    return SeriesResult(series=series, study_id=study_id, timepoint=job.timepoint, **out)
