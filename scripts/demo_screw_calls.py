"""Print each screw's loosening call in a demo run next to the truth of the synthetic case.

Run:  .venv/bin/python scripts/demo_screw_calls.py demo_out sample_data/postop_screws/truth.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the run's output folder (holds screws.csv)")
    ap.add_argument("truth", type=Path, help="truth.json of the post-operative case")
    args = ap.parse_args(argv)
    screws = pd.read_csv(args.out / "screws.csv")
    truth = {(s["vertebra"], s["side"]): s for s in json.loads(args.truth.read_text())["screws"]}
    print(f"{'screw':10s} {'measured':>34s}   {'truth':>34s}   call")

    def text(width_mm, fraction, loose, cement) -> str:
        halo = f"{width_mm:.1f} mm over {100 * fraction:.0f} %" if width_mm > 0 else "no halo"
        call = "indeterminate" if loose is None else ("loose" if loose else "intact")
        return f"{'cemented, ' if cement else ''}{halo} {call}"

    n_right = 0
    for (vertebra, side), t in sorted(truth.items()):
        row = screws[(screws["vertebra"] == vertebra) & (screws["side"] == side)]
        want = text(t["halo_width_mm"], t["halo_arc_fraction"], t["loosened"], t.get("augmented", False))
        if row.empty:
            print(f"{vertebra + ' ' + side:10s} {'not found':>34s}   {want:>34s}   wrong")
            continue
        r = row.iloc[0]
        loose = None if pd.isna(r["loosened"]) else str(r["loosened"]).lower() == "true"
        cement = "augmented" in r and str(r["augmented"]).lower() == "true"
        got = text(r["halo_max_mm"], r["halo_circumference_fraction"], loose, cement)
        right = loose == bool(t["loosened"])
        n_right += right
        print(f"{vertebra + ' ' + side:10s} {got:>34s}   {want:>34s}   {'right' if right else 'WRONG'}")
    print(f"{n_right} of {len(truth)} screws called right")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
