"""Tables shaped for Power BI: the book by month, segment and grade, with observed outcomes."""

import pandas as pd
import sqlalchemy as sa
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MetadataValue, asset

from credit_risk_assets.assets.common import (
    DATA_TEAM,
    RISK_TEAM,
    WAREHOUSE_IO_MANAGER,
    column_lineage,
    month_label,
    months_text,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.plots import markdown_image, pd_histogram_png
from credit_risk_assets.compute.validation import (
    SEGMENT_COUNT_COLUMNS,
    SUMMARY_GROUPS,
    summary_from_counts,
)
from credit_risk_assets.partitions import PipelineWindows
from credit_risk_assets.tables import DEFAULT_FLAGS, RISK_SCORES, RISK_SEGMENT_SUMMARY
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.io_manager import WarehouseResource

SCORES, LABELS = RISK_SCORES.name, DEFAULT_FLAGS.name

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
        # Read through SQL, not the IO manager: the database sums every scored month and
        # sends back one row per group, so a daily refresh never reads the book's history.
        deps=[AssetKey(SCORES), AssetKey(LABELS)],
    )
    def risk_segment_summary(
        context: AssetExecutionContext, warehouse: WarehouseResource
    ) -> pd.DataFrame:
        """Accounts, mean PD and observed default rate per month, risk segment and grade."""
        database = warehouse.database()
        mature_months = labelled_months_in(database)
        counts = segment_counts_in(database, with_labels=bool(mature_months))
        summary = summary_from_counts(counts, mature_months)

        context.add_output_metadata(_summary_metadata(summary, database))
        return summary

    return [risk_segment_summary]


def segment_counts_in(database: WarehouseDatabase, *, with_labels: bool) -> pd.DataFrame:
    """`compute.validation.segment_counts` of the warehouse's risk_scores and default_flags,
    summed by the database. Without labels (no month is mature yet, and the table of labels
    may not exist) nothing is labelled."""
    if database.month_span(RISK_SCORES) is None:
        return pd.DataFrame(columns=list(SEGMENT_COUNT_COLUMNS))

    scores = RISK_SCORES.sqlalchemy_table(sa.MetaData())
    groups = [scores.c[name] for name in SUMMARY_GROUPS]
    sums = [
        sa.func.count().label("accounts"),
        sa.func.avg(scores.c.pd_score).label("mean_pd"),
        sa.func.sum(scores.c.pd_score).label("expected_defaults"),
    ]
    if not with_labels:
        query = sa.select(
            *groups,
            *sums,
            sa.literal(0).label("labelled_accounts"),
            sa.literal(0).label("observed_defaults"),
        )
    else:
        labels = DEFAULT_FLAGS.sqlalchemy_table(sa.MetaData())
        on_keys = sa.and_(
            labels.c.as_of_month == scores.c.as_of_month,
            labels.c.account_id == scores.c.account_id,
        )
        query = sa.select(
            *groups,
            *sums,
            sa.func.count(labels.c.account_id).label("labelled_accounts"),
            sa.func.sum(labels.c.default_flag).label("observed_defaults"),
        ).select_from(scores.outerjoin(labels, on_keys))

    with database.engine.connect() as connection:
        rows = connection.execute(query.group_by(*groups)).all()
    counts = pd.DataFrame(rows, columns=list(SEGMENT_COUNT_COLUMNS))
    # MySQL sums integers as DECIMAL and SQLite returns dates as text.
    numbers = list(SEGMENT_COUNT_COLUMNS[len(SUMMARY_GROUPS) :])
    counts[numbers] = counts[numbers].astype("float64")
    return counts


def labelled_months_in(database: WarehouseDatabase) -> list[pd.Timestamp]:
    """The as-of months that have labels in the warehouse (the mature months)."""
    if database.month_span(DEFAULT_FLAGS) is None:
        return []
    labels = DEFAULT_FLAGS.sqlalchemy_table(sa.MetaData())
    with database.engine.connect() as connection:
        months = connection.execute(sa.select(labels.c.as_of_month).distinct()).scalars()
        return [pd.Timestamp(month) for month in months]


def _summary_metadata(summary: pd.DataFrame, database: WarehouseDatabase) -> dict[str, object]:
    months = sorted(summary["as_of_month"].unique())
    mature = sorted(summary.loc[summary["is_mature"] == 1, "as_of_month"].unique())
    metadata: dict[str, object] = {
        "dagster/column_lineage": column_lineage(SUMMARY_LINEAGE),
        "as_of_months": months_text(months),
        "mature_months": months_text(mature),
    }
    if not months:
        return metadata

    latest = pd.Timestamp(months[-1])
    scores = database.read(
        RISK_SCORES,
        latest,
        latest + pd.DateOffset(months=1),
        columns=["pd_score", "risk_segment", "in_default"],
    )
    performing = scores[scores["in_default"] == 0]
    title = f"PD by segment, {month_label(latest)} (not in default)"
    picture = pd_histogram_png(performing["pd_score"], performing["risk_segment"], title)
    metadata["pd_by_segment"] = MetadataValue.md(markdown_image(picture, title))
    return metadata
