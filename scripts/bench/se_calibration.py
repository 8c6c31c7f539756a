#!/usr/bin/env python
"""Does vbmd_se_mg_cm3 hold? RMS of (ROI error / reported SE) on cases with correlated noise (issue 20).

Each case is made twice from one seed: with noise, and as its noise-free twin (``CaseSpec(noise=False)``:
the same anatomy, scanner, blur and artefacts). The pipeline places the ROIs on the noisy case (labels from
the generator, or ``--localize``), estimates the noise's autocovariance from the noisy image
(:func:`bmdpipe.noise.estimate_noise`, which never sees the generator's parameters) and measures each ROI
(:func:`bmdpipe.measure.measure_roi`, the calibration the generator used). The error of an ROI is its mean
on the noisy case minus the twin's mean over the same voxels: the image noise alone. If the reported SE is
honest, error / SE has an RMS of 1 (the done-when asks 0.8-1.25 over the A, B and C ROIs). ``old`` is the
same RMS for the former SE, the voxels' SD / sqrt(n).

Suites:
  painted  the image-domain generator; noise correlation length (sigma of its kernel) drawn 0.5-1.2 mm
           per case, noise 10-25 HU, PSF 0.9-1.3 mm; texture ``gaussian`` (low-passed white noise) and
           ``kernel`` (filtered back-projection's ramp-shaped noise power) in turn (--textures).
  physics  projection physics (bmdpipe.synthetic.ctphysics: spectrum, Poisson noise, FBP with the
           standard or sharp kernel in turn; slices reconstructed independently), two levels, 0.7 mm
           pixels; slow (a case and its twin: 5-10 min with --workers 2 on a busy 2-core machine).

Usage:
    .venv/bin/python scripts/bench/se_calibration.py [--cases 10] [--seed0 0] [--suite painted|physics]
        [--textures gaussian,kernel] [--spacing 1.0,0.8,0.8] [--localize] [--workers 1] [--quiet]

Exit status 1 when the overall RMS lies outside 0.8-1.25.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

#: the done-when's range of the RMS of error / SE
RMS_RANGE = (0.8, 1.25)


def case_spec(seed: int, suite: str, textures: list[str], spacing):
    from bmdpipe.synthetic.ctphysics import XraySpec
    from bmdpipe.synthetic.spec import ORIENTATIONS, CaseSpec

    orient = sorted(ORIENTATIONS)[seed % len(ORIENTATIONS)]
    if suite == "painted":
        return CaseSpec(orientation=orient, sclerosis=bool(seed % 2) or None, spacing_mm=spacing, noise_corr_mm=None,
                        noise_texture=textures[seed % len(textures)])
    rng = np.random.default_rng(seed)
    xray = XraySpec(kvp=float(rng.choice([100.0, 120.0, 140.0])), filtration_mm_al=float(rng.uniform(5.0, 9.0)),
                    incident_photons=float(10 ** rng.uniform(np.log10(5e4), np.log10(4e5))),
                    kernel=("standard", "sharp")[seed % 2])
    levels = (("L3", "L4"), ("L4", "L5"))[int(rng.integers(0, 2))]
    return CaseSpec(levels=levels, phantom=None, xray=xray, spacing_mm=(spacing[0], 0.7, 0.7), orientation=orient,
                    sclerosis=bool(seed % 2) or None)


def run_case(seed: int, spec, *, localize: bool, settings, workers: int):
    from bmdpipe.anatomy import localize_vertebrae, vertebrae_from_label_map
    from bmdpipe.measure import measure_roi, roi_values
    from bmdpipe.noise import estimate_noise
    from bmdpipe.results import Calibration, Material
    from bmdpipe.roi import place_rois
    from bmdpipe.synthetic.case import make_case

    case = make_case(seed, spec, workers=workers)
    twin = make_case(seed, dataclasses.replace(spec, noise=False), workers=workers)
    if not np.array_equal(twin.truth.mineral_mg_cm3, case.truth.mineral_mg_cm3):
        raise SystemExit(f"case {seed}: the noise-free twin differs in anatomy")
    sc = case.truth.scanner
    cal = Calibration("truth", "", Material(sc.material), sc.slope_hu_per_mg_cm3, sc.intercept_hu)
    if localize:
        verts = localize_vertebrae(case.volume, settings.anatomy, levels=spec.levels)
    else:
        verts = vertebrae_from_label_map(case.labels, case.volume, settings.anatomy)
    rois = place_rois(case.volume, verts, settings)
    t0 = time.perf_counter()
    noise = estimate_noise(case.volume.array, case.volume.spacing, settings.noise)
    seconds = time.perf_counter() - t0
    rows = []
    for r in rois:
        m = measure_roi(case.volume, r, cal, noise)
        if not m.n_voxels:
            continue
        clean = float(roi_values(twin.volume.array, r).mean())
        err = (m.hu_mean - clean) / abs(sc.slope_hu_per_mg_cm3)
        old_se = m.vbmd_sd_mg_cm3 / np.sqrt(m.n_voxels)
        rows.append(dict(seed=seed, region=r.region.value, side=r.side.value, vertebra=r.vertebra, n=m.n_voxels,
                         n_eff=m.n_effective, se=m.vbmd_se_mg_cm3, err=err, ratio=err / m.vbmd_se_mg_cm3,
                         old=err / old_se))
    info = dict(seconds=seconds, sd=noise.sd_hu, corr=noise.correlation_mm, n_uniform=noise.n_voxels,
                kind=(spec.xray.kernel if spec.xray else spec.noise_texture),
                true_sd=None if spec.xray else sc.noise_sd_hu, true_corr=None if spec.xray else sc.noise_corr_mm)
    return rows, info


def rms(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.sqrt(np.mean(x ** 2))) if x.size else float("nan")


def summary(name: str, rows: list[dict]) -> str:
    ratio = [r["ratio"] for r in rows]
    return (f"{name:14s} {len(rows):5d} {rms(ratio):6.3f} {np.mean(ratio):+7.3f} "
            f"{np.mean(np.abs(ratio) > 2.0) * 100:7.1f} {rms([r['old'] for r in rows]):6.3f} "
            f"{np.median([r['n_eff'] for r in rows]) if rows else np.nan:8.1f} "
            f"{np.median([r['n'] for r in rows]) if rows else np.nan:8.0f} "
            f"{np.median([r['se'] for r in rows]) if rows else np.nan:7.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--suite", choices=("painted", "physics"), default="painted")
    ap.add_argument("--textures", default="gaussian,kernel", help="painted noise textures, in turn by seed")
    ap.add_argument("--spacing", default="1.0,0.8,0.8", help="z,y,x mm (physics: z only, 0.7 mm pixels)")
    ap.add_argument("--localize", action="store_true", help="auto-localise instead of using the case's labels")
    ap.add_argument("--workers", type=int, default=1, help="processes for the physics simulator's slices")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from bmdpipe.config import load_settings
    from bmdpipe.synthetic.scanner import NOISE_TEXTURES

    textures = a.textures.split(",")
    if any(t not in NOISE_TEXTURES for t in textures):
        ap.error(f"--textures: each one of {NOISE_TEXTURES}")
    settings = load_settings()
    spacing = tuple(float(v) for v in a.spacing.split(","))
    all_rows = []
    for seed in range(a.seed0, a.seed0 + a.cases):
        spec = case_spec(seed, a.suite, textures, spacing)
        rows, info = run_case(seed, spec, localize=a.localize, settings=settings, workers=a.workers)
        all_rows += [dict(r, kind=info["kind"]) for r in rows]
        truth = ("" if info["true_sd"] is None else
                 f" (generator: {info['true_sd']:4.1f} HU, kernel sigma {info['true_corr']:.2f} mm)")
        print(f"case {seed:4d} {info['kind']:8s} noise {info['sd']:5.1f} HU, correlation {info['corr']:.2f} mm{truth}; "
              f"{info['n_uniform']} uniform voxels, {info['seconds']:.1f} s; ROIs {len(rows):2d}, "
              f"RMS err/SE {rms([r['ratio'] for r in rows]):.2f} (old {rms([r['old'] for r in rows]):.2f})")
        if not a.quiet:
            for r in rows:
                print(f"   {r['vertebra']} {r['region']} {r['side']:6s} n={r['n']:5d} n_eff={r['n_eff']:7.1f} "
                      f"SE {r['se']:5.2f} err {r['err']:+6.2f} err/SE {r['ratio']:+5.2f} (old {r['old']:+5.2f})")
    print()
    print(f"{'ROIs':14s} {'n':>5s} {'RMS':>6s} {'mean':>7s} {'|r|>2 %':>7s} {'old':>6s} {'n_eff':>8s} "
          f"{'voxels':>8s} {'SE':>7s}   (RMS of error / reported SE; old = error / (SD / sqrt(n)); medians)")
    for region in ("A", "B", "C"):
        print(summary(f"region {region}", [r for r in all_rows if r["region"] == region]))
    kinds = sorted({r["kind"] for r in all_rows})
    if len(kinds) > 1:
        for kind in kinds:
            print(summary(kind, [r for r in all_rows if r["kind"] == kind]))
    print(summary("all", all_rows))
    overall = rms([r["ratio"] for r in all_rows])
    ok = RMS_RANGE[0] <= overall <= RMS_RANGE[1]
    print(f"seeds {a.seed0}-{a.seed0 + a.cases - 1}, suite {a.suite}: RMS of error / SE over A, B, C = {overall:.3f} "
          f"(done-when {RMS_RANGE[0]}-{RMS_RANGE[1]})")
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    sys.exit(main())
