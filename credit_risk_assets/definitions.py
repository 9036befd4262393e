"""The code location: assets and checks on the windows of the settings, the schedules and the
sensor that run them, and their resources."""

from __future__ import annotations

import os

from dagster import AssetsDefinition, Definitions, EnvVar

from credit_risk_assets.assets.checks import build_output_checks
from credit_risk_assets.assets.features import build_feature_assets
from credit_risk_assets.assets.ingestion import build_ingestion_assets
from credit_risk_assets.assets.modelling import build_modelling_assets
from credit_risk_assets.assets.reporting import build_reporting_assets
from credit_risk_assets.assets.scoring import build_scoring_assets
from credit_risk_assets.assets.validation import build_validation_assets
from credit_risk_assets.automation.schedules import (
    build_jobs,
    build_schedules,
    freshness_policy,
    with_freshness_policy,
)
from credit_risk_assets.automation.sensors import build_corrections_sensor
from credit_risk_assets.automation.settings import AutomationSettings, load_automation_settings
from credit_risk_assets.partitions import build_windows
from credit_risk_assets.settings import Settings, SettingsError, load_settings
from credit_risk_assets.warehouse.database import WarehouseDatabase, redact_url
from credit_risk_assets.warehouse.io_manager import WarehouseIOManager, WarehouseResource
from credit_risk_assets.warehouse.source import SourceDatabase


def _url_config(variable: str, default: str) -> str | EnvVar:
    # An EnvVar shows in the UI as the variable's name, so a password never reaches it.
    return EnvVar(variable) if os.environ.get(variable) else default


def build_assets(settings: Settings) -> list[AssetsDefinition]:
    """Every asset and output check of the pipeline, on the windows of these settings."""
    windows = build_windows(settings)
    return [
        *build_ingestion_assets(windows),
        *build_feature_assets(windows),
        *build_modelling_assets(windows),
        *build_scoring_assets(windows),
        *build_validation_assets(windows),
        *build_reporting_assets(windows),
        *build_output_checks(),
    ]


def build_resources(settings: Settings) -> dict[str, object]:
    """The source and warehouse resources, refusing a warehouse that is the source."""
    if WarehouseDatabase(settings.warehouse_url).same_database_as(settings.source_url):
        raise SettingsError(
            f"The warehouse {redact_url(settings.warehouse_url)} is the source database: the "
            "pipeline never writes to the source. Point CREDIT_RISK_WAREHOUSE_URL at another "
            "database."
        )
    warehouse_url = _url_config("CREDIT_RISK_WAREHOUSE_URL", settings.warehouse_url)
    return {
        "warehouse_io_manager": WarehouseIOManager(url=warehouse_url),
        "warehouse": WarehouseResource(url=warehouse_url),
        "source_database": SourceDatabase(
            url=_url_config("CREDIT_RISK_SOURCE_URL", settings.source_url),
            table=settings.source_table,
        ),
    }


def build_definitions(
    settings: Settings | None = None, automation: AutomationSettings | None = None
) -> Definitions:
    """The code location for these settings (the environment's by default).

    Assets and checks, the daily and monthly jobs and schedules, the source-correction sensor
    and the resources.
    """
    settings = settings or load_settings()
    automation = automation or load_automation_settings()
    windows = build_windows(settings)

    # account_risk_scores promises a daily refresh; the UI marks it stale when one is missed.
    assets = with_freshness_policy(
        build_assets(settings), "account_risk_scores", freshness_policy(automation)
    )
    resources = build_resources(settings)
    graph = Definitions(assets=assets, resources=resources).resolve_asset_graph()
    jobs = build_jobs(graph, windows)
    return Definitions(
        assets=assets,
        jobs=jobs,
        schedules=build_schedules(windows, jobs, automation),
        sensors=[build_corrections_sensor(automation.corrections_interval_seconds)],
        resources=resources,
    )


defs = build_definitions()
