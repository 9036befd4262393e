"""The read-only source resource on real SQLite files and a real MariaDB/MySQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from credit_risk_assets.tables import DELINQUENCY_SNAPSHOT
from credit_risk_assets.warehouse.database import InvalidIdentifierError
from credit_risk_assets.warehouse.source import SourceDatabase, SourceError

# (account, billing cycle) of the source rows; one cycle is mid-month, as bad data can be.
CYCLES = [
    (1, "2024-01-01"),
    (2, "2024-01-01"),
    (1, "2024-02-01"),
    (2, "2024-02-01"),
    (3, "2024-02-01"),
    (1, "2024-03-01"),
    (1, "2024-04-15"),
]


def write_source(url: str, cycles: list[tuple[int, str]], table: str = "snapshot") -> None:
    """Create a source table with the declared source columns and one row per cycle."""
    engine = sa.create_engine(url)
    target = DELINQUENCY_SNAPSHOT.sqlalchemy_table(sa.MetaData(), table)
    rows = [
        {
            "account_id": account,
            "billing_cycle": pd.Timestamp(cycle).date(),
            "due_date": (pd.Timestamp(cycle) + pd.Timedelta(days=14)).date(),
            "payment_date": None,
            "days_past_due": account,
            "delinquency_bucket": "Mild",
            "is_delinquent": 1,
        }
        for account, cycle in cycles
    ]
    with engine.begin() as connection:
        target.create(connection)
        connection.execute(sa.insert(target), rows)
    engine.dispose()


@pytest.fixture
def source(database_url: str) -> Iterator[SourceDatabase]:
    """A read-only source resource on a database holding the CYCLES rows."""
    write_source(database_url, CYCLES)
    resource = SourceDatabase(url=database_url, table="snapshot")
    yield resource
    resource.dispose()


def test_read_months_returns_the_rows_of_the_window_only(source: SourceDatabase) -> None:
    """[February, April) gives the February and March rows with every source column."""
    frame = source.read_months(pd.Timestamp("2024-02-01"), pd.Timestamp("2024-04-01"))

    cycles = pd.to_datetime(frame["billing_cycle"]).dt.strftime("%Y-%m-%d").tolist()
    assert list(frame.columns) == list(DELINQUENCY_SNAPSHOT.column_names)
    assert list(zip(frame["account_id"], cycles, strict=True)) == CYCLES[2:6]


def test_read_months_includes_rows_inside_a_month_but_not_on_its_first_day(
    source: SourceDatabase,
) -> None:
    """A mid-April row belongs to April's window, where the contract check can refuse it."""
    frame = source.read_months("2024-04-01", "2024-05-01")

    assert pd.to_datetime(frame["billing_cycle"]).tolist() == [pd.Timestamp("2024-04-15")]


def test_months_present_lists_the_first_days_of_the_months_held(source: SourceDatabase) -> None:
    """Distinct billing months, first of month, oldest first; mid-month rows count too."""
    assert source.months_present() == list(
        pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"])
    )
    assert source.row_count() == len(CYCLES)
    assert source.exists()


def test_the_source_connection_refuses_writes(source: SourceDatabase, database_url: str) -> None:
    """An INSERT or DELETE through the resource's connection fails and changes nothing."""
    statements = (
        "INSERT INTO snapshot (account_id, billing_cycle, due_date, days_past_due, "
        "delinquency_bucket, is_delinquent) VALUES (9, '2024-05-01', '2024-05-15', 0, 'x', 0)",
        "DELETE FROM snapshot",
    )

    with source.connect() as connection:
        for statement in statements:
            with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read.?only"):
                connection.execute(sa.text(statement))
            connection.rollback()

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT COUNT(*) FROM snapshot")).scalar()
    engine.dispose()
    assert count == len(CYCLES)


def test_a_missing_source_table_says_how_to_create_it(database_url: str) -> None:
    """Reading a table that does not exist names it and the sample-data command."""
    write_source(database_url, CYCLES)
    source = SourceDatabase(url=database_url, table="delinquency_snapshot")

    with pytest.raises(SourceError, match="credit-risk sample-data") as missing:
        source.read_months("2024-01-01", "2024-02-01")

    assert "'delinquency_snapshot'" in str(missing.value)
    assert not source.exists()


def test_a_missing_sqlite_source_file_is_not_created(tmp_path) -> None:
    """A source URL naming a file that does not exist fails and leaves no empty file behind."""
    path = tmp_path / "absent.db"
    source = SourceDatabase(url=f"sqlite:///{path}")

    with pytest.raises(SourceError, match="does not exist"):
        source.months_present()

    assert not path.exists()


@pytest.mark.parametrize("table", ["snapshot; DROP TABLE snapshot", "snap`shot", 'snap"shot'])
def test_a_source_table_name_that_could_carry_sql_is_refused(
    source: SourceDatabase, database_url: str, table: str
) -> None:
    """A configured table name with SQL in it is refused before any statement runs."""
    hostile = SourceDatabase(url=database_url, table=table)

    with pytest.raises(InvalidIdentifierError, match="letter or underscore"):
        hostile.read_months("2024-01-01", "2024-02-01")

    assert source.row_count() == len(CYCLES)


def test_text_timestamps_in_sqlite_are_read_by_month(tmp_path) -> None:
    """Dates stored as 'YYYY-MM-DD 00:00:00' text (pandas.to_sql) still select and list by month."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    frame = pd.DataFrame(
        {
            "account_id": [1, 1, 2],
            "billing_cycle": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-02-01"]),
        }
    )
    engine = sa.create_engine(url)
    frame.to_sql("delinquency_snapshot", engine, index=False)
    engine.dispose()
    source = SourceDatabase(url=url)

    february = source.read_months("2024-02-01", "2024-03-01")

    assert february["account_id"].tolist() == [1, 2]
    assert source.months_present() == list(pd.to_datetime(["2024-01-01", "2024-02-01"]))
    source.dispose()
