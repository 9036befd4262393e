"""When the schedules and the correction sensor run, read from the environment at load time.

- CREDIT_RISK_DAILY_REFRESH_CRON (default `0 6 * * *`): the daily refresh.
- CREDIT_RISK_MONTHLY_RETRAIN_CRON (default `0 5 2 * *`): the retrain, on the second of the
  month, after the first's refresh has taken the final rows of the month that closed and an
  hour before the daily refresh that then scores with the new model.
- CREDIT_RISK_SCHEDULE_TIMEZONE (default `UTC`): the timezone both cron strings are read in.
  Months themselves are always UTC calendar months, the timezone of the partitions.
- CREDIT_RISK_CORRECTIONS_INTERVAL_SECONDS (default 300): the least time between two ticks of
  the snapshot_corrections sensor; each tick scans the whole source table once.
"""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass

from dagster._utils.schedules import is_valid_cron_string

from credit_risk_assets.settings import SettingsError


@dataclass(frozen=True)
class AutomationSettings:
    """Schedule times (two cron strings in one timezone) and the sensor's interval."""

    daily_refresh_cron: str = "0 6 * * *"
    monthly_retrain_cron: str = "0 5 2 * *"
    timezone: str = "UTC"
    corrections_interval_seconds: int = 300


def _cron(variable: str, default: str) -> str:
    value = (os.environ.get(variable) or default).strip()
    if not is_valid_cron_string(value):
        raise SettingsError(
            f"{variable}={value!r} is not a cron string: write five fields, minute hour "
            f"day-of-month month day-of-week, for example {default!r}."
        )
    return value


def _timezone(variable: str, default: str) -> str:
    value = (os.environ.get(variable) or default).strip()
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise SettingsError(
            f"{variable}={value!r} is not a timezone: use an IANA name such as UTC or "
            "Europe/London."
        ) from error
    return value


def _seconds(variable: str, default: int) -> int:
    raw = (os.environ.get(variable) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{variable}={raw!r} is not a whole number of seconds, e.g. {default}.")
    return int(raw)


def load_automation_settings() -> AutomationSettings:
    """The automation settings from the environment, with the documented defaults."""
    defaults = AutomationSettings()
    return AutomationSettings(
        daily_refresh_cron=_cron("CREDIT_RISK_DAILY_REFRESH_CRON", defaults.daily_refresh_cron),
        monthly_retrain_cron=_cron(
            "CREDIT_RISK_MONTHLY_RETRAIN_CRON", defaults.monthly_retrain_cron
        ),
        timezone=_timezone("CREDIT_RISK_SCHEDULE_TIMEZONE", defaults.timezone),
        corrections_interval_seconds=_seconds(
            "CREDIT_RISK_CORRECTIONS_INTERVAL_SECONDS", defaults.corrections_interval_seconds
        ),
    )
