"""The source database: the monthly delinquency snapshot, read through a read-only connection."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import sqlalchemy as sa
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from credit_risk_assets.settings import DEFAULT_SOURCE_TABLE
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
CREATE_HINT = (
    "write sample data with `credit-risk sample-data`, or point CREDIT_RISK_SOURCE_URL and "
    "CREDIT_RISK_SOURCE_TABLE at the snapshot table"
)


class SourceError(RuntimeError):
    """The source cannot be read as configured; the message holds no password."""


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
    def read_months(self, start: MonthLike, end: MonthLike) -> pd.DataFrame:
        """Rows with billing_cycle in [start, end), every column as the database returns it.

        Values are not parsed here: the data contract checks and parses them next.
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
            result = connection.execute(query, bounds)
            # Plain tuples: pandas probes each SQLAlchemy Row for namedtuple fields, slowly.
            frame = pd.DataFrame.from_records(map(tuple, result), columns=list(result.keys()))

        log.info("Read %d rows of %s for %s..%s", len(frame), self.table, first.date(), stop.date())
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


def _bound_day(connection: sa.Connection, month: pd.Timestamp) -> object:
    # SQLite keeps dates as ISO text, so the bound value is text that compares the same way.
    if connection.dialect.name == "sqlite":
        return f"{month:%Y-%m-%d}"
    return month.date()
