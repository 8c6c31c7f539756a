"""Reviewed measurements: each reader's reading of a series' ROIs, side by side (review step).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """One row per series x reviewer x vertebra x region x side, with the vbmd.csv contract columns."""
    op.create_table('reviewed_measurements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('reviewer', sa.String(length=128), nullable=False),
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
    sa.Column('saved', sa.DateTime(timezone=True), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], name=op.f('fk_reviewed_measurements_series_uid_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviewed_measurements')),
    sa.UniqueConstraint('series_uid', 'reviewer', 'vertebra', 'region', 'side', name=op.f('uq_reviewed_measurements_series_uid_reviewer_vertebra_region_side'))
    )
    with op.batch_alter_table('reviewed_measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviewed_measurements_series_uid'), ['series_uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reviewed_measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviewed_measurements_series_uid'))

    op.drop_table('reviewed_measurements')
