"""Materialise the whole pipeline over a range of months as a few range runs on an instance.

Dagster refuses one run over assets with different partitions, so the pipeline runs as five
stages in dependency order, each one run over its whole range of months.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from dagster import AssetsDefinition, DagsterInstance, materialize

from credit_risk_assets.assets.common import months_text
from credit_risk_assets.definitions import build_assets, build_resources
from credit_risk_assets.settings import Settings
from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.source import SourceDatabase

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


class PipelineRunError(RuntimeError):
    """A stage of the pipeline failed or could not start; the message says what to do."""


@dataclass(frozen=True)
class Stage:
    """Assets materialised together in one run, over the snapshot or the label months."""

    name: str
    assets: tuple[str, ...]
    months: str | None


STAGES = (
    Stage("snapshot and features", ("delinquency_snapshot", "account_features", "streaks"), "all"),
    Stage("labels", ("default_flags",), "labels"),
    Stage("model", ("pd_model", "risk_drivers"), None),
    Stage("scores", ("risk_scores",), "all"),
    Stage("latest scores", ("account_risk_scores",), None),
)


@dataclass(frozen=True)
class RunPlan:
    """Which months a pipeline run materialises."""

    months: list[pd.Timestamp]
    label_months: list[pd.Timestamp]


@dataclass
class RunReport:
    """What a pipeline run did: its Dagster runs and how long each stage took."""

    plan: RunPlan
    run_ids: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _month_key(month: pd.Timestamp) -> str:
    return pd.Timestamp(month).strftime("%Y-%m-%d")


def _last_mature_month(today: date, horizon_months: int) -> pd.Timestamp:
    current = pd.Timestamp(today).to_period("M").to_timestamp()
    return current - pd.DateOffset(months=horizon_months + 1)


def plan_run(
    settings: Settings,
    source_months: Sequence[pd.Timestamp],
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    today: date | None = None,
) -> RunPlan:
    """The months to materialise: source months inside the range and the partitions."""
    today = today or date.today()
    current = pd.Timestamp(today).to_period("M").to_timestamp()
    first = pd.Timestamp(settings.first_month)
    low = max(first, pd.Timestamp(start) if start is not None else first)
    high = min(current, pd.Timestamp(end) if end is not None else current)
    months = sorted(m for m in map(pd.Timestamp, source_months) if low <= m <= high)
    if not months:
        raise PipelineRunError(
            f"The source holds no month between {months_text([low])} and {months_text([high])} "
            f"(partitions start at CREDIT_RISK_FIRST_MONTH={months_text([first])}). Load data "
            "with `credit-risk sample-data` or widen --start/--end."
        )

    if settings.notebook_mode:
        label_months = months
    else:
        # A label needs its whole performance window inside this run's snapshot months.
        horizon = pd.DateOffset(months=settings.horizon_months)
        last_label = min(_last_mature_month(today, settings.horizon_months), months[-1] - horizon)
        label_months = [m for m in months if m <= last_label]
    return RunPlan(months=months, label_months=label_months)


def _failure_messages(result) -> str:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        user = event.step_failure_data.user_failure_data
        text = user.description if user and user.description else (error.message if error else "")
        messages.append(f"{event.step_key}: {text.strip()}")
    return "\n".join(messages) or "the run failed; see the run's logs in the Dagster UI."


def _run_stage(
    stage: Stage,
    months: list[pd.Timestamp] | None,
    assets: list[AssetsDefinition],
    resources: dict[str, object],
    instance: DagsterInstance,
    tags: dict[str, str],
    log_level: str,
) -> str:
    run_tags = {**tags, "credit_risk/stage": stage.name}
    if months:
        run_tags[RANGE_START_TAG] = _month_key(months[0])
        run_tags[RANGE_END_TAG] = _month_key(months[-1])
    result = materialize(
        assets,
        selection=list(stage.assets),
        resources=resources,
        instance=instance,
        tags=run_tags,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )
    if not result.success:
        raise PipelineRunError(
            f"Stage '{stage.name}' failed (run {result.run_id}):\n{_failure_messages(result)}"
        )
    return result.run_id


def run_pipeline(
    settings: Settings,
    instance: DagsterInstance,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    *,
    log_level: str = "WARNING",
    tags: dict[str, str] | None = None,
) -> RunReport:
    """Materialise every asset over the source's months in [start, end] on `instance`."""
    resources = build_resources(settings)
    source = SourceDatabase(url=settings.source_url, table=settings.source_table)
    plan = plan_run(settings, source.months_present(), start, end)
    assets = build_assets(settings)
    report = RunReport(plan=plan)

    for stage in STAGES:
        months = {"all": plan.months, "labels": plan.label_months, None: None}[stage.months]
        if stage.months == "labels" and not months:
            report.skipped[stage.name] = "no mature month in this run"
            continue
        if stage.name == "model" and not plan.label_months:
            if WarehouseDatabase(settings.warehouse_url).row_count(TABLES["pd_model"]) == 0:
                raise PipelineRunError(
                    f"No month is mature yet: a label of T needs the "
                    f"{settings.horizon_months} complete months after it, and there is no "
                    "earlier model to score with. Load more history into the source."
                )
            report.skipped[stage.name] = "no mature month; scoring with the existing model"
            continue
        began = time.perf_counter()
        report.run_ids[stage.name] = _run_stage(
            stage, months, assets, resources, instance, tags or {}, log_level
        )
        report.seconds[stage.name] = time.perf_counter() - began
    return report
