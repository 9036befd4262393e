"""Settings read from the environment."""

from __future__ import annotations

from datetime import date

import pytest

from credit_risk_assets.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for variable in (
        "CREDIT_RISK_SOURCE_URL",
        "CREDIT_RISK_WAREHOUSE_URL",
        "CREDIT_RISK_SOURCE_TABLE",
        "CREDIT_RISK_FIRST_MONTH",
        "CREDIT_RISK_LOOKBACK_MONTHS",
        "CREDIT_RISK_HORIZON_MONTHS",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))


def test_defaults_are_sqlite_files_in_the_home_folder(tmp_path) -> None:
    """With nothing set, both databases are SQLite files under CREDIT_RISK_HOME."""
    settings = load_settings()

    assert settings.source_url == f"sqlite:///{tmp_path / 'source.db'}"
    assert settings.warehouse_url == f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert settings.source_table == "delinquency_snapshot"
    assert settings.first_month == date(2024, 1, 1)
    assert (settings.lookback_months, settings.horizon_months) == (6, 6)
    assert not settings.notebook_mode


def test_horizon_zero_selects_notebook_mode_with_all_history(monkeypatch) -> None:
    """Horizon 0 is notebook mode, and brings lookback 0 (all history) unless one is set."""
    monkeypatch.setenv("CREDIT_RISK_HORIZON_MONTHS", "0")
    assert load_settings().notebook_mode
    assert load_settings().lookback_months == 0

    monkeypatch.setenv("CREDIT_RISK_LOOKBACK_MONTHS", "3")
    assert load_settings().lookback_months == 3


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        # not a number
        ("CREDIT_RISK_LOOKBACK_MONTHS", "six", "CREDIT_RISK_LOOKBACK_MONTHS='six'"),
        # negative window
        ("CREDIT_RISK_HORIZON_MONTHS", "-1", "CREDIT_RISK_HORIZON_MONTHS=-1"),
        # month without a dash
        ("CREDIT_RISK_FIRST_MONTH", "202401", "CREDIT_RISK_FIRST_MONTH='202401'"),
        # month 13
        ("CREDIT_RISK_FIRST_MONTH", "2024-13", "CREDIT_RISK_FIRST_MONTH='2024-13'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(monkeypatch, variable, value, expected):
    """A value the pipeline cannot use raises an error that names the variable and value."""
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert expected in str(error.value)
