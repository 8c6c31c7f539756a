"""Manifest CSV: validation with file/line in messages, longest-prefix matching."""

import pytest

from bmdpipe.errors import ConfigError
from bmdpipe.manifest import match_row, parse_levels, read_manifest


def test_read_and_match(tmp_path):
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    m = tmp_path / "manifest.csv"
    m.write_text("path,study_id,timepoint,phantom,labels,levels\n"
                 "a,P01,baseline,mindways-model3-ct,,L3,L4,L5\n".replace("L3,L4,L5", '"L3,L4,L5"')
                 + "a/x,P02,month_12,,,\n"
                 + "b,P03,month_3,none,,\n")
    rows = read_manifest(m)
    assert [r.study_id for r in rows] == ["P01", "P02", "P03"]
    assert rows[0].levels == ("L3", "L4", "L5")
    assert match_row(rows, tmp_path / "a" / "x" / "s1").study_id == "P02"  # longest prefix
    assert match_row(rows, tmp_path / "a" / "y").study_id == "P01"
    assert match_row(rows, tmp_path / "c") is None


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("study_id\nP1\n", "needs a 'path' column"),
        ("path,patient\nx,1\n", "unknown column(s) patient"),
        ("path,levels\nx,L9\n", "line 2"),
        ("path\nx\nx\n", "lines 2 and 3"),
    ],
)
def test_bad_manifest_messages(tmp_path, text, fragment):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_manifest(m)
    assert fragment in str(info.value)


def test_parse_levels():
    assert parse_levels("l4, L5") == ("L4", "L5")
    assert parse_levels("") == ()
    with pytest.raises(ConfigError, match="X3"):
        parse_levels("L4,X3")


def test_input_paths_add_manifest_rows_outside_the_inputs(tmp_path):
    """A manifest row inside an INPUT folder is searched once (through the folder); one outside it
    is added; a row whose path does not exist is named; nothing at all is an error."""
    from bmdpipe.manifest import ManifestRow, input_paths

    inside, outside = tmp_path / "in" / "s1", tmp_path / "other" / "s2"
    inside.mkdir(parents=True)
    outside.mkdir(parents=True)
    rows = [ManifestRow(path=inside.resolve()), ManifestRow(path=outside.resolve())]
    assert input_paths([tmp_path / "in"], rows) == [tmp_path / "in", outside.resolve()]
    assert input_paths([], rows) == [inside.resolve(), outside.resolve()]
    with pytest.raises(ConfigError, match="gone"):
        input_paths([], [ManifestRow(path=(tmp_path / "gone").resolve())])
    with pytest.raises(ConfigError, match="no INPUT"):
        input_paths([], [])
