"""Behaviour features and delinquency runs of each account as of a month T.

Everything is computed on arrays: accounts are coded 0..n-1 once, window totals are
`np.bincount` sums over those codes, and runs come from one sort of the delinquent rows.
The snapshot must hold at most one row per (account_id, billing_cycle), as the source contract
guarantees; the functions refuse a snapshot that does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from credit_risk_assets.tables import ACCOUNT_FEATURES, STREAKS

SNAPSHOT_COLUMNS = ("account_id", "billing_cycle", "days_past_due", "is_delinquent")
SEVERE_DPD = 60  # more than this is a severe cycle
DEFAULT_LIKE_DPD = 90  # at least this is a default-like cycle
RECENT_MONTHS = 3

_NS_PER_DAY = 86_400 * 10**9
_EPOCH_MONTH = 1970 * 12


class SnapshotKeyError(ValueError):
    """The snapshot holds an (account_id, billing_cycle) more than once."""


def month_number(dates: pd.Series) -> np.ndarray:
    """Running month count of each date (year * 12 + month - 1); dates of one month share it."""
    stamps = pd.Series(dates)
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        stamps = pd.to_datetime(stamps)
    values = stamps.to_numpy(dtype="datetime64[ns]")
    if np.isnat(values).any():
        raise ValueError(
            f"{int(np.isnat(values).sum())} date(s) are missing; every snapshot row needs a "
            "billing_cycle. Validate the snapshot with the source contract first."
        )
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)

    # Calendar arithmetic on a table of the few distinct days is much faster than per row.
    days = values.view(np.int64) // _NS_PER_DAY
    first_day = int(days.min())
    day_span = np.arange(first_day, int(days.max()) + 1).astype("datetime64[D]")
    month_of_day = day_span.astype("datetime64[M]").astype(np.int64) + _EPOCH_MONTH
    return month_of_day[days - first_day]


def month_start(number: int) -> pd.Timestamp:
    """The first day of the month with this running month count."""
    return pd.Timestamp(year=number // 12, month=number % 12 + 1, day=1)


def as_of_month_numbers(as_of_months: Sequence[date | pd.Timestamp | str]) -> list[int]:
    """Distinct as-of months as running month counts, ascending; each must be a first of month."""
    stamps = [pd.Timestamp(month) for month in as_of_months]
    not_months = [str(stamp) for stamp in stamps if stamp.day != 1 or stamp != stamp.normalize()]
    if not_months:
        raise ValueError(
            f"As-of month(s) {', '.join(not_months)} are not the first day of a month; pass "
            "months as their first day, for example 2024-03-01."
        )
    return sorted({stamp.year * 12 + stamp.month - 1 for stamp in stamps})


@dataclass(frozen=True)
class SnapshotRows:
    """Snapshot rows as parallel arrays; `codes` index `account_ids`, which ascend.

    `by_month` says the rows are in month order (as the warehouse returns them), which lets a
    window of months be a slice instead of a copy.
    """

    account_ids: np.ndarray
    codes: np.ndarray
    months: np.ndarray
    days_past_due: np.ndarray
    is_delinquent: np.ndarray
    by_month: bool = False

    @classmethod
    def from_frame(cls, snapshot: pd.DataFrame, last_month: int | None = None) -> SnapshotRows:
        """The rows of months up to `last_month` (all when None), accounts coded."""
        missing = [name for name in SNAPSHOT_COLUMNS if name not in snapshot.columns]
        if missing:
            raise ValueError(
                f"Snapshot frame lacks column(s) {', '.join(missing)}; pass the "
                "delinquency_snapshot table, which has them."
            )
        months = month_number(snapshot["billing_cycle"])
        keep: slice | np.ndarray = slice(None)
        if last_month is not None and months.max(initial=last_month) > last_month:
            keep = months <= last_month

        codes, account_ids = _code_accounts(snapshot["account_id"].to_numpy(np.int64)[keep])
        months = months[keep]
        rows = cls(
            account_ids=account_ids,
            codes=codes,
            months=months,
            days_past_due=snapshot["days_past_due"].to_numpy(np.int64)[keep],
            is_delinquent=snapshot["is_delinquent"].to_numpy(np.int64)[keep],
            by_month=bool(np.all(months[1:] >= months[:-1])),
        )
        rows.require_unique_keys()
        return rows

    @property
    def account_count(self) -> int:
        """Accounts coded, with or without rows in this selection."""
        return len(self.account_ids)

    def select(self, picked: slice | np.ndarray) -> SnapshotRows:
        """The rows picked by a slice or boolean mask (order kept) or an index array."""
        keeps_order = isinstance(picked, slice) or picked.dtype == bool
        return SnapshotRows(
            account_ids=self.account_ids,
            codes=self.codes[picked],
            months=self.months[picked],
            days_past_due=self.days_past_due[picked],
            is_delinquent=self.is_delinquent[picked],
            by_month=self.by_month and keeps_order,
        )

    def in_months(self, first: int | None, last: int) -> SnapshotRows:
        """The rows of months first..last (both included; no lower end when first is None)."""
        if self.by_month:
            start = 0 if first is None else np.searchsorted(self.months, first, side="left")
            stop = np.searchsorted(self.months, last, side="right")
            return self.select(slice(int(start), int(stop)))

        mask = self.months <= last
        if first is not None:
            mask &= self.months >= first
        return self if mask.all() else self.select(mask)

    def per_account(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Rows (or the sum of `weights`) of each coded account."""
        return np.bincount(self.codes, weights=weights, minlength=self.account_count)

    def rows_where(self, condition: np.ndarray) -> np.ndarray:
        """Rows of each coded account where `condition` holds."""
        return np.bincount(self.codes[condition], minlength=self.account_count)

    def require_unique_keys(self) -> None:
        """Refuse rows that repeat an (account, month): every total would count them twice."""
        if self.codes.size == 0:
            return
        first = int(self.months.min())
        span = int(self.months.max()) - first + 1
        keys = self.codes.astype(np.int64) * span + (self.months - first)
        if self.account_count * span <= 4 * keys.size:
            repeated = np.flatnonzero(np.bincount(keys) > 1)
        else:
            repeated = pd.unique(keys[pd.Series(keys).duplicated().to_numpy()])
        if repeated.size:
            key = int(repeated[0])
            raise SnapshotKeyError(
                f"The snapshot holds {repeated.size} (account_id, billing_cycle) pair(s) more "
                f"than once, for example account {self.account_ids[key // span]} in "
                f"{month_start(first + key % span).date()}. Pass a snapshot that kept the "
                "source contract (one row per account and billing cycle)."
            )


@dataclass(frozen=True)
class WindowTotals:
    """Totals of each account with at least one row in a window; arrays align with `codes`."""

    codes: np.ndarray
    rows: np.ndarray
    dpd_sum: np.ndarray
    dpd_max: np.ndarray
    delinquent_rows: np.ndarray
    severe_rows: np.ndarray
    default_like_rows: np.ndarray


def window_totals(window: SnapshotRows) -> WindowTotals:
    """Row counts, DPD sum and max, delinquent, severe and default-like cycles per account."""
    rows = window.per_account()
    codes = np.flatnonzero(rows)

    dpd_max = np.full(window.account_count, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(dpd_max, window.codes, window.days_past_due)

    return WindowTotals(
        codes=codes,
        rows=rows[codes],
        dpd_sum=window.per_account(window.days_past_due)[codes].astype(np.int64),
        dpd_max=dpd_max[codes],
        delinquent_rows=window.rows_where(window.is_delinquent == 1)[codes],
        severe_rows=window.rows_where(window.days_past_due > SEVERE_DPD)[codes],
        default_like_rows=window.rows_where(window.days_past_due >= DEFAULT_LIKE_DPD)[codes],
    )


def window_start(as_of: int, lookback_months: int) -> int | None:
    """First month of the lookback window ending at `as_of`; None for all history."""
    return as_of - lookback_months + 1 if lookback_months else None


def require_lookback(lookback_months: int) -> None:
    """Refuse a negative lookback: 0 means all history, a positive number that many months."""
    if lookback_months < 0:
        raise ValueError(
            f"lookback_months={lookback_months} is negative: use 0 for all history or a "
            "positive number of months."
        )


def account_features(
    snapshot: pd.DataFrame,
    as_of_months: Sequence[date | pd.Timestamp | str],
    lookback_months: int,
) -> pd.DataFrame:
    """Features of every account with a row in the lookback window of each as-of month T.

    The window is the `lookback_months` months ending at T (all history up to T when 0).
    recent_avg_dpd_3m averages the window's rows of months T-2..T, so a window shorter than
    three months shortens it too. Rows after T are ignored. Sorted by (as_of_month, account_id).
    """
    require_lookback(lookback_months)
    months = as_of_month_numbers(as_of_months)
    if not months:
        return _empty(ACCOUNT_FEATURES.column_names, _FEATURE_DTYPES)

    rows = SnapshotRows.from_frame(snapshot, last_month=months[-1])
    frames = [_features_as_of(rows, month, lookback_months) for month in months]
    return pd.concat(frames, ignore_index=True)


def account_streaks(
    snapshot: pd.DataFrame,
    as_of_months: Sequence[date | pd.Timestamp | str],
    lookback_months: int,
) -> pd.DataFrame:
    """Delinquency runs of every account with a row in the lookback window of each T.

    A run is a stretch of delinquent cycles in consecutive calendar months: a month without a
    row ends it, as does the window's edge. delinquency_streak is the longest run in the window,
    current_streak the run that ends at T (0 when T has no row or is not delinquent).
    """
    require_lookback(lookback_months)
    months = as_of_month_numbers(as_of_months)
    if not months:
        return _empty(STREAKS.column_names, _STREAK_DTYPES)

    rows = SnapshotRows.from_frame(snapshot, last_month=months[-1])
    delinquent = _sorted_by_account_month(rows.select(rows.is_delinquent == 1))
    frames = []
    for month in months:
        first = window_start(month, lookback_months)
        population = np.flatnonzero(rows.in_months(first, month).per_account())
        longest, current = _runs(delinquent.in_months(first, month), month)
        frames.append(
            pd.DataFrame(
                {
                    "as_of_month": as_of_column(month, population.size),
                    "account_id": rows.account_ids[population],
                    "delinquency_streak": longest[population],
                    "current_streak": current[population],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _features_as_of(rows: SnapshotRows, month: int, lookback_months: int) -> pd.DataFrame:
    first = window_start(month, lookback_months)
    window = rows.in_months(first, month)
    totals = window_totals(window)

    recent_first = month - RECENT_MONTHS + 1
    if first is not None:
        recent_first = max(first, recent_first)
    recent = window.in_months(recent_first, month)
    recent_rows = recent.per_account()[totals.codes]
    recent_sum = recent.per_account(recent.days_past_due)[totals.codes]
    recent_avg = np.divide(
        recent_sum, recent_rows, out=np.zeros(totals.codes.size), where=recent_rows > 0
    )

    return pd.DataFrame(
        {
            "as_of_month": as_of_column(month, totals.codes.size),
            "account_id": rows.account_ids[totals.codes],
            "avg_dpd": totals.dpd_sum / totals.rows,
            "max_dpd": totals.dpd_max,
            "delinquency_ratio": totals.delinquent_rows / totals.rows,
            "severe_delinquency_count": totals.severe_rows,
            "default_like_cycles": totals.default_like_rows,
            "recent_avg_dpd_3m": recent_avg,
            "months_observed": totals.rows,
            "current_dpd": _current_dpd(window.in_months(month, month), totals.codes),
        }
    )


def _current_dpd(rows_at_month: SnapshotRows, codes: np.ndarray) -> pd.arrays.IntegerArray:
    dpd = np.zeros(rows_at_month.account_count, dtype=np.int64)
    present = np.zeros(rows_at_month.account_count, dtype=bool)
    dpd[rows_at_month.codes] = rows_at_month.days_past_due
    present[rows_at_month.codes] = True
    return pd.arrays.IntegerArray(dpd[codes], ~present[codes])


def _sorted_by_account_month(rows: SnapshotRows) -> SnapshotRows:
    if rows.codes.size == 0:
        return rows
    first = int(rows.months.min())
    span = int(rows.months.max()) - first + 1
    order = np.argsort(rows.codes.astype(np.int64) * span + (rows.months - first))
    return rows.select(order)


def _runs(delinquent: SnapshotRows, month: int) -> tuple[np.ndarray, np.ndarray]:
    """Longest run and run ending at `month` per account, from delinquent rows in key order."""
    longest = np.zeros(delinquent.account_count, dtype=np.int64)
    current = np.zeros(delinquent.account_count, dtype=np.int64)
    if delinquent.codes.size == 0:
        return longest, current

    codes, months = delinquent.codes, delinquent.months
    starts = np.ones(codes.size, dtype=bool)
    starts[1:] = (codes[1:] != codes[:-1]) | (months[1:] != months[:-1] + 1)
    lengths = np.bincount(np.cumsum(starts) - 1)
    run_codes = codes[starts]
    last_months = months[np.append(starts[1:], True)]

    np.maximum.at(longest, run_codes, lengths)
    ending_now = last_months == month
    current[run_codes[ending_now]] = lengths[ending_now]
    return longest, current


def _code_accounts(account_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..n-1 of each row's account, numbered in ascending account_id, and the ids."""
    if account_ids.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    low = int(account_ids.min())
    span = int(account_ids.max()) - low + 1

    # A dense lookup table beats hashing when ids are not much sparser than the rows.
    if span <= 4 * account_ids.size:
        seen = np.zeros(span, dtype=bool)
        seen[account_ids - low] = True
        code_of = np.cumsum(seen, dtype=np.intp) - 1
        return code_of[account_ids - low], np.flatnonzero(seen).astype(np.int64) + low
    codes, uniques = pd.factorize(account_ids, sort=True)
    return codes.astype(np.intp), np.asarray(uniques, dtype=np.int64)


def as_of_column(month: int, length: int) -> np.ndarray:
    """An as_of_month column of `length` rows for the month with this running count."""
    return np.full(length, month_start(month).to_datetime64(), dtype="datetime64[ns]")


_FEATURE_DTYPES = {
    "as_of_month": "datetime64[ns]",
    "account_id": "int64",
    "avg_dpd": "float64",
    "max_dpd": "int64",
    "delinquency_ratio": "float64",
    "severe_delinquency_count": "int64",
    "default_like_cycles": "int64",
    "recent_avg_dpd_3m": "float64",
    "months_observed": "int64",
    "current_dpd": "Int64",
}
_STREAK_DTYPES = {
    "as_of_month": "datetime64[ns]",
    "account_id": "int64",
    "delinquency_streak": "int64",
    "current_streak": "int64",
}


def _empty(columns: Sequence[str], dtypes: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtypes[name]) for name in columns})
