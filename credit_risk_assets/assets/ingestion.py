"""The validated snapshot: source months copied into the warehouse after the data contract."""

from datetime import UTC, datetime

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Config, Failure, asset
from pydantic import Field

from credit_risk_assets.assets.common import (
    DATA_TEAM,
    WAREHOUSE_IO_MANAGER,
    missing_months,
    months_text,
    partition_months,
    table_metadata,
)
from credit_risk_assets.compute.contract import (
    ContractResult,
    SourceContractError,
    check_source_contract,
)
from credit_risk_assets.partitions import SINGLE_RUN_BACKFILL, PipelineWindows
from credit_risk_assets.tables import DELINQUENCY_SNAPSHOT, SOURCE_COLUMNS, SOURCE_REJECTS
from credit_risk_assets.warehouse.io_manager import WarehouseResource
from credit_risk_assets.warehouse.source import SourceDatabase


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


def rejects_frame(result: ContractResult, run_id: str, months: list[pd.Timestamp]) -> pd.DataFrame:
    """The contract's rejected rows in the shape of the source_rejects table, values as text."""
    rejects = result.rejects
    frame = pd.DataFrame(
        {
            column.name: rejects[column.name].astype(str).where(rejects[column.name].notna(), None)
            for column in SOURCE_COLUMNS
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
        group_name="ingestion",
        kinds={"mysql", "pandas"},
        owners=[DATA_TEAM],
        metadata=table_metadata(DELINQUENCY_SNAPSHOT),
    )
    def delinquency_snapshot(
        context: AssetExecutionContext,
        config: SnapshotConfig,
        source_database: SourceDatabase,
        warehouse: WarehouseResource,
    ) -> pd.DataFrame:
        """Validated copy of the source months: one row per account and billing cycle."""
        months = partition_months(context)
        end = months[-1] + pd.DateOffset(months=1)
        raw = source_database.read_months(months[0], end)

        empty = missing_months(raw, "billing_cycle", months) if len(raw) else months
        if empty:
            raise Failure(
                description=(
                    f"Source table {source_database.table} has no rows for billing month(s) "
                    f"{months_text(empty)}. Load the month into the source, then re-materialise; "
                    "the warehouse keeps its previous copy."
                )
            )

        result = check_source_contract(raw, months[0], end)
        rejected_rows = result.rejected_rows
        if rejected_rows:
            written = warehouse.database().append(
                SOURCE_REJECTS, rejects_frame(result, context.run.run_id, months)
            )
            context.log.info(f"Kept {written} rejected row-rules in {SOURCE_REJECTS.name}")
        if rejected_rows > config.max_invalid_rows:
            error = SourceContractError(result, months_text(months))
            raise Failure(
                description=f"{error} Rejected rows are in table {SOURCE_REJECTS.name} "
                f"(run_id {context.run.run_id}).",
                metadata={f"rule/{rule}": count for rule, count in result.rule_counts.items()},
            ) from error
        if rejected_rows:
            context.log.warning(
                f"{rejected_rows} invalid rows set aside in {SOURCE_REJECTS.name} "
                f"(tolerance {config.max_invalid_rows}): {result.rule_counts}"
            )

        context.add_output_metadata(
            {
                "months": months_text(months),
                "source_rows": len(raw),
                "rejected_rows": int(rejected_rows),
                **{f"rule/{rule}": count for rule, count in result.rule_counts.items()},
            }
        )
        return result.valid

    return [delinquency_snapshot]
