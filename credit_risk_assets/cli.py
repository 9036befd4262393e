"""The `credit-risk` command: write sample data, run the whole pipeline, print a summary."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from dagster import BetaWarning, PreviewWarning

from credit_risk_assets.settings import Settings, SettingsError, load_settings, parse_month
from credit_risk_assets.tables import TABLES

EPILOG = (
    "Configuration comes from the environment: CREDIT_RISK_SOURCE_URL, "
    "CREDIT_RISK_WAREHOUSE_URL, CREDIT_RISK_SOURCE_TABLE, CREDIT_RISK_FIRST_MONTH, "
    "CREDIT_RISK_LOOKBACK_MONTHS, CREDIT_RISK_HORIZON_MONTHS, CREDIT_RISK_HOME and DAGSTER_HOME. "
    "See README.md."
)


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _month_arg(text: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(parse_month(text, "month"))
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number.")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of `credit-risk` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="credit-risk",
        description="Behavioural probability-of-default pipeline on Dagster assets.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser(
        "sample-data",
        help="write a synthetic delinquency snapshot to the source database",
        description=(
            "Write a synthetic source table (one row per account and billing month) to "
            "CREDIT_RISK_SOURCE_URL, replacing the table CREDIT_RISK_SOURCE_TABLE. Accounts "
            "carry a latent risk and move between delinquency buckets month to month."
        ),
        epilog=EPILOG,
    )
    sample.add_argument("--accounts", type=_positive, default=1000, help="accounts (1000)")
    sample.add_argument("--months", type=_positive, default=12, help="billing months (12)")
    sample.add_argument(
        "--end", type=_month_arg, default=None, help="last month, YYYY-MM (the current month)"
    )
    sample.add_argument("--seed", type=int, default=7, help="random seed (7)")

    run = commands.add_parser(
        "run",
        help="materialise every asset over the source's months and print a summary",
        description=(
            "Materialise the snapshot, features, streaks, labels, model and scores for every "
            "month the source holds (or --start..--end) on the Dagster instance in DAGSTER_HOME, "
            "then print rows per table, the model's validation figures and accounts per segment. "
            "On the embedded default with no source data, sample data is written first."
        ),
        epilog=EPILOG,
    )
    run.add_argument("--start", type=_month_arg, default=None, help="first month, YYYY-MM")
    run.add_argument("--end", type=_month_arg, default=None, help="last month, YYYY-MM")
    run.add_argument(
        "--verbose", action="store_true", help="show Dagster's run log on the terminal"
    )
    _add_bench_parser(commands)
    return parser


def _add_bench_parser(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure each stage and the whole run; print ratios to floors on the same data",
        description=(
            "Write sample data into throwaway databases (SQLite files, and databases created and "
            "dropped on the MySQL server of --mysql-url), then time each stage with rows per "
            "second and peak memory, the notebook's own feature code, the mysql client's dump "
            "(read floor) and INSERT ... SELECT copies (write floor), and a whole `credit-risk "
            "run` in a child process. Ignores CREDIT_RISK_SOURCE_URL and "
            "CREDIT_RISK_WAREHOUSE_URL. See README.md, Performance and scaling."
        ),
        epilog=EPILOG,
    )
    bench.add_argument("--accounts", type=_positive, default=100_000, help="accounts (100000)")
    bench.add_argument("--months", type=_positive, default=12, help="billing months (12)")
    bench.add_argument(
        "--backend",
        choices=("sqlite", "mysql", "both"),
        default="both",
        help="which databases to measure (both)",
    )
    bench.add_argument(
        "--mysql-url",
        default=os.environ.get(
            "CREDIT_RISK_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306"
        ),
        help="MySQL server the bench may create databases on "
        "(CREDIT_RISK_BENCH_MYSQL_URL, else mysql+pymysql://root@127.0.0.1:3306)",
    )
    bench.add_argument("--seed", type=int, default=7, help="random seed (7)")
    bench.add_argument(
        "--skip-run", action="store_true", help="do not time a whole `credit-risk run`"
    )
    bench.add_argument(
        "--compare-plain",
        action="store_true",
        help="also time the plain paths (cursor reads, executemany writes) on the same rows",
    )
    bench.add_argument("--json", type=Path, default=None, help="also write the results here")


def sample_data_command(settings: Settings, args: argparse.Namespace) -> int:
    """Write the synthetic source table and say where it went."""
    from credit_risk_assets.sample_data import generate_snapshot, write_source_table
    from credit_risk_assets.warehouse.database import redact_url

    end = args.end.date() if args.end is not None else None
    frame = generate_snapshot(args.accounts, args.months, end, args.seed)
    written = write_source_table(settings.source_url, frame, settings.source_table)
    months = frame["billing_cycle"]
    _say(
        f"Wrote {written:,} rows ({args.accounts:,} accounts, {months.min():%Y-%m}.."
        f"{months.max():%Y-%m}) to {settings.source_table} in {redact_url(settings.source_url)}"
    )
    return 0


def _ensure_dagster_home(settings: Settings) -> str:
    # Without DAGSTER_HOME Dagster uses a temporary instance, and the UI would show nothing.
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(settings.home / "dagster")
    from credit_risk_assets.automation.instance import write_local_instance_config

    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    # Local storage in DAGSTER_HOME, no telemetry, and one writer per table (pool limits).
    write_local_instance_config(home)
    return str(home)


def _ensure_embedded_source(settings: Settings) -> None:
    from credit_risk_assets.sample_data import generate_snapshot, write_source_table
    from credit_risk_assets.warehouse.source import SourceDatabase, SourceError

    if os.environ.get("CREDIT_RISK_SOURCE_URL"):
        return
    source = SourceDatabase(url=settings.source_url, table=settings.source_table)
    try:
        if source.exists() and source.row_count() > 0:
            return
    except SourceError:
        pass  # no database file yet: the sample data below creates it
    finally:
        source.dispose()
    settings.home.mkdir(parents=True, exist_ok=True)
    written = write_source_table(settings.source_url, generate_snapshot(), settings.source_table)
    _say(
        f"No source data in the embedded database: wrote {written:,} rows of sample data "
        f"(1,000 accounts, 12 months) to {settings.source_url}"
    )


def format_summary(settings: Settings, report, seconds: float) -> list[str]:
    """The lines `credit-risk run` prints after a successful run."""
    from credit_risk_assets.warehouse.database import WarehouseDatabase, redact_url

    database = WarehouseDatabase(settings.warehouse_url)
    plan = report.plan
    lines = [
        f"Materialised {len(plan.months)} months ({plan.months[0]:%Y-%m}.."
        f"{plan.months[-1]:%Y-%m}) in {len(report.run_ids)} Dagster runs, {seconds:.1f} s.",
        *(f"  skipped {stage}: {why}" for stage, why in report.skipped.items()),
        "",
        f"Tables in {redact_url(settings.warehouse_url)}:",
        *(f"  {name:<22} {database.row_count(spec):>10,} rows" for name, spec in TABLES.items()),
    ]

    model = database.read(TABLES["pd_model"])
    if len(model):
        row = model.iloc[0]
        lines += [
            "",
            f"Model {row['model_version']}: fitted on {int(row['training_rows']):,} "
            f"account-months ({row['training_first_month']:%Y-%m}.."
            f"{row['training_last_month']:%Y-%m}), default rate {row['training_default_rate']:.1%}",
            f"  {row['validation_sample'].replace('_', '-')} {row['validation_month']:%Y-%m} "
            f"({int(row['validation_rows']):,} accounts): AUC {row['auc']:.3f}  "
            f"Gini {row['gini']:.3f}  KS {row['ks']:.3f}  Brier {row['brier']:.4f}",
            *_validation_lines(database),
        ]

    latest = database.read(TABLES["account_risk_scores"])
    if len(latest):
        counts = latest["risk_segment"].value_counts()
        segments = "  ".join(f"{name} {int(counts.get(name, 0)):,}" for name in SEGMENTS)
        lines += ["", f"Accounts per segment ({latest['as_of_month'].max():%Y-%m}): {segments}"]
        grades = latest["risk_grade"].value_counts().sort_index()
        lines.append("Accounts per grade: " + "  ".join(f"{g} {n:,}" for g, n in grades.items()))
        lines += _stability_lines(database, latest["as_of_month"].max())

    lines += [
        "",
        f"Dagster runs: {', '.join(report.run_ids.values())}",
        f"See them in the UI: DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev",
    ]
    database.dispose()
    return lines


SEGMENTS = ("Low", "Medium", "High")


def _validation_lines(database) -> list[str]:
    performance = database.read(TABLES["model_performance"]).sort_values("first_month")
    lines = []
    for row in performance.itertuples(index=False):
        months = f"{row.first_month:%Y-%m}"
        if row.last_month != row.first_month:
            months += f"..{row.last_month:%Y-%m}"
        lines.append(
            f"  {row.sample.replace('_', '-')} {months} ({row.accounts:,}): AUC {row.auc:.3f}  "
            f"Brier skill {row.brier_skill:.3f}  default rate {row.base_rate:.1%} "
            f"(mean PD {row.mean_pd:.1%})"
        )
    return lines


def _stability_lines(database, month: pd.Timestamp) -> list[str]:
    stability = database.read(TABLES["score_stability"], month, month + pd.DateOffset(months=1))
    if stability.empty:
        return []
    score = stability[stability["variable"] == "pd_score"].iloc[0]
    features = stability[stability["variable"] != "pd_score"].sort_values("psi")
    worst = features.iloc[-1]
    return [
        f"Score PSI against the training sample ({month:%Y-%m}): {score['psi']:.3f} "
        f"({score['stability']}); largest feature PSI {worst['variable']} {worst['psi']:.3f}"
    ]


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run the whole pipeline on the persistent instance and print its summary."""
    from dagster import DagsterInstance

    from credit_risk_assets.runner import run_pipeline

    _ensure_dagster_home(settings)
    _ensure_embedded_source(settings)
    began = time.perf_counter()
    with DagsterInstance.get() as instance:
        report = run_pipeline(
            settings,
            instance,
            args.start,
            args.end,
            log_level="INFO" if args.verbose else "WARNING",
            tags={"credit_risk/command": "credit-risk run"},
        )
    for line in format_summary(settings, report, time.perf_counter() - began):
        _say(line)
    return 0


def bench_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark and print its report."""
    from credit_risk_assets.bench import BenchOptions, format_report, report_json, run_benchmark

    options = BenchOptions(
        accounts=args.accounts,
        months=args.months,
        backends=("sqlite", "mysql") if args.backend == "both" else (args.backend,),
        mysql_server_url=args.mysql_url,
        seed=args.seed,
        whole_run=not args.skip_run,
        compare_plain=args.compare_plain,
    )
    reports = run_benchmark(options, progress=lambda text: sys.stderr.write(f"bench: {text}\n"))
    for line in format_report(options, reports):
        _say(line)
    if args.json is not None:
        args.json.write_text(report_json(options, reports))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `credit-risk` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Beta and preview notices (single-run backfills) are for developers, not for this output.
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    commands = {"sample-data": sample_data_command, "run": run_command, "bench": bench_command}

    from credit_risk_assets.bench import BenchError
    from credit_risk_assets.runner import PipelineRunError
    from credit_risk_assets.sample_data import SampleDataError
    from credit_risk_assets.warehouse.database import (
        InvalidIdentifierError,
        UnsupportedDatabaseError,
        WarehouseError,
    )
    from credit_risk_assets.warehouse.source import SourceError

    expected_errors = (
        SettingsError,
        PipelineRunError,
        BenchError,
        WarehouseError,
        SourceError,
        SampleDataError,
        InvalidIdentifierError,
        UnsupportedDatabaseError,
    )
    try:
        settings = load_settings()
        return commands[args.command](settings, args)
    except expected_errors as error:
        sys.stderr.write(f"credit-risk {args.command}: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
