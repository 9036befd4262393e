"""daily_refresh and monthly_retrain: what each asks for at a given time, and that it runs."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    build_schedule_context,
)

from credit_risk_assets.automation.schedules import (
    DAILY_REFRESH,
    DAILY_REFRESH_JOB,
    MONTHLY_RETRAIN,
    MONTHLY_RETRAIN_JOB,
)
from credit_risk_assets.automation.settings import AutomationSettings, load_automation_settings
from credit_risk_assets.definitions import build_definitions
from credit_risk_assets.runner import run_pipeline
from credit_risk_assets.settings import Settings, SettingsError
from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse import bulk
from credit_risk_assets.warehouse.bulk import TRANSFER_ATTRIBUTE, Transfer
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.schema import TableSpec
from credit_risk_assets_tests.source_edits import months_ago, write_sample_source

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
CORE = {
    "delinquency_snapshot",
    "account_features",
    "streaks",
    "default_flags",
    "pd_model",
    "risk_drivers",
    "risk_scores",
    "account_risk_scores",
}
DAILY_CORE = {"delinquency_snapshot", "account_features", "streaks", "risk_scores"}
RETRAIN_CORE = {"default_flags", "pd_model", "risk_drivers"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        source_url=f"sqlite:///{tmp_path / 'source.db'}",
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
        source_table="delinquency_snapshot",
        first_month=date(2024, 1, 1),
        lookback_months=6,
        horizon_months=6,
    )


def evaluate(defs: Definitions, name: str, moment: datetime) -> list[RunRequest]:
    """The run requests of one tick of schedule `name` at `moment`."""
    schedule = defs.get_schedule_def(name)
    with build_schedule_context(scheduled_execution_time=moment) as context:
        data = schedule.evaluate_tick(context)
    return list(data.run_requests or [])


def job_assets(defs: Definitions, job: str) -> set[str]:
    selected = defs.resolve_job_def(job).asset_layer.selected_asset_keys
    return {key.to_user_string() for key in selected}


def requested_range(request: RunRequest) -> tuple[str, str]:
    return request.tags[RANGE_START], request.tags[RANGE_END]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Mid-month: the previous and the current month.
        (datetime(2026, 7, 15, 6, tzinfo=UTC), ("2026-06-01", "2026-07-01")),
        # The first: also the month that has just closed.
        (datetime(2026, 8, 1, 6, tzinfo=UTC), ("2026-06-01", "2026-08-01")),
        # 01:30 in Paris on the first is still the 31st in UTC, the months' timezone.
        (
            datetime(2026, 8, 1, 1, 30, tzinfo=ZoneInfo("Europe/Paris")),
            ("2026-06-01", "2026-07-01"),
        ),
    ],
)
def test_the_daily_refresh_requests_the_open_months_of_the_monthly_assets(
    settings, moment, expected
):
    """One range run of the monthly assets over the open months, then the latest scores."""
    defs = build_definitions(settings, AutomationSettings())

    (request,) = evaluate(defs, DAILY_REFRESH, moment)
    assets = job_assets(defs, DAILY_REFRESH_JOB)

    assert requested_range(request) == expected
    assert assets & CORE == DAILY_CORE | {"account_risk_scores"}
    assert request.tags["credit_risk/trigger"] == DAILY_REFRESH


def test_the_monthly_retrain_requests_the_labels_that_read_the_closed_month(settings):
    """On 2 August: labels of 2025-12 and 2026-01 (whose windows read June), then the model."""
    defs = build_definitions(settings, AutomationSettings())

    (request,) = evaluate(defs, MONTHLY_RETRAIN, datetime(2026, 8, 2, 5, tzinfo=UTC))
    assets = job_assets(defs, MONTHLY_RETRAIN_JOB)

    assert requested_range(request) == ("2025-12-01", "2026-01-01")
    assert assets & CORE == RETRAIN_CORE
    assert request.tags["credit_risk/trigger"] == MONTHLY_RETRAIN


def test_the_monthly_retrain_skips_while_no_month_is_mature(settings):
    """Partitions that start in May 2026 have no mature month in August 2026: nothing to fit."""
    defs = build_definitions(replace(settings, first_month=date(2026, 5, 1)), AutomationSettings())

    assert evaluate(defs, MONTHLY_RETRAIN, datetime(2026, 8, 2, 5, tzinfo=UTC)) == []


def test_both_schedules_run_by_default_at_the_documented_times(settings):
    """06:00 UTC daily and 05:00 UTC on the second, both on without a click in the UI."""
    defs = build_definitions(settings, AutomationSettings())

    daily = defs.get_schedule_def(DAILY_REFRESH)
    retrain = defs.get_schedule_def(MONTHLY_RETRAIN)

    assert (daily.cron_schedule, daily.execution_timezone) == ("0 6 * * *", "UTC")
    assert (retrain.cron_schedule, retrain.execution_timezone) == ("0 5 2 * *", "UTC")
    assert daily.default_status == retrain.default_status == DefaultScheduleStatus.RUNNING


def test_schedule_times_come_from_the_environment(monkeypatch):
    """Cron strings and timezone are read from CREDIT_RISK_* variables; a bad one is refused."""
    monkeypatch.setenv("CREDIT_RISK_DAILY_REFRESH_CRON", "30 7 * * 1-5")
    monkeypatch.setenv("CREDIT_RISK_SCHEDULE_TIMEZONE", "Europe/London")

    chosen = load_automation_settings()
    monkeypatch.setenv("CREDIT_RISK_MONTHLY_RETRAIN_CRON", "every month")

    assert (chosen.daily_refresh_cron, chosen.timezone) == ("30 7 * * 1-5", "Europe/London")
    with pytest.raises(SettingsError, match="CREDIT_RISK_MONTHLY_RETRAIN_CRON"):
        load_automation_settings()


def test_account_risk_scores_goes_stale_when_a_daily_refresh_is_missed(settings):
    """Its freshness policy fails two hours after the next daily refresh was due."""
    defs = build_definitions(settings, AutomationSettings())

    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    policy = specs[AssetKey("account_risk_scores")].freshness_policy

    assert policy.fail_window.to_timedelta() == timedelta(hours=26)
    assert policy.warn_window.to_timedelta() == timedelta(hours=25)
    assert specs[AssetKey("risk_scores")].freshness_policy is None


def test_the_requests_of_both_schedules_run_on_a_built_warehouse(settings):
    """Today's daily refresh and retrain requests succeed as runs of their jobs."""
    write_sample_source(settings.source_url)
    instance = DagsterInstance.ephemeral()
    run_pipeline(settings, instance)
    defs = build_definitions(settings, AutomationSettings())
    second_of_this_month = months_ago(0).to_pydatetime().replace(day=2, hour=5, tzinfo=UTC)

    for schedule, job, moment in [
        (MONTHLY_RETRAIN, MONTHLY_RETRAIN_JOB, second_of_this_month),
        (DAILY_REFRESH, DAILY_REFRESH_JOB, datetime.now(UTC)),
    ]:
        (request,) = evaluate(defs, schedule, moment)
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, tags=request.tags)

        assert result.success, schedule
        materialised = {
            event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
        }
        assert materialised >= job_assets(defs, job) & CORE, schedule


class TransferLog(logging.Handler):
    """Keeps every read and write the warehouse layer logs while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.transfers: list[Transfer] = []

    def emit(self, record: logging.LogRecord) -> None:
        transfer = getattr(record, TRANSFER_ATTRIBUTE, None)
        if transfer is not None:
            self.transfers.append(transfer)


def rows_between(url: str, spec: TableSpec, first: pd.Timestamp, last: pd.Timestamp) -> int:
    """Rows of a monthly warehouse table with its month in [first, last]."""
    warehouse = WarehouseDatabase(url)
    try:
        months = warehouse.read(spec, columns=[spec.partition_column])[spec.partition_column]
    finally:
        warehouse.dispose()
    return int(months.between(first, last).sum())


def test_the_daily_refresh_reads_only_the_months_its_windows_need(settings):
    """No read reaches past the lookback window of the open months, and labels are not read."""
    write_sample_source(settings.source_url)
    instance = DagsterInstance.ephemeral()
    run_pipeline(settings, instance)
    defs = build_definitions(settings, AutomationSettings())
    (request,) = evaluate(defs, DAILY_REFRESH, datetime.now(UTC))
    first_open, last_open = (pd.Timestamp(month) for month in requested_range(request))
    window_start = first_open - pd.DateOffset(months=settings.lookback_months - 1)

    transfers = TransferLog()
    bulk_log = logging.getLogger(bulk.__name__)
    previous_level = bulk_log.level
    bulk_log.setLevel(logging.DEBUG)
    bulk_log.addHandler(transfers)
    try:
        result = defs.resolve_job_def(DAILY_REFRESH_JOB).execute_in_process(
            instance=instance, tags=request.tags
        )
    finally:
        bulk_log.removeHandler(transfers)
        bulk_log.setLevel(previous_level)

    assert result.success
    reads = [t for t in transfers.transfers if t.direction == "read"]
    largest = {}
    for transfer in reads:
        largest[transfer.table] = max(largest.get(transfer.table, 0), transfer.rows)
    assert {"delinquency_snapshot", "account_features", "streaks", "risk_scores"} <= set(largest)
    assert "default_flags" not in largest
    for table in ("delinquency_snapshot", "account_features", "streaks", "risk_scores"):
        spec = TABLES[table]
        in_window = rows_between(settings.warehouse_url, spec, window_start, last_open)
        in_history = rows_between(settings.warehouse_url, spec, pd.Timestamp.min, last_open)
        assert 0 < largest[table] <= in_window < in_history, table
