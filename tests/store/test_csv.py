"""Contract CSVs: column order, formatting, atomic replacement."""

from pathlib import Path

from bmdpipe.rows import VbmdRow, contract_columns
from bmdpipe.store.csv import read_csv_rows, write_csv

VBMD_COLUMNS = contract_columns(VbmdRow)


def test_contract_columns_first_then_extras(tmp_path):
    row = {c: i for i, c in enumerate(VBMD_COLUMNS)}
    row["extra_col"] = 3.5
    row["loosened"] = True
    p = tmp_path / "vbmd.csv"
    assert write_csv(p, [row], VBMD_COLUMNS) == 1
    header = p.read_text().splitlines()[0].split(",")
    assert tuple(header[: len(VBMD_COLUMNS)]) == VBMD_COLUMNS
    assert header[len(VBMD_COLUMNS):] == ["extra_col", "loosened"]
    back = read_csv_rows(p)[0]
    assert back["extra_col"] == "3.5" and back["loosened"] == "true"


def test_rewrite_leaves_no_temp_files(tmp_path):
    p = tmp_path / "s.csv"
    write_csv(p, [{"a": 1}], ("a",))
    write_csv(p, [{"a": 2}, {"a": None}], ("a",))
    assert [r["a"] for r in read_csv_rows(p)] == ["2", ""]
    assert sorted(x.name for x in Path(tmp_path).iterdir()) == ["s.csv"]


def test_enums_written_as_their_values(tmp_path):
    """str-Enums (Region, Side, Material) appear as 'A', 'left', 'K2HPO4', not 'Region.A'."""
    from bmdpipe.results import Material, Region, Side

    p = tmp_path / "e.csv"
    write_csv(p, [{"region": Region.A, "side": Side.left, "material": Material.K2HPO4}],
              ("region", "side", "material"))
    assert read_csv_rows(p)[0] == {"region": "A", "side": "left", "material": "K2HPO4"}
