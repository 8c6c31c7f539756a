"""Save and reuse a calibration (asynchronous calibration: one phantom scan, many patients).

``bmdpipe calibrate PHANTOM_SCAN --save cal.json`` writes the calibration with the scanner
protocol it belongs to (kVp, kernel); ``bmdpipe run ... --calibration cal.json`` reads it
back and :func:`check_compatible` warns when a patient series was taken with another kVp
or kernel. ``calibration_to_dict`` / ``calibration_from_dict`` are pure; ``save_calibration``
and ``load_calibration`` are thin file wrappers for the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from enum import Enum
from pathlib import Path

from ..errors import ConfigError
from ..results import Calibration, Material, ReferenceMeasurement

__all__ = ["calibration_to_dict", "calibration_from_dict", "save_calibration", "load_calibration",
           "check_compatible", "FORMAT"]

FORMAT = "bmdpipe-calibration/1"


def _jsonable(x):
    """JSON-ready value: dataclasses as dicts of their fields, enums as values, arrays as lists."""
    if dataclasses.is_dataclass(x):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x) if f.compare}
    if isinstance(x, Enum):
        return x.value
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


def _typed(kind, value):
    """``value`` read from JSON as the field type ``kind`` (dataclass, enum, tuple, float ...)."""
    if value is None:
        return None
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return tuple(value) if item is float else tuple(_typed(item, v) for v in value)
    if dataclasses.is_dataclass(kind):
        return _from_fields(kind, value)
    if kind in (float, int, str) or (isinstance(kind, type) and issubclass(kind, Enum)):
        return kind(value)
    return value


def _from_fields(kind, values: dict):
    """An instance of the dataclass ``kind`` from the JSON dict of its saved (compared) fields."""
    hints = typing.get_type_hints(kind)
    saved = [f for f in dataclasses.fields(kind) if f.compare]
    missing = next((f.name for f in saved if f.name not in values and f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING), None)
    if missing:
        raise KeyError(missing)
    return kind(**{f.name: _typed(hints[f.name], values[f.name]) for f in saved if f.name in values})


def calibration_to_dict(cal: Calibration, *, kvp: float | None, kernel: str | None) -> dict:
    """JSON-ready dict of a calibration and the protocol (kVp, kernel) it was measured with.

    The calibration is saved as its fields (the QC-only ``outlines`` are not).
    """
    return {"format": FORMAT, "kvp": None if kvp is None else float(kvp), "kernel": kernel or "",
            "calibration": _jsonable(cal)}


def calibration_from_dict(data: dict) -> tuple[Calibration, float | None, str]:
    """Inverse of :func:`calibration_to_dict`. Raises ConfigError naming the missing field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"not a bmdpipe calibration file (format must be {FORMAT!r})")
    try:
        cal = _from_fields(Calibration, data["calibration"])
    except KeyError as exc:
        raise ConfigError(f"calibration file lacks the field calibration.{exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"calibration file has an invalid value: {exc}") from exc
    if not cal.slope_hu_per_mg_cm3 > 0:
        raise ConfigError("calibration file: the slope (HU per mg/cm3) must be positive")
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
