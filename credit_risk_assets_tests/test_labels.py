"""Default labels against brute-force references, and notebook mode against the notebook's code."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from credit_risk_assets.compute.features import account_features, account_streaks
from credit_risk_assets.compute.labels import (
    DefaultRule,
    ImmatureMonthError,
    forward_labels,
    last_mature_month,
    notebook_labels,
)
from credit_risk_assets.tables import DEFAULT_FLAGS
from credit_risk_assets_tests.snapshots import histories, make_snapshot, month_count

FIRST_MONTH = "2024-01-01"
LAST_MONTH = "2025-02-01"
TODAY = date(2025, 3, 10)  # 2025-02 is the last complete month
LABEL_DTYPES = {
    "as_of_month": "datetime64[ns]",
    "account_id": "int64",
    "default_flag": "int64",
    "perf_months_observed": "int64",
    "perf_max_dpd": "int64",
    "perf_delinquency_ratio": "float64",
    "perf_default_like_cycles": "int64",
}


@pytest.fixture(scope="module")
def snapshot() -> pd.DataFrame:
    """Fourteen months of 150 accounts with gaps, late starts, early stops and 90+ DPD."""
    return make_snapshot(accounts=150, months=14, first_month=FIRST_MONTH, seed=11)


def brute_force_flag(rows: list[tuple[int, int]], rule: DefaultRule) -> dict:
    """The default flag and perf_* figures of a list of (days_past_due, is_delinquent) rows."""
    dpds = [dpd for dpd, _ in rows]
    ratio = sum(flag for _, flag in rows) / len(rows)
    default_like = sum(1 for dpd in dpds if dpd >= 90)
    flagged = (
        default_like >= rule.min_default_like_cycles
        or max(dpds) >= rule.min_max_dpd
        or ratio >= rule.min_delinquency_ratio
    )
    return {
        "default_flag": int(flagged),
        "perf_months_observed": len(rows),
        "perf_max_dpd": max(dpds),
        "perf_delinquency_ratio": ratio,
        "perf_default_like_cycles": default_like,
    }


def brute_force_forward_labels(
    snapshot: pd.DataFrame, as_of: str, horizon: int, rule: DefaultRule
) -> pd.DataFrame:
    """Labels of accounts seen at T below 90 DPD, over their rows in months T+1..T+H."""
    as_of_count = month_count(as_of)
    records = []
    for account, rows in sorted(histories(snapshot).items()):
        if as_of_count not in rows or rows[as_of_count][0] >= 90:
            continue
        performance = [
            rows[month]
            for month in range(as_of_count + 1, as_of_count + horizon + 1)
            if month in rows
        ]
        if performance:
            records.append(
                {
                    "as_of_month": pd.Timestamp(as_of),
                    "account_id": account,
                    **brute_force_flag(performance, rule),
                }
            )
    return _frame(records)


def brute_force_notebook_labels(
    snapshot: pd.DataFrame, as_of: str, lookback: int, rule: DefaultRule
) -> pd.DataFrame:
    """Labels of every account with rows in the lookback window, over those rows."""
    as_of_count = month_count(as_of)
    records = []
    for account, rows in sorted(histories(snapshot).items()):
        first = as_of_count - lookback + 1 if lookback else min(rows)
        window = [rows[month] for month in sorted(rows) if first <= month <= as_of_count]
        if window:
            records.append(
                {
                    "as_of_month": pd.Timestamp(as_of),
                    "account_id": account,
                    **brute_force_flag(window, rule),
                }
            )
    return _frame(records)


def _frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records, columns=list(LABEL_DTYPES)).astype(LABEL_DTYPES)


# The notebook's rule, and a stricter one on counts with looser DPD and ratio thresholds.
RULES = [
    DefaultRule(),
    DefaultRule(min_default_like_cycles=2, min_max_dpd=60, min_delinquency_ratio=0.5),
]


@pytest.mark.parametrize("rule", RULES, ids=["notebook_rule", "custom_rule"])
@pytest.mark.parametrize("horizon", [1, 3, 6])
@pytest.mark.parametrize("as_of", ["2024-01-01", "2024-05-01", "2024-08-01"])
def test_forward_labels_equal_the_brute_force_reference(snapshot, as_of, horizon, rule):
    """Population, flag and perf_* columns equal the loop over accounts and months."""
    labels = forward_labels(snapshot, [as_of], horizon, rule, today=TODAY)

    expected = brute_force_forward_labels(snapshot, as_of, horizon, rule)
    pd.testing.assert_frame_equal(labels, expected)


def test_forward_labels_leave_out_accounts_in_default_or_unseen_after_t(snapshot):
    """Accounts at 90+ DPD at T, and accounts with no row after T, get no label."""
    as_of = "2024-06-01"

    labels = forward_labels(snapshot, [as_of], 6, DefaultRule(), today=TODAY)

    at_as_of = snapshot[snapshot["billing_cycle"] == pd.Timestamp(as_of)]
    later = snapshot[snapshot["billing_cycle"] > pd.Timestamp(as_of)]
    in_default = at_as_of.loc[at_as_of["days_past_due"] >= 90, "account_id"]
    unseen_after = at_as_of.loc[~at_as_of["account_id"].isin(later["account_id"]), "account_id"]
    assert len(in_default) > 0
    assert len(unseen_after) > 0
    assert not labels["account_id"].isin(in_default).any()
    assert not labels["account_id"].isin(unseen_after).any()
    assert set(labels["default_flag"]) == {0, 1}


def test_an_account_at_exactly_90_dpd_at_t_is_already_in_default():
    """89 DPD at T is still in the population; 90 DPD at T is not."""
    snapshot = make_snapshot(
        accounts=2,
        months=3,
        seed=1,
        gap_rate=0.0,
        late_start_rate=0.0,
        early_stop_rate=0.0,
        shuffle=False,
    )
    at_t = snapshot["billing_cycle"] == pd.Timestamp(FIRST_MONTH)
    snapshot.loc[at_t, "days_past_due"] = [89, 90]

    labels = forward_labels(snapshot, [FIRST_MONTH], 1, DefaultRule(), today=TODAY)

    assert labels["account_id"].tolist() == [snapshot.loc[at_t, "account_id"].iloc[0]]


def test_the_last_mature_month_is_labelled_from_a_complete_window(snapshot):
    """With H = 6 and today in 2025-03, T = 2024-08 is labelled over 2024-09..2025-02."""
    labels = forward_labels(snapshot, ["2024-08-01"], 6, DefaultRule(), today=TODAY)

    assert labels["perf_months_observed"].max() == 6
    expected = brute_force_forward_labels(snapshot, "2024-08-01", 6, DefaultRule())
    pd.testing.assert_frame_equal(labels, expected)


def test_several_as_of_months_stack_in_month_then_account_order(snapshot):
    """Months given out of order, rows in warehouse order: sorted by as_of_month, account_id."""
    in_warehouse_order = snapshot.sort_values(["billing_cycle", "account_id"], ignore_index=True)

    labels = forward_labels(
        in_warehouse_order, ["2024-04-01", "2024-02-01"], 3, DefaultRule(), TODAY
    )

    expected = pd.concat(
        [
            brute_force_forward_labels(snapshot, month, 3, DefaultRule())
            for month in ("2024-02-01", "2024-04-01")
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(labels, expected)


def test_an_immature_month_is_refused(snapshot):
    """A month whose performance window reaches the current month raises, naming both months."""
    with pytest.raises(ImmatureMonthError, match=r"2024-09.*2024-08") as raised:
        forward_labels(snapshot, ["2024-03-01", "2024-09-01"], 6, DefaultRule(), today=TODAY)

    assert raised.value.month == pd.Timestamp("2024-09-01")
    assert raised.value.last_mature == pd.Timestamp("2024-08-01")


def test_horizon_zero_is_refused_by_forward_labels(snapshot):
    """Forward labels need a performance window; notebook mode has its own function."""
    with pytest.raises(ValueError, match="notebook_labels"):
        forward_labels(snapshot, ["2024-03-01"], 0, DefaultRule(), today=TODAY)


@pytest.mark.parametrize(
    ("today", "horizon", "expected"),
    [
        # Mid-month: the current month does not count, so 2025-02 is the last complete one.
        (date(2025, 3, 10), 6, "2024-08-01"),
        (date(2025, 3, 10), 1, "2025-01-01"),
        # The first and the last day of a month give the same answer.
        (date(2025, 3, 1), 3, "2024-11-01"),
        (date(2025, 3, 31), 3, "2024-11-01"),
        # Across a year boundary.
        (date(2025, 1, 15), 3, "2024-09-01"),
        (date(2025, 1, 15), 12, "2023-12-01"),
        # No performance window: the last complete month itself.
        (date(2025, 3, 10), 0, "2025-02-01"),
    ],
)
def test_last_mature_month_examples(today, horizon, expected):
    """The latest T with T + H no later than the month before today's month."""
    assert last_mature_month(today, horizon) == pd.Timestamp(expected)


@pytest.mark.parametrize(
    ("counts", "max_dpd", "ratio", "expected"),
    [
        ((0, 0, 0, 1), (0, 89, 90, 10), (0.0, 0.59, 0.2, 0.6), [0, 0, 1, 1]),
        ((1, 0), (30, 0), (0.1, 0.0), [1, 0]),
    ],
)
def test_default_rule_flags_when_any_threshold_is_met(counts, max_dpd, ratio, expected):
    """Each threshold alone flags, and each is inclusive (>=)."""
    flags = DefaultRule().flag(np.array(counts), np.array(max_dpd), np.array(ratio))

    assert flags.tolist() == expected
    assert flags.dtype == np.int64


@pytest.mark.parametrize("lookback", [0, 1, 3, 6])
@pytest.mark.parametrize("as_of", ["2024-03-01", LAST_MONTH])
def test_notebook_labels_equal_the_brute_force_reference(snapshot, as_of, lookback):
    """Notebook mode flags each account over its own lookback rows."""
    labels = notebook_labels(snapshot, [as_of], lookback, DefaultRule())

    expected = brute_force_notebook_labels(snapshot, as_of, lookback, DefaultRule())
    pd.testing.assert_frame_equal(labels, expected)


def test_labels_have_the_declared_columns(snapshot):
    """Both label functions give the default_flags table's columns in its order."""
    forward = forward_labels(snapshot, ["2024-03-01"], 3, DefaultRule(), today=TODAY)
    notebook = notebook_labels(snapshot, [LAST_MONTH], 0, DefaultRule())

    assert tuple(forward.columns) == DEFAULT_FLAGS.column_names
    assert tuple(notebook.columns) == DEFAULT_FLAGS.column_names


def notebook_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The notebook's feature, streak and flag cells (In [4], [5], [6]), unchanged but for
    reading `df` from a frame instead of MySQL."""
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

    features_df["default_flag"] = np.where(
        (features_df["default_like_cycles"] >= 1)
        | (features_df["max_dpd"] >= 90)
        | (features_df["delinquency_ratio"] >= 0.6),
        1,
        0,
    )
    return features_df


# The notebook's cell drops a column in place, which pandas 3.1 deprecates; the cell is kept
# as written, so its warning is expected.
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_notebook_mode_reproduces_the_notebooks_numbers():
    """With lookback 0 and T = the last month, features, streak and flag equal the notebook's.

    The data has no gaps: the notebook's streak counts consecutive rows, not consecutive
    months, so with gaps it would join runs across a missing month that ours keeps apart.
    Accounts may still start late or stop early, which leaves no gap inside a history.
    """
    df = make_snapshot(accounts=300, months=12, first_month=FIRST_MONTH, seed=5, gap_rate=0.0)
    last_month = df["billing_cycle"].max()
    notebook = notebook_cells(df).set_index("account_id")

    features = account_features(df, [last_month], 0).set_index("account_id")
    streaks = account_streaks(df, [last_month], 0).set_index("account_id")
    labels = notebook_labels(df, [last_month], 0, DefaultRule()).set_index("account_id")

    assert features.index.equals(notebook.index)
    for column in ("avg_dpd", "delinquency_ratio"):
        np.testing.assert_allclose(features[column], notebook[column], rtol=1e-12)
    for column in ("max_dpd", "severe_delinquency_count", "default_like_cycles"):
        assert features[column].tolist() == notebook[column].astype(int).tolist()
    assert streaks.index.equals(notebook.index)
    assert (
        streaks["delinquency_streak"].tolist()
        == notebook["delinquency_streak"].astype(int).tolist()
    )
    assert labels.index.equals(notebook.index)
    assert labels["default_flag"].tolist() == notebook["default_flag"].tolist()
    assert set(notebook["default_flag"]) == {0, 1}

    # The notebook's recent_avg_dpd_3m is its avg_dpd; ours is the mean of months T-2..T.
    differs = features["recent_avg_dpd_3m"] != notebook["recent_avg_dpd_3m"]
    assert differs.any()
    last = month_count(last_month)
    for account, rows in histories(df).items():
        recent = [dpd for month, (dpd, _) in rows.items() if month >= last - 2]
        expected = sum(recent) / len(recent) if recent else 0.0
        assert features.loc[account, "recent_avg_dpd_3m"] == expected
