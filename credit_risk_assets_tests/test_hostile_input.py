"""Hostile input: SQL in names, months and settings; malformed source values.

Statements are checked on the server: a private throwaway MariaDB (one for this module) logs
every statement it receives to its general_log table, so a test can list the statements that
carried its payload. A payload that is refused never reaches the log. A payload that is data
reaches it only inside the INSERT that stores it, as a literal the driver escaped, or not at
all when rows travel as LOAD DATA file contents. A canary table in each database must
survive with its row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterError, materialize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_risk_assets.cli import main
from credit_risk_assets.compute.contract import (
    RULES,
    SOURCE_COLUMN_NAMES,
    SourceSchemaError,
    check_source_contract,
)
from credit_risk_assets.definitions import build_assets, build_resources
from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets.settings import load_settings
from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets_tests.mariadb_server import ThrowawayMariaDB, start_throwaway_server
from credit_risk_assets_tests.snapshots import make_snapshot

MONTH, NEXT_MONTH = pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")

# 4. Property: generated malformed snapshots through the source contract.

# Values that make a cell malformed for its column: unreadable, null where required,
# impossible, out of range or breaking a rule, whatever the rest of the row holds.
MALFORMED_VALUES: dict[str, list[object]] = {
    "account_id": [None, "", "12a", 1.5, "4.5", 2**70, "1; DROP TABLE canary; --", np.nan],
    "billing_cycle": [
        None,
        "",
        "2024-02-30",
        "2024-13-01",
        "not a date",
        "2024-03-15",
        "2024-05-01",
        20240301,
        pd.Timestamp("2024-03-01 10:30"),
    ],
    "due_date": [None, "", "2024-02-30", "0000-00-00", "garbage", 45000, pd.NaT],
    "payment_date": ["", "2024-02-31", "tomorrow", 1.5],
    "days_past_due": [None, "", "ten", -1, 1.5, 10**12, -(10**12), 2**63, "1e400", np.inf],
    "delinquency_bucket": [None, "", "default", "On-Time ", "'; DROP TABLE canary; --", 7],
    "is_delinquent": [None, "", "yes", 2, -1, 0.5],
}


def valid_month(accounts: int, seed: int) -> pd.DataFrame:
    """A valid March of `accounts` accounts, every column as object so any value fits."""
    frame = make_snapshot(
        accounts=accounts,
        months=1,
        first_month="2024-03-01",
        seed=seed,
        gap_rate=0.0,
        late_start_rate=0.0,
        early_stop_rate=0.0,
    )
    return frame.astype(object)


Snapshot = tuple[pd.DataFrame, pd.DataFrame, set[tuple[int, str]]]


@st.composite
def malformed_snapshots(draw: st.DrawFn) -> Snapshot:
    """(original, malformed copy, (row, column) of each cell spoiled); row 0 is never spoiled."""
    accounts = draw(st.integers(min_value=2, max_value=12))
    original = valid_month(accounts, draw(st.integers(min_value=0, max_value=10_000)))
    spoiled = original.copy()
    cells = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=accounts - 1),
                st.sampled_from(SOURCE_COLUMN_NAMES),
                st.integers(min_value=0, max_value=99),
            ),
            min_size=1,
            max_size=accounts,
        )
    )
    for row, column, choice in cells:
        values = MALFORMED_VALUES[column]
        spoiled.iat[row, spoiled.columns.get_loc(column)] = values[choice % len(values)]
    huge = draw(st.sets(st.integers(min_value=1, max_value=accounts - 1), max_size=2))
    consistent = ["days_past_due", "delinquency_bucket", "is_delinquent", "payment_date"]
    for row in huge:
        # Consistent in every other way: only its size makes the row impossible.
        dpd = draw(st.sampled_from([2**31, 10**12, 2**62]))
        spoiled.loc[row, consistent] = [dpd, "Default", 1, None]
    spoiled_cells = {(row, column) for row, column, _ in cells}
    return original, spoiled, spoiled_cells | {(row, name) for row in huge for name in consistent}


def same_value(left: object, right: object) -> bool:
    """The same value of the same type, or both missing (None, NaN, NaT)."""
    if pd.isna(left) or pd.isna(right):
        return bool(pd.isna(left) and pd.isna(right))
    return type(left) is type(right) and bool(left == right)


def wholly_spoiled_columns(spoiled: pd.DataFrame, cells: set[tuple[int, str]]) -> list[str]:
    """Columns holding values, every one of them spoiled: to the contract, a retyped column."""
    return [
        name
        for name in SOURCE_COLUMN_NAMES
        if spoiled[name].notna().any()
        and all((row, name) in cells for row in np.flatnonzero(spoiled[name].notna()))
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_snapshots())
def test_every_malformed_row_is_rejected_with_a_rule_and_the_rest_pass_unchanged(
    snapshot: Snapshot,
) -> None:
    """Each row is accepted exactly as it was generated, or rejected with a rule and its values.

    When every value present in a column is spoiled (a nullable column of a tiny month), the
    contract cannot tell bad rows from a retyped column and refuses the month naming the column.
    """
    original, spoiled, cells = snapshot

    refusal = None
    try:
        result = check_source_contract(spoiled, MONTH, NEXT_MONTH)
    except SourceSchemaError as error:
        refusal = str(error)

    if refusal is not None:
        headline = refusal.split(":")[0]
        assert any(name in headline for name in wholly_spoiled_columns(spoiled, cells)), refusal
        return

    rejected = set(result.rejects["source_row"])
    accepted = [row for row in range(len(spoiled)) if row not in rejected]
    assert rejected == {row for row, _ in cells}
    assert set(result.rejects["rule"]) <= set(RULES)
    expected = original.iloc[accepted].reset_index(drop=True).astype(result.valid.dtypes)
    pd.testing.assert_frame_equal(result.valid, expected)
    for reject in result.rejects.itertuples(index=False):
        row = spoiled.iloc[reject.source_row]
        kept = [getattr(reject, name) for name in SOURCE_COLUMN_NAMES]
        assert all(map(same_value, row.tolist(), kept)), (reject.rule, row.tolist(), kept)


# 4. SQL in names, months and settings, checked on a private server's general query log.


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayMariaDB]:
    """A throwaway MariaDB that logs every statement it receives to mysql.general_log."""
    server = start_throwaway_server(tmp_path_factory.mktemp("mariadb"))
    server.execute("SET GLOBAL log_output = 'TABLE'")
    server.execute("SET GLOBAL general_log = 'ON'")
    yield server
    server.remove()


@dataclass(frozen=True)
class HostileSetup:
    """A source and a warehouse database on the logged server, each with a canary table."""

    server: ThrowawayMariaDB
    source_url: str
    warehouse_url: str
    databases: tuple[str, str]


@pytest.fixture
def hostile_setup(
    logged_server: ThrowawayMariaDB,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[HostileSetup]:
    """Fresh source (with a valid snapshot) and warehouse databases, configured for the CLI."""
    databases = (f"src_{uuid.uuid4().hex[:8]}", f"wh_{uuid.uuid4().hex[:8]}")
    for name in databases:
        logged_server.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        logged_server.execute("CREATE TABLE canary (id INT PRIMARY KEY)", name)
        logged_server.execute("INSERT INTO canary VALUES (1)", name)
    setup = HostileSetup(
        logged_server, logged_server.url(databases[0]), logged_server.url(databases[1]), databases
    )
    write_source_table(
        setup.source_url, generate_snapshot(accounts=50, months=2, end_month=date(2024, 3, 1))
    )
    for variable in CONFIG_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("CREDIT_RISK_SOURCE_URL", setup.source_url)
    monkeypatch.setenv("CREDIT_RISK_WAREHOUSE_URL", setup.warehouse_url)
    monkeypatch.setenv("CREDIT_RISK_FIRST_MONTH", "2024-02")
    yield setup
    for name in databases:
        logged_server.execute(f"DROP DATABASE `{name}`")


CONFIG_VARIABLES = (
    "CREDIT_RISK_SOURCE_URL",
    "CREDIT_RISK_WAREHOUSE_URL",
    "CREDIT_RISK_SOURCE_TABLE",
    "CREDIT_RISK_FIRST_MONTH",
    "CREDIT_RISK_LOOKBACK_MONTHS",
    "CREDIT_RISK_HORIZON_MONTHS",
)

# Each payload tries to end the statement and run another; {marker} makes it findable.
PAYLOADS = [
    # a quote, a statement separator and a line comment
    "x'; DROP TABLE canary; -- {marker}",
    # a backslash before the quote, which MySQL's escaping treats specially, and a # comment
    "x\\'; DROP TABLE canary; # {marker}",
    # a backtick closing a quoted identifier, and a block comment
    "x`; DROP TABLE canary; /* {marker} */",
    # a double quote and a parenthesis closing a VALUES list
    'x"); DELETE FROM canary; -- {marker}',
]


def new_marker() -> str:
    """A token no statement holds unless a payload carried it there."""
    return f"hostile{uuid.uuid4().hex[:12]}"


def statements_carrying(server: ThrowawayMariaDB, marker: str) -> list[tuple[str, str]]:
    """(command type, statement) of every logged statement whose text holds `marker`.

    The marker is searched for as hex, so that this query's own text does not hold it.
    """
    rows = server.execute(
        "SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log "
        f"WHERE INSTR(argument, UNHEX('{marker.encode().hex()}')) > 0"
    )
    return [(str(kind), str(text)) for kind, text in rows]


def assert_canaries_alive(setup: HostileSetup) -> None:
    """Each canary table still exists with its one row."""
    for name in setup.databases:
        assert setup.server.execute("SELECT id FROM canary", name) == [(1,)]


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """`credit-risk` in this process; its status and stderr."""
    try:
        status = main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sql_in_the_source_table_name_is_refused_before_any_statement(
    hostile_setup: HostileSetup,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    payload: str,
) -> None:
    """CREDIT_RISK_SOURCE_TABLE with SQL in it: run and sample-data exit 1 naming the rule."""
    marker = new_marker()
    monkeypatch.setenv("CREDIT_RISK_SOURCE_TABLE", payload.format(marker=marker))

    run_status, run_error = run_cli(capsys, "run")
    sample_status, sample_error = run_cli(capsys, "sample-data", "--accounts", "3")

    assert (run_status, sample_status) == (1, 1)
    assert marker in run_error
    assert "letter or underscore" in run_error
    assert marker in sample_error
    assert statements_carrying(hostile_setup.server, marker) == []
    assert_canaries_alive(hostile_setup)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sql_in_a_month_is_refused_before_any_statement(
    hostile_setup: HostileSetup,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    payload: str,
) -> None:
    """A month carrying SQL, as a setting, an option, a partition key or an argument, is refused."""
    marker = new_marker()
    month = "2024-03-01" + payload.format(marker=marker)
    database = WarehouseDatabase(hostile_setup.warehouse_url)
    spec = TABLES["streaks"]
    settings = load_settings()

    monkeypatch.setenv("CREDIT_RISK_FIRST_MONTH", month)
    setting_status, setting_error = run_cli(capsys, "run")
    monkeypatch.setenv("CREDIT_RISK_FIRST_MONTH", "2024-02")
    option_status, option_error = run_cli(capsys, "run", "--start", month)
    refusals = [
        partial(database.replace_months, spec, spec.empty_frame(), month, "2024-04-01"),
        partial(database.read, spec, month),
        partial(database.latest_month, spec, None, month),
        partial(
            materialize,
            build_assets(settings),
            selection=["delinquency_snapshot"],
            partition_key=month,
            resources=build_resources(settings),
        ),
    ]
    errors = []
    for refused in refusals:
        with pytest.raises((ValueError, DagsterError)) as error:
            refused()
        errors.append(str(error.value))
    database.dispose()

    assert setting_status == 1
    assert "CREDIT_RISK_FIRST_MONTH" in setting_error
    assert option_status == 2
    assert "not a month" in option_error
    assert all(marker in error for error in errors), errors
    assert statements_carrying(hostile_setup.server, marker) == []
    assert_canaries_alive(hostile_setup)


INIT_COMMAND = "?init_command=DROP+TABLE+canary+--+{marker}"
SERVER = "mysql+pymysql://root@127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("variable", "value", "explained_by"),
    [
        # a whole statement in place of a number of months
        ("CREDIT_RISK_LOOKBACK_MONTHS", "6; DROP TABLE canary; -- {marker}", "whole number"),
        ("CREDIT_RISK_HORIZON_MONTHS", "6' OR '1'='1 {marker}", "whole number"),
        # a database name that tries to close the quoting of a USE statement
        (
            "CREDIT_RISK_WAREHOUSE_URL",
            SERVER + "/w`; DROP TABLE canary; -- {marker}",
            "Unknown database",
        ),
        # a URL option that would make the driver run SQL on every connection
        ("CREDIT_RISK_WAREHOUSE_URL", SERVER + "/{warehouse}" + INIT_COMMAND, "init_command"),
        ("CREDIT_RISK_SOURCE_URL", SERVER + "/{source}" + INIT_COMMAND, "init_command"),
    ],
    ids=["lookback", "horizon", "database-name", "warehouse-init-command", "source-init-command"],
)
def test_sql_in_a_setting_is_refused_or_never_run(
    hostile_setup: HostileSetup,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    explained_by: str,
) -> None:
    """Settings carrying SQL make `credit-risk run` exit 1 saying why; no SQL of theirs runs."""
    marker = new_marker()
    source, warehouse = hostile_setup.databases
    port = hostile_setup.server.port
    monkeypatch.setenv(
        variable, value.format(marker=marker, port=port, source=source, warehouse=warehouse)
    )

    status, error = run_cli(capsys, "run")

    assert status == 1
    assert explained_by in error, error
    # A database name reaches the server in the connection handshake, never in a statement.
    assert {kind for kind, _ in statements_carrying(hostile_setup.server, marker)} <= {"Connect"}
    assert_canaries_alive(hostile_setup)


def plant_in_source(setup: HostileSetup, statement: str, **params: object) -> None:
    """Change the source without the change itself showing in the general log."""
    engine = sa.create_engine(setup.source_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET SESSION sql_log_off = 1")
            connection.execute(sa.text(statement), params)
    finally:
        engine.dispose()


@pytest.fixture(params=["default", "NO_BACKSLASH_ESCAPES"])
def server_sql_mode(
    request: pytest.FixtureRequest, logged_server: ThrowawayMariaDB
) -> Iterator[str]:
    """The server's default sql_mode, or one where a backslash is no escape character."""
    [(previous,)] = logged_server.execute("SELECT @@GLOBAL.sql_mode")
    if request.param != "default":
        logged_server.execute(
            f"SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',{request.param}')"
        )
    yield request.param
    logged_server.execute(f"SET GLOBAL sql_mode = '{previous}'")


@pytest.mark.parametrize(
    "write_path",
    [
        # rows sent as a tab-separated file, the bulk path
        "load-data",
        # rows sent as multi-row INSERT statements with values escaped by the driver
        "insert",
    ],
)
def test_sql_in_source_values_is_stored_as_text_and_never_run(
    hostile_setup: HostileSetup,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    server_sql_mode: str,
    write_path: str,
) -> None:
    """Buckets holding SQL are rejected, kept verbatim in source_rejects, and never run."""
    markers = {account: new_marker() for account in range(7, 7 + len(PAYLOADS))}
    values = {
        account: payload.format(marker=markers[account])
        for account, payload in zip(markers, PAYLOADS, strict=True)
    }
    for account, value in values.items():
        plant_in_source(
            hostile_setup,
            "UPDATE delinquency_snapshot SET delinquency_bucket = :value WHERE account_id = :id",
            value=value,
            id=account,
        )
    if write_path == "insert":
        monkeypatch.setenv(
            "CREDIT_RISK_WAREHOUSE_URL", hostile_setup.warehouse_url + "?local_infile=0"
        )

    status, error = run_cli(capsys, "run")

    rejects = WarehouseDatabase(hostile_setup.warehouse_url).read(TABLES["source_rejects"])
    kept = dict(zip(rejects["account_id"], rejects["delinquency_bucket"], strict=True))
    statements = [
        statement
        for marker in markers.values()
        for statement in statements_carrying(hostile_setup.server, marker)
    ]
    assert status == 1
    assert "bucket_mismatch" in error
    assert kept == {str(account): value for account, value in values.items()}
    # Through INSERT each value is one escaped literal of the statement that stores it;
    # through LOAD DATA values travel as file data and no statement holds them.
    assert all(kind == "Query" for kind, _ in statements)
    assert all(text.startswith("INSERT INTO `source_rejects`") for _, text in statements)
    assert len(statements) == (len(PAYLOADS) if write_path == "insert" else 0)
    assert_canaries_alive(hostile_setup)


# Malformed source values: a source kept as text, as an export loaded without types would be.

TEXT_SOURCE_DDL = (
    "CREATE TABLE delinquency_snapshot ("
    + ", ".join(f"{name} VARCHAR(400) NULL" for name in SOURCE_COLUMN_NAMES)
    + ")"
)
GOOD = ("2024-03-01", "2024-03-19", "2024-03-15", "0", "On-Time", "0")

# (account_id, billing_cycle, due_date, payment_date, days_past_due, bucket, is_delinquent)
# and the rule each malformed row must be rejected by.
MALFORMED_ROWS = [
    # text in a numeric column
    (("12a", *GOOD), "unparseable_value"),
    (("102", "2024-03-01", "2024-03-19", "2024-03-15", "ten", "On-Time", "0"), "unparseable_value"),
    # impossible dates, one of them the billing cycle itself
    (("103", "2024-03-01", "2024-02-30", "2024-03-15", "0", "On-Time", "0"), "unparseable_value"),
    (("104", "2024-03-32", "2024-03-19", "2024-03-15", "0", "On-Time", "0"), "unparseable_value"),
    # 10^12 days past due, otherwise consistent
    (
        ("105", "2024-03-01", "2024-03-19", None, "1000000000000", "Default", "1"),
        "unparseable_value",
    ),
    # empty strings everywhere but the billing cycle
    (("", "2024-03-01", "", "", "", "", ""), "unparseable_value"),
    # NULLs everywhere but the billing cycle
    ((None, "2024-03-01", None, None, None, None, None), "null_required"),
    # NULLs everywhere: a row of no month at all
    ((None, None, None, None, None, None, None), "null_required"),
    # text of no month in the billing cycle
    (("109", "garbage", "2024-03-19", "2024-03-15", "0", "On-Time", "0"), "unparseable_value"),
    # an "open end" date past what the frames' dates hold
    (("111", "2024-03-01", "2024-03-19", "9999-12-31", "0", "On-Time", "0"), "unparseable_value"),
]
# A bucket too long for any warehouse column: kept, cut to fit, with its length noted.
LONG_BUCKET_ROW = ("110", "2024-03-01", "2024-03-19", None, "45", "Mild" * 75, "1")
GOOD_ACCOUNTS = range(1, 21)


def write_text_source(url: str) -> None:
    """Replace the source table by a text one holding 20 good rows and the malformed ones."""
    malformed = [row for row, _ in MALFORMED_ROWS] + [LONG_BUCKET_ROW]
    rows = [(str(account), *GOOD) for account in GOOD_ACCOUNTS] + malformed
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE delinquency_snapshot")
            connection.exec_driver_sql(TEXT_SOURCE_DDL)
            connection.exec_driver_sql(
                f"INSERT INTO delinquency_snapshot VALUES ({', '.join(['%s'] * 7)})", rows
            )
    finally:
        engine.dispose()


def test_malformed_source_values_fail_the_month_with_every_row_kept_as_a_reject(
    hostile_setup: HostileSetup, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each malformed row lands in source_rejects with its rule and its exact text; nothing else."""
    monkeypatch.setenv("CREDIT_RISK_FIRST_MONTH", "2024-03")
    write_text_source(hostile_setup.source_url)

    status, error = run_cli(capsys, "run")

    warehouse = WarehouseDatabase(hostile_setup.warehouse_url)
    rejects = warehouse.read(TABLES["source_rejects"])
    written = warehouse.row_count(TABLES["delinquency_snapshot"])
    warehouse.dispose()
    assert status == 1
    malformed = len(MALFORMED_ROWS) + 1
    assert f"{malformed} of {malformed + len(GOOD_ACCOUNTS)} rows" in error
    assert written == 0
    kept = {
        tuple(None if pd.isna(value) else value for value in row): rule
        for *row, rule in rejects[[*SOURCE_COLUMN_NAMES, "rule"]].itertuples(index=False)
    }
    for row, rule in MALFORMED_ROWS:
        assert kept.get(row) == rule, (row, rule)
    long_bucket = rejects.loc[rejects["account_id"] == "110", "delinquency_bucket"].tolist()
    assert long_bucket == ["Mild" * 53 + "Mil [cut from 300 chars]"]
    assert len(rejects) == malformed


def test_with_a_tolerance_every_source_row_is_written_or_kept_as_a_reject(
    hostile_setup: HostileSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With max_invalid_rows the good rows are written, the bad kept: none goes missing."""
    monkeypatch.setenv("CREDIT_RISK_FIRST_MONTH", "2024-03")
    write_text_source(hostile_setup.source_url)
    settings = load_settings()

    result = materialize(
        build_assets(settings),
        selection=["delinquency_snapshot"],
        partition_key="2024-03-01",
        resources=build_resources(settings),
        run_config={"ops": {"delinquency_snapshot": {"config": {"max_invalid_rows": 50}}}},
    )

    warehouse = WarehouseDatabase(hostile_setup.warehouse_url)
    snapshot = warehouse.read(TABLES["delinquency_snapshot"])
    rejects = warehouse.read(TABLES["source_rejects"])
    warehouse.dispose()
    assert result.success
    assert snapshot["account_id"].tolist() == list(GOOD_ACCOUNTS)
    assert rejects["source_row"].nunique() == len(MALFORMED_ROWS) + 1
    [(source_rows,)] = hostile_setup.server.execute(
        "SELECT COUNT(*) FROM delinquency_snapshot", hostile_setup.databases[0]
    )
    assert len(snapshot) + rejects["source_row"].nunique() == source_rows


# Text that breaks naive escaping: quotes, backslashes, the bulk format's own separators.
AWKWARD_TEXTS = [
    "x'; DROP TABLE canary; --",
    "back\\\\slash\\",
    "\\N",
    "tab\tand\nnewline\r\n",
    'quote " and ` backtick',
    "nul\x00byte",
    "",
    " padded ",
    "ünïcödé 😀",
]


@pytest.fixture(params=["sqlite", "mysql-load-data", "mysql-insert"])
def any_write_path(request: pytest.FixtureRequest) -> str:
    """A fresh database URL for each way rows reach a database."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue("mysql_url")
    return url if request.param == "mysql-load-data" else url + "?local_infile=0"


def test_awkward_text_round_trips_unchanged_through_every_write_path(any_write_path: str) -> None:
    """Quotes, backslashes, \\N, tabs, newlines, NUL and empty strings read back as written."""
    database = WarehouseDatabase(any_write_path)
    drivers = pd.DataFrame(
        {
            "model_version": "v1",
            "feature": [f"f{number}" for number in range(len(AWKWARD_TEXTS))],
            "coefficient": 1.0,
            "odds_ratio": 2.0,
            "driver_rank": range(1, len(AWKWARD_TEXTS) + 1),
            "direction": AWKWARD_TEXTS,
        }
    ).astype({"driver_rank": "int64", "direction": "str"})
    rejects = pd.DataFrame(
        {
            "run_id": "run-1",
            "billing_month": pd.Timestamp("2024-03-01"),
            "source_row": range(len(AWKWARD_TEXTS) + 1),
            "rule": "unparseable_value",
            **{name: [*AWKWARD_TEXTS, None] for name in SOURCE_COLUMN_NAMES},
            "rejected_at": pd.Timestamp("2024-03-02 08:00:00"),
        }
    ).astype(TABLES["source_rejects"].empty_frame().dtypes.to_dict())

    database.replace_table(TABLES["risk_drivers"], drivers)
    database.append(TABLES["source_rejects"], rejects)

    pd.testing.assert_frame_equal(database.read(TABLES["risk_drivers"]), drivers)
    read_back = database.read(TABLES["source_rejects"])
    for name in SOURCE_COLUMN_NAMES:
        assert read_back[name].iloc[:-1].tolist() == AWKWARD_TEXTS, name
        assert pd.isna(read_back[name].iloc[-1]), f"{name}: NULL read back as a value"
    database.dispose()
