"""Benchmark of screw detection and halo (loosening) measurement on synthetic post-operative CT.

Prints, over >= 40 synthetic screws with random halo widths (0-3 mm, borderline 0.7 and 1.3 mm
always included), full and partial arcs, sclerotic rims, saturation or extended HU, blooming,
streaks and realistic noise: detection and vertebra/side assignment rate, loosening accuracy,
and the mean absolute error of the maximum halo width (issue 5's done-when figures).

``--suite physics`` forms the images by projection physics instead (bmdpipe.synthetic.ctphysics: a
120 kVp-class spectrum, attenuation tables, Poisson noise, FBP with a standard or sharp kernel), with
0.7 mm pixels, rods on both sides, 5.5-7.5 mm screws, bone 50-180 mg/cm3, a third of the screws without a halo,
and the construct's hardware: cement-augmented screws (a third), breaches, titanium or cobalt-chrome rods,
crosslinks, titanium or PEEK cages; it prints calls, sensitivity, specificity, width and diameter errors by
kernel and by hardware type, and seconds per screw (issue 19).

``--cache-dir DIR`` keeps each simulated case (DIR/<suite>_s<seed>_c<n>.pkl, reused only for the same seed and
spec), so ``--mar none`` and ``--mar nmar`` (metal artefact reduction before the halo, bmdpipe.screws.mar) can be
compared on the same images without simulating them twice.

Run:  .venv/bin/python scripts/bench/halo_accuracy.py [--cases 8] [--seed 100] [--suite physics --workers 2]
      [--cache-dir DIR] [--mar none|nmar]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from bmdpipe.anatomy import vertebrae_from_label_map
from bmdpipe.config import AnatomySettings, HaloSettings, ScrewSettings
from bmdpipe.screws import detect_screws, measure_screws
from bmdpipe.synthetic.case import make_case
from bmdpipe.synthetic.ctphysics import XraySpec
from bmdpipe.synthetic.spec import CaseSpec, ScrewSpec


def case_spec(rng: np.random.Generator, n_case: int, levels=("L3", "L4", "L5")) -> CaseSpec:
    screws = []
    slots = [(lv, sd) for lv in levels for sd in ("left", "right")]
    forced = {0: 0.7, 1: 1.3}  # borderline widths in every case
    for n, (lv, sd) in enumerate(slots):
        w = forced.get(n, float(np.round(rng.uniform(0.0, 3.0), 2)))
        if n >= 2 and rng.uniform() < 0.2:
            w = 0.0
        arc = 1.0 if rng.uniform() < 0.5 else float(np.round(rng.uniform(0.2, 0.95), 2))
        screws.append(ScrewSpec(vertebra=lv, side=sd, halo_width_mm=w, halo_arc_fraction=arc,
                                sclerotic_rim=bool(w > 0 and rng.uniform() < 0.3),
                                diameter_mm=float(rng.choice([5.5, 6.0, 6.5, 7.0]))))
    return CaseSpec(levels=levels, screws=tuple(screws), metal_saturation=bool(n_case % 3 != 2),
                    streaks=True, cancellous_mg_cm3=(80.0, 180.0),
                    orientation=("HFS", "FFS", "HFP", "HFS_zdown")[n_case % 4])


def physics_case_spec(rng: np.random.Generator, n_case: int) -> CaseSpec:
    """A follow-up case formed by projection physics: two adjacent levels, a screw on each side joined
    by rods, kernel standard and sharp in turn, tube and dose drawn from the clinical range. Hardware: a
    third of the screws cement-augmented (mantle 2-5 mm), 15 % of the others breaching the pedicle
    (2-4 mm, medial or lateral), a crosslink in half the cases; titanium and cobalt-chrome rods in turn by
    pairs of cases (so with either kernel), and no cage, titanium or PEEK cages in turn."""
    top = int(rng.integers(0, 2))
    levels = (("L3", "L4"), ("L4", "L5"))[top]
    screws = []
    for lv in levels:
        for sd in ("left", "right"):
            w = 0.0 if rng.uniform() < 1.0 / 3.0 else float(np.round(rng.uniform(0.3, 3.0), 2))
            arc = 1.0 if rng.uniform() < 0.5 else float(np.round(rng.uniform(0.3, 0.95), 2))
            mantle = float(np.round(rng.uniform(2.0, 5.0), 1)) if rng.uniform() < 1.0 / 3.0 else 0.0
            breach = str(rng.choice(["medial", "lateral"])) if mantle == 0 and rng.uniform() < 0.15 else None
            screws.append(ScrewSpec(vertebra=lv, side=sd, halo_width_mm=w, halo_arc_fraction=arc,
                                    sclerotic_rim=bool(w > 0 and rng.uniform() < 0.3),
                                    diameter_mm=float(rng.choice([5.5, 6.0, 6.5, 7.0, 7.5])),
                                    cement_mantle_mm=mantle, breach=breach,
                                    breach_mm=float(np.round(rng.uniform(2.0, 4.0), 1))))
    xray = XraySpec(kvp=float(rng.choice([100.0, 120.0, 140.0])), filtration_mm_al=float(rng.uniform(5.0, 9.0)),
                    incident_photons=float(10 ** rng.uniform(np.log10(5e4), np.log10(4e5))),
                    kernel=("standard", "sharp")[n_case % 2])
    return CaseSpec(levels=levels, screws=tuple(screws), phantom=None, fusion_rods=True, xray=xray,
                    rod_material=("titanium", "cobalt_chrome")[n_case // 2 % 2],
                    crosslink=bool(rng.uniform() < 0.5), cage=(None, "titanium", "peek")[n_case % 3],
                    spacing_mm=(1.0, 0.7, 0.7),
                    cancellous_mg_cm3=(50.0, 180.0), metal_saturation=bool(rng.uniform() < 0.7),
                    orientation=("HFS", "FFS", "HFP", "HFS_zdown")[n_case % 4])


def cached_case(cache_dir: Path | None, suite: str, seed: int, n_case: int, spec: CaseSpec, workers: int):
    """``make_case(seed + n_case, spec)``, read from ``cache_dir/<suite>_s<seed>_c<n_case>.pkl`` when that file
    holds the same spec, else simulated (and written there when ``cache_dir`` is given). A file whose spec
    differs is re-simulated and overwritten, with a message, never reused."""
    if cache_dir is None:
        return make_case(seed + n_case, spec, workers=workers)
    path = Path(cache_dir) / f"{suite}_s{seed}_c{n_case}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            stored = pickle.load(f)
        if stored.get("spec") == spec and stored.get("seed") == seed + n_case:
            return stored["case"]
        print(f"{path}: cached spec differs from this run's; simulating again", file=sys.stderr)
    case = make_case(seed + n_case, spec, workers=workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"seed": seed + n_case, "spec": spec, "case": case}, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return case


def match(found, truth_screws):
    """Pair each true screw with the detected screw whose axis midpoint is nearest (<= 10 mm)."""
    pairs = []
    mids = np.array([0.5 * (np.add(s.entry_lps, s.tip_lps)) for s in found]) if found else np.zeros((0, 3))
    for ts in truth_screws:
        m = 0.5 * (np.add(ts.entry_lps, ts.tip_lps))
        if len(mids) == 0:
            pairs.append((ts, None))
            continue
        d = np.linalg.norm(mids - m, axis=1)
        k = int(np.argmin(d))
        pairs.append((ts, found[k] if d[k] <= 10.0 else None))
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--suite", choices=("painted", "physics"), default="painted")
    ap.add_argument("--workers", type=int, default=1, help="processes for the physics simulator's slices")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="pickle each simulated case as DIR/<suite>_s<seed>_c<n>.pkl and reuse it (same spec only)")
    ap.add_argument("--mar", choices=("none", "nmar"), default=None,
                    help="metal artefact reduction before the halo is measured (default: the setting's)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    ss, hs = ScrewSettings(), HaloSettings()
    if args.mar is not None:
        hs = HaloSettings(metal_artefact_reduction=args.mar)
    rows = []
    n_found_extra = n_other_metal = 0
    t_total = time.time()
    for c in range(args.cases):
        spec = case_spec(rng, c) if args.suite == "painted" else physics_case_spec(rng, c)
        case = cached_case(args.cache_dir, args.suite, args.seed, c, spec, args.workers)
        vol = case.volume
        verts = vertebrae_from_label_map(case.labels, vol, AnatomySettings())  # as the pipeline: with geometry
        t0 = time.time()
        detected = detect_screws(vol, ss, vertebrae=verts)
        found = measure_screws(vol, [s for s in detected if s.vertebra], hs, ss)  # as the pipeline: others are notes
        n_other_metal += len(detected) - len(found)
        dt = time.time() - t0
        n_found_extra += max(0, len(found) - len(case.truth.screws))
        for ts, fs in match(found, case.truth.screws):
            row = dict(case=c, vertebra=ts.vertebra, side=ts.side, width=ts.halo_width_mm, arc=ts.halo_arc_fraction,
                       rim=ts.sclerotic_rim, loosened=ts.loosened, diameter=ts.diameter_mm, found=fs is not None,
                       sat=spec.metal_saturation, orient=spec.orientation, seconds=dt / max(len(case.truth.screws), 1),
                       kernel=spec.xray.kernel if spec.xray else "painted", augmented=ts.augmented,
                       mantle=ts.cement_mantle_mm, breach=ts.breach, cage=spec.cage, crosslink=spec.crosslink,
                       rod=spec.rod_material)
            if fs is not None:
                row.update(f_augmented=getattr(fs, "augmented", None), f_vertebra=fs.vertebra, f_side=fs.side.value, f_diameter=fs.diameter_mm,
                           f_max=fs.halo.widest_arc_mm, f_mean=fs.halo.mean_width_mm,
                           f_frac=fs.halo.circumference_fraction, f_loose=fs.halo.loosened,
                           f_rim=fs.halo.sclerotic_rim,
                           entry_err=float(np.linalg.norm(np.subtract(fs.entry_lps, ts.entry_lps))),
                           tip_err=float(np.linalg.norm(np.subtract(fs.tip_lps, ts.tip_lps))))
            rows.append(row)
            if args.verbose:
                print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()})
        print(f"case {c}: {len(found)} screws found / {len(case.truth.screws)} true, "
              f"sat={spec.metal_saturation} {spec.orientation}, cage={spec.cage} crosslink={spec.crosslink} "
              f"rods={spec.rod_material}, {dt:.1f} s", file=sys.stderr)
    n = len(rows)
    found = [r for r in rows if r["found"]]
    assigned = [r for r in found if r["f_vertebra"] == r["vertebra"] and r["f_side"] == r["side"]]
    correct = [r for r in found if r["f_loose"] == r["loosened"]]
    err = np.array([abs(r["f_max"] - r["width"]) for r in found])
    border = [r for r in found if r["width"] in (0.7, 1.3)]
    berr = np.array([abs(r["f_max"] - r["width"]) for r in border] or [np.nan])
    rim_ok = [r for r in found if r["f_rim"] == r["rim"]]
    derr = np.array([abs(r["f_diameter"] - r["diameter"]) for r in found])
    print(f"screws: {n} (cases {args.cases}, seed {args.seed}); extra detections: {n_found_extra}; "
          f"other metal left out (crosslinks, cages, not in a vertebra): {n_other_metal}")
    print(f"found: {len(found)}/{n}; right vertebra and side: {len(assigned)}/{n}")
    print(f"loosening called correctly: {len(correct)}/{len(found)} = {100.0 * len(correct) / max(len(found), 1):.1f} %"
          f" (truth loosened: {sum(r['loosened'] for r in found)})")
    print(f"max halo width MAE: {err.mean():.3f} mm (median {np.median(err):.3f}, max {err.max():.2f}); "
          f"borderline 0.7/1.3 mm: n={len(border)} MAE {berr.mean():.3f} mm")
    print(f"sclerotic rim correct: {len(rim_ok)}/{len(found)}; diameter MAE {derr.mean():.3f} mm; "
          f"entry err median {np.median([r['entry_err'] for r in found]):.2f} mm, "
          f"tip err median {np.median([r['tip_err'] for r in found]):.2f} mm")
    for kernel in sorted({r["kernel"] for r in rows}):
        print(_call_summary(kernel, [r for r in rows if r["kernel"] == kernel]))
    if args.suite == "physics":
        for name, has in HARDWARE_TYPES.items():
            some = [r for r in rows if has(r)]
            if some:
                print(_call_summary(name, some))
    print(_call_summary("all", rows))
    for r in found:
        if r["f_loose"] != r["loosened"] or abs(r["f_max"] - r["width"]) > 0.5:
            print("  miss:", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()})
    print(f"total {time.time() - t_total:.0f} s")
    return 0


#: Hardware types the physics suite's calls are summarised by: name -> does a row's screw or case have it.
HARDWARE_TYPES = {
    "cemented": lambda r: r["augmented"], "uncemented": lambda r: not r["augmented"],
    "breach": lambda r: r["breach"] is not None, "cage-ti": lambda r: r["cage"] == "titanium",
    "cage-peek": lambda r: r["cage"] == "peek", "crosslink": lambda r: r["crosslink"],
    "rod-ti": lambda r: r["rod"] == "titanium", "rod-cocr": lambda r: r["rod"] == "cobalt_chrome",
}


def _call_summary(name: str, rows: list[dict]) -> str:
    """Calls (a screw not found counts as a wrong call), sensitivity, specificity, width and diameter MAE and
    seconds per screw of some rows."""
    pos = [r for r in rows if r["loosened"]]
    neg = [r for r in rows if not r["loosened"]]
    right = lambda r: r["found"] and r["f_loose"] == r["loosened"]  # noqa: E731
    found = [r for r in rows if r["found"]]
    w = np.array([abs(r["f_max"] - r["width"]) for r in found]) if found else np.array([np.nan])
    d = np.array([abs(r["f_diameter"] - r["diameter"]) for r in found]) if found else np.array([np.nan])
    n_right = sum(map(right, rows))
    return (f"{name:10s} screws {len(rows):3d}  calls right {n_right}/{len(rows)} "
            f"({100.0 * n_right / max(len(rows), 1):.1f} %)  sensitivity {sum(map(right, pos))}/{len(pos)}"
            f"  specificity {sum(map(right, neg))}/{len(neg)}  width MAE {w.mean():.2f} mm  diameter MAE "
            f"{d.mean():.2f} mm  {np.mean([r['seconds'] for r in rows]):.1f} s/screw (detect + measure)")


if __name__ == "__main__":
    raise SystemExit(main())
