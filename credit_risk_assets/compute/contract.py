"""The data contract of the source snapshot: which rows may enter the warehouse.

`check_source_contract` reads a frame as it came from the source (dates as datetime64 values,
`datetime.date` objects from MySQL or 'YYYY-MM-DD' text from SQLite), splits it into the rows
that keep every rule and the rows that break one, and says which rule each broken row broke.
Deciding whether a month may pass with rejects is the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from credit_risk_assets.tables import SOURCE_COLUMNS
from credit_risk_assets.warehouse.schema import INTEGER_RANGES, has_time_of_day

BucketScale = Sequence[tuple[int, str]]

# Lower bound of each bucket in days past due, ascending; a bucket runs to the next bound.
DEFAULT_BUCKET_SCALE: tuple[tuple[int, str], ...] = (
    (0, "On-Time"),
    (1, "Mild"),
    (31, "Moderate"),
    (61, "Severe"),
    (90, "Default"),
)

SOURCE_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in SOURCE_COLUMNS)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in SOURCE_COLUMNS if not c.nullable)
DATE_COLUMNS = ("billing_cycle", "due_date", "payment_date")
INTEGER_COLUMNS = ("account_id", "days_past_due", "is_delinquent")
TEXT_COLUMNS = ("delinquency_bucket",)

# Contract rules in the order they are reported.
RULES: tuple[str, ...] = (
    "null_required",
    "unparseable_value",
    "duplicate_key",
    "billing_cycle_not_month_start",
    "billing_cycle_outside_partition",
    "negative_days_past_due",
    "is_delinquent_mismatch",
    "bucket_mismatch",
    "payment_days_mismatch",
)

# Columns a rule reads: a row with one of them unknown is not judged by that rule.
_RULE_INPUTS: dict[str, tuple[str, ...]] = {
    "billing_cycle_not_month_start": ("billing_cycle",),
    "billing_cycle_outside_partition": ("billing_cycle",),
    "is_delinquent_mismatch": ("days_past_due", "is_delinquent"),
    "bucket_mismatch": ("days_past_due", "delinquency_bucket"),
    "payment_days_mismatch": ("days_past_due", "payment_date", "due_date"),
}

_LARGEST_INT64_AS_FLOAT = float(2**63)

# Whole numbers each integer column can hold in the warehouse. A flag keeps the int64 range
# here, so that a value other than 0/1 is reported by is_delinquent_mismatch instead.
_STORABLE_RANGES = {
    column.name: INTEGER_RANGES[column.kind]
    for column in SOURCE_COLUMNS
    if column.kind in ("bigint", "int")
}

# Object columns of these inferred kinds hold no numbers, so they parse as dates directly.
_DATE_LIKE_KINDS = frozenset({"string", "date", "datetime", "datetime64", "empty"})


class SourceSchemaError(ValueError):
    """The source frame lacks a column, or a column holds values of the wrong kind throughout."""


@dataclass(frozen=True, eq=False)
class ContractResult:
    """A source frame split by the contract.

    `valid` holds the rows that keep every rule, as the 7 source columns in the frame
    conventions. `rejects` holds one row per (source row, broken rule): `source_row` (position
    in the input frame), `rule`, and the 7 source columns exactly as they came in.
    """

    valid: pd.DataFrame
    rejects: pd.DataFrame

    @property
    def rule_counts(self) -> dict[str, int]:
        """Rows that broke each rule, in the contract's rule order; unbroken rules are absent."""
        counts = self.rejects["rule"].value_counts()
        return {rule: int(counts[rule]) for rule in RULES if rule in counts.index}

    @property
    def rejected_rows(self) -> int:
        """Input rows that broke at least one rule."""
        return int(self.rejects["source_row"].nunique())

    @property
    def checked_rows(self) -> int:
        """Input rows the contract looked at."""
        return len(self.valid) + self.rejected_rows

    def summary(self, examples: int = 3) -> str:
        """Rows per broken rule, then up to `examples` offending rows of each rule."""
        if self.rejects.empty:
            return f"All {self.checked_rows} rows meet the source contract."

        counts = "; ".join(f"{rule}: {_rows(count)}" for rule, count in self.rule_counts.items())
        lines = [
            f"{self.rejected_rows} of {self.checked_rows} rows break the source contract "
            f"({counts})."
        ]
        for rule in self.rule_counts:
            broken = self.rejects[self.rejects["rule"] == rule].head(examples)
            lines.extend(f"  {rule}: {_describe_row(row)}" for _, row in broken.iterrows())
        return "\n".join(lines)


class SourceContractError(ValueError):
    """A source month holds more invalid rows than the caller tolerates."""

    def __init__(self, result: ContractResult, month: date | pd.Timestamp | str) -> None:
        self.result = result
        self.month = month
        super().__init__(
            f"Source month {_month_text(month)} breaks the data contract. {result.summary()}\n"
            "Correct these rows in the source table and materialise the month again, or raise "
            "the invalid-row tolerance to write the month without them."
        )


def bucket_for_dpd(
    days_past_due: pd.Series, scale: BucketScale = DEFAULT_BUCKET_SCALE
) -> pd.Series:
    """The delinquency bucket of each days-past-due value; missing below the scale or for NA."""
    bounds, names = _scale_arrays(scale)
    values = pd.to_numeric(days_past_due).to_numpy(dtype="float64", na_value=np.nan)

    position = np.searchsorted(bounds, values, side="right") - 1
    known = ~np.isnan(values) & (position >= 0)
    labels = np.where(known, names[np.clip(position, 0, None)], None)
    return pd.Series(labels, index=days_past_due.index, dtype="str", name="delinquency_bucket")


def check_source_contract(
    frame: pd.DataFrame,
    month_start: date | pd.Timestamp | str,
    month_end: date | pd.Timestamp | str,
    scale: BucketScale = DEFAULT_BUCKET_SCALE,
) -> ContractResult:
    """Split a source frame into valid rows and rejects for billing months [month_start, month_end).

    A value that cannot be read as its column's kind, or that its warehouse column cannot
    store (days_past_due beyond 2**31 - 1), rejects its row (`unparseable_value`); a missing
    column, or a column in which no value can be read, raises SourceSchemaError. Columns
    beyond the 7 of the source are ignored.
    """
    start, end = _partition_bounds(month_start, month_end)
    _require_columns(frame)
    raw = frame[list(SOURCE_COLUMN_NAMES)].reset_index(drop=True)
    raw_missing = raw.isna()

    parsed = _parse_columns(raw)
    parsed_missing = parsed.isna()
    _require_readable_columns(raw, raw_missing, parsed_missing)
    broken = _broken_rules(raw_missing, parsed, parsed_missing, start, end, scale)

    any_broken = np.logical_or.reduce(list(broken.values()))
    valid = parsed.loc[~any_broken].reset_index(drop=True)
    return ContractResult(valid=_to_conventions(valid), rejects=_rejects(raw, broken))


def _scale_arrays(scale: BucketScale) -> tuple[np.ndarray, np.ndarray]:
    bounds = np.array([bound for bound, _ in scale], dtype="float64")
    if len(bounds) == 0 or np.any(np.diff(bounds) <= 0):
        raise ValueError(
            f"Bucket scale {list(scale)} is not usable: give (lower bound, name) pairs with "
            "strictly increasing bounds, for example ((0, 'On-Time'), (1, 'Mild'), ...)."
        )
    return bounds, np.array([name for _, name in scale], dtype=object)


def _partition_bounds(
    month_start: date | pd.Timestamp | str, month_end: date | pd.Timestamp | str
) -> tuple[pd.Timestamp, pd.Timestamp]:
    start, end = _naive_timestamp(month_start), _naive_timestamp(month_end)
    if not start < end:
        raise ValueError(
            f"Partition [{start.date()}, {end.date()}) is empty: month_end is exclusive and "
            "must come after month_start, for example 2024-03-01 and 2024-04-01."
        )
    return start, end


def _naive_timestamp(value: date | pd.Timestamp | str) -> pd.Timestamp:
    # Dagster's partition windows carry a time zone; billing cycles are naive calendar dates.
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _require_columns(frame: pd.DataFrame) -> None:
    missing = [name for name in SOURCE_COLUMN_NAMES if name not in frame.columns]
    if missing:
        raise SourceSchemaError(
            f"Source frame lacks column(s) {', '.join(missing)}; it has {list(frame.columns)}. "
            f"The source table must have the columns {', '.join(SOURCE_COLUMN_NAMES)}."
        )


def _parse_columns(raw: pd.DataFrame) -> pd.DataFrame:
    """The source columns read as their declared kinds; unreadable values become NA."""
    parsed = {name: _read_dates(raw[name], name) for name in DATE_COLUMNS}
    parsed |= {name: _read_integers(raw[name], name) for name in INTEGER_COLUMNS}
    parsed |= {name: _read_text(raw[name], name) for name in TEXT_COLUMNS}
    return pd.DataFrame(parsed)[list(SOURCE_COLUMN_NAMES)]


def _require_readable_columns(
    raw: pd.DataFrame, raw_missing: pd.DataFrame, parsed_missing: pd.DataFrame
) -> None:
    """Refuse a column in which values are present but none can be read as its kind."""
    wrong_kind = [
        name
        for name in SOURCE_COLUMN_NAMES
        if not raw_missing[name].all() and parsed_missing[name].all()
    ]
    if wrong_kind:
        details = "; ".join(
            f"{name} is declared {_declared_kind(name)} but holds {_first_values(raw[name])}"
            for name in wrong_kind
        )
        raise SourceSchemaError(
            f"Source column(s) {', '.join(wrong_kind)} hold no readable value: {details}. "
            "Check the source table's column types against the data contract."
        )


def _declared_kind(name: str) -> str:
    return next(column.kind for column in SOURCE_COLUMNS if column.name == name)


def _read_dates(raw: pd.Series, name: str) -> pd.Series:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        raw = raw.dt.tz_localize(None)
    if ptypes.is_datetime64_any_dtype(raw):
        dates = raw
    elif ptypes.is_numeric_dtype(raw) or ptypes.is_bool_dtype(raw):
        _refuse_kind(raw, name, "a date")
        dates = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    else:
        candidates = raw
        if ptypes.infer_dtype(raw, skipna=True) not in _DATE_LIKE_KINDS:
            # Numbers are no dates, but pandas would read them as epochs: drop them first.
            numbers = pd.to_numeric(raw, errors="coerce").notna()
            candidates = raw.astype(object).where(~numbers, None)
        dates = pd.to_datetime(candidates, format="%Y-%m-%d", errors="coerce")

    # A date the frames cannot hold (a 9999-12-31 "open end", say) is not read.
    holdable = dates.between(pd.Timestamp.min, pd.Timestamp.max)
    dates = dates.where(holdable).astype("datetime64[ns]")
    # A time of day in a date column means the column is not what the contract says.
    return dates.where(~has_time_of_day(dates))


def _read_integers(raw: pd.Series, name: str) -> pd.Series:
    if ptypes.is_datetime64_any_dtype(raw) or ptypes.is_timedelta64_dtype(raw):
        _refuse_kind(raw, name, "a whole number")
        return pd.Series(pd.NA, index=raw.index, dtype="Int64")
    if ptypes.is_bool_dtype(raw) or ptypes.is_integer_dtype(raw):
        integers = raw.astype("Int64")
    else:
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        whole = (
            np.isfinite(numbers)
            & (numbers == np.floor(numbers))
            & (np.abs(numbers) < _LARGEST_INT64_AS_FLOAT)
        )
        values = np.where(whole, numbers, 0).astype("int64")
        integers = pd.Series(pd.arrays.IntegerArray(values, ~whole), index=raw.index)

    # A number its warehouse column cannot store (10**12 days past due) is no real value.
    low, high = _STORABLE_RANGES.get(name, INTEGER_RANGES["bigint"])
    return integers.where(((integers >= low) & (integers <= high)).fillna(False))


def _read_text(raw: pd.Series, name: str) -> pd.Series:
    if ptypes.is_numeric_dtype(raw) or ptypes.is_datetime64_any_dtype(raw):
        _refuse_kind(raw, name, "text")
        return pd.Series(pd.NA, index=raw.index, dtype="str")
    return raw.astype("str")


def _refuse_kind(raw: pd.Series, name: str, kind: str) -> None:
    if raw.notna().any():
        raise SourceSchemaError(
            f"Source column {name} has dtype {raw.dtype}, which cannot hold {kind}; it holds "
            f"{_first_values(raw)}. Check the source table's column types against the data "
            "contract."
        )


def _first_values(raw: pd.Series) -> list[object]:
    return raw.dropna().head(3).tolist()


def _broken_rules(
    raw_missing: pd.DataFrame,
    parsed: pd.DataFrame,
    parsed_missing: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    scale: BucketScale,
) -> dict[str, np.ndarray]:
    """For each rule, which rows break it. A rule that needs an NA value is not judged."""
    cycle = parsed["billing_cycle"]
    dpd = parsed["days_past_due"]
    known_dpd = dpd >= 0

    payment_days = (parsed["payment_date"] - parsed["due_date"]).dt.days.clip(lower=0)
    expected_delinquent = (dpd > 0).astype("Int64")
    broken = {
        "null_required": raw_missing[list(REQUIRED_COLUMNS)].any(axis=1),
        "unparseable_value": (parsed_missing & ~raw_missing).any(axis=1),
        "duplicate_key": _duplicate_keys(parsed),
        "billing_cycle_not_month_start": cycle.dt.day != 1,
        "billing_cycle_outside_partition": (cycle < start) | (cycle >= end),
        "negative_days_past_due": dpd < 0,
        "is_delinquent_mismatch": parsed["is_delinquent"] != expected_delinquent,
        "bucket_mismatch": known_dpd & (parsed["delinquency_bucket"] != bucket_for_dpd(dpd, scale)),
        "payment_days_mismatch": known_dpd & (dpd != payment_days.astype("Int64")),
    }
    return {rule: _judged(broken[rule], rule, parsed_missing) for rule in RULES}


def _judged(mask: pd.Series, rule: str, parsed_missing: pd.DataFrame) -> np.ndarray:
    # Comparisons with NA give NA (nullable) or True (`!=` on NaN); neither breaks a rule.
    known = ~parsed_missing[list(_RULE_INPUTS.get(rule, ()))].any(axis=1).to_numpy()
    return mask.fillna(False).to_numpy(dtype=bool) & known


def _duplicate_keys(parsed: pd.DataFrame) -> pd.Series:
    keys = parsed[["account_id", "billing_cycle"]]
    complete = keys.notna().all(axis=1)
    duplicated = keys[complete].duplicated(keep=False)
    return duplicated.reindex(parsed.index, fill_value=False)


def _to_conventions(valid: pd.DataFrame) -> pd.DataFrame:
    """Valid rows in the frame conventions: int64 integers, datetime64[ns] dates, str text."""
    return valid.astype(
        {
            "account_id": "int64",
            "billing_cycle": "datetime64[ns]",
            "due_date": "datetime64[ns]",
            "payment_date": "datetime64[ns]",
            "days_past_due": "int64",
            "delinquency_bucket": "str",
            "is_delinquent": "int64",
        }
    )


def _rejects(raw: pd.DataFrame, broken: dict[str, np.ndarray]) -> pd.DataFrame:
    pieces = []
    for rule, mask in broken.items():
        positions = np.flatnonzero(mask)
        piece = raw.iloc[positions].copy()
        piece.insert(0, "rule", rule)
        piece.insert(0, "source_row", positions.astype("int64"))
        pieces.append(piece)

    non_empty = [piece for piece in pieces if len(piece)] or pieces[:1]
    rejects = pd.concat(non_empty, ignore_index=True)
    rule_order = rejects["rule"].map({rule: order for order, rule in enumerate(RULES)})
    order = np.lexsort((rule_order.to_numpy(), rejects["source_row"].to_numpy()))
    rejects = rejects.iloc[order].reset_index(drop=True)
    return rejects.astype({"source_row": "int64", "rule": "str"})


def _describe_row(reject: pd.Series) -> str:
    values = ", ".join(f"{name}={_value_text(reject[name])}" for name in SOURCE_COLUMN_NAMES)
    return f"row {reject['source_row']}: {values}"


def _value_text(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "NULL"
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return str(value.date())
    return str(value)


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _month_text(month: date | pd.Timestamp | str) -> str:
    if isinstance(month, str):
        return month
    return pd.Timestamp(month).strftime("%Y-%m")
