"""The BraTS survival table and the three survival classes."""
from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["SurvivalRow", "SurvivalTable", "decode_table", "read_survival_table", "check_thresholds", "survival_class"]

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
    shown = ", ".join(repr(name[:40]) for name in header[:12]) + (", ..." if len(header) > 12 else "")
    raise ValueError(f"survival table {path}: no {what} column in the header line ({shown})")


@dataclass
class SurvivalTable:
    """A parsed survival CSV.

    Attributes:
        path: the file.
        rows: one :class:`SurvivalRow` per case id.
        bad_lines: ``(line number, reason, text)`` of each line that could not be parsed (an
            unterminated quote, a blank case id); such lines give no row.
        encoding: the text encoding the file was read with (``"utf-8"``, ``"utf-16"`` or ``"latin-1"``).
    """

    path: Path
    rows: dict = field(default_factory=dict)
    bad_lines: list = field(default_factory=list)
    encoding: str = "utf-8"

    def bad_line_summary(self, first: int = 3) -> str:
        """One line: how many lines failed to parse, and the first few with their numbers and reasons."""
        shown = "; ".join(f"line {line}: {reason}: {text[:50]!r}" for line, reason, text in self.bad_lines[:first])
        more = f"; and {len(self.bad_lines) - first} more" if len(self.bad_lines) > first else ""
        return f"survival table {self.path}: {len(self.bad_lines)} line(s) could not be parsed and give no row ({shown}{more})"


def decode_table(path: Path, data: bytes, what: str = "survival table") -> tuple[str, str]:
    """The text of a CSV file and its encoding: UTF-8 (with or without BOM), UTF-16 with a BOM, else
    Latin-1 (with a warning). Binary data raise a ``ValueError`` naming the file (as ``what``)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} {path}: damaged UTF-16 text at byte {exc.start}") from None
    if data.startswith(b"PK\x03\x04") or b"\x00" in data:
        raise ValueError(f"{what} {path} is not a text CSV file (binary data; a spreadsheet? save it as CSV)")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        warnings.warn(f"{what} {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); "
                      "read as Latin-1 (save it as UTF-8 to silence this)")
        return data.decode("latin-1"), "latin-1"


def read_survival_table(path: Path) -> SurvivalTable:
    """The rows of a BraTS survival CSV by case id, and the lines that could not be parsed.

    Columns are found by name: the id is the first column ending in ``ID`` (``BraTS19ID``,
    ``Brats20ID``), survival the first starting with ``Survival`` (``Survival``, ``Survival_days``),
    age the column ``Age`` (optional). Each line is parsed on its own (a quote must close on its
    line), so one unterminated quote costs one row, not the rest of the file; such lines are listed
    in ``bad_lines``. A file that is not UTF-8 is read as Latin-1 with a warning (UTF-16 with a BOM
    is read as such). A repeated id, an unreadable file or a header without the id or survival
    column raise a ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"survival table {path}: cannot read it: {exc.strerror or exc}") from None
    text, encoding = decode_table(path, data)
    table = SurvivalTable(path=path, encoding=encoding)
    header = None
    for line, raw in enumerate(io.StringIO(text, newline=None), start=1):
        raw = raw.rstrip("\n")
        if not raw.strip():
            continue
        try:
            row = next(csv.reader([raw], strict=True))
        except csv.Error as exc:
            if header is None:
                raise ValueError(f"survival table {path}, line {line} (the header): cannot parse it: {exc}") from None
            reason = "unterminated quote" if "unexpected end of data" in str(exc) else str(exc)
            table.bad_lines.append((line, reason, raw))
            continue
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = row
            id_col = _column(header, path, "case id (…ID)", lambda name: name.endswith("id"))
            survival_col = _column(header, path, "survival (Survival…)", lambda name: name.startswith("survival"))
            try:
                age_col = _column(header, path, "age", lambda name: name == "age")
            except ValueError:
                age_col = None
            continue
        row = row + [""] * (len(header) - len(row))
        case = row[id_col].strip()
        if not case:
            table.bad_lines.append((line, "blank case id", raw))
            continue
        if case in table.rows:
            raise ValueError(f"survival table {path}, line {line}: case {case} appears twice")
        status, days = _parse_survival(row[survival_col])
        age = _parse_age(row[age_col]) if age_col is not None else math.nan
        table.rows[case] = SurvivalRow(age=age, raw=row[survival_col], status=status, days=days)
    if header is None:
        raise ValueError(f"survival table {path} is empty")
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
