"""`credit-risk bench`: what each stage of the pipeline costs, as ratios to floors on the same data.

One call writes N accounts x M months of sample data, then for each backend (SQLite, MySQL):

1. times each stage as the assets run it (read, contract, features, streaks, labels, fit, score,
   write), with rows per second and the peak memory of the process during the stage;
2. times references on the same data: the notebook's own pandas feature and streak code, the
   mysql client's dump of the snapshot rows (read floor) and a server-side INSERT ... SELECT copy
   of every table written (write floor);
3. runs the whole `credit-risk run` in a child process on a fresh warehouse and splits its time
   into data movement, computation per stage, and Dagster's own overhead.

It prints ratios as well as times: the machine may be shared, and a ratio of two timings taken
minutes apart on the same data moves far less than either timing. Nothing here runs in the test
suite beyond a small smoke run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from credit_risk_assets.compute.contract import check_source_contract
from credit_risk_assets.compute.features import account_features, account_streaks
from credit_risk_assets.compute.labels import DefaultRule, forward_labels, last_mature_month
from credit_risk_assets.compute.model import train_pd_model, training_frame
from credit_risk_assets.compute.scoring import score_accounts
from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets.settings import DEFAULT_HORIZON_MONTHS, DEFAULT_LOOKBACK_MONTHS
from credit_risk_assets.tables import (
    ACCOUNT_FEATURES,
    DEFAULT_FLAGS,
    DELINQUENCY_SNAPSHOT,
    RISK_SCORES,
    STREAKS,
)
from credit_risk_assets.warehouse.bulk import TRANSFER_ATTRIBUTE, Transfer
from credit_risk_assets.warehouse.database import WarehouseDatabase, quote_identifier, redact_url
from credit_risk_assets.warehouse.schema import TableSpec
from credit_risk_assets.warehouse.source import SourceDatabase

DEFAULT_ACCOUNTS = 100_000
DEFAULT_MONTHS = 12
BACKENDS = ("sqlite", "mysql")
MYSQL_SERVER_VARIABLE = "CREDIT_RISK_BENCH_MYSQL_URL"
DEFAULT_MYSQL_SERVER = "mysql+pymysql://root@127.0.0.1:3306"

# The targets, as ratios measured in one run.
NOTEBOOK_TARGET = 200.0  # feature and streak step at least this many times faster
READ_TARGET = 2.0  # MySQL snapshot read within this many times the client dump
WRITE_TARGET = 3.0  # MySQL warehouse writes within this many times INSERT ... SELECT

# Which stage each asset's computation belongs to, when a run is split by stage.
STEP_STAGES = {
    "delinquency_snapshot": "contract",
    "account_features": "features",
    "streaks": "streaks",
    "default_flags": "labels",
    "pd_model": "fit",
    "risk_drivers": "fit",
    "risk_scores": "score",
    "account_risk_scores": "score",
}
STAGE_ORDER = ("read", "contract", "features", "streaks", "labels", "fit", "score", "write")
OTHER_STEPS = "other steps"
OVERHEAD = "Dagster, CLI and summary"
MEMORY_SAMPLE_SECONDS = 0.1
# Names of the two snapshot reads, which the read floors compare against.
SOURCE_READ = "source months (SourceDatabase.read_months)"
SNAPSHOT_READ = "delinquency_snapshot (WarehouseDatabase.read)"
NOTEBOOK_COLUMNS = (
    "avg_dpd",
    "max_dpd",
    "delinquency_ratio",
    "severe_delinquency_count",
    "default_like_cycles",
)

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says what to change."""


@dataclass
class Measure:
    """One timed step: its stage, what it did, rows handled, seconds and peak memory."""

    stage: str
    step: str
    rows: int
    seconds: float
    peak_mb: float

    @property
    def rows_per_second(self) -> float:
        """Rows handled per second (0 for a step that took no measurable time)."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Reference:
    """A reference timing next to ours, their ratio, and whether it meets the target.

    For the notebook the ratio is its time over ours (higher is better); for a floor it is our
    time over the floor's (lower is better).
    """

    name: str
    reference_seconds: float | None
    ours_seconds: float
    ratio: float | None
    target: str
    note: str = ""
    met: bool | None = None


@dataclass
class StepMeasure:
    """One Dagster step of the whole run: its time, the part not spent moving rows, its peak."""

    step: str
    seconds: float
    compute_seconds: float
    peak_mb: float


@dataclass
class RunMeasure:
    """The whole `credit-risk run` in a child process: wall time, peak memory, time by stage."""

    exit_status: int
    seconds: float
    peak_mb: float
    stage_seconds: dict[str, float]
    steps: list[StepMeasure] = field(default_factory=list)
    message: str = ""

    @classmethod
    def from_json(cls, text: str) -> RunMeasure:
        """The measure the child process wrote."""
        values = json.loads(text)
        values["steps"] = [StepMeasure(**step) for step in values.get("steps", [])]
        return cls(**values)

    @property
    def data_movement_seconds(self) -> float:
        """Seconds spent reading and writing rows."""
        return self.stage_seconds.get("read", 0.0) + self.stage_seconds.get("write", 0.0)


@dataclass
class BackendReport:
    """Everything measured on one backend."""

    backend: str
    database: str
    snapshot_rows: int
    measures: list[Measure] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    run: RunMeasure | None = None

    def stage_seconds(self, stage: str) -> float:
        """Seconds of every measured step of `stage`."""
        return sum(measure.seconds for measure in self.measures if measure.stage == stage)

    def step_seconds(self, step: str) -> float:
        """Seconds of the measured step called `step`."""
        return sum(measure.seconds for measure in self.measures if measure.step == step)


@dataclass(frozen=True)
class BenchOptions:
    """What to measure: the data size, the backends, and the optional parts."""

    accounts: int = DEFAULT_ACCOUNTS
    months: int = DEFAULT_MONTHS
    backends: tuple[str, ...] = BACKENDS
    mysql_server_url: str = DEFAULT_MYSQL_SERVER
    seed: int = 7
    whole_run: bool = True
    compare_plain: bool = False


@dataclass(frozen=True)
class BenchDatabases:
    """Throwaway databases of one backend: the source, a warehouse, and the run's warehouse."""

    backend: str
    source_url: str
    warehouse_url: str
    run_warehouse_url: str


def run_benchmark(
    options: BenchOptions, progress: Callable[[str], None] = lambda _text: None
) -> list[BackendReport]:
    """Measure every backend of `options` on one generated snapshot; one report per backend."""
    for backend in options.backends:
        if backend not in BACKENDS:
            raise BenchError(f"Backend {backend!r} is not one of {BACKENDS}: pick from those.")
    if options.months < DEFAULT_HORIZON_MONTHS + 3:
        # Two mature months: the model holds the latest out and trains on the other.
        raise BenchError(
            f"months={options.months} leaves fewer than two mature months for the "
            f"{DEFAULT_HORIZON_MONTHS}-month performance window: ask for at least "
            f"{DEFAULT_HORIZON_MONTHS + 3} months."
        )

    progress(f"generating {options.accounts:,} accounts x {options.months} months")
    snapshot = generate_snapshot(options.accounts, options.months, None, options.seed)
    reports = []
    with tempfile.TemporaryDirectory(prefix="credit-risk-bench-") as folder:
        for backend in options.backends:
            with bench_databases(backend, options.mysql_server_url, Path(folder)) as databases:
                reports.append(_bench_backend(databases, snapshot, options, Path(folder), progress))
    return reports


@contextlib.contextmanager
def bench_databases(backend: str, server_url: str, folder: Path) -> Iterator[BenchDatabases]:
    """Fresh databases for one backend, dropped (MySQL) or deleted with `folder` (SQLite)."""
    if backend == "sqlite":
        urls = [f"sqlite:///{folder / f'{role}.db'}" for role in ("source", "warehouse", "run")]
        yield BenchDatabases(backend, *urls)
        return

    server = sa.create_engine(server_url)
    names = [f"crbench_{uuid.uuid4().hex[:8]}_{role}" for role in ("source", "warehouse", "run")]
    try:
        with server.begin() as connection:
            for name in names:
                connection.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    except sa.exc.SQLAlchemyError as error:
        server.dispose()
        raise BenchError(
            f"Cannot create benchmark databases on {redact_url(server_url)} "
            f"({str(getattr(error, 'orig', error)).strip()}): point --mysql-url or "
            f"{MYSQL_SERVER_VARIABLE} at a server where this user may CREATE DATABASE."
        ) from None
    try:
        urls = [
            server.url.set(database=name).render_as_string(hide_password=False) for name in names
        ]
        yield BenchDatabases(backend, *urls)
    finally:
        with server.begin() as connection:
            for name in names:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        server.dispose()


def _bench_backend(
    databases: BenchDatabases,
    snapshot: pd.DataFrame,
    options: BenchOptions,
    folder: Path,
    progress: Callable[[str], None],
) -> BackendReport:
    description = _describe(databases, options.mysql_server_url)
    report = BackendReport(databases.backend, description, len(snapshot))
    progress(f"{databases.backend}: writing the sample source")
    _timed(
        report,
        "write",
        "sample source (write_source_table)",
        lambda: write_source_table(databases.source_url, snapshot),
    )
    steps = _PipelineSteps(databases, report, progress)
    steps.run_stages()

    progress(f"{databases.backend}: references")
    report.references.append(steps.notebook_reference())
    if databases.backend == "mysql":
        report.references += steps.read_floors()
    report.references.append(steps.write_floor())
    if options.compare_plain:
        report.references += steps.plain_path_references()
    first_month = steps.first_month
    steps.release()

    if options.whole_run:
        progress(f"{databases.backend}: the whole credit-risk run, in a child process")
        report.run = measure_whole_run(databases, first_month, folder)
    return report


class _PipelineSteps:
    """The assets' work on the bench data, step by step, keeping what the references need."""

    def __init__(
        self, databases: BenchDatabases, report: BackendReport, progress: Callable[[str], None]
    ) -> None:
        self.databases = databases
        self.report = report
        self.progress = progress
        self.source = SourceDatabase(url=databases.source_url)
        self.warehouse = WarehouseDatabase(databases.warehouse_url)
        self.today = date.today()
        self.months = self.source.months_present()
        self.first_month = self.months[0]
        self.end = self.months[-1] + _MONTH
        self.snapshot: pd.DataFrame | None = None

    def time(self, stage: str, step: str, action: Callable[[], T], rows: int | None = None) -> T:
        """Run `action` as a step of `stage`; rows default to the result's length."""
        return _timed(self.report, stage, step, action, rows)

    def run_stages(self) -> None:
        """Read, check, compute and write as the assets do, each over the whole range."""
        first, end, months = self.first_month, self.end, self.months
        lookback = DEFAULT_LOOKBACK_MONTHS

        self.progress(f"{self.report.backend}: read, contract, write")
        raw = self.time("read", SOURCE_READ, lambda: self.source.read_months(first, end))
        valid = self.time(
            "contract",
            "data contract",
            lambda: check_source_contract(raw, first, end).valid,
            rows=len(raw),
        )
        raw = None
        self.write(DELINQUENCY_SNAPSHOT, valid, first, end)
        valid = None

        self.progress(f"{self.report.backend}: features, streaks, labels")
        snapshot = self.time("read", SNAPSHOT_READ, lambda: self.read(DELINQUENCY_SNAPSHOT))
        self.snapshot = snapshot
        features = self.time(
            "features",
            f"account_features, {len(months)} as-of months",
            lambda: account_features(snapshot, months, lookback),
            rows=len(snapshot),
        )
        streaks = self.time(
            "streaks",
            f"account_streaks, {len(months)} as-of months",
            lambda: account_streaks(snapshot, months, lookback),
            rows=len(snapshot),
        )
        label_months = self.label_months()
        labels = self.time(
            "labels",
            f"forward_labels, {len(label_months)} mature months",
            lambda: forward_labels(
                snapshot, label_months, DEFAULT_HORIZON_MONTHS, DefaultRule(), self.today
            ),
            rows=len(snapshot),
        )
        self.write(ACCOUNT_FEATURES, features, first, end)
        self.write(STREAKS, streaks, first, end)
        self.write(DEFAULT_FLAGS, labels, label_months[0], label_months[-1] + _MONTH)
        features = streaks = labels = None

        self.progress(f"{self.report.backend}: model and scores")
        self.fit_and_score()

    def read(self, spec: TableSpec, whole: bool = False) -> pd.DataFrame:
        """The bench months of a warehouse table, or all of it."""
        if whole:
            return self.warehouse.read(spec)
        return self.warehouse.read(spec, self.first_month, self.end)

    def write(self, spec: TableSpec, frame: pd.DataFrame, start: object, end: object) -> None:
        """Replace the months of a warehouse table, timed as a write step."""
        self.time(
            "write", spec.name, lambda: self.warehouse.replace_months(spec, frame, start, end)
        )

    def label_months(self) -> list[pd.Timestamp]:
        """The months whose whole performance window is in the data and in the past."""
        last_mature = last_mature_month(self.today, DEFAULT_HORIZON_MONTHS)
        last_in_data = self.months[-1] - pd.DateOffset(months=DEFAULT_HORIZON_MONTHS)
        label_months = [month for month in self.months if month <= min(last_mature, last_in_data)]
        if len(label_months) < 2:
            # The model holds the latest mature month out: it needs one more to train on.
            raise BenchError(
                f"{len(self.months)} months ending this month hold {len(label_months)} mature "
                f"month(s) for a {DEFAULT_HORIZON_MONTHS}-month performance window; the "
                "out-of-time holdout needs two. Ask for at least "
                f"{DEFAULT_HORIZON_MONTHS + 3} months."
            )
        return label_months

    def fit_and_score(self) -> None:
        """pd_model's reads and fit, then risk_scores' reads, scoring and write."""
        model_specs = (ACCOUNT_FEATURES, STREAKS, DEFAULT_FLAGS)
        inputs = self.time(
            "read",
            "model inputs (features, streaks, labels)",
            lambda: [self.read(spec, whole=True) for spec in model_specs],
        )
        model = self.time(
            "fit",
            "training_frame + train_pd_model",
            lambda: train_pd_model(training_frame(*inputs)),
            rows=len(inputs[2]),
        )
        inputs = None

        scoring_inputs = self.time(
            "read",
            "scoring inputs (features, streaks)",
            lambda: [self.read(spec) for spec in (ACCOUNT_FEATURES, STREAKS)],
        )
        scores = self.time(
            "score",
            "score_accounts",
            lambda: score_accounts(*scoring_inputs, model),
            rows=len(scoring_inputs[0]),
        )
        scoring_inputs = None
        self.write(RISK_SCORES, scores, self.first_month, self.end)

    def notebook_reference(self) -> Reference:
        """The notebook's feature and streak cells against ours on the same rows and work."""
        snapshot, last = self.snapshot, self.months[-1]
        notebook_seconds, notebook = _seconds(lambda: notebook_features_and_streaks(snapshot))
        # Ours takes ~0.1 s at 100,000 accounts, where scheduling noise is a large share:
        # the median of three runs, against one run of the notebook's 40-odd seconds.
        timings = [_seconds(lambda: _ours_like_notebook(snapshot, last)) for _ in range(3)]
        ours_seconds = float(np.median([seconds for seconds, _ in timings]))
        ratio = notebook_seconds / ours_seconds
        return Reference(
            "notebook feature+streak code (1 as-of month, all history)",
            notebook_seconds,
            ours_seconds,
            ratio,
            f">= {NOTEBOOK_TARGET:.0f}x faster",
            compare_with_notebook(notebook, timings[0][1], snapshot),
            ratio >= NOTEBOOK_TARGET,
        )

    def read_floors(self) -> list[Reference]:
        """Our MySQL reads of the snapshot rows against the mysql client's dump of them."""
        steps = (
            (SOURCE_READ, self.databases.source_url),
            (SNAPSHOT_READ, self.databases.warehouse_url),
        )
        references = []
        for step, url in steps:
            floor = mysql_dump_seconds(url, DELINQUENCY_SNAPSHOT, self.first_month, self.end)
            ours = self.report.step_seconds(step)
            ratio = None if floor is None else ours / floor
            references.append(
                Reference(
                    f"read: {step} vs mysql client dump",
                    floor,
                    ours,
                    ratio,
                    f"<= {READ_TARGET:.0f}x the floor",
                    "" if floor is not None else "no mysql client on PATH",
                    None if ratio is None else ratio <= READ_TARGET,
                )
            )
        return references

    def write_floor(self) -> Reference:
        """Our writes of the warehouse tables against INSERT ... SELECT copies of them."""
        specs = (DELINQUENCY_SNAPSHOT, ACCOUNT_FEATURES, STREAKS, DEFAULT_FLAGS, RISK_SCORES)
        floors = {spec.name: copy_seconds(self.warehouse, spec) for spec in specs}
        ours = {name: self.report.step_seconds(name) for name in floors}
        ratio = sum(ours.values()) / sum(floors.values())
        on_mysql = self.databases.backend == "mysql"
        return Reference(
            "write: warehouse tables vs INSERT ... SELECT copies",
            sum(floors.values()),
            sum(ours.values()),
            ratio,
            f"<= {WRITE_TARGET:.0f}x the floor" if on_mysql else "(no target on SQLite)",
            "per table: "
            + ", ".join(f"{name} {ours[name] / floors[name]:.1f}x" for name in floors),
            ratio <= WRITE_TARGET if on_mysql else None,
        )

    def plain_path_references(self) -> list[Reference]:
        """The plain paths (cursor reads, executemany writes) timed on the same rows."""
        plain = WarehouseDatabase(self.databases.warehouse_url, bulk_transfer=False)
        first, end, snapshot = self.first_month, self.end, self.snapshot
        spec = DELINQUENCY_SNAPSHOT
        try:
            read_source, _ = _seconds(lambda: self.source.read_months(first, end, columnar=False))
            write, _ = _seconds(lambda: plain.load_table(spec, snapshot, name="plain_copy"))
            read_snapshot, _ = _seconds(lambda: plain.read(spec, first, end))
            with plain.engine.begin() as connection:
                connection.exec_driver_sql("DROP TABLE plain_copy")
        finally:
            plain.dispose()
        timings = ((SOURCE_READ, read_source), (spec.name, write), (SNAPSHOT_READ, read_snapshot))
        return [
            Reference(
                f"plain path: {step}",
                seconds,
                self.report.step_seconds(step),
                seconds / self.report.step_seconds(step),
                "fast path speed-up",
            )
            for step, seconds in timings
        ]

    def release(self) -> None:
        """Drop the frames and connections kept for the references."""
        self.snapshot = None
        self.source.dispose()
        self.warehouse.dispose()
        gc.collect()


_MONTH = pd.DateOffset(months=1)


def _ours_like_notebook(snapshot: pd.DataFrame, last: pd.Timestamp) -> pd.DataFrame:
    """Our feature and streak computation on the notebook's terms: one month, all history."""
    features = account_features(snapshot, [last], 0)
    streaks = account_streaks(snapshot, [last], 0)
    return features.merge(streaks, on=["as_of_month", "account_id"])


def notebook_features_and_streaks(df: pd.DataFrame) -> pd.DataFrame:
    """The notebook's feature and streak cells (In [4] and In [5]), as the notebook wrote them.

    Only `df` comes from the caller instead of a `SELECT *` through mysqlconnector.
    """
    with warnings.catch_warnings():
        # The cell drops a column in place, which pandas 3 deprecates; kept as written.
        warnings.simplefilter("ignore")
        features_df = (
            df.groupby("account_id")
            .agg(
                avg_dpd=("days_past_due", "mean"),
                max_dpd=("days_past_due", "max"),
                delinquency_ratio=("is_delinquent", "mean"),
                severe_delinquency_count=("days_past_due", lambda x: (x > 60).sum()),
                default_like_cycles=("days_past_due", lambda x: (x >= 90).sum()),
                recent_avg_dpd_3m=("days_past_due", "mean"),
            )
            .reset_index()
        )

        features_df = features_df.fillna(0)

        df_sorted = df.sort_values(["account_id", "billing_cycle"]).reset_index(drop=True)

        df_sorted["grp"] = df_sorted.groupby("account_id")["is_delinquent"].transform(
            lambda x: (x != x.shift()).cumsum()
        )

        streak_df = (
            df_sorted[df_sorted["is_delinquent"] == 1]
            .groupby(["account_id", "grp"])
            .size()
            .reset_index(name="streak_len")
            .groupby("account_id")["streak_len"]
            .max()
            .reset_index()
        )

        features_df = features_df.merge(streak_df, on="account_id", how="left")

        features_df["delinquency_streak"] = features_df["streak_len"].fillna(0)
        features_df.drop(columns=["streak_len"], inplace=True)
    return features_df


def compare_with_notebook(
    notebook: pd.DataFrame, ours: pd.DataFrame, snapshot: pd.DataFrame
) -> str:
    """Which values agree, in words; raises BenchError when a value the two share differs.

    The five window features must be equal for every account. The streak must be equal for
    every account whose history has no missing month: the notebook counts consecutive rows,
    so across a gap it joins two runs that ours keeps apart.
    """
    notebook = notebook.set_index("account_id").sort_index()
    ours = ours.set_index("account_id").sort_index()
    if not notebook.index.equals(ours.index):
        raise BenchError("The notebook's code and ours scored different accounts on the same rows.")
    for column in NOTEBOOK_COLUMNS:
        if not np.allclose(notebook[column], ours[column], rtol=1e-12, atol=0):
            raise BenchError(f"{column} differs between the notebook's code and ours.")

    months = snapshot["billing_cycle"].dt.year * 12 + snapshot["billing_cycle"].dt.month
    span = months.groupby(snapshot["account_id"]).agg(["min", "max", "size"])
    gapless = (span["max"] - span["min"] + 1 == span["size"]).reindex(ours.index)
    same_streak = notebook["delinquency_streak"].astype("int64") == ours["delinquency_streak"]
    if not same_streak[gapless].all():
        raise BenchError("delinquency_streak differs on an account without a missing month.")
    differing = int((~same_streak).sum())
    return (
        f"equal on {len(ours):,} accounts: {', '.join(NOTEBOOK_COLUMNS)}; delinquency_streak "
        f"equal on all {int(gapless.sum()):,} accounts without a missing month "
        f"({differing:,} accounts with one differ, as the notebook joins runs across a gap); "
        "recent_avg_dpd_3m corrected"
    )


def mysql_dump_seconds(
    url: str, spec: TableSpec, first: pd.Timestamp, end: pd.Timestamp
) -> float | None:
    """Seconds the mysql client takes to dump a table's rows of [first, end) in key order, to
    /dev/null; None when there is no client on PATH."""
    client = shutil.which("mysql") or shutil.which("mariadb")
    if client is None:
        return None
    parsed = sa.make_url(url)
    partition = spec.partition_column
    query = (
        f"SELECT * FROM `{spec.name}` WHERE `{partition}` >= '{first:%Y-%m-%d}' "
        f"AND `{partition}` < '{end:%Y-%m-%d}' ORDER BY {', '.join(spec.primary_key)}"
    )
    command = [
        client,
        f"--host={parsed.host or 'localhost'}",
        f"--port={parsed.port or 3306}",
        f"--user={parsed.username or ''}",
        "--batch",
        "--quick",
        "--skip-column-names",
        f"--database={parsed.database}",
        f"--execute={query}",
    ]
    # The password goes through the environment, never the command line others can list.
    environment = {**os.environ, "MYSQL_PWD": str(parsed.password or "")}
    began = time.perf_counter()
    subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def copy_seconds(warehouse: WarehouseDatabase, spec: TableSpec) -> float:
    """Seconds the database takes to copy the table into an empty twin with INSERT ... SELECT."""
    copy = f"{spec.name}__benchcopy"
    table = spec.sqlalchemy_table(sa.MetaData(), copy)
    with warehouse.engine.begin() as connection:
        table.drop(connection, checkfirst=True)
        table.create(connection)
    source_sql = quote_identifier(warehouse.engine, spec.name)
    copy_sql = quote_identifier(warehouse.engine, copy)
    try:
        with warehouse.engine.begin() as connection:
            began = time.perf_counter()
            connection.exec_driver_sql(f"INSERT INTO {copy_sql} SELECT * FROM {source_sql}")
        return time.perf_counter() - began
    finally:
        with warehouse.engine.begin() as connection:
            table.drop(connection)


def measure_whole_run(
    databases: BenchDatabases, first_month: pd.Timestamp, folder: Path
) -> RunMeasure:
    """Run `credit-risk run` in a child process on a fresh warehouse; time, memory, stages."""
    home = folder / f"run-{databases.backend}"
    home.mkdir()
    output = home / "measure.json"
    environment = {
        **os.environ,
        "CREDIT_RISK_SOURCE_URL": databases.source_url,
        "CREDIT_RISK_WAREHOUSE_URL": databases.run_warehouse_url,
        "CREDIT_RISK_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "CREDIT_RISK_FIRST_MONTH": f"{first_month:%Y-%m}",
    }
    for variable in ("CREDIT_RISK_LOOKBACK_MONTHS", "CREDIT_RISK_HORIZON_MONTHS"):
        environment.pop(variable, None)
    subprocess.run(
        [sys.executable, "-m", "credit_risk_assets.bench", str(output)],
        env=environment,
        check=False,
    )
    if not output.exists():
        return RunMeasure(1, 0.0, 0.0, {}, [], "the child process died before reporting")
    return RunMeasure.from_json(output.read_text())


class _TransferCollector(logging.Handler):
    """Keeps every Transfer logged by the warehouse's bulk module, with its wall-clock time."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.transfers: list[tuple[float, Transfer]] = []

    def emit(self, record: logging.LogRecord) -> None:
        transfer = getattr(record, TRANSFER_ATTRIBUTE, None)
        if transfer is not None:
            self.transfers.append((record.created, transfer))


class _MemorySampler(threading.Thread):
    """Samples this process's resident memory every MEMORY_SAMPLE_SECONDS, with wall times."""

    def __init__(self) -> None:
        super().__init__(name="credit-risk-bench-memory", daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self.stopped.wait(MEMORY_SAMPLE_SECONDS):
            with contextlib.suppress(OSError):
                resident = int(Path("/proc/self/statm").read_text().split()[1])
                self.samples.append((time.time(), resident * page_mb))

    def peak_between(self, start: float, stop: float) -> float:
        """The largest sample taken in [start, stop]; 0 when none was."""
        return max((mb for moment, mb in self.samples if start <= moment <= stop), default=0.0)


def _measure_run_in_this_process(output: Path) -> int:
    """The child's side of measure_whole_run: run the CLI, then write the measure as JSON."""
    from credit_risk_assets.cli import main

    collector = _TransferCollector()
    bulk_log = logging.getLogger("credit_risk_assets.warehouse.bulk")
    bulk_log.setLevel(logging.DEBUG)
    bulk_log.propagate = False
    bulk_log.addHandler(collector)
    sampler = _MemorySampler()
    sampler.start()

    began = time.perf_counter()
    with (
        open(output.with_suffix(".log"), "w") as log_file,
        contextlib.redirect_stdout(log_file),
        contextlib.redirect_stderr(log_file),
    ):
        status = main(["run"])
    seconds = time.perf_counter() - began
    sampler.stopped.set()

    steps = _run_steps(collector.transfers, sampler)
    stage_seconds = dict.fromkeys(STAGE_ORDER, 0.0)
    for _moment, transfer in collector.transfers:
        stage_seconds[transfer.direction] += transfer.seconds
    for step in steps:
        stage = STEP_STAGES.get(step.step, OTHER_STEPS)
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + step.compute_seconds
    stage_seconds[OVERHEAD] = seconds - sum(stage_seconds.values())
    message = "" if status == 0 else output.with_suffix(".log").read_text()[-2000:]
    measure = RunMeasure(status, seconds, peak_memory_mb(), stage_seconds, steps, message)
    output.write_text(json.dumps(asdict(measure)))
    return status


def _run_steps(
    transfers: list[tuple[float, Transfer]], sampler: _MemorySampler
) -> list[StepMeasure]:
    """Each step of the instance's runs: its time apart from reads and writes, and its peak."""
    from dagster import DagsterEventType, DagsterInstance

    kinds = {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
    }
    steps = []
    with DagsterInstance.get() as instance:
        for run in reversed(instance.get_runs()):
            spans = _step_spans(instance.all_logs(run.run_id, of_type=kinds))
            for step, (start, stop) in spans.items():
                moved = sum(t.seconds for moment, t in transfers if start <= moment <= stop)
                compute = max(stop - start - moved, 0.0)
                steps.append(
                    StepMeasure(step, stop - start, compute, sampler.peak_between(start, stop))
                )
    return steps


def _step_spans(entries: Sequence) -> dict[str, tuple[float, float]]:
    """First and last event time of each step among a run's event log entries."""
    spans: dict[str, tuple[float, float]] = {}
    for entry in entries:
        if entry.step_key is None:
            continue
        start, stop = spans.get(entry.step_key, (entry.timestamp, entry.timestamp))
        spans[entry.step_key] = (min(start, entry.timestamp), max(stop, entry.timestamp))
    return spans


def peak_memory_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM on Linux, else ru_maxrss)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory() -> bool:
    """Restart the peak-memory count at the current size (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _timed(
    report: BackendReport,
    stage: str,
    step: str,
    action: Callable[[], T],
    rows: int | None = None,
) -> T:
    """Run `action` as a step of `stage`: its seconds, rows and the peak memory meanwhile.

    Rows default to the result's length (summed over a list of frames), or the result
    itself when it is a count.
    """
    gc.collect()
    reset_peak_memory()
    began = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - began
    if rows is None and isinstance(result, list):
        rows = sum(len(frame) for frame in result)
    elif rows is None:
        rows = result if isinstance(result, int) else len(result)
    report.measures.append(Measure(stage, step, rows, seconds, peak_memory_mb()))
    return result


def _seconds(action: Callable[[], T]) -> tuple[float, T]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def format_report(options: BenchOptions, reports: Sequence[BackendReport]) -> list[str]:
    """The benchmark's printed report: per backend, the steps, the references, the whole run."""
    lines = [
        f"credit-risk bench: {options.accounts:,} accounts x {options.months} months "
        f"(seed {options.seed}); ratios compare timings taken in this one run"
    ]
    for report in reports:
        lines += [
            "",
            f"== {report.backend}: {report.database}, {report.snapshot_rows:,} snapshot rows",
        ]
        lines += _step_lines(report)
        lines += _reference_lines(report)
        if report.run is not None:
            lines += _run_lines(report.run)
    return lines


def _step_lines(report: BackendReport) -> list[str]:
    lines = [f"{'stage':<9}{'step':<48}{'rows':>12}{'seconds':>9}{'rows/s':>11}{'peak MB':>9}"]
    for measure in report.measures:
        lines.append(
            f"{measure.stage:<9}{measure.step[:47]:<48}{measure.rows:>12,}"
            f"{measure.seconds:>9.2f}{_rate(measure.rows_per_second):>11}{measure.peak_mb:>9,.0f}"
        )
    totals = [
        f"{stage} {report.stage_seconds(stage):.1f} s"
        for stage in STAGE_ORDER
        if any(measure.stage == stage for measure in report.measures)
    ]
    return [*lines, f"seconds by stage: {', '.join(totals)}"]


def _reference_lines(report: BackendReport) -> list[str]:
    lines = ["", f"{'reference on the same data':<58}{'ref s':>8}{'ours s':>8}{'ratio':>9}  target"]
    for reference in report.references:
        floor = (
            "n/a" if reference.reference_seconds is None else f"{reference.reference_seconds:.2f}"
        )
        ratio = "n/a" if reference.ratio is None else f"{reference.ratio:.2f}x"
        verdict = {True: " (met)", False: " (NOT met)", None: ""}[reference.met]
        lines.append(
            f"{reference.name[:57]:<58}{floor:>8}{reference.ours_seconds:>8.2f}{ratio:>9}  "
            f"{reference.target}{verdict}"
        )
        if reference.note:
            lines.append(f"    {reference.note}")
    return lines


def _run_lines(run: RunMeasure) -> list[str]:
    header = (
        f"whole `credit-risk run` (child process): {run.seconds:.1f} s, peak memory "
        f"{run.peak_mb:,.0f} MB, exit status {run.exit_status}"
    )
    if run.exit_status != 0:
        return ["", header, run.message]
    shares = [
        f"{stage} {seconds:.1f} s ({seconds / run.seconds:.0%})"
        for stage, seconds in run.stage_seconds.items()
        if seconds > 0
    ]
    # The stages' own Python; asset checks run as SQL in the database and count as other steps.
    computation = sum(
        run.stage_seconds.get(stage, 0.0) for stage in STAGE_ORDER if stage not in ("read", "write")
    )
    other = run.stage_seconds.get(OTHER_STEPS, 0.0)
    steps = [
        f"{step.step} {step.seconds:.1f} s ({step.compute_seconds:.1f} s without reads and "
        f"writes), peak {step.peak_mb:,.0f} MB"
        for step in run.steps
    ]
    return [
        "",
        header,
        "  " + "; ".join(shares),
        f"  data movement (read + write) {run.data_movement_seconds / run.seconds:.0%} of the "
        f"run; the stages' computation in Python {computation / run.seconds:.0%}; other steps "
        f"(asset checks in SQL, validation tables) {other / run.seconds:.0%}",
        "  steps: " + "; ".join(steps),
    ]


def _rate(rows_per_second: float) -> str:
    if rows_per_second >= 1e6:
        return f"{rows_per_second / 1e6:.2f} M"
    if rows_per_second >= 1e3:
        return f"{rows_per_second / 1e3:.0f} k"
    return f"{rows_per_second:.0f}"


def report_json(options: BenchOptions, reports: Sequence[BackendReport]) -> str:
    """The options and reports as JSON, for tables built from several runs."""
    return json.dumps(
        {"options": asdict(options), "reports": [asdict(report) for report in reports]}, indent=2
    )


def _describe(databases: BenchDatabases, server_url: str) -> str:
    if databases.backend == "sqlite":
        return f"SQLite {sqlite3.sqlite_version} files"
    engine = sa.create_engine(databases.source_url)
    try:
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT VERSION()").scalar()
    finally:
        engine.dispose()
    return f"MySQL {version} at {redact_url(server_url)}"


if __name__ == "__main__":
    sys.exit(_measure_run_in_this_process(Path(sys.argv[1])))
