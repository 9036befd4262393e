"""Scores of every account as of T, and the latest month's scores that Power BI reads."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, Failure, asset
from pydantic import Field

from credit_risk_assets.assets.checks import PdRangeError, require_valid_pds
from credit_risk_assets.assets.common import (
    DATA_TEAM,
    RISK_TEAM,
    WAREHOUSE_IO_MANAGER,
    column_lineage,
    month_label,
    months_text,
    partition_months,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.model import PdModel
from credit_risk_assets.compute.scoring import (
    DEFAULT_SEGMENT_EDGES,
    SEGMENT_LABELS,
    PointsScale,
    score_accounts,
)
from credit_risk_assets.partitions import SINGLE_RUN_BACKFILL, PipelineWindows
from credit_risk_assets.tables import ACCOUNT_RISK_SCORES, RISK_SCORES

FEATURES, STREAKS, MODEL = "account_features", "streaks", "pd_model"

_MODEL_COLUMNS = [(MODEL, "coefficient"), (MODEL, "intercept"), (MODEL, "scaler_mean")]
SCORE_LINEAGE = {
    "as_of_month": [(FEATURES, "as_of_month")],
    "account_id": [(FEATURES, "account_id")],
    "pd_score": [(FEATURES, "avg_dpd"), (STREAKS, "delinquency_streak"), *_MODEL_COLUMNS],
    "risk_segment": [(FEATURES, "avg_dpd"), (STREAKS, "delinquency_streak"), *_MODEL_COLUMNS],
    "credit_score": [(FEATURES, "avg_dpd"), (STREAKS, "delinquency_streak"), *_MODEL_COLUMNS],
    "risk_grade": [(FEATURES, "current_dpd"), *_MODEL_COLUMNS],
    "reason_code_1": [(MODEL, "feature"), (MODEL, "coefficient")],
    "reason_code_2": [(MODEL, "feature"), (MODEL, "coefficient")],
    "reason_code_3": [(MODEL, "feature"), (MODEL, "coefficient")],
    "in_default": [(FEATURES, "current_dpd")],
    "model_version": [(MODEL, "model_version")],
    "avg_dpd": [(FEATURES, "avg_dpd")],
    "max_dpd": [(FEATURES, "max_dpd")],
    "delinquency_ratio": [(FEATURES, "delinquency_ratio")],
    "delinquency_streak": [(STREAKS, "delinquency_streak")],
}


class ScoringConfig(Config):
    """How PDs become segments and points."""

    segment_edges: list[float] = Field(
        default=list(DEFAULT_SEGMENT_EDGES),
        description="PD edges between Low|Medium and Medium|High; each lower edge is inclusive.",
    )
    base_points: float = Field(600.0, description="Score at the base odds.")
    base_odds: float = Field(50.0, gt=0, description="Good:bad odds that score base_points.")
    points_to_double_odds: float = Field(20.0, gt=0, description="Points per doubling of odds.")


def segment_counts(scores: pd.DataFrame) -> dict[str, int]:
    """Accounts per risk segment, every segment present even when empty."""
    counts = scores["risk_segment"].value_counts()
    return {segment: int(counts.get(segment, 0)) for segment in SEGMENT_LABELS}


def build_scoring_assets(windows: PipelineWindows) -> list[AssetsDefinition]:
    """risk_scores by month and account_risk_scores for the latest scored month."""

    @asset(
        name="risk_scores",
        pool=table_pool(RISK_SCORES),
        partitions_def=windows.months,
        backfill_policy=SINGLE_RUN_BACKFILL,
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name="scoring",
        kinds={"mysql", "pandas"},
        owners=[RISK_TEAM],
        metadata=table_metadata(RISK_SCORES),
        ins={FEATURES: AssetIn(), STREAKS: AssetIn(), MODEL: AssetIn()},
    )
    def risk_scores(
        context: AssetExecutionContext,
        config: ScoringConfig,
        account_features: pd.DataFrame,
        streaks: pd.DataFrame,
        pd_model: pd.DataFrame,
    ) -> pd.DataFrame:
        """PD, segment, points, grade and reason codes of each account with a row in month T."""
        months = partition_months(context)
        if pd_model.empty:
            raise Failure(description="pd_model is empty: materialise pd_model before scoring.")
        model = PdModel.from_parameters_table(pd_model)

        scores = score_accounts(
            account_features,
            streaks,
            model,
            segment_edges=tuple(config.segment_edges),
            points=PointsScale(
                base_points=config.base_points,
                base_odds=config.base_odds,
                points_to_double_odds=config.points_to_double_odds,
            ),
        )

        context.add_output_metadata(
            {
                "dagster/column_lineage": column_lineage(SCORE_LINEAGE),
                "as_of_months": months_text(months),
                "model_version": model.model_version,
                "mean_pd": float(scores["pd_score"].mean()) if len(scores) else 0.0,
                **{f"segment/{name}": count for name, count in segment_counts(scores).items()},
            }
        )
        return scores

    @asset(
        name="account_risk_scores",
        pool=table_pool(ACCOUNT_RISK_SCORES),
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name="scoring",
        kinds={"mysql", "pandas"},
        owners=[RISK_TEAM, DATA_TEAM],
        metadata=table_metadata(ACCOUNT_RISK_SCORES),
        ins={"risk_scores": AssetIn(metadata={"partitions": "latest"})},
    )
    def account_risk_scores(
        context: AssetExecutionContext, risk_scores: pd.DataFrame
    ) -> pd.DataFrame:
        """The latest scored month, one row per account, the notebook's seven columns first."""
        if risk_scores.empty:
            raise Failure(description="risk_scores holds no month: materialise risk_scores first.")
        latest = risk_scores["as_of_month"].max()
        try:
            # Checked before writing: a run that skipped the blocking checks on risk_scores
            # (a backfill runs them in another run) must not publish a bad PD either.
            require_valid_pds(risk_scores, ACCOUNT_RISK_SCORES.name)
        except PdRangeError as error:
            raise Failure(description=str(error)) from error

        context.add_output_metadata(
            {
                "dagster/column_lineage": column_lineage(
                    {name: [("risk_scores", name)] for name in ACCOUNT_RISK_SCORES.column_names}
                ),
                "as_of_month": month_label(latest),
                **{f"segment/{name}": count for name, count in segment_counts(risk_scores).items()},
            }
        )
        return risk_scores[list(ACCOUNT_RISK_SCORES.column_names)]

    return [risk_scores, account_risk_scores]
