"""Import of the trial's clinical CSV: validation with row-level errors, ODI index, upsert."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from bmdpipe.store import db
from bmdpipe.store.clinical import ClinicalImportError, import_clinical, odi_index, parse_clinical_csv

HEADER = ("study_id,timepoint,arm,cement,cage_type,odi_1,odi_2,odi_3,odi_4,odi_5,odi_6,odi_7,"
          "odi_8,odi_9,odi_10,vas_back,vas_leg,fusion_grade,loosening_reader\n")


def _write(tmp_path, body: str, name="clinical.csv"):
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


def test_odi_index_formula():
    """ODI = sum / (5 x answered) x 100: all 5s = 100 %, unanswered sections don't count."""
    assert odi_index([5] * 10) == 100.0
    assert odi_index([0] * 10) == 0.0
    # 8 answered sections summing to 20: 20 / 40 x 100 = 50 %
    assert odi_index([5, 0, None, 2, 3, 1, 0, None, 4, 5]) == pytest.approx(50.0)
    assert odi_index([None] * 10) is None


def test_row_level_errors_name_row_field_and_value(tmp_path):
    """Every bad cell is reported as 'row N: field = value ...' (header = row 1)."""
    path = _write(tmp_path,
                  "S1,baseline,cement,yes,peek,1,2,3,4,5,0,1,2,3,4,2,1,,\n"
                  "S1,month_3,cement,yes,peek,1,2,3,4,5,0,1,2,3,4,2,1,II,no\n"
                  "S2,month_6,none,maybe,peek,1,2,3,4,5,0,1,2,3,4,12,1,V,no\n"
                  "S3,month_6,none,no,peek,1,2,3,4,5,0,9,2,3,4,,1,,\n"
                  ",month_7,none,no,peek,1,2,x,4,5,0,1,2,3,4,,1,,\n"
                  "S1,baseline,cement,yes,peek,,,,,,,,,,,,,,\n")
    with pytest.raises(ClinicalImportError) as info:
        parse_clinical_csv(path)
    errors = info.value.errors
    assert "row 4: cement = maybe is not yes or no" in errors
    assert "row 4: vas_back = 12 is out of range 0-10" in errors
    assert "row 4: fusion_grade = V is not a Bridwell grade I, II, III or IV" in errors
    assert "row 5: odi_7 = 9 is out of range 0-5" in errors
    assert "row 6: odi_3 = x is not a number" in errors
    assert any(e.startswith("row 6: study_id") for e in errors)
    assert any(e.startswith("row 6: timepoint = month_7 is not one of baseline") for e in errors)
    assert "row 7: study S1 at baseline already given in row 2" in errors
    assert len(errors) == 8
    assert "nothing imported" in str(info.value)


def test_unknown_column_is_an_error(tmp_path):
    """A misspelt header is reported rather than silently dropped."""
    path = tmp_path / "c.csv"
    path.write_text("study_id,timepoint,odi1\nS1,baseline,3\n")
    with pytest.raises(ClinicalImportError, match="unknown column.*odi1"):
        parse_clinical_csv(path)


def test_import_writes_values_and_replaces(tmp_path, sqlite_url):
    """Valid rows land in the database with parsed values; re-import replaces, never duplicates."""
    engine = db.open_db(sqlite_url)
    path = _write(tmp_path,
                  "S1,baseline,cement,yes,ti3d,1,2,3,4,5,0,1,2,,,7,3.5,,\n"
                  "S1,month_12,cement,Y,ti3d,1,1,1,1,1,1,1,1,1,1,2,1,III,no\n")
    summary = import_clinical(engine, path)
    assert (summary.n_rows, summary.n_inserted, summary.n_replaced, summary.n_new_studies) == (2, 2, 0, 1)
    path2 = _write(tmp_path, "S1,month_12,cement,no,ti3d,0,0,0,0,0,0,0,0,0,0,0,0,IV,yes\n", "c2.csv")
    summary2 = import_clinical(engine, path2)
    assert (summary2.n_inserted, summary2.n_replaced) == (0, 1)
    with Session(engine) as s:
        rows = db.query_clinical(s)
    engine.dispose()
    assert [(r["study_id"], r["timepoint"]) for r in rows] == [("S1", "baseline"), ("S1", "month_12")]
    base, m12 = rows
    assert base["cement"] is True and base["odi_3"] == 3 and base["odi_9"] is None
    assert base["odi_index"] == pytest.approx(18 / 40 * 100)
    assert base["vas_leg"] == 3.5 and base["fusion_grade"] is None
    assert m12["fusion_grade"] == 4 and m12["loosening_reader"] is True and m12["cement"] is False
    assert m12["odi_index"] == 0.0


def test_invalid_file_writes_nothing(tmp_path, sqlite_url):
    """One bad row blocks the whole import: the database stays empty."""
    engine = db.open_db(sqlite_url)
    path = _write(tmp_path, "S1,baseline,a,yes,p,1,1,1,1,1,1,1,1,1,1,1,1,I,no\n"
                            "S2,baseline,a,yes,p,1,1,1,1,1,1,1,1,1,6,1,1,I,no\n")
    with pytest.raises(ClinicalImportError, match="row 3: odi_10 = 6 is out of range 0-5"):
        import_clinical(engine, path)
    with Session(engine) as s:
        assert db.query_clinical(s) == []
    engine.dispose()


def test_cli_import_clinical_and_export(tmp_path, sqlite_url):
    """`bmdpipe import-clinical` exits 1 listing bad rows, 0 when valid; `export` writes files."""
    from typer.testing import CliRunner

    from bmdpipe.cli import app

    runner = CliRunner()
    bad = _write(tmp_path, "S1,baseline,a,yes,p,1,1,1,1,1,1,1,1,1,7,1,1,I,no\n", "bad.csv")
    res = runner.invoke(app, ["import-clinical", str(bad), "--db", sqlite_url])
    assert res.exit_code == 1
    assert "row 2: odi_10 = 7 is out of range 0-5" in res.output
    good = _write(tmp_path, "S1,baseline,a,yes,p,1,1,1,1,1,1,1,1,1,1,1,1,I,no\n", "good.csv")
    res = runner.invoke(app, ["import-clinical", str(good), "--db", sqlite_url])
    assert res.exit_code == 0, res.output
    assert "1 visits added" in res.output
    res = runner.invoke(app, ["export", "--db", sqlite_url, "--out", str(tmp_path / "x"),
                              "--format", "redcap"])
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "x" / "redcap_import.csv").read_text().splitlines()
    assert rows[1].startswith("S1,baseline_arm_1,")
    res = runner.invoke(app, ["export", "--db", sqlite_url, "--out", str(tmp_path / "y"),
                              "--format", "xml"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["export", "--db", "nonsense", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2


def test_baseline_covariates_are_validated_and_stored(tmp_path, sqlite_url):
    """age, sex, BMI and DXA T-scores: range-checked with row-level errors, stored when valid."""
    path = tmp_path / "cov.csv"
    path.write_text("study_id,timepoint,age_years,sex,bmi_kg_m2,tscore_lumbar,tscore_hip\n"
                    "S1,baseline,67,F,24.5,-1.9,-2.6\n"
                    "S2,baseline,130,x,5,-9,7\n")
    with pytest.raises(ClinicalImportError) as info:
        parse_clinical_csv(path)
    assert set(info.value.errors) == {
        "row 3: age_years = 130 is out of range 0 to 120", "row 3: sex = x is not female or male",
        "row 3: bmi_kg_m2 = 5 is out of range 10 to 80", "row 3: tscore_lumbar = -9 is out of range -8 to 6",
        "row 3: tscore_hip = 7 is out of range -8 to 6"}
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    engine = db.open_db(sqlite_url)
    import_clinical(engine, path)
    with Session(engine) as session:
        (visit,) = db.query_clinical(session)
    engine.dispose()
    assert (visit["age_years"], visit["sex"], visit["bmi_kg_m2"], visit["tscore_lumbar"], visit["tscore_hip"]) == (
        67.0, "female", 24.5, -1.9, -2.6)
