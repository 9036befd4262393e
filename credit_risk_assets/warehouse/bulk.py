"""Bulk transfer between frames and databases: columnar reads and tab-separated bulk loads.

Reads from MySQL go through connectorx, which fills Arrow column arrays in native code straight
from the result set instead of building a Python tuple per row (SQLite is read by the cursor: see
columnar_url); the frame then wraps those arrays, text included, without a Python object per
value. Writes to MySQL are sent as
tab-separated text to `LOAD DATA LOCAL INFILE`; the text is built a column at a time. Both give
the same values as the driver's plain cursor and `executemany` paths, which stay as fallbacks
(the tests check the two against each other).

Every transfer logs one DEBUG record carrying a `Transfer` under TRANSFER_ATTRIBUTE, which the
benchmark collects to split a run's time into data movement and computation.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from pymysql.constants import CLIENT

from credit_risk_assets.warehouse.schema import INTEGER_RANGES, ColumnSpec

log = logging.getLogger(__name__)

# Log records of a transfer carry its Transfer under this attribute (logging's `extra`).
TRANSFER_ATTRIBUTE = "credit_risk_transfer"

# Temporary folders of LOAD DATA files are named <prefix><process id>-<random>.
LOAD_FOLDER_PREFIX = "credit-risk-load-"

# What LOAD DATA reads as NULL, and the characters a text field must escape with a backslash.
NULL_FIELD = "\\N"
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\0", "\\0"))

# Arrow arrays made here (conversions, text columns) come from the C library's heap, which
# runner.return_freed_memory hands back to the system after each run. pyarrow's default pool
# (mimalloc) kept about 1.3 GB after converting one year of risk_scores at 1,000,000 accounts.
pa.set_memory_pool(pa.system_memory_pool())

# Arrow types that pandas takes as they are: text (as its string dtype) and bytes.
_TEXT_OR_BYTES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)

# URL query keys that change nothing connectorx does; any other (TLS options, a socket path)
# means the URL asks for something connectorx would silently ignore, so the cursor path reads.
_COLUMNAR_QUERY_KEYS = {"charset", "local_infile"}
_COLUMNAR_CHARSETS = {"utf8mb4", "utf8", "utf8mb3"}


class BulkLoadError(RuntimeError):
    """A bulk load that the server took only in part: the transaction must not commit."""


@dataclass(frozen=True)
class Transfer:
    """One bulk read or write: which way, which table, how many rows, how long and how."""

    direction: str
    table: str
    rows: int
    seconds: float
    method: str


def log_transfer(transfer: Transfer) -> None:
    """Log a transfer at DEBUG, with the Transfer attached for collectors such as the benchmark."""
    log.debug(
        "%s %d rows %s %s in %.2f s (%s)",
        "Read" if transfer.direction == "read" else "Wrote",
        transfer.rows,
        "of" if transfer.direction == "read" else "into",
        transfer.table,
        transfer.seconds,
        transfer.method,
        extra={TRANSFER_ATTRIBUTE: transfer},
    )


def columnar_url(url: sa.URL) -> str | None:
    """The connectorx connection string for a MySQL URL; None when it has none.

    None for SQLite (see below) and for URLs whose query asks for more than a character set
    (TLS options, sockets), which connectorx would not honour.
    """
    unknown = set(url.query) - _COLUMNAR_QUERY_KEYS
    charset = url.query.get("charset", "utf8mb4")
    if unknown or charset not in _COLUMNAR_CHARSETS:
        return None

    backend = url.get_backend_name()
    if backend == "sqlite":
        # connectorx carries its own copy of SQLite. Two copies in one process break SQLite's
        # POSIX locks (closing one copy's file drops the other's locks: sqlite.org/
        # howtocorrupt.html, 2.2.1). After a crashed writer left its WAL behind, reads through
        # it returned the table as it was before the last commit, then "disk I/O error".
        return None
    if backend in ("mysql", "mariadb"):
        credentials = urllib.parse.quote(url.username or "", safe="")
        if url.password:
            credentials += ":" + urllib.parse.quote(str(url.password), safe="")
        host = url.host or "localhost"
        return f"mysql://{credentials}@{host}:{url.port or 3306}/{url.database or ''}"
    return None


def read_columnar(
    url: sa.URL, query: str, *, read_only: bool = False, table: str = ""
) -> pd.DataFrame | None:
    """The rows of `query` as a frame built by connectorx, or None to read with the cursor.

    None when the URL cannot be served (see columnar_url) or connectorx refuses the query,
    for example a column type it does not know; the caller then reads through the driver,
    which gives the same rows or the database's own error. `read_only` makes the MySQL
    session read-only first, as the source's connections are.
    """
    connection_string = columnar_url(url)
    if connection_string is None:
        return None
    import connectorx  # native library, loaded on the first bulk read only

    setup = ["SET SESSION TRANSACTION READ ONLY"] if read_only and _is_mysql(url) else None
    began = time.perf_counter()
    try:
        # Arrow output: connectorx then neither counts the rows first (one query less) nor
        # makes a Python string per text value.
        frame = frame_from_arrow(
            connectorx.read_sql(
                connection_string, query, return_type="arrow", pre_execution_query=setup
            )
        )
        if frame is None:
            frame = _read_pandas(connection_string, query, setup)
    except BaseException as error:
        if not _is_refusal(error):
            raise
        # The text names no password: connectorx reports the server's message only.
        reason = _without_secret(str(error).splitlines()[0] if str(error) else "", url)
        log.warning("Reading %s row by row: the columnar reader refused it (%s)", table, reason)
        return None
    log_transfer(Transfer("read", table, len(frame), time.perf_counter() - began, "connectorx"))
    return frame


def frame_from_arrow(table: pa.Table) -> pd.DataFrame | None:
    """An Arrow result as the frame connectorx's pandas output gives, or None when a column's
    type is one this conversion does not know (then read with that output instead).

    Integers come as int64 (Int64 when some are null), unsigned 64-bit integers, decimals and
    floats as float64, dates and datetimes as datetime64[us], text as the frame's string dtype
    (which wraps the Arrow array) and binaries as bytes.
    """
    columns = {}
    for name in table.column_names:
        series = _series_from_arrow(table.column(0))
        if series is None:
            return None
        columns[name] = series
        # Let go of the column's Arrow arrays before the next one is converted.
        table = table.remove_column(0)
    return pd.DataFrame(columns, copy=False)


def _series_from_arrow(column: pa.ChunkedArray) -> pd.Series | None:
    kind = column.type
    if pa.types.is_integer(kind) and kind != pa.uint64():
        whole = column.cast(pa.int64())
        if whole.null_count:
            return whole.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return whole.to_pandas()
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        # Rounded to the nearest double past 2**53, as the pandas output rounds them.
        return column.cast(pa.float64(), safe=False).to_pandas()
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return column.cast(pa.timestamp("us", tz=getattr(kind, "tz", None))).to_pandas()
    if any(is_kind(kind) for is_kind in _TEXT_OR_BYTES):
        return column.to_pandas()
    return None


def _read_pandas(connection_string: str, query: str, setup: list[str] | None) -> pd.DataFrame:
    """The rows of `query` through connectorx's pandas output (a Python object per text value)."""
    import connectorx

    with warnings.catch_warnings():
        # connectorx assembles the frame with a pandas internal that pandas 4 will drop;
        # pandas 3 (pinned below 3.2) still builds it correctly.
        warnings.filterwarnings("ignore", "make_block is deprecated", pd.errors.Pandas4Warning)
        return connectorx.read_sql(connection_string, query, pre_execution_query=setup)


def fetch_tuples(result: sa.CursorResult, chunk_rows: int) -> Iterator[list[tuple]]:
    """The rows of an executed query as the driver's own tuples, `chunk_rows` at a time.

    Fetching from the driver's cursor skips the Row object SQLAlchemy builds per row, which
    halves a SQLite read. Only for results executed without stream_results (SQLAlchemy buffers
    the first rows of a streamed one) whose columns need no result processing (raw values).
    Driver errors are raised as SQLAlchemy's DBAPIError, as a fetch through it would be.
    """
    cursor, driver_error = result.cursor, result.dialect.loaded_dbapi.Error
    try:
        while chunk := cursor.fetchmany(chunk_rows):
            yield chunk
    except driver_error as error:
        raise sa.exc.DBAPIError.instance(None, None, error, driver_error) from None
    finally:
        result.close()


def accepts_local_infile(connection: sa.Connection) -> bool:
    """True when this MySQL connection and its server both allow LOAD DATA LOCAL INFILE."""
    if connection.dialect.name != "mysql":
        return False
    driver = connection.connection.driver_connection
    if not getattr(driver, "client_flag", 0) & CLIENT.LOCAL_FILES:
        return False
    return bool(connection.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar())


def load_data_local(
    connection: sa.Connection,
    table_sql: str,
    columns: Sequence[ColumnSpec],
    column_sql: Sequence[str],
    rows: pd.DataFrame,
    chunk_rows: int,
) -> None:
    """Load conformed rows into `table_sql` with LOAD DATA LOCAL INFILE, in the caller's
    transaction, a chunk of `chunk_rows` at a time.

    A worker thread writes the next chunk's text to a private temporary file while the server
    loads the current one. With LOCAL the server turns refused rows (a repeated key, a value
    it cannot store) into warnings and skips them, so every chunk must report all its rows
    loaded and no warning; otherwise BulkLoadError is raised and nothing may be committed.
    """
    statement = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {table_sql} CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' "
        f"({', '.join(column_sql)})"
    )
    remove_stale_load_folders()
    with (
        tempfile.TemporaryDirectory(prefix=f"{LOAD_FOLDER_PREFIX}{os.getpid()}-") as folder,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="credit-risk-encode") as encoder,
    ):
        chunks = _chunks(rows, chunk_rows)
        pending: Future[tuple[str, int]] | None = _encode_next(encoder, chunks, columns, folder)
        while pending is not None:
            path, count = pending.result()
            pending = _encode_next(encoder, chunks, columns, folder)
            try:
                loaded = connection.exec_driver_sql(statement, (path,)).rowcount
                # SHOW COUNT(*) WARNINGS is diagnostic: unlike SELECT @@warning_count it keeps the
                # warnings for the error message.
                warning_count = connection.exec_driver_sql("SHOW COUNT(*) WARNINGS").scalar()
                if loaded != count or warning_count:
                    raise BulkLoadError(_refusal(connection, table_sql, count, loaded))
            finally:
                os.unlink(path)


def remove_stale_load_folders() -> None:
    """Delete the load folders of writers that were killed: their files hold account rows.

    A folder is named after its writer's process id; it is stale once that process is gone.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{LOAD_FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(LOAD_FOLDER_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("Removed %s, left behind by a bulk load that was killed", folder)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


def tsv_bytes(columns: Sequence[ColumnSpec], frame: pd.DataFrame) -> bytes:
    """Rows of a conformed frame as LOAD DATA text: tab between fields, newline after each row.

    NULL is `\\N`; text escapes backslash, tab, newline, carriage return and NUL with a
    backslash; doubles are written as Python's repr, the text PyMySQL binds, so the server
    parses the same digits on both paths; dates are ISO, datetimes to the microsecond.
    """
    if frame.empty:
        return b""
    fields = [_text_fields(column, frame[column.name]) for column in columns]
    rows = "\n".join(map("\t".join, zip(*fields, strict=True)))
    return (rows + "\n").encode("utf-8")


def _chunks(rows: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(rows), chunk_rows):
        yield rows.iloc[start : start + chunk_rows]


def _encode_next(
    encoder: ThreadPoolExecutor,
    chunks: Iterator[pd.DataFrame],
    columns: Sequence[ColumnSpec],
    folder: str,
) -> Future[tuple[str, int]] | None:
    chunk = next(chunks, None)
    if chunk is None:
        return None
    return encoder.submit(_write_chunk, chunk, columns, folder)


def _write_chunk(
    chunk: pd.DataFrame, columns: Sequence[ColumnSpec], folder: str
) -> tuple[str, int]:
    """Write one chunk's LOAD DATA text to a new file in `folder`; its path and row count."""
    handle, path = tempfile.mkstemp(dir=folder, suffix=".tsv")
    with os.fdopen(handle, "wb") as file:
        file.write(tsv_bytes(columns, chunk))
    return path, len(chunk)


def _refusal(connection: sa.Connection, table_sql: str, expected: int, loaded: int) -> str:
    """Why a chunk did not load whole, with the server's first warnings."""
    warnings = connection.exec_driver_sql("SHOW WARNINGS LIMIT 3").all()
    reasons = "; ".join(str(row[2]) for row in warnings) or "no warning given"
    return (
        f"LOAD DATA into {table_sql} stored {loaded} of {expected} rows ({reasons}). The "
        "transaction was rolled back: check the frame against the table's declared schema."
    )


def _text_fields(column: ColumnSpec, values: pd.Series) -> list[str]:
    """One column as LOAD DATA fields: each distinct value is formatted once, then looked up."""
    # Most columns hold few distinct values (months, flags, labels, DPD averages), so
    # formatting the distinct ones and indexing is far cheaper than formatting every row.
    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    texts = _formatted(column, distinct)
    lookup = np.array([*texts, NULL_FIELD], dtype=object)
    return lookup[codes].tolist()


def _formatted(column: ColumnSpec, distinct: object) -> list[str]:
    """Distinct non-null values of a column as LOAD DATA text."""
    if column.kind in INTEGER_RANGES:
        return list(map(str, np.asarray(distinct, dtype="int64").tolist()))
    if column.kind == "double":
        return list(map(repr, np.asarray(distinct, dtype="float64").tolist()))
    if column.kind in ("date", "datetime"):
        unit = "D" if column.kind == "date" else "us"
        stamps = np.asarray(distinct, dtype="datetime64[ns]").astype(f"datetime64[{unit}]")
        text = np.datetime_as_string(stamps, unit=unit)
        return np.strings.replace(text, "T", " ").tolist()
    return [_escaped(str(value)) for value in distinct]


def _escaped(text: str) -> str:
    for plain, escaped in _ESCAPES:
        text = text.replace(plain, escaped)
    return text


def _is_refusal(error: BaseException) -> bool:
    """Whether connectorx failed on the query or a value rather than being interrupted.

    A value it cannot convert (a MySQL zero date, say) surfaces as a Rust panic, which pyo3
    raises as PanicException, a BaseException; Ctrl-C and exits pass through.
    """
    panic = type(error).__name__ == "PanicException"
    return panic or isinstance(error, (RuntimeError, ValueError, TypeError))


def _absolute(database: str) -> str:
    return str(Path(database).expanduser().resolve())


def _is_mysql(url: sa.URL) -> bool:
    return url.get_backend_name() in ("mysql", "mariadb")


def _without_secret(text: str, url: sa.URL) -> str:
    password = url.password
    if not password:
        return text
    for form in {str(password), urllib.parse.quote(str(password), safe="")}:
        text = text.replace(form, "***")
    return text
