"""The snapshot_corrections sensor against real SQLite and MariaDB sources, tick by tick."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import (
    DagsterInstance,
    Definitions,
    SensorDefinition,
    SensorResult,
    build_sensor_context,
    instance_for_test,
)

from credit_risk_assets.assets.common import month_label
from credit_risk_assets.automation.planning import subset_summary
from credit_risk_assets.automation.sensors import (
    CHANGED_MONTHS_TAG,
    SNAPSHOT_CORRECTIONS,
    build_corrections_sensor,
    read_cursor,
)
from credit_risk_assets.automation.settings import AutomationSettings
from credit_risk_assets.definitions import build_definitions, build_resources
from credit_risk_assets.settings import Settings
from credit_risk_assets.warehouse.source import SourceDatabase
from credit_risk_assets_tests.source_edits import (
    edit_month,
    month_keys,
    month_range,
    months_ago,
    this_month,
    write_sample_source,
)

MONTHLY = ("delinquency_snapshot", "account_features", "streaks", "risk_scores")
UNPARTITIONED = ("pd_model", "risk_drivers", "account_risk_scores")
CORE = (*MONTHLY, "default_flags", *UNPARTITIONED)
LOOKBACK, HORIZON = 6, 6


def months(count: int) -> pd.DateOffset:
    return pd.DateOffset(months=count)


@pytest.fixture(params=["sqlite", "mysql"])
def source_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A source database holding the default sample data, on SQLite and on MariaDB."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'source.db'}"
    else:
        url = request.getfixturevalue("mysql_url")
    write_sample_source(url)
    return url


@pytest.fixture
def location(tmp_path, source_url) -> tuple[Definitions, dict[str, object]]:
    """The code location over that source, and its resources."""
    settings = Settings(
        home=tmp_path,
        source_url=source_url,
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
        source_table="delinquency_snapshot",
        first_month=date(2024, 1, 1),
        lookback_months=LOOKBACK,
        horizon_months=HORIZON,
    )
    return build_definitions(settings, AutomationSettings()), build_resources(settings)


@pytest.fixture
def instance() -> DagsterInstance:
    with instance_for_test() as instance:
        yield instance


def tick(
    location, instance: DagsterInstance, cursor: str | None, sensor: SensorDefinition | None = None
) -> SensorResult:
    """One evaluation of the sensor (the shipped one unless another is given)."""
    defs, resources = location
    sensor = sensor or defs.get_sensor_def(SNAPSHOT_CORRECTIONS)
    with build_sensor_context(
        instance=instance, definitions=defs, resources=resources, cursor=cursor
    ) as context:
        return sensor(context)


def requested(result: SensorResult) -> dict[str, list[str]]:
    """{asset: partition keys} of the one backfill a tick requested, for the core assets."""
    (request,) = result.run_requests
    summary = subset_summary(request.asset_graph_subset)
    return {name: keys for name, keys in summary.items() if name in CORE}


def source_months() -> list[pd.Timestamp]:
    return month_range(months_ago(11), this_month())


def expected_for(month: pd.Timestamp) -> dict[str, list[str]]:
    """What a correction of `month` must request, worked out from the windows by hand."""
    current = this_month()
    features = [m for m in source_months() if month <= m <= month + months(LOOKBACK - 1)]
    labels = [
        m
        for m in source_months()
        if month - months(HORIZON) <= m <= month and m <= current - months(HORIZON + 1)
    ]
    # A refitted model re-scores the open months too (previous and current).
    scores = sorted({*features, current - months(1), current})
    return {
        "delinquency_snapshot": month_keys([month]),
        "account_features": month_keys(features),
        "streaks": month_keys(features),
        "default_flags": month_keys(labels),
        "risk_scores": month_keys(scores),
        **{name: [] for name in UNPARTITIONED},
    }


def test_the_first_tick_requests_every_month_and_an_unchanged_tick_nothing(location, instance):
    """No cursor: every source month and its windows; the same source again: no request."""
    first = tick(location, instance, None)
    second = tick(location, instance, first.cursor)

    every_month = month_keys(source_months())
    mature = month_keys(m for m in source_months() if m <= this_month() - months(HORIZON + 1))
    assert requested(first) == {
        **dict.fromkeys(MONTHLY, every_month),
        "default_flags": mature,
        **{name: [] for name in UNPARTITIONED},
    }
    assert first.run_requests[0].tags[CHANGED_MONTHS_TAG] == (
        f"{month_label(source_months()[0])}..{month_label(this_month())}"
    )
    assert second.run_requests == []
    assert read_cursor(second.cursor) == read_cursor(first.cursor)


@pytest.mark.parametrize(
    ("kind", "age"),
    [("changed", 6), ("added", 9), ("deleted", 3)],
)
def test_an_edited_past_month_requests_exactly_the_windows_that_include_it(
    location, instance, source_url, kind, age
):
    """A changed, added or deleted row in a past month requests that month's windows only."""
    month = months_ago(age)
    baseline = tick(location, instance, None)
    edit_month(source_url, kind, month)

    result = tick(location, instance, baseline.cursor)

    assert requested(result) == expected_for(month)
    (request,) = result.run_requests
    every_asset = {
        key.to_user_string() for key in location[0].resolve_asset_graph().get_all_asset_keys()
    }
    assert set(subset_summary(request.asset_graph_subset)) == every_asset
    assert request.tags[CHANGED_MONTHS_TAG] == month_label(month)
    assert tick(location, instance, result.cursor).run_requests == []


def test_a_change_in_an_open_month_is_recorded_without_a_request(location, instance, source_url):
    """The previous month moves every day: the daily refresh owns it, the sensor only notes it."""
    baseline = tick(location, instance, None)
    edit_month(source_url, "changed", months_ago(1))

    result = tick(location, instance, baseline.cursor)

    assert result.run_requests == []
    assert read_cursor(result.cursor) != read_cursor(baseline.cursor)


def test_a_month_that_closes_is_watched_from_its_last_recorded_rows(location, instance, source_url):
    """After the month turns, the former previous month is closed: its next change is requested."""
    now = datetime.now(UTC)
    next_month = (pd.Timestamp(now) + months(1)).to_pydatetime()
    today = build_corrections_sensor(1, clock=lambda: now)
    a_month_later = build_corrections_sensor(1, clock=lambda: next_month)
    previous = months_ago(1)

    baseline = tick(location, instance, None, today)
    edit_month(source_url, "changed", previous)
    recorded = tick(location, instance, baseline.cursor, today)
    turned = tick(location, instance, recorded.cursor, a_month_later)
    edit_month(source_url, "added", previous)
    corrected = tick(location, instance, turned.cursor, a_month_later)

    assert recorded.run_requests == []
    assert turned.run_requests == []
    assert corrected.run_requests[0].tags[CHANGED_MONTHS_TAG] == month_label(previous)
    assert requested(corrected)["delinquency_snapshot"] == month_keys([previous])


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("due_date", "'2020-01-02'"),
        ("payment_date", "NULL"),
        ("days_past_due", "days_past_due + 1"),
        ("delinquency_bucket", "'Other'"),
        ("is_delinquent", "1 - is_delinquent"),
    ],
)
def test_a_fingerprint_changes_with_any_value_of_its_month_only(source_url, column, value):
    """One value changed in one row changes that month's checksum, not its count or others."""
    source = SourceDatabase(url=source_url)
    before = source.month_fingerprints()
    month = months_ago(4)
    engine = sa.create_engine(source_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"UPDATE delinquency_snapshot SET {column} = {value} WHERE billing_cycle = :cycle "
                "AND account_id = (SELECT MIN(account_id) FROM (SELECT account_id FROM "
                "delinquency_snapshot WHERE billing_cycle = :cycle AND payment_date IS NOT NULL) "
                "AS paid)"
            ),
            {"cycle": f"{month:%Y-%m-%d}"},
        )
    engine.dispose()

    after = source.month_fingerprints()
    source.dispose()

    assert list(after) == list(before)
    assert after[month].rows == before[month].rows
    assert after[month].checksum != before[month].checksum
    assert {m: f for m, f in after.items() if m != month} == {
        m: f for m, f in before.items() if m != month
    }


def test_sqlite_and_mariadb_fingerprint_the_same_rows_alike(tmp_path, mysql_url):
    """The checksum is computed on text both databases produce alike, so the sums agree."""
    sqlite_url = f"sqlite:///{tmp_path / 'source.db'}"
    for url in (sqlite_url, mysql_url):
        write_sample_source(url)

    fingerprints = [SourceDatabase(url=url).month_fingerprints() for url in (sqlite_url, mysql_url)]

    assert fingerprints[0] == fingerprints[1]
    assert len(fingerprints[0]) == 12
