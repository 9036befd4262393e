"""Settings read from the environment when the definitions load.

The window lengths shape the partition mappings, so they cannot be run config: Dagster needs
them before any run exists. Everything else a modeller may tune lives in run config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_FIRST_MONTH = "2024-01"
DEFAULT_LOOKBACK_MONTHS = 6
DEFAULT_HORIZON_MONTHS = 6
DEFAULT_SOURCE_TABLE = "delinquency_snapshot"


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where the data lives and how long the lookback and performance windows are."""

    home: Path
    source_url: str
    warehouse_url: str
    source_table: str
    first_month: date
    lookback_months: int
    horizon_months: int

    @property
    def notebook_mode(self) -> bool:
        """True when labels come from the feature rows themselves, as in the notebook."""
        return self.horizon_months == 0


def parse_month(text: str, variable: str = "month") -> date:
    """Parse `YYYY-MM` into the first day of that month."""
    try:
        year, month = (int(part) for part in text.strip().split("-"))
        return date(year, month, 1)
    except ValueError as error:
        raise SettingsError(
            f"{variable}={text!r} is not a month: write it as YYYY-MM, for example 2024-01."
        ) from error


def _read_int(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise SettingsError(
            f"{variable}={raw!r} is not a whole number of months, for example {default}."
        ) from error
    if value < 0:
        raise SettingsError(f"{variable}={value} is negative: use 0 or more months.")
    return value


def credit_risk_home() -> Path:
    """The local folder that holds the embedded SQLite databases and the Dagster instance."""
    return Path(os.environ.get("CREDIT_RISK_HOME", Path.home() / ".credit-risk")).expanduser()


def load_settings() -> Settings:
    """Read the settings from the environment, with the documented defaults."""
    home = credit_risk_home()
    horizon = _read_int("CREDIT_RISK_HORIZON_MONTHS", DEFAULT_HORIZON_MONTHS)

    # Notebook mode reproduces the notebook, which looked at all history: unless the user
    # chose a lookback, horizon 0 brings lookback 0 (all history) with it.
    default_lookback = 0 if horizon == 0 else DEFAULT_LOOKBACK_MONTHS
    lookback = _read_int("CREDIT_RISK_LOOKBACK_MONTHS", default_lookback)

    first_month_text = os.environ.get("CREDIT_RISK_FIRST_MONTH") or DEFAULT_FIRST_MONTH
    return Settings(
        home=home,
        source_url=os.environ.get("CREDIT_RISK_SOURCE_URL") or f"sqlite:///{home / 'source.db'}",
        warehouse_url=os.environ.get("CREDIT_RISK_WAREHOUSE_URL")
        or f"sqlite:///{home / 'warehouse.db'}",
        source_table=os.environ.get("CREDIT_RISK_SOURCE_TABLE") or DEFAULT_SOURCE_TABLE,
        first_month=parse_month(first_month_text, "CREDIT_RISK_FIRST_MONTH"),
        lookback_months=lookback,
        horizon_months=horizon,
    )
