"""Tests of the synthetic source snapshot and of the writer that loads it into a database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import date

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from credit_risk_assets.compute.contract import check_source_contract
from credit_risk_assets.sample_data import (
    SampleDataError,
    generate_snapshot,
    write_source_table,
)

END_MONTH = date(2025, 6, 1)
SOURCE_COLUMNS = [
    "account_id",
    "billing_cycle",
    "due_date",
    "payment_date",
    "days_past_due",
    "delinquency_bucket",
    "is_delinquent",
]
HORIZON = 6


@pytest.fixture(scope="module")
def snapshot() -> pd.DataFrame:
    """A year of 4,000 accounts: enough rows for stable rates, small enough to stay fast."""
    return generate_snapshot(accounts=4000, months=12, end_month=END_MONTH, seed=11)


@pytest.fixture(scope="module")
def dpd_by_month(snapshot: pd.DataFrame) -> np.ndarray:
    """days_past_due as an accounts x months matrix, NaN where the account has no row."""
    table = snapshot.pivot(index="account_id", columns="billing_cycle", values="days_past_due")
    return table.to_numpy(dtype="float64")


def _forward_default(dpd_by_month: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every (account, T) with T followed by HORIZON months: dpd at T, and reached 90+ after."""
    months = dpd_by_month.shape[1]
    dpd_at_t, reached = [], []
    for t in range(months - HORIZON):
        future = np.nan_to_num(dpd_by_month[:, t + 1 : t + 1 + HORIZON], nan=0.0)
        dpd_at_t.append(dpd_by_month[:, t])
        reached.append((future >= 90).any(axis=1))
    return np.concatenate(dpd_at_t), np.concatenate(reached)


def test_same_seed_gives_the_same_snapshot() -> None:
    """Two calls with one seed return identical frames."""
    first = generate_snapshot(accounts=300, months=6, end_month=END_MONTH, seed=5)

    second = generate_snapshot(accounts=300, months=6, end_month=END_MONTH, seed=5)

    pd.testing.assert_frame_equal(first, second)


def test_another_seed_gives_another_snapshot() -> None:
    """A different seed changes the days past due."""
    first = generate_snapshot(accounts=300, months=6, end_month=END_MONTH, seed=5)

    second = generate_snapshot(accounts=300, months=6, end_month=END_MONTH, seed=6)

    assert not first["days_past_due"].equals(second["days_past_due"])


def test_snapshot_holds_the_requested_accounts_and_months() -> None:
    """Ids run 1..accounts and billing cycles are the months that end with end_month."""
    frame = generate_snapshot(accounts=500, months=7, end_month=date(2024, 3, 1), seed=3)

    cycles = sorted(frame["billing_cycle"].unique())

    assert sorted(frame["account_id"].unique()) == list(range(1, 501))
    assert cycles == list(pd.date_range("2023-09-01", "2024-03-01", freq="MS"))
    assert 0.8 * 500 * 7 < len(frame) <= 500 * 7


def test_end_month_defaults_to_the_current_month() -> None:
    """Without end_month the last billing cycle is the first day of this month."""
    before = pd.Timestamp(date.today().replace(day=1))

    frame = generate_snapshot(accounts=50, months=2)

    after = pd.Timestamp(date.today().replace(day=1))
    assert frame["billing_cycle"].max() in {before, after}


def test_snapshot_follows_the_frame_conventions(snapshot: pd.DataFrame) -> None:
    """Columns come in the source order with the agreed dtypes."""
    dtypes = {name: str(dtype) for name, dtype in snapshot.dtypes.items()}

    assert list(snapshot.columns) == SOURCE_COLUMNS
    assert dtypes == {
        "account_id": "int64",
        "billing_cycle": "datetime64[ns]",
        "due_date": "datetime64[ns]",
        "payment_date": "datetime64[ns]",
        "days_past_due": "int64",
        "delinquency_bucket": "str",
        "is_delinquent": "int64",
    }


@pytest.mark.parametrize(
    "end_month",
    [
        date(2025, 6, 15),  # a day inside the month
        pd.Timestamp("2025-06-01 12:00"),  # the first day, but not at midnight
    ],
)
def test_end_month_that_is_not_a_month_start_is_refused(end_month: date) -> None:
    """An end_month other than a first day at midnight raises an error naming it."""
    with pytest.raises(SampleDataError, match="2025-06"):
        generate_snapshot(accounts=10, months=2, end_month=end_month)


def test_zero_accounts_is_refused() -> None:
    """Asking for no accounts raises an error naming the value."""
    with pytest.raises(SampleDataError, match="accounts=0"):
        generate_snapshot(accounts=0, months=2, end_month=END_MONTH)


def _expected_bucket(dpd: pd.Series) -> pd.Series:
    """The default bucket scale of DESIGN.md section 2, written out independently."""
    labels = np.select(
        [dpd == 0, dpd <= 30, dpd <= 60, dpd <= 89],
        ["On-Time", "Mild", "Moderate", "Severe"],
        default="Default",
    )
    return pd.Series(labels, index=dpd.index)


def _payment_days(frame: pd.DataFrame) -> pd.Series:
    """max(0, payment_date - due_date) in days; NaN while unpaid."""
    return (frame["payment_date"] - frame["due_date"]).dt.days.clip(lower=0)


BROKEN_ROWS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    # every column but payment_date is filled
    "not_null": lambda f: f.drop(columns="payment_date").isna().any(axis=1),
    # one row per account and billing cycle
    "unique_key": lambda f: f.duplicated(["account_id", "billing_cycle"], keep=False),
    # billing cycles are first days of months at midnight
    "month_start": lambda f: (
        (f["billing_cycle"].dt.day != 1) | (f["billing_cycle"] != f["billing_cycle"].dt.normalize())
    ),
    # the due date is a fixed 18 days after the cycle starts
    "fixed_due_date": lambda f: (f["due_date"] - f["billing_cycle"]) != pd.Timedelta(days=18),
    # days past due are never negative
    "non_negative_dpd": lambda f: f["days_past_due"] < 0,
    # is_delinquent says whether days past due are positive
    "is_delinquent": lambda f: f["is_delinquent"] != (f["days_past_due"] > 0).astype("int64"),
    # the bucket is the scale's bucket of days past due
    "bucket": lambda f: f["delinquency_bucket"] != _expected_bucket(f["days_past_due"]),
    # a paid cycle's days past due are the days from due date to payment
    "paid_dpd": lambda f: f["payment_date"].notna() & (f["days_past_due"] != _payment_days(f)),
}


@pytest.mark.parametrize("rule", list(BROKEN_ROWS))
def test_every_row_keeps_the_source_contract_rule(snapshot: pd.DataFrame, rule: str) -> None:
    """No generated row breaks the contract rule, checked with plain pandas."""
    broken = BROKEN_ROWS[rule](snapshot)

    assert not broken.any(), snapshot[broken].head()


def test_package_contract_accepts_every_row(snapshot: pd.DataFrame) -> None:
    """The pipeline's own contract check rejects none of the generated rows."""
    result = check_source_contract(snapshot, "2024-07-01", "2025-07-01")

    assert result.rejects.empty, result.summary()
    assert len(result.valid) == len(snapshot)


def test_paid_late_cycles_carry_their_days_past_due(snapshot: pd.DataFrame) -> None:
    """Late but paid cycles exist, so the payment rule is exercised, and all buckets occur."""
    paid_late = snapshot["payment_date"].notna() & (snapshot["days_past_due"] > 0)

    assert paid_late.sum() > 100
    assert set(snapshot.loc[paid_late, "delinquency_bucket"]) == {"Mild", "Moderate", "Severe"}
    assert set(snapshot["delinquency_bucket"]) == {
        "On-Time",
        "Mild",
        "Moderate",
        "Severe",
        "Default",
    }


def test_delinquent_accounts_default_far_more_often_than_current_ones(
    dpd_by_month: np.ndarray,
) -> None:
    """Accounts delinquent at T reach 90+ within 6 months over 3x as often as current ones."""
    dpd_at_t, reached = _forward_default(dpd_by_month)
    in_population = ~np.isnan(dpd_at_t) & (dpd_at_t < 90)

    current_rate = reached[in_population & (dpd_at_t == 0)].mean()
    delinquent_rate = reached[in_population & (dpd_at_t > 0)].mean()

    assert delinquent_rate > 3 * current_rate, (delinquent_rate, current_rate)


def test_forward_default_rate_is_plausible(dpd_by_month: np.ndarray) -> None:
    """The 6-month forward default rate of accounts not in default lies between 4% and 18%."""
    dpd_at_t, reached = _forward_default(dpd_by_month)
    in_population = ~np.isnan(dpd_at_t) & (dpd_at_t < 90)

    rate = reached[in_population].mean()

    assert 0.04 < rate < 0.18, rate


def test_delinquency_cures_and_default_is_sticky(dpd_by_month: np.ndarray) -> None:
    """Some delinquent accounts are current the next month; most 90+ accounts stay 90+."""
    now, following = dpd_by_month[:, :-1].ravel(), dpd_by_month[:, 1:].ravel()
    both_present = ~np.isnan(now) & ~np.isnan(following)

    delinquent = both_present & (now > 0) & (now < 90)
    in_default = both_present & (now >= 90)

    assert 0.1 < (following[delinquent] == 0).mean() < 0.9
    assert (following[in_default] >= 90).mean() > 0.85


def test_snapshot_has_late_starters_early_leavers_and_gaps(snapshot: pd.DataFrame) -> None:
    """Some accounts open late, some stop early, and some miss a month in between."""
    per_account = snapshot.groupby("account_id")["billing_cycle"].agg(["min", "max", "count"])
    first, last = snapshot["billing_cycle"].min(), snapshot["billing_cycle"].max()
    span_months = (per_account["max"].dt.year - per_account["min"].dt.year) * 12 + (
        per_account["max"].dt.month - per_account["min"].dt.month
    )

    late_starters = (per_account["min"] > first).sum()
    early_leavers = (per_account["max"] < last).sum()
    with_gaps = (per_account["count"] < span_months + 1).sum()

    assert late_starters > 100
    assert early_leavers > 100
    assert with_gaps > 50


def test_latest_delinquent_and_default_cycles_are_unpaid(snapshot: pd.DataFrame) -> None:
    """The latest month's delinquent cycles and every 90+ cycle have no payment date."""
    latest = snapshot["billing_cycle"] == snapshot["billing_cycle"].max()
    delinquent = snapshot["days_past_due"] > 0
    in_default = snapshot["days_past_due"] >= 90
    unpaid = snapshot["payment_date"].isna()

    assert (latest & delinquent).sum() > 100
    assert unpaid[latest & delinquent].all()
    assert in_default.sum() > 100
    assert unpaid[in_default].all()
    assert not unpaid[snapshot["days_past_due"] == 0].any()


@pytest.fixture(scope="module")
def small_snapshot() -> pd.DataFrame:
    """Four months of 300 accounts, quick to write to any database."""
    return generate_snapshot(accounts=300, months=4, end_month=END_MONTH, seed=2)


def _read_totals(url: str, table: str) -> tuple[int, int, int, str, str]:
    """Rows, sum of days_past_due, paid rows, first billing cycle, last payment date."""
    engine = sa.create_engine(url)
    query = (
        "SELECT COUNT(*), SUM(days_past_due), COUNT(payment_date), "
        f"MIN(billing_cycle), MAX(payment_date) FROM {table}"
    )
    try:
        with engine.connect() as connection:
            rows, dpd, paid, first_cycle, last_payment = connection.exec_driver_sql(query).one()
    finally:
        engine.dispose()
    return int(rows), int(dpd), int(paid), str(first_cycle), str(last_payment)


def _frame_totals(frame: pd.DataFrame) -> tuple[int, int, int, str, str]:
    """The same totals as _read_totals, computed from the frame."""
    return (
        len(frame),
        int(frame["days_past_due"].sum()),
        int(frame["payment_date"].notna().sum()),
        frame["billing_cycle"].min().date().isoformat(),
        frame["payment_date"].max().date().isoformat(),
    )


def test_written_table_reads_back_the_same_totals(
    database_url: str, small_snapshot: pd.DataFrame
) -> None:
    """Rows, a column sum, null payments and dates read back with plain SQL match the frame."""
    written = write_source_table(database_url, small_snapshot, "sample_source")

    assert written == len(small_snapshot)
    assert _read_totals(database_url, "sample_source") == _frame_totals(small_snapshot)


def test_written_table_has_the_declared_primary_key(
    database_url: str, small_snapshot: pd.DataFrame
) -> None:
    """The table's primary key is made of billing_cycle and account_id, as declared."""
    write_source_table(database_url, small_snapshot)

    engine = sa.create_engine(database_url)
    try:
        key = sa.inspect(engine).get_pk_constraint("delinquency_snapshot")
    finally:
        engine.dispose()
    assert sorted(key["constrained_columns"]) == ["account_id", "billing_cycle"]


def test_rewriting_with_replace_leaves_one_copy(
    database_url: str, small_snapshot: pd.DataFrame
) -> None:
    """Writing the same frame twice with replace=True leaves its rows once."""
    write_source_table(database_url, small_snapshot)

    write_source_table(database_url, small_snapshot, replace=True)

    assert _read_totals(database_url, "delinquency_snapshot") == _frame_totals(small_snapshot)


def test_writing_without_replace_appends_to_the_table(
    database_url: str, small_snapshot: pd.DataFrame
) -> None:
    """replace=False adds the rows of other months to the existing table."""
    earlier = generate_snapshot(accounts=100, months=2, end_month=date(2025, 1, 1), seed=4)
    write_source_table(database_url, earlier)

    write_source_table(database_url, small_snapshot, replace=False)

    both = pd.concat([earlier, small_snapshot], ignore_index=True)
    assert _read_totals(database_url, "delinquency_snapshot") == _frame_totals(both)


@pytest.mark.parametrize(
    "table",
    [
        "snapshot; DROP TABLE accounts",  # SQL smuggled into the name
        "2024_snapshot",  # starts with a digit
        "delinquency-snapshot",  # a character outside letters, digits and underscore
        "t" * 65,  # longer than 64 characters
        "",  # empty
    ],
)
def test_bad_table_name_is_refused(
    sqlite_url: str, small_snapshot: pd.DataFrame, table: str
) -> None:
    """A table name that is not a plain identifier raises an error naming it; nothing is made."""
    with pytest.raises(SampleDataError, match="Table name") as refused:
        write_source_table(sqlite_url, small_snapshot, table)

    engine = sa.create_engine(sqlite_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    assert repr(table) in str(refused.value)


def test_sqlite_folder_is_created(tmp_path, small_snapshot: pd.DataFrame) -> None:
    """A SQLite file in folders that do not exist yet is written after making them."""
    url = f"sqlite:///{tmp_path / 'new' / 'nested' / 'source.db'}"

    written = write_source_table(url, small_snapshot)

    assert (tmp_path / "new" / "nested" / "source.db").is_file()
    assert _read_totals(url, "delinquency_snapshot")[0] == written


def test_write_logs_count_and_table_once(
    sqlite_url: str, small_snapshot: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    """One log line names the rows written and the table."""
    caplog.set_level(logging.INFO, logger="credit_risk_assets.sample_data")

    write_source_table(sqlite_url, small_snapshot, "sample_source")

    assert len(caplog.records) == 1
    assert f"{len(small_snapshot)} sample rows" in caplog.text
    assert "sample_source" in caplog.text


@pytest.fixture
def mysql_url_with_password(mysql_server: sa.Engine, mysql_url: str) -> Iterator[str]:
    """URL of the fresh MySQL database for a user who logs in with a password."""
    database = sa.make_url(mysql_url).database
    user, password = f"crs_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with mysql_server.begin() as connection:
        connection.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        connection.execute(sa.text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    yield (
        sa.make_url(mysql_url)
        .set(username=user, password=password)
        .render_as_string(hide_password=False)
    )
    with mysql_server.begin() as connection:
        connection.execute(sa.text(f"DROP USER '{user}'@'%'"))


@pytest.mark.mysql
def test_log_line_never_carries_the_password(
    mysql_url_with_password: str, small_snapshot: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    """Writing with a password in the URL logs the database without the password."""
    password = sa.make_url(mysql_url_with_password).password
    caplog.set_level(logging.INFO, logger="credit_risk_assets.sample_data")

    write_source_table(mysql_url_with_password, small_snapshot)

    assert "sample rows" in caplog.text
    assert password not in caplog.text
