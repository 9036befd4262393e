"""Default labels: the behavioural default flag over a window of each account's rows.

Forward labels look at the performance window (T, T+H] of accounts seen at T and not yet in
default, and are computed only for mature months, whose window lies wholly in the past.
Notebook labels look at the same lookback rows the features come from, as the notebook did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from credit_risk_assets.compute.features import (
    SnapshotRows,
    WindowTotals,
    as_of_column,
    as_of_month_numbers,
    month_start,
    require_lookback,
    window_start,
    window_totals,
)
from credit_risk_assets.tables import DEFAULT_FLAGS

IN_DEFAULT_DPD = 90  # an account at this DPD or more at T is already in default


@dataclass(frozen=True)
class DefaultRule:
    """The behavioural default proxy: meeting any one threshold in a window flags a default."""

    min_default_like_cycles: int = 1
    min_max_dpd: int = 90
    min_delinquency_ratio: float = 0.6

    def flag(
        self,
        default_like_cycles: np.ndarray | pd.Series,
        max_dpd: np.ndarray | pd.Series,
        delinquency_ratio: np.ndarray | pd.Series,
    ) -> np.ndarray:
        """1 where any threshold is met, else 0 (int64)."""
        flagged = (
            (np.asarray(default_like_cycles) >= self.min_default_like_cycles)
            | (np.asarray(max_dpd) >= self.min_max_dpd)
            | (np.asarray(delinquency_ratio) >= self.min_delinquency_ratio)
        )
        return flagged.astype(np.int64)


class ImmatureMonthError(ValueError):
    """A label was asked for an as-of month whose performance window is not yet complete."""

    def __init__(
        self, month: pd.Timestamp, last_mature: pd.Timestamp, horizon_months: int, today: date
    ) -> None:
        self.month = month
        self.last_mature = last_mature
        window_end = month + pd.DateOffset(months=horizon_months)
        matures = month + pd.DateOffset(months=horizon_months + 1)
        super().__init__(
            f"As-of month {month:%Y-%m} is not mature for a {horizon_months}-month performance "
            f"window: the window runs to {window_end:%Y-%m}, which is not a complete month "
            f"before today ({pd.Timestamp(today).date()}). The last mature month is "
            f"{last_mature:%Y-%m}; label months up to it, or wait until {matures:%Y-%m}."
        )


def last_mature_month(today: date, horizon_months: int) -> pd.Timestamp:
    """The latest as-of month T whose months T+1..T+H all ended before today's month began."""
    if horizon_months < 0:
        raise ValueError(
            f"horizon_months={horizon_months} is negative: use 1 or more months (0 is "
            "notebook mode, which has no performance window)."
        )
    stamp = pd.Timestamp(today)
    current_month = stamp.year * 12 + stamp.month - 1
    return month_start(current_month - 1 - horizon_months)


def forward_labels(
    snapshot: pd.DataFrame,
    as_of_months: Sequence[date | pd.Timestamp | str],
    horizon_months: int,
    rule: DefaultRule,
    today: date,
) -> pd.DataFrame:
    """Default labels of each as-of month T over the performance window (T, T+H].

    The population of T is the accounts with a row in T at less than 90 DPD; an account with
    no row in the performance window is left out. Raises ImmatureMonthError for any T after
    last_mature_month(today, H) rather than label from a partial window.
    """
    if horizon_months < 1:
        raise ValueError(
            f"horizon_months={horizon_months}: forward labels need a performance window of 1 "
            "or more months; use notebook_labels for notebook mode (horizon 0)."
        )
    months = as_of_month_numbers(as_of_months)
    _require_mature(months, horizon_months, today)
    if not months:
        return _empty_labels()

    rows = SnapshotRows.from_frame(snapshot, last_month=months[-1] + horizon_months)
    frames = [_forward_labels_of(rows, month, horizon_months, rule) for month in months]
    return pd.concat(frames, ignore_index=True)


def notebook_labels(
    snapshot: pd.DataFrame,
    as_of_months: Sequence[date | pd.Timestamp | str],
    lookback_months: int,
    rule: DefaultRule,
) -> pd.DataFrame:
    """Notebook-mode labels: the flag over the same lookback rows the features of T use.

    The population is every account with a row in the lookback window of T (all history up to
    T when lookback_months is 0), and the perf_* columns describe those rows.
    """
    require_lookback(lookback_months)
    months = as_of_month_numbers(as_of_months)
    if not months:
        return _empty_labels()

    rows = SnapshotRows.from_frame(snapshot, last_month=months[-1])
    frames = []
    for month in months:
        window = rows.in_months(window_start(month, lookback_months), month)
        frames.append(_label_frame(month, rows.account_ids, window_totals(window), rule))
    return pd.concat(frames, ignore_index=True)


def _require_mature(months: list[int], horizon_months: int, today: date) -> None:
    last_mature = last_mature_month(today, horizon_months)
    last_mature_number = last_mature.year * 12 + last_mature.month - 1
    immature = [month for month in months if month > last_mature_number]
    if immature:
        raise ImmatureMonthError(month_start(immature[0]), last_mature, horizon_months, today)


def _forward_labels_of(
    rows: SnapshotRows, month: int, horizon_months: int, rule: DefaultRule
) -> pd.DataFrame:
    at_month = rows.in_months(month, month)
    in_population = np.zeros(rows.account_count, dtype=bool)
    in_population[at_month.codes[at_month.days_past_due < IN_DEFAULT_DPD]] = True

    performance = rows.in_months(month + 1, month + horizon_months)
    performance = performance.select(in_population[performance.codes])
    return _label_frame(month, rows.account_ids, window_totals(performance), rule)


def _label_frame(
    month: int, account_ids: np.ndarray, totals: WindowTotals, rule: DefaultRule
) -> pd.DataFrame:
    delinquency_ratio = totals.delinquent_rows / totals.rows
    return pd.DataFrame(
        {
            "as_of_month": as_of_column(month, totals.codes.size),
            "account_id": account_ids[totals.codes],
            "default_flag": rule.flag(totals.default_like_rows, totals.dpd_max, delinquency_ratio),
            "perf_months_observed": totals.rows,
            "perf_max_dpd": totals.dpd_max,
            "perf_delinquency_ratio": delinquency_ratio,
            "perf_default_like_cycles": totals.default_like_rows,
        }
    )[list(DEFAULT_FLAGS.column_names)]


def _empty_labels() -> pd.DataFrame:
    dtypes = {
        "as_of_month": "datetime64[ns]",
        "perf_delinquency_ratio": "float64",
    }
    return pd.DataFrame(
        {name: pd.Series(dtype=dtypes.get(name, "int64")) for name in DEFAULT_FLAGS.column_names}
    )
