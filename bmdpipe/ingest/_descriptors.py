"""Free-text descriptors that reach the outputs, cleaned of identifying text.

Two header texts are written out: SeriesDescription (the ``description`` column of
``series.csv``, fixed by the output contract) and the contrast agent (quoted in a series'
warning). DICOM PS3.15 Annex E removes both in its Basic Application Level Confidentiality
Profile and keeps them, cleaned, under its Clean Descriptors Option; bmdpipe keeps them
cleaned, since a research coordinator tells series apart by their description.

A descriptor is cleaned of every word that repeats a value of the same header's identifying
attributes (:data:`IDENTIFYING_KEYWORDS`: the patient's names and IDs, the study's
accession number and IDs, the people and the site of Table E.1-1), and of every date, every
word holding a DICOM name separator ``^`` and every run of :data:`MIN_ID_DIGITS` or more
digits, whatever header they came from. Each is replaced by :data:`REMOVED`. A name typed
into a description that appears nowhere else in the header cannot be recognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = ["IDENTIFYING_KEYWORDS", "REMOVED", "MIN_ID_DIGITS", "MIN_IDENTIFIER_CHARS", "header_identifiers",
           "clean_descriptor"]

#: Attributes of DICOM PS3.15 Table E.1-1 whose values are names, IDs, addresses or places of the
#: patient, the study's people and the site; a descriptor repeating one of them is cleaned of it.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator",
    "IssuerOfPatientID", "AdmissionID", "ResponsiblePerson", "ResponsibleOrganization",
    "AccessionNumber", "StudyID", "RequestedProcedureID", "PerformedProcedureStepID",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "PerformingPhysicianName",
    "OperatorsName", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber",
)

_NAME_KEYWORDS = frozenset(k for k in IDENTIFYING_KEYWORDS if dictionary_VR(k) == "PN")

#: What a removed word is replaced by.
REMOVED = "***"

#: A run of this many digits or more is taken for an identifier (IDs, record numbers, dates).
MIN_ID_DIGITS = 6

#: Shortest value (characters) recognised as an identifier; a word of a name counts from 2 (Li, Wu).
MIN_IDENTIFIER_CHARS = 3

_NAME_SEPARATORS = re.compile(r"[\^=\s,]+")
_NOT_AFTER_LETTER = r"(?<![^\W_])"  # not preceded by a letter or digit (any script)
_NOT_BEFORE_LETTER = r"(?![^\W_])"
_ALWAYS_REMOVED = re.compile(
    r"\S*\^\S*"                                                       # a DICOM person name (Family^Given)
    rf"|(?<!\d)\d{{{MIN_ID_DIGITS},}}(?!\d)"                          # an ID or a YYYYMMDD date
    r"|(?<!\d)(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])(?!\d)"  # 1937-05-11
    r"|(?<!\d)(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|[12]\d|3[01])[-./](?:19|20)\d\d(?!\d)"  # 11.05.1937
)


def _values(value: Any) -> list[str]:
    """The text of each value of a (possibly multi-valued) element."""
    if value is None or isinstance(value, (bytes, bytearray)):
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def header_identifiers(ds: Dataset) -> tuple[str, ...]:
    """The identifying values of a header, each name also split into its components.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset

    Returns
    -------
    tuple of str
        The values of :data:`IDENTIFYING_KEYWORDS` present in ``ds`` (a malformed element
        counts as absent), and each word of a name (components of ``Family^Given``).
    """
    out: list[str] = []
    for keyword in IDENTIFYING_KEYWORDS:
        try:
            value = ds.get(keyword)
        except Exception:  # malformed element: nothing to recognise
            continue
        for text in _values(value):
            text = text.strip(" \x00")
            if len(text) >= MIN_IDENTIFIER_CHARS:
                out.append(text)
            if keyword in _NAME_KEYWORDS:
                out.extend(w for w in _NAME_SEPARATORS.split(text) if len(w) >= 2)
    return tuple(dict.fromkeys(out))


def clean_descriptor(text: str, identifiers: Iterable[str]) -> str:
    """``text`` with every identifying word replaced by :data:`REMOVED`.

    Parameters
    ----------
    text : str
        A free-text header value (SeriesDescription, ContrastBolusAgent).
    identifiers : iterable of str
        The header's identifying values (:func:`header_identifiers`); each is matched as a
        whole word, ignoring case.

    Returns
    -------
    str
        The text without those values, dates, ``^``-separated names and runs of
        :data:`MIN_ID_DIGITS` or more digits.

    Examples
    --------
    >>> clean_descriptor("QCT LSPINE doe 4711 19370511", ["Doe^Jane", "Doe", "Jane"])
    'QCT LSPINE *** 4711 ***'
    """
    words = sorted({w for w in identifiers if w.strip()}, key=len, reverse=True)
    if words:
        pattern = _NOT_AFTER_LETTER + "(?:" + "|".join(re.escape(w) for w in words) + ")" + _NOT_BEFORE_LETTER
        text = re.sub(pattern, REMOVED, text, flags=re.IGNORECASE)
    return _ALWAYS_REMOVED.sub(REMOVED, text)
