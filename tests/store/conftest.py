"""A throwaway PostgreSQL server on 127.0.0.1 for the store tests.

The server is started with ``initdb`` / ``pg_ctl`` from the PostgreSQL packages
(``/usr/lib/postgresql/*/bin`` on Debian, or on PATH); as root it runs as the
``postgres`` user (PostgreSQL refuses to run as root). Tests that need it are skipped
with a message when the binaries are absent (CI installs them: ``apt-get install -y
postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """Start PostgreSQL on 127.0.0.1:<free port>; yield the admin URL (database ``postgres``)."""
    bindir = _pg_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) absent: apt-get install -y postgresql")
    run_as: dict = {}
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user exists to run the server")
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
    base = Path(tempfile.mkdtemp(prefix="bmdpipe-pg-"))
    data, sock, log = base / "data", base / "sock", base / "server.log"
    sock.mkdir()
    if run_as:
        for p in (base, sock):
            os.chown(p, run_as["user"], run_as["group"])
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "bmdpipe", "--auth=trust",
         "-E", "UTF8", "--no-locale", "--no-sync"],
        check=True, capture_output=True, env=env, cwd=base, **run_as,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {sock} -F -c max_connections=40"
    proc = subprocess.run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
        capture_output=True, text=True, env=env, cwd=base, **run_as,
    )
    if proc.returncode != 0:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {proc.stderr}\n{text}")
    try:
        yield f"postgresql+psycopg://bmdpipe@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, env=env, cwd=base, **run_as,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """URL of a new, empty database on the test server (one per test)."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"


def _result(uid: str, study_id: str = "S0001", timepoint: str = "baseline", *, levels=("L3", "L4"),
            status: str = "processed", screws: bool = True, scale: float = 1.0):
    """A SeriesResult with known rows (values derived from ``scale`` so they can be checked)."""
    from bmdpipe.pipeline import SeriesResult
    from bmdpipe.results import Material, Region, Side
    from bmdpipe.rows import CalibrationRow, ScrewRow, SeriesRow, SeriesStatus, VbmdRow, join_warnings

    def series(status, reason, stage=""):
        return SeriesRow(series_uid=uid, path=f"/data/{uid}", n_files=40, modality="CT", description="abdomen",
                         status=status, reason=reason, stage=stage)

    if status == "failed":
        return SeriesResult(series=series(SeriesStatus.failed, "no phantom rods found", "calibrate"),
                            study_id=study_id, timepoint=timepoint)
    base = dict(study_id=study_id, timepoint=timepoint, series_uid=uid)
    cal = CalibrationRow(**base, method="phantom", phantom="mindways-model3-ct", material=Material.K2HPO4,
                         slope_hu_per_mg_cm3=1.1 * scale, intercept_hu=-3.25, r2=0.9991, n_references=5,
                         warnings="fit ok")
    vbmd = []
    for i, lev in enumerate(levels):
        for region, side in (("A", "center"), ("B", "left"), ("B", "right"), ("C", "left"), ("C", "right")):
            vbmd.append(VbmdRow(**base, vertebra=lev, region=Region(region), side=Side(side),
                                vbmd_mg_cm3=100.0 * scale + 10 * i + (region == "B") * 1.5,
                                material=Material.K2HPO4, hu_mean=120.5 + i, hu_median=119.0,
                                hu_sd=30.25, n_voxels=1000 + i, volume_mm3=812.5,
                                excluded_fraction=0.125, calibration="phantom", roi_source="auto"))
    screw_rows = []
    if screws:
        for lev in levels:
            for side, x in (("left", 20.0), ("right", -20.0)):
                screw_rows.append(ScrewRow(**base, vertebra=lev, side=Side(side), length_mm=45.0,
                                           diameter_mm=6.5, entry_x_mm=x, entry_y_mm=30.0,
                                           entry_z_mm=-100.0, tip_x_mm=x / 4, tip_y_mm=-10.0,
                                           tip_z_mm=-101.0, halo_max_mm=1.25 * scale,
                                           halo_mean_mm=0.5, halo_circumference_fraction=0.625,
                                           loosened=scale > 0.9, augmented=side == "left"))
    warnings = ("slice gap 0.1 mm",)
    return SeriesResult(series=series(SeriesStatus.processed, join_warnings(warnings)), study_id=study_id,
                        timepoint=timepoint, calibration_row=cal, vbmd_rows=tuple(vbmd),
                        screw_rows=tuple(screw_rows), warnings=warnings)


@pytest.fixture
def make_result():
    """Factory ``make_result(uid, study_id, timepoint, levels=..., status=..., scale=...)``."""
    return _result


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'bmdpipe.sqlite'}"
