"""Faults injected into real writes: concurrent readers, SIGKILLed writers, a restarted server.

Readers and killed writers run against the shared MariaDB (and SQLite, the embedded default).
Tests that crash or restart a server use a private throwaway MariaDB (one for this module),
since the shared server must never stop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, instance_for_test

from credit_risk_assets.automation.instance import LOCAL_INSTANCE_YAML
from credit_risk_assets.runner import PROCESS_TAG, PipelineRunError, run_pipeline
from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets.settings import load_settings
from credit_risk_assets.tables import ACCOUNT_RISK_SCORES, RISK_SCORES, TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase, WarehouseError
from credit_risk_assets.warehouse.schema import TableSpec
from credit_risk_assets_tests.conftest import (
    create_mysql_database,
    drop_mysql_database,
    mysql_url_for,
)
from credit_risk_assets_tests.interrupted_write import matches_pause_point, version_frame
from credit_risk_assets_tests.mariadb_server import ThrowawayMariaDB, start_throwaway_server

MARCH, APRIL = "2024-03-01", "2024-04-01"
# Accounts of the sample book in whole-pipeline tests: small, since Dagster's overhead dominates.
SMALL_BOOK = 200
FEBRUARY_ROWS = 150
CHILD_START_TIMEOUT_SECONDS = 60
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def rows_of_version(version: int) -> int:
    """Each version has its own row count, so a count also tells versions apart."""
    return 400 + 150 * (version % 4)


def write(database: WarehouseDatabase, spec: TableSpec, frame: pd.DataFrame) -> None:
    """Write `frame` as the table's March (monthly tables) or as the whole table."""
    if spec.partition_column:
        database.replace_months(spec, frame, MARCH, APRIL)
    else:
        database.replace_table(spec, frame)


def tables_in(url: str) -> set[str]:
    """Names of the tables in the database at `url`."""
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def reader_engine(url: str) -> sa.Engine:
    """An engine that reads the way Power BI does: every query its own autocommit statement."""
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=connect_args)


# 1. Readers under rewrites.

VERSION_STATS = "COUNT(*), SUM(pd_score), MIN(pd_score), MAX(pd_score)"
READER_QUERIES = {
    "account_risk_scores": f"SELECT {VERSION_STATS} FROM account_risk_scores",
    "risk_scores": (
        f"SELECT as_of_month, {VERSION_STATS} FROM risk_scores "
        "GROUP BY as_of_month ORDER BY as_of_month"
    ),
}


def assert_whole_version(count: int, total: float, low: float, high: float) -> int:
    """The version that (count, sum, min, max) describe; fails for a partial or mixed read."""
    version = round(low * 1000)
    assert low == high, f"rows of two versions in one read: pd_score {low}..{high}"
    assert count == rows_of_version(version), f"partial read: {count} rows of version {version}"
    assert total == pytest.approx(count * low), "the sum does not match the rows counted"
    return version


def poll_tables(url: str, stop: threading.Event, seen: list, errors: list) -> None:
    """Count and sum both tables until `stop` is set, as a dashboard refresh would."""
    engine = reader_engine(url)
    while not stop.is_set():
        try:
            with engine.connect() as connection:
                latest = connection.execute(sa.text(READER_QUERIES["account_risk_scores"])).one()
                history = connection.execute(sa.text(READER_QUERIES["risk_scores"])).all()
            seen.append((tuple(latest), [tuple(row) for row in history]))
        except sa.exc.DBAPIError as error:
            errors.append(error)
    engine.dispose()


def test_readers_never_see_a_missing_empty_partial_or_mixed_table(database_url: str) -> None:
    """Three readers polling during 20 rewrites of both tables see only whole versions."""
    writer = WarehouseDatabase(database_url, chunk_rows=100)
    write(writer, ACCOUNT_RISK_SCORES, version_frame(ACCOUNT_RISK_SCORES, 1, rows_of_version(1)))
    february = version_frame(RISK_SCORES, 999, FEBRUARY_ROWS, month="2024-02-01")
    writer.replace_months(RISK_SCORES, february, "2024-02-01", MARCH)
    write(writer, RISK_SCORES, version_frame(RISK_SCORES, 1, rows_of_version(1)))
    stop, seen, errors = threading.Event(), [], []
    readers = [
        threading.Thread(target=poll_tables, args=(database_url, stop, seen, errors))
        for _ in range(3)
    ]

    for reader in readers:
        reader.start()
    try:
        for version in range(2, 22):
            for spec in (ACCOUNT_RISK_SCORES, RISK_SCORES):
                write(writer, spec, version_frame(spec, version, rows_of_version(version)))
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        writer.dispose()

    assert errors == []
    latest_versions, march_versions = set(), set()
    for latest, history in seen:
        latest_versions.add(assert_whole_version(*latest))
        [(february, *february_stats), (march, *march_stats)] = history
        assert (str(february)[:10], str(march)[:10]) == ("2024-02-01", MARCH)
        assert february_stats == [FEBRUARY_ROWS, pytest.approx(FEBRUARY_ROWS * 0.999), 0.999, 0.999]
        march_versions.add(assert_whole_version(*march_stats))
    assert len(seen) >= 20
    assert len(latest_versions) >= 3, "the readers saw no rewrite of account_risk_scores"
    assert len(march_versions) >= 3, "the readers saw no rewrite of March in risk_scores"


# 2. Crashes: a writer killed with SIGKILL at chosen points of its write.


def start_interrupted_write(
    tmp_path: Path, environment: dict[str, str] | None = None, **arguments: object
) -> tuple[subprocess.Popen, Path]:
    """Start a child that writes and pauses at `pause_at`; return it and its marker file."""
    marker = tmp_path / f"paused-{uuid.uuid4().hex[:8]}.json"
    payload = json.dumps({**arguments, "marker": str(marker)})
    child = subprocess.Popen(
        [sys.executable, "-m", "credit_risk_assets_tests.interrupted_write", payload],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child, marker


def wait_until_paused(child: subprocess.Popen, marker: Path, timeout: float) -> dict:
    """The marker's content once the child has paused; fails if the child ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            return json.loads(marker.read_text())
        if child.poll() is not None:
            _, err = child.communicate()
            pytest.fail(f"the child ended ({child.returncode}) before its pause point: {err}")
        time.sleep(0.05)
    child.kill()
    pytest.fail(f"the child did not reach its pause point within {timeout} s")


def kill(child: subprocess.Popen) -> None:
    """SIGKILL the child and reap it."""
    child.kill()
    child.communicate()
    assert child.returncode == -9


def server_query(url: str, statement: str, **params: object) -> list[tuple]:
    """Rows of one statement on a fresh connection to the server of `url`."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(statement), params)]
    finally:
        engine.dispose()


def wait_until_gone(url: str, connection_id: int, timeout: float = 30) -> None:
    """Wait until the server has ended (and rolled back) the killed child's connection."""
    query = "SELECT COUNT(*) FROM information_schema.processlist WHERE id = :id"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_query(url, query, id=connection_id) == [(0,)]:
            return
        time.sleep(0.05)
    pytest.fail(f"connection {connection_id} of the killed writer still exists after {timeout} s")


def kill_write_at(
    database_url: str, tmp_path: Path, spec: TableSpec, pause_at: str, version: int
) -> None:
    """Start a write of `version` (3,000 rows) in a child and SIGKILL it at `pause_at`.

    The child's temporary files go to `tmp_path`/tmp, where a test can look for leftovers.
    """
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    child, marker = start_interrupted_write(
        tmp_path,
        {**os.environ, "TMPDIR": str(temp)},
        operation="replace_months" if spec.partition_column else "replace_table",
        url=database_url,
        table=spec.name,
        pause_table=spec.name,
        pause_at=pause_at,
        version=version,
        rows=3000,
        chunk_rows=500,
    )
    paused = wait_until_paused(child, marker, CHILD_START_TIMEOUT_SECONDS)
    connection_id = paused["connection_id"]
    if connection_id is not None and pause_at == "bulk_insert":
        # The kill lands inside an open transaction that has already changed rows.
        [(rows_modified,)] = server_query(
            database_url,
            "SELECT trx_rows_modified FROM information_schema.innodb_trx "
            "WHERE trx_mysql_thread_id = :id",
            id=connection_id,
        )
        assert rows_modified >= 500

    kill(child)

    if connection_id is not None:
        wait_until_gone(database_url, connection_id)


CRASH_POINTS = [
    # a month rewrite killed after its DELETE and some of its INSERTs, before the commit
    pytest.param("risk_scores", "bulk_insert", id="month-during-insert"),
    # a table replace killed while it loads its staging table
    pytest.param("account_risk_scores", "bulk_insert", id="table-during-load"),
    # a table replace killed with the staging table loaded, before the swap
    pytest.param("account_risk_scores", "swap", id="table-between-load-and-swap"),
]


@pytest.mark.parametrize(("table", "pause_at"), CRASH_POINTS)
def test_a_write_killed_before_it_commits_leaves_the_previous_table(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    table: str,
    pause_at: str,
) -> None:
    """After SIGKILL the table is as before; the next write leaves no staging or temp files."""
    spec = TABLES[table]
    database = WarehouseDatabase(database_url)
    before = version_frame(spec, 10, rows_of_version(10))
    write(database, spec, before)

    kill_write_at(database_url, tmp_path, spec, pause_at, version=11)
    survivor = database.read(spec)
    after = version_frame(spec, 12, rows_of_version(12))
    # The next writer shares the killed one's temporary folder, as on one machine.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    write(database, spec, after)

    pd.testing.assert_frame_equal(survivor, before)
    pd.testing.assert_frame_equal(database.read(spec), after)
    assert tables_in(database_url) == {table}
    assert list((tmp_path / "tmp").iterdir()) == []
    database.dispose()


def test_a_replace_killed_after_its_rename_leaves_the_new_table_whole(
    mysql_url: str, tmp_path: Path
) -> None:
    """Killed between RENAME and dropping the old table: the new table is live and whole."""
    database = WarehouseDatabase(mysql_url)
    write(database, ACCOUNT_RISK_SCORES, version_frame(ACCOUNT_RISK_SCORES, 10, 400))

    kill_write_at(mysql_url, tmp_path, ACCOUNT_RISK_SCORES, "after_swap", version=11)
    survivor = database.read(ACCOUNT_RISK_SCORES)
    leftovers = tables_in(mysql_url)
    write(database, ACCOUNT_RISK_SCORES, version_frame(ACCOUNT_RISK_SCORES, 12, 500))

    pd.testing.assert_frame_equal(survivor, version_frame(ACCOUNT_RISK_SCORES, 11, 3000))
    assert leftovers == {"account_risk_scores", "account_risk_scores__old"}
    assert tables_in(mysql_url) == {"account_risk_scores"}
    database.dispose()


def test_a_killed_pipeline_run_leaves_no_half_table_and_the_next_run_finishes(
    mysql_server: sa.Engine, tmp_path: Path
) -> None:
    """`credit-risk run` killed before its last swap shows no table; the next run completes.

    The instance has the shipped pool limits (one writer per table), so the next run also has
    to take back the pool slot the killed run held.
    """
    source_db = create_mysql_database(mysql_server)
    warehouse_db = create_mysql_database(mysql_server)
    source_url = mysql_url_for(mysql_server, source_db)
    warehouse_url = mysql_url_for(mysql_server, warehouse_db)
    environment = pipeline_environment(tmp_path, source_url, warehouse_url)
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)
    source = generate_snapshot(accounts=SMALL_BOOK, months=12)
    try:
        write_source_table(source_url, source)
        child, marker = start_interrupted_write(
            tmp_path,
            environment,
            operation="cli_run",
            pause_table="account_risk_scores",
            pause_at="swap",
        )
        paused = wait_until_paused(child, marker, 180)
        kill(child)
        wait_until_gone(warehouse_url, paused["connection_id"])
        after_kill = read_all(warehouse_url)
        rerun = run_cli(environment, timeout=120)
        after_rerun = read_all(warehouse_url)
    finally:
        drop_mysql_database(mysql_server, source_db)
        drop_mysql_database(mysql_server, warehouse_db)

    assert "account_risk_scores" not in after_kill
    assert len(after_kill["account_risk_scores__staging"]) == latest_accounts(source)
    assert len(after_kill["risk_scores"]) == len(source)
    assert rerun.returncode == 0, rerun.stderr
    assert "freed its pool slots" in rerun.stderr
    assert len(after_rerun["account_risk_scores"]) == latest_accounts(source)
    assert not any(name.endswith(("__staging", "__old")) for name in after_rerun)
    assert_killed_runs_failed_and_released(tmp_path / "dagster", child.pid)


def latest_accounts(source: pd.DataFrame) -> int:
    """Accounts with a row in the source's latest month."""
    return int((source["billing_cycle"] == source["billing_cycle"].max()).sum())


def assert_killed_runs_failed_and_released(dagster_home: Path, pid: int) -> None:
    """The run process `pid` was in is marked failed, and no run holds a pool slot any more."""
    instance = DagsterInstance.from_config(str(dagster_home))
    statuses = {
        run.tags["credit_risk/stage"]: run.status
        for run in instance.get_runs()
        if run.tags.get(PROCESS_TAG, "").endswith(f":{pid}")
    }
    unfinished = instance.get_runs(
        filters=RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED])
    )
    storage = instance.event_log_storage
    held = {
        key: storage.get_concurrency_info(key).claimed_slots
        for key in storage.get_concurrency_keys()
    }
    instance.dispose()
    assert statuses.pop("latest scores") == DagsterRunStatus.FAILURE
    assert set(statuses.values()) == {DagsterRunStatus.SUCCESS}
    assert unfinished == []
    assert all(not slots for slots in held.values()), held


def pipeline_environment(tmp_path: Path, source_url: str, warehouse_url: str) -> dict[str, str]:
    """Environment for `credit-risk` child processes, with a Dagster instance in tmp_path."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CREDIT_RISK_")
    }
    environment.update(
        CREDIT_RISK_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster"),
        CREDIT_RISK_SOURCE_URL=source_url,
        CREDIT_RISK_WAREHOUSE_URL=warehouse_url,
    )
    return environment


def run_cli(
    environment: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`credit-risk run` in a child process with `environment`."""
    return subprocess.run(
        [sys.executable, "-m", "credit_risk_assets.cli", "run", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_all(url: str) -> dict[str, pd.DataFrame]:
    """Every table of the database, rows in a stable order."""
    engine = sa.create_engine(url)
    frames = {}
    try:
        with engine.connect() as connection:
            for name in sa.inspect(connection).get_table_names():
                frame = pd.read_sql(sa.text(f"SELECT * FROM `{name}`"), connection)
                frames[name] = frame.sort_values(list(frame.columns[:2]), ignore_index=True)
    finally:
        engine.dispose()
    return frames


# 3. Server faults: a private MariaDB crashed or shut down in the middle of a write.


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayMariaDB]:
    """A throwaway MariaDB server for this module's restarts (about 3 s to set up)."""
    began = time.perf_counter()
    server = start_throwaway_server(tmp_path_factory.mktemp("mariadb"))
    sys.stderr.write(f"\nthrowaway MariaDB answered after {time.perf_counter() - began:.1f} s\n")
    yield server
    server.remove()


@pytest.fixture
def private_url(private_server: ThrowawayMariaDB) -> Iterator[str]:
    """URL of a fresh database on the private server, dropped afterwards."""
    name = f"fault_{uuid.uuid4().hex[:10]}"
    private_server.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield private_server.url(name)
    if not private_server.running:
        private_server.start()
    private_server.execute(f"DROP DATABASE `{name}`")


@contextmanager
def on_first_statement(
    target: sa.Engine | type[sa.Engine], pause_at: str, table: str, action: Callable[[], None]
) -> Iterator[list[str]]:
    """Run `action` once, at the pause point of `interrupted_write` for `table`.

    Yields a list that receives the statement the action interrupted.
    """
    fired: list[str] = []
    moment = "before_cursor_execute" if pause_at == "swap" else "after_cursor_execute"

    def hook(conn, cursor, statement, parameters, context, executemany) -> None:
        if fired or not matches_pause_point(pause_at, table, statement):
            return
        fired.append(statement)
        action()

    sa.event.listen(target, moment, hook)
    try:
        yield fired
    finally:
        sa.event.remove(target, moment, hook)


def restart(server: ThrowawayMariaDB, fault: str) -> Callable[[], None]:
    """The action that takes the server down by `fault` and starts it again."""

    def act() -> None:
        server.crash() if fault == "crash" else server.stop()
        server.start()

    return act


SERVER_FAULT_POINTS = [
    # a month rewrite: server gone after the DELETE and the first INSERT chunk
    pytest.param("risk_scores", "bulk_insert", id="month-during-insert"),
    # a table replace: server gone while the staging table loads
    pytest.param("account_risk_scores", "bulk_insert", id="table-during-load"),
    # a table replace: server gone after the load, just before the RENAME
    pytest.param("account_risk_scores", "swap", id="table-before-swap"),
]


@pytest.mark.parametrize("fault", ["crash", "shutdown"])
@pytest.mark.parametrize(("table", "pause_at"), SERVER_FAULT_POINTS)
def test_a_server_restart_during_a_write_fails_clearly_and_keeps_the_old_table(
    private_server: ThrowawayMariaDB, private_url: str, table: str, pause_at: str, fault: str
) -> None:
    """The write raises WarehouseError naming the table; the old rows stay; the next write works."""
    spec = TABLES[table]
    database = WarehouseDatabase(private_url, chunk_rows=500)
    before = version_frame(spec, 20, rows_of_version(20))
    write(database, spec, before)

    fault_injected = on_first_statement(
        database.engine, pause_at, table, restart(private_server, fault)
    )
    with fault_injected, pytest.raises(WarehouseError) as failed:
        write(database, spec, version_frame(spec, 21, 3000))
    survivor = database.read(spec)
    after = version_frame(spec, 22, rows_of_version(22))
    write(database, spec, after)

    message = str(failed.value)
    assert table in message
    assert any(reason in message for reason in ("Lost connection", "gone away", "shutdown"))
    assert "Run it again once the server answers" in message
    pd.testing.assert_frame_equal(survivor, before)
    pd.testing.assert_frame_equal(database.read(spec), after)
    assert tables_in(private_url) == {table}
    database.dispose()


def test_a_server_that_is_down_gives_a_clear_error_and_the_write_works_once_it_is_back(
    private_server: ThrowawayMariaDB, private_url: str
) -> None:
    """A write to a stopped server names the server; after a restart the same client writes."""
    database = WarehouseDatabase(private_url)
    write(database, ACCOUNT_RISK_SCORES, version_frame(ACCOUNT_RISK_SCORES, 30, 400))

    private_server.stop()
    try:
        with pytest.raises(WarehouseError) as failed:
            write(database, ACCOUNT_RISK_SCORES, version_frame(ACCOUNT_RISK_SCORES, 31, 400))
    finally:
        private_server.start()
    write(database, ACCOUNT_RISK_SCORES, version_frame(ACCOUNT_RISK_SCORES, 32, 550))

    assert f"127.0.0.1:{private_server.port}" in str(failed.value)
    assert "Can't connect" in str(failed.value) or "Lost connection" in str(failed.value)
    assert database.row_count(ACCOUNT_RISK_SCORES) == 550
    database.dispose()


def test_a_server_crash_during_a_pipeline_run_fails_its_stage_and_a_rerun_recovers(
    private_server: ThrowawayMariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while scores are written fails that stage by name, with no score row written."""
    source_db, warehouse_db = f"src_{uuid.uuid4().hex[:8]}", f"wh_{uuid.uuid4().hex[:8]}"
    for name in (source_db, warehouse_db):
        private_server.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    source_url, warehouse_url = private_server.url(source_db), private_server.url(warehouse_db)
    source = generate_snapshot(accounts=SMALL_BOOK, months=12)
    write_source_table(source_url, source)
    for key, value in pipeline_environment(tmp_path, source_url, warehouse_url).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()

    with instance_for_test() as instance:
        crash = restart(private_server, "crash")
        with (
            on_first_statement(sa.engine.Engine, "bulk_insert", "risk_scores", crash),
            pytest.raises(PipelineRunError) as failed,
        ):
            run_pipeline(settings, instance)
        after_crash = read_all(warehouse_url)
        run_pipeline(settings, instance)
    after_rerun = read_all(warehouse_url)

    assert "Stage 'scores' failed" in str(failed.value)
    assert "risk_scores" in str(failed.value)
    assert "Lost connection" in str(failed.value)
    assert len(after_crash["risk_scores"]) == 0
    assert len(after_crash["account_features"]) > 0
    assert len(after_rerun["risk_scores"]) == len(source)
    assert len(after_rerun["account_risk_scores"]) == latest_accounts(source)
