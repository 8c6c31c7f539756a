"""Ingestion: find CT series (DICOM folders, NIfTI files), load them as HU volumes, pseudonymise.

Public API
----------
discover(paths, settings, pseudonym=None, *, progress=None) -> Discovery
load_series(ref, settings, *, min_slices=None) -> Volume
load_dicom_files(paths, settings, *, min_slices=None, ...) -> Volume
load_nifti(path, *, pseudonym=None, study_id=None, series_uid=None, settings=None) -> Volume
study_id_for(patient_id, settings, *, study_instance_uid='') -> str

No PHI (PatientName, PatientID, BirthDate) leaves this package: ``SeriesRef`` and
``Volume.meta`` carry the pseudonym ``study_id`` only.
"""

from ._refs import Discovery, SeriesRef, Skip, skipped_item
from .discover import classify_series, discover, is_nifti_path
from .load import SlicePlan, load_dicom_files, load_series, plan_slices
from .nifti import load_nifti, nifti_series_uid
from .pseudonym import study_id_for, study_id_for_name

__all__ = [
    "Discovery",
    "SeriesRef",
    "Skip",
    "SlicePlan",
    "classify_series",
    "discover",
    "is_nifti_path",
    "load_dicom_files",
    "load_nifti",
    "load_series",
    "nifti_series_uid",
    "plan_slices",
    "skipped_item",
    "study_id_for",
    "study_id_for_name",
]
