"""Tables shaped for Power BI: the book by month, segment and grade, with observed outcomes."""

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, MetadataValue, asset

from credit_risk_assets.assets.common import (
    DATA_TEAM,
    RISK_TEAM,
    WAREHOUSE_IO_MANAGER,
    column_lineage,
    month_label,
    months_text,
    narrow_input,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.model import LABEL_COLUMNS
from credit_risk_assets.compute.plots import markdown_image, pd_histogram_png
from credit_risk_assets.compute.validation import segment_summary
from credit_risk_assets.partitions import PipelineWindows
from credit_risk_assets.tables import RISK_SEGMENT_SUMMARY

SCORES, LABELS = "risk_scores", "default_flags"
# The columns of risk_scores the summary and its picture use.
SUMMARY_SCORE_COLUMNS = (
    "as_of_month",
    "account_id",
    "pd_score",
    "risk_segment",
    "risk_grade",
    "in_default",
)

SUMMARY_LINEAGE = {
    "as_of_month": [(SCORES, "as_of_month")],
    "risk_segment": [(SCORES, "risk_segment")],
    "risk_grade": [(SCORES, "risk_grade")],
    "grade_order": [(SCORES, "risk_grade")],
    "accounts": [(SCORES, "account_id")],
    "mean_pd": [(SCORES, "pd_score")],
    "expected_defaults": [(SCORES, "pd_score")],
    "is_mature": [(LABELS, "as_of_month")],
    "labelled_accounts": [(LABELS, "account_id")],
    "observed_defaults": [(LABELS, "default_flag")],
    "observed_default_rate": [(LABELS, "default_flag")],
}


def build_reporting_assets(windows: PipelineWindows) -> list[AssetsDefinition]:
    """risk_segment_summary over every scored month."""

    @asset(
        name="risk_segment_summary",
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name="scoring",
        kinds={"mysql", "pandas"},
        owners=[RISK_TEAM, DATA_TEAM],
        metadata=table_metadata(RISK_SEGMENT_SUMMARY),
        pool=table_pool(RISK_SEGMENT_SUMMARY),
        ins={SCORES: narrow_input(SUMMARY_SCORE_COLUMNS), LABELS: narrow_input(LABEL_COLUMNS)},
    )
    def risk_segment_summary(
        context: AssetExecutionContext, risk_scores: pd.DataFrame, default_flags: pd.DataFrame
    ) -> pd.DataFrame:
        """Accounts, mean PD and observed default rate per month, risk segment and grade."""
        summary = segment_summary(risk_scores, default_flags)

        context.add_output_metadata(_summary_metadata(summary, risk_scores))
        return summary

    return [risk_segment_summary]


def _summary_metadata(summary: pd.DataFrame, risk_scores: pd.DataFrame) -> dict[str, object]:
    months = sorted(pd.to_datetime(summary["as_of_month"]).unique())
    metadata: dict[str, object] = {
        "dagster/column_lineage": column_lineage(SUMMARY_LINEAGE),
        "as_of_months": months_text(months),
        "mature_months": months_text(
            sorted(pd.to_datetime(summary.loc[summary["is_mature"] == 1, "as_of_month"]).unique())
        ),
    }
    if not months:
        return metadata

    latest = risk_scores[pd.to_datetime(risk_scores["as_of_month"]) == months[-1]]
    performing = latest[latest["in_default"] == 0]
    title = f"PD by segment, {month_label(months[-1])} (not in default)"
    picture = pd_histogram_png(performing["pd_score"], performing["risk_segment"], title)
    metadata["pd_by_segment"] = MetadataValue.md(markdown_image(picture, title))
    return metadata
