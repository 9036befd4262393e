"""The snapshot_corrections sensor: a changed past month of the source re-materialises its windows.

On each tick the sensor asks the source for a fingerprint of every billing month (row count and
an order-independent checksum, computed in SQL) and compares them with the fingerprints it kept
in its cursor on the previous tick:

- the first tick (no cursor yet) requests every month the source holds: a new deployment builds
  the warehouse, and an existing one is brought in line with the source once;
- afterwards, a closed month (older than the previous month) whose rows changed, appeared or
  disappeared is a correction; open months move every day and belong to the daily refresh, so
  their changes are only recorded.

A correction is requested as one backfill over the changed snapshot months and every downstream
partition whose window includes them (see planning.correction_subset). Dagster's backfill runs it
in dependency order, one run per asset range as the single-run backfill policy allows, and puts
the request's tags on every run. That takes `RunRequest.for_asset_graph_subset`, which Dagster
documents as private: it is the only way for a sensor to request an ordered, multi-asset backfill
(Dagster's own automation uses it the same way), whereas several plain RunRequests would run in no
order, features possibly before the snapshot they read. The tests drive it through the real
sensor and backfill daemons' code.
"""

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from credit_risk_assets.assets.common import months_text
from credit_risk_assets.automation.planning import (
    SNAPSHOT,
    correction_subset,
    describe_subset,
    existing_keys,
    month_key,
    open_months,
)
from credit_risk_assets.automation.schedules import TRIGGER_TAG
from credit_risk_assets.warehouse.source import SourceDatabase

SNAPSHOT_CORRECTIONS = "snapshot_corrections"
CHANGED_MONTHS_TAG = "credit_risk/changed_months"
REASON_TAG = "credit_risk/reason"
CURSOR_VERSION = 1

Fingerprints = dict[str, tuple[int, int]]


def write_cursor(fingerprints: Mapping[str, tuple[int, int]]) -> str:
    """The sensor's cursor: {month key: [rows, checksum]} as JSON."""
    months = {key: list(value) for key, value in sorted(fingerprints.items())}
    return json.dumps({"version": CURSOR_VERSION, "months": months}, separators=(",", ":"))


def read_cursor(cursor: str | None) -> Fingerprints | None:
    """The fingerprints kept by the previous tick, or None when there is no usable cursor."""
    if not cursor:
        return None
    stored = json.loads(cursor)
    if stored.get("version") != CURSOR_VERSION:
        return None
    return {key: (int(rows), int(checksum)) for key, (rows, checksum) in stored["months"].items()}


def changed_months(
    previous: Fingerprints | None, current: Fingerprints, now: datetime
) -> list[str]:
    """Month keys to re-materialise: all of them on a first tick, else changed closed months."""
    if previous is None:
        return sorted(current)
    live = {month_key(month) for month in open_months(now)}
    months = set(previous) | set(current)
    return sorted(key for key in months - live if previous.get(key) != current.get(key))


def _month_list(keys: list[str]) -> str:
    return months_text([pd.Timestamp(key) for key in keys])


def _fingerprints(source: SourceDatabase, partition_keys: set[str]) -> Fingerprints:
    """The source's fingerprint of each month that is a partition, keyed by partition key."""
    return {
        month_key(month): (fingerprint.rows, fingerprint.checksum)
        for month, fingerprint in source.month_fingerprints().items()
        if month_key(month) in partition_keys
    }


def build_corrections_sensor(
    interval_seconds: int, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> SensorDefinition:
    """The snapshot_corrections sensor, running by default.

    It ticks at most every `interval_seconds` (each tick scans the source table once);
    `clock` gives the evaluation time.
    """

    @sensor(
        name=SNAPSHOT_CORRECTIONS,
        asset_selection=AssetSelection.assets(SNAPSHOT).downstream(),
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Fingerprints every billing month of the source (rows and checksum). When a month "
            "older than the previous month changes (rows changed, added or deleted), launches "
            "one backfill of that snapshot month and every partition whose window includes it, "
            "then the model and the latest scores. Runs carry the tag "
            f"{CHANGED_MONTHS_TAG}. The first tick requests every month."
        ),
    )
    def snapshot_corrections(
        context: SensorEvaluationContext, source_database: SourceDatabase
    ) -> SensorResult:
        now = clock()
        graph = context.repository_def.asset_graph
        partition_keys = set(existing_keys(graph.get(SNAPSHOT).partitions_def, now))
        current = _fingerprints(source_database, partition_keys)
        previous = read_cursor(context.cursor)
        if previous is not None:
            previous = {key: value for key, value in previous.items() if key in partition_keys}
        cursor = write_cursor(current)

        changed = changed_months(previous, current, now)
        if not changed:
            return SensorResult(
                skip_reason=SkipReason(
                    f"No closed month of {source_database.table} changed "
                    f"({len(current)} months fingerprinted)."
                ),
                cursor=cursor,
            )

        subset = correction_subset(graph, changed, current.keys(), now)
        reason = (
            "first tick: every source month"
            if previous is None
            else "source rows changed, added or deleted"
        )
        context.log.info(
            f"Months {_month_list(changed)} of {source_database.table}: {reason}. Requesting "
            f"a backfill of {describe_subset(subset)}"
        )
        tags = {
            TRIGGER_TAG: SNAPSHOT_CORRECTIONS,
            CHANGED_MONTHS_TAG: _month_list(changed),
            REASON_TAG: reason,
        }
        return SensorResult(
            run_requests=[RunRequest.for_asset_graph_subset(subset, tags=tags)], cursor=cursor
        )

    return snapshot_corrections
