"""Descriptors written out (SeriesDescription, the contrast agent) lose their identifying words only."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from bmdpipe.config import IngestSettings, PseudonymSettings
from bmdpipe.ingest import discover
from bmdpipe.ingest._descriptors import clean_descriptor, header_identifiers


def _header() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Müller-Lüdenscheidt^Jürgen^K"
    ds.PatientID = "A-4711"
    ds.OtherPatientIDs = ["MRN88", "X-9"]
    ds.AccessionNumber = "ACC12"
    ds.StudyID = "7"
    ds.InstitutionName = "St. Elsewhere Clinic"
    ds.OperatorsName = ["Li^Wei", "Ng"]
    return ds


def test_identifiers_hold_values_and_name_words():
    """Whole values of 3+ characters, and each word of a name from 2 characters (Li); the one-letter
    initial and the one-digit study ID are too short to be recognised safely."""
    ids = header_identifiers(_header())
    assert {"Müller-Lüdenscheidt^Jürgen^K", "Müller-Lüdenscheidt", "Jürgen", "A-4711", "MRN88", "X-9", "ACC12",
            "St. Elsewhere Clinic", "Li^Wei", "Li", "Wei", "Ng"} == set(ids)


@pytest.mark.parametrize("text, cleaned", [
    ("QCT LSPINE MÜLLER-LÜDENSCHEIDT a-4711", "QCT LSPINE *** ***"),     # any case, non-ASCII letters
    ("jürgen_2mm st. elsewhere clinic", "***_2mm ***"),                  # '_' separates words
    ("Lipid LIVER Wei2", "Lipid LIVER Wei2"),                            # a name's word inside a word stays
    ("Doe^John lumbar", "*** lumbar"),                                   # a DICOM name, in no other tag
    ("Spine 1937-05-11 / 11.05.1937 / 5/11/1937", "Spine *** / *** / ***"),  # dates in any order
    ("LWS 19370511 ID 0123456", "LWS *** ID ***"),                       # 6+ digits: an ID or a date
])
def test_identifying_words_removed(text, cleaned):
    assert clean_descriptor(text, header_identifiers(_header())) == cleaned


@pytest.mark.parametrize("text", [
    "QCT LSPINE 1.0 STANDARD", "Abdomen 1.0 B30f", "iDose (4) 2mm", "AX 0.625 BONE+", "Recon 2: 5mm",
    "DE_Abdomen 0.6 Q30f 3", "ISOVUE300/100", "OMNIPAQUE 350", "Topogram 0.6 T20s", "Dose Report",
])
def test_usual_descriptions_unchanged(text):
    """Descriptions of the kind scanners write keep every word."""
    assert clean_descriptor(text, header_identifiers(_header())) == text


def test_discovery_reports_the_cleaned_description(dicom_factory, phi):
    """A series whose description repeats the patient's name and ID is listed with those words removed."""
    name, pid, _ = phi

    def edit(k, ds):
        ds.SeriesDescription = f"L-SPINE {name.split('^')[0]} {pid}"

    s = dicom_factory(edit=edit)
    (ref,) = discover([s.folder], IngestSettings(), PseudonymSettings(key="k")).series
    assert ref.description == "L-SPINE *** ***"
