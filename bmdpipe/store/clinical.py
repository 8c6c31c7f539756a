"""Import of the trial's clinical data (CSV) into the database, with row-level errors.

One CSV row per study x timepoint. Columns (header names, any order; unknown columns are
an error so that a misspelt header is not silently dropped):

=================  ===================================================================
study_id           pseudonym (required)
timepoint          baseline, month_3, month_6, month_12, month_24 (required)
arm                group / arm of the trial (free text, e.g. cement, no_cement)
cement             yes / no (also true/false, 1/0, y/n)
cage_type          free text (e.g. titanium_3d, peek)
odi_1 ... odi_10   Oswestry Disability Index section scores 0-5; empty = not answered
vas_back, vas_leg  visual analogue scale 0-10
fusion_grade       Bridwell grade I, II, III, IV (or 1-4)
loosening_reader   the reader's screw-loosening call: yes / no
age_years          age at surgery, years (0-120)
sex                female / male (also f / m)
bmi_kg_m2          body-mass index, kg/m2 (10-80)
tscore_lumbar      DXA T-score of the lumbar spine, SD units (-8 to 6)
tscore_hip         DXA T-score of the hip (total hip or femoral neck as the trial fixes), SD units (-8 to 6)
=================  ===================================================================

``odi_index`` is computed: sum / (5 x answered sections) x 100 (%), empty when no section
is answered. Rows are numbered as in a spreadsheet: the header is row 1, the first data
row is row 2. Nothing is written unless every row is valid; an existing study x timepoint
is replaced.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..errors import StoreError
from .db import CLINICAL_COLUMNS, TIMEPOINTS, ClinicalVisit, Study

__all__ = [
    "ClinicalImportError",
    "ClinicalRow",
    "ImportSummary",
    "INPUT_COLUMNS",
    "odi_index",
    "parse_clinical_csv",
    "import_clinical",
]

#: columns accepted in the clinical CSV (odi_index is computed, not read)
INPUT_COLUMNS = tuple(c for c in CLINICAL_COLUMNS if c != "odi_index")

_TRUE = {"yes", "y", "true", "t", "1"}
_FALSE = {"no", "n", "false", "f", "0"}
_BRIDWELL = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "1": 1, "2": 2, "3": 3, "4": 4}


class ClinicalImportError(StoreError):
    """The clinical CSV has invalid rows; ``errors`` lists one message per problem."""

    def __init__(self, path: Path, errors: list[str]):
        self.errors = list(errors)
        shown = "\n  ".join(self.errors[:50])
        more = f"\n  ... and {len(self.errors) - 50} more" if len(self.errors) > 50 else ""
        super().__init__(
            f"{path}: {len(self.errors)} problem(s), nothing imported; fix these rows and "
            f"import again:\n  {shown}{more}"
        )


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _yes_no(value: Any) -> Any:
    value = _blank_to_none(value)
    if value is None or isinstance(value, bool):
        return value
    low = str(value).lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("is not yes or no")


def _optional_number(value: Any) -> float | None:
    """A blank cell -> None; otherwise the cell as a float, or ValueError("is not a number")."""
    value = _blank_to_none(value)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("is not a number") from None


def _int_score(value: Any) -> Any:
    number = _optional_number(value)
    if number is None:
        return None
    if not number.is_integer():
        raise ValueError("is not a whole number")
    if not 0 <= number <= 5:
        raise ValueError("is out of range 0-5")
    return int(number)


def _vas(value: Any) -> Any:
    number = _optional_number(value)
    if number is not None and not 0 <= number <= 10:
        raise ValueError("is out of range 0-10")
    return number


def _bridwell(value: Any) -> Any:
    value = _blank_to_none(value)
    if value is None:
        return None
    grade = _BRIDWELL.get(str(value).strip().lower().removeprefix("grade").strip())
    if grade is None:
        raise ValueError("is not a Bridwell grade I, II, III or IV")
    return grade


def _bounded(low: float, high: float):
    """A validator: a blank cell -> None, else a number within [low, high]."""
    def check(value: Any) -> float | None:
        number = _optional_number(value)
        if number is not None and not low <= number <= high:
            raise ValueError(f"is out of range {low:g} to {high:g}")
        return number

    return check


_SEX = {"female": "female", "f": "female", "male": "male", "m": "male"}


def _sex(value: Any) -> Any:
    value = _blank_to_none(value)
    if value is None:
        return None
    sex = _SEX.get(str(value).lower())
    if sex is None:
        raise ValueError("is not female or male")
    return sex


YesNo = Annotated[bool | None, BeforeValidator(_yes_no)]
OdiScore = Annotated[int | None, BeforeValidator(_int_score)]
Vas = Annotated[float | None, BeforeValidator(_vas)]
Bridwell = Annotated[int | None, BeforeValidator(_bridwell)]
Text = Annotated[str | None, BeforeValidator(_blank_to_none)]
TScore = Annotated[float | None, BeforeValidator(_bounded(-8.0, 6.0))]


class ClinicalRow(BaseModel):
    """One validated row of the clinical CSV."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    timepoint: str
    arm: Text = None
    cement: YesNo = None
    cage_type: Text = None
    odi_1: OdiScore = None
    odi_2: OdiScore = None
    odi_3: OdiScore = None
    odi_4: OdiScore = None
    odi_5: OdiScore = None
    odi_6: OdiScore = None
    odi_7: OdiScore = None
    odi_8: OdiScore = None
    odi_9: OdiScore = None
    odi_10: OdiScore = None
    vas_back: Vas = None
    vas_leg: Vas = None
    fusion_grade: Bridwell = None
    loosening_reader: YesNo = None
    age_years: Annotated[float | None, BeforeValidator(_bounded(0.0, 120.0))] = None
    sex: Annotated[str | None, BeforeValidator(_sex)] = None
    bmi_kg_m2: Annotated[float | None, BeforeValidator(_bounded(10.0, 80.0))] = None
    tscore_lumbar: TScore = None
    tscore_hip: TScore = None

    @field_validator("study_id", mode="before")
    @classmethod
    def _study(cls, value: Any) -> str:
        value = _blank_to_none(value)
        if value is None:
            raise ValueError("is empty; every row needs the study's pseudonym")
        return str(value)

    @field_validator("timepoint", mode="before")
    @classmethod
    def _timepoint(cls, value: Any) -> str:
        value = _blank_to_none(value)
        low = str(value).lower() if value is not None else None
        if low not in TIMEPOINTS:
            raise ValueError(f"is not one of {', '.join(TIMEPOINTS)}")
        return low

    def odi_scores(self) -> list[int | None]:
        """The ten ODI section scores (None = not answered)."""
        return [getattr(self, f"odi_{i}") for i in range(1, 11)]

    def to_record(self) -> dict[str, Any]:
        """Column values of :class:`~bmdpipe.store.db.ClinicalVisit`, with ``odi_index``."""
        record = self.model_dump()
        record["odi_index"] = odi_index(self.odi_scores())
        return record


def odi_index(scores: list[int | None]) -> float | None:
    """Oswestry Disability Index in % from section scores 0-5 (None = not answered).

    ``sum / (5 x answered sections) x 100``; None when no section is answered.

    >>> odi_index([5, 0, None, 2, 3, 1, 0, 0, 4, 5])
    44.44444444444444
    """
    answered = [s for s in scores if s is not None]
    if not answered:
        return None
    return sum(answered) / (5 * len(answered)) * 100.0


def _describe(error: Mapping, raw: Mapping[str, Any]) -> str:
    field = str(error["loc"][0]) if error["loc"] else "row"
    if error["type"] == "extra_forbidden":
        return f"column {field} is not a clinical column (expected: {', '.join(INPUT_COLUMNS)})"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{field} is missing"
    value = raw.get(field)
    shown = value.strip() if isinstance(value, str) and value.strip() else repr(value)
    return f"{field} = {shown} {msg}"


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_clinical` did: rows read, visits inserted and replaced."""

    n_rows: int
    n_inserted: int
    n_replaced: int
    n_new_studies: int


def parse_clinical_csv(path: str | Path) -> list[ClinicalRow]:
    """Read and validate the clinical CSV at ``path``.

    Raises
    ------
    ClinicalImportError
        Listing every problem as ``row N: field = value is ...`` (N as in a spreadsheet,
        header = row 1), including unknown columns and duplicate study x timepoint rows.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            raws = [{(k or "").strip(): v for k, v in raw.items()} for raw in reader]
    except FileNotFoundError as exc:
        raise StoreError(f"clinical file {path} does not exist") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StoreError(f"clinical file {path} is not a UTF-8 CSV file: {exc}") from exc
    errors: list[str] = []
    missing = [c for c in ("study_id", "timepoint") if c not in header]
    unknown = [c for c in header if c not in INPUT_COLUMNS]
    if missing:
        errors.append(f"row 1: required column(s) {', '.join(missing)} missing from the header")
    if unknown:
        errors.append(
            f"row 1: unknown column(s) {', '.join(unknown)}; expected some of {', '.join(INPUT_COLUMNS)}"
        )
    if errors:
        raise ClinicalImportError(path, errors)
    rows: list[ClinicalRow] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(raws, start=2):
        if None in raw or "" in raw:
            errors.append(f"row {number}: more cells than header columns")
            continue
        if all(_blank_to_none(v) is None for v in raw.values()):
            continue  # blank line
        try:
            row = ClinicalRow.model_validate(raw)
        except ValidationError as exc:
            errors.extend(f"row {number}: {_describe(e, raw)}" for e in exc.errors())
            continue
        key = (row.study_id, row.timepoint)
        if key in seen:
            errors.append(
                f"row {number}: study {row.study_id} at {row.timepoint} already given in row {seen[key]}"
            )
            continue
        seen[key] = number
        rows.append(row)
    if errors:
        raise ClinicalImportError(path, errors)
    return rows


def import_clinical(engine: Engine, path: str | Path) -> ImportSummary:
    """Validate the clinical CSV at ``path`` and write it in ONE transaction.

    Existing visits (same study_id and timepoint) are replaced; unknown studies are
    created. See the module docstring for the columns.

    Raises
    ------
    ClinicalImportError
        When any row is invalid (nothing is written).
    """
    path = Path(path)
    rows = parse_clinical_csv(path)
    inserted = replaced = new_studies = 0
    with Session(engine) as session, session.begin():
        known = set(session.scalars(sa.select(Study.study_id)))
        for row in rows:
            if row.study_id not in known:
                session.add(Study(study_id=row.study_id))
                known.add(row.study_id)
                new_studies += 1
        session.flush()
        for row in rows:
            existing = session.scalars(
                sa.select(ClinicalVisit).where(
                    ClinicalVisit.study_id == row.study_id, ClinicalVisit.timepoint == row.timepoint
                )
            ).first()
            record = row.to_record()
            if existing is None:
                session.add(ClinicalVisit(source=path.name, **record))
                inserted += 1
            else:
                for key, value in record.items():
                    setattr(existing, key, value)
                existing.source = path.name
                replaced += 1
    return ImportSummary(len(rows), inserted, replaced, new_studies)
