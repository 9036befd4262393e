"""The code location: assets, partitions and the window mappings between them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey

from credit_risk_assets.definitions import build_definitions
from credit_risk_assets.partitions import build_windows
from credit_risk_assets.settings import Settings, SettingsError

ASSETS = {
    "delinquency_snapshot",
    "account_features",
    "streaks",
    "default_flags",
    "pd_model",
    "risk_drivers",
    "risk_scores",
    "account_risk_scores",
    "model_performance",
    "model_calibration",
    "stability_baseline",
    "score_stability",
    "risk_segment_summary",
}


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


def current_month() -> pd.Timestamp:
    return pd.Timestamp.today().to_period("M").to_timestamp()


def test_every_asset_is_defined_with_its_table_schema(settings) -> None:
    """The location holds every asset, each showing its declared column schema."""
    defs = build_definitions(settings)

    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}

    assert {key.path[-1] for key in specs} == ASSETS
    features = specs[AssetKey("account_features")]
    columns = features.metadata["dagster/column_schema"].columns
    assert "recent_avg_dpd_3m" in [column.name for column in columns]


def test_labels_end_at_the_last_mature_month(settings) -> None:
    """Label partitions stop H months before the last complete month; features reach today."""
    windows = build_windows(settings)

    last_label = pd.Timestamp(windows.label_months.get_last_partition_key())
    last_month = pd.Timestamp(windows.months.get_last_partition_key())

    assert last_month == current_month()
    assert last_label == current_month() - pd.DateOffset(months=7)


@pytest.mark.parametrize(
    ("lookback", "as_of", "expected_first"),
    [
        # a full six-month window
        (6, "2024-09-01", "2024-04-01"),
        # clipped at the first partition
        (6, "2024-02-01", "2024-01-01"),
        # all history
        (0, "2024-09-01", "2024-01-01"),
        # the month itself
        (1, "2024-09-01", "2024-09-01"),
    ],
)
def test_the_lookback_mapping_reads_the_window(settings, lookback, as_of, expected_first) -> None:
    """Features of T read the snapshot months T-L+1..T, clipped at the first month."""
    windows = build_windows(replace(settings, lookback_months=lookback))

    upstream = windows.lookback.get_upstream_mapped_partitions_result_for_partitions(
        windows.months.subset_with_partition_keys([as_of]),
        windows.months,
        windows.months,
    ).partitions_subset.get_partition_keys()

    assert upstream[0] == expected_first
    assert upstream[-1] == as_of


def test_the_performance_mapping_reads_t_through_t_plus_h(settings) -> None:
    """Labels of T read the snapshot months T..T+H, all of which exist for a mature T."""
    windows = build_windows(settings)

    upstream = windows.performance.get_upstream_mapped_partitions_result_for_partitions(
        windows.label_months.subset_with_partition_keys(["2024-03-01"]),
        windows.label_months,
        windows.months,
    ).partitions_subset.get_partition_keys()

    assert upstream == [f"2024-{m:02d}-01" for m in range(3, 10)]


def test_a_warehouse_that_is_the_source_is_refused(settings) -> None:
    """Pointing the warehouse at the source database is a configuration error."""
    same = replace(settings, warehouse_url=settings.source_url)

    with pytest.raises(SettingsError, match="never writes to the source"):
        build_definitions(same)


def test_dagster_validates_the_code_location(tmp_path) -> None:
    """`dagster definitions validate` loads the location from workspace.yaml's module."""
    env = {**os.environ, "CREDIT_RISK_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")

    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "credit_risk_assets.definitions"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
