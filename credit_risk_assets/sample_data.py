"""Synthetic delinquency snapshots with real signal, and the writer that loads them as a source.

Each account carries a latent risk drawn once (lognormal across accounts). Month by month its
delinquency state moves as a Markov chain over 0 current, 1 (1-30 days past due), 2 (31-60),
3 (61-89) and 4 (90+): riskier accounts roll forward more often, delinquent accounts cure back to
current, and 90+ is sticky. Past delinquency therefore predicts default in the months that
follow, which is what a forward-looking PD model has to learn.

The rows obey the source contract of DESIGN.md section 2. Some accounts open during the period,
some close before its end, some miss a month in between, and cycles whose payment would land
after the extraction day (the latest cycle's due date), or that are 90+ days past due, are
unpaid.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from credit_risk_assets import tables
from credit_risk_assets.compute.contract import DEFAULT_BUCKET_SCALE, bucket_for_dpd
from credit_risk_assets.settings import DEFAULT_SOURCE_TABLE
from credit_risk_assets.warehouse.database import WarehouseDatabase

logger = logging.getLogger(__name__)

DUE_DAYS_AFTER_CYCLE = 18
TABLE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# Months the chain runs before the first output month, so that the first month already holds
# accounts in every state instead of a book where everyone is current.
BURN_IN_MONTHS = 6

# Spread of the latent risk: exp(N(-sigma^2 / 2, sigma)), mean 1, a long tail of risky accounts.
RISK_SIGMA = 1.0

# Monthly transition of each state (index = state). The chance to roll one state forward is
# ROLL_RATE * risk (capped); of the rest, a share cures to current and a share steps back one.
ROLL_RATE = np.array([0.06, 0.35, 0.45, 0.60, 0.0])
MAX_ROLL = 0.95
CURE_SHARE = np.array([0.0, 0.50, 0.30, 0.15, 0.03])
STEP_BACK_SHARE = np.array([0.0, 0.0, 0.20, 0.20, 0.0])

# Monthly chance that an account 90+ days past due is written off: this is its last cycle.
CHARGE_OFF_RATE = 0.15

# days_past_due drawn uniformly in [low, low + width) within the state's range.
STATE_DPD_LOW = np.array([0, 1, 31, 61, 90])
STATE_DPD_WIDTH = np.array([1, 30, 30, 29, 90])

# On-time cycles are paid up to this many days before the due date.
MAX_DAYS_PAID_EARLY = 10

LATE_START_SHARE = 0.10
EARLY_CLOSE_SHARE = 0.08
GAP_SHARE = 0.05


class SampleDataError(ValueError):
    """An argument of the sample-data generator or writer cannot be used."""


def generate_snapshot(
    accounts: int = 1000,
    months: int = 12,
    end_month: date | None = None,
    seed: int = 7,
) -> pd.DataFrame:
    """A synthetic source snapshot: one row per account and billing cycle, ids 1..accounts.

    The months run from `months - 1` months before `end_month` (default: this month) to
    `end_month`. The same seed gives the same frame. Rows are ordered by billing_cycle, then
    account_id, the order of the source table's primary key.
    """
    first_cycle = _first_cycle(_check_arguments(accounts, months, end_month), months)
    rng = np.random.default_rng(seed)

    risk = rng.lognormal(mean=-(RISK_SIGMA**2) / 2, sigma=RISK_SIGMA, size=accounts)
    first_index, last_index, gap_index = _lifecycles(rng, accounts, months)
    state = _burned_in_states(rng, risk)

    parts = []
    for month_index in range(months):
        state = _next_states(rng, state, risk)
        # Accounts opened during the period start current in their first month.
        state[(first_index > 0) & (month_index <= first_index)] = 0
        present = (first_index <= month_index) & (month_index <= last_index)
        present &= gap_index != month_index
        last_index = _charge_off(rng, state, present, last_index, month_index)
        cycle = first_cycle + np.timedelta64(month_index, "M")
        parts.append(_month_rows(rng, cycle, state, present))

    return _snapshot_frame(parts, first_cycle + np.timedelta64(months - 1, "M"))


def write_source_table(
    url: str,
    frame: pd.DataFrame,
    table: str = DEFAULT_SOURCE_TABLE,
    *,
    replace: bool = True,
) -> int:
    """Write a snapshot frame into `table` at the SQLAlchemy `url`; return the rows written.

    The table is created from the declared source schema (primary key billing_cycle,
    account_id). With `replace` an existing table of that name is dropped first; without it the
    rows are appended to the existing table. The rows go through the warehouse's bulk write
    (LOAD DATA LOCAL INFILE on MySQL where the server allows it).
    """
    _check_table_name(table)
    _require_source_columns(frame)
    _make_sqlite_folder(sa.make_url(url))
    database = WarehouseDatabase(url)
    try:
        row_count = database.load_table(
            tables.DELINQUENCY_SNAPSHOT, frame, name=table, replace=replace
        )
    finally:
        database.dispose()

    logger.info("Wrote %d sample rows into table %s at %s", row_count, table, database.redacted_url)
    return row_count


def _check_arguments(accounts: int, months: int, end_month: date | None) -> date:
    """Validate the generator's arguments and return the last billing month."""
    if accounts < 1:
        raise SampleDataError(f"accounts={accounts} is too small: ask for 1 account or more.")
    if months < 1:
        raise SampleDataError(f"months={months} is too small: ask for 1 month or more.")
    if end_month is None:
        return date.today().replace(day=1)

    end = pd.Timestamp(end_month)
    if end != end.normalize() or end.day != 1:
        raise SampleDataError(
            f"end_month={end_month!r} is not the first day of a month: pass the month's first "
            f"day, for example {end.date().replace(day=1).isoformat()}."
        )
    return end.date()


def _first_cycle(end_month: date, months: int) -> np.datetime64:
    """The first billing month of the period, as a numpy month."""
    return np.datetime64(end_month, "M") - np.timedelta64(months - 1, "M")


def _lifecycles(
    rng: np.random.Generator, accounts: int, months: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of each account's first and last month, and of its missing month (-1 for none)."""
    draws = rng.random((6, accounts))

    starts_late = (draws[0] < LATE_START_SHARE) & (months > 1)
    first = np.where(starts_late, 1 + np.floor(draws[1] * (months - 1)), 0).astype(np.int64)

    closes_early = (draws[2] < EARLY_CLOSE_SHARE) & (months > 1)
    last = np.where(closes_early, np.floor(draws[3] * (months - 1)), months - 1).astype(np.int64)
    last = np.maximum(last, first)

    # A gap needs a month on each side of it, so only spans of three months or more get one.
    span = last - first
    has_gap = (draws[4] < GAP_SHARE) & (span >= 2)
    gap = np.where(has_gap, first + 1 + np.floor(draws[5] * (span - 1)), -1).astype(np.int64)
    return first, last, gap


def _burned_in_states(rng: np.random.Generator, risk: np.ndarray) -> np.ndarray:
    """States of every account after the burn-in months, starting from all current."""
    state = np.zeros(len(risk), dtype=np.int64)
    for _ in range(BURN_IN_MONTHS):
        state = _next_states(rng, state, risk)
    return state


def _next_states(rng: np.random.Generator, state: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """One month of the delinquency chain for every account at once."""
    draw = rng.random(len(state))

    roll = np.minimum(ROLL_RATE[state] * risk, MAX_ROLL)
    cure = (1.0 - roll) * CURE_SHARE[state]
    step_back = (1.0 - roll) * STEP_BACK_SHARE[state]

    return np.select(
        [draw < roll, draw < roll + cure, draw < roll + cure + step_back],
        [state + 1, 0, state - 1],
        default=state,
    )


def _charge_off(
    rng: np.random.Generator,
    state: np.ndarray,
    present: np.ndarray,
    last_index: np.ndarray,
    month_index: int,
) -> np.ndarray:
    """Last month index of each account once some 90+ accounts are written off this month."""
    draw = rng.random(len(state))
    written_off = present & (state == 4) & (draw < CHARGE_OFF_RATE)
    return np.where(written_off, np.minimum(last_index, month_index), last_index)


def _month_rows(
    rng: np.random.Generator, cycle: np.datetime64, state: np.ndarray, present: np.ndarray
) -> dict[str, np.ndarray]:
    """Account ids, days past due and payment day (relative to due) of one billing month."""
    # Every account draws, present or not, so an account's numbers do not depend on the others.
    draws = rng.random((2, len(state)))

    dpd = STATE_DPD_LOW[state] + np.floor(draws[0] * STATE_DPD_WIDTH[state]).astype(np.int64)
    days_early = np.floor(draws[1] * (MAX_DAYS_PAID_EARLY + 1)).astype(np.int64)
    payment_offset = np.where(dpd > 0, dpd, -days_early)

    account_ids = np.flatnonzero(present).astype(np.int64) + 1
    return {
        "account_id": account_ids,
        "billing_cycle": np.full(len(account_ids), cycle.astype("datetime64[D]")),
        "days_past_due": dpd[present],
        "payment_offset": payment_offset[present],
    }


def _snapshot_frame(parts: list[dict[str, np.ndarray]], last_cycle: np.datetime64) -> pd.DataFrame:
    """Stack the months into the source frame, with dates, unpaid cycles and buckets."""
    stacked = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    dpd = stacked["days_past_due"]
    one_day = np.timedelta64(1, "D")

    billing_cycle = stacked["billing_cycle"].astype("datetime64[ns]")
    due_date = billing_cycle + DUE_DAYS_AFTER_CYCLE * one_day
    payment_date = due_date + stacked["payment_offset"] * one_day

    # Extraction happens on the latest cycle's due date: later payments have not happened yet,
    # and cycles 90+ days past due are in collections, never paid.
    extraction_day = last_cycle.astype("datetime64[ns]") + DUE_DAYS_AFTER_CYCLE * one_day
    payment_date[(payment_date > extraction_day) | (dpd >= 90)] = np.datetime64("NaT")

    columns = {
        "account_id": stacked["account_id"],
        "billing_cycle": billing_cycle,
        "due_date": due_date,
        "payment_date": payment_date,
        "days_past_due": dpd,
        "delinquency_bucket": bucket_for_dpd(pd.Series(dpd), DEFAULT_BUCKET_SCALE),
        "is_delinquent": (dpd > 0).astype(np.int64),
    }
    return pd.DataFrame({column.name: columns[column.name] for column in tables.SOURCE_COLUMNS})


def _check_table_name(table: str) -> None:
    """Refuse a table name that is not a plain SQL identifier."""
    if not isinstance(table, str) or not TABLE_NAME_PATTERN.fullmatch(table):
        raise SampleDataError(
            f"Table name {table!r} is not allowed: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 64 characters "
            "(for example delinquency_snapshot)."
        )


def _make_sqlite_folder(url: sa.URL) -> None:
    """Create the folder of a SQLite database file, which SQLite will not do itself."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _require_source_columns(frame: pd.DataFrame) -> None:
    """Refuse a frame without every source column, before anything is written."""
    missing = [name for name in tables.DELINQUENCY_SNAPSHOT.column_names if name not in frame]
    if missing:
        raise SampleDataError(
            f"The frame lacks source columns {missing}: build it with generate_snapshot()."
        )
