"""The BraTS survival table and the three survival classes."""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["SurvivalRow", "read_survival_table", "check_thresholds", "survival_class"]

_CENSORED = re.compile(r"^alive\s*\(\s*(\d+(?:\.\d+)?)\s*days?\s+later\s*\)$", re.IGNORECASE)


@dataclass(frozen=True)
class SurvivalRow:
    """One row of the survival table.

    Attributes:
        age: years (nan if blank or unparsable).
        raw: the survival cell as written.
        status: ``"ok"`` (days observed), ``"censored"`` (``ALIVE (N days later)``: alive after N days)
            or ``"unparsable"`` (blank, negative or anything else).
        days: survival in days for ``"ok"``, the follow-up days (a lower bound) for ``"censored"``,
            None for ``"unparsable"``.
    """

    age: float
    raw: str
    status: str
    days: Optional[float]


def _parse_survival(text: str) -> tuple[str, Optional[float]]:
    text = text.strip()
    try:
        days = float(text)
    except ValueError:
        match = _CENSORED.match(text)
        return ("censored", float(match.group(1))) if match else ("unparsable", None)
    return ("ok", days) if math.isfinite(days) and days >= 0 else ("unparsable", None)


def _parse_age(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _column(header: Sequence[str], path: Path, what: str, test) -> int:
    for i, name in enumerate(header):
        if test(name.strip().lower()):
            return i
    raise ValueError(f"survival table {path}: no {what} column in header {list(header)}")


def read_survival_table(path: Path) -> dict[str, SurvivalRow]:
    """Rows of a BraTS survival CSV by case id.

    Columns are found by name: the id is the first column ending in ``ID`` (``BraTS19ID``,
    ``Brats20ID``), survival the first starting with ``Survival`` (``Survival``, ``Survival_days``),
    age the column ``Age`` (optional). A repeated id raises a ``ValueError`` naming the file and id.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"survival table {path} is empty")
    header, body = rows[0], rows[1:]
    id_col = _column(header, path, "case id (…ID)", lambda name: name.endswith("id"))
    survival_col = _column(header, path, "survival (Survival…)", lambda name: name.startswith("survival"))
    try:
        age_col = _column(header, path, "age", lambda name: name == "age")
    except ValueError:
        age_col = None
    table: dict[str, SurvivalRow] = {}
    for line, row in enumerate(body, start=2):
        row = row + [""] * (len(header) - len(row))
        case = row[id_col].strip()
        if not case:
            raise ValueError(f"survival table {path}, line {line}: blank case id")
        if case in table:
            raise ValueError(f"survival table {path}, line {line}: case {case} appears twice")
        status, days = _parse_survival(row[survival_col])
        age = _parse_age(row[age_col]) if age_col is not None else math.nan
        table[case] = SurvivalRow(age=age, raw=row[survival_col], status=status, days=days)
    return table


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
    """``(short_below, long_above)`` in days, checked: two finite numbers, the first smaller."""
    values = tuple(float(t) for t in thresholds)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise ValueError(f"survival_thresholds must be two increasing day counts, got {tuple(thresholds)!r}")
    return values


def survival_class(days, thresholds: Sequence[float] = (300, 450)) -> np.ndarray:
    """Survival class of each day count: 0 short (< 300 days), 1 mid (300 to 450 inclusive), 2 long (> 450).

    Args:
        days: float array [...] (days).
        thresholds: ``(short_below, long_above)``; the defaults are 10 and 15 months.

    Returns:
        int64 array [...].
    """
    short_below, long_above = check_thresholds(thresholds)
    days = np.asarray(days, dtype=np.float64)
    return np.where(days < short_below, 0, np.where(days > long_above, 2, 1)).astype(np.int64)
