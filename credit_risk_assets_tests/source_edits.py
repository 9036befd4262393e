"""Edits of a real source table as a source system makes them, and reads of warehouse tables."""

from __future__ import annotations

from datetime import date

import pandas as pd
import sqlalchemy as sa

from credit_risk_assets.sample_data import generate_snapshot, write_source_table

# An account id the sample data never uses (its ids run from 1 to the number of accounts).
NEW_ACCOUNT = 900_001


def this_month() -> pd.Timestamp:
    """First day of the current UTC month, the last month of the default sample data."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None).to_period("M").to_timestamp()


def months_ago(count: int) -> pd.Timestamp:
    """First day of the month `count` months before the current one."""
    return this_month() - pd.DateOffset(months=count)


def write_sample_source(url: str) -> pd.DataFrame:
    """Write the default sample data (1,000 accounts, 12 months to this month); return it."""
    frame = generate_snapshot()
    write_source_table(url, frame)
    return frame


def _day(month: pd.Timestamp, day: int = 1) -> str:
    return f"{month:%Y-%m}-{day:02d}"


def edit_month(url: str, kind: str, month: pd.Timestamp) -> None:
    """Change, add or delete one row of `month`, keeping the row within the data contract."""
    engine = sa.create_engine(url)
    cycle = _day(month)
    with engine.begin() as connection:
        account = connection.execute(
            sa.text(
                "SELECT MIN(account_id) FROM delinquency_snapshot "
                "WHERE billing_cycle = :cycle AND days_past_due = 0"
            ),
            {"cycle": cycle},
        ).scalar_one()
        if kind == "changed":
            # An on-time cycle becomes 45 days late and unpaid.
            connection.execute(
                sa.text(
                    "UPDATE delinquency_snapshot SET days_past_due = 45, payment_date = NULL, "
                    "delinquency_bucket = 'Moderate', is_delinquent = 1 "
                    "WHERE billing_cycle = :cycle AND account_id = :account"
                ),
                {"cycle": cycle, "account": account},
            )
        elif kind == "added":
            connection.execute(
                sa.text(
                    "INSERT INTO delinquency_snapshot (account_id, billing_cycle, due_date, "
                    "payment_date, days_past_due, delinquency_bucket, is_delinquent) "
                    "VALUES (:account, :cycle, :due, :due, 0, 'On-Time', 0)"
                ),
                {"account": NEW_ACCOUNT, "cycle": cycle, "due": _day(month, 20)},
            )
        elif kind == "deleted":
            connection.execute(
                sa.text(
                    "DELETE FROM delinquency_snapshot "
                    "WHERE billing_cycle = :cycle AND account_id = :account"
                ),
                {"cycle": cycle, "account": account},
            )
        else:
            raise ValueError(f"Unknown edit {kind!r}: use changed, added or deleted.")
    engine.dispose()


def read_table(url: str, name: str, order_by: str | None = None) -> pd.DataFrame:
    """A whole table read back with plain SQL, optionally ordered."""
    engine = sa.create_engine(url)
    order = f" ORDER BY {order_by}" if order_by else ""
    with engine.connect() as connection:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {name}{order}"), connection)
    engine.dispose()
    return frame


def table_names(url: str) -> list[str]:
    """Tables of the database at `url`, sorted."""
    engine = sa.create_engine(url)
    names = sorted(sa.inspect(engine).get_table_names())
    engine.dispose()
    return names


def month_keys(months) -> list[str]:
    """Partition keys (YYYY-MM-01) of months."""
    return [pd.Timestamp(month).strftime("%Y-%m-01") for month in months]


def month_range(first: pd.Timestamp | date, last: pd.Timestamp | date) -> list[pd.Timestamp]:
    """The months from `first` to `last`, both included."""
    return list(pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="MS"))
