"""Synthetic delinquency snapshots for tests, consistent with the source contract.

Accounts move between delinquency levels month by month; some start after the first month,
some stop before the last, some skip months, some leave cycles unpaid and some reach 90+ DPD.
The bucket is worked out here on its own, not with the package's bucket function, so that
tests of that function compare against something independent.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from credit_risk_assets.tables import SOURCE_COLUMNS

# Days-past-due range of each delinquency level: on time, mild, moderate, severe, default.
LEVEL_DPD_RANGES = ((0, 0), (1, 30), (31, 60), (61, 89), (90, 150))
TOP_LEVEL = len(LEVEL_DPD_RANGES) - 1


def bucket_of(days_past_due: np.ndarray) -> np.ndarray:
    """The default-scale bucket name of each days-past-due value."""
    return np.select(
        [days_past_due >= 90, days_past_due >= 61, days_past_due >= 31, days_past_due >= 1],
        ["Default", "Severe", "Moderate", "Mild"],
        default="On-Time",
    )


def make_snapshot(
    accounts: int = 60,
    months: int = 12,
    first_month: date | str = "2024-01-01",
    seed: int = 0,
    gap_rate: float = 0.1,
    late_start_rate: float = 0.2,
    early_stop_rate: float = 0.2,
    first_account_id: int = 1001,
    account_id_step: int = 7,
    shuffle: bool = True,
) -> pd.DataFrame:
    """A snapshot frame in the frame conventions, rows shuffled unless `shuffle` is False.

    gap_rate is the chance that an account has no row in a month between its first and last;
    with gap_rate 0 every account's months are consecutive.
    """
    rng = np.random.default_rng(seed)
    levels = _levels(rng, accounts, months)
    present = _presence(rng, accounts, months, gap_rate, late_start_rate, early_stop_rate)

    account_index, month_index = np.nonzero(present)
    level = levels[account_index, month_index]
    low = np.array([dpd_range[0] for dpd_range in LEVEL_DPD_RANGES])[level]
    high = np.array([dpd_range[1] for dpd_range in LEVEL_DPD_RANGES])[level]
    # A third of the values sit on a bucket edge (30/31, 60/61, 89/90), where rules flip.
    on_edge = rng.random(level.size) < 0.3
    edge = np.where(rng.random(level.size) < 0.5, low, high)
    days_past_due = np.where(on_edge, edge, rng.integers(low, high + 1))

    cycles = pd.date_range(pd.Timestamp(first_month), periods=months, freq="MS")
    billing_cycle = cycles.to_numpy(dtype="datetime64[ns]")[month_index]
    due_date = billing_cycle + _days(rng.integers(14, 25, size=level.size))
    payment_date = _payment_dates(rng, due_date, days_past_due)

    frame = pd.DataFrame(
        {
            "account_id": (first_account_id + account_id_step * account_index).astype(np.int64),
            "billing_cycle": billing_cycle,
            "due_date": due_date,
            "payment_date": payment_date,
            "days_past_due": days_past_due.astype(np.int64),
            "delinquency_bucket": pd.Series(bucket_of(days_past_due), dtype="str"),
            "is_delinquent": (days_past_due > 0).astype(np.int64),
        }
    )[[column.name for column in SOURCE_COLUMNS]]
    if shuffle:
        frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    return frame


def _levels(rng: np.random.Generator, accounts: int, months: int) -> np.ndarray:
    """Delinquency level of each account in each month, a Markov chain driven by a latent risk."""
    risk = rng.beta(1.3, 5.0, size=accounts)
    levels = np.zeros((accounts, months), dtype=np.int64)
    levels[:, 0] = (rng.random(accounts) < risk).astype(np.int64)
    for month in range(1, months):
        previous = levels[:, month - 1]
        draw = rng.random(accounts)
        falls_behind = draw < risk + 0.15
        cures = draw > 1 - 0.5 * (1 - risk)
        moved = np.where(falls_behind, np.minimum(previous + 1, TOP_LEVEL), previous)
        moved = np.where(cures, 0, moved)
        starts_late = (previous == 0) & (draw < risk)
        levels[:, month] = np.where(previous == 0, starts_late.astype(np.int64), moved)
    return levels


def _presence(
    rng: np.random.Generator,
    accounts: int,
    months: int,
    gap_rate: float,
    late_start_rate: float,
    early_stop_rate: float,
) -> np.ndarray:
    """Which account has a row in which month: late starts, early stops and gaps between."""
    first = np.where(
        rng.random(accounts) < late_start_rate, rng.integers(0, months, size=accounts), 0
    )
    stops_early = rng.random(accounts) < early_stop_rate
    last = np.where(stops_early, rng.integers(first, months), months - 1)

    month = np.arange(months)
    active = (month >= first[:, None]) & (month <= last[:, None])
    kept = rng.random((accounts, months)) >= gap_rate
    kept[np.arange(accounts), first] = True
    return active & kept


def _payment_dates(
    rng: np.random.Generator, due_date: np.ndarray, days_past_due: np.ndarray
) -> np.ndarray:
    """On-time cycles are paid before the due date; late ones paid dpd days late, or unpaid."""
    early_days = rng.integers(0, 6, size=due_date.size)
    paid_late = rng.random(due_date.size) < 0.6
    payment_date = np.where(
        days_past_due == 0, due_date - _days(early_days), due_date + _days(days_past_due)
    )
    unpaid = (days_past_due > 0) & ~paid_late
    return np.where(unpaid, np.datetime64("NaT", "ns"), payment_date).astype("datetime64[ns]")


def _days(count: np.ndarray) -> np.ndarray:
    return count.astype("timedelta64[D]").astype("timedelta64[ns]")


def histories(snapshot: pd.DataFrame) -> dict[int, dict[int, tuple[int, int]]]:
    """account_id -> running month count -> (days_past_due, is_delinquent), read row by row.

    A plain-Python view of a snapshot for brute-force references in tests.
    """
    by_account: dict[int, dict[int, tuple[int, int]]] = {}
    for row in snapshot.itertuples(index=False):
        month = row.billing_cycle.year * 12 + row.billing_cycle.month - 1
        rows = by_account.setdefault(int(row.account_id), {})
        rows[month] = (int(row.days_past_due), int(row.is_delinquent))
    return by_account


def month_count(month: date | str) -> int:
    """Running month count (year * 12 + month - 1) of a month, computed without the package."""
    stamp = pd.Timestamp(month)
    return stamp.year * 12 + stamp.month - 1


def first_of_month(count: int) -> pd.Timestamp:
    """First day of the month with this running month count."""
    return pd.Timestamp(year=count // 12, month=count % 12 + 1, day=1)
