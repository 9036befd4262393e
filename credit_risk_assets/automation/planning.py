"""Which partitions the schedules and the correction sensor re-materialise, and when.

Months are calendar months in UTC, the timezone of the monthly partitions. The current and the
previous month are *open*: their days_past_due still move, and the daily refresh owns them.
Older months are *closed*: a change there is a correction, and the sensor acts on it.

Downstream partitions come from the asset graph and its partition mappings, never from window
arithmetic written out here, so a new lookback or horizon, or a new asset below the snapshot,
is followed without editing this module.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

import pandas as pd
from dagster import AssetKey, PartitionsDefinition
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.partitions.subset import PartitionsSubset

from credit_risk_assets.assets.common import months_text
from credit_risk_assets.partitions import PipelineWindows

SNAPSHOT = AssetKey("delinquency_snapshot")
LABELS = AssetKey("default_flags")
MODEL = AssetKey("pd_model")


def month_key(month: datetime | pd.Timestamp) -> str:
    """The partition key of a month: its first day as YYYY-MM-DD."""
    return pd.Timestamp(month).strftime("%Y-%m-01")


def utc_moment(moment: datetime) -> pd.Timestamp:
    """`moment` in UTC; a naive moment is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def month_of(moment: datetime) -> pd.Timestamp:
    """First day (naive) of the UTC calendar month that `moment` falls in."""
    return utc_moment(moment).tz_localize(None).to_period("M").to_timestamp()


def open_months(now: datetime) -> list[pd.Timestamp]:
    """The previous and the current month: rows there still move, the daily refresh owns them."""
    current = month_of(now)
    return [current - pd.DateOffset(months=1), current]


def last_closed_month(now: datetime) -> pd.Timestamp:
    """The month that closed when `now`'s month began: the one before the open months."""
    return month_of(now) - pd.DateOffset(months=2)


def existing_keys(partitions_def: PartitionsDefinition, now: datetime) -> list[str]:
    """The partition keys that exist at `now`."""
    return list(partitions_def.get_partition_keys(current_time=utc_moment(now).to_pydatetime()))


def daily_refresh_months(windows: PipelineWindows, now: datetime) -> list[str]:
    """Month keys the daily refresh at `now` materialises, oldest first.

    The open months; on the first day of a month also the month that has just closed, so
    that rows which moved after its last daily refresh still reach the warehouse.
    """
    months = open_months(now)
    if utc_moment(now).day == 1:
        months.insert(0, last_closed_month(now))
    existing = set(existing_keys(windows.months, now))
    return [key for key in map(month_key, months) if key in existing]


def retrain_label_months(windows: PipelineWindows, now: datetime) -> list[str]:
    """Label month keys the monthly retrain at `now` materialises, oldest first.

    The label months whose window reads the month that has just closed: the newly mature
    month, and the one before it, labelled a month ago while that month was still open.
    """
    closed = month_key(last_closed_month(now))
    if closed not in existing_keys(windows.months, now):
        return []
    labels = windows.performance.get_downstream_partitions_for_partitions(
        windows.months.subset_with_partition_keys([closed]),
        windows.months,
        windows.label_months,
        current_time=utc_moment(now).to_pydatetime(),
    )
    return sorted(labels.get_partition_keys())


def daily_refresh_selection(graph: BaseAssetGraph, windows: PipelineWindows) -> list[AssetKey]:
    """The snapshot, the monthly assets that follow it, and the tables built from those.

    The labels, the model and what is computed from the model's parameters (drivers,
    validation) belong to the monthly retrain: the daily refresh scores with the model it
    finds and never refits it.
    """
    selected = {SNAPSHOT}
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        parents = set(node.parent_keys)
        if key in selected or key in (LABELS, MODEL) or not parents & selected:
            continue
        if node.partitions_def == windows.months or (
            node.partitions_def is None and MODEL not in parents
        ):
            selected.add(key)
    return [key for key in graph.toposorted_asset_keys if key in selected]


def retrain_selection(graph: BaseAssetGraph) -> list[AssetKey]:
    """The labels and the unpartitioned assets that follow from them: model, drivers, validation."""
    selected = {LABELS}
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if key not in selected and node.partitions_def is None and node.parent_keys & selected:
            selected.add(key)
    return [key for key in graph.toposorted_asset_keys if key in selected]


def correction_subset(
    graph: BaseAssetGraph,
    changed_months: Collection[str],
    source_months: Collection[str],
    now: datetime,
) -> AssetGraphSubset:
    """The snapshot months that changed and every downstream partition that reads them.

    Each partitioned asset gets the partitions its mappings send the affected upstream
    partitions to, restricted to months the source holds (a month with no source rows has
    nothing to compute from). An unpartitioned asset is included when any input is affected.
    """
    months_def = graph.get(SNAPSHOT).partitions_def
    partitions = {SNAPSHOT: months_def.subset_with_partition_keys(sorted(changed_months))}
    unpartitioned: set[AssetKey] = set()

    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        affected = [p for p in node.parent_keys if p in partitions or p in unpartitioned]
        if key == SNAPSHOT or not affected:
            continue
        if node.partitions_def is None:
            unpartitioned.add(key)
            continue
        keys = _affected_keys(graph, key, affected, partitions, now)
        keys &= set(source_months) & set(existing_keys(node.partitions_def, now))
        if keys:
            partitions[key] = node.partitions_def.subset_with_partition_keys(sorted(keys))

    return AssetGraphSubset(
        partitions_subsets_by_asset_key=partitions, non_partitioned_asset_keys=unpartitioned
    )


def _affected_keys(
    graph: BaseAssetGraph,
    key: AssetKey,
    affected_parents: Collection[AssetKey],
    partitions: dict[AssetKey, PartitionsSubset],
    now: datetime,
) -> set[str]:
    """Partition keys of `key` that read an affected partition of one of its parents.

    A parent without partitions (scores reading a refitted model) affects the open months
    only: history keeps the model_version that scored it, as with the daily refresh.
    """
    node = graph.get(key)
    keys: set[str] = set()
    for parent in affected_parents:
        if parent not in partitions:
            keys |= {month_key(month) for month in open_months(now)}
            continue
        mapping = graph.get_partition_mapping(key, parent)
        downstream = mapping.get_downstream_partitions_for_partitions(
            partitions[parent],
            graph.get(parent).partitions_def,
            node.partitions_def,
            current_time=utc_moment(now).to_pydatetime(),
        )
        keys |= set(downstream.get_partition_keys())
    return keys


def subset_summary(subset: AssetGraphSubset) -> dict[str, list[str]]:
    """{asset: partition keys} of a subset, [] for an unpartitioned asset; for logs and tests."""
    summary = {key.to_user_string(): [] for key in subset.non_partitioned_asset_keys}
    for key, partitions in subset.partitions_subsets_by_asset_key.items():
        summary[key.to_user_string()] = sorted(partitions.get_partition_keys())
    return dict(sorted(summary.items()))


def describe_subset(subset: AssetGraphSubset) -> str:
    """A subset as one line: `asset months; ...`, unpartitioned assets by name alone."""
    parts = []
    for name, keys in subset_summary(subset).items():
        months = months_text([pd.Timestamp(key) for key in keys]) if keys else ""
        parts.append(f"{name} {months}".strip())
    return "; ".join(parts)
