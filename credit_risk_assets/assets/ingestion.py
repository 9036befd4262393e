"""The validated snapshot: source months copied into the warehouse after the data contract."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    Output,
    asset,
)
from pydantic import Field

from credit_risk_assets.assets.checks import (
    SOURCE_CONTRACT_SPEC,
    contract_failed,
    contract_passed,
    contract_tolerated,
)
from credit_risk_assets.assets.common import (
    DATA_TEAM,
    WAREHOUSE_IO_MANAGER,
    missing_months,
    months_text,
    partition_months,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.contract import (
    ContractResult,
    SourceContractError,
    SourceSchemaError,
    check_source_contract,
)
from credit_risk_assets.partitions import SINGLE_RUN_BACKFILL, PipelineWindows
from credit_risk_assets.tables import DELINQUENCY_SNAPSHOT, SOURCE_COLUMNS, SOURCE_REJECTS
from credit_risk_assets.warehouse.io_manager import WarehouseResource
from credit_risk_assets.warehouse.schema import SQL_TYPES
from credit_risk_assets.warehouse.source import SourceDatabase

# Characters a source value keeps in source_rejects (its columns are of kind "text").
REJECT_TEXT_LIMIT = SQL_TYPES["text"].length


class SnapshotConfig(Config):
    """How strict the source data contract is."""

    max_invalid_rows: int = Field(
        default=0,
        ge=0,
        description=(
            "Invalid source rows a month may hold and still pass: they are set aside in "
            "source_rejects and the month is written without them, with a warning."
        ),
    )


def _reject_text(values: pd.Series) -> pd.Series:
    """Source values as text that fits a source_rejects column.

    Longer text (only a source without types can hold it) is cut, and says how long it was,
    so that the row and its rule are still kept.
    """
    text = values.astype(str)
    lengths = text.str.len().fillna(0).astype("int64")
    cut = text.str.slice(0, REJECT_TEXT_LIMIT - 40) + " [cut from " + lengths.astype(str)
    return text.where(lengths <= REJECT_TEXT_LIMIT, cut + " chars]")


def rejects_frame(result: ContractResult, run_id: str, months: list[pd.Timestamp]) -> pd.DataFrame:
    """The contract's rejected rows in the shape of the source_rejects table, values as text."""
    rejects = result.rejects
    frame = pd.DataFrame(
        {
            column.name: _reject_text(values).where(values.notna(), None)
            for column in SOURCE_COLUMNS
            for values in [rejects[column.name]]
        }
    )
    parsed_cycle = pd.to_datetime(rejects["billing_cycle"], errors="coerce")
    frame["billing_month"] = parsed_cycle.dt.to_period("M").dt.to_timestamp().fillna(months[0])
    frame["run_id"] = run_id
    frame["source_row"] = rejects["source_row"].astype("int64")
    frame["rule"] = rejects["rule"].astype(str)
    frame["rejected_at"] = pd.Timestamp(datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    return frame[list(SOURCE_REJECTS.column_names)]


def build_ingestion_assets(windows: PipelineWindows) -> list[AssetsDefinition]:
    """The delinquency_snapshot asset on the monthly partitions of these windows."""

    @asset(
        name="delinquency_snapshot",
        partitions_def=windows.months,
        backfill_policy=SINGLE_RUN_BACKFILL,
        io_manager_key=WAREHOUSE_IO_MANAGER,
        pool=table_pool(DELINQUENCY_SNAPSHOT),
        group_name="ingestion",
        kinds={"mysql", "pandas"},
        owners=[DATA_TEAM],
        metadata=table_metadata(DELINQUENCY_SNAPSHOT),
        check_specs=[SOURCE_CONTRACT_SPEC],
    )
    def delinquency_snapshot(
        context: AssetExecutionContext,
        config: SnapshotConfig,
        source_database: SourceDatabase,
        warehouse: WarehouseResource,
    ) -> Iterator[Output | AssetCheckResult]:
        """Validated copy of the source months: one row per account and billing cycle."""
        months = partition_months(context)
        period = months_text(months)
        end = months[-1] + pd.DateOffset(months=1)
        raw = source_database.read_months(months[0], end)

        # The check result goes out before the Failure, so the UI shows why the month failed.
        empty = missing_months(raw, "billing_cycle", months) if len(raw) else months
        if empty:
            message = (
                f"Source table {source_database.table} has no rows for billing month(s) "
                f"{months_text(empty)}. Load the month into the source, then re-materialise; "
                "the warehouse keeps its previous copy."
            )
            yield contract_failed(message, period)
            raise Failure(description=message)

        # Rows of no month (NULL or garbage billing_cycle) would be skipped unseen otherwise.
        undated = source_database.undated_rows()
        if len(undated):
            raw = pd.concat([raw, undated], ignore_index=True)

        try:
            result = check_source_contract(raw, months[0], end)
        except SourceSchemaError as error:
            message = f"{error} Nothing was written for {period}."
            yield contract_failed(message, period)
            raise Failure(description=message) from error

        rejected_rows = result.rejected_rows
        if rejected_rows:
            written = warehouse.database().append(
                SOURCE_REJECTS, rejects_frame(result, context.run.run_id, months)
            )
            context.log.info(f"Kept {written} rejected row-rules in {SOURCE_REJECTS.name}")
        if rejected_rows > config.max_invalid_rows:
            error = SourceContractError(result, period)
            message = (
                f"{error} Rejected rows are in table {SOURCE_REJECTS.name} "
                f"(run_id {context.run.run_id})."
            )
            yield contract_failed(message, period, result)
            raise Failure(
                description=message,
                metadata={f"rule/{rule}": count for rule, count in result.rule_counts.items()},
            ) from error
        if rejected_rows:
            context.log.warning(
                f"{rejected_rows} invalid rows set aside in {SOURCE_REJECTS.name} "
                f"(tolerance {config.max_invalid_rows}): {result.rule_counts}"
            )

        yield Output(
            result.valid,
            metadata={
                "months": period,
                "source_rows": len(raw),
                "rejected_rows": int(rejected_rows),
                **{f"rule/{rule}": count for rule, count in result.rule_counts.items()},
            },
        )
        if rejected_rows:
            yield contract_tolerated(result, period, config.max_invalid_rows)
        else:
            yield contract_passed(result, period)

    return [delinquency_snapshot]
