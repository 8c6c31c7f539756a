"""Exports: contract CSVs from the database and the REDCap import file + data dictionary."""

from __future__ import annotations

import csv

import pytest
from sqlalchemy.orm import Session

from bmdpipe.store import db
from bmdpipe.store.clinical import import_clinical
from bmdpipe.store.csv import CONTRACT_COLUMNS, read_csv_rows, write_csv
from bmdpipe.store.export import DICTIONARY_COLUMNS, export_csvs, export_redcap


def _header(path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


@pytest.fixture
def filled(sqlite_url, make_result, tmp_path):
    engine = db.open_db(sqlite_url)
    with Session(engine) as s:
        db.save_series_result(s, make_result("1.1", "S0001", "baseline", levels=("L3", "L4", "L5")), None)
        db.save_series_result(s, make_result("1.2", "S0001", "month_12", scale=0.5), None)
        db.save_series_result(s, make_result("1.3", "S0002", "month_12", levels=("T12", "L1")), None)
        db.save_series_result(s, make_result("1.4", "S0002", "month_12"), None)  # same visit
        db.save_series_result(s, make_result("1.5", "S0003", "preop"), None)  # not a visit
        db.save_series_result(s, make_result("1.6", "S0004", "baseline", status="failed"), None)
    clin = tmp_path / "clin.csv"
    clin.write_text("study_id,timepoint,arm,cement,odi_1,odi_2,fusion_grade,loosening_reader\n"
                    "S0001,month_12,cement,yes,2,4,III,no\nS0005,month_6,no_cement,no,,,,yes\n")
    import_clinical(engine, clin)
    yield engine
    engine.dispose()


def test_export_csvs_equal_the_queries(filled, tmp_path):
    """export_csvs writes the same bytes as write_csv over the database queries."""
    out = tmp_path / "export"
    counts = export_csvs(filled, out)
    assert counts["vbmd.csv"] == 5 * (3 + 2 + 2 + 2 + 2)
    assert counts["series.csv"] == 6 and counts["calibration.csv"] == 5
    assert counts["clinical.csv"] == 2
    with Session(filled) as s:
        tables = db.query_contract_rows(s)
    ref = tmp_path / "ref"
    for name, rows in tables.items():
        write_csv(ref / name, rows, CONTRACT_COLUMNS[name])
        assert (out / name).read_bytes() == (ref / name).read_bytes()
        header = _header(out / name)
        assert tuple(header[: len(CONTRACT_COLUMNS[name])]) == CONTRACT_COLUMNS[name]
    vb = read_csv_rows(out / "vbmd.csv")
    assert vb[0]["vbmd_mg_cm3"] == "100" and vb[0]["series_uid"] == "1.1"
    screws = read_csv_rows(out / "screws.csv")
    assert {r["loosened"] for r in screws} == {"true", "false"}


def test_redcap_files(filled, tmp_path):
    """REDCap: one row per study x visit, event names, dictionary covering every field."""
    res = export_redcap(filled, tmp_path)
    rows = read_csv_rows(res.import_file)
    header = _header(res.import_file)
    assert header[:2] == ["record_id", "redcap_event_name"]
    keys = [(r["record_id"], r["redcap_event_name"]) for r in rows]
    assert keys == [("S0001", "baseline_arm_1"), ("S0001", "month_12_arm_1"),
                    ("S0002", "month_12_arm_1"), ("S0005", "month_6_arm_1")]
    by = dict(zip(keys, rows))
    base = by[("S0001", "baseline_arm_1")]
    assert base["qct_series_uid"] == "1.1"
    assert float(base["vbmd_l3_a"]) == 100.0 and float(base["vbmd_l4_bl"]) == 111.5
    assert float(base["vbmd_l5_cr"]) == 120.0
    assert base["screw_l4_l_loose"] == "1" and float(base["screw_l4_l_halo"]) == 1.25
    m12 = by[("S0001", "month_12_arm_1")]
    assert m12["screw_l3_r_loose"] == "0" and float(m12["cal_slope"]) == pytest.approx(0.55)
    assert m12["cement"] == "1" and m12["fusion_grade"] == "3" and m12["loosening_reader"] == "0"
    assert float(m12["odi_index"]) == pytest.approx(60.0)
    assert by[("S0002", "month_12_arm_1")]["vbmd_t12_a"] != ""  # T12 added to the dictionary
    assert by[("S0005", "month_6_arm_1")]["loosening_reader"] == "1"
    assert len(res.left_out) == 2
    assert any("1.4" in m and "already exported" in m for m in res.left_out)
    assert any("1.5" in m and "preop" in m for m in res.left_out)

    dictionary = read_csv_rows(res.dictionary_file)
    dict_header = _header(res.dictionary_file)
    assert tuple(dict_header) == DICTIONARY_COLUMNS
    names = [r["Variable / Field Name"] for r in dictionary]
    assert names[0] == "record_id" and len(names) == len(set(names))
    assert header[2:] == names[1:]
    forms = [r["Form Name"] for r in dictionary]
    assert forms == sorted(forms, key=["qct", "screws", "clinical"].index)  # forms contiguous
    for r in dictionary:
        assert r["Field Type"] in {"text", "dropdown", "radio", "yesno"}
        if r["Field Type"] in {"dropdown", "radio"}:
            assert r["Choices, Calculations, OR Slider Labels"]
        assert len(r["Variable / Field Name"]) <= 26
    events = read_csv_rows(res.events_file)
    assert [e["unique_event_name"] for e in events] == [
        "baseline_arm_1", "month_3_arm_1", "month_6_arm_1", "month_12_arm_1", "month_24_arm_1"]
    assert len(read_csv_rows(res.designations_file)) == 15
