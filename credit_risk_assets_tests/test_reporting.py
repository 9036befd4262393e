"""risk_segment_summary summed by the database, on SQLite and MariaDB, against the pandas one."""

import numpy as np
import pandas as pd
import pytest

from credit_risk_assets.assets.reporting import labelled_months_in, segment_counts_in
from credit_risk_assets.compute.validation import segment_summary, summary_from_counts
from credit_risk_assets.tables import DEFAULT_FLAGS, RISK_SCORES
from credit_risk_assets.warehouse.database import WarehouseDatabase

MONTHS = pd.date_range("2025-01-01", periods=4, freq="MS")
GRADES = ["1", "3", "4", "6", "9"]


def scores_of(months: pd.DatetimeIndex, accounts: int, seed: int = 5) -> pd.DataFrame:
    """risk_scores rows: random PDs, segments and grades, some accounts in default (grade D)."""
    generator = np.random.default_rng(seed)
    rows = len(months) * accounts
    in_default = generator.random(rows) < 0.1
    pd_score = np.where(in_default, 1.0, generator.random(rows))
    return pd.DataFrame(
        {
            "as_of_month": np.repeat(months, accounts),
            "account_id": np.tile(np.arange(1, accounts + 1), len(months)),
            "pd_score": pd_score,
            "risk_segment": np.where(
                pd_score < 0.3, "Low", np.where(pd_score < 0.6, "Medium", "High")
            ),
            "credit_score": np.where(in_default, np.nan, 600.0),
            "risk_grade": np.where(in_default, "D", generator.choice(GRADES, rows)),
            "reason_code_1": None,
            "reason_code_2": None,
            "reason_code_3": None,
            "in_default": in_default.astype(int),
            "model_version": "m1",
            "avg_dpd": 0.0,
            "max_dpd": 0,
            "delinquency_ratio": 0.0,
            "delinquency_streak": 0,
        }
    )


def labels_of(scores: pd.DataFrame, months: pd.DatetimeIndex, seed: int = 6) -> pd.DataFrame:
    """default_flags rows for the performing accounts of `months`, about 1 in 5 of them left out."""
    generator = np.random.default_rng(seed)
    chosen = scores[scores["as_of_month"].isin(months) & (scores["in_default"] == 0)]
    chosen = chosen[generator.random(len(chosen)) < 0.8]
    flags = (generator.random(len(chosen)) < chosen["pd_score"]).astype(int)
    return pd.DataFrame(
        {
            "as_of_month": chosen["as_of_month"].to_numpy(),
            "account_id": chosen["account_id"].to_numpy(),
            "default_flag": flags,
            "perf_months_observed": 6,
            "perf_max_dpd": flags * 90,
            "perf_delinquency_ratio": flags * 0.5,
            "perf_default_like_cycles": flags,
        }
    )


@pytest.fixture
def warehouse(database_url: str):
    database = WarehouseDatabase(database_url)
    yield database
    database.dispose()


def database_summary(warehouse: WarehouseDatabase) -> pd.DataFrame:
    mature_months = labelled_months_in(warehouse)
    counts = segment_counts_in(warehouse, with_labels=bool(mature_months))
    return summary_from_counts(counts, mature_months)


def test_the_database_sums_equal_the_pandas_summary(warehouse: WarehouseDatabase) -> None:
    """Counts, mean and summed PDs, labelled accounts and defaults match, group by group."""
    scores = scores_of(MONTHS, accounts=300)
    labels = labels_of(scores, MONTHS[:2])
    warehouse.replace_months(RISK_SCORES, scores, MONTHS[0], MONTHS[-1] + pd.DateOffset(months=1))
    warehouse.replace_months(DEFAULT_FLAGS, labels, MONTHS[0], MONTHS[2])

    summary = database_summary(warehouse)

    expected = segment_summary(scores, labels)
    pd.testing.assert_frame_equal(summary, expected, check_exact=False, rtol=1e-12)
    assert summary.groupby("as_of_month")["is_mature"].first().tolist() == [1, 1, 0, 0]
    assert summary["observed_default_rate"].notna().sum() > 0
    assert summary.loc[summary["is_mature"] == 0, "observed_default_rate"].isna().all()


def test_before_any_label_the_summary_counts_scores_only(warehouse: WarehouseDatabase) -> None:
    """With no default_flags table yet, every month is immature and nothing is observed."""
    scores = scores_of(MONTHS[:2], accounts=50)
    warehouse.replace_months(RISK_SCORES, scores, MONTHS[0], MONTHS[2])

    summary = database_summary(warehouse)

    expected = segment_summary(scores, DEFAULT_FLAGS.empty_frame())
    pd.testing.assert_frame_equal(summary, expected, check_exact=False, rtol=1e-12)
    assert summary["is_mature"].eq(0).all()
    assert summary["labelled_accounts"].eq(0).all()


def test_an_empty_warehouse_gives_an_empty_summary(warehouse: WarehouseDatabase) -> None:
    """No risk_scores table: no rows, the declared columns."""
    summary = database_summary(warehouse)

    assert summary.empty
    assert list(summary.columns) == list(
        segment_summary(RISK_SCORES.empty_frame(), DEFAULT_FLAGS.empty_frame()).columns
    )
