"""The warehouse IO manager through real Dagster runs on SQLite and MariaDB/MySQL."""

from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    MonthlyPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)

from credit_risk_assets.tables import DEFAULT_FLAGS, RISK_DRIVERS, STREAKS
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.io_manager import (
    UnknownAssetTableError,
    WarehouseIOManager,
    WarehouseResource,
    table_for_asset,
)

MONTHS = MonthlyPartitionsDefinition(start_date="2024-01-01", end_date="2024-07-01")


def months_of_run(context: AssetExecutionContext) -> pd.DatetimeIndex:
    """First days of the months of the run's partition or partition range."""
    window = context.partition_time_window
    start, end = (pd.Timestamp(bound).tz_localize(None) for bound in (window.start, window.end))
    return pd.date_range(start, end, freq="MS", inclusive="left", unit="ns")


@asset(name="streaks", partitions_def=MONTHS, backfill_policy=BackfillPolicy.single_run())
def streaks(context: AssetExecutionContext) -> pd.DataFrame:
    """Three accounts per month; delinquency_streak holds the month number."""
    months = months_of_run(context)
    frame = pd.MultiIndex.from_product(
        [months, [1, 2, 3]], names=["as_of_month", "account_id"]
    ).to_frame(index=False)
    frame["delinquency_streak"] = frame["as_of_month"].dt.month
    frame["current_streak"] = 0
    return frame


def per_month_summary(streaks: pd.DataFrame) -> pd.DataFrame:
    """One risk_drivers row per month read: model_version is the month, odds_ratio the rows."""
    summary = (
        streaks.groupby("as_of_month")
        .agg(coefficient=("delinquency_streak", "sum"), odds_ratio=("account_id", "size"))
        .reset_index()
    )
    return pd.DataFrame(
        {
            "model_version": summary["as_of_month"].dt.strftime("%Y-%m"),
            "feature": "streak",
            "coefficient": summary["coefficient"].astype(float),
            "odds_ratio": summary["odds_ratio"].astype(float),
            "driver_rank": 1,
            "direction": "raises PD",
        }
    )


@asset(name="risk_drivers", ins={"streaks": AssetIn()})
def risk_drivers(streaks: pd.DataFrame) -> pd.DataFrame:
    """A per-month summary of every streaks month materialised (an unpartitioned reader)."""
    return per_month_summary(streaks)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A throwaway Dagster instance."""
    with instance_for_test() as test_instance:
        yield test_instance


def run(assets: list, url: str, instance: DagsterInstance, **kwargs) -> object:
    """Materialise `assets` with the warehouse IO manager at `url`."""
    return materialize(
        assets, resources={"io_manager": WarehouseIOManager(url=url)}, instance=instance, **kwargs
    )


def input_probe(name: str, metadata: dict[str, object]) -> tuple[object, dict[str, pd.DataFrame]]:
    """An unpartitioned asset that reads streaks with input `metadata`, and what it was handed."""
    seen: dict[str, pd.DataFrame] = {}

    @asset(name=name, ins={"streaks": AssetIn(metadata=metadata)})
    def probe(streaks: pd.DataFrame) -> None:
        seen["streaks"] = streaks

    return probe, seen


def plain_sql(url: str, statement: str) -> list[tuple]:
    """Rows of a statement run on a separate plain engine."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(statement))]
    finally:
        engine.dispose()


def months_in(url: str, table: str, column: str) -> list[tuple[str, int]]:
    """(month, rows) for every month in the table, oldest first."""
    rows = plain_sql(
        url, f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column} ORDER BY {column}"
    )
    return [(str(month)[:7], count) for month, count in rows]


def test_monthly_outputs_land_in_their_months_with_metadata(
    database_url: str, instance: DagsterInstance
) -> None:
    """Each partition run writes its month only and reports rows, table, URI and window."""
    run([streaks], database_url, instance, partition_key="2024-02-01")

    result = run([streaks], database_url, instance, partition_key="2024-04-01")

    assert months_in(database_url, "streaks", "as_of_month") == [("2024-02", 3), ("2024-04", 3)]
    [event] = result.asset_materializations_for_node("streaks")
    metadata = {key: value.value for key, value in event.metadata.items()}
    assert metadata["dagster/row_count"] == 3
    assert metadata["dagster/table_name"].endswith("streaks")
    assert metadata["dagster/uri"].endswith("#streaks")
    assert metadata["partition_window"] == "2024-04-01..2024-05-01"
    assert "dagster/column_schema" not in metadata


def test_an_unpartitioned_asset_reads_every_materialised_month(
    database_url: str, instance: DagsterInstance
) -> None:
    """The downstream table summarises February and April, the months that exist, and no other."""
    for month in ("2024-02-01", "2024-04-01"):
        run([streaks], database_url, instance, partition_key=month)

    run([streaks, risk_drivers], database_url, instance, selection=[AssetKey("risk_drivers")])

    assert plain_sql(
        database_url,
        "SELECT model_version, coefficient, odds_ratio FROM risk_drivers ORDER BY model_version",
    ) == [("2024-02", 6.0, 3.0), ("2024-04", 12.0, 3.0)]


def test_a_range_run_writes_every_month_of_the_range_once(
    database_url: str, instance: DagsterInstance
) -> None:
    """One single-run backfill over January..March writes three months; a rerun keeps one copy."""
    tags = {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-03-01",
    }
    run([streaks], database_url, instance, partition_key="2024-05-01")

    first = run([streaks], database_url, instance, tags=tags)
    run([streaks], database_url, instance, tags=tags)

    assert months_in(database_url, "streaks", "as_of_month") == [
        ("2024-01", 3),
        ("2024-02", 3),
        ("2024-03", 3),
        ("2024-05", 3),
    ]
    assert len(first.asset_materializations_for_node("streaks")) == 3
    assert (
        first.asset_materializations_for_node("streaks")[0].metadata["dagster/row_count"].value == 9
    )


def test_a_partitioned_asset_reads_the_upstream_window_of_its_partition(
    database_url: str, instance: DagsterInstance
) -> None:
    """A monthly reader of a monthly asset is handed that month's rows only."""
    seen: dict[str, pd.DataFrame] = {}

    @asset(name="monthly_probe", partitions_def=MONTHS, ins={"streaks": AssetIn()})
    def monthly_probe(streaks: pd.DataFrame) -> None:
        seen["streaks"] = streaks

    for month in ("2024-02-01", "2024-03-01"):
        run([streaks], database_url, instance, partition_key=month)

    run(
        [streaks, monthly_probe],
        database_url,
        instance,
        partition_key="2024-03-01",
        selection=[AssetKey("monthly_probe")],
    )

    assert seen["streaks"]["as_of_month"].unique().tolist() == [pd.Timestamp("2024-03-01")]
    assert list(seen["streaks"].columns) == list(STREAKS.column_names)


def test_a_latest_input_reads_only_the_latest_month_present(
    database_url: str, instance: DagsterInstance
) -> None:
    """With input metadata partitions=latest, the reader gets the latest written month only."""
    latest_probe, seen = input_probe("latest_probe", {"partitions": "latest"})

    for month in ("2024-01-01", "2024-03-01", "2024-02-01"):
        run([streaks], database_url, instance, partition_key=month)

    run([streaks, latest_probe], database_url, instance, selection=[AssetKey("latest_probe")])

    assert seen["streaks"]["as_of_month"].unique().tolist() == [pd.Timestamp("2024-03-01")]
    assert len(seen["streaks"]) == 3


def test_a_columns_input_reads_only_those_columns_in_that_order(
    database_url: str, instance: DagsterInstance
) -> None:
    """With input metadata columns=[...], the reader gets those columns, typed, and no others."""
    narrow_probe, seen = input_probe(
        "narrow_probe", {"columns": ["delinquency_streak", "account_id"]}
    )

    run([streaks], database_url, instance, partition_key="2024-05-01")
    run([streaks, narrow_probe], database_url, instance, selection=[AssetKey("narrow_probe")])

    assert list(seen["streaks"].columns) == ["delinquency_streak", "account_id"]
    assert seen["streaks"]["delinquency_streak"].tolist() == [5, 5, 5]
    assert seen["streaks"]["account_id"].tolist() == [1, 2, 3]
    assert str(seen["streaks"]["account_id"].dtype) == STREAKS.column("account_id").frame_dtype


def test_a_columns_input_naming_an_unknown_column_fails_naming_it(
    database_url: str, instance: DagsterInstance
) -> None:
    """A misspelt column is an error that names it and lists the table's columns."""
    misspelt_probe, _ = input_probe("misspelt_probe", {"columns": ["account_id", "streak_lenght"]})

    run([streaks], database_url, instance, partition_key="2024-05-01")
    result = run(
        [streaks, misspelt_probe],
        database_url,
        instance,
        selection=[AssetKey("misspelt_probe")],
        raise_on_error=False,
    )

    assert not result.success
    [failure] = result.get_step_failure_events()
    message = str(failure.step_failure_data.error.to_string())
    assert "streak_lenght" in message
    assert "delinquency_streak" in message


def test_a_months_of_input_reads_only_the_span_of_the_other_tables_months(
    database_url: str, instance: DagsterInstance
) -> None:
    """months_of=default_flags narrows a read of every streaks month to the labelled months."""
    labelled_probe, seen = input_probe("labelled_probe", {"months_of": "default_flags"})

    for month in ("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"):
        run([streaks], database_url, instance, partition_key=month)
    labels = pd.DataFrame(
        {
            "as_of_month": pd.to_datetime(["2024-02-01", "2024-03-01"]),
            "account_id": [1, 2],
            "default_flag": [0, 1],
            "perf_months_observed": 3,
            "perf_max_dpd": [0, 95],
            "perf_delinquency_ratio": [0.0, 1.0],
            "perf_default_like_cycles": [0, 1],
        }
    )
    warehouse = WarehouseDatabase(database_url)
    try:
        warehouse.replace_months(DEFAULT_FLAGS, labels, "2024-01-01", "2024-07-01")
    finally:
        warehouse.dispose()

    run([streaks, labelled_probe], database_url, instance, selection=[AssetKey("labelled_probe")])

    months = seen["streaks"]["as_of_month"].drop_duplicates().tolist()
    assert months == [pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01")]
    assert len(seen["streaks"]) == 6


def test_a_months_of_input_with_no_such_months_reads_as_an_empty_frame(
    database_url: str, instance: DagsterInstance
) -> None:
    """Before any label exists, a months_of=default_flags read is empty, with declared dtypes."""
    labelled_probe, seen = input_probe("labelled_probe", {"months_of": "default_flags"})

    run([streaks], database_url, instance, partition_key="2024-01-01")
    run([streaks, labelled_probe], database_url, instance, selection=[AssetKey("labelled_probe")])

    assert seen["streaks"].empty
    assert seen["streaks"].dtypes.to_dict() == STREAKS.empty_frame().dtypes.to_dict()


def test_an_upstream_with_no_partitions_yet_reads_as_an_empty_frame(
    database_url: str, instance: DagsterInstance
) -> None:
    """Upstream partitions that do not exist yet give an empty frame with the declared dtypes."""
    future = MonthlyPartitionsDefinition(start_date="2999-01-01")
    seen: dict[str, pd.DataFrame] = {}

    @asset(name="streaks", partitions_def=future)
    def future_streaks() -> pd.DataFrame:
        raise AssertionError("never materialised in this test")

    @asset(ins={"streaks": AssetIn()})
    def empty_probe(streaks: pd.DataFrame) -> None:
        seen["streaks"] = streaks

    run([future_streaks, empty_probe], database_url, instance, selection=[AssetKey("empty_probe")])

    assert seen["streaks"].empty
    assert seen["streaks"].dtypes.to_dict() == STREAKS.empty_frame().dtypes.to_dict()


def test_an_unpartitioned_output_replaces_its_whole_table(
    database_url: str, instance: DagsterInstance
) -> None:
    """Rematerialising an unpartitioned asset leaves only the new run's rows."""
    run([streaks], database_url, instance, partition_key="2024-01-01")
    run([streaks, risk_drivers], database_url, instance, selection=[AssetKey("risk_drivers")])
    run([streaks], database_url, instance, partition_key="2024-06-01")

    result = run(
        [streaks, risk_drivers], database_url, instance, selection=[AssetKey("risk_drivers")]
    )

    [event] = result.asset_materializations_for_node("risk_drivers")
    assert event.metadata["dagster/row_count"].value == 2
    assert "partition_window" not in event.metadata
    assert plain_sql(database_url, "SELECT model_version FROM risk_drivers ORDER BY 1") == [
        ("2024-01",),
        ("2024-06",),
    ]


def test_an_asset_without_a_declared_table_fails_naming_it(
    database_url: str, instance: DagsterInstance
) -> None:
    """An asset whose name is not in TABLES fails the run with the asset's name."""

    @asset
    def scratch_frame() -> pd.DataFrame:
        return pd.DataFrame({"x": [1]})

    result = run([scratch_frame], database_url, instance, raise_on_error=False)

    [failure] = [event for event in result.all_events if event.is_step_failure]
    message = failure.event_specific_data.error.to_string()
    assert "UnknownAssetTableError" in message
    assert "scratch_frame" in message


def test_table_for_asset_uses_the_last_part_of_the_key() -> None:
    """A prefixed asset key finds the table named by its last part; an unknown one is named."""
    assert table_for_asset(AssetKey(["warehouse", "risk_drivers"])) is RISK_DRIVERS
    with pytest.raises(UnknownAssetTableError, match="nowhere"):
        table_for_asset(AssetKey("nowhere"))


def test_the_resource_gives_assets_the_same_warehouse(
    database_url: str, instance: DagsterInstance
) -> None:
    """An asset writing through WarehouseResource reaches the table the IO manager reads."""

    @asset(name="side_writer")
    def side_writer(warehouse: WarehouseResource) -> None:
        frame = per_month_summary(
            pd.DataFrame(
                {
                    "as_of_month": pd.to_datetime(["2024-05-01"]),
                    "account_id": [1],
                    "delinquency_streak": [4],
                }
            )
        )
        warehouse.database().replace_table(RISK_DRIVERS, frame)

    materialize(
        [side_writer],
        resources={"warehouse": WarehouseResource(url=database_url)},
        instance=instance,
    )

    assert plain_sql(database_url, "SELECT model_version, coefficient FROM risk_drivers") == [
        ("2024-05", 4.0)
    ]
