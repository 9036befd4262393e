"""The code location: every asset on the windows of the settings, wired to its resources."""

from __future__ import annotations

import os

from dagster import AssetsDefinition, Definitions, EnvVar

from credit_risk_assets.assets.features import build_feature_assets
from credit_risk_assets.assets.ingestion import build_ingestion_assets
from credit_risk_assets.assets.modelling import build_modelling_assets
from credit_risk_assets.assets.scoring import build_scoring_assets
from credit_risk_assets.partitions import build_windows
from credit_risk_assets.settings import Settings, SettingsError, load_settings
from credit_risk_assets.warehouse.database import WarehouseDatabase, redact_url
from credit_risk_assets.warehouse.io_manager import WarehouseIOManager, WarehouseResource
from credit_risk_assets.warehouse.source import SourceDatabase


def _url_config(variable: str, default: str) -> str | EnvVar:
    # An EnvVar shows in the UI as the variable's name, so a password never reaches it.
    return EnvVar(variable) if os.environ.get(variable) else default


def build_assets(settings: Settings) -> list[AssetsDefinition]:
    """Every asset of the pipeline, partitioned by the windows of these settings."""
    windows = build_windows(settings)
    return [
        *build_ingestion_assets(windows),
        *build_feature_assets(windows),
        *build_modelling_assets(windows),
        *build_scoring_assets(windows),
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


def build_definitions(settings: Settings | None = None) -> Definitions:
    """The Definitions of the code location for these settings (the environment's by default)."""
    settings = settings or load_settings()
    return Definitions(assets=build_assets(settings), resources=build_resources(settings))


defs = build_definitions()
