"""Pseudonyms: ``study_id`` as a keyed hash (HMAC-SHA256) of PatientID.

A manifest's ``study_id`` always wins (the caller replaces ``SeriesRef.study_id``);
this module makes the fallback. The key comes from the ``BMDPIPE_PSEUDONYM_KEY``
environment variable, else ``pseudonym.key`` in the settings. Without a key the value
is still hashed, but anyone holding the list of PatientIDs could recompute the mapping,
so a warning (without any identifier in it) is logged once per process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from ..config import PseudonymSettings

__all__ = ["study_id_for", "study_id_for_name"]

logger = logging.getLogger(__name__)

_warned_no_key = False


def _digest(message: str, settings: PseudonymSettings) -> str:
    global _warned_no_key
    key = settings.resolved_key()
    if not key and not _warned_no_key:
        _warned_no_key = True
        logger.warning(
            "no pseudonym key configured: study_id is an unkeyed hash of PatientID; set the "
            "BMDPIPE_PSEUDONYM_KEY environment variable (or pseudonym.key) to a secret for the trial"
        )
    mac = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256)
    return settings.prefix + mac.hexdigest()[: settings.length]


def study_id_for(
    patient_id: str, settings: PseudonymSettings, *, study_instance_uid: str = ""
) -> str:
    """Pseudonym of a patient: ``prefix`` + the first ``length`` hex digits of HMAC-SHA256.

    Parameters
    ----------
    patient_id : str
        PatientID (0010,0020). Leading/trailing blanks are ignored.
    settings : PseudonymSettings
        Key (or ``BMDPIPE_PSEUDONYM_KEY``), prefix and length.
    study_instance_uid : str, optional
        Used instead when PatientID is empty, so that an anonymised study still gets a
        stable pseudonym of its own.

    Returns
    -------
    str
        E.g. ``'S3f9a0c1b2d'``. Same input and key -> same pseudonym.

    Examples
    --------
    >>> from bmdpipe.config import PseudonymSettings
    >>> s = PseudonymSettings(key="secret")
    >>> study_id_for("12345", s) == study_id_for(" 12345 ", s)
    True
    """
    pid = (patient_id or "").strip()
    if pid:
        return _digest("patient:" + pid, settings)
    uid = (study_instance_uid or "").strip()
    return _digest("study:" + uid, settings)


def study_id_for_name(name: str, settings: PseudonymSettings) -> str:
    """Pseudonym for an input known only by a file name (NIfTI): keyed hash of ``name``."""
    return _digest("file:" + name, settings)
