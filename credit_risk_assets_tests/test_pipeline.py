"""`credit-risk sample-data` and `credit-risk run` end to end, on SQLite and on MariaDB."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from credit_risk_assets.cli import main
from credit_risk_assets.tables import TABLES
from credit_risk_assets_tests.conftest import (
    create_mysql_database,
    drop_mysql_database,
    mysql_url_for,
)

MONTHLY_ASSETS = ("delinquency_snapshot", "account_features", "streaks", "risk_scores")
URL_VARIABLES = (
    "CREDIT_RISK_SOURCE_URL",
    "CREDIT_RISK_WAREHOUSE_URL",
    "CREDIT_RISK_SOURCE_TABLE",
    "CREDIT_RISK_FIRST_MONTH",
    "CREDIT_RISK_LOOKBACK_MONTHS",
    "CREDIT_RISK_HORIZON_MONTHS",
)


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment whose embedded databases and Dagster instance live in tmp_path."""
    for variable in URL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the `credit-risk` command in this process; return its status, stdout and stderr."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def read_table(url: str, name: str) -> pd.DataFrame:
    """A whole table read back with plain SQL."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {name}"), connection)
    engine.dispose()
    return frame


def month_of(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).dt.to_period("M").dt.to_timestamp()


def assert_tables_have_their_declared_schema(url: str) -> None:
    """Every table exists with the declared columns, in order, and the declared primary key."""
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    for name, spec in TABLES.items():
        if name == "source_rejects" and not inspector.has_table(name):
            continue
        columns = [column["name"] for column in inspector.get_columns(name)]
        key = inspector.get_pk_constraint(name)["constrained_columns"]
        assert columns == list(spec.column_names), name
        assert key == list(spec.primary_key), name
    engine.dispose()


def assert_row_counts_follow_the_source(source: pd.DataFrame, warehouse_url: str) -> None:
    """Each table holds the rows the source implies, recounted here with plain pandas."""
    source = source.assign(month=month_of(source["billing_cycle"]))
    months = sorted(source["month"].unique())
    rows_per_month = source.groupby("month").size()

    snapshot = read_table(warehouse_url, "delinquency_snapshot")
    assert len(snapshot) == len(source)

    features = read_table(warehouse_url, "account_features")
    for month in months:
        window = source[(source["month"] > month - pd.DateOffset(months=6))]
        window = window[window["month"] <= month]
        in_features = features[month_of(features["as_of_month"]) == month]
        assert len(in_features) == window["account_id"].nunique(), month

    streaks = read_table(warehouse_url, "streaks")
    assert len(streaks) == len(features)

    scores = read_table(warehouse_url, "risk_scores")
    assert month_of(scores["as_of_month"]).value_counts().sort_index().tolist() == (
        rows_per_month.tolist()
    )

    latest = read_table(warehouse_url, "account_risk_scores")
    assert len(latest) == rows_per_month.iloc[-1]
    assert list(latest.columns[:7]) == [
        "account_id",
        "pd_score",
        "risk_segment",
        "avg_dpd",
        "max_dpd",
        "delinquency_ratio",
        "delinquency_streak",
    ]

    assert len(read_table(warehouse_url, "pd_model")) == 6
    assert len(read_table(warehouse_url, "risk_drivers")) == 6


def assert_labels_are_forward_looking(source: pd.DataFrame, warehouse_url: str) -> None:
    """Labels exist for the mature months only, each over the six months after T."""
    source = source.assign(month=month_of(source["billing_cycle"]))
    labels = read_table(warehouse_url, "default_flags")
    label_months = sorted(month_of(labels["as_of_month"]).unique())
    current = pd.Timestamp.today().to_period("M").to_timestamp()

    assert label_months[-1] == current - pd.DateOffset(months=7)
    for month in label_months:
        at_t = source[(source["month"] == month) & (source["days_past_due"] < 90)]
        later = source[
            (source["month"] > month) & (source["month"] <= month + pd.DateOffset(months=6))
        ]
        population = set(at_t["account_id"]) & set(later["account_id"])
        labelled = labels[month_of(labels["as_of_month"]) == month]
        assert set(labelled["account_id"]) == population, month


def assert_model_is_plausible_and_scores_match_its_table(warehouse_url: str) -> float:
    """OOT AUC in a behavioural band, all segments used, PDs recomputed from the parameters."""
    model = read_table(warehouse_url, "pd_model").sort_values("feature_order")
    latest = read_table(warehouse_url, "account_risk_scores")
    features = read_table(warehouse_url, "account_features")
    streaks = read_table(warehouse_url, "streaks")
    month = latest["as_of_month"].max()

    auc = float(model["auc"].iloc[0])
    assert model["validation_sample"].iloc[0] == "out_of_time"
    assert 0.6 < auc < 0.95
    assert set(latest["risk_segment"]) == {"Low", "Medium", "High"}

    inputs = features[features["as_of_month"] == month].merge(
        streaks[streaks["as_of_month"] == month], on=["as_of_month", "account_id"]
    )
    scored = latest[latest["in_default"] == 0].merge(inputs, on="account_id", suffixes=("", "_f"))
    standardised = (
        scored[model["feature"].tolist()].to_numpy(float) - model["scaler_mean"].to_numpy()
    ) / model["scaler_scale"].to_numpy()
    log_odds = model["intercept"].iloc[0] + standardised @ model["coefficient"].to_numpy()
    np.testing.assert_allclose(scored["pd_score"], 1 / (1 + np.exp(-log_odds)), rtol=1e-9)
    return auc


def assert_instance_shows_the_materialisations(dagster_home: Path, months: list[str]) -> None:
    """The persistent instance holds a materialisation of every asset and month."""
    instance = DagsterInstance.from_config(str(dagster_home))
    for name in MONTHLY_ASSETS:
        assert instance.get_materialized_partitions(AssetKey(name)) >= set(months), name
    for name in ("default_flags", "pd_model", "risk_drivers", "account_risk_scores"):
        assert instance.get_latest_materialization_event(AssetKey(name)) is not None, name
    instance.dispose()


def test_run_on_the_embedded_default_writes_sample_data_and_every_table(environment, capsys):
    """With no configuration, `credit-risk run` makes sample data and fills every table."""
    status, out, err = run_cli(capsys, "run")

    assert status == 0, err
    assert "sample data" in out
    assert "out-of-time" in out
    assert "AUC" in out
    home = environment / "home"
    warehouse_url = f"sqlite:///{home / 'warehouse.db'}"
    source = read_table(f"sqlite:///{home / 'source.db'}", "delinquency_snapshot")
    assert_tables_have_their_declared_schema(warehouse_url)
    assert_row_counts_follow_the_source(source, warehouse_url)
    assert_labels_are_forward_looking(source, warehouse_url)
    auc = assert_model_is_plausible_and_scores_match_its_table(warehouse_url)
    months = sorted(month_of(source["billing_cycle"]).dt.strftime("%Y-%m-%d").unique())
    assert_instance_shows_the_materialisations(environment / "dagster", months)
    sys.stderr.write(f"\nOOT AUC on the default sample data (SQLite): {auc:.3f}\n{out}\n")


def test_an_invalid_source_month_fails_and_keeps_the_previous_tables(environment, capsys):
    """A bad row fails the run with the rule named; the tables stay and the row is kept."""
    assert run_cli(capsys, "run")[0] == 0
    home = environment / "home"
    warehouse_url = f"sqlite:///{home / 'warehouse.db'}"
    before = read_table(warehouse_url, "delinquency_snapshot")
    engine = sa.create_engine(f"sqlite:///{home / 'source.db'}")
    with engine.begin() as connection:
        month = connection.execute(sa.text("SELECT MIN(billing_cycle) FROM delinquency_snapshot"))
        first_month = month.scalar_one()
        connection.execute(
            sa.text(
                "UPDATE delinquency_snapshot SET days_past_due = -5 "
                "WHERE account_id = 3 AND billing_cycle = :month"
            ),
            {"month": first_month},
        )
    engine.dispose()

    status, _, err = run_cli(capsys, "run")

    assert status == 1
    assert "negative_days_past_due" in err
    pd.testing.assert_frame_equal(read_table(warehouse_url, "delinquency_snapshot"), before)
    rejects = read_table(warehouse_url, "source_rejects")
    assert set(rejects["account_id"]) == {"3"}
    assert "negative_days_past_due" in set(rejects["rule"])


def test_a_warehouse_pointed_at_the_source_is_refused(environment, capsys, monkeypatch):
    """The same database for source and warehouse exits 1 with a message saying what to do."""
    url = f"sqlite:///{environment / 'one.db'}"
    monkeypatch.setenv("CREDIT_RISK_SOURCE_URL", url)
    monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", url)

    status, _, err = run_cli(capsys, "run")

    assert status == 1
    assert "never writes to the source" in err


def test_the_installed_command_explains_its_options() -> None:
    """`credit-risk --help` and each subcommand's help list what can be set."""
    command = Path(sys.executable).with_name("credit-risk")

    def help_text(*args: str) -> str:
        result = subprocess.run(
            [str(command), *args, "--help"], capture_output=True, text=True, check=True
        )
        return result.stdout

    assert "sample-data" in help_text()
    assert "run" in help_text()
    assert all(flag in help_text("sample-data") for flag in ("--accounts", "--months", "--seed"))
    assert all(flag in help_text("run") for flag in ("--start", "--end"))


@pytest.mark.mysql
def test_run_on_mariadb_with_a_select_only_source_user(
    environment, capsys, monkeypatch, mysql_server
):
    """On MariaDB, with the source read by a SELECT-only user, every table is filled."""
    server = mysql_server
    source_db, warehouse_db = create_mysql_database(server), create_mysql_database(server)
    reader, password = f"crsrc_{uuid.uuid4().hex[:8]}", "Re4d-Only-Pass"
    with server.begin() as connection:
        connection.execute(sa.text(f"CREATE USER '{reader}'@'%' IDENTIFIED BY '{password}'"))
        connection.execute(sa.text(f"GRANT SELECT ON `{source_db}`.* TO '{reader}'@'%'"))
    try:
        admin_source_url = mysql_url_for(server, source_db)
        reader_url = server.url.set(
            username=reader, password=password, database=source_db
        ).render_as_string(hide_password=False)
        warehouse_url = mysql_url_for(server, warehouse_db)

        monkeypatch.setenv("CREDIT_RISK_SOURCE_URL", admin_source_url)
        assert run_cli(capsys, "sample-data")[0] == 0
        monkeypatch.setenv("CREDIT_RISK_SOURCE_URL", reader_url)
        monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", warehouse_url)
        status, out, err = run_cli(capsys, "run")

        assert status == 0, err
        assert password not in out + err
        source = read_table(admin_source_url, "delinquency_snapshot")
        assert_tables_have_their_declared_schema(warehouse_url)
        assert_row_counts_follow_the_source(source, warehouse_url)
        assert_labels_are_forward_looking(source, warehouse_url)
        auc = assert_model_is_plausible_and_scores_match_its_table(warehouse_url)
        months = sorted(month_of(source["billing_cycle"]).dt.strftime("%Y-%m-%d").unique())
        assert_instance_shows_the_materialisations(environment / "dagster", months)
        sys.stderr.write(f"\nOOT AUC on the default sample data (MariaDB): {auc:.3f}\n")
    finally:
        with server.begin() as connection:
            connection.execute(sa.text(f"DROP USER IF EXISTS '{reader}'@'%'"))
        drop_mysql_database(server, source_db)
        drop_mysql_database(server, warehouse_db)
