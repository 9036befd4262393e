"""The fast paths (columnar reads, LOAD DATA bulk writes) give what the plain paths give.

Every comparison runs on real SQLite files and a real MariaDB/MySQL server: the same rows go
through the fast path and through the driver's plain cursor or executemany, and what each
stores or returns is compared value for value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from credit_risk_assets.compute.contract import check_source_contract
from credit_risk_assets.runner import month_batches, months_per_run
from credit_risk_assets.sample_data import generate_snapshot
from credit_risk_assets.tables import DELINQUENCY_SNAPSHOT, STREAKS, TABLES
from credit_risk_assets.warehouse import bulk as bulk_module
from credit_risk_assets.warehouse.bulk import (
    TRANSFER_ATTRIBUTE,
    columnar_url,
    read_columnar,
    tsv_bytes,
)
from credit_risk_assets.warehouse.database import WarehouseDatabase, WarehouseError
from credit_risk_assets.warehouse.schema import TableSpec
from credit_risk_assets.warehouse.source import SourceDatabase
from credit_risk_assets_tests.conftest import (
    create_mysql_database,
    drop_mysql_database,
    mysql_url_for,
)

ROWS = 60
BULK_LOGGER = "credit_risk_assets.warehouse.bulk"

# Values that test a text format: every double an exact bit pattern must survive (tiny,
# subnormal, largest, negative zero, thirds, integers past 2**53), integers at their limits,
# dates at both ends of datetime64[ns], microseconds, and text with every character that
# LOAD DATA escapes, the literal text of its NULL marker, quotes and 4-byte UTF-8.
EDGE_VALUES: dict[str, list[object]] = {
    "bigint": [-(2**63), 2**63 - 1, 0, -1, 9_000_000_000],
    "int": [-(2**31), 2**31 - 1, 0, -7, 90],
    "double": [
        0.1,
        1 / 3,
        1e-300,
        5e-324,
        1.7976931348623157e308,
        -0.0,
        2.0**53 + 2,
        -123456789.12345679,
        0.1 + 0.2,
    ],
    "date": ["1900-01-01", "2262-04-10", "2024-02-29", "1970-01-01"],
    "datetime": ["2024-07-02 06:30:15.123456", "1999-12-31 23:59:59", "2024-02-29 00:00:00.5"],
    "label": ["tab\there", "new\nline", "back\\slash", "\\N", "cr\rx", "'quoted\"", "😀" * 16],
    "text": ["nul\0byte", "NULL", "", "\\\\N\t\n", "ß" * 255, "end\\"],
}


def kind_values(kind: str, count: int, rng: np.random.Generator) -> list[object]:
    """`count` distinct values of a column kind: the edge values first, then random ones."""
    if kind == "flag":
        return [position % 2 for position in range(count)]
    edges = EDGE_VALUES[kind]
    if kind in ("bigint", "int"):
        fillers = rng.choice(10**8, size=count, replace=False).tolist()
    elif kind == "double":
        fillers = (rng.standard_normal(count) * 10.0 ** rng.integers(-12, 12, count)).tolist()
    elif kind in ("date", "datetime"):
        offsets = rng.choice(80_000, size=count, replace=False)
        stamps = pd.Timestamp("1950-01-01") + pd.to_timedelta(offsets, unit="D")
        if kind == "datetime":
            stamps = stamps + pd.to_timedelta(rng.integers(0, 86_400 * 10**6, count), unit="us")
        fillers = [str(stamp) for stamp in stamps]
    else:
        fillers = [f"value {number} \t{chr(0x4E00 + number)}" for number in range(count)]
    values = [*edges, *(value for value in fillers if value not in edges)][:count]
    assert len(set(map(str, values))) == count
    return values


def table_rows(spec: TableSpec, seed: int = 3) -> pd.DataFrame:
    """ROWS rows of every declared column, each column's values distinct (so any key is
    unique) and rotated by its position; every third value of a nullable column is null."""
    rng = np.random.default_rng(seed)
    columns = {}
    for position, column in enumerate(spec.columns):
        values = pd.Series(np.roll(np.array(kind_values(column.kind, ROWS, rng), object), position))
        if column.kind in ("date", "datetime"):
            values = pd.to_datetime(values, format="ISO8601").astype("datetime64[ns]")
        if column.nullable:
            values = values.where(np.arange(ROWS) % 3 != 1)
        columns[column.name] = values
    return spec.conform(pd.DataFrame(columns))


def stored_rows(url: str, table: str, key: tuple[str, ...]) -> list[tuple]:
    """The table's rows read with plain SQL, doubles as exact hex, in key order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {', '.join(key)}")
            return [tuple(map(_exact, row)) for row in result]
    finally:
        engine.dispose()


def _exact(value: object) -> object:
    # -0.0 == 0.0 in Python; hex keeps the sign and every bit.
    return value.hex() if isinstance(value, float) and not math.isnan(value) else value


def transfer_methods(caplog: pytest.LogCaptureFixture, direction: str) -> set[str]:
    """Methods of the transfers logged so far in one direction (read or write)."""
    transfers = [getattr(record, TRANSFER_ATTRIBUTE, None) for record in caplog.records]
    return {t.method for t in transfers if t is not None and t.direction == direction}


@pytest.fixture
def second_mysql_url(mysql_server: sa.Engine) -> Iterator[str]:
    """A second fresh MySQL database, for the plain path's copy of the same rows."""
    name = create_mysql_database(mysql_server)
    yield mysql_url_for(mysql_server, name)
    drop_mysql_database(mysql_server, name)


@pytest.mark.mysql
@pytest.mark.parametrize("spec", list(TABLES.values()), ids=list(TABLES))
def test_a_columnar_read_returns_what_the_cursor_returns(
    spec: TableSpec, mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every declared table reads back the same frame through connectorx and the cursor."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    plain = WarehouseDatabase(mysql_url, bulk_transfer=False)
    fast = WarehouseDatabase(mysql_url)
    plain.append(spec, table_rows(spec))

    through_cursor = plain.read(spec)
    through_columns = fast.read(spec)
    plain.dispose()
    fast.dispose()

    pd.testing.assert_frame_equal(through_columns, through_cursor)
    assert transfer_methods(caplog, "read") == {"cursor", "connectorx"}


@pytest.mark.mysql
@pytest.mark.parametrize("spec", list(TABLES.values()), ids=list(TABLES))
def test_load_data_stores_what_multi_row_insert_stores(
    spec: TableSpec, mysql_url: str, second_mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every declared table holds the same values, bit for bit, after either write path."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    rows = table_rows(spec)
    fast = WarehouseDatabase(mysql_url, chunk_rows=25)
    plain = WarehouseDatabase(second_mysql_url, bulk_transfer=False)

    fast.append(spec, rows)
    plain.append(spec, rows)
    fast.dispose()
    plain.dispose()

    loaded = stored_rows(mysql_url, spec.name, spec.primary_key)
    inserted = stored_rows(second_mysql_url, spec.name, spec.primary_key)
    assert len(loaded) == ROWS
    assert loaded == inserted
    assert transfer_methods(caplog, "write") == {"LOAD DATA LOCAL INFILE", "executemany"}


@pytest.mark.mysql
def test_a_load_the_server_cuts_short_is_rolled_back(mysql_url: str) -> None:
    """Rows LOAD DATA LOCAL skips (a key already stored) fail the write and undo its chunks."""
    database = WarehouseDatabase(mysql_url, chunk_rows=10)
    rows = table_rows(STREAKS)
    database.append(STREAKS, rows.iloc[[45]])

    with pytest.raises(WarehouseError, match="stored 9 of 10 rows"):
        database.append(STREAKS, rows)

    assert database.row_count(STREAKS) == 1
    database.dispose()


@pytest.mark.mysql
def test_local_infile_off_in_the_url_writes_with_multi_row_insert(
    mysql_url: str, second_mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`?local_infile=0` turns the bulk load off; the rows stored are the same."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    rows = table_rows(TABLES["risk_scores"])
    without_load = WarehouseDatabase(f"{mysql_url}?local_infile=0")
    with_load = WarehouseDatabase(second_mysql_url)

    without_load.append(TABLES["risk_scores"], rows)
    with_load.append(TABLES["risk_scores"], rows)
    without_load.dispose()
    with_load.dispose()

    key = TABLES["risk_scores"].primary_key
    assert stored_rows(mysql_url, "risk_scores", key) == stored_rows(
        second_mysql_url, "risk_scores", key
    )
    assert transfer_methods(caplog, "write") == {"executemany", "LOAD DATA LOCAL INFILE"}


def test_load_data_text_escapes_special_characters_and_marks_nulls() -> None:
    """Tabs, newlines, backslashes and NUL are escaped; nulls are \\N; doubles keep all digits."""
    spec = TABLES["source_rejects"]
    frame = table_rows(spec).iloc[:2].copy()
    frame["rule"] = ["a\tb\\c", "d\ne\0"]
    frame["account_id"] = [None, "\\N"]

    lines = tsv_bytes(spec.columns, frame).decode("utf-8").split("\n")

    assert lines[-1] == ""
    first, second = (line.split("\t") for line in lines[:2])
    rule = spec.column_names.index("rule")
    account = spec.column_names.index("account_id")
    assert (first[rule], second[rule]) == ("a\\tb\\\\c", "d\\ne\\0")
    assert (first[account], second[account]) == ("\\N", "\\\\N")
    assert all(len(fields) == len(spec.columns) for fields in (first, second))


def test_a_double_is_written_with_the_digits_that_rebuild_it() -> None:
    """Each double's text parses back to the very same double."""
    spec = TABLES["risk_drivers"]
    frame = table_rows(spec)

    lines = tsv_bytes(spec.columns, frame).decode("utf-8").splitlines()

    position = spec.column_names.index("coefficient")
    parsed = [float(line.split("\t")[position]) for line in lines]
    assert [value.hex() for value in parsed] == [v.hex() for v in frame["coefficient"]]


def test_the_columnar_reader_leaves_tls_urls_and_sqlite_to_the_driver(tmp_path) -> None:
    """A URL asking for TLS (or anything but a charset), or naming SQLite, reads by the cursor."""
    assert columnar_url(sa.make_url("mysql+pymysql://u:p@db:3306/w?ssl_ca=/ca.pem")) is None
    assert columnar_url(sa.make_url(f"sqlite:///{tmp_path / 'warehouse.db'}")) is None
    assert columnar_url(sa.make_url("mysql+pymysql://u:p%40ss@db/w?charset=utf8mb4")) == (
        "mysql://u:p%40ss@db:3306/w"
    )


def test_sqlite_reads_go_through_the_cursor(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite is read by Python's own sqlite3 only: a second SQLite copy would break locks."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    database = WarehouseDatabase(sqlite_url)
    database.append(STREAKS, table_rows(STREAKS))

    database.read(STREAKS)
    database.dispose()

    assert transfer_methods(caplog, "read") == {"cursor"}


SOURCE_DDL = (
    "CREATE TABLE snapshot (account_id BIGINT NULL, billing_cycle DATE NULL, due_date DATE NULL, "
    "payment_date DATE NULL, days_past_due INT NULL, delinquency_bucket VARCHAR(64) NULL, "
    "is_delinquent SMALLINT NULL)"
)


def write_loose_source(url: str, frame: pd.DataFrame) -> None:
    """A source table without constraints, as a bank's may be, holding `frame`'s rows."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(SOURCE_DDL)
        frame.to_sql("snapshot", connection, if_exists="append", index=False)
    engine.dispose()


@pytest.mark.mysql
def test_a_columnar_source_read_gives_the_contract_the_same_rows(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid rows, rejected rows and rules agree whichever way the source months are read."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    frame = generate_snapshot(accounts=200, months=4, end_month=pd.Timestamp("2025-04-01"), seed=5)
    frame = frame.astype({"days_past_due": "Int64", "account_id": "Int64"})
    frame.loc[3, "days_past_due"] = -4  # negative days past due
    frame.loc[5, "delinquency_bucket"] = "Severe"  # bucket that disagrees with the DPD
    frame.loc[8, "account_id"] = None  # a required value missing
    frame.loc[9, "billing_cycle"] = pd.Timestamp("2025-02-15")  # not the first of a month
    write_loose_source(mysql_url, frame)
    source = SourceDatabase(url=mysql_url, table="snapshot")
    first, end = pd.Timestamp("2025-01-01"), pd.Timestamp("2025-05-01")

    fast = check_source_contract(source.read_months(first, end), first, end)
    plain = check_source_contract(source.read_months(first, end, columnar=False), first, end)
    source.dispose()

    pd.testing.assert_frame_equal(fast.valid, plain.valid)
    assert fast.rule_counts == plain.rule_counts
    assert fast.rejected_rows == plain.rejected_rows == 4
    assert transfer_methods(caplog, "read") == {"connectorx", "cursor"}


@pytest.mark.mysql
def test_a_value_the_columnar_reader_cannot_convert_is_read_by_the_cursor(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A MySQL zero date makes the source read fall back to the cursor, which keeps it as text."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    frame = generate_snapshot(accounts=20, months=1, end_month=pd.Timestamp("2025-01-01"), seed=5)
    write_loose_source(mysql_url, frame)
    engine = sa.create_engine(mysql_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET SESSION sql_mode = ''")
        connection.exec_driver_sql(
            "UPDATE snapshot SET due_date = '0000-00-00' WHERE account_id = 2"
        )
    engine.dispose()
    source = SourceDatabase(url=mysql_url, table="snapshot")

    fast = source.read_months("2025-01-01", "2025-02-01")
    plain = source.read_months("2025-01-01", "2025-02-01", columnar=False)
    source.dispose()

    pd.testing.assert_frame_equal(fast, plain)
    assert "0000-00-00" in fast["due_date"].astype(str).tolist()
    assert "row by row" in caplog.text
    assert transfer_methods(caplog, "read") == {"cursor"}


def test_the_sample_writer_and_the_warehouse_share_one_bulk_path(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """write_source_table goes through the warehouse's bulk write, so it reads back whole."""
    from credit_risk_assets.sample_data import write_source_table

    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    frame = generate_snapshot(accounts=150, months=3, end_month=pd.Timestamp("2025-03-01"), seed=1)

    write_source_table(database_url, frame)

    expected = {"mysql": "LOAD DATA LOCAL INFILE", "sqlite": "executemany"}
    backend = sa.make_url(database_url).get_backend_name()
    assert transfer_methods(caplog, "write") == {expected[backend]}
    warehouse = WarehouseDatabase(database_url)
    pd.testing.assert_frame_equal(warehouse.read(DELINQUENCY_SNAPSHOT), frame)
    warehouse.dispose()


@pytest.mark.parametrize(
    ("source_rows", "months", "expected"),
    [
        (12_000, 12, 2_500),  # the quickstart's 1,000 accounts: any range is one run
        (1_200_000, 12, 25),  # 100,000 accounts: one run for two years of months
        (12_000_000, 12, 2),  # 1,000,000 accounts: two months a run
        (40_000_000, 8, 1),  # more rows in a month than a run may hold: still one month
    ],
)
def test_a_large_book_runs_a_few_months_at_a_time(
    source_rows: int, months: int, expected: int
) -> None:
    """Each range run covers about ROWS_PER_RUN source rows, and at least one month."""
    assert months_per_run(source_rows, months) == expected


def test_month_batches_cover_every_month_once_in_order() -> None:
    """Batches are consecutive, in order, and an unpartitioned stage gets one run."""
    months = list(pd.date_range("2026-01-01", periods=5, freq="MS"))

    batches = month_batches(months, 2)

    assert batches == [months[0:2], months[2:4], months[4:5]]
    assert month_batches(None, 2) == [None]


@pytest.mark.mysql
def test_a_columnar_read_fetches_a_month_at_a_time_and_keeps_text_in_arrow_arrays(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three months of risk_scores come as three fetches, with no Python string per label."""
    caplog.set_level(logging.DEBUG, logger=BULK_LOGGER)
    spec = TABLES["risk_scores"]
    rows = table_rows(spec)
    months = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"] * 20)
    rows["as_of_month"] = months.astype("datetime64[ns]")
    rows["account_id"] = np.arange(ROWS)
    rows["risk_segment"] = ["Low", "High"] * 30
    database = WarehouseDatabase(mysql_url)
    database.append(spec, rows)
    caplog.clear()

    back = database.read(spec, "2026-01-01", "2026-04-01")
    database.dispose()

    expected = rows.sort_values(["as_of_month", "account_id"], ignore_index=True)
    pd.testing.assert_frame_equal(back, expected)
    fetches = [getattr(record, TRANSFER_ATTRIBUTE, None) for record in caplog.records]
    assert [(t.rows, t.method) for t in fetches if t is not None] == [(20, "connectorx")] * 3
    assert back["risk_segment"].dtype.storage == "pyarrow"


# Every MySQL column type a source table may hold, with a row of values and a row of NULLs.
TYPED_COLUMNS = {
    "tiny": ("TINYINT", "-7"),
    "small_unsigned": ("SMALLINT UNSIGNED", "65535"),
    "medium": ("MEDIUMINT", "-8388608"),
    "plain_int": ("INT", "2147483647"),
    "big": ("BIGINT", "-9223372036854775808"),
    "big_unsigned": ("BIGINT UNSIGNED", "18446744073709551615"),
    "money": ("DECIMAL(12,2)", "1234567890.25"),
    "real_double": ("DOUBLE", "0.1"),
    "real_float": ("FLOAT", "0.5"),
    "short_text": ("VARCHAR(20)", "'ß😀'"),
    "long_text": ("TEXT", "'tab\\there'"),
    "fixed": ("CHAR(3)", "'abc'"),
    "choice": ("ENUM('x','y')", "'y'"),
    "day": ("DATE", "'9999-12-31'"),
    "moment": ("DATETIME(6)", "'2024-02-29 23:59:59.123456'"),
    "stamp": ("TIMESTAMP NULL", "'2024-07-02 06:30:15'"),
    "year_only": ("YEAR", "2026"),
    "document": ("JSON", "'{\"a\": 1}'"),
    "raw": ("BLOB", "'bytes'"),
    "bit_flag": ("BIT(1)", "1"),
}


@pytest.mark.mysql
@pytest.mark.parametrize("extra", [None, ("clock", "TIME", "'01:02:03'")], ids=["mapped", "TIME"])
def test_the_arrow_read_gives_what_the_pandas_output_gives_for_every_column_type(
    mysql_url: str, extra: tuple[str, str, str] | None
) -> None:
    """Values and dtypes equal connectorx's pandas output, except that text nulls are the
    string dtype's NaN and a nullable integer column without nulls is int64, not Int64. A
    type the conversion does not map (TIME) makes the read use that output whole."""
    columns = {**TYPED_COLUMNS, **({extra[0]: extra[1:]} if extra else {})}
    engine = sa.create_engine(mysql_url)
    with engine.begin() as connection:
        definitions = ", ".join(f"{name} {kind}" for name, (kind, _) in columns.items())
        connection.exec_driver_sql(f"CREATE TABLE typed (position INT, {definitions})")
        values = ", ".join(value for _, value in columns.values())
        connection.exec_driver_sql(f"INSERT INTO typed VALUES (1, {values})")
        connection.exec_driver_sql("INSERT INTO typed (position) VALUES (2)")
    engine.dispose()
    url = sa.make_url(mysql_url)
    query = "SELECT * FROM typed ORDER BY position"

    arrow = read_columnar(url, query, table="typed")
    pandas_output = bulk_module._read_pandas(columnar_url(url), query, None)

    expected = pandas_output
    if extra is None:
        text = [name for name in expected if isinstance(expected[name].iloc[0], str)]
        whole = [name for name, dtype in expected.dtypes.items() if dtype == "Int64"]
        whole = [name for name in whole if expected[name].notna().all()]
        expected = expected.astype(dict.fromkeys(text, "str") | dict.fromkeys(whole, "int64"))
    pd.testing.assert_frame_equal(arrow, expected)
    assert list(arrow.dtypes[["position", "tiny"]]) == (
        ["int64", "Int64"] if extra is None else ["Int64", "Int64"]
    )
    assert arrow["big"].iloc[0] == -(2**63)
    assert arrow["day"].iloc[0] == pd.Timestamp("9999-12-31")
    assert arrow["short_text"].iloc[0] == "ß😀"
