"""The warehouse database client: declared tables, month-window writes and atomic table swaps.

Works on `mysql+pymysql://` (production) and `sqlite:///` (the embedded default) URLs.
Every identifier is checked and quoted, every value is a bound parameter, and nothing this
module logs or raises carries the URL's password.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from credit_risk_assets.warehouse import bulk
from credit_risk_assets.warehouse.schema import (
    SQL_TYPES,
    ColumnSpec,
    SchemaMismatchError,
    TableSpec,
)

__all__ = [
    "InvalidIdentifierError",
    "MonthLike",
    "RowsOutsideWindowError",
    "SchemaMismatchError",
    "UnsupportedDatabaseError",
    "WarehouseDatabase",
    "WarehouseError",
    "as_month",
    "check_identifier",
    "conform_frame",
    "describe_database_error",
    "make_engine",
    "month_window",
    "parse_url",
    "quote_identifier",
    "redact_url",
    "redacting_errors",
    "sqlite_path",
]

log = logging.getLogger(__name__)

IDENTIFIER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
IDENTIFIER_RULE = (
    "an identifier is a letter or underscore followed by up to 63 letters, digits or "
    "underscores (pattern ^[A-Za-z_][A-Za-z0-9_]{0,63}$)"
)
SUPPORTED_URLS = "mysql+pymysql://user:password@host:3306/database or sqlite:///path/to/file.db"

STAGING_SUFFIX = "__staging"
RETIRED_SUFFIX = "__old"
DEFAULT_CHUNK_ROWS = 100_000
SQLITE_BUSY_TIMEOUT_SECONDS = 60
MYSQL_POOL_RECYCLE_SECONDS = 3600

# Query parameters that may carry a secret, hidden by redact_url like the password.
_SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "secret", "token"}

# MySQL reports BIGINT as BIGINT(20): the width in brackets only affects display.
_INTEGER_DISPLAY_WIDTH = re.compile(r"^((?:TINY|SMALL|MEDIUM|BIG)?INT(?:EGER)?)\(\d+\)")

# PyMySQL options that run SQL on connect: init_command directly, option files through their
# init-command setting.
_SQL_RUNNING_QUERY_KEYS = {"init_command", "read_default_file", "read_default_group"}
_REDACTED = "***"

# Execution option that makes the SQLite begin hook take the write lock up front.
_WRITE_OPTION = "credit_risk_write"

# Placeholders for positional parameters as each driver takes them (PyMySQL: %s with tuples).
_DRIVER_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

MonthLike = pd.Timestamp | date | datetime | str


class InvalidIdentifierError(ValueError):
    """A table or column name that could carry SQL: it is refused, never escaped."""


class UnsupportedDatabaseError(ValueError):
    """A URL for a database or driver this project does not support."""


class WarehouseError(RuntimeError):
    """A database operation failed; the message names the operation and holds no password."""


class RowsOutsideWindowError(ValueError):
    """A frame written to a window of months holds rows of other months."""


P = ParamSpec("P")
R = TypeVar("R")


def redact_url(url: str | sa.URL) -> str:
    """The URL as text with its password (and any secret query parameter) shown as `***`."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return "<a database URL that cannot be parsed>"

    secrets = {key: _REDACTED for key in parsed.query if key.lower() in _SECRET_QUERY_KEYS}
    if secrets:
        parsed = parsed.update_query_dict(secrets)
    text = parsed.render_as_string(hide_password=True)
    return text.replace(urllib.parse.quote(_REDACTED, safe=""), _REDACTED)


def check_identifier(name: str) -> str:
    """`name` itself when it is a safe SQL identifier; InvalidIdentifierError otherwise."""
    if not isinstance(name, str) or IDENTIFIER_PATTERN.fullmatch(name) is None:
        raise InvalidIdentifierError(
            f"{name!r} is not accepted as a table or column name: {IDENTIFIER_RULE}. "
            "Rename the table or column."
        )
    return name


def quote_identifier(engine_or_dialect: sa.Engine | sa.Connection | sa.Dialect, name: str) -> str:
    """`name` checked by the identifier rule, then quoted for the database's dialect."""
    dialect = getattr(engine_or_dialect, "dialect", engine_or_dialect)
    return dialect.identifier_preparer.quote_identifier(check_identifier(name))


def conform_frame(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` checked against and converted to `spec` (see TableSpec.conform)."""
    return spec.conform(frame)


def parse_url(url: str | sa.URL) -> sa.URL:
    """`url` parsed, or UnsupportedDatabaseError when it is not MySQL/PyMySQL or SQLite."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as error:
        raise UnsupportedDatabaseError(
            f"The database URL cannot be parsed ({error}); write it as {SUPPORTED_URLS}."
        ) from None

    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        return parsed
    if backend in ("mysql", "mariadb") and driver == "pymysql":
        _refuse_sql_options(parsed)
        return parsed
    raise UnsupportedDatabaseError(
        f"{redact_url(parsed)} uses {backend}+{driver}, which this project does not support; "
        f"write it as {SUPPORTED_URLS}."
    )


def _refuse_sql_options(url: sa.URL) -> None:
    """Refuse URL options that make the driver run SQL of the URL's own on every connection."""
    options = sorted(key for key in url.query if key.lower() in _SQL_RUNNING_QUERY_KEYS)
    if options:
        raise UnsupportedDatabaseError(
            f"{redact_url(url)} sets {', '.join(options)}, which would run SQL taken from the "
            "configuration on every connection; the pipeline runs only its own statements. "
            "Remove the option, and set session defaults on the server or the database user."
        )


def sqlite_path(url: sa.URL) -> Path | None:
    """The file of a SQLite URL (plain or `file:` URI form), or None for an in-memory one."""
    database = url.database or ""
    if database.startswith("file:"):
        database = urllib.parse.unquote(database[len("file:") :].split("?", 1)[0])
    if database in ("", ":memory:"):
        return None
    return Path(database).expanduser()


def make_engine(url: str | sa.URL, *, read_only: bool = False) -> sa.Engine:
    """An engine for `url`: SQLite in WAL mode with a busy timeout, MySQL with utf8mb4.

    With `read_only`, SQLite opens the file with `mode=ro` and every MySQL connection runs
    `SET SESSION TRANSACTION READ ONLY`, so a write through the engine fails.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, read_only=read_only)
    return _mysql_engine(parsed, read_only=read_only)


def _sqlite_engine(url: sa.URL, *, read_only: bool) -> sa.Engine:
    path = sqlite_path(url)
    if read_only:
        if path is None:
            raise UnsupportedDatabaseError(
                f"{redact_url(url)} is an in-memory database, which cannot be opened read-only: "
                "name a file, e.g. sqlite:///source.db."
            )
        uri = f"{path.resolve().as_uri()}?mode=ro"
        engine = sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, check_same_thread=False
            ),
            poolclass=sa.pool.QueuePool,
        )
    else:
        if path is not None and not path.parent.exists():
            path.parent.mkdir(parents=True)
            log.info("Created folder %s for the SQLite database", path.parent)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

    sa.event.listen(engine, "connect", functools.partial(_prepare_sqlite, read_only=read_only))
    sa.event.listen(engine, "begin", _begin_sqlite)
    return engine


def _prepare_sqlite(dbapi_connection: sqlite3.Connection, _record: object, read_only: bool) -> None:
    # The driver's own transaction handling skips BEGIN before DDL, which would split a
    # drop-and-rename swap into two commits; _begin_sqlite issues BEGIN itself instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    if not read_only:
        # WAL lets readers see the last committed state while a writer works.
        cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _begin_sqlite(connection: sa.Connection) -> None:
    # A writer takes the write lock at BEGIN, so the busy timeout applies; a deferred
    # transaction that reads first could fail instead of waiting for another writer.
    writing = connection.get_execution_options().get(_WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _mysql_engine(url: sa.URL, *, read_only: bool) -> sa.Engine:
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    # Bulk writes use LOAD DATA LOCAL INFILE, which the client must allow; `?local_infile=0`
    # in the URL turns it off (writes then use multi-row INSERT). A read-only engine never
    # allows it: the server could then ask for any local file.
    connect_args: dict[str, bool] = {}
    if read_only:
        connect_args["local_infile"] = False
    elif "local_infile" not in url.query:
        connect_args["local_infile"] = True
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_recycle=MYSQL_POOL_RECYCLE_SECONDS,
        connect_args=connect_args,
    )
    if read_only:
        sa.event.listen(engine, "connect", _make_mysql_read_only)
    return engine


def _make_mysql_read_only(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION READ ONLY")
    cursor.close()


def describe_database_error(action: str, url: str | sa.URL, error: sa.exc.SQLAlchemyError) -> str:
    """A message for a failed `action` naming the database and the driver's reason.

    Holds neither the password nor the statement's parameters (rows of account data).
    """
    reason = getattr(error, "orig", None) or error
    lines = str(reason).strip().splitlines() or [type(reason).__name__]
    message = f"Could not {action} in {redact_url(url)}: {lines[0]}"
    statement = getattr(error, "statement", None)
    if statement:
        message += f" [SQL: {' '.join(str(statement).split())[:200]}]"
    if getattr(error, "connection_invalidated", False):
        message += (
            ". The connection to the server was lost (a restart, crash or network fault): "
            "writes are transactions or atomic swaps, so each table holds its previous rows or "
            "all the new ones. Run it again once the server answers."
        )
    return _without_password(message, url)


def _without_password(message: str, url: str | sa.URL) -> str:
    try:
        password = sa.make_url(url).password
    except sa.exc.ArgumentError:
        return message
    if not password:
        return message
    for form in {
        password,
        urllib.parse.quote(password, safe=""),
        urllib.parse.quote_plus(password),
    }:
        message = message.replace(form, _REDACTED)
    return message


def redacting_errors(
    action: str, error_type: type[Exception] = WarehouseError
) -> Callable[[Callable[Concatenate[object, P], R]], Callable[Concatenate[object, P], R]]:
    """Decorate a method of an object with a `url` so that database errors become `error_type`.

    The new error is raised outside the `except` block on purpose: it then carries no chained
    SQLAlchemy exception, whose text holds the statement parameters.
    """

    def decorate(
        method: Callable[Concatenate[object, P], R],
    ) -> Callable[Concatenate[object, P], R]:
        @functools.wraps(method)
        def wrapper(self: object, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(self, *args, **kwargs)
            except sa.exc.SQLAlchemyError as error:
                target = f" {args[0].name}" if args and isinstance(args[0], TableSpec) else ""
                message = describe_database_error(f"{action}{target}", self.url, error)
            raise error_type(message)

        return wrapper

    return decorate


def as_month(value: MonthLike, name: str = "month") -> pd.Timestamp:
    """`value` as a naive Timestamp of the first day of its month; ValueError otherwise.

    A timezone-aware value (Dagster's partition windows) keeps its wall-clock date.
    """
    try:
        month = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} {value!r} is not a date: pass a month as its first day, e.g. 2024-03-01."
        ) from None
    if month.tzinfo is not None:
        month = month.tz_localize(None)
    if pd.isna(month) or month != month.to_period("M").to_timestamp():
        raise ValueError(
            f"{name} {month} is not the first day of a month at midnight: pass a month as "
            "its first day, e.g. 2024-03-01."
        )
    return month


def month_window(start: MonthLike, end: MonthLike) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) as first-of-month Timestamps; ValueError when the window is empty."""
    first, stop = as_month(start, "start"), as_month(end, "end")
    if stop <= first:
        raise ValueError(
            f"The window [{first:%Y-%m-%d}, {stop:%Y-%m-%d}) holds no month: end must be after "
            "start."
        )
    return first, stop


@functools.lru_cache(maxsize=256)
def _sqlalchemy_table(spec: TableSpec, name: str) -> sa.Table:
    """`spec` as an SQLAlchemy table called `name`, its identifiers checked first."""
    for identifier in (name, *spec.column_names):
        check_identifier(identifier)
    table = spec.sqlalchemy_table(sa.MetaData(), name)
    table.dialect_kwargs.update({"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"})
    return table


class WarehouseDatabase:
    """The warehouse: tables created from their declared schema and written atomically.

    The engine is created on first use. Writes of a window of months are delete-then-insert
    in one transaction; an unpartitioned table is loaded beside the live one and swapped in.
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        bulk_transfer: bool = True,
    ) -> None:
        self.url = parse_url(url)
        self.chunk_rows = chunk_rows
        # False keeps to the driver's cursor and executemany: the plain paths that the
        # columnar reads and bulk loads are checked against.
        self.bulk_transfer = bulk_transfer
        self._engine: sa.Engine | None = None
        self._told_about_bulk_load = False

    def __repr__(self) -> str:
        return f"WarehouseDatabase({self.redacted_url!r})"

    @property
    def redacted_url(self) -> str:
        """The URL with its password hidden, fit for logs, errors and metadata."""
        return redact_url(self.url)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, created on first use."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def dispose(self) -> None:
        """Close the engine's pooled connections; the next use opens new ones."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def table_name(self, spec: TableSpec) -> str:
        """The table's name as a reader of the database writes it: `database.table` on MySQL."""
        if self.url.get_backend_name() == "sqlite" or not self.url.database:
            return spec.name
        return f"{self.url.database}.{spec.name}"

    def table_uri(self, spec: TableSpec) -> str:
        """Where the table lives: the redacted URL with the table as its fragment."""
        return f"{self.redacted_url}#{spec.name}"

    def same_database_as(self, other_url: str | sa.URL) -> bool:
        """True when `other_url` names this database (the same SQLite file, paths resolved).

        MySQL URLs match on server, port and database, whatever the user; localhost and
        127.0.0.1 count as one server.
        """
        mine = _database_identity(self.url)
        return mine is not None and mine == _database_identity(sa.make_url(other_url))

    @redacting_errors("create table")
    def ensure_table(self, spec: TableSpec) -> None:
        """Create the table from its declared schema when it is missing.

        An existing table that differs from the declaration (columns, their types and
        nullability, primary key) is refused with WarehouseError, since writing to it would
        fail half-way or work around a change made by hand.
        """
        table = _sqlalchemy_table(spec, spec.name)
        with self._writing() as connection:
            inspector = sa.inspect(connection)
            if inspector.has_table(spec.name):
                self._refuse_other_shape(spec, inspector)
                return
            table.create(connection)
        log.info("Created table %s in %s", spec.name, self.redacted_url)

    @redacting_errors("replace months in")
    def replace_months(
        self, spec: TableSpec, frame: pd.DataFrame, start: MonthLike, end: MonthLike
    ) -> int:
        """Replace the rows of months [start, end) with `frame`, in one transaction.

        Returns the rows written. Rerunning leaves one copy; a failure leaves the old rows.
        A frame holding rows of other months is refused with RowsOutsideWindowError.
        """
        partition = _partition_column(spec)
        first, stop = month_window(start, end)
        rows = spec.conform(frame)
        _refuse_rows_outside(spec, rows, first, stop)

        self.ensure_table(spec)
        table = _sqlalchemy_table(spec, spec.name)
        window = sa.and_(table.c[partition] >= first.date(), table.c[partition] < stop.date())
        with self._writing() as connection:
            deleted = connection.execute(sa.delete(table).where(window)).rowcount
            self._insert(connection, spec, spec.name, rows)

        log.info(
            "Replaced %s..%s in %s: %d rows (%d before)",
            f"{first:%Y-%m-%d}",
            f"{stop:%Y-%m-%d}",
            spec.name,
            len(rows),
            deleted,
        )
        return len(rows)

    @redacting_errors("replace table")
    def replace_table(self, spec: TableSpec, frame: pd.DataFrame) -> int:
        """Replace the whole table with `frame`; a reader sees the old table or the new one.

        The rows are loaded into `<table>__staging`, which is then swapped in by an atomic
        rename. Leftovers of a crashed run are dropped first. A live table that differs from
        the declaration is refused, as by ensure_table: the swap would silently drop a change
        made to it by hand. Returns the rows written.
        """
        rows = spec.conform(frame)
        staging = check_identifier(spec.name + STAGING_SUFFIX)
        retired = check_identifier(spec.name + RETIRED_SUFFIX)

        with self._writing() as connection:
            inspector = sa.inspect(connection)
            if inspector.has_table(spec.name):
                self._refuse_other_shape(spec, inspector)
            for leftover in (staging, retired):
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self._quote(leftover)}")
            _sqlalchemy_table(spec, staging).create(connection)
        with self._writing() as connection:
            self._insert(connection, spec, staging, rows)
        self._swap_in(spec.name, staging, retired)

        log.info("Replaced table %s: %d rows", spec.name, len(rows))
        return len(rows)

    @redacting_errors("append to")
    def append(self, spec: TableSpec, frame: pd.DataFrame) -> int:
        """Insert the rows of `frame` into the table, in one transaction; returns the count."""
        rows = spec.conform(frame)
        self.ensure_table(spec)
        with self._writing() as connection:
            self._insert(connection, spec, spec.name, rows)
        log.info("Appended %d rows to %s", len(rows), spec.name)
        return len(rows)

    @redacting_errors("load table")
    def load_table(
        self,
        spec: TableSpec,
        frame: pd.DataFrame,
        *,
        name: str | None = None,
        replace: bool = False,
    ) -> int:
        """Bulk-insert `frame` into table `name` (the spec's own name by default).

        The table is created from the declared schema when missing; with `replace` an existing
        one is dropped first. This is for tables outside the pipeline's assets, such as a
        sample source: their readers are not protected by a swap. Returns the rows written.
        """
        rows = spec.conform(frame)
        table = _sqlalchemy_table(spec, check_identifier(name or spec.name))
        with self._writing() as connection:
            if replace:
                table.drop(connection, checkfirst=True)
            table.create(connection, checkfirst=True)
            self._insert(connection, spec, table.name, rows)
        log.info("Loaded %d rows into %s", len(rows), table.name)
        return len(rows)

    @redacting_errors("read")
    def read(
        self,
        spec: TableSpec,
        start: MonthLike | None = None,
        end: MonthLike | None = None,
        *,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows with the partition column in [start, end) (either bound may be None), or all.

        Columns come in declared order (or the order of `columns`) with the frame dtypes,
        rows in primary-key order. A missing table reads as an empty frame. On MySQL the rows
        come through the columnar reader a month at a time, text in Arrow arrays rather than a
        Python string per value; elsewhere through the driver's cursor, a chunk at a time.
        """
        names = [column.name for column in spec.select_columns(columns)]
        table = _sqlalchemy_table(spec, spec.name)
        # Bounds are checked even when the table is missing: a bad month is an error, not "no rows".
        start = None if start is None else as_month(start, "start")
        end = None if end is None else as_month(end, "end")
        with self.engine.connect() as connection:
            if not sa.inspect(connection).has_table(spec.name):
                return spec.empty_frame(names)
            chunks = [
                _as_declared(spec, rows, names)
                for query in self._read_queries(connection, spec, table, names, start, end)
                for rows in self._fetch(connection, query, names, spec.name)
                if len(rows)
            ]
        if not chunks:
            return spec.empty_frame(names)
        return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)

    def _reads_columnar(self) -> bool:
        return self.bulk_transfer and bulk.columnar_url(self.url) is not None

    def _read_queries(
        self,
        connection: sa.Connection,
        spec: TableSpec,
        table: sa.Table,
        names: list[str],
        start: MonthLike | None,
        end: MonthLike | None,
    ) -> list[sa.Select]:
        """The SELECTs of a read: one per month when the columnar reader reads a partitioned
        table, else one."""
        # Values come as the driver gives them (SQLite dates as ISO text): they are converted
        # a whole column at a time, faster than SQLAlchemy's per-value result processing.
        raw_columns = [sa.type_coerce(table.c[name], sa.types.NullType()) for name in names]
        window = _window_clauses(spec, table, start, end)
        order = [table.c[key] for key in spec.primary_key]
        if spec.partition_column is None or not self._reads_columnar():
            return [sa.select(*raw_columns).where(*window).order_by(*order)]

        # The columnar reader holds a whole result in Arrow arrays while it converts them; a
        # month at a time bounds that copy to one month's rows. The first and last month come
        # from the key's index: listing the months present would scan every row.
        partition = table.c[spec.partition_column]
        first, last = connection.execute(
            sa.select(sa.func.min(partition), sa.func.max(partition)).where(*window)
        ).one()
        if first is None:
            return []
        queries = []
        first_month, last_month = (
            pd.Timestamp(day).to_period("M").to_timestamp() for day in (first, last)
        )
        for month in pd.date_range(first_month, last_month, freq="MS"):
            following = (month + pd.DateOffset(months=1)).date()
            bounds = [partition >= month.date(), partition < following]
            queries.append(sa.select(*raw_columns).where(*window, *bounds).order_by(*order))
        return queries

    def _fetch(
        self, connection: sa.Connection, query: sa.Select, names: list[str], table: str
    ) -> Iterator[pd.DataFrame]:
        """The rows of `query` as raw frames: one from the columnar reader, or cursor chunks."""
        if self._reads_columnar():
            text = query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
            frame = bulk.read_columnar(self.url, str(text), table=table)
            if frame is not None:
                yield frame
                return
        yield from self._read_rows(connection, query, names, table)

    def _read_rows(
        self, connection: sa.Connection, query: sa.Select, names: list[str], table: str
    ) -> Iterator[pd.DataFrame]:
        """The rows of `query` through the driver's cursor, a chunk at a time."""
        began = time.perf_counter()
        rows = 0
        if connection.dialect.name == "sqlite":
            # SQLite's cursor fetches lazily by itself; its own tuples skip SQLAlchemy's Rows.
            chunks = bulk.fetch_tuples(connection.execute(query), self.chunk_rows)
        else:
            # A server-side cursor, so that the driver does not hold every row at once. Its
            # first rows sit in SQLAlchemy's buffer, so they come through the result's Rows.
            result = connection.execution_options(stream_results=True).execute(query)
            chunks = (list(map(tuple, part)) for part in result.partitions(self.chunk_rows))
        for chunk in chunks:
            rows += len(chunk)
            yield pd.DataFrame.from_records(chunk, columns=names)
        seconds = time.perf_counter() - began
        bulk.log_transfer(bulk.Transfer("read", table, rows, seconds, "cursor"))

    def latest_month(
        self, spec: TableSpec, start: MonthLike | None = None, end: MonthLike | None = None
    ) -> pd.Timestamp | None:
        """The latest value of the partition column within [start, end), or None."""
        span = self.month_span(spec, start, end)
        return None if span is None else span[1]

    @redacting_errors("find the months of")
    def month_span(
        self, spec: TableSpec, start: MonthLike | None = None, end: MonthLike | None = None
    ) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The first and last value of the partition column within [start, end), or None."""
        partition = _partition_column(spec)
        table = _sqlalchemy_table(spec, spec.name)
        column = table.c[partition]
        query = sa.select(sa.func.min(column), sa.func.max(column)).where(
            *_window_clauses(spec, table, start, end)
        )
        with self.engine.connect() as connection:
            if not sa.inspect(connection).has_table(spec.name):
                return None
            first, last = connection.execute(query).one()
        return None if first is None else (pd.Timestamp(first), pd.Timestamp(last))

    @redacting_errors("count the rows of")
    def row_count(self, spec: TableSpec) -> int:
        """Rows in the table; 0 when it does not exist."""
        table = _sqlalchemy_table(spec, spec.name)
        with self.engine.connect() as connection:
            if not sa.inspect(connection).has_table(spec.name):
                return 0
            return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar())

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A connection inside a write transaction: committed on success, else rolled back."""
        with self.engine.connect() as connection:
            connection.execution_options(**{_WRITE_OPTION: True})
            with connection.begin():
                yield connection

    def _quote(self, name: str) -> str:
        return quote_identifier(self.engine, name)

    def _insert(
        self, connection: sa.Connection, spec: TableSpec, table_name: str, rows: pd.DataFrame
    ) -> None:
        """Insert conformed rows: LOAD DATA LOCAL INFILE where MySQL allows it, else INSERT."""
        if rows.empty:
            return
        began = time.perf_counter()
        if self.bulk_transfer and bulk.accepts_local_infile(connection):
            method = "LOAD DATA LOCAL INFILE"
            columns = [self._quote(name) for name in spec.column_names]
            try:
                bulk.load_data_local(
                    connection,
                    self._quote(table_name),
                    spec.columns,
                    columns,
                    rows,
                    self.chunk_rows,
                )
            except bulk.BulkLoadError as error:
                raise WarehouseError(str(error)) from None
        else:
            method = "executemany"
            self._warn_once_without_bulk_load(connection)
            self._insert_many(connection, spec, table_name, rows)
        seconds = time.perf_counter() - began
        bulk.log_transfer(bulk.Transfer("write", table_name, len(rows), seconds, method))

    def _warn_once_without_bulk_load(self, connection: sa.Connection) -> None:
        if connection.dialect.name != "mysql" or self._told_about_bulk_load:
            return
        self._told_about_bulk_load = True
        log.info(
            "Writing to %s with multi-row INSERT: LOAD DATA LOCAL INFILE is off (server "
            "variable local_infile, or local_infile=0 in the URL). It is several times faster: "
            "SET GLOBAL local_infile = 1 on the server to use it.",
            self.redacted_url,
        )

    def _insert_many(
        self, connection: sa.Connection, spec: TableSpec, table_name: str, rows: pd.DataFrame
    ) -> None:
        """Insert conformed rows in chunks, each an executemany of one bound INSERT.

        PyMySQL sends an executemany of INSERT ... VALUES as multi-row INSERT statements,
        each value escaped by the driver.
        """
        dialect = connection.dialect
        placeholder = _DRIVER_PLACEHOLDERS[dialect.paramstyle]
        statement = (
            f"INSERT INTO {self._quote(table_name)} "
            f"({', '.join(self._quote(name) for name in spec.column_names)}) "
            f"VALUES ({', '.join([placeholder] * len(spec.columns))})"
        )
        for offset in range(0, len(rows), self.chunk_rows):
            chunk = rows.iloc[offset : offset + self.chunk_rows]
            columns = [
                _driver_values(column, chunk[column.name], dialect) for column in spec.columns
            ]
            connection.exec_driver_sql(statement, list(zip(*columns, strict=True)))

    def _swap_in(self, name: str, staging: str, retired: str) -> None:
        """Make `staging` the table called `name` in one atomic step, dropping the old one."""
        live, new, old = self._quote(name), self._quote(staging), self._quote(retired)
        with self._writing() as connection:
            if connection.dialect.name == "sqlite":
                # SQLite DDL is transactional: readers see both statements or neither.
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {live}")
                connection.exec_driver_sql(f"ALTER TABLE {new} RENAME TO {live}")
            elif sa.inspect(connection).has_table(name):
                # MySQL renames every pair of one RENAME TABLE statement atomically.
                connection.exec_driver_sql(f"RENAME TABLE {live} TO {old}, {new} TO {live}")
                connection.exec_driver_sql(f"DROP TABLE {old}")
            else:
                connection.exec_driver_sql(f"RENAME TABLE {new} TO {live}")

    def _refuse_other_shape(self, spec: TableSpec, inspector: sa.Inspector) -> None:
        """WarehouseError naming every difference between the table and its declaration."""
        existing = {column["name"]: column for column in inspector.get_columns(spec.name)}
        missing = [name for name in spec.column_names if name not in existing]
        unexpected = [name for name in existing if name not in spec.column_names]
        differences = [f"missing {missing}"] if missing else []
        differences += [f"unexpected {unexpected}"] if unexpected else []

        dialect = inspector.dialect
        for column in spec.columns:
            found = existing.get(column.name)
            if found is None:
                continue
            declared_type = _type_text(SQL_TYPES[column.kind], dialect)
            found_type = _type_text(found["type"], dialect)
            if found_type != declared_type:
                differences.append(f"{column.name} is {found_type}, declared {declared_type}")
            if bool(found["nullable"]) != column.nullable:
                nulls = "allows" if found["nullable"] else "refuses"
                differences.append(f"{column.name} {nulls} NULL, unlike its declaration")

        key = inspector.get_pk_constraint(spec.name).get("constrained_columns") or []
        if list(key) != list(spec.primary_key):
            differences.append(
                f"primary key ({', '.join(key)}), declared ({', '.join(spec.primary_key)})"
            )
        if differences:
            raise WarehouseError(
                f"Table {self.table_name(spec)} in {self.redacted_url} does not match its "
                f"declared schema: {'; '.join(differences)}. It was changed by hand or made by "
                "another version of the pipeline, and writing to it would fail half-way or "
                "undo that change unseen. Drop or rename it, then re-materialise the asset's "
                "partitions."
            )


def _as_declared(spec: TableSpec, frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Rows read from a declared table in the frame dtypes, converted a column at a time.

    Unlike TableSpec.conform, the primary key is not checked again: the table enforces it.
    """
    if frame.empty:
        return spec.empty_frame(names)
    converted = {}
    for column in spec.select_columns(names):
        values, problem = column.convert(frame[column.name])
        if problem:
            raise WarehouseError(
                f"Column {column.name} of table {spec.name} read back values that do not fit "
                f"its declared kind {column.kind}: {problem}. The table was changed outside "
                "the pipeline; re-materialise the asset."
            )
        converted[column.name] = values
    return pd.DataFrame(converted, copy=False)


def _type_text(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> str:
    """A column type as the dialect writes it, without MySQL's integer display widths."""
    text = type_.compile(dialect=dialect).upper()
    return _INTEGER_DISPLAY_WIDTH.sub(r"\1", text)


def _partition_column(spec: TableSpec) -> str:
    if spec.partition_column is None:
        raise ValueError(
            f"Table {spec.name!r} has no partition column, so it has no months: read or "
            "replace it whole."
        )
    return spec.partition_column


def _window_clauses(
    spec: TableSpec, table: sa.Table, start: MonthLike | None, end: MonthLike | None
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses (bound parameters) keeping the partition column in [start, end)."""
    if start is None and end is None:
        return []
    column = table.c[_partition_column(spec)]
    clauses = []
    if start is not None:
        clauses.append(column >= as_month(start, "start").date())
    if end is not None:
        clauses.append(column < as_month(end, "end").date())
    return clauses


def _refuse_rows_outside(
    spec: TableSpec, rows: pd.DataFrame, first: pd.Timestamp, stop: pd.Timestamp
) -> None:
    values = rows[_partition_column(spec)]
    outside = (values < first) | (values >= stop)
    if outside.any():
        months = sorted(values[outside].dt.strftime("%Y-%m").unique())
        raise RowsOutsideWindowError(
            f"Frame for table {spec.name!r} holds {int(outside.sum())} rows of months {months}, "
            f"outside the window being written [{first:%Y-%m-%d}, {stop:%Y-%m-%d}): return only "
            "the rows of the partitions being materialised. Nothing was written."
        )


def _driver_values(column: ColumnSpec, values: pd.Series, dialect: sa.Dialect) -> list[object]:
    """One conformed column as Python values the DB-API driver binds, nulls as None.

    Conversions run in numpy; SQLite gets dates as ISO text, the format SQLAlchemy reads.
    """
    if column.kind in ("date", "datetime"):
        unit = "D" if column.kind == "date" else "us"
        stamps = values.to_numpy(dtype="datetime64[ns]").astype(f"datetime64[{unit}]")
        if dialect.name != "sqlite":
            return stamps.tolist()
        text = np.datetime_as_string(stamps, unit=unit)
        if column.kind == "datetime":
            text = np.strings.replace(text, "T", " ")
        return np.where(np.isnat(stamps), None, text.astype(object)).tolist()

    if column.kind == "double":
        doubles = values.to_numpy(dtype="float64")
        return np.where(np.isnan(doubles), None, doubles.astype(object)).tolist()
    return values.to_numpy(dtype=object, na_value=None).tolist()


def _database_identity(url: sa.URL) -> tuple[str, ...] | None:
    """What makes two URLs the same database; None for an in-memory SQLite database."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        return None if path is None else ("sqlite", str(path.resolve()))
    host = (url.host or "localhost").lower()
    host = "localhost" if host in _LOCAL_HOSTS else host
    family = "mysql" if backend in ("mysql", "mariadb") else backend
    return (family, host, str(url.port or 3306), url.database or "")
