"""Schema drift on MariaDB: a source that changes shape, and warehouse tables changed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import ExecuteInProcessResult, materialize

from credit_risk_assets.definitions import build_assets, build_resources
from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets.settings import load_settings
from credit_risk_assets.tables import ACCOUNT_FEATURES, ACCOUNT_RISK_SCORES, TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase, WarehouseError
from credit_risk_assets.warehouse.schema import TableSpec
from credit_risk_assets_tests.conftest import (
    create_mysql_database,
    drop_mysql_database,
    mysql_url_for,
)
from credit_risk_assets_tests.interrupted_write import version_frame

MARCH = "2024-03-01"


@dataclass(frozen=True)
class Databases:
    """A source holding sample February and March, and an empty warehouse."""

    source_url: str
    warehouse_url: str


@pytest.fixture
def databases(
    mysql_server: sa.Engine, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Databases]:
    """Fresh source and warehouse databases, configured through the environment."""
    names = create_mysql_database(mysql_server), create_mysql_database(mysql_server)
    urls = Databases(*(mysql_url_for(mysql_server, name) for name in names))
    write_source_table(urls.source_url, generate_snapshot(60, 2, date(2024, 3, 1)))
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CREDIT_RISK_SOURCE_URL", urls.source_url)
    monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", urls.warehouse_url)
    monkeypatch.setenv("CREDIT_RISK_FIRST_MONTH", "2024-02")
    monkeypatch.delenv("CREDIT_RISK_SOURCE_TABLE", raising=False)
    yield urls
    for name in names:
        drop_mysql_database(mysql_server, name)


def alter_source(databases: Databases, *statements: str) -> None:
    """Run DDL/DML on the source as its administrator."""
    engine = sa.create_engine(databases.source_url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def materialise_march() -> ExecuteInProcessResult:
    """The snapshot asset's March partition, run as the settings of the environment say."""
    settings = load_settings()
    return materialize(
        build_assets(settings),
        selection=["delinquency_snapshot"],
        partition_key=MARCH,
        resources=build_resources(settings),
        raise_on_error=False,
    )


def failure_text(result: ExecuteInProcessResult) -> str:
    """What the failed step says: a Failure's description, else its innermost error."""
    texts = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            texts.append(data.user_failure_data.description)
            continue
        error = data.error
        while error.cause is not None:
            error = error.cause
        texts.append(error.message)
    return "\n".join(texts)


def snapshot_in(databases: Databases) -> pd.DataFrame:
    """The warehouse copy of the snapshot."""
    warehouse = WarehouseDatabase(databases.warehouse_url)
    try:
        return warehouse.read(TABLES["delinquency_snapshot"])
    finally:
        warehouse.dispose()


# 7. Source drift.


def test_a_source_that_gains_a_column_is_read_unchanged(databases: Databases) -> None:
    """A new column, even placed first, changes nothing in the validated snapshot."""
    assert materialise_march().success
    before = snapshot_in(databases)

    alter_source(
        databases,
        "ALTER TABLE delinquency_snapshot ADD COLUMN branch_code VARCHAR(8) DEFAULT 'X9' FIRST",
    )
    result = materialise_march()

    assert result.success, failure_text(result)
    pd.testing.assert_frame_equal(snapshot_in(databases), before)
    assert len(before) > 0


@pytest.mark.parametrize(
    ("change", "column"),
    [
        # a required column dropped
        ("ALTER TABLE delinquency_snapshot DROP COLUMN days_past_due", "days_past_due"),
        ("ALTER TABLE delinquency_snapshot DROP COLUMN delinquency_bucket", "delinquency_bucket"),
        # the partition column dropped (with the key it belongs to)
        (
            "ALTER TABLE delinquency_snapshot DROP PRIMARY KEY, DROP COLUMN billing_cycle",
            "billing_cycle",
        ),
        # a date column turned into numbers (MariaDB converts 2024-03-19 to 20240319)
        ("ALTER TABLE delinquency_snapshot MODIFY due_date INT", "due_date"),
        # a count turned into text that holds no number
        (
            "ALTER TABLE delinquency_snapshot MODIFY days_past_due VARCHAR(20); "
            "UPDATE delinquency_snapshot SET days_past_due = CONCAT(days_past_due, ' days')",
            "days_past_due",
        ),
    ],
    ids=["drop-dpd", "drop-bucket", "drop-billing-cycle", "date-to-int", "count-to-text"],
)
def test_a_source_that_loses_or_retypes_a_column_fails_naming_it(
    databases: Databases, change: str, column: str
) -> None:
    """The month fails with the column's name, and the warehouse keeps its previous March."""
    assert materialise_march().success
    before = snapshot_in(databases)

    alter_source(databases, *change.split("; "))
    result = materialise_march()

    assert not result.success
    assert column in failure_text(result)
    pd.testing.assert_frame_equal(snapshot_in(databases), before)


# 7. Warehouse tables changed by hand.

HAND_CHANGES = [
    # a column added for a report
    (ACCOUNT_FEATURES, "ADD COLUMN analyst_note VARCHAR(100) NULL", "analyst_note"),
    # a column dropped
    (ACCOUNT_FEATURES, "DROP COLUMN months_observed", "months_observed"),
    # a column narrowed: values above 32767 would no longer fit
    (ACCOUNT_FEATURES, "MODIFY max_dpd SMALLINT NOT NULL", "max_dpd"),
    # a required column opened to NULLs
    (ACCOUNT_FEATURES, "MODIFY avg_dpd DOUBLE NULL", "avg_dpd"),
    # the primary key dropped: nothing stops a second copy of a row any more
    (ACCOUNT_FEATURES, "DROP PRIMARY KEY", "primary key"),
    # the table Power BI reads, swapped whole: a column the swap would silently drop
    (ACCOUNT_RISK_SCORES, "ADD COLUMN analyst_note VARCHAR(100) NULL", "analyst_note"),
    # a PD stored in single precision
    (ACCOUNT_RISK_SCORES, "MODIFY pd_score FLOAT NOT NULL", "pd_score"),
]


@pytest.mark.parametrize(
    ("spec", "change", "named"),
    HAND_CHANGES,
    ids=[f"{spec.name}-{named.replace(' ', '-')}" for spec, _, named in HAND_CHANGES],
)
def test_a_warehouse_table_changed_by_hand_is_refused_with_the_change_named(
    mysql_url: str, spec: TableSpec, change: str, named: str
) -> None:
    """A month rewrite or a table swap refuses the changed table and leaves its rows alone."""
    database = WarehouseDatabase(mysql_url)
    write(database, spec, version_frame(spec, 1, 40))
    with database.engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE {spec.name} {change}")
    rows_before = database.row_count(spec)

    with pytest.raises(WarehouseError) as refused:
        write(database, spec, version_frame(spec, 2, 50))

    assert spec.name in str(refused.value)
    assert named in str(refused.value)
    assert "by hand" in str(refused.value)
    assert database.row_count(spec) == rows_before
    database.dispose()


def write(database: WarehouseDatabase, spec: TableSpec, frame: pd.DataFrame) -> None:
    """March of a monthly table, or the whole of an unpartitioned one."""
    if spec.partition_column:
        database.replace_months(spec, frame, MARCH, "2024-04-01")
    else:
        database.replace_table(spec, frame)
