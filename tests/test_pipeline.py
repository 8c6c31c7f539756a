"""Warnings joined into one CSV cell (bmdpipe.rows.join_warnings)."""

from bmdpipe.rows import join_warnings


def test_joined_warnings_split_back_into_the_warnings():
    warnings = ["rod A shaded; check the QC plot", "no --phantom given", "L5 B right empty"]
    cell = join_warnings(warnings)
    assert cell.split("; ") == ["rod A shaded, check the QC plot", "no --phantom given", "L5 B right empty"]
    assert join_warnings([]) == ""
