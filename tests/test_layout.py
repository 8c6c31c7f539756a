"""The package's layout stays walkable: scripts/layout_report.py finds nothing to flag."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("layout_report", ROOT / "scripts" / "layout_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_report_flags_nothing(capsys):
    """No function over 80 lines, one home per contract column, no import cycle, no stage importing store."""
    assert _report().main(["--root", str(ROOT)]) == 0, capsys.readouterr().out


def test_layout_report_finds_what_it_looks_for(tmp_path):
    """On a small tree with a long function, a column spelled twice and a cycle, each is found."""
    import ast
    import textwrap

    report = _report()
    long_fn = "def f():\n" + "    x = 1\n" * 90
    assert report.function_lengths(ast.parse(long_fn))[0][2] == 91
    tables = {"screws.csv": ("series_uid", "halo_max_mm", "loosened")}
    row_dict = ast.parse(textwrap.dedent('row = {"halo_max_mm": 1.0, "loosened": True}'))
    assert report.spelled_columns(row_dict, tables) == {"halo_max_mm", "loosened"}
    lone_key = ast.parse('images = {"loosened": b""}')
    assert report.spelled_columns(lone_key, tables) == set()
    assert report.cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
