"""Account behaviour over the lookback window: features and delinquency streaks as of T."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Failure, asset

from credit_risk_assets.assets.common import (
    RISK_TEAM,
    WAREHOUSE_IO_MANAGER,
    column_lineage,
    missing_months,
    months_text,
    partition_months,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.features import account_features as compute_features
from credit_risk_assets.compute.features import account_streaks as compute_streaks
from credit_risk_assets.partitions import SINGLE_RUN_BACKFILL, PipelineWindows
from credit_risk_assets.tables import ACCOUNT_FEATURES, STREAKS

SNAPSHOT = "delinquency_snapshot"

FEATURE_LINEAGE = {
    "as_of_month": [(SNAPSHOT, "billing_cycle")],
    "account_id": [(SNAPSHOT, "account_id")],
    "avg_dpd": [(SNAPSHOT, "days_past_due")],
    "max_dpd": [(SNAPSHOT, "days_past_due")],
    "delinquency_ratio": [(SNAPSHOT, "is_delinquent")],
    "severe_delinquency_count": [(SNAPSHOT, "days_past_due")],
    "default_like_cycles": [(SNAPSHOT, "days_past_due")],
    "recent_avg_dpd_3m": [(SNAPSHOT, "days_past_due"), (SNAPSHOT, "billing_cycle")],
    "months_observed": [(SNAPSHOT, "billing_cycle")],
    "current_dpd": [(SNAPSHOT, "days_past_due"), (SNAPSHOT, "billing_cycle")],
}

STREAK_LINEAGE = {
    "as_of_month": [(SNAPSHOT, "billing_cycle")],
    "account_id": [(SNAPSHOT, "account_id")],
    "delinquency_streak": [(SNAPSHOT, "is_delinquent"), (SNAPSHOT, "billing_cycle")],
    "current_streak": [(SNAPSHOT, "is_delinquent"), (SNAPSHOT, "billing_cycle")],
}


def require_as_of_months(snapshot: pd.DataFrame, months: list[pd.Timestamp]) -> None:
    """Refuse to compute as of a month whose own snapshot was never materialised."""
    absent = missing_months(snapshot, "billing_cycle", months)
    if absent:
        raise Failure(
            description=(
                f"delinquency_snapshot has no rows for {months_text(absent)} in the warehouse. "
                "Materialise delinquency_snapshot for those months first."
            )
        )


def build_feature_assets(windows: PipelineWindows) -> list[AssetsDefinition]:
    """account_features and streaks, each reading the lookback window of the snapshot."""
    shared = {
        "partitions_def": windows.months,
        "backfill_policy": SINGLE_RUN_BACKFILL,
        "io_manager_key": WAREHOUSE_IO_MANAGER,
        "group_name": "features",
        "kinds": {"mysql", "pandas"},
        "owners": [RISK_TEAM],
        "ins": {SNAPSHOT: AssetIn(partition_mapping=windows.lookback)},
    }
    lookback_text = (
        "all history" if windows.lookback_months == 0 else f"{windows.lookback_months} months"
    )

    @asset(
        name="account_features",
        metadata=table_metadata(ACCOUNT_FEATURES),
        pool=table_pool(ACCOUNT_FEATURES),
        **shared,
    )
    def account_features(
        context: AssetExecutionContext, delinquency_snapshot: pd.DataFrame
    ) -> pd.DataFrame:
        """Behaviour features of each account as of T over its lookback window."""
        months = partition_months(context)
        require_as_of_months(delinquency_snapshot, months)

        features = compute_features(delinquency_snapshot, months, windows.lookback_months)

        context.add_output_metadata(
            {
                "dagster/column_lineage": column_lineage(FEATURE_LINEAGE),
                "as_of_months": months_text(months),
                "lookback": lookback_text,
                "snapshot_rows_read": len(delinquency_snapshot),
            }
        )
        return features

    @asset(name="streaks", metadata=table_metadata(STREAKS), pool=table_pool(STREAKS), **shared)
    def streaks(context: AssetExecutionContext, delinquency_snapshot: pd.DataFrame) -> pd.DataFrame:
        """Longest and current runs of delinquent cycles of each account as of T."""
        months = partition_months(context)
        require_as_of_months(delinquency_snapshot, months)

        runs = compute_streaks(delinquency_snapshot, months, windows.lookback_months)

        context.add_output_metadata(
            {
                "dagster/column_lineage": column_lineage(STREAK_LINEAGE),
                "as_of_months": months_text(months),
                "lookback": lookback_text,
            }
        )
        return runs

    return [account_features, streaks]
