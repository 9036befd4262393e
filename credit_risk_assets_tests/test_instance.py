"""The Dagster instance files the project ships: local pool limits, MySQL storage in production."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterInstance, DagsterRunStatus

from credit_risk_assets.automation.instance import (
    LOCAL_INSTANCE_YAML,
    POOL_SETTINGS,
    write_local_instance_config,
)
from credit_risk_assets.cli import main
from credit_risk_assets_tests.conftest import create_mysql_database, drop_mysql_database

PRODUCTION_INSTANCE = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
CONFIG_VARIABLES = (
    "CREDIT_RISK_SOURCE_URL",
    "CREDIT_RISK_WAREHOUSE_URL",
    "CREDIT_RISK_SOURCE_TABLE",
    "CREDIT_RISK_FIRST_MONTH",
    "CREDIT_RISK_LOOKBACK_MONTHS",
    "CREDIT_RISK_HORIZON_MONTHS",
)


def test_a_new_local_instance_limits_every_pool_to_one_slot(tmp_path):
    """The file `credit-risk run` writes gives Dagster a default pool limit of one, per step."""
    write_local_instance_config(tmp_path)

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        pools = instance.get_concurrency_config().pool_config

    assert pools.default_pool_limit == 1
    assert pools.pool_granularity.value == "op"
    assert (tmp_path / "dagster.yaml").read_text() == LOCAL_INSTANCE_YAML


def test_an_existing_instance_file_is_kept_and_a_missing_limit_is_reported(tmp_path, caplog):
    """The user's own dagster.yaml is not overwritten; without pool limits, a warning says so."""
    own = "telemetry:\n  enabled: false\n"
    (tmp_path / "dagster.yaml").write_text(own)

    with caplog.at_level(logging.WARNING):
        write_local_instance_config(tmp_path)

    assert (tmp_path / "dagster.yaml").read_text() == own
    assert "sets no pool limit" in caplog.text


def test_the_production_instance_sets_the_same_pools_as_the_local_one():
    """deploy/dagster.yaml and the local file give every pool one slot at op granularity."""
    production = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    local = yaml.safe_load(LOCAL_INSTANCE_YAML)

    assert production["concurrency"] == local["concurrency"] == POOL_SETTINGS
    assert production["storage"]["mysql"]["mysql_db"]["password"] == {
        "env": "DAGSTER_MYSQL_PASSWORD"
    }


@pytest.mark.mysql
def test_the_shipped_production_instance_runs_the_pipeline_on_mysql_storage(
    tmp_path, monkeypatch, capsys, mysql_server
):
    """`credit-risk run` with deploy/dagster.yaml keeps its runs, events and pools in MariaDB."""
    database = create_mysql_database(mysql_server)
    user, password = f"crdag_{uuid.uuid4().hex[:8]}", "Dagster-Inst4nce-Pass"
    with mysql_server.begin() as connection:
        connection.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        connection.execute(sa.text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    try:
        home = tmp_path / "dagster"
        home.mkdir()
        shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
        for variable in CONFIG_VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_MYSQL_HOST", mysql_server.url.host or "127.0.0.1")
        monkeypatch.setenv("DAGSTER_MYSQL_PORT", str(mysql_server.url.port or 3306))
        monkeypatch.setenv("DAGSTER_MYSQL_DB", database)
        monkeypatch.setenv("DAGSTER_MYSQL_USER", user)
        monkeypatch.setenv("DAGSTER_MYSQL_PASSWORD", password)

        status = main(["run"])
        out, err = capsys.readouterr()

        assert status == 0, err
        assert password not in out + err
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "MySQLRunStorage"
            assert type(instance.event_log_storage).__name__ == "MySQLEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "MySQLScheduleStorage"
            runs = instance.get_runs()
            pools = instance.get_concurrency_config().pool_config.default_pool_limit
        assert runs
        assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
        engine = sa.create_engine(
            mysql_server.url.set(username=user, password=password, database=database)
        )
        with engine.connect() as connection:
            stored_runs = connection.execute(sa.text("SELECT run_id FROM runs")).scalars().all()
            limits = dict(
                connection.execute(
                    sa.text("SELECT concurrency_key, `limit` FROM concurrency_limits")
                ).all()
            )
        engine.dispose()
        assert set(stored_runs) == {run.run_id for run in runs}
        assert pools == 1
        assert limits["delinquency_snapshot"] == 1
        assert not (home / "history").exists()
    finally:
        with mysql_server.begin() as connection:
            connection.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        drop_mysql_database(mysql_server, database)
