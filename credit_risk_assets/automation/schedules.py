"""The daily refresh and the monthly retrain: their jobs, schedules and the freshness they promise.

Both schedules are on by default, so that a daemon (`dagster dev`, or `dagster-daemon run` in
production) runs them with no click in the UI. Their times are AutomationSettings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    FreshnessPolicy,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._utils.schedules import get_smallest_cron_interval

from credit_risk_assets.assets.common import months_text
from credit_risk_assets.automation.planning import (
    daily_refresh_months,
    daily_refresh_selection,
    retrain_label_months,
    retrain_selection,
)
from credit_risk_assets.automation.settings import AutomationSettings
from credit_risk_assets.partitions import PipelineWindows

DAILY_REFRESH = "daily_refresh"
MONTHLY_RETRAIN = "monthly_retrain"
DAILY_REFRESH_JOB = "daily_refresh_job"
MONTHLY_RETRAIN_JOB = "monthly_retrain_job"

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TRIGGER_TAG = "credit_risk/trigger"
MONTHS_TAG = "credit_risk/months"

# How late the daily refresh may finish before account_risk_scores counts as stale.
FRESHNESS_GRACE = timedelta(hours=2)


def freshness_policy(settings: AutomationSettings) -> FreshnessPolicy:
    """Fresh while the latest daily refresh is at most one schedule interval plus grace old.

    A missed or failed refresh turns the asset to WARN an hour after the next run was due
    to finish, and to FAIL at the end of the grace.
    """
    interval = get_smallest_cron_interval(settings.daily_refresh_cron, settings.timezone)
    return FreshnessPolicy.time_window(
        fail_window=interval + FRESHNESS_GRACE,
        warn_window=interval + FRESHNESS_GRACE / 2,
    )


def with_freshness_policy(
    assets: Sequence[AssetsDefinition], asset_name: str, policy: FreshnessPolicy
) -> list[AssetsDefinition]:
    """The assets, with `policy` set on the asset called `asset_name`."""

    def apply(spec):
        if spec.key.to_user_string() != asset_name:
            return spec
        return spec.replace_attributes(freshness_policy=policy)

    return [
        asset.map_asset_specs(apply)
        if any(key.to_user_string() == asset_name for key in asset.keys)
        else asset
        for asset in assets
    ]


def build_jobs(
    graph: BaseAssetGraph, windows: PipelineWindows
) -> list[UnresolvedAssetJobDefinition]:
    """The daily refresh job (monthly partitions) and the monthly retrain job (label months)."""
    daily = daily_refresh_selection(graph, windows)
    retrain = retrain_selection(graph)
    return [
        define_asset_job(
            DAILY_REFRESH_JOB,
            selection=AssetSelection.assets(*daily),
            description=(
                "Snapshot, features, streaks and scores of a range of months, then the tables "
                "built from them (account_risk_scores). Run by the daily_refresh schedule."
            ),
        ),
        define_asset_job(
            MONTHLY_RETRAIN_JOB,
            selection=AssetSelection.assets(*retrain),
            description=(
                "Labels of a range of label months, then the model, its drivers and its "
                "validation. Run by the monthly_retrain schedule, or on demand."
            ),
        ),
    ]


def _range_tags(keys: Sequence[str], trigger: str) -> dict[str, str]:
    return {
        RANGE_START_TAG: keys[0],
        RANGE_END_TAG: keys[-1],
        TRIGGER_TAG: trigger,
        MONTHS_TAG: months_text([datetime.fromisoformat(key) for key in keys]),
    }


def _evaluation_time(context: ScheduleEvaluationContext) -> datetime:
    return context.scheduled_execution_time or datetime.now(UTC)


def build_schedules(
    windows: PipelineWindows,
    jobs: Sequence[UnresolvedAssetJobDefinition],
    settings: AutomationSettings,
) -> list[ScheduleDefinition]:
    """daily_refresh and monthly_retrain, both running by default."""
    jobs_by_name = {job.name: job for job in jobs}

    @schedule(
        name=DAILY_REFRESH,
        cron_schedule=settings.daily_refresh_cron,
        execution_timezone=settings.timezone,
        job=jobs_by_name[DAILY_REFRESH_JOB],
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Re-reads the previous and the current billing month from the source (their "
            "days_past_due still move), recomputes their features, streaks and scores, and "
            "publishes account_risk_scores. On the first of the month the month that has just "
            "closed is re-read once more."
        ),
    )
    def daily_refresh(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        months = daily_refresh_months(windows, _evaluation_time(context))
        if not months:
            return SkipReason("No monthly partition exists yet for the previous or current month.")
        return RunRequest(tags=_range_tags(months, DAILY_REFRESH))

    @schedule(
        name=MONTHLY_RETRAIN,
        cron_schedule=settings.monthly_retrain_cron,
        execution_timezone=settings.timezone,
        job=jobs_by_name[MONTHLY_RETRAIN_JOB],
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Labels the month that has become mature (and relabels the month before it, whose "
            "window has now closed), then refits pd_model and rebuilds its drivers and "
            "validation. The next daily refresh scores with the new model."
        ),
    )
    def monthly_retrain(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        label_months = retrain_label_months(windows, _evaluation_time(context))
        if not label_months:
            return SkipReason(
                "No label month is mature yet: a label needs the months of its performance "
                "window to be complete."
            )
        return RunRequest(tags=_range_tags(label_months, MONTHLY_RETRAIN))

    return [daily_refresh, monthly_retrain]
