"""Monthly partitions and the partition mappings that express the lookback and performance windows.

Dagster clips a window mapping silently at the bounds of the upstream partitions. That is what
the lookback wants near the first month (fewer months of history exist), but it would hand the
labels a short performance window near the present. Labels therefore get their own partitions,
which end at the last mature month, so a label partition never exists before its window does.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import (
    BackfillPolicy,
    MonthlyPartitionsDefinition,
    PartitionMapping,
    TimeWindowPartitionMapping,
)

from credit_risk_assets.settings import Settings

# "All history" as an offset: a century of months, clipped by Dagster to the first partition.
_ALL_HISTORY_OFFSET = -1200

# Range runs (one run per contiguous range of months) instead of one run per month.
SINGLE_RUN_BACKFILL = BackfillPolicy.single_run()


@dataclass(frozen=True)
class PipelineWindows:
    """Partitions definitions and window mappings, derived from the settings at load time."""

    months: MonthlyPartitionsDefinition
    label_months: MonthlyPartitionsDefinition
    lookback: PartitionMapping
    performance: PartitionMapping
    lookback_months: int
    horizon_months: int

    @property
    def notebook_mode(self) -> bool:
        """True when labels come from the feature rows themselves (horizon 0)."""
        return self.horizon_months == 0


def build_windows(settings: Settings) -> PipelineWindows:
    """The monthly partitions and window mappings for these settings."""
    start_date = settings.first_month.isoformat()

    # end_offset=1 makes the current (still moving) month a partition.
    months = MonthlyPartitionsDefinition(start_date=start_date, end_offset=1)

    if settings.lookback_months == 0:
        lookback_start = _ALL_HISTORY_OFFSET
    else:
        lookback_start = -(settings.lookback_months - 1)
    lookback = TimeWindowPartitionMapping(start_offset=lookback_start, end_offset=0)

    if settings.notebook_mode:
        # Notebook mode labels T from the rows its features see: the lookback window.
        label_months = months
        performance = lookback
    else:
        # T is mature once T+1..T+H are complete months: T + H <= current month - 1.
        label_months = MonthlyPartitionsDefinition(
            start_date=start_date, end_offset=-settings.horizon_months
        )
        performance = TimeWindowPartitionMapping(start_offset=0, end_offset=settings.horizon_months)

    return PipelineWindows(
        months=months,
        label_months=label_months,
        lookback=lookback,
        performance=performance,
        lookback_months=settings.lookback_months,
        horizon_months=settings.horizon_months,
    )
