"""The one date parser of the cohort contract: validation and loading both use it, so a cell the
validator accepts is the date the loader uses, and a cell it reports becomes null (never a guess)."""

from __future__ import annotations

import re

import pandas as pd

__all__ = ["parse_dates", "DATE", "DATE_TIME", "FORMATS"]

DATE, DATE_TIME = "date", "date-time"
_PATTERNS = {
    DATE: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII),
    DATE_TIME: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?", re.ASCII),
}
FORMATS = {DATE: "YYYY-MM-DD", DATE_TIME: "YYYY-MM-DD[THH:MM[:SS]]"}


def parse_dates(col: pd.Series, kind: str = DATE) -> pd.Series:
    """Text cells -> datetime64 (NaT for '' and for every cell that is not an extended ISO 8601 ``kind``:
    basic format '20200201', impossible days '2020-02-30' and dates outside the datetime range included)."""
    pattern = _PATTERNS[kind]
    text = col.astype(object).where(col.notna(), "").astype(str)
    ok = text.map(lambda v: pattern.fullmatch(v) is not None).astype(bool)
    return pd.to_datetime(text.where(ok), errors="coerce", format="ISO8601")
