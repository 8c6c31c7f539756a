"""Baseline covariates of the clinical visits: age, sex, BMI, DXA T-scores (for the trial statistics).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_COLUMNS = (
    ('age_years', sa.Double()),
    ('sex', sa.String(length=16)),
    ('bmi_kg_m2', sa.Double()),
    ('tscore_lumbar', sa.Double()),
    ('tscore_hip', sa.Double()),
)


def upgrade() -> None:
    with op.batch_alter_table('clinical_visits', schema=None) as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clinical_visits', schema=None) as batch_op:
        for name, _ in reversed(_COLUMNS):
            batch_op.drop_column(name)
