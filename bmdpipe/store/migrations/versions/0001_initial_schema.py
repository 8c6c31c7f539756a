"""Initial schema: runs, studies, series, calibrations, measurements, ROI edits, clinical visits.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21 23:23:41.039024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_runs()
    _create_studies()
    _create_clinical_visits()
    _create_series()
    _create_calibrations()
    _create_roi_edits()
    _create_screw_measurements()
    _create_vertebra_measurements()


def _create_runs() -> None:
    """The runs of the pipeline: settings, version, time."""
    op.create_table('runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('started', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('settings_digest', sa.String(length=64), nullable=True),
    sa.Column('command', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )


def _create_studies() -> None:
    """The trial participants, known by pseudonym only."""
    op.create_table('studies',
    sa.Column('study_id', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('study_id', name=op.f('pk_studies'))
    )


def _create_clinical_visits() -> None:
    """The clinical data of each study per timepoint, indexed by study."""
    op.create_table('clinical_visits',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('study_id', sa.String(length=64), nullable=False),
    sa.Column('timepoint', sa.String(length=32), nullable=False),
    sa.Column('arm', sa.String(length=64), nullable=True),
    sa.Column('cement', sa.Boolean(), nullable=True),
    sa.Column('cage_type', sa.String(length=64), nullable=True),
    sa.Column('odi_1', sa.SmallInteger(), nullable=True),
    sa.Column('odi_2', sa.SmallInteger(), nullable=True),
    sa.Column('odi_3', sa.SmallInteger(), nullable=True),
    sa.Column('odi_4', sa.SmallInteger(), nullable=True),
    sa.Column('odi_5', sa.SmallInteger(), nullable=True),
    sa.Column('odi_6', sa.SmallInteger(), nullable=True),
    sa.Column('odi_7', sa.SmallInteger(), nullable=True),
    sa.Column('odi_8', sa.SmallInteger(), nullable=True),
    sa.Column('odi_9', sa.SmallInteger(), nullable=True),
    sa.Column('odi_10', sa.SmallInteger(), nullable=True),
    sa.Column('odi_index', sa.Double(), nullable=True),
    sa.Column('vas_back', sa.Double(), nullable=True),
    sa.Column('vas_leg', sa.Double(), nullable=True),
    sa.Column('fusion_grade', sa.SmallInteger(), nullable=True),
    sa.Column('loosening_reader', sa.Boolean(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('imported', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.study_id'], name=op.f('fk_clinical_visits_study_id_studies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clinical_visits')),
    sa.UniqueConstraint('study_id', 'timepoint', name=op.f('uq_clinical_visits_study_id_timepoint'))
    )
    with op.batch_alter_table('clinical_visits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clinical_visits_study_id'), ['study_id'], unique=False)


def _create_series() -> None:
    """The CT series found in the inputs with their outcome and digests, indexed by run and study."""
    op.create_table('series',
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('study_id', sa.String(length=64), nullable=True),
    sa.Column('timepoint', sa.String(length=32), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('n_files', sa.Integer(), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('stage', sa.String(length=32), nullable=True),
    sa.Column('input_digest', sa.String(length=64), nullable=True),
    sa.Column('settings_digest', sa.String(length=64), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.CheckConstraint("status IN ('processed', 'skipped', 'failed')", name=op.f('ck_series_status')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_series_run_id_runs')),
    sa.ForeignKeyConstraint(['study_id'], ['studies.study_id'], name=op.f('fk_series_study_id_studies')),
    sa.PrimaryKeyConstraint('series_uid', name=op.f('pk_series'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_id'), ['study_id'], unique=False)


def _create_calibrations() -> None:
    """The HU <-> mg/cm3 calibration of each series."""
    op.create_table('calibrations',
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=True),
    sa.Column('phantom', sa.String(length=128), nullable=True),
    sa.Column('material', sa.String(length=16), nullable=True),
    sa.Column('slope_hu_per_mg_cm3', sa.Double(), nullable=True),
    sa.Column('intercept_hu', sa.Double(), nullable=True),
    sa.Column('r2', sa.Double(), nullable=True),
    sa.Column('n_references', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], name=op.f('fk_calibrations_series_uid_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_uid', name=op.f('pk_calibrations'))
    )


def _create_roi_edits() -> None:
    """The manual ROI edits (who, when, what), indexed by series."""
    op.create_table('roi_edits',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('vertebra', sa.String(length=8), nullable=False),
    sa.Column('region', sa.String(length=4), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('who', sa.String(length=128), nullable=False),
    sa.Column('when', sa.DateTime(timezone=True), nullable=False),
    sa.Column('what', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], name=op.f('fk_roi_edits_series_uid_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roi_edits'))
    )
    with op.batch_alter_table('roi_edits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roi_edits_series_uid'), ['series_uid'], unique=False)


def _create_screw_measurements() -> None:
    """The pedicle screws found in each series, indexed by series."""
    op.create_table('screw_measurements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('vertebra', sa.String(length=8), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('length_mm', sa.Double(), nullable=True),
    sa.Column('diameter_mm', sa.Double(), nullable=True),
    sa.Column('entry_x_mm', sa.Double(), nullable=True),
    sa.Column('entry_y_mm', sa.Double(), nullable=True),
    sa.Column('entry_z_mm', sa.Double(), nullable=True),
    sa.Column('tip_x_mm', sa.Double(), nullable=True),
    sa.Column('tip_y_mm', sa.Double(), nullable=True),
    sa.Column('tip_z_mm', sa.Double(), nullable=True),
    sa.Column('halo_max_mm', sa.Double(), nullable=True),
    sa.Column('halo_mean_mm', sa.Double(), nullable=True),
    sa.Column('halo_circumference_fraction', sa.Double(), nullable=True),
    sa.Column('loosened', sa.Boolean(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], name=op.f('fk_screw_measurements_series_uid_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_screw_measurements')),
    sa.UniqueConstraint('series_uid', 'vertebra', 'side', 'ordinal', name=op.f('uq_screw_measurements_series_uid_vertebra_side_ordinal'))
    )
    with op.batch_alter_table('screw_measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_screw_measurements_series_uid'), ['series_uid'], unique=False)


def _create_vertebra_measurements() -> None:
    """The vertebra x region x side measurements, indexed by series."""
    op.create_table('vertebra_measurements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('vertebra', sa.String(length=8), nullable=False),
    sa.Column('region', sa.String(length=4), nullable=False),
    sa.Column('side', sa.String(length=8), nullable=False),
    sa.Column('vbmd_mg_cm3', sa.Double(), nullable=True),
    sa.Column('material', sa.String(length=16), nullable=True),
    sa.Column('hu_mean', sa.Double(), nullable=True),
    sa.Column('hu_median', sa.Double(), nullable=True),
    sa.Column('hu_sd', sa.Double(), nullable=True),
    sa.Column('n_voxels', sa.Integer(), nullable=True),
    sa.Column('volume_mm3', sa.Double(), nullable=True),
    sa.Column('excluded_fraction', sa.Double(), nullable=True),
    sa.Column('calibration', sa.String(length=16), nullable=True),
    sa.Column('roi_source', sa.String(length=16), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], name=op.f('fk_vertebra_measurements_series_uid_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vertebra_measurements')),
    sa.UniqueConstraint('series_uid', 'vertebra', 'region', 'side', name=op.f('uq_vertebra_measurements_series_uid_vertebra_region_side'))
    )
    with op.batch_alter_table('vertebra_measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vertebra_measurements_series_uid'), ['series_uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vertebra_measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vertebra_measurements_series_uid'))

    op.drop_table('vertebra_measurements')
    with op.batch_alter_table('screw_measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_screw_measurements_series_uid'))

    op.drop_table('screw_measurements')
    with op.batch_alter_table('roi_edits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roi_edits_series_uid'))

    op.drop_table('roi_edits')
    op.drop_table('calibrations')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_id'))
        batch_op.drop_index(batch_op.f('ix_series_run_id'))

    op.drop_table('series')
    with op.batch_alter_table('clinical_visits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clinical_visits_study_id'))

    op.drop_table('clinical_visits')
    op.drop_table('studies')
    op.drop_table('runs')
