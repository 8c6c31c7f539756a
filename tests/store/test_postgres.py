"""The same database code on a real PostgreSQL server (started by the test setup)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bmdpipe.store import db
from bmdpipe.store.export import export_csvs, export_redcap

pytestmark = pytest.mark.slow


def _fill(engine, make_result):
    with Session(engine) as s:
        run_id = db.start_run(s, settings={"a": 1}, command="test")
        db.save_series_result(s, make_result("2.1", "S0001", "baseline"), run_id, input_digest="i")
        db.save_series_result(s, make_result("2.2", "S0001", "month_12", scale=0.5), run_id)
        db.save_series_result(s, make_result("2.3", "S0002", "baseline", status="failed"), run_id)
        db.save_series_result(s, make_result("2.1", "S0001", "baseline", scale=1.5), run_id,
                              input_digest="i2")  # replaced
        db.finish_run(s, run_id)
        return db.query_contract_rows(s)


def test_postgres_rows_equal_sqlite(pg_url, sqlite_url, make_result, tmp_path):
    """Stored and queried rows, and the exported files, are identical on PostgreSQL and SQLite."""
    pg = db.open_db(pg_url)
    lite = db.open_db(sqlite_url)
    assert pg.dialect.name == "postgresql"
    try:
        rows_pg = _fill(pg, make_result)
        rows_lite = _fill(lite, make_result)
        assert rows_pg == rows_lite
        assert len(rows_pg["vbmd.csv"]) == 20 and rows_pg["vbmd.csv"][0]["vbmd_mg_cm3"] == 150.0
        export_csvs(pg, tmp_path / "pg")
        export_csvs(lite, tmp_path / "lite")
        export_redcap(pg, tmp_path / "pg")
        export_redcap(lite, tmp_path / "lite")
        for name in ("series.csv", "calibration.csv", "vbmd.csv", "screws.csv", "redcap_import.csv"):
            assert (tmp_path / "pg" / name).read_bytes() == (tmp_path / "lite" / name).read_bytes()
        with pg.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == "0003"
    finally:
        pg.dispose()
        lite.dispose()


def test_postgres_unique_and_rollback(pg_url, make_result):
    """PostgreSQL enforces the uniqueness rule and a failed series save is rolled back."""
    from dataclasses import replace

    from bmdpipe.errors import StoreError

    engine = db.open_db(pg_url)
    try:
        good = make_result("3.1")
        with Session(engine) as s:
            db.save_series_result(s, good, None)
            bad = replace(good, screw_rows=good.screw_rows[:1] * 2, vbmd_rows=good.vbmd_rows * 2)
            with pytest.raises(StoreError):
                db.save_series_result(s, bad, None)
            assert db.query_vbmd(s) == [r.as_dict() for r in good.vbmd_rows]
            assert db.query_screws(s) == [r.as_dict() for r in good.screw_rows]
    finally:
        engine.dispose()
