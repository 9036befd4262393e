"""A warehouse write run in a child process that stops at a chosen point so a test can kill it.

Run as `python -m credit_risk_assets_tests.interrupted_write '<json>'`. The child registers an
SQLAlchemy cursor hook on every engine, then performs the write through the public API
(`WarehouseDatabase.replace_months` / `replace_table`, or the `credit-risk run` command). When
the write reaches the pause point the hook writes a marker file (holding the MySQL connection
id, when there is one) and sleeps, so that the test can SIGKILL the child at exactly that
point. Nothing in the package knows about this: the hook sits on SQLAlchemy's public events.

Pause points, matched on the statements the driver is about to run or has just run:
- `bulk_insert`: after the first bulk-load statement (INSERT or LOAD DATA) into the table or
  its staging table, with more rows still to come, inside the write's transaction;
- `swap`: before the first statement that renames or drops the live table, i.e. with the
  staging table fully loaded and the live table untouched;
- `after_swap`: after the statement that renamed the staging table into place (MySQL), before
  the retired table is dropped.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from credit_risk_assets.warehouse.schema import TableSpec

PAUSE_POINTS = ("bulk_insert", "swap", "after_swap")
SLEEP_SECONDS = 600
_BULK_LOAD = re.compile(r"^\s*(INSERT|LOAD\s+DATA)\b", re.IGNORECASE)
_RENAME_OR_DROP = re.compile(r"^\s*(RENAME\s+TABLE|DROP\s+TABLE|ALTER\s+TABLE)\b", re.IGNORECASE)


def version_frame(
    spec: TableSpec, version: int, rows: int, month: str = "2024-03-01"
) -> pd.DataFrame:
    """`rows` rows of `spec` in which every non-key value says which `version` wrote it.

    Integer key columns count 1..rows, the partition column holds `month`, and every double
    column holds version / 1000, so that a whole version has SUM = rows * version / 1000 and
    MIN = MAX: a reader that saw rows of two versions would see MIN != MAX.
    """
    index = np.arange(1, rows + 1)
    columns: dict[str, object] = {}
    for column in spec.columns:
        if column.name == spec.partition_column:
            values = pd.Series(pd.Timestamp(month), index=range(rows))
        elif column.name in spec.primary_key:
            values = _key_values(column.kind, index)
        else:
            values = _version_values(column.kind, version, rows)
        columns[column.name] = pd.Series(values).astype(column.frame_dtype)
    return pd.DataFrame(columns)


def _key_values(kind: str, index: np.ndarray) -> object:
    if kind in ("bigint", "int"):
        return index.astype("int64")
    if kind == "date":
        return pd.date_range("2000-01-01", periods=len(index), freq="D")
    return [f"key_{number:07d}" for number in index]


def _version_values(kind: str, version: int, rows: int) -> object:
    values = {
        "bigint": np.full(rows, version, dtype="int64"),
        "int": np.full(rows, version, dtype="int64"),
        "flag": np.full(rows, version % 2, dtype="int64"),
        "double": np.full(rows, version / 1000),
        "date": pd.Series(pd.Timestamp("2024-01-01"), index=range(rows)),
        "datetime": pd.Series(pd.Timestamp("2024-01-01 08:00:00"), index=range(rows)),
        "label": [f"v{version}"] * rows,
        "text": [f"version {version}"] * rows,
    }
    return values[kind]


def matches_pause_point(pause_at: str, table: str, statement: str) -> bool:
    """Whether `statement` is where a write of `table` pauses at `pause_at`.

    `swap` is checked before the statement runs, the other points after it.
    """
    if pause_at not in PAUSE_POINTS:
        raise ValueError(f"pause_at={pause_at!r}: use one of {PAUSE_POINTS}.")
    if pause_at == "bulk_insert":
        # A bulk load may go to the table itself or to its staging table (`<table>__...`).
        return _BULK_LOAD.match(statement) is not None and table in statement
    if pause_at == "swap":
        names_live_table = f"`{table}`" in statement or f'"{table}"' in statement
        return _RENAME_OR_DROP.match(statement) is not None and names_live_table
    return statement.lstrip().upper().startswith("RENAME TABLE")


def _install_pause(table: str, pause_at: str, marker: Path) -> None:
    """Register the cursor hook that stops this process at `pause_at` for `table`."""
    moment = "before_cursor_execute" if pause_at == "swap" else "after_cursor_execute"

    def pause(conn, cursor, statement, parameters, context, executemany) -> None:
        if not matches_pause_point(pause_at, table, statement):
            return
        thread_id = getattr(getattr(cursor, "connection", None), "thread_id", None)
        # Written aside, then renamed: the test never reads a half-written marker.
        written = marker.with_suffix(".partial")
        written.write_text(json.dumps({"connection_id": thread_id() if thread_id else None}))
        written.rename(marker)
        time.sleep(SLEEP_SECONDS)

    sa.event.listen(sa.engine.Engine, moment, pause)


def main(arguments: dict[str, object]) -> int:
    """Install the pause, then run the write described by `arguments`."""
    _install_pause(
        str(arguments["pause_table"]), str(arguments["pause_at"]), Path(arguments["marker"])
    )
    operation = arguments["operation"]
    if operation == "cli_run":
        from credit_risk_assets.cli import main as cli_main

        return cli_main(["run"])

    from credit_risk_assets.tables import TABLES
    from credit_risk_assets.warehouse.database import WarehouseDatabase

    spec = TABLES[str(arguments["table"])]
    database = WarehouseDatabase(str(arguments["url"]), chunk_rows=int(arguments["chunk_rows"]))
    frame = version_frame(spec, int(arguments["version"]), int(arguments["rows"]))
    if operation == "replace_months":
        database.replace_months(spec, frame, "2024-03-01", "2024-04-01")
    else:
        database.replace_table(spec, frame)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
