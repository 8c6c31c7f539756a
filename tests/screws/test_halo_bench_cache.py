"""The halo benchmark's case cache (scripts/bench/halo_accuracy.py --cache-dir): reused only for the same spec."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np

from bmdpipe.synthetic.spec import CaseSpec

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "halo_accuracy.py"


def _bench():
    spec = importlib.util.spec_from_file_location("halo_accuracy_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cached_case_is_reused_for_its_spec_and_simulated_again_for_another(tmp_path):
    bench = _bench()
    spec = CaseSpec(levels=("L4",), screws=())
    first = bench.cached_case(tmp_path, "painted", 7, 0, spec, 1)
    path = tmp_path / "painted_s7_c0.pkl"
    assert path.exists()
    # what is read back is what was stored: mark the stored image and see the mark come back
    with open(path, "rb") as f:
        stored = pickle.load(f)
    stored["case"].volume.array[0, 0, 0] = 12345.0
    with open(path, "wb") as f:
        pickle.dump(stored, f)
    again = bench.cached_case(tmp_path, "painted", 7, 0, spec, 1)
    assert again.volume.array[0, 0, 0] == 12345.0
    np.testing.assert_array_equal(again.volume.array[1:], first.volume.array[1:])
    # another spec under the same name is not reused: simulated afresh and stored in its place
    other = CaseSpec(levels=("L3",), screws=())
    fresh = bench.cached_case(tmp_path, "painted", 7, 0, other, 1)
    assert fresh.volume.array[0, 0, 0] != 12345.0
    with open(path, "rb") as f:
        assert pickle.load(f)["spec"] == other
