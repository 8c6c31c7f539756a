"""Pseudonyms: keyed HMAC-SHA256 of PatientID, key from the environment or the settings."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from bmdpipe.config import PseudonymSettings
from bmdpipe.ingest import pseudonym
from bmdpipe.ingest.pseudonym import study_id_for, study_id_for_name


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("BMDPIPE_PSEUDONYM_KEY", raising=False)


def _expected(key: str, message: str, prefix="S", length=10) -> str:
    return prefix + hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()[:length]


def test_value_is_hmac_sha256_of_patient_id():
    s = PseudonymSettings(key="k1", prefix="BMD-", length=12)
    assert study_id_for("12345", s) == _expected("k1", "patient:12345", "BMD-", 12)
    assert study_id_for(" 12345 ", s) == study_id_for("12345", s)


def test_key_changes_pseudonym_and_env_wins(monkeypatch):
    a = study_id_for("12345", PseudonymSettings(key="k1"))
    b = study_id_for("12345", PseudonymSettings(key="k2"))
    assert a != b
    monkeypatch.setenv("BMDPIPE_PSEUDONYM_KEY", "from-env")
    assert study_id_for("12345", PseudonymSettings(key="k1")) == _expected("from-env", "patient:12345")


def test_empty_patient_id_uses_study_uid():
    s = PseudonymSettings(key="k")
    a = study_id_for("", s, study_instance_uid="1.2.3")
    assert a == _expected("k", "study:1.2.3")
    assert a != study_id_for("", s, study_instance_uid="1.2.4")
    assert a != study_id_for("1.2.3", s)  # separate namespaces


def test_no_key_warns_once_without_phi(monkeypatch, caplog):
    monkeypatch.setattr(pseudonym, "_warned_no_key", False)
    with caplog.at_level(logging.WARNING, logger="bmdpipe.ingest.pseudonym"):
        a = study_id_for("SECRET-ID-1", PseudonymSettings())
        study_id_for("SECRET-ID-2", PseudonymSettings())
    warnings = [r for r in caplog.records if "pseudonym key" in r.getMessage()]
    assert len(warnings) == 1
    assert "SECRET" not in caplog.text
    assert a == _expected("", "patient:SECRET-ID-1")


def test_name_pseudonym():
    s = PseudonymSettings(key="k")
    assert study_id_for_name("case_ct", s) == _expected("k", "file:case_ct")
