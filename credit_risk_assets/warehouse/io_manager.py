"""The Dagster side of the warehouse: an IO manager for asset tables and a resource for the rest.

Each asset is stored in the warehouse table of its own name, declared in `tables.TABLES`.
Monthly assets write and read windows of months; unpartitioned assets are swapped in whole.
"""

from __future__ import annotations

import pandas as pd
from dagster import (
    AssetKey,
    ConfigurableIOManager,
    ConfigurableResource,
    InitResourceContext,
    InputContext,
    OutputContext,
)
from pydantic import Field, PrivateAttr

from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.schema import TableSpec

URL_DESCRIPTION = (
    "SQLAlchemy URL of the warehouse database: mysql+pymysql://user:password@host:3306/db or "
    "sqlite:///path/warehouse.db. Give it as EnvVar('CREDIT_RISK_WAREHOUSE_URL') so that the "
    "password never shows in the UI."
)

# Input metadata that asks for the latest month present in the upstream window only.
PARTITIONS_METADATA_KEY = "partitions"
LATEST_PARTITIONS = "latest"
# Input metadata naming the only columns an asset uses, so that a read of a large book brings
# nothing else into memory.
COLUMNS_METADATA_KEY = "columns"
# Input metadata naming another declared table: only the months from its first to its last
# month are read (a model needs features of the labelled months only).
MONTHS_OF_METADATA_KEY = "months_of"


class UnknownAssetTableError(LookupError):
    """An asset stored by the warehouse IO manager has no declared table."""


def table_for_asset(asset_key: AssetKey) -> TableSpec:
    """The declared table of the asset: the TABLES entry named like the asset's last key part."""
    name = asset_key.path[-1]
    if name not in TABLES:
        raise UnknownAssetTableError(
            f"Asset {asset_key.to_user_string()} has no declared warehouse table {name!r}: add a "
            "TableSpec of that name to TABLES in credit_risk_assets/tables.py, or give the asset "
            f"another IO manager. Declared tables: {sorted(TABLES)}."
        )
    return TABLES[name]


class WarehouseIOManager(ConfigurableIOManager):
    """Stores asset frames in warehouse tables created from their declared schema.

    A monthly asset's output replaces the months of its partition window in one
    transaction; an unpartitioned asset's output replaces its table atomically. Inputs read
    the upstream partition window, or with input metadata {"partitions": "latest"} only the
    latest month present in it.
    """

    url: str = Field(description=URL_DESCRIPTION)

    _database: WarehouseDatabase | None = PrivateAttr(default=None)

    def database(self) -> WarehouseDatabase:
        """The warehouse client of this IO manager, created on first use."""
        if self._database is None:
            self._database = WarehouseDatabase(self.url)
        return self._database

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._database is not None:
            self._database.dispose()

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"Asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; the "
                "warehouse IO manager stores pandas DataFrames only."
            )
        spec = table_for_asset(context.asset_key)
        database = self.database()

        metadata: dict[str, object] = {}
        if context.has_asset_partitions:
            window = context.asset_partitions_time_window
            rows = database.replace_months(spec, obj, window.start, window.end)
            metadata["partition_window"] = f"{window.start:%Y-%m-%d}..{window.end:%Y-%m-%d}"
        else:
            rows = database.replace_table(spec, obj)

        context.add_output_metadata(
            {
                "dagster/row_count": rows,
                "dagster/table_name": database.table_name(spec),
                "dagster/uri": database.table_uri(spec),
                **metadata,
            }
        )

    def load_input(self, context: InputContext) -> pd.DataFrame:
        spec = table_for_asset(context.asset_key)
        database = self.database()
        requested = context.definition_metadata or {}
        columns = _requested_columns(context, spec)

        start = end = None
        if context.has_asset_partitions:
            # An unpartitioned asset downstream of monthly ones is handed every key; months
            # never materialised are simply absent from the read.
            if not context.asset_partition_keys:
                return spec.empty_frame(columns)
            window = context.asset_partitions_time_window
            start, end = window.start, window.end

        if MONTHS_OF_METADATA_KEY in requested:
            span = database.month_span(_months_of_table(context, requested), start, end)
            if span is None:
                return spec.empty_frame(columns)
            start, end = span[0], span[1] + pd.DateOffset(months=1)
        if _reads_latest_month(context):
            latest = database.latest_month(spec, start, end)
            if latest is None:
                return spec.empty_frame(columns)
            start, end = latest, latest + pd.DateOffset(months=1)
        return database.read(spec, start, end, columns=columns)


def _reads_latest_month(context: InputContext) -> bool:
    requested = (context.definition_metadata or {}).get(PARTITIONS_METADATA_KEY)
    if requested is None:
        return False
    if requested != LATEST_PARTITIONS:
        raise ValueError(
            f"Input {context.name!r} asks for partitions={requested!r}; the warehouse IO manager "
            f"knows only {LATEST_PARTITIONS!r} (the latest month present in the upstream window)."
        )
    return True


def _requested_columns(context: InputContext, spec: TableSpec) -> list[str] | None:
    """The columns the input's metadata asks for (checked against the table), or None for all."""
    columns = (context.definition_metadata or {}).get(COLUMNS_METADATA_KEY)
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(name, str) for name in columns):
        raise ValueError(
            f"Input {context.name!r} asks for columns={columns!r}; give a list of column names "
            f"of {spec.name!r}."
        )
    spec.select_columns(columns)
    return list(columns)


def _months_of_table(context: InputContext, requested: dict) -> TableSpec:
    name = requested[MONTHS_OF_METADATA_KEY]
    if name not in TABLES or TABLES[name].partition_column is None:
        monthly = sorted(n for n, spec in TABLES.items() if spec.partition_column is not None)
        raise ValueError(
            f"Input {context.name!r} asks for months_of={name!r}; give one of the monthly "
            f"tables {monthly}."
        )
    return TABLES[name]


class WarehouseResource(ConfigurableResource):
    """The warehouse database for assets that read it directly or write side tables (rejects)."""

    url: str = Field(description=URL_DESCRIPTION)

    _database: WarehouseDatabase | None = PrivateAttr(default=None)

    def database(self) -> WarehouseDatabase:
        """The warehouse client of this resource, created on first use."""
        if self._database is None:
            self._database = WarehouseDatabase(self.url)
        return self._database

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._database is not None:
            self._database.dispose()
