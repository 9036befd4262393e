"""The source database: the monthly delinquency snapshot, read through a read-only connection."""

from __future__ import annotations

import functools
import logging
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import pandas as pd
import sqlalchemy as sa
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from credit_risk_assets.settings import DEFAULT_SOURCE_TABLE
from credit_risk_assets.tables import SOURCE_COLUMNS
from credit_risk_assets.warehouse import bulk
from credit_risk_assets.warehouse.database import (
    MonthLike,
    check_identifier,
    make_engine,
    month_window,
    parse_url,
    quote_identifier,
    redact_url,
    redacting_errors,
    sqlite_path,
)

log = logging.getLogger(__name__)

PARTITION_COLUMN = "billing_cycle"
SOURCE_FETCH_ROWS = 100_000
CREATE_HINT = (
    "write sample data with `credit-risk sample-data`, or point CREDIT_RISK_SOURCE_URL and "
    "CREDIT_RISK_SOURCE_TABLE at the snapshot table"
)


# Stands for NULL in the text a row is hashed from, so that NULL and '' hash differently.
_NULL_MARK = "\\N"
_FIELD_SEPARATOR = "|"


class SourceError(RuntimeError):
    """The source cannot be read as configured; the message holds no password."""


@dataclass(frozen=True)
class MonthFingerprint:
    """What a source month holds, in two numbers: its rows and the sum of per-row CRC-32s.

    The sum does not depend on row order, and any changed, added or deleted row changes the
    count or the sum (short of a CRC-32 collision, about one chance in four billion per row).
    """

    rows: int
    checksum: int


class SourceDatabase(ConfigurableResource):
    """The source snapshot table (one row per account and billing cycle), opened read-only.

    SQLite files are opened with `mode=ro`, MySQL sessions are set READ ONLY: the pipeline
    cannot write to the source even by mistake. A read-only database user is the stronger
    guard in production.
    """

    url: str = Field(
        description=(
            "SQLAlchemy URL of the source database (mysql+pymysql://... or sqlite:///...). "
            "Give it as EnvVar('CREDIT_RISK_SOURCE_URL') so that the password never shows."
        )
    )
    table: str = Field(
        default=DEFAULT_SOURCE_TABLE, description="Table that holds the delinquency snapshot."
    )

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Close the pooled connections; the next use opens new ones."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A read-only connection to the source database."""
        with self._open_connection() as connection:
            yield connection

    @redacting_errors("connect to the source", SourceError)
    def _open_connection(self) -> sa.Connection:
        parsed = parse_url(self.url)
        path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
        if path is not None and not path.exists():
            raise SourceError(f"The source database file {path} does not exist: {CREATE_HINT}.")
        if self._engine is None:
            self._engine = make_engine(parsed, read_only=True)
        return self._engine.connect()

    @redacting_errors("check the source table", SourceError)
    def exists(self) -> bool:
        """True when the source table exists."""
        check_identifier(self.table)
        with self.connect() as connection:
            return sa.inspect(connection).has_table(self.table)

    @redacting_errors("read the source table", SourceError)
    def read_months(
        self, start: MonthLike, end: MonthLike, *, columnar: bool = True
    ) -> pd.DataFrame:
        """Rows with billing_cycle in [start, end), every column as the database returns it.

        Values are not parsed here: the data contract checks and parses them next. On MySQL
        the rows come through the columnar reader unless `columnar` is False (the driver's
        cursor, the plain path it is checked against).
        """
        first, stop = month_window(start, end)
        with self.connect() as connection:
            columns = self._checked_columns(connection)
            quote = functools.partial(quote_identifier, connection)
            cycle = quote(PARTITION_COLUMN)
            order = [quote(name) for name in (PARTITION_COLUMN, "account_id") if name in columns]
            query = sa.text(
                f"SELECT * FROM {quote(self.table)} WHERE {cycle} >= :start AND {cycle} < :end "
                f"ORDER BY {', '.join(order)}"
            )
            bounds = {"start": _bound_day(connection, first), "end": _bound_day(connection, stop)}
            frame = None
            if columnar:
                frame = self._read_columnar(connection, query, first, stop)
            if frame is None:
                frame = self._read_rows(connection, query, bounds)

        log.info("Read %d rows of %s for %s..%s", len(frame), self.table, first.date(), stop.date())
        return frame

    def _read_columnar(
        self,
        connection: sa.Connection,
        query: sa.TextClause,
        first: pd.Timestamp,
        stop: pd.Timestamp,
    ) -> pd.DataFrame | None:
        """The rows through the columnar reader, a month at a time, on MySQL only; None to
        read with the cursor.

        MySQL columns hold only values of their type, which the reader converts exactly. A
        SQLite column may hold any value, and the contract must see unreadable ones as they
        are, so SQLite sources are read by the cursor. A month per query keeps each result the
        server sends, and the reader's buffers for it, to one month's rows.
        """
        if connection.dialect.name != "mysql":
            return None
        frames = []
        for month in pd.date_range(first, stop, freq="MS", inclusive="left"):
            bounds = {"start": month.date(), "end": (month + pd.DateOffset(months=1)).date()}
            # The bounds are dates made from month_window, rendered as quoted ISO literals.
            text = query.bindparams(**bounds).compile(
                dialect=connection.dialect, compile_kwargs={"literal_binds": True}
            )
            url = parse_url(self.url)
            frame = bulk.read_columnar(url, str(text), read_only=True, table=self.table)
            if frame is None:
                return None
            frames.append(frame)
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def _read_rows(
        self, connection: sa.Connection, query: sa.TextClause, bounds: dict[str, object]
    ) -> pd.DataFrame:
        """The rows through the driver's cursor, values as the driver gives them."""
        began = time.perf_counter()
        result = connection.execute(query, bounds)
        columns = list(result.keys())
        # The driver's own tuples: SQLAlchemy's Row objects cost as much again as the fetch.
        rows = [row for chunk in bulk.fetch_tuples(result, SOURCE_FETCH_ROWS) for row in chunk]
        frame = pd.DataFrame.from_records(rows, columns=columns)
        seconds = time.perf_counter() - began
        bulk.log_transfer(bulk.Transfer("read", self.table, len(frame), seconds, "cursor"))
        return frame

    @redacting_errors("list the months of the source table", SourceError)
    def months_present(self) -> list[pd.Timestamp]:
        """First days of the billing months the table holds rows for, oldest first.

        Values that are not dates (possible in SQLite, which stores dates as text) are left
        out: no month window can select them.
        """
        with self.connect() as connection:
            self._checked_columns(connection)
            cycle = quote_identifier(connection, PARTITION_COLUMN)
            table = quote_identifier(connection, self.table)
            query = sa.text(f"SELECT DISTINCT {cycle} FROM {table}")
            cycles = pd.Series(connection.execute(query).scalars().all(), dtype=object)

        stamps = pd.to_datetime(cycles, errors="coerce", format="ISO8601").dropna()
        months = stamps.dt.to_period("M").dt.to_timestamp().astype("datetime64[ns]")
        return sorted(months.unique())

    @redacting_errors("count the rows of the source table", SourceError)
    def row_count(self) -> int:
        """Rows in the source table."""
        with self.connect() as connection:
            self._checked_columns(connection)
            table = quote_identifier(connection, self.table)
            return int(connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar())

    @redacting_errors("read the rows of no billing month", SourceError)
    def undated_rows(self) -> pd.DataFrame:
        """Rows whose billing_cycle no month window selects: NULL, or text of no month.

        Columns as in read_months. Without this read such rows would be skipped unseen; the
        snapshot asset hands them to the data contract, which rejects them.
        """
        with self.connect() as connection:
            self._checked_columns(connection)
            cycle = quote_identifier(connection, PARTITION_COLUMN)
            table = quote_identifier(connection, self.table)
            distinct = connection.execute(sa.text(f"SELECT DISTINCT {cycle} FROM {table}"))
            cycles = pd.Series(distinct.scalars().all(), dtype=object)
            outside = cycles[cycles.notna() & _in_no_month_window(cycles)].tolist()
            query = sa.text(
                f"SELECT * FROM {table} WHERE {cycle} IS NULL OR {cycle} IN :outside"
            ).bindparams(sa.bindparam("outside", expanding=True))
            result = connection.execute(query, {"outside": outside})
            frame = pd.DataFrame.from_records(map(tuple, result), columns=list(result.keys()))

        if len(frame):
            log.warning("%d rows of %s have a billing_cycle of no month", len(frame), self.table)
        return frame

    @redacting_errors("fingerprint the months of the source table", SourceError)
    def month_fingerprints(self) -> dict[pd.Timestamp, MonthFingerprint]:
        """Row count and order-independent checksum of each billing month, computed in SQL.

        The checksum covers the seven contract columns as text, so a change to any value of
        a row changes it; columns beyond the contract are not looked at. The database does
        the work: only one row per month comes back. Months are keyed by the first day of
        the month, oldest first; rows whose billing_cycle is not a date are left out, as no
        month window reads them.
        """
        with self.connect() as connection:
            columns = self._checked_columns(connection)
            missing = [column.name for column in SOURCE_COLUMNS if column.name not in columns]
            if missing:
                raise SourceError(
                    f"Source table {self.table!r} lacks column(s) {missing}: the data contract "
                    f"needs {[column.name for column in SOURCE_COLUMNS]}."
                )
            if connection.dialect.name == "sqlite":
                _register_sqlite_crc32(connection)
            rows = connection.execute(_fingerprint_query(self.table)).all()

        fingerprints = {}
        for month_text, row_count, checksum in rows:
            month = pd.to_datetime(f"{month_text}-01", errors="coerce", format="%Y-%m-%d")
            if not pd.isna(month):
                fingerprints[month] = MonthFingerprint(rows=int(row_count), checksum=int(checksum))
        log.info("Fingerprinted %d months of %s", len(fingerprints), self.table)
        return dict(sorted(fingerprints.items()))

    def _checked_columns(self, connection: sa.Connection) -> list[str]:
        """Columns of the source table; SourceError when it or its billing_cycle is missing."""
        check_identifier(self.table)
        inspector = sa.inspect(connection)
        if not inspector.has_table(self.table):
            raise SourceError(
                f"Source table {self.table!r} does not exist in {redact_url(self.url)}: "
                f"{CREATE_HINT}."
            )
        columns = [column["name"] for column in inspector.get_columns(self.table)]
        if PARTITION_COLUMN not in columns:
            raise SourceError(
                f"Source table {self.table!r} has no {PARTITION_COLUMN} column (it has "
                f"{columns}): the snapshot is read by billing month."
            )
        return columns


def _fingerprint_query(table_name: str) -> sa.Select:
    """Per month (YYYY-MM of billing_cycle): COUNT(*) and SUM(CRC32(the row as text))."""
    table = sa.table(table_name, *(sa.column(column.name) for column in SOURCE_COLUMNS))
    fields = [
        sa.func.coalesce(sa.cast(table.c[column.name], sa.String), sa.literal(_NULL_MARK))
        for column in SOURCE_COLUMNS
    ]
    row_text = fields[0]
    for field in fields[1:]:
        row_text = row_text + sa.literal(_FIELD_SEPARATOR) + field

    # Literal positions rather than bound ones: MySQL must see the same expression in SELECT
    # and GROUP BY, and two sets of placeholders are not the same expression to it.
    month = sa.func.substr(
        sa.cast(table.c[PARTITION_COLUMN], sa.String),
        sa.literal_column("1"),
        sa.literal_column("7"),
    ).label("month")
    return (
        sa.select(month, sa.func.count(), sa.func.sum(sa.func.crc32(row_text)))
        .where(table.c[PARTITION_COLUMN].is_not(None))
        .group_by(month)
    )


def _register_sqlite_crc32(connection: sa.Connection) -> None:
    # SQLite has no CRC32(); the driver computes it inside the query, row by row, so the
    # rows still never leave the database. Same polynomial as MySQL's CRC32().
    driver = connection.connection.driver_connection
    driver.create_function("crc32", 1, _crc32_text, deterministic=True)


def _crc32_text(text: str | None) -> int | None:
    return None if text is None else zlib.crc32(text.encode("utf-8"))


def _in_no_month_window(cycles: pd.Series) -> pd.Series:
    """Which distinct billing_cycle values no window [YYYY-MM-01, next month's 01) selects.

    Dates always fall in a window. Text falls in one when it sorts between the bounds of the
    month it starts with, as the database compares it ('2024-02-30' is read with February);
    other values (numbers stored as text in SQLite) never do.
    """
    is_date = cycles.map(lambda value: isinstance(value, date))
    text = cycles.where(cycles.map(lambda value: isinstance(value, str)), None).astype("str")
    month = pd.to_datetime(text.str.slice(0, 7) + "-01", errors="coerce", format="%Y-%m-%d")
    first = month.dt.strftime("%Y-%m-%d")
    following = (month + pd.DateOffset(months=1)).dt.strftime("%Y-%m-%d")
    inside = month.notna() & (text >= first) & (text < following)
    return ~(is_date | inside.fillna(False).astype(bool))


def _bound_day(connection: sa.Connection, month: pd.Timestamp) -> object:
    # SQLite keeps dates as ISO text, so the bound value is text that compares the same way.
    if connection.dialect.name == "sqlite":
        return f"{month:%Y-%m-%d}"
    return month.date()
