"""Load: 20 back-to-back runs and a 24-month backfill in one process, with stable memory.

The runs use the embedded default (SQLite) and the default sample data (1,000 accounts):
memory growth comes from the process and Dagster's instance, which do not depend on the
database, and the default keeps this test within a few minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUNS = 20
BACKFILL_MONTHS = 24

# How far the last run may end above the first, in MiB, for its peak and for the memory it
# keeps. Measured drift over 20 runs is 3-5 MiB (allocator noise); a run holding on to even
# 1 MiB of its frames would add 19 MiB by run 20, and a growing instance or cache more.
ALLOWED_GROWTH_MIB = 20


def backfill_first_month() -> str:
    """The first month of a 24-month source ending this month, as YYYY-MM."""
    first = pd.Timestamp(date.today().replace(day=1)) - pd.DateOffset(months=BACKFILL_MONTHS - 1)
    return f"{first:%Y-%m}"


def test_twenty_runs_and_a_24_month_backfill_keep_memory_stable(tmp_path: Path) -> None:
    """Every run succeeds; the last run's peak RSS stays within 20 MiB of the first's."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CREDIT_RISK_")
    }
    environment.update(
        CREDIT_RISK_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster"),
        CREDIT_RISK_FIRST_MONTH=backfill_first_month(),
    )
    report_path = tmp_path / "load.json"
    arguments = {"runs": RUNS, "backfill_months": BACKFILL_MONTHS, "report": str(report_path)}

    child = subprocess.run(
        [sys.executable, "-m", "credit_risk_assets_tests.load_runs", json.dumps(arguments)],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )

    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(report_path.read_text())
    runs, backfill = report["runs"], report["backfill"]
    first, last = runs[0]["peak_mib"], runs[-1]["peak_mib"]
    sys.stderr.write(
        f"\npeak RSS ({report['method']}): run 1 {first} MiB, run {RUNS} {last} MiB; "
        f"RSS after run 2 {runs[1]['rss_after_mib']} MiB, after run {RUNS} "
        f"{runs[-1]['rss_after_mib']} MiB; seconds per run {[run['seconds'] for run in runs]}; "
        f"24-month backfill {backfill['seconds']} s, peak {backfill['peak_mib']} MiB\n"
    )
    assert [run["status"] for run in runs] == [0] * RUNS, [run["output"] for run in runs]
    assert backfill["status"] == 0, backfill["output"]
    assert last <= first + ALLOWED_GROWTH_MIB
    # Run 1 still loads modules lazily; from run 2 on, what a run keeps should not grow.
    assert runs[-1]["rss_after_mib"] <= runs[1]["rss_after_mib"] + ALLOWED_GROWTH_MIB
    assert months_scored(tmp_path / "home" / "warehouse.db") == BACKFILL_MONTHS


def months_scored(warehouse: Path) -> int:
    """Distinct months in the score history of the warehouse file."""
    engine = sa.create_engine(f"sqlite:///{warehouse}")
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT COUNT(DISTINCT as_of_month) FROM risk_scores")
            return int(connection.execute(query).scalar())
    finally:
        engine.dispose()
