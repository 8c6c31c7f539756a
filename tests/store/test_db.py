"""The trial database on SQLite: schema by migration, one transaction per series, queries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bmdpipe.errors import StoreError
from bmdpipe.store import db
from bmdpipe.rows import CalibrationRow, ScrewRow, SeriesRow, VbmdRow, columns, contract_columns

SERIES_COLUMNS, CALIBRATION_COLUMNS = contract_columns(SeriesRow), contract_columns(CalibrationRow)


@pytest.fixture
def engine(sqlite_url):
    eng = db.open_db(sqlite_url)
    yield eng
    eng.dispose()


def test_open_db_migrates_to_head_and_is_idempotent(sqlite_url):
    """open_db creates every table through Alembic and a second open changes nothing."""
    eng = db.open_db(sqlite_url)
    eng.dispose()
    eng = db.open_db(sqlite_url)
    with eng.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        tables = set(sa.inspect(conn).get_table_names())
    eng.dispose()
    assert version == "0003"
    assert {t.name for t in db.Base.metadata.sorted_tables} <= tables


def test_migration_matches_models(sqlite_url):
    """The migrated schema is the models' schema: same columns, types, nullability, indexes,
    unique and foreign keys (Alembic's autogenerate comparison finds nothing to change), while the
    measurement tables' columns are generated from the row types."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    eng = db.open_db(sqlite_url)
    with eng.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, db.Base.metadata)
    eng.dispose()
    assert diff == []
    for model, row_type in ((db.VertebraMeasurement, VbmdRow), (db.ScrewMeasurement, ScrewRow)):
        assert set(contract_columns(row_type)) - {"study_id", "timepoint", "series_uid"} < set(model.__table__.c.keys())


def test_downgrade_and_upgrade_again(sqlite_url):
    """The initial migration can be rolled back to an empty database and applied again."""
    from alembic import command

    eng = db.open_db(sqlite_url)
    cfg = db._alembic_config(eng)
    command.downgrade(cfg, "base")
    assert set(sa.inspect(eng).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    assert "vertebra_measurements" in sa.inspect(eng).get_table_names()
    eng.dispose()


def test_no_phi_columns():
    """No table has a column for a patient's name, ID or birth date."""
    for table in db.Base.metadata.sorted_tables:
        for col in table.columns:
            assert "patient" not in col.name and "birth" not in col.name, (table.name, col.name)


def test_save_and_query_round_trip(engine, make_result):
    """Stored rows come back with the same values, in contract column order, extras after."""
    res = make_result("1.2.3.1", "S0001", "baseline")
    with Session(engine) as s:
        run_id = db.start_run(s, settings={"x": 1}, command="bmdpipe run", settings_digest="d" * 64)
        db.save_series_result(s, res, run_id, settings_digest="d" * 64)
        rows = db.query_contract_rows(s)
    assert [r["series_uid"] for r in rows["series.csv"]] == ["1.2.3.1"]
    srow = rows["series.csv"][0]
    assert tuple(srow)[: len(SERIES_COLUMNS)] == SERIES_COLUMNS
    assert srow["status"] == "processed" and srow["n_files"] == 40
    assert srow["reason"] == "slice gap 0.1 mm"  # warnings of a processed series
    cal = rows["calibration.csv"][0]
    assert tuple(cal)[: len(CALIBRATION_COLUMNS)] == CALIBRATION_COLUMNS
    assert cal == res.calibration_row.as_dict()  # every value and the added columns come back
    assert tuple(cal) == columns(CalibrationRow)
    assert rows["vbmd.csv"] == [r.as_dict() for r in res.vbmd_rows]
    assert tuple(rows["vbmd.csv"][0]) == columns(VbmdRow)
    assert rows["screws.csv"] == [r.as_dict() for r in res.screw_rows]
    assert tuple(rows["screws.csv"][0]) == columns(ScrewRow)
    assert isinstance(rows["screws.csv"][0]["loosened"], bool)
    assert [r["augmented"] for r in rows["screws.csv"]] == [True, False, True, False]  # an added column, in extra


def test_a_mapping_row_keeps_its_own_extra_columns(engine, make_result):
    """A row given as a mapping (not a row type) keeps keys that are no column, after the others."""
    from dataclasses import replace

    res = make_result("1.2.3.2")
    res = replace(res, calibration_row={**res.calibration_row.as_dict(), "calibration_note": "by hand"})
    with Session(engine) as s:
        db.save_series_result(s, res, None)
        cal = db.query_calibration(s)[0]
    assert list(cal)[-1] == "calibration_note" and cal["calibration_note"] == "by hand"
    assert cal == res.calibration_row


def test_save_again_replaces_rows(engine, make_result):
    """Saving a series twice leaves one copy of its rows: the second version."""
    with Session(engine) as s:
        db.save_series_result(s, make_result("u1", levels=("L2", "L3", "L4")), None)
        db.save_series_result(s, make_result("u2", "S0002"), None)
        db.save_series_result(s, make_result("u1", levels=("L4",), scale=2.0), None)
        vbmd = db.query_vbmd(s, series_uids=["u1"])
        n_all = s.scalar(sa.select(sa.func.count()).select_from(db.VertebraMeasurement))
        n_cal = s.scalar(sa.select(sa.func.count()).select_from(db.Calibration))
    assert {r["vertebra"] for r in vbmd} == {"L4"}
    assert len(vbmd) == 5 and vbmd[0]["vbmd_mg_cm3"] == 200.0
    assert n_all == 5 + 10 and n_cal == 2


def test_failed_save_keeps_previous_rows(engine, make_result):
    """A series whose new rows break a uniqueness rule keeps its old rows (rolled back)."""
    from dataclasses import replace

    good = make_result("u1")
    bad = replace(good, vbmd_rows=good.vbmd_rows + (good.vbmd_rows[0],))
    with Session(engine) as s:
        db.save_series_result(s, good, None)
        with pytest.raises(StoreError, match="u1"):
            db.save_series_result(s, bad, None)
        assert db.query_vbmd(s) == [r.as_dict() for r in good.vbmd_rows]


def test_unique_constraint_blocks_duplicate_rows(engine, make_result):
    """The database itself refuses a second row for the same vertebra, region and side."""
    with Session(engine) as s:
        db.save_series_result(s, make_result("u1", levels=("L4",)), None)
        s.add(db.VertebraMeasurement(series_uid="u1", position=99, vertebra="L4", region="A",
                                     side="center", extra={}))
        with pytest.raises(sa.exc.IntegrityError):
            s.commit()


def test_failed_series_and_resume_digests(engine, make_result):
    """Failed series are stored with stage and reason and are not offered for skipping."""
    with Session(engine) as s:
        db.save_series_result(s, make_result("ok"), None, input_digest="i1", settings_digest="s1")
        db.save_series_result(s, make_result("bad", status="failed"), None, input_digest="i2",
                              settings_digest="s1")
        digests = db.processed_digests(s)
        series = {r["series_uid"]: r for r in db.query_series(s)}
        assert db.query_vbmd(s, series_uids=["bad"]) == []
    assert digests == {"ok": ("i1", "s1")}
    assert series["bad"]["status"] == "failed" and series["bad"]["stage"] == "calibrate"
    assert series["bad"]["reason"] == "no phantom rods found"


def test_skipped_item_and_roi_edit(engine):
    """Discovery's skipped items (plain attributes) and ROI edits are stored."""
    from bmdpipe.ingest import skipped_item

    item = skipped_item(series_uid="9.9", path="/x/scout", n_files=2, modality="CT",
                        description="scout", reason="localizer")
    with Session(engine) as s:
        db.save_series_result(s, item, None)
        edit_id = db.add_roi_edit(s, series_uid="9.9", vertebra="L4", region="A", side="center",
                                  who="reader1", what={"voxels_added": 12})
        row = db.query_series(s)[0]
        edit = s.get(db.RoiEdit, edit_id)
        edits = db.query_roi_edits(s, "9.9")
    assert row["status"] == "skipped" and row["reason"] == "localizer"
    assert edit.what == {"voxels_added": 12} and edit.who == "reader1"
    assert [(e["who"], e["region"], e["what"]) for e in edits] == [("reader1", "A", {"voxels_added": 12})]


def test_save_review_keeps_readings_side_by_side(engine, make_result):
    """A review replaces the reviewer's reading and the changed ROIs' current rows in one transaction; the
    automatic reading is kept once; a row naming an ROI the series lacks rolls everything back."""
    import dataclasses

    result = make_result("1.1")
    auto = result.vbmd_rows
    manual = dataclasses.replace(auto[1], vbmd_mg_cm3=77.0, n_voxels=10, roi_source="manual", reviewer="AB")
    with Session(engine) as s:
        db.save_series_result(s, result, None)
        db.save_review(s, "1.1", "AB", (auto[0], manual, *auto[2:]), current=[manual],
                       edits=[{"vertebra": "L3", "region": "B", "side": "left", "what": {"after": 77.0}}])
        db.save_review(s, "1.1", "AB", (auto[0], manual, *auto[2:]), current=[manual])  # again: replaced
        current = db.query_vbmd(s)
        readings = db.query_reviewed_vbmd(s)
        edits = db.query_roi_edits(s, "1.1")
        stray = dataclasses.replace(manual, vertebra="L5")
        with pytest.raises(StoreError, match="no ROI L5 B left"):
            db.save_review(s, "1.1", "CD", auto, current=[stray])
        with pytest.raises(StoreError, match="not in the database"):
            db.save_review(s, "9.9", "CD", auto)
        assert db.query_reviewed_vbmd(s) == readings
    assert [(r["roi_source"], r["vbmd_mg_cm3"], r["reviewer"]) for r in current[:2]] == [
        ("auto", 100.0, ""), ("manual", 77.0, "AB")]
    assert current[2:] == db_rows_without(readings, "auto")[2:]
    assert [r["reviewer"] for r in readings] == ["AB"] * len(auto) + ["auto"] * len(auto)
    assert [r["vbmd_mg_cm3"] for r in readings if r["reviewer"] == "auto"][1] == auto[1].vbmd_mg_cm3
    assert [(e["who"], e["vertebra"], e["what"]) for e in edits] == [("AB", "L3", {"after": 77.0})]


def db_rows_without(readings, reviewer):
    """The vbmd rows of one reading without its reviewer column (as vbmd.csv rows)."""
    return [{k: v for k, v in r.items() if k != "reviewer"} | {"reviewer": ""} for r in readings
            if r["reviewer"] == reviewer]


def test_bad_url_is_a_store_error(tmp_path):
    """A malformed URL or an unreachable server gives a StoreError naming what to check."""
    with pytest.raises(StoreError, match="not valid"):
        db.open_db("not a url")
    with pytest.raises(StoreError, match="cannot connect"):
        db.open_db("postgresql+psycopg://nobody@127.0.0.1:1/none")
