"""QC figure per screw (unrolled bone around the screw + axial slice), Agg backend."""

from bmdpipe.config import HaloSettings, ScrewSettings
from bmdpipe.report.screw_qc import save_screw_qc
from bmdpipe.results import Screw


def test_qc_png_written(screw_block, tmp_path):
    vol, tr = screw_block(width_mm=1.5, arc=0.6, seed=21)
    s = Screw(entry_lps=tuple(tr["entry"]), tip_lps=tuple(tr["tip"]), length_mm=tr["length_mm"],
              diameter_mm=tr["diameter_mm"], vertebra="L4")
    p = save_screw_qc(vol, s, HaloSettings(), ScrewSettings(thread_depth_mm=0.0), tmp_path / "qc" / "screw.png")
    assert p.exists() and p.stat().st_size > 10_000
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
