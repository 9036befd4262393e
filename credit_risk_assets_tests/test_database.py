"""The warehouse client on real SQLite files and a real MariaDB/MySQL server."""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import asset, instance_for_test, materialize

from credit_risk_assets.tables import (
    ACCOUNT_FEATURES,
    DELINQUENCY_SNAPSHOT,
    RISK_DRIVERS,
    SOURCE_REJECTS,
    STREAKS,
    TABLES,
)
from credit_risk_assets.warehouse.database import (
    InvalidIdentifierError,
    RowsOutsideWindowError,
    SchemaMismatchError,
    WarehouseDatabase,
    WarehouseError,
    quote_identifier,
    redact_url,
)
from credit_risk_assets.warehouse.io_manager import WarehouseIOManager
from credit_risk_assets.warehouse.schema import ColumnSpec, TableSpec
from credit_risk_assets.warehouse.source import SourceDatabase, SourceError
from credit_risk_assets_tests.conftest import (
    create_mysql_database,
    drop_mysql_database,
)

MARCH, APRIL = pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")
SECRET = "S3cr3t-Pa55"


@pytest.fixture
def database(database_url: str) -> Iterator[WarehouseDatabase]:
    """A warehouse client on a fresh, empty database."""
    warehouse = WarehouseDatabase(database_url)
    yield warehouse
    warehouse.dispose()


def days(*texts: str | None) -> pd.DatetimeIndex:
    """Dates as the frame conventions hold them: datetime64[ns], NaT for None."""
    return pd.to_datetime(list(texts)).as_unit("ns")


def streaks_frame(months: list[str], accounts: int, streak: int = 1) -> pd.DataFrame:
    """Streak rows for every account in every month, all with delinquency_streak = `streak`."""
    index = pd.MultiIndex.from_product(
        [days(*months), np.arange(1, accounts + 1)], names=["as_of_month", "account_id"]
    )
    frame = index.to_frame(index=False)
    frame["delinquency_streak"] = streak
    frame["current_streak"] = frame["account_id"] % 3
    return frame


def plain_sql(url: str, statement: str, **params: object) -> list[tuple]:
    """Rows of a statement run on a separate plain engine, to check what the database holds."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(statement), params)]
    finally:
        engine.dispose()


def table_exists(url: str, name: str) -> bool:
    """Whether the database at `url` holds a table called `name`."""
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table(name)
    finally:
        engine.dispose()


# Three values per column kind: non-ASCII text (utf8mb4), a bigint beyond 32 bits, a leap day.
KIND_VALUES: dict[str, list[object]] = {
    "bigint": [7, 9_000_000_000, -3],
    "int": [0, -5, 2_000_000_000],
    "flag": [1, 0, 1],
    "double": [1.25, -0.5, 1e-9],
    "date": days("2024-01-31", "2023-12-01", "2024-02-29"),
    "datetime": days("2024-07-02 06:30:15", "2024-01-01 00:00:00", "2023-12-31 23:59:59"),
    "label": ["On-Time", "Mild, 遅延", "😀" * 60],
    "text": ["a text", "ß" * 255, "line\nbreak"],
}


def sample_rows(spec: TableSpec) -> pd.DataFrame:
    """Three rows of every declared column with values of its kind, in the frame dtypes.

    Every column differs row by row, so any primary key is unique; the partition column is
    March; the second row of a nullable column is null.
    """
    columns = {}
    for column in spec.columns:
        values = pd.Series(KIND_VALUES[column.kind])
        if column.name == spec.partition_column:
            values = pd.Series(days(*["2024-03-01"] * 3))
        if column.nullable:
            values = values.astype(column.frame_dtype).where([True, False, True])
        columns[column.name] = values.astype(column.frame_dtype)
    return pd.DataFrame(columns)


@pytest.mark.parametrize("spec", list(TABLES.values()), ids=list(TABLES))
def test_every_declared_table_reads_back_with_its_values_and_dtypes(
    database: WarehouseDatabase, spec: TableSpec
) -> None:
    """Dates, nullable dates, nullable Int64, doubles and text read back equal, same dtypes."""
    rows = sample_rows(spec)

    if spec.partition_column:
        database.replace_months(spec, rows, MARCH, APRIL)
    else:
        database.replace_table(spec, rows)
    read = database.read(spec)

    in_key_order = rows.sort_values(list(spec.primary_key), ignore_index=True)
    pd.testing.assert_frame_equal(read, in_key_order)


def test_nulls_are_stored_as_sql_nulls(database: WarehouseDatabase, database_url: str) -> None:
    """NaT and <NA> are stored as SQL NULL, not as text or zero."""
    database.replace_months(DELINQUENCY_SNAPSHOT, sample_rows(DELINQUENCY_SNAPSHOT), MARCH, APRIL)
    database.replace_months(ACCOUNT_FEATURES, sample_rows(ACCOUNT_FEATURES), MARCH, APRIL)

    unpaid = plain_sql(
        database_url, "SELECT account_id FROM delinquency_snapshot WHERE payment_date IS NULL"
    )
    no_current = plain_sql(
        database_url, "SELECT account_id FROM account_features WHERE current_dpd IS NULL"
    )

    assert unpaid == [(9_000_000_000,)]
    assert no_current == [(9_000_000_000,)]


def test_rewriting_a_month_leaves_one_copy(database: WarehouseDatabase, database_url: str) -> None:
    """Writing March twice leaves the second frame's rows only."""
    database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 5, streak=1), MARCH, APRIL)

    written = database.replace_months(
        STREAKS, streaks_frame(["2024-03-01"], 4, streak=2), MARCH, APRIL
    )

    assert written == 4
    assert plain_sql(
        database_url, "SELECT COUNT(*), SUM(delinquency_streak), MAX(account_id) FROM streaks"
    ) == [(4, 8, 4)]


def test_writing_a_range_replaces_exactly_its_months(
    database: WarehouseDatabase, database_url: str
) -> None:
    """A write over February..April replaces those three months and keeps the others."""
    months = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
    database.replace_months(STREAKS, streaks_frame(months, 3, streak=1), months[0], "2024-06-01")

    written = database.replace_months(
        STREAKS, streaks_frame(months[1:4], 2, streak=7), "2024-02-01", "2024-05-01"
    )

    per_month = plain_sql(
        database_url,
        "SELECT as_of_month, COUNT(*), SUM(delinquency_streak) FROM streaks "
        "GROUP BY as_of_month ORDER BY as_of_month",
    )
    assert written == 6
    assert [(str(month)[:10], rows, total) for month, rows, total in per_month] == [
        ("2024-01-01", 3, 3),
        ("2024-02-01", 2, 14),
        ("2024-03-01", 2, 14),
        ("2024-04-01", 2, 14),
        ("2024-05-01", 3, 3),
    ]


def test_rows_outside_the_window_are_refused_and_nothing_is_written(
    database: WarehouseDatabase, database_url: str
) -> None:
    """A frame with a May row is refused for the March window, naming the month."""
    database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 2), MARCH, APRIL)
    stray = streaks_frame(["2024-03-01", "2024-05-01"], 3, streak=9)

    with pytest.raises(RowsOutsideWindowError, match=r"2024-05"):
        database.replace_months(STREAKS, stray, MARCH, APRIL)

    assert plain_sql(database_url, "SELECT COUNT(*), SUM(delinquency_streak) FROM streaks") == [
        (2, 2)
    ]


def _refusing_trigger(dialect: str) -> str:
    if dialect == "sqlite":
        return (
            "CREATE TRIGGER refuse_account_13 BEFORE INSERT ON streaks "
            "WHEN NEW.account_id = 13 BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
    return (
        "CREATE TRIGGER refuse_account_13 BEFORE INSERT ON streaks FOR EACH ROW BEGIN "
        "IF NEW.account_id = 13 THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test trigger'; END IF; END"
    )


def test_a_write_failing_half_way_leaves_the_previous_rows(database_url: str) -> None:
    """An insert refused at its third chunk rolls back the delete and the first chunks."""
    database = WarehouseDatabase(database_url, chunk_rows=5)
    previous = streaks_frame(["2024-03-01"], 10, streak=1)
    database.replace_months(STREAKS, previous, MARCH, APRIL)
    with database.engine.begin() as connection:
        connection.exec_driver_sql(_refusing_trigger(connection.dialect.name))

    with pytest.raises(WarehouseError, match="refused by test trigger"):
        database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 20, streak=2), MARCH, APRIL)

    pd.testing.assert_frame_equal(database.read(STREAKS), previous)
    database.dispose()


def test_an_unpartitioned_replace_is_never_seen_missing_empty_or_partial(
    database_url: str,
) -> None:
    """A second connection polling during many replaces sees only whole old or new tables."""
    writer = WarehouseDatabase(database_url, chunk_rows=100)
    small, large = drivers_frame(600, 1.0), drivers_frame(900, 2.0)
    writer.replace_table(RISK_DRIVERS, small)
    whole_tables = {(600, 600.0), (900, 1800.0)}
    seen: list[tuple[int, float]] = []
    errors: list[Exception] = []
    writing = threading.Event()
    writing.set()

    def poll() -> None:
        reader = sa.create_engine(database_url, connect_args=_reader_connect_args(database_url))
        while writing.is_set():
            try:
                with reader.connect() as connection:
                    count, total = connection.execute(
                        sa.text("SELECT COUNT(*), SUM(coefficient) FROM risk_drivers")
                    ).one()
                seen.append((int(count), float(total or 0)))
            except sa.exc.DBAPIError as error:
                errors.append(error)
        reader.dispose()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for replace in range(20):
            writer.replace_table(RISK_DRIVERS, large if replace % 2 == 0 else small)
    finally:
        writing.clear()
        poller.join()
        writer.dispose()

    assert errors == []
    assert len(seen) >= 20
    assert set(seen) <= whole_tables


def _reader_connect_args(url: str) -> dict[str, object]:
    return {"timeout": 30} if url.startswith("sqlite") else {}


def drivers_frame(rows: int, coefficient: float) -> pd.DataFrame:
    """A risk_drivers table of `rows` features, every coefficient equal."""
    return pd.DataFrame(
        {
            "model_version": "v1",
            "feature": [f"feature_{number}" for number in range(rows)],
            "coefficient": coefficient,
            "odds_ratio": np.exp(coefficient),
            "driver_rank": np.arange(1, rows + 1),
            "direction": "raises PD",
        }
    )


def test_a_leftover_staging_table_is_dropped_before_a_replace(
    database: WarehouseDatabase, database_url: str
) -> None:
    """A staging table left by a crashed run, even of another shape, does not block a replace."""
    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE risk_drivers__staging (junk INTEGER)")
        connection.exec_driver_sql("INSERT INTO risk_drivers__staging VALUES (1)")

    database.replace_table(RISK_DRIVERS, drivers_frame(3, 0.5))

    assert plain_sql(database_url, "SELECT COUNT(*) FROM risk_drivers") == [(3,)]
    assert not table_exists(database_url, "risk_drivers__staging")


def _with_null_account(frame: pd.DataFrame) -> pd.DataFrame:
    frame["account_id"] = frame["account_id"].astype("Int64")
    frame.loc[1, "account_id"] = pd.NA
    return frame


@pytest.mark.parametrize(
    ("spoil", "named"),
    [
        # a declared column is missing
        (lambda frame: frame.drop(columns="current_streak"), ["current_streak"]),
        # a column the table does not declare
        (lambda frame: frame.assign(score=1.0), ["score"]),
        # a null in a non-null column
        (_with_null_account, ["account_id"]),
        # text in a numeric column
        (lambda frame: frame.assign(delinquency_streak=["3", "x", "1"]), ["delinquency_streak"]),
        # fractions in an integer column
        (lambda frame: frame.assign(current_streak=[0.5, 1.0, 2.0]), ["current_streak"]),
        # a time of day in a date column
        (
            lambda frame: frame.assign(as_of_month=pd.Timestamp("2024-03-01 10:00")),
            ["as_of_month"],
        ),
        # two rows with the same primary key
        (lambda frame: frame.assign(account_id=[1, 1, 2]), ["as_of_month", "account_id"]),
    ],
    ids=["missing", "unexpected", "null", "text", "fraction", "time-of-day", "repeated-key"],
)
def test_a_frame_that_does_not_fit_the_schema_is_refused_before_writing(
    database: WarehouseDatabase, database_url: str, spoil, named: list[str]
) -> None:
    """The error names the table and the columns at fault, and the old rows stay as they were."""
    database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 2, streak=5), MARCH, APRIL)
    spoiled = spoil(streaks_frame(["2024-03-01"], 3, streak=1))

    with pytest.raises(SchemaMismatchError) as refused:
        database.replace_months(STREAKS, spoiled, MARCH, APRIL)

    assert "'streaks'" in str(refused.value)
    assert all(name in str(refused.value) for name in named)
    assert plain_sql(database_url, "SELECT COUNT(*), SUM(delinquency_streak) FROM streaks") == [
        (2, 10)
    ]


def test_a_refused_first_write_creates_no_table(
    database: WarehouseDatabase, database_url: str
) -> None:
    """A frame refused by the schema check leaves no empty table behind."""
    with pytest.raises(SchemaMismatchError, match="text"):
        database.replace_table(RISK_DRIVERS, drivers_frame(2, 1.0).assign(direction=[1, 2]))

    assert not table_exists(database_url, "risk_drivers")


def test_the_table_is_created_from_the_declared_schema(database: WarehouseDatabase) -> None:
    """Column types, nullability and primary key come from the declaration, not from pandas."""
    database.ensure_table(ACCOUNT_FEATURES)

    inspector = sa.inspect(database.engine)
    columns = {column["name"]: column for column in inspector.get_columns("account_features")}
    key = inspector.get_pk_constraint("account_features")["constrained_columns"]

    assert list(columns) == list(ACCOUNT_FEATURES.column_names)
    assert isinstance(columns["as_of_month"]["type"], sa.Date)
    assert isinstance(columns["max_dpd"]["type"], sa.Integer)
    assert columns["current_dpd"]["nullable"] is True
    assert columns["avg_dpd"]["nullable"] is False
    assert key == ["as_of_month", "account_id"]


def test_an_existing_table_with_other_columns_is_refused(database: WarehouseDatabase) -> None:
    """A table left by another version is named, not written into."""
    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE streaks (as_of_month DATE, account_id BIGINT)")

    with pytest.raises(WarehouseError, match=r"streaks.*missing \['delinquency_streak'"):
        database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 1), MARCH, APRIL)


def test_appending_adds_rows_to_the_table(database: WarehouseDatabase, database_url: str) -> None:
    """Two appends to the rejects table keep both batches, nullable text as NULL."""
    batch = rejects_frame("run-1")

    database.append(SOURCE_REJECTS, batch)
    database.append(SOURCE_REJECTS, rejects_frame("run-2"))

    assert plain_sql(
        database_url,
        "SELECT run_id, COUNT(*), COUNT(payment_date) FROM source_rejects "
        "GROUP BY run_id ORDER BY run_id",
    ) == [("run-1", 2, 1), ("run-2", 2, 1)]
    pd.testing.assert_frame_equal(database.read(SOURCE_REJECTS).iloc[:2], batch)


def rejects_frame(run_id: str) -> pd.DataFrame:
    """Two rejected source rows as text, one without a payment date."""
    return pd.DataFrame(
        {
            "run_id": [run_id, run_id],
            "billing_month": days("2024-03-01", "2024-03-01"),
            "source_row": np.array([4, 9], dtype="int64"),
            "rule": ["bucket_matches_scale", "not_null"],
            "account_id": ["12", "15"],
            "billing_cycle": ["2024-03-01", "2024-03-01"],
            "due_date": ["2024-03-15", "2024-03-15"],
            "payment_date": ["2024-03-20", None],
            "days_past_due": ["5", "-1"],
            "delinquency_bucket": ["Severe", "On-Time"],
            "is_delinquent": ["1", "0"],
            "rejected_at": days(*["2024-03-02 08:00:00"] * 2),
        }
    ).astype({"payment_date": "str"})


def test_reading_a_window_selects_only_its_months(database: WarehouseDatabase) -> None:
    """A read of [March, May) returns March and April rows, in primary-key order."""
    months = ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
    database.replace_months(STREAKS, streaks_frame(months, 2), months[0], "2024-06-01")

    read = database.read(STREAKS, MARCH, "2024-05-01", columns=["account_id", "as_of_month"])

    assert list(read.columns) == ["account_id", "as_of_month"]
    assert read.values.tolist() == [
        [1, pd.Timestamp("2024-03-01")],
        [2, pd.Timestamp("2024-03-01")],
        [1, pd.Timestamp("2024-04-01")],
        [2, pd.Timestamp("2024-04-01")],
    ]


def test_a_read_with_text_columns_across_a_missing_month_returns_every_row(
    database: WarehouseDatabase,
) -> None:
    """Months read one at a time (text columns on MySQL) skip an empty month and keep key order."""
    march, june = sample_rows(DELINQUENCY_SNAPSHOT), sample_rows(DELINQUENCY_SNAPSHOT)
    june["billing_cycle"] = days(*["2024-06-01"] * 3)
    june["delinquency_bucket"] = ["Severe", "Current", "Moderate"]
    rows = pd.concat([june, march], ignore_index=True)
    database.replace_months(DELINQUENCY_SNAPSHOT, rows, MARCH, "2024-07-01")

    read = database.read(DELINQUENCY_SNAPSHOT, "2024-01-01", "2024-08-01")

    in_key_order = rows.sort_values(list(DELINQUENCY_SNAPSHOT.primary_key), ignore_index=True)
    pd.testing.assert_frame_equal(read, in_key_order)
    assert read["billing_cycle"].dt.month.tolist() == [3, 3, 3, 6, 6, 6]


def test_a_missing_table_reads_as_an_empty_frame_with_declared_dtypes(
    database: WarehouseDatabase,
) -> None:
    """Reading a table never written gives no rows, the declared columns and their dtypes."""
    read = database.read(ACCOUNT_FEATURES)

    assert read.empty
    assert list(read.columns) == list(ACCOUNT_FEATURES.column_names)
    assert read["as_of_month"].dtype == "datetime64[ns]"
    assert read["current_dpd"].dtype == "Int64"
    assert database.row_count(ACCOUNT_FEATURES) == 0
    assert database.latest_month(ACCOUNT_FEATURES) is None


def test_latest_month_is_the_latest_present_within_the_window(
    database: WarehouseDatabase,
) -> None:
    """latest_month gives the maximum month present, within the window when one is given."""
    months = ["2024-01-01", "2024-02-01", "2024-04-01"]
    database.replace_months(STREAKS, streaks_frame(months, 2), months[0], "2024-05-01")

    assert database.latest_month(STREAKS) == pd.Timestamp("2024-04-01")
    assert database.latest_month(STREAKS, "2024-01-01", "2024-04-01") == pd.Timestamp("2024-02-01")
    assert database.latest_month(STREAKS, "2024-05-01", "2024-07-01") is None
    assert database.row_count(STREAKS) == 6


def test_writes_log_one_line_each_with_count_and_table(
    database: WarehouseDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A month replace and a table replace each log their row count and target table."""
    caplog.set_level(logging.INFO, logger="credit_risk_assets.warehouse.database")

    database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 3), MARCH, APRIL)
    database.replace_table(RISK_DRIVERS, drivers_frame(4, 1.0))

    messages = [record.getMessage() for record in caplog.records]
    assert "Replaced 2024-03-01..2024-04-01 in streaks: 3 rows (0 before)" in messages
    assert "Replaced table risk_drivers: 4 rows" in messages


@pytest.mark.parametrize(
    "name",
    [
        'account"id',  # double quote
        "account`id",  # backtick
        "streaks; DROP TABLE streaks",  # statement separator
        "streaks--",  # comment
        "",  # empty
        "1streaks",  # leading digit
        "a" * 65,  # longer than 64 characters
        "streaks\n",  # trailing newline, which `$` alone would accept
    ],
)
def test_identifiers_that_could_carry_sql_are_refused(
    database: WarehouseDatabase, database_url: str, name: str
) -> None:
    """quote_identifier and the table writes refuse the name, naming it and the rule."""
    spec = TableSpec(
        name="streaks",
        description="Streaks with a hostile column name.",
        columns=(*STREAKS.columns, ColumnSpec(name, "int", "Hostile.")),
        primary_key=STREAKS.primary_key,
        partition_column="as_of_month",
    )

    with pytest.raises(InvalidIdentifierError) as refused:
        quote_identifier(database.engine, name)
    with pytest.raises(InvalidIdentifierError):
        database.ensure_table(spec)

    assert repr(name) in str(refused.value)
    assert "letter or underscore" in str(refused.value)
    assert not table_exists(database_url, "streaks")


def test_valid_identifiers_are_quoted_for_the_dialect(database: WarehouseDatabase) -> None:
    """A valid name comes back quoted with the dialect's own quote character."""
    quote = "`" if database.engine.dialect.name == "mysql" else '"'

    assert quote_identifier(database.engine, "as_of_month") == f"{quote}as_of_month{quote}"


def test_same_database_is_recognised_through_different_spellings(tmp_path, monkeypatch) -> None:
    """The same SQLite file or MySQL database is recognised; another one is not."""
    monkeypatch.chdir(tmp_path)
    sqlite = WarehouseDatabase(f"sqlite:///{tmp_path / 'warehouse.db'}")
    mysql = WarehouseDatabase("mysql+pymysql://etl:one@localhost/warehouse")

    assert sqlite.same_database_as("sqlite:///warehouse.db")
    assert sqlite.same_database_as(f"sqlite:///{tmp_path / 'sub' / '..' / 'warehouse.db'}")
    assert not sqlite.same_database_as("sqlite:///source.db")
    assert mysql.same_database_as("mysql+pymysql://reader:two@127.0.0.1:3306/warehouse")
    assert not mysql.same_database_as("mysql+pymysql://etl:one@localhost/source")
    assert not mysql.same_database_as("mysql+pymysql://etl:one@db.example.com/warehouse")
    assert not mysql.same_database_as("sqlite:///warehouse")


# Passwords: a MySQL user with a distinctive password, so that any leak can be searched for.


@pytest.fixture
def secret_mysql_url(mysql_server: sa.Engine) -> Iterator[str]:
    """URL of a fresh database reached by a user whose password is SECRET."""
    database = create_mysql_database(mysql_server)
    user = f"cr_{uuid.uuid4().hex[:10]}"
    with mysql_server.begin() as connection:
        connection.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'"))
        connection.execute(sa.text(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'"))
    url = mysql_server.url.set(username=user, password=SECRET, database=database)
    yield url.render_as_string(hide_password=False)
    with mysql_server.begin() as connection:
        connection.execute(sa.text(f"DROP USER '{user}'@'%'"))
    drop_mysql_database(mysql_server, database)


def _full_text(error: BaseException) -> str:
    """Message, repr and formatted traceback (with any chained exception) of an error."""
    return "\n".join(
        [str(error), repr(error), *traceback.format_exception(type(error), error, None)]
    )


def test_redact_url_hides_the_password_and_secret_parameters() -> None:
    """The password and a password query parameter become ***; the rest stays readable."""
    redacted = redact_url(f"mysql+pymysql://etl:{SECRET}@db:3306/warehouse?password={SECRET}")

    assert SECRET not in redacted
    assert redacted == "mysql+pymysql://etl:***@db:3306/warehouse?password=***"


def test_the_password_reaches_no_log_line_error_or_metadata(
    secret_mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes, reads, failures and Dagster metadata through a password user never show it."""
    caplog.set_level(logging.DEBUG)
    database = WarehouseDatabase(secret_mysql_url)

    database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 2), MARCH, APRIL)
    database.replace_table(RISK_DRIVERS, drivers_frame(2, 1.0))
    database.read(STREAKS)
    with database.engine.begin() as connection:
        connection.exec_driver_sql(_refusing_trigger("mysql"))
    with pytest.raises(WarehouseError) as failed:
        database.replace_months(STREAKS, streaks_frame(["2024-03-01"], 20), MARCH, APRIL)
    metadata = _materialisation_metadata(secret_mysql_url)
    database.dispose()

    assert "refused by test trigger" in str(failed.value)
    assert SECRET not in _full_text(failed.value)
    assert SECRET not in repr(database)
    assert SECRET not in caplog.text
    assert "streaks" in caplog.text
    assert metadata["dagster/uri"].endswith("#risk_drivers")
    assert all(SECRET not in str(value) for value in metadata.values())


def _materialisation_metadata(url: str) -> dict[str, object]:
    """Metadata of one real materialisation through the IO manager."""

    @asset(name="risk_drivers")
    def risk_drivers() -> pd.DataFrame:
        return drivers_frame(3, 1.0)

    with instance_for_test() as instance:
        result = materialize(
            [risk_drivers], resources={"io_manager": WarehouseIOManager(url=url)}, instance=instance
        )
    [event] = result.asset_materializations_for_node("risk_drivers")
    return {key: value.value for key, value in event.metadata.items()}


def test_a_wrong_password_fails_without_showing_it(
    secret_mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connecting with a wrong password raises WarehouseError and SourceError without it."""
    caplog.set_level(logging.DEBUG)
    wrong = sa.make_url(secret_mysql_url).set(password=SECRET + "-wrong")
    wrong_url = wrong.render_as_string(hide_password=False)

    with pytest.raises(WarehouseError) as warehouse_failed:
        WarehouseDatabase(wrong_url).row_count(STREAKS)
    with pytest.raises(SourceError) as source_failed:
        SourceDatabase(url=wrong_url).row_count()

    for failure in (warehouse_failed.value, source_failed.value):
        assert "Access denied" in str(failure)
        assert SECRET not in _full_text(failure)
    assert SECRET not in caplog.text


def test_a_materialisation_that_fails_shows_no_password(secret_mysql_url: str) -> None:
    """A Dagster run whose write fails in the database reports the error without the password."""
    wrong_url = (
        sa.make_url(secret_mysql_url)
        .set(password=SECRET + "-wrong")
        .render_as_string(hide_password=False)
    )

    @asset(name="risk_drivers")
    def risk_drivers() -> pd.DataFrame:
        return drivers_frame(3, 1.0)

    with instance_for_test() as instance:
        result = materialize(
            [risk_drivers],
            resources={"io_manager": WarehouseIOManager(url=wrong_url)},
            instance=instance,
            raise_on_error=False,
        )
        failures = [
            str(event.event_specific_data.error.to_string())
            for event in result.all_events
            if event.is_step_failure
        ]

    assert failures
    assert "Access denied" in failures[0]
    assert all(SECRET not in failure for failure in failures)


def test_month_arguments_must_be_first_days_of_months(database: WarehouseDatabase) -> None:
    """A window that does not start on the first of a month is refused before any write."""
    with pytest.raises(ValueError, match="2024-03-15"):
        database.replace_months(
            STREAKS, streaks_frame(["2024-03-01"], 1), datetime(2024, 3, 15), APRIL
        )
