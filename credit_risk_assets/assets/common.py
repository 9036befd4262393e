"""What every asset module shares: partition windows as months, table metadata, lineage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)

from credit_risk_assets.warehouse.io_manager import COLUMNS_METADATA_KEY, MONTHS_OF_METADATA_KEY
from credit_risk_assets.warehouse.schema import TableSpec

RISK_TEAM = "team:credit-risk"
DATA_TEAM = "team:data-engineering"
WAREHOUSE_IO_MANAGER = "warehouse_io_manager"


def table_metadata(spec: TableSpec) -> dict[str, object]:
    """Definition metadata that shows the declared table schema and name in the UI."""
    schema: TableSchema = spec.dagster_schema()
    return {
        "dagster/column_schema": schema,
        "dagster/table_name": spec.name,
        "primary_key": ", ".join(spec.primary_key),
    }


def table_pool(spec: TableSpec) -> str:
    """The concurrency pool of the asset that writes this table: the table's own name.

    The instance gives every pool one slot (automation/instance.py), so two runs never write
    the same table at once.
    """
    return spec.name


def narrow_input(
    columns: Sequence[str] | None = None, months_of: TableSpec | None = None
) -> AssetIn:
    """An input read by the warehouse IO manager with only `columns`, and only over the span
    of months present in the table `months_of`: what a large book needs in memory, no more."""
    metadata: dict[str, object] = {}
    if columns is not None:
        metadata[COLUMNS_METADATA_KEY] = list(columns)
    if months_of is not None:
        metadata[MONTHS_OF_METADATA_KEY] = months_of.name
    return AssetIn(metadata=metadata)


def partition_months(context: AssetExecutionContext) -> list[pd.Timestamp]:
    """First days of the months in the run's partition or partition range, oldest first."""
    window = context.partition_time_window
    start = pd.Timestamp(window.start).tz_localize(None)
    end = pd.Timestamp(window.end).tz_localize(None)
    return list(pd.date_range(start, end, freq="MS", inclusive="left"))


def month_label(month: pd.Timestamp) -> str:
    """A month as YYYY-MM, the way users write it."""
    return pd.Timestamp(month).strftime("%Y-%m")


def months_text(months: Sequence[pd.Timestamp]) -> str:
    """A list of months as `YYYY-MM..YYYY-MM` when contiguous, else comma separated."""
    if not months:
        return "none"
    labels = [month_label(month) for month in months]
    expected = pd.date_range(months[0], periods=len(months), freq="MS")
    if len(labels) > 2 and list(expected) == [pd.Timestamp(m) for m in months]:
        return f"{labels[0]}..{labels[-1]}"
    return ", ".join(labels)


def column_lineage(deps: Mapping[str, Sequence[tuple[str, str]]]) -> TableColumnLineage:
    """Column lineage from {output column: [(upstream asset, upstream column), ...]}."""
    return TableColumnLineage(
        deps_by_column={
            column: [
                TableColumnDep(asset_key=AssetKey(asset), column_name=upstream)
                for asset, upstream in sources
            ]
            for column, sources in deps.items()
        }
    )


def missing_months(frame: pd.DataFrame, column: str, months: Sequence[pd.Timestamp]) -> list:
    """The months of `months` that have no row in `frame[column]`.

    Values that are no dates count for no month; the data contract rejects their rows.
    """
    dates = pd.to_datetime(frame[column], errors="coerce", format="ISO8601")
    # Distinct months first: a set of every row's Timestamp costs a Python object per row.
    present = set(dates.dropna().dt.to_period("M").dt.to_timestamp().unique())
    return [month for month in months if pd.Timestamp(month) not in present]
