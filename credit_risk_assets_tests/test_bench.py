"""The benchmark on small data: it runs on both backends, cleans up, and checks its references."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from credit_risk_assets.bench import (
    STAGE_ORDER,
    BenchError,
    BenchOptions,
    compare_with_notebook,
    notebook_features_and_streaks,
    run_benchmark,
)
from credit_risk_assets.cli import main
from credit_risk_assets.compute.features import account_features, account_streaks

LAST = pd.Timestamp("2024-04-01")


def snapshot_with_a_gap() -> pd.DataFrame:
    """Account 1 is delinquent in Jan, Feb and Apr with March missing; account 2 has no gap."""
    gap_months = pd.to_datetime(["2024-01-01", "2024-02-01", "2024-04-01"])
    all_months = pd.date_range("2024-01-01", LAST, freq="MS")
    rows = [(1, month, 30, 1) for month in gap_months]
    rows += [
        (2, month, dpd, int(dpd > 0))
        for month, dpd in zip(all_months, [0, 45, 95, 10], strict=True)
    ]
    columns = ["account_id", "billing_cycle", "days_past_due", "is_delinquent"]
    return pd.DataFrame(rows, columns=columns).astype({"billing_cycle": "datetime64[ns]"})


def ours_like_the_notebook(snapshot: pd.DataFrame) -> pd.DataFrame:
    """Our features and streaks of the last month over all history, joined."""
    features = account_features(snapshot, [LAST], 0)
    return features.merge(account_streaks(snapshot, [LAST], 0), on=["as_of_month", "account_id"])


def test_the_notebook_comparison_allows_streak_differences_only_across_a_gap() -> None:
    """The notebook joins runs across a missing month; that account alone may differ."""
    snapshot = snapshot_with_a_gap()

    note = compare_with_notebook(
        notebook_features_and_streaks(snapshot), ours_like_the_notebook(snapshot), snapshot
    )

    assert "equal on all 1 accounts without a missing month (1 accounts with one differ" in note


@pytest.mark.parametrize("column", ["avg_dpd", "delinquency_streak"])
def test_the_notebook_comparison_refuses_a_value_that_differs(column: str) -> None:
    """A feature, or a streak on an account without a gap, that differs stops the benchmark."""
    snapshot = snapshot_with_a_gap()
    ours = ours_like_the_notebook(snapshot)
    ours.loc[ours["account_id"] == 2, column] += 1

    with pytest.raises(BenchError, match=column):
        compare_with_notebook(notebook_features_and_streaks(snapshot), ours, snapshot)


@pytest.mark.mysql
def test_the_bench_command_measures_both_backends_and_drops_its_databases(
    mysql_server: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Every stage, the notebook reference and the MySQL floors are reported; nothing is left."""
    server_url = mysql_server.url.render_as_string(hide_password=False)
    results = tmp_path / "bench.json"

    arguments = ["--accounts", "300", "--months", "9", "--mysql-url", server_url, "--skip-run"]
    # Compare with what was there before: a killed bench elsewhere may have left its own.
    existing = bench_databases(mysql_server)

    status = main(["bench", *arguments, "--json", str(results)])

    out = capsys.readouterr().out
    assert status == 0
    assert "== sqlite" in out
    assert "== mysql" in out
    assert "equal on 300 accounts" in out
    reports = json.loads(results.read_text())["reports"]
    assert [report["backend"] for report in reports] == ["sqlite", "mysql"]
    for report in reports:
        assert {m["stage"] for m in report["measures"]} == set(STAGE_ORDER)
        assert all(m["rows"] > 0 and m["peak_mb"] > 0 for m in report["measures"])
    mysql_references = {reference["name"]: reference for reference in reports[1]["references"]}
    floors = [name for name in mysql_references if name.startswith(("read:", "write:"))]
    assert len(floors) == 3
    assert all(mysql_references[name]["ratio"] > 0 for name in floors)
    assert bench_databases(mysql_server) - existing == set()


def bench_databases(server: sa.Engine) -> set[str]:
    """Names of the databases on the server that a bench run creates (crbench_*)."""
    with server.connect() as connection:
        rows = connection.execute(sa.text("SHOW DATABASES LIKE :name"), {"name": "crbench%"})
        return {row[0] for row in rows}


def test_the_whole_run_is_timed_in_a_child_process_and_split_by_stage() -> None:
    """The child's `credit-risk run` succeeds; its stages add up to its wall-clock time."""
    options = BenchOptions(accounts=1000, months=12, backends=("sqlite",), whole_run=True)

    [report] = run_benchmark(options)

    run = report.run
    assert run is not None
    assert run.exit_status == 0, run.message
    assert run.peak_mb > 100
    assert run.stage_seconds["write"] > 0
    assert run.stage_seconds["features"] > 0
    assert sum(run.stage_seconds.values()) == pytest.approx(run.seconds)
