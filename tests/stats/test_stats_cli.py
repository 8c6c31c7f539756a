"""``bmdpipe stats``: the commands through Typer's CliRunner, on real CSV files and databases."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bmdpipe.cli import app
from bmdpipe.stats.cohort import synthetic_cohort
from bmdpipe.stats.roc import roc_analysis

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "cohort.csv"
    patients = synthetic_cohort(seed=7).patients
    patients.to_csv(path, index=False)
    return path, patients


def test_roc_json_png_and_compare(cohort_csv, tmp_path):
    """roc writes the JSON keys of the contract with the library's values, a PNG, and the DeLong comparison."""
    path, patients = cohort_csv
    out, png = tmp_path / "roc.json", tmp_path / "roc.png"
    res = runner.invoke(app, ["stats", "roc", "--data", str(path), "--predictor", "vbmd_c", "--outcome", "loosened",
                              "--direction", "lower", "--json", str(out), "--png", str(png)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert list(got) == ["auc", "auc_ci_low", "auc_ci_high", "cutoff", "sensitivity", "specificity", "direction",
                         "n_positive", "n_negative"]
    want = roc_analysis(patients.loosened, patients.vbmd_c, direction="lower")
    assert got["auc"] == pytest.approx(want.auc, abs=1e-12) and got["direction"] == "lower"
    assert (got["n_positive"], got["n_negative"]) == (63, 123)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["stats", "roc", "--data", str(path), "--predictor", "vbmd_c", "--outcome", "loosened",
                              "--compare", "vbmd_a", "--json", str(out)])
    assert res.exit_code == 0 and "DeLong test vbmd_c vs vbmd_a" in res.output
    assert json.loads(out.read_text())["compare"]["predictor"] == "vbmd_a"


@pytest.mark.parametrize("args, message", [
    (["--predictor", "vbmd_x", "--outcome", "loosened"], ("has no column 'vbmd_x'",)),
    (["--predictor", "cage_type", "--outcome", "loosened"], ("column 'cage_type': '", "' (row 2) is not a number")),
    (["--predictor", "vbmd_c", "--outcome", "vbmd_a"], ("column 'vbmd_a'", "is not a binary outcome")),
])
def test_roc_bad_columns_are_named(cohort_csv, args, message):
    """A missing, non-numeric or non-binary column: exit 2, the file and the column named."""
    path, _ = cohort_csv
    res = runner.invoke(app, ["stats", "roc", "--data", str(path), *args])
    assert res.exit_code == 2
    assert all(part in res.output for part in message) and str(path) in res.output


def test_roc_single_class_and_source_choice(cohort_csv, tmp_path):
    """One outcome class: exit 2 saying so; --data and --db together or neither: exit 2."""
    path, patients = cohort_csv
    one = tmp_path / "one.csv"
    patients[patients.loosened].to_csv(one, index=False)
    res = runner.invoke(app, ["stats", "roc", "--data", str(one), "--predictor", "vbmd_c", "--outcome", "loosened"])
    assert res.exit_code == 2 and "one outcome class" in res.output
    res = runner.invoke(app, ["stats", "roc", "--predictor", "vbmd_c", "--outcome", "loosened"])
    assert res.exit_code == 2 and "exactly one of --data" in res.output


def test_logistic_and_compare(cohort_csv, tmp_path):
    """logistic prints univariate and multivariable ORs (CSV too); compare prints the Table 1 rows."""
    path, _ = cohort_csv
    csv = tmp_path / "or.csv"
    res = runner.invoke(app, ["stats", "logistic", "--data", str(path), "--outcome", "loosened", "--predictor",
                              "vbmd_c", "--predictor", "cement", "--csv", str(csv)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(csv)
    assert table.model.tolist() == ["univariate", "univariate", "multivariable", "multivariable"]
    assert (table.OR[table.predictor == "vbmd_c"] < 1).all()
    res = runner.invoke(app, ["stats", "compare", "--data", str(path), "--group", "loosened", "--variable", "vbmd_c",
                              "--variable", "cage_type"])
    assert res.exit_code == 0, res.output
    assert "t-test" in res.output or "Mann-Whitney" in res.output
    assert "chi-square" in res.output


def test_icc_command(tmp_path):
    """icc on a long table with a reviewer column: the ICCs, and a JSON file."""
    rng = np.random.default_rng(0)
    truth = rng.normal(120, 30, 30)
    rows = [{"study_id": f"S{i}", "region": "C", "reviewer": r, "vbmd_mg_cm3": truth[i] + rng.normal(0, 5)}
            for i in range(30) for r in ("anna", "ben", "cleo")]
    path = tmp_path / "reads.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "icc.json"
    res = runner.invoke(app, ["stats", "icc", "--data", str(path), "--value", "vbmd_mg_cm3", "--target", "study_id",
                              "--target", "region", "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["n_readers"] == 3 and got["n_targets"] == 30 and 0.9 < got["single"] < got["average"] < 1


def test_report_and_roc_from_the_database(cohort_db, tmp_path):
    """report writes the HTML from the database; roc --db reads the patient table."""
    url, cohort = cohort_db
    out = tmp_path / "r" / "report.html"
    res = runner.invoke(app, ["stats", "report", "--db", url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "5 figures" in res.output and out.read_text().startswith("<!DOCTYPE html>")
    res = runner.invoke(app, ["stats", "roc", "--db", url, "--predictor", "vbmd_c", "--outcome", "loosened"])
    want = roc_analysis(cohort.patients.loosened, cohort.patients.vbmd_c)
    assert res.exit_code == 0 and f"AUC {want.auc:.3f}" in res.output


def test_roc_one_case_of_a_class(cohort_csv, tmp_path):
    """A single loosened patient: exit 2, DeLong needs two of each class."""
    path, patients = cohort_csv
    few = tmp_path / "few.csv"
    pd.concat([patients[patients.loosened].head(1), patients[~patients.loosened]]).to_csv(few, index=False)
    res = runner.invoke(app, ["stats", "roc", "--data", str(few), "--predictor", "vbmd_c", "--outcome", "loosened"])
    assert res.exit_code == 2 and "at least 2 positive" in res.output and "'loosened'" in res.output
