"""Save and reuse a calibration (asynchronous calibration: one phantom scan, many patients).

``bmdpipe calibrate PHANTOM_SCAN --save cal.json`` writes the calibration with the scanner
protocol it belongs to (kVp, kernel); ``bmdpipe run ... --calibration cal.json`` reads it
back and :func:`check_compatible` warns when a patient series was taken with another kVp
or kernel. ``calibration_to_dict`` / ``calibration_from_dict`` are pure; ``save_calibration``
and ``load_calibration`` are thin file wrappers for the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..results import Calibration, Material, ReferenceMeasurement

__all__ = ["calibration_to_dict", "calibration_from_dict", "save_calibration", "load_calibration",
           "check_compatible", "FORMAT"]

FORMAT = "bmdpipe-calibration/1"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            return x.item()
        except (ValueError, AttributeError):
            return x.tolist()
    return x


def calibration_to_dict(cal: Calibration, *, kvp: float | None, kernel: str | None) -> dict:
    """JSON-ready dict of a calibration and the protocol (kVp, kernel) it was measured with."""
    return {
        "format": FORMAT,
        "kvp": None if kvp is None else float(kvp),
        "kernel": kernel or "",
        "calibration": {
            "method": cal.method, "phantom": cal.phantom, "material": cal.material.value,
            "slope_hu_per_mg_cm3": cal.slope_hu_per_mg_cm3, "intercept_hu": cal.intercept_hu,
            "r2": cal.r2, "n_references": cal.n_references,
            "references": [_jsonable(r.__dict__) for r in cal.references],
            "warnings": list(cal.warnings), "details": _jsonable(cal.details),
        },
    }


def calibration_from_dict(data: dict) -> tuple[Calibration, float | None, str]:
    """Inverse of :func:`calibration_to_dict`. Raises ConfigError naming the missing field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"not a bmdpipe calibration file (format must be {FORMAT!r})")
    try:
        c = data["calibration"]
        refs = tuple(
            ReferenceMeasurement(**{**r, "center_lps": None if r.get("center_lps") is None else tuple(r["center_lps"])})
            for r in c.get("references", [])
        )
        cal = Calibration(
            method=c["method"], phantom=c["phantom"], material=Material(c["material"]),
            slope_hu_per_mg_cm3=float(c["slope_hu_per_mg_cm3"]), intercept_hu=float(c["intercept_hu"]),
            r2=None if c.get("r2") is None else float(c["r2"]), n_references=int(c.get("n_references", len(refs))),
            references=refs, warnings=tuple(c.get("warnings", ())), details=dict(c.get("details", {})),
        )
    except KeyError as exc:
        raise ConfigError(f"calibration file lacks the field calibration.{exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"calibration file has an invalid value: {exc}") from exc
    if not cal.slope_hu_per_mg_cm3 > 0:
        raise ConfigError("calibration file: slope_hu_per_mg_cm3 must be positive")
    return cal, data.get("kvp"), data.get("kernel") or ""


def save_calibration(cal: Calibration, path: str | Path, *, kvp: float | None, kernel: str | None) -> None:
    """Write ``cal`` with its protocol to a JSON file."""
    Path(path).write_text(json.dumps(calibration_to_dict(cal, kvp=kvp, kernel=kernel), indent=2))


def load_calibration(path: str | Path) -> tuple[Calibration, float | None, str]:
    """Read a calibration file written by :func:`save_calibration`: (calibration, kvp, kernel)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"calibration file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration file {path} is not valid JSON: {exc}") from exc
    try:
        return calibration_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def check_compatible(saved_kvp: float | None, saved_kernel: str | None,
                     kvp: float | None, kernel: str | None, *, kvp_tolerance: float = 0.5) -> list[str]:
    """Warnings when a series' protocol differs from the one a saved calibration was made with.

    HU-to-density depends on the tube voltage and, less, on the reconstruction kernel, so a
    calibration transfers only within one scanner and protocol.
    """
    out = []
    if saved_kvp is None or kvp is None:
        out.append(f"kVp unknown (calibration {saved_kvp}, series {kvp}): cannot check the calibration applies")
    elif abs(float(saved_kvp) - float(kvp)) > kvp_tolerance:
        out.append(f"series kVp {float(kvp):g} differs from the calibration's {float(saved_kvp):g} kVp: "
                   "densities will be biased, calibrate with a phantom scan of this protocol")
    sk, k = (saved_kernel or "").strip().upper(), (kernel or "").strip().upper()
    if sk and k and sk != k:
        out.append(f"series kernel {kernel!r} differs from the calibration's {saved_kernel!r}: check the protocol")
    elif not (sk and k):
        out.append("reconstruction kernel unknown for the calibration or the series: cannot check it matches")
    return out
