"""Data quality gates on a real warehouse: the source contract per rule, and the output checks.

One warehouse is built from the sample data once; each test works on its own copy of the
SQLite files. The source table has no keys or NOT NULL constraints, as a careless source
system's table would, so that every kind of invalid row can be written into it.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)

from credit_risk_assets.definitions import build_assets, build_definitions, build_resources
from credit_risk_assets.runner import run_pipeline
from credit_risk_assets.sample_data import generate_snapshot
from credit_risk_assets.settings import Settings
from credit_risk_assets_tests.source_edits import months_ago, read_table, table_names

MONTH = months_ago(6)
CYCLE = f"{MONTH:%Y-%m-%d}"
BROKEN_ROWS = 2

# For each reachable contract rule: rows to pick in MONTH, the edit that breaks the rule for
# them, and how many rows then break it. (billing_cycle_outside_partition cannot be reached
# through the snapshot: the source is read by the partition's own date range.)
RULE_EDITS = {
    "null_required": ("1 = 1", "UPDATE {table} SET due_date = NULL WHERE {rows}", BROKEN_ROWS),
    "unparseable_value": (
        "1 = 1",
        "UPDATE {table} SET days_past_due = 'n/a' WHERE {rows}",
        BROKEN_ROWS,
    ),
    "duplicate_key": (
        "1 = 1",
        "INSERT INTO {table} SELECT * FROM {table} WHERE {rows}",
        2 * BROKEN_ROWS,
    ),
    "billing_cycle_not_month_start": (
        "1 = 1",
        "UPDATE {table} SET billing_cycle = date(billing_cycle, '+14 days') WHERE {rows}",
        BROKEN_ROWS,
    ),
    "negative_days_past_due": (
        "1 = 1",
        "UPDATE {table} SET days_past_due = -5, is_delinquent = 0, payment_date = NULL "
        "WHERE {rows}",
        BROKEN_ROWS,
    ),
    "is_delinquent_mismatch": (
        "1 = 1",
        "UPDATE {table} SET is_delinquent = 1 - is_delinquent WHERE {rows}",
        BROKEN_ROWS,
    ),
    "bucket_mismatch": (
        "days_past_due = 0",
        "UPDATE {table} SET delinquency_bucket = 'Severe' WHERE {rows}",
        BROKEN_ROWS,
    ),
    "payment_days_mismatch": (
        "days_past_due = 0 AND payment_date IS NOT NULL",
        "UPDATE {table} SET payment_date = date(due_date, '+10 days') WHERE {rows}",
        BROKEN_ROWS,
    ),
}


def write_loose_source(path: Path) -> None:
    """The sample data in a source table with no keys and no NOT NULL constraints."""
    frame = generate_snapshot()
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE delinquency_snapshot (account_id INTEGER, billing_cycle DATE, "
            "due_date DATE, payment_date DATE, days_past_due INTEGER, delinquency_bucket TEXT, "
            "is_delinquent INTEGER)"
        )
        rows = frame.astype(object).where(frame.notna(), None)
        for column in ("billing_cycle", "due_date", "payment_date"):
            rows[column] = [None if v is None else f"{v:%Y-%m-%d}" for v in rows[column]]
        connection.executemany(
            "INSERT INTO delinquency_snapshot VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows.itertuples(index=False, name=None),
        )


def settings_in(folder: Path) -> Settings:
    return Settings(
        home=folder,
        source_url=f"sqlite:///{folder / 'source.db'}",
        warehouse_url=f"sqlite:///{folder / 'warehouse.db'}",
        source_table="delinquency_snapshot",
        first_month=date(2024, 1, 1),
        lookback_months=6,
        horizon_months=6,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the loose source and a warehouse built from it by `credit-risk run`."""
    folder = tmp_path_factory.mktemp("built")
    write_loose_source(folder / "source.db")
    run_pipeline(settings_in(folder), DagsterInstance.ephemeral())
    return folder


@pytest.fixture
def folder(built: Path, tmp_path: Path) -> Path:
    """This test's own copy of the source and the warehouse."""
    for name in ("source.db", "warehouse.db"):
        shutil.copy(built / name, tmp_path / name)
    return tmp_path


def execute(sql: str, folder: Path, **values: object) -> None:
    engine = sa.create_engine(f"sqlite:///{folder / 'source.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text(sql), values)
    engine.dispose()


def break_rule(folder: Path, rule: str) -> None:
    """Make BROKEN_ROWS rows of MONTH break `rule`."""
    condition, edit, _ = RULE_EDITS[rule]
    rows = (
        f"rowid IN (SELECT rowid FROM delinquency_snapshot WHERE billing_cycle = :cycle "
        f"AND {condition} ORDER BY account_id LIMIT {BROKEN_ROWS})"
    )
    execute(edit.format(table="delinquency_snapshot", rows=rows), folder, cycle=CYCLE)


def source_month_rows(folder: Path) -> int:
    """Rows the source holds for MONTH, whatever their day."""
    engine = sa.create_engine(f"sqlite:///{folder / 'source.db'}")
    with engine.connect() as connection:
        count = connection.execute(
            sa.text(
                "SELECT COUNT(*) FROM delinquency_snapshot "
                "WHERE billing_cycle >= :start AND billing_cycle < :end"
            ),
            {"start": CYCLE, "end": f"{MONTH + pd.DateOffset(months=1):%Y-%m-%d}"},
        ).scalar_one()
    engine.dispose()
    return count


def warehouse_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every warehouse table but source_rejects, in a stable row order."""
    url = f"sqlite:///{folder / 'warehouse.db'}"
    tables = {name: read_table(url, name) for name in table_names(url) if name != "source_rejects"}
    return {
        name: frame.sort_values(list(frame.columns)).reset_index(drop=True)
        for name, frame in tables.items()
    }


def materialise_snapshot(folder: Path, tolerance: int = 0) -> ExecuteInProcessResult:
    """The snapshot of MONTH, with this invalid-row tolerance."""
    settings = settings_in(folder)
    return materialize(
        build_assets(settings),
        selection=["delinquency_snapshot"],
        partition_key=CYCLE,
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"delinquency_snapshot": {"config": {"max_invalid_rows": tolerance}}}},
        raise_on_error=False,
    )


def failure_text(result: ExecuteInProcessResult) -> str:
    return "\n".join(
        event.step_failure_data.user_failure_data.description
        for event in result.get_step_failure_events()
        if event.step_failure_data.user_failure_data
    )


def check_named(result: ExecuteInProcessResult, asset: str, name: str) -> AssetCheckEvaluation:
    (evaluation,) = (
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey(asset) and e.check_name == name
    )
    return evaluation


@pytest.mark.parametrize("rule", sorted(RULE_EDITS))
def test_a_month_breaking_a_rule_fails_keeps_the_tables_and_passes_with_a_tolerance(folder, rule):
    """Strict: the month fails naming the rule and count, rows go to source_rejects, tables stay.

    With a tolerance of that many rows the month passes, without them, under a warning check.
    """
    before = warehouse_tables(folder)
    break_rule(folder, rule)
    broken = RULE_EDITS[rule][2]
    source_rows = source_month_rows(folder)

    strict = materialise_snapshot(folder)

    assert not strict.success
    count_text = f"{broken} row" if broken == 1 else f"{broken} rows"
    assert f"{rule}: {count_text}" in failure_text(strict)
    contract = check_named(strict, "delinquency_snapshot", "source_contract")
    assert not contract.passed
    assert contract.severity == AssetCheckSeverity.ERROR
    rejects = read_table(f"sqlite:///{folder / 'warehouse.db'}", "source_rejects")
    rejects = rejects[rejects["run_id"] == strict.run_id]
    assert (rejects["rule"] == rule).sum() == broken
    assert set(pd.to_datetime(rejects["billing_month"])) == {MONTH}
    after = warehouse_tables(folder)
    assert list(after) == list(before)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)

    tolerant = materialise_snapshot(folder, tolerance=broken)

    assert tolerant.success
    warning = check_named(tolerant, "delinquency_snapshot", "source_contract")
    assert not warning.passed
    assert warning.severity == AssetCheckSeverity.WARN
    snapshot = read_table(f"sqlite:///{folder / 'warehouse.db'}", "delinquency_snapshot")
    written = (pd.to_datetime(snapshot["billing_cycle"]) == MONTH).sum()
    assert written == source_rows - broken


def test_an_empty_source_month_fails_with_its_name_and_keeps_its_copy(folder):
    """A month with no source rows is a failed check and step, never an empty partition."""
    before = warehouse_tables(folder)
    execute("DELETE FROM delinquency_snapshot WHERE billing_cycle = :cycle", folder, cycle=CYCLE)

    result = materialise_snapshot(folder)

    assert not result.success
    assert f"no rows for billing month(s) {MONTH:%Y-%m}" in failure_text(result)
    assert not check_named(result, "delinquency_snapshot", "source_contract").passed
    after = warehouse_tables(folder)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)


def test_a_missing_source_column_fails_naming_it(folder):
    """A source table without is_delinquent fails the check with the column's name."""
    execute("ALTER TABLE delinquency_snapshot DROP COLUMN is_delinquent", folder)

    result = materialise_snapshot(folder)

    assert not result.success
    assert "is_delinquent" in failure_text(result)
    assert (
        "is_delinquent"
        in check_named(result, "delinquency_snapshot", "source_contract").description
    )


def run_output_checks(folder: Path) -> ExecuteInProcessResult:
    """The checks of risk_scores and account_risk_scores, on what the warehouse holds."""
    settings = settings_in(folder)
    return materialize(
        build_assets(settings),
        selection=AssetSelection.checks_for_assets("risk_scores", "account_risk_scores"),
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_the_output_checks_pass_on_a_clean_build(folder):
    """Every PD in [0, 1] and every account of each scored month present."""
    result = run_output_checks(folder)

    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 4
    assert all(evaluation.passed for evaluation in evaluations)
    coverage = check_named(result, "account_risk_scores", "every_account_scored")
    latest = read_table(f"sqlite:///{folder / 'warehouse.db'}", "account_risk_scores")
    assert coverage.metadata["accounts_checked"].value == len(latest)


def warehouse_sql(folder: Path, sql: str) -> None:
    engine = sa.create_engine(f"sqlite:///{folder / 'warehouse.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text(sql))
    engine.dispose()


def test_a_pd_outside_the_unit_interval_fails_its_check_and_is_not_published(folder):
    """Two PDs of 1.5 in the latest scores: the check counts them, publishing refuses them."""
    latest_month = "(SELECT MAX(as_of_month) FROM risk_scores)"
    warehouse_sql(
        folder,
        f"UPDATE risk_scores SET pd_score = 1.5 WHERE as_of_month = {latest_month} AND "
        f"account_id IN (SELECT account_id FROM risk_scores WHERE as_of_month = {latest_month} "
        "ORDER BY account_id LIMIT 2)",
    )
    published = read_table(f"sqlite:///{folder / 'warehouse.db'}", "account_risk_scores")

    checks = run_output_checks(folder)
    settings = settings_in(folder)
    publish = materialize(
        build_assets(settings),
        selection=["account_risk_scores"],
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    pd_check = check_named(checks, "risk_scores", "pd_in_unit_interval")
    assert not pd_check.passed
    assert pd_check.metadata["rows_invalid"].value == 2
    assert not publish.success
    assert "PD outside [0, 1]" in failure_text(publish)
    pd.testing.assert_frame_equal(
        read_table(f"sqlite:///{folder / 'warehouse.db'}", "account_risk_scores"), published
    )


def test_an_account_missing_from_the_scores_fails_the_coverage_checks(folder):
    """One scored account deleted from both score tables: each coverage check counts one."""
    account = "(SELECT MIN(account_id) FROM account_risk_scores)"
    warehouse_sql(
        folder,
        f"DELETE FROM risk_scores WHERE account_id = {account} "
        "AND as_of_month = (SELECT MAX(as_of_month) FROM risk_scores)",
    )
    warehouse_sql(folder, f"DELETE FROM account_risk_scores WHERE account_id = {account}")

    result = run_output_checks(folder)

    for asset in ("risk_scores", "account_risk_scores"):
        coverage = check_named(result, asset, "every_account_scored")
        assert not coverage.passed, asset
        assert coverage.metadata["accounts_missing"].value == 1, asset


def test_checks_that_guard_power_bi_are_blocking(tmp_path):
    """The contract and output checks stop what reads their table in the same run."""
    graph = build_definitions(settings_in(tmp_path)).resolve_asset_graph()
    blocking = {
        (key.asset_key.to_user_string(), key.name): graph.get(key).blocking
        for key in graph.asset_check_keys
    }

    for key in [
        ("delinquency_snapshot", "source_contract"),
        ("risk_scores", "pd_in_unit_interval"),
        ("risk_scores", "every_account_scored"),
        ("account_risk_scores", "pd_in_unit_interval"),
        ("account_risk_scores", "every_account_scored"),
    ]:
        assert blocking[key], key
