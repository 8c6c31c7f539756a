"""Domain errors. Every message names the series (or file), the stage and what to do.

Each stage raises its own subclass so that ``batch`` can record *where* a series
failed (the ``stage`` attribute) and go on with the next series.
"""

from __future__ import annotations


class BmdpipeError(Exception):
    """Base class of every error bmdpipe raises on purpose."""

    stage = "pipeline"


class ConfigError(BmdpipeError, ValueError):
    """A settings file, phantom definition, manifest or CLI option is invalid."""

    stage = "config"


class IngestError(BmdpipeError):
    """A file or folder could not be read as DICOM / NIfTI."""

    stage = "ingest"


class SeriesError(IngestError):
    """A series was read but cannot be used as an axial CT volume in HU."""

    stage = "load"


class CalibrationError(BmdpipeError):
    """HU -> mg/cm3 calibration failed (phantom missing, rods missing, poor fit)."""

    stage = "calibrate"


class AnatomyError(BmdpipeError):
    """Vertebrae could not be labelled or localised."""

    stage = "anatomy"


class RoiError(BmdpipeError):
    """An ROI could not be placed."""

    stage = "roi"


class NoiseError(BmdpipeError):
    """The image noise's autocovariance could not be estimated (no uniform tissue)."""

    stage = "noise"


class ScrewError(BmdpipeError):
    """Screw detection or halo measurement failed."""

    stage = "screws"


class StoreError(BmdpipeError):
    """Results could not be written to CSV / database."""

    stage = "store"


class StatsError(BmdpipeError, ValueError):
    """A statistics input (CSV file, database, column) cannot be analysed as asked."""

    stage = "stats"


class ReviewError(BmdpipeError):
    """A series cannot be reviewed or re-measured (not in the run's outputs, its files or ROI maps gone)."""

    stage = "review"
