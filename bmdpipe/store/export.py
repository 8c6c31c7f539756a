"""Exports of the database: the contract's CSV files and a REDCap import file.

``export_csvs`` writes ``series.csv``, ``calibration.csv``, ``vbmd.csv`` and
``screws.csv`` exactly as ``bmdpipe run`` does (both go through the same queries), plus
``clinical.csv`` when clinical data were imported and ``vbmd_reviewers.csv`` when ROIs were
reviewed (``bmdpipe review`` / ``measure``): the ``vbmd.csv`` columns and ``reviewer``, one
row per ROI and reviewer (the automatic ROIs as reviewer ``auto``), for inter-observer
agreement.

``export_redcap`` writes a longitudinal REDCap project: one record per study
(``record_id`` = study_id), one event per timepoint (``baseline_arm_1``,
``month_3_arm_1`` ... ``month_24_arm_1``), and these files:

- ``redcap_import.csv``: the data, one row per record x event (``record_id``,
  ``redcap_event_name``, then the fields), in REDCap's flat "records" import layout;
- ``redcap_data_dictionary.csv``: the instruments ``qct``, ``screws`` and ``clinical``
  in REDCap's data dictionary format (upload it first in Project Setup);
- ``redcap_events.csv`` and ``redcap_instrument_designations.csv``: the events and which
  instruments each event holds (REDCap's event and instrument-mapping import formats).
"""

from __future__ import annotations

import csv as _csv
import io
import logging
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..rows import CalibrationRow, ScrewRow, SeriesRow, SeriesStatus, VbmdRow
from .csv import CONTRACT_COLUMNS, _format, atomic_write_bytes, write_csv
from .db import CLINICAL_COLUMNS, TIMEPOINTS, query_clinical, query_contract_rows, query_reviewed_vbmd

__all__ = [
    "DICTIONARY_COLUMNS",
    "REVIEWERS_CSV",
    "RedcapExport",
    "event_name",
    "export_csvs",
    "export_redcap",
    "redcap_dictionary",
]

logger = logging.getLogger(__name__)

#: the readings of reviewed series: one ``vbmd.csv`` row per ROI and reviewer
REVIEWERS_CSV = "vbmd_reviewers.csv"

#: REDCap data dictionary header, in REDCap's order.
DICTIONARY_COLUMNS = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)

#: the lumbar levels always present in the dictionary (more are added when measured)
DEFAULT_LEVELS = ("L1", "L2", "L3", "L4", "L5")

#: ROI columns per vertebra: (region, side) -> field suffix, label
_ROIS = (
    ("A", "center", "a", "region A (central cancellous body)"),
    ("B", "left", "bl", "region B (pedicle), left"),
    ("B", "right", "br", "region B (pedicle), right"),
    ("C", "left", "cl", "region C (screw trajectory), left"),
    ("C", "right", "cr", "region C (screw trajectory), right"),
)
_ROI_SUFFIX = {(region, side): sfx for region, side, sfx, _ in _ROIS}
_SIDES = (("left", "l"), ("right", "r"))
_YESNO_FIELDS = {"cement", "loosening_reader"}
_DAY_OFFSET = {"baseline": 0, "month_3": 91, "month_6": 182, "month_12": 365, "month_24": 730}


def event_name(timepoint: str, arm: int = 1) -> str:
    """REDCap unique event name of a timepoint: ``month_12`` -> ``month_12_arm_1``."""
    return f"{timepoint}_arm_{arm}"


def export_csvs(engine: Engine, out_dir: str | Path, *, series_uids=None) -> dict[str, int]:
    """Write the contract CSVs (and ``clinical.csv``, ``vbmd_reviewers.csv`` if any) from the database, atomically.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        From :func:`bmdpipe.store.db.open_db`.
    out_dir : path
        Folder to write into (created).
    series_uids : collection of str, optional
        Only these series (a run's view); default every series in the database.

    Returns
    -------
    dict
        File name -> number of rows written.
    """
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    with Session(engine) as session:
        tables = query_contract_rows(session, series_uids=series_uids)
        clinical = query_clinical(session) if series_uids is None else []
        readings = query_reviewed_vbmd(session, series_uids=series_uids)
    for name, rows in tables.items():
        counts[name] = write_csv(out_dir / name, rows, CONTRACT_COLUMNS[name])
    if readings:
        columns = (*CONTRACT_COLUMNS["vbmd.csv"], "reviewer")
        counts[REVIEWERS_CSV] = write_csv(out_dir / REVIEWERS_CSV, readings, columns)
    if clinical:
        counts["clinical.csv"] = write_csv(out_dir / "clinical.csv", clinical, CLINICAL_COLUMNS)
    return counts


# ---------------------------------------------------------------- REDCap

@dataclass(frozen=True)
class RedcapExport:
    """Files written by :func:`export_redcap` and what was left out (with reasons)."""

    import_file: Path
    dictionary_file: Path
    events_file: Path
    designations_file: Path
    n_records: int
    n_rows: int
    left_out: tuple[str, ...] = field(default_factory=tuple)


def _level_key(name: str) -> tuple[int, int, str]:
    m = re.fullmatch(r"([CTLSV])(\d+)", name)
    if not m:
        return (9, 0, name)
    order = {"C": 0, "T": 1, "L": 2, "S": 3, "V": 4}[m.group(1)]
    return (order, int(m.group(2)), name)


def _field_name(*parts: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", "_".join(parts).lower())


def _dict_row(name: str, form: str, ftype: str, label: str, **kw: str) -> dict[str, str]:
    row = dict.fromkeys(DICTIONARY_COLUMNS, "")
    row.update({
        "Variable / Field Name": name, "Form Name": form, "Field Type": ftype, "Field Label": label,
    })
    keymap = {
        "section": "Section Header", "choices": "Choices, Calculations, OR Slider Labels",
        "note": "Field Note", "validation": "Text Validation Type OR Show Slider Number",
        "vmin": "Text Validation Min", "vmax": "Text Validation Max",
        "identifier": "Identifier?", "required": "Required Field?",
    }
    for key, value in kw.items():
        row[keymap[key]] = value
    return row


def redcap_dictionary(levels: tuple[str, ...] = DEFAULT_LEVELS) -> list[dict[str, str]]:
    """REDCap data dictionary rows for the vertebral ``levels`` (e.g. L1 ... L5)."""
    rows = [_dict_row("record_id", "qct", "text", "Study ID (pseudonym)")]
    rows += [
        _dict_row("qct_series_uid", "qct", "text", "CT series (SeriesInstanceUID)",
                  section="Calibration"),
        _dict_row("cal_method", "qct", "dropdown", "Calibration method",
                  choices="phantom, phantom | internal, internal"),
        _dict_row("cal_phantom", "qct", "text", "Phantom"),
        _dict_row("cal_material", "qct", "dropdown", "Reference material",
                  choices="K2HPO4, K2HPO4 | HA, HA"),
        _dict_row("cal_slope", "qct", "text", "Calibration slope", note="HU per mg/cm3",
                  validation="number"),
        _dict_row("cal_intercept", "qct", "text", "Calibration intercept", note="HU",
                  validation="number"),
        _dict_row("cal_r2", "qct", "text", "Calibration R2", validation="number", vmin="0", vmax="1"),
    ]
    for lev in levels:
        for i, (_region, _side, suffix, label) in enumerate(_ROIS):
            rows.append(_dict_row(
                _field_name("vbmd", lev, suffix), "qct", "text", f"{lev} vBMD, {label}",
                note="mg/cm3", validation="number",
                **({"section": f"Vertebra {lev}"} if i == 0 else {}),
            ))
    for lev in levels:
        for i, (side, s) in enumerate(_SIDES):
            extra = {"section": f"Screws in {lev}"} if i == 0 else {}
            rows.append(_dict_row(
                _field_name("screw", lev, s, "halo"), "screws", "text",
                f"{lev} {side} screw: maximal halo width", note="mm", validation="number", **extra,
            ))
            rows.append(_dict_row(
                _field_name("screw", lev, s, "loose"), "screws", "yesno",
                f"{lev} {side} screw loosened (halo criterion)",
            ))
    rows += [
        _dict_row("arm", "clinical", "text", "Trial arm / group", section="Trial arm"),
        _dict_row("cement", "clinical", "yesno", "Cement (PMMA) augmentation"),
        _dict_row("cage_type", "clinical", "text", "Cage type"),
    ]
    scores = " | ".join(f"{i}, {i}" for i in range(6))
    for i in range(1, 11):
        rows.append(_dict_row(
            f"odi_{i}", "clinical", "radio", f"ODI section {i}", choices=scores,
            **({"section": "Oswestry Disability Index"} if i == 1 else {}),
        ))
    rows += [
        _dict_row("odi_index", "clinical", "text", "ODI index",
                  note="% = sum / (5 x answered sections) x 100", validation="number",
                  vmin="0", vmax="100"),
        _dict_row("vas_back", "clinical", "text", "VAS back pain", note="0-10",
                  validation="number", vmin="0", vmax="10", section="Pain"),
        _dict_row("vas_leg", "clinical", "text", "VAS leg pain", note="0-10",
                  validation="number", vmin="0", vmax="10"),
        _dict_row("fusion_grade", "clinical", "dropdown", "Fusion (Bridwell grade)",
                  choices="1, I | 2, II | 3, III | 4, IV", section="Imaging"),
        _dict_row("loosening_reader", "clinical", "yesno", "Screw loosening (reader's call)"),
        _dict_row("age_years", "clinical", "text", "Age", note="years", validation="number", vmin="0",
                  vmax="120", section="Baseline covariates"),
        _dict_row("sex", "clinical", "radio", "Sex", choices="female, female | male, male"),
        _dict_row("bmi_kg_m2", "clinical", "text", "Body-mass index", note="kg/m2", validation="number",
                  vmin="10", vmax="80"),
        _dict_row("tscore_lumbar", "clinical", "text", "DXA T-score, lumbar spine", validation="number",
                  vmin="-8", vmax="6"),
        _dict_row("tscore_hip", "clinical", "text", "DXA T-score, hip", validation="number", vmin="-8", vmax="6"),
    ]
    return rows


def _redcap_value(value: Any, *, yesno: bool = False) -> str:
    if value is None:
        return ""
    if yesno or isinstance(value, bool):
        if isinstance(value, str):
            value = value.lower() in ("true", "1", "yes")
        return "1" if value else "0"
    return _format(value)


def _csv_bytes(header: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = _csv.DictWriter(buf, fieldnames=header, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in header})
    return buf.getvalue().encode("utf-8")


def _chosen_series(series_rows: list[dict], left_out: list[str]) -> dict[tuple[str, str], str]:
    """``(study_id, timepoint) -> series_uid`` of the processed series that go into REDCap.

    A series without a study_id or trial timepoint, or a second one of a visit, is named in
    ``left_out``.
    """
    chosen: dict[tuple[str, str], str] = {}
    for mapping in series_rows:
        row = SeriesRow.from_mapping(mapping)
        if row.status != SeriesStatus.processed:
            continue
        study, tp = mapping.get("study_id"), mapping.get("timepoint")
        if not study or tp not in TIMEPOINTS:
            left_out.append(
                f"series {row.series_uid}: study_id {study!r} / timepoint {tp!r} is not a trial "
                f"visit ({', '.join(TIMEPOINTS)}); set them in the manifest"
            )
        elif (study, tp) in chosen:
            left_out.append(
                f"series {row.series_uid}: study {study} at {tp} already exported from series "
                f"{chosen[(study, tp)]}"
            )
        else:
            chosen[(study, tp)] = row.series_uid
    return chosen


class _Records:
    """REDCap records being filled: one per study and event, only from the chosen series."""

    def __init__(self, chosen: dict[tuple[str, str], str]):
        self.chosen = chosen
        self.by_key: dict[tuple[str, str], dict[str, str]] = {}
        for (study, tp), uid in chosen.items():
            self.record(study, tp)["qct_series_uid"] = uid

    def record(self, study: str, tp: str) -> dict[str, str]:
        return self.by_key.setdefault((study, tp), {"record_id": study, "redcap_event_name": event_name(tp)})

    def of(self, row) -> dict[str, str] | None:
        """The record of a measurement row, None when its series is not the visit's chosen one."""
        key = (row.study_id, row.timepoint)
        return self.record(*key) if self.chosen.get(key) == row.series_uid else None

    def add_calibration(self, cal: CalibrationRow) -> None:
        rec = self.of(cal)
        if rec is not None:
            values = {"cal_method": cal.method, "cal_phantom": cal.phantom, "cal_material": cal.material,
                      "cal_slope": cal.slope_hu_per_mg_cm3, "cal_intercept": cal.intercept_hu, "cal_r2": cal.r2}
            rec.update({name: _redcap_value(v) for name, v in values.items()})

    def add_vbmd(self, row: VbmdRow) -> None:
        sfx = _ROI_SUFFIX.get((_value(row.region), _value(row.side)))
        rec = self.of(row)
        if rec is not None and sfx is not None:
            rec[_field_name("vbmd", row.vertebra, sfx)] = _redcap_value(row.vbmd_mg_cm3)

    def add_screw(self, row: ScrewRow, left_out: list[str]) -> None:
        side = _value(row.side)
        s = dict(_SIDES).get(side)
        rec = self.of(row)
        if rec is None or s is None:
            return
        halo = _field_name("screw", row.vertebra, s, "halo")
        if rec.get(halo):
            left_out.append(f"series {row.series_uid}: second {side} screw in {row.vertebra} not exported")
            return
        rec[halo] = _redcap_value(row.halo_max_mm)
        rec[_field_name("screw", row.vertebra, s, "loose")] = _redcap_value(row.loosened, yesno=True)

    def add_clinical(self, visit: dict) -> None:
        rec = self.record(visit["study_id"], visit["timepoint"])
        for col in CLINICAL_COLUMNS[2:]:
            rec[col] = _redcap_value(visit[col], yesno=col in _YESNO_FIELDS)

    def rows(self) -> list[dict[str, str]]:
        order = {t: i for i, t in enumerate(TIMEPOINTS)}
        return [self.by_key[k] for k in sorted(self.by_key, key=lambda k: (k[0], order[k[1]]))]


def _value(x) -> str:
    return x.value if isinstance(x, Enum) else x


def _write_redcap_files(out_dir: Path, rows: list[dict], dictionary: list[dict]) -> dict[str, Path]:
    """Write the import file, data dictionary, events and instrument designations (atomically)."""
    fields = [r["Variable / Field Name"] for r in dictionary]
    files = {
        "import": out_dir / "redcap_import.csv",
        "dictionary": out_dir / "redcap_data_dictionary.csv",
        "events": out_dir / "redcap_events.csv",
        "designations": out_dir / "redcap_instrument_designations.csv",
    }
    atomic_write_bytes(files["import"], _csv_bytes(["record_id", "redcap_event_name"] + fields[1:], rows))
    atomic_write_bytes(files["dictionary"], _csv_bytes(list(DICTIONARY_COLUMNS), dictionary))
    events = [
        {"event_name": tp, "arm_num": "1", "day_offset": str(_DAY_OFFSET[tp]),
         "unique_event_name": event_name(tp)}
        for tp in TIMEPOINTS
    ]
    atomic_write_bytes(
        files["events"], _csv_bytes(["event_name", "arm_num", "day_offset", "unique_event_name"], events)
    )
    designations = [
        {"arm_num": "1", "unique_event_name": event_name(tp), "form": form}
        for tp in TIMEPOINTS for form in ("qct", "screws", "clinical")
    ]
    atomic_write_bytes(
        files["designations"], _csv_bytes(["arm_num", "unique_event_name", "form"], designations)
    )
    return files


def export_redcap(engine: Engine, out_dir: str | Path) -> RedcapExport:
    """Write the REDCap import file, data dictionary, events and instrument designations.

    Series without a study_id or with a timepoint that is not a trial visit
    (:data:`~bmdpipe.store.db.TIMEPOINTS`) cannot be placed in an event and are left out;
    so is a second series of the same study and visit (the first by series_uid is used).
    Each is listed in ``left_out`` and logged.
    """
    out_dir = Path(out_dir)
    with Session(engine) as session:
        tables = query_contract_rows(session)
        clinical = query_clinical(session)
    left_out: list[str] = []
    records = _Records(_chosen_series(tables["series.csv"], left_out))
    vbmd = [VbmdRow.from_mapping(r) for r in tables["vbmd.csv"]]
    screws = [ScrewRow.from_mapping(r) for r in tables["screws.csv"]]
    used = set(records.chosen.values())
    levels = set(DEFAULT_LEVELS) | {r.vertebra for r in vbmd + screws if r.series_uid in used}
    dictionary = redcap_dictionary(tuple(sorted((lv for lv in levels if lv), key=_level_key)))
    for cal in tables["calibration.csv"]:
        records.add_calibration(CalibrationRow.from_mapping(cal))
    for row in vbmd:
        records.add_vbmd(row)
    for row in screws:
        records.add_screw(row, left_out)
    for visit in clinical:
        records.add_clinical(visit)
    rows = records.rows()
    files = _write_redcap_files(out_dir, rows, dictionary)
    for msg in left_out:
        logger.warning("REDCap export: %s", msg)
    return RedcapExport(
        import_file=files["import"], dictionary_file=files["dictionary"],
        events_file=files["events"], designations_file=files["designations"],
        n_records=len({k[0] for k in records.by_key}), n_rows=len(rows), left_out=tuple(left_out),
    )
