"""Features and streaks against brute-force references written with plain loops and dicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_risk_assets.compute.features import (
    SnapshotKeyError,
    account_features,
    account_streaks,
    month_number,
)
from credit_risk_assets.tables import ACCOUNT_FEATURES, STREAKS
from credit_risk_assets.warehouse.schema import TableSpec
from credit_risk_assets_tests.snapshots import (
    first_of_month,
    histories,
    make_snapshot,
    month_count,
)

FIRST_MONTH = "2024-01-01"
MONTHS = 15
LAST_MONTH = "2025-03-01"
KIND_DTYPES = {"date": "datetime64[ns]", "bigint": "int64", "int": "int64", "double": "float64"}


@pytest.fixture(scope="module")
def snapshot() -> pd.DataFrame:
    """Fifteen months of 120 accounts with gaps, late starts, early stops and 90+ DPD."""
    return make_snapshot(accounts=120, months=MONTHS, first_month=FIRST_MONTH, seed=7)


def window_of(rows: dict[int, tuple[int, int]], as_of: int, lookback: int) -> dict:
    """The rows of months in the lookback window ending at as_of, by month."""
    first = as_of - lookback + 1 if lookback else min(rows)
    return {month: value for month, value in rows.items() if first <= month <= as_of}


def brute_force_features(snapshot: pd.DataFrame, as_of: str, lookback: int) -> pd.DataFrame:
    """The features of section 3, one account at a time."""
    as_of_count = month_count(as_of)
    records = []
    for account, rows in sorted(histories(snapshot).items()):
        window = window_of(rows, as_of_count, lookback)
        if not window:
            continue
        dpds = [dpd for dpd, _ in window.values()]
        flags = [flag for _, flag in window.values()]
        recent = [dpd for month, (dpd, _) in window.items() if month >= as_of_count - 2]
        records.append(
            {
                "as_of_month": pd.Timestamp(as_of),
                "account_id": account,
                "avg_dpd": sum(dpds) / len(dpds),
                "max_dpd": max(dpds),
                "delinquency_ratio": sum(flags) / len(flags),
                "severe_delinquency_count": sum(1 for dpd in dpds if dpd > 60),
                "default_like_cycles": sum(1 for dpd in dpds if dpd >= 90),
                "recent_avg_dpd_3m": sum(recent) / len(recent) if recent else 0.0,
                "months_observed": len(dpds),
                "current_dpd": window[as_of_count][0] if as_of_count in window else None,
            }
        )
    return _frame(records, ACCOUNT_FEATURES)


def brute_force_streaks(snapshot: pd.DataFrame, as_of: str, lookback: int) -> pd.DataFrame:
    """Longest and current run of delinquent calendar months, walking month by month."""
    as_of_count = month_count(as_of)
    records = []
    for account, rows in sorted(histories(snapshot).items()):
        window = window_of(rows, as_of_count, lookback)
        if not window:
            continue
        run = longest = 0
        for month in range(min(window), as_of_count + 1):
            delinquent = month in window and window[month][1] == 1
            run = run + 1 if delinquent else 0
            longest = max(longest, run)
        records.append(
            {
                "as_of_month": pd.Timestamp(as_of),
                "account_id": account,
                "delinquency_streak": longest,
                "current_streak": run,
            }
        )
    return _frame(records, STREAKS)


def _frame(records: list[dict], table: TableSpec) -> pd.DataFrame:
    """Records as a frame in the frame conventions, dtypes taken from the declared schema."""
    dtypes = {
        column.name: "Int64" if column.nullable else KIND_DTYPES[column.kind]
        for column in table.columns
    }
    return pd.DataFrame.from_records(records, columns=list(dtypes)).astype(dtypes)


def test_generated_snapshot_has_the_cases_the_references_must_handle(snapshot):
    """The test data holds gaps, unpaid cycles, 90+ DPD, late starts and early stops."""
    by_account = histories(snapshot)
    first, last = month_count(FIRST_MONTH), month_count(LAST_MONTH)

    with_gaps = [rows for rows in by_account.values() if max(rows) - min(rows) + 1 > len(rows)]
    assert with_gaps
    assert snapshot["payment_date"].isna().any()
    assert (snapshot["days_past_due"] >= 90).any()
    assert any(min(rows) > first for rows in by_account.values())
    assert any(max(rows) < last for rows in by_account.values())


# Lookbacks: 0 (all history), 1 (T alone, shorter than the 3-month recent window), 2, the
# default 6, and 15 (the whole snapshot). As-of months: the first month, one in the middle with
# later rows to ignore, the last month, and one after the data ends.
LOOKBACKS = [0, 1, 2, 6, 15]
AS_OF_MONTHS = ["2024-01-01", "2024-07-01", LAST_MONTH, "2025-05-01"]


@pytest.mark.parametrize("lookback", LOOKBACKS)
@pytest.mark.parametrize("as_of", AS_OF_MONTHS)
def test_features_equal_the_brute_force_reference(snapshot, as_of, lookback):
    """Every feature of every account equals the loop-by-loop computation."""
    features = account_features(snapshot, [pd.Timestamp(as_of)], lookback)

    pd.testing.assert_frame_equal(features, brute_force_features(snapshot, as_of, lookback))


@pytest.mark.parametrize("lookback", LOOKBACKS)
@pytest.mark.parametrize("as_of", AS_OF_MONTHS)
def test_streaks_equal_the_brute_force_reference(snapshot, as_of, lookback):
    """Longest and current delinquency runs equal the month-by-month walk."""
    streaks = account_streaks(snapshot, [pd.Timestamp(as_of)], lookback)

    pd.testing.assert_frame_equal(streaks, brute_force_streaks(snapshot, as_of, lookback))


def test_several_as_of_months_stack_in_month_then_account_order(snapshot):
    """Months given out of order and repeated come back once each, sorted."""
    months = ["2024-09-01", "2024-03-01", "2024-09-01"]

    features = account_features(snapshot, months, 3)
    streaks = account_streaks(snapshot, months, 3)

    expected_features = pd.concat(
        [brute_force_features(snapshot, month, 3) for month in ("2024-03-01", "2024-09-01")],
        ignore_index=True,
    )
    expected_streaks = pd.concat(
        [brute_force_streaks(snapshot, month, 3) for month in ("2024-03-01", "2024-09-01")],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(features, expected_features)
    pd.testing.assert_frame_equal(streaks, expected_streaks)


@pytest.mark.parametrize("lookback", [0, 1, 6])
def test_rows_in_warehouse_order_give_the_same_result(snapshot, lookback):
    """Rows sorted by (billing_cycle, account_id), as the warehouse reads them, change nothing."""
    in_warehouse_order = snapshot.sort_values(["billing_cycle", "account_id"], ignore_index=True)
    months = ["2024-04-01", "2024-11-01", LAST_MONTH]

    features = account_features(in_warehouse_order, months, lookback)
    streaks = account_streaks(in_warehouse_order, months, lookback)

    pd.testing.assert_frame_equal(
        features,
        pd.concat([brute_force_features(snapshot, m, lookback) for m in months], ignore_index=True),
    )
    pd.testing.assert_frame_equal(
        streaks,
        pd.concat([brute_force_streaks(snapshot, m, lookback) for m in months], ignore_index=True),
    )


def test_recent_average_differs_from_the_window_average(snapshot):
    """recent_avg_dpd_3m is the 3-month mean, not the notebook's all-rows mean."""
    features = account_features(snapshot, [LAST_MONTH], 0)

    assert (features["recent_avg_dpd_3m"] != features["avg_dpd"]).any()


def test_an_as_of_month_before_the_data_gives_no_rows(snapshot):
    """Accounts without rows in the window are not in the population."""
    features = account_features(snapshot, ["2023-06-01"], 6)
    streaks = account_streaks(snapshot, ["2023-06-01"], 6)

    assert features.empty
    assert list(features.columns) == list(ACCOUNT_FEATURES.column_names)
    assert streaks.empty
    assert list(streaks.columns) == list(STREAKS.column_names)


def test_a_repeated_account_month_is_refused(snapshot):
    """A snapshot that breaks the one-row-per-cycle contract raises instead of double counting."""
    doubled = pd.concat([snapshot, snapshot.iloc[[5]]], ignore_index=True)
    account = snapshot["account_id"].iloc[5]

    with pytest.raises(SnapshotKeyError, match=f"account {account}"):
        account_features(doubled, [LAST_MONTH], 6)
    with pytest.raises(SnapshotKeyError, match=f"account {account}"):
        account_streaks(doubled, [LAST_MONTH], 6)


def test_a_mid_month_as_of_date_is_refused(snapshot):
    """As-of months are first days of months; any other date is a caller's mistake."""
    with pytest.raises(ValueError, match="2024-03-15"):
        account_features(snapshot, ["2024-03-15"], 6)


def test_month_number_counts_months_across_years():
    """Consecutive calendar months get consecutive numbers, whatever the day or the year."""
    dates = pd.Series(pd.to_datetime(["2023-12-31", "2024-01-01", "2024-01-20", "2024-02-01"]))

    assert month_number(dates).tolist() == [2023 * 12 + 11, 2024 * 12, 2024 * 12, 2024 * 12 + 1]


# Random histories: up to six accounts, each with a set of months in a 20-month range (so with
# gaps) and a days-past-due value per month; delinquent when the value is above zero.
random_histories = st.dictionaries(
    keys=st.integers(1, 6),
    values=st.dictionaries(st.integers(0, 19), st.integers(0, 130), min_size=1),
    min_size=1,
)


def frame_of(history: dict[int, dict[int, int]]) -> pd.DataFrame:
    """A snapshot frame with the columns the features read, from account -> month -> DPD."""
    base = month_count("2024-01-01")
    records = [
        {
            "account_id": account,
            "billing_cycle": first_of_month(base + month),
            "days_past_due": dpd,
            "is_delinquent": int(dpd > 0),
        }
        for account, months in history.items()
        for month, dpd in months.items()
    ]
    frame = pd.DataFrame.from_records(records)
    return frame.astype({"billing_cycle": "datetime64[ns]", "account_id": "int64"})


@settings(max_examples=300, deadline=None)
@given(
    history=random_histories,
    as_of_offset=st.integers(0, 21),
    lookback=st.integers(0, 8),
)
def test_streaks_match_brute_force_on_random_histories(history, as_of_offset, lookback):
    """On any history with gaps, streaks equal the month-by-month walk."""
    snapshot = frame_of(history)
    as_of = first_of_month(month_count("2024-01-01") + as_of_offset).strftime("%Y-%m-%d")

    streaks = account_streaks(snapshot, [as_of], lookback)

    pd.testing.assert_frame_equal(streaks, brute_force_streaks(snapshot, as_of, lookback))


@settings(max_examples=150, deadline=None)
@given(
    history=random_histories,
    as_of_offset=st.integers(0, 21),
    lookback=st.integers(0, 8),
)
def test_features_match_brute_force_on_random_histories(history, as_of_offset, lookback):
    """On any history with gaps, features equal the loop-by-loop computation."""
    snapshot = frame_of(history)
    as_of = first_of_month(month_count("2024-01-01") + as_of_offset).strftime("%Y-%m-%d")

    features = account_features(snapshot, [as_of], lookback)

    pd.testing.assert_frame_equal(features, brute_force_features(snapshot, as_of, lookback))


def test_feature_dtypes_follow_the_frame_conventions(snapshot):
    """Integers are int64, current_dpd nullable Int64, ratios float64, months datetime64[ns]."""
    features = account_features(snapshot, [LAST_MONTH], 6)

    assert features.dtypes.astype(str).to_dict() == {
        "as_of_month": "datetime64[ns]",
        "account_id": "int64",
        "avg_dpd": "float64",
        "max_dpd": "int64",
        "delinquency_ratio": "float64",
        "severe_delinquency_count": "int64",
        "default_like_cycles": "int64",
        "recent_avg_dpd_3m": "float64",
        "months_observed": "int64",
        "current_dpd": "Int64",
    }
    assert features["current_dpd"].isna().any()
    assert np.all(features["months_observed"] <= 6)
