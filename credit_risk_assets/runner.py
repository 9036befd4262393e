"""Materialise the whole pipeline over a range of months as a few range runs on an instance.

Dagster refuses one run over assets with different partitions, so the pipeline runs as six
stages in dependency order, each one run over its whole range of months, or over consecutive
parts of it when the book is large (ROWS_PER_RUN).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from dagster import (
    AssetCheckSeverity,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    materialize,
)

from credit_risk_assets.assets.common import months_text
from credit_risk_assets.definitions import build_assets, build_resources
from credit_risk_assets.settings import Settings
from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.source import SourceDatabase

log = logging.getLogger(__name__)

# Source rows one range run of a monthly stage may cover. A run keeps every output it produces
# in memory until it ends (materialize captures outputs), so a book of 1,000,000 accounts runs
# two months at a time while 100,000 accounts still run as one range.
ROWS_PER_RUN = 2_500_000

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# "<host>:<process id>" of the process that runs a stage, to recognise runs left by a killed one.
PROCESS_TAG = "credit_risk/process"
_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


class PipelineRunError(RuntimeError):
    """A stage of the pipeline failed or could not start; the message says what to do."""


@dataclass(frozen=True)
class Stage:
    """Assets materialised together in one run, over the snapshot or the label months."""

    name: str
    assets: tuple[str, ...]
    months: str | None


# The outputs of the model_validation multi-asset, which run together.
VALIDATION_ASSETS = ("model_performance", "model_calibration", "stability_baseline")

STAGES = (
    Stage("snapshot and features", ("delinquency_snapshot", "account_features", "streaks"), "all"),
    Stage("labels", ("default_flags",), "labels"),
    Stage("model", ("pd_model", "risk_drivers", *VALIDATION_ASSETS), None),
    Stage("scores", ("risk_scores",), "all"),
    Stage("latest scores", ("account_risk_scores", "risk_segment_summary"), None),
    # Last, so that a blocking stability check cannot hold back the tables Power BI reads.
    Stage("stability", ("score_stability",), "all"),
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


def _root_cause(error) -> str:
    # Dagster wraps what an asset, IO manager or resource raised in its own error ("Error
    # occurred while handling output ..."); the user needs the innermost cause.
    while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error.message if error else ""


def _failure_messages(result) -> str:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        user = event.step_failure_data.user_failure_data
        text = user.description if user and user.description else _root_cause(error)
        messages.append(f"{event.step_key}: {text.strip()}")
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR:
            check = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
            messages.append(f"check {check}: {evaluation.description}")
    return "\n".join(messages) or "the run failed; see the run's logs in the Dagster UI."


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def release_runs_of_dead_processes(instance: DagsterInstance) -> list[str]:
    """Mark failed the unfinished stage runs whose process no longer exists; their run ids.

    A `credit-risk run` killed outright (SIGKILL, out of memory, power cut) leaves its run
    STARTED for ever, holding the pool slot of the table it was writing, so every later run
    would wait for that slot. Its slots are freed here. Only runs started on this host are
    judged, and a process id that is in use again counts as alive.
    """
    host = socket.gethostname()
    released = []
    for run in instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED)):
        owner_host, _, pid = run.tags.get(PROCESS_TAG, "").rpartition(":")
        if owner_host != host or not pid.isdigit() or _process_exists(int(pid)):
            continue
        instance.report_run_failed(
            run, f"The process that ran this run ({pid} on {host}) ended without finishing it."
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning(
            "Marked run %s failed and freed its pool slots: its process %s is gone", run.run_id, pid
        )
        released.append(run.run_id)
    return released


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _run_stage(
    stage: Stage,
    months: list[pd.Timestamp] | None,
    assets: list[AssetsDefinition],
    resources: dict[str, object],
    instance: DagsterInstance,
    tags: dict[str, str],
    log_level: str,
) -> str:
    run_tags = {**tags, "credit_risk/stage": stage.name, PROCESS_TAG: _this_process()}
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
    release_runs_of_dead_processes(instance)
    resources = build_resources(settings)
    source = SourceDatabase(url=settings.source_url, table=settings.source_table)
    source_months = source.months_present()
    plan = plan_run(settings, source_months, start, end)
    batch_months = months_per_run(source.row_count(), len(source_months))
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
        for batch in month_batches(months, batch_months):
            name = stage.name if batch == months else f"{stage.name} {months_text(batch)}"
            began = time.perf_counter()
            report.run_ids[name] = _run_stage(
                stage, batch, assets, resources, instance, tags or {}, log_level
            )
            report.seconds[name] = time.perf_counter() - began
            return_freed_memory()
    return report


def return_freed_memory() -> None:
    """Hand the memory a finished run freed back to the system.

    glibc keeps freed heap memory for reuse, fragmented across its arenas: without this, the
    process grew by some 400 MB a run at 1,000,000 accounts although each run's frames were
    gone. Elsewhere than glibc it is a no-op.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def months_per_run(source_rows: int, source_months: int) -> int:
    """How many months one range run may take so that it holds about ROWS_PER_RUN rows."""
    rows_per_month = source_rows / max(source_months, 1)
    return max(1, int(ROWS_PER_RUN // max(rows_per_month, 1.0)))


def month_batches(months: list[pd.Timestamp] | None, size: int) -> list:
    """`months` in consecutive runs of at most `size` months; [None] for an unpartitioned stage."""
    if not months:
        return [months]
    return [months[start : start + size] for start in range(0, len(months), size)]
