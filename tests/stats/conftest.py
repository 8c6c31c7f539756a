"""A synthetic Table-1-shaped cohort written into a real SQLite database once per session."""

import pytest

from bmdpipe.stats.cohort import CohortSpec, synthetic_cohort
from bmdpipe.stats.data import write_cohort
from bmdpipe.store.db import open_db


@pytest.fixture(scope="session")
def cohort_db(tmp_path_factory):
    """(URL, cohort) of a database holding the seed-1 cohort (63 loosened, 123 stable)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cohort') / 'bmdpipe.sqlite'}"
    cohort = synthetic_cohort(seed=1)
    engine = open_db(url)
    write_cohort(engine, cohort)
    engine.dispose()
    return url, cohort


@pytest.fixture
def small_db(tmp_path):
    """(URL, cohort) of a database with three patients: too few for any test."""
    url = f"sqlite:///{tmp_path / 'small.sqlite'}"
    cohort = synthetic_cohort(CohortSpec(n_loose=2, n_stable=1), seed=4)
    engine = open_db(url)
    write_cohort(engine, cohort)
    engine.dispose()
    return url, cohort
