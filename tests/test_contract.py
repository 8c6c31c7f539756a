"""The output contract: the row types' columns are the contract's, in its order.

The columns are written out here once more, as the contract fixes them, and checked against
``docs/output-contract.md`` and against the row types every writer takes its columns from
(``tests/test_cli.py`` checks the files a real run writes).
"""

from pathlib import Path

import pytest

from bmdpipe.rows import ROW_TYPES, CalibrationRow, ScrewRow, SeriesRow, VbmdRow, columns, contract_columns
from bmdpipe.store.csv import CONTRACT_COLUMNS

CONTRACT = {
    "series.csv": ("series_uid", "path", "n_files", "modality", "description", "status", "reason"),
    "calibration.csv": ("study_id", "timepoint", "series_uid", "method", "phantom", "material",
                        "slope_hu_per_mg_cm3", "intercept_hu", "r2", "n_references"),
    "vbmd.csv": ("study_id", "timepoint", "series_uid", "vertebra", "region", "side", "vbmd_mg_cm3",
                 "material", "hu_mean", "hu_median", "hu_sd", "n_voxels", "volume_mm3",
                 "excluded_fraction", "calibration", "roi_source"),
    "screws.csv": ("study_id", "timepoint", "series_uid", "vertebra", "side", "length_mm", "diameter_mm",
                   "entry_x_mm", "entry_y_mm", "entry_z_mm", "tip_x_mm", "tip_y_mm", "tip_z_mm",
                   "halo_max_mm", "halo_mean_mm", "halo_circumference_fraction", "loosened"),
}
DOC = Path(__file__).resolve().parents[1] / "docs" / "output-contract.md"


def _doc_tables() -> dict[str, tuple[str, ...]]:
    out = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith(".csv`"):
            out[cells[0].strip("`")] = tuple(c.strip() for c in cells[2].split("`")[1].split(","))
    return out


def test_the_documented_contract_is_the_one_written_here():
    assert _doc_tables() == CONTRACT


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_row_types_lead_with_the_contract_columns(name):
    """Each table's row type has the contract's columns first, in order; added ones follow."""
    row_type = ROW_TYPES[name]
    assert contract_columns(row_type) == CONTRACT[name]
    assert columns(row_type)[: len(CONTRACT[name])] == CONTRACT[name]
    assert CONTRACT_COLUMNS[name] == CONTRACT[name]


def test_rows_round_trip_through_a_mapping():
    """A row read back from a mapping of its columns (a database row) is the same row."""
    row = ScrewRow(study_id="S1", timepoint="baseline", series_uid="1.2", vertebra="L4", side="left",
                   length_mm=45.0, diameter_mm=6.5, entry_x_mm=1.0, entry_y_mm=2.0, entry_z_mm=3.0,
                   tip_x_mm=4.0, tip_y_mm=5.0, tip_z_mm=6.0, halo_max_mm=None, halo_mean_mm=None,
                   halo_circumference_fraction=None, loosened=None)
    assert ScrewRow.from_mapping({**row.as_dict(), "not_a_column": 1}) == row
    assert {SeriesRow, CalibrationRow, VbmdRow, ScrewRow} == set(ROW_TYPES.values())
