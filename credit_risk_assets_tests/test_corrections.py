"""A source correction end to end: the sensor and backfill daemons repair the warehouse."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from dagster._core.execution.backfill import BulkActionStatus

from credit_risk_assets.assets.common import month_label
from credit_risk_assets.automation.sensors import CHANGED_MONTHS_TAG, REASON_TAG
from credit_risk_assets.definitions import build_assets, build_resources
from credit_risk_assets.runner import run_pipeline
from credit_risk_assets.settings import load_settings
from credit_risk_assets_tests.daemon import Daemons, daemons
from credit_risk_assets_tests.source_edits import (
    edit_month,
    month_range,
    months_ago,
    read_table,
    write_sample_source,
)

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
CORRECTED_AGE = 6

# When a row was written, which no two runs share.
RUN_TIME_COLUMNS = ["trained_at"]

# Tables that a correction must bring to exactly what a full recompute gives.
RECOMPUTED = {
    "delinquency_snapshot": "billing_cycle, account_id",
    "account_features": "as_of_month, account_id",
    "streaks": "as_of_month, account_id",
    "default_flags": "as_of_month, account_id",
    "pd_model": "feature_order",
    "risk_drivers": "driver_rank",
    "account_risk_scores": "account_id",
}


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SQLite source with the sample data, an empty SQLite warehouse, a 1-second sensor."""
    for variable in ("CREDIT_RISK_SOURCE_TABLE", "CREDIT_RISK_FIRST_MONTH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CREDIT_RISK_SOURCE_URL", f"sqlite:///{tmp_path / 'source.db'}")
    monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'warehouse.db'}")
    monkeypatch.setenv("CREDIT_RISK_LOOKBACK_MONTHS", "6")
    monkeypatch.setenv("CREDIT_RISK_HORIZON_MONTHS", "6")
    monkeypatch.setenv("CREDIT_RISK_CORRECTIONS_INTERVAL_SECONDS", "1")
    write_sample_source(f"sqlite:///{tmp_path / 'source.db'}")
    return tmp_path


def materialised(daemons: Daemons, run_ids: list[str]) -> dict[str, list[str]]:
    """{asset: partition keys} materialised by these runs ([] for an unpartitioned asset)."""
    partitions: dict[str, set[str]] = {}
    for run_id in run_ids:
        for record in daemons.instance.get_records_for_run(run_id).records:
            event = record.event_log_entry.dagster_event
            if event is not None and event.is_step_materialization:
                name = event.asset_key.to_user_string()
                keys = partitions.setdefault(name, set())
                if event.partition:
                    keys.add(event.partition)
    return {name: sorted(keys) for name, keys in sorted(partitions.items())}


def run_seconds(daemons: Daemons, run_ids: list[str]) -> float:
    """Wall-clock seconds the runs took, summed."""
    stats = [daemons.instance.get_run_stats(run_id) for run_id in run_ids]
    return sum(stat.end_time - stat.start_time for stat in stats)


def test_a_corrected_month_repaired_by_the_daemons_equals_a_full_recompute(
    environment, monkeypatch
):
    """First tick builds everything; a corrected month is repaired like a full recompute."""
    warehouse = f"sqlite:///{environment / 'warehouse.db'}"
    corrected = months_ago(CORRECTED_AGE)

    with daemons(environment / "dagster") as running:
        running.tick_sensors()
        (build,) = running.run_backfills()
        edit_month(f"sqlite:///{environment / 'source.db'}", "changed", corrected)
        time.sleep(1.1)
        running.tick_sensors()
        correction = next(b for b in running.run_backfills() if b.backfill_id != build.backfill_id)

        build_runs = [run.run_id for run in running.backfill_runs(build)]
        correction_runs = running.backfill_runs(correction)
        repaired = materialised(running, [run.run_id for run in correction_runs])
        figures = (
            f"full build {len(build_runs)} runs {run_seconds(running, build_runs):.1f} s; "
            f"correction of {month_label(corrected)} {len(correction_runs)} runs "
            f"{run_seconds(running, [run.run_id for run in correction_runs]):.1f} s, "
            f"{sum(len(keys) or 1 for keys in repaired.values())} asset partitions"
        )

    assert build.status == BulkActionStatus.COMPLETED_SUCCESS
    assert correction.status == BulkActionStatus.COMPLETED_SUCCESS
    assert {run.tags[CHANGED_MONTHS_TAG] for run in correction_runs} == {month_label(corrected)}
    assert {run.tags[REASON_TAG] for run in correction_runs} == {
        "source rows changed, added or deleted"
    }
    assert repaired["delinquency_snapshot"] == [f"{corrected:%Y-%m-01}"]

    # A full recompute of the corrected source, into a fresh warehouse, for comparison.
    full = f"sqlite:///{environment / 'full.db'}"
    monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", full)
    began = time.perf_counter()
    run_pipeline(load_settings(), DagsterInstance.ephemeral())
    figures += f"; full recompute `credit-risk run` {time.perf_counter() - began:.1f} s"
    for table, order in RECOMPUTED.items():
        repaired_rows, recomputed_rows = (
            read_table(url, table, order).drop(columns=RUN_TIME_COLUMNS, errors="ignore")
            for url in (warehouse, full)
        )
        pd.testing.assert_frame_equal(repaired_rows, recomputed_rows, obj=table)
    sys.stderr.write(f"\nCost of one corrected month (sample data, SQLite): {figures}\n")


def materialise_month_by_month(monkeypatch: pytest.MonkeyPatch, warehouse: str) -> None:
    """The whole pipeline into `warehouse`, one run per month and asset group, oldest first."""
    monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", warehouse)
    settings = load_settings()
    assets, resources = build_assets(settings), build_resources(settings)
    instance = DagsterInstance.ephemeral()

    def run(selection: list[str], month: pd.Timestamp | None = None) -> None:
        key = None if month is None else f"{month:%Y-%m-01}"
        result = materialize(
            assets, selection=selection, partition_key=key, resources=resources, instance=instance
        )
        assert result.success, (selection, key)

    source = month_range(months_ago(11), months_ago(0))
    for month in source:
        run(["delinquency_snapshot", "account_features", "streaks"], month)
    for month in (m for m in source if m <= months_ago(7)):
        run(["default_flags"], month)
    run(["pd_model", "risk_drivers"])
    for month in source:
        run(["risk_scores"], month)
    run(["account_risk_scores"])


def test_a_twelve_month_backfill_runs_once_per_asset_range_and_equals_month_by_month(
    environment, monkeypatch
):
    """The first tick's 12-month backfill: one run per asset range, in order, same tables."""
    with daemons(environment / "dagster") as running:
        running.tick_sensors()
        (build,) = running.run_backfills()
        runs = running.backfill_runs(build)
        graph = running.workspace.create_request_context().asset_graph
    monthly = f"sqlite:///{environment / 'monthly.db'}"
    materialise_month_by_month(monkeypatch, monthly)

    run_of = {
        key.to_user_string(): position
        for position, run in enumerate(runs)
        for key in run.asset_selection
    }
    ranges = {
        key.to_user_string(): (run.tags.get(RANGE_START), run.tags.get(RANGE_END))
        for run in runs
        for key in run.asset_selection
    }
    assert build.status == BulkActionStatus.COMPLETED_SUCCESS
    assert sum(len(run.asset_selection) for run in runs) == len(run_of)
    first, last = f"{months_ago(11):%Y-%m-01}", f"{months_ago(0):%Y-%m-01}"
    for name in ("delinquency_snapshot", "account_features", "streaks", "risk_scores"):
        assert ranges[name] == (first, last), name
    assert ranges["default_flags"] == (first, f"{months_ago(7):%Y-%m-01}")
    for name, position in run_of.items():
        parents = graph.get(AssetKey.from_user_string(name)).parent_keys
        assert all(run_of[parent.to_user_string()] <= position for parent in parents), name

    warehouse = f"sqlite:///{environment / 'warehouse.db'}"
    for table, order in {**RECOMPUTED, "risk_scores": "as_of_month, account_id"}.items():
        backfilled, month_by_month = (
            read_table(url, table, order).drop(columns=RUN_TIME_COLUMNS, errors="ignore")
            for url in (warehouse, monthly)
        )
        pd.testing.assert_frame_equal(backfilled, month_by_month, obj=table)
