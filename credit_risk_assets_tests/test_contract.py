"""The source data contract: each rule rejects its rows, and only them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from credit_risk_assets.compute.contract import (
    DEFAULT_BUCKET_SCALE,
    ContractResult,
    SourceContractError,
    SourceSchemaError,
    bucket_for_dpd,
    check_source_contract,
)
from credit_risk_assets.tables import SOURCE_COLUMNS
from credit_risk_assets_tests.snapshots import bucket_of, make_snapshot

MONTH = pd.Timestamp("2024-03-01")
NEXT_MONTH = pd.Timestamp("2024-04-01")
COLUMNS = [column.name for column in SOURCE_COLUMNS]
REQUIRED = [column.name for column in SOURCE_COLUMNS if not column.nullable]


@pytest.fixture
def month_frame() -> pd.DataFrame:
    """One valid billing month, 2024-03, of 40 accounts, some late and some unpaid."""
    frame = make_snapshot(
        accounts=40,
        months=3,
        first_month="2024-01-01",
        seed=3,
        gap_rate=0.0,
        late_start_rate=0.0,
        early_stop_rate=0.0,
        shuffle=False,
    )
    march = frame[frame["billing_cycle"] == MONTH].reset_index(drop=True)
    assert (march["days_past_due"] > 0).any()
    assert march["payment_date"].isna().any()
    return march


def first_row(frame: pd.DataFrame, condition: pd.Series) -> int:
    """Position of the first row meeting a condition."""
    return int(np.flatnonzero(condition.to_numpy())[0])


def set_value(frame: pd.DataFrame, row: int, column: str, value: object) -> pd.DataFrame:
    """A copy of the frame with one cell changed; the column becomes object to hold any value."""
    changed = frame.copy()
    changed[column] = changed[column].astype(object)
    changed.iloc[row, changed.columns.get_loc(column)] = value
    return changed


def on_time_paid_row(frame: pd.DataFrame) -> int:
    """A row paid before its due date with 0 days past due."""
    return first_row(frame, (frame["days_past_due"] == 0) & frame["payment_date"].notna())


def late_paid_row(frame: pd.DataFrame) -> int:
    """A row paid after its due date, with days past due to match."""
    return first_row(frame, (frame["days_past_due"] > 0) & frame["payment_date"].notna())


def break_negative_dpd(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    row = on_time_paid_row(frame)
    return set_value(frame, row, "days_past_due", -1), [row]


def break_duplicate_key(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    # An exact copy of a row: both copies go, since the contract cannot tell which is right.
    copy = frame.iloc[[4]].copy()
    return pd.concat([frame, copy], ignore_index=True), [4, len(frame)]


def break_month_start(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    return set_value(frame, 2, "billing_cycle", pd.Timestamp("2024-03-15")), [2]


def break_partition(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    return set_value(frame, 2, "billing_cycle", NEXT_MONTH), [2]


def break_is_delinquent(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    row = late_paid_row(frame)
    return set_value(frame, row, "is_delinquent", 0), [row]


def break_bucket(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    row = on_time_paid_row(frame)
    return set_value(frame, row, "delinquency_bucket", "Mild"), [row]


def break_payment_days(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    # Paid ten days late but reported on time.
    row = on_time_paid_row(frame)
    paid_late = frame["due_date"].iloc[row] + pd.Timedelta(days=10)
    return set_value(frame, row, "payment_date", paid_late), [row]


def break_late_payment_days(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    # Reported one day more than the payment date says.
    row = late_paid_row(frame)
    wrong = frame["payment_date"].iloc[row] - pd.Timedelta(days=1)
    return set_value(frame, row, "payment_date", wrong), [row]


CASES: dict[str, tuple[Callable, str]] = {
    "negative_days_past_due": (break_negative_dpd, "negative_days_past_due"),
    "duplicate_key": (break_duplicate_key, "duplicate_key"),
    "billing_cycle_not_month_start": (break_month_start, "billing_cycle_not_month_start"),
    "billing_cycle_outside_partition": (break_partition, "billing_cycle_outside_partition"),
    "is_delinquent_mismatch": (break_is_delinquent, "is_delinquent_mismatch"),
    "bucket_mismatch": (break_bucket, "bucket_mismatch"),
    "payment_days_mismatch_on_time": (break_payment_days, "payment_days_mismatch"),
    "payment_days_mismatch_late": (break_late_payment_days, "payment_days_mismatch"),
}


def assert_only_rows_rejected(
    result: ContractResult, frame: pd.DataFrame, base: pd.DataFrame, rows: list[int], rule: str
) -> None:
    """The given rows are rejected with `rule` alone, as they came in; the rest pass unchanged."""
    assert result.rejects[["source_row", "rule"]].values.tolist() == [[row, rule] for row in rows]
    rejected_as_given = result.rejects[COLUMNS].astype(object)
    expected_as_given = frame.iloc[rows][COLUMNS].reset_index(drop=True).astype(object)
    pd.testing.assert_frame_equal(rejected_as_given, expected_as_given)

    kept = [row for row in range(len(base)) if row not in rows]
    pd.testing.assert_frame_equal(result.valid, base.iloc[kept].reset_index(drop=True))


@pytest.mark.parametrize("case", list(CASES))
def test_a_row_breaking_a_rule_is_rejected_with_that_rule(month_frame, case):
    """One bad row of each kind is rejected with its rule; the other rows pass unchanged."""
    breaker, rule = CASES[case]
    frame, rows = breaker(month_frame)

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert_only_rows_rejected(result, frame, month_frame, rows, rule)


@pytest.mark.parametrize("column", REQUIRED)
def test_a_null_in_a_required_column_is_rejected(month_frame, column):
    """A null in any not-null column rejects the row as null_required, and for no other rule."""
    frame = set_value(month_frame, 3, column, None)

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert_only_rows_rejected(result, frame, month_frame, [3], "null_required")


def test_an_unpaid_cycle_may_have_no_payment_date(month_frame):
    """payment_date is the one nullable column: unpaid cycles pass."""
    result = check_source_contract(month_frame, MONTH, NEXT_MONTH)

    assert result.rejects.empty
    assert result.valid["payment_date"].isna().any()
    pd.testing.assert_frame_equal(result.valid, month_frame)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as SQLite hands it back: dates as 'YYYY-MM-DD' text, NULL as None."""
    text = frame.copy()
    for column in ("billing_cycle", "due_date", "payment_date"):
        formatted = frame[column].dt.strftime("%Y-%m-%d").astype(object)
        text[column] = formatted.where(frame[column].notna(), None)
    return text


def as_date_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as PyMySQL hands it back: dates as datetime.date objects, NULL as None."""
    objects = frame.copy()
    for column in ("billing_cycle", "due_date", "payment_date"):
        dates = pd.Series(frame[column].dt.date, dtype=object)
        objects[column] = dates.where(frame[column].notna(), None)
    return objects


@pytest.mark.parametrize("reader", [as_text, as_date_objects], ids=["sqlite_text", "mysql_dates"])
def test_dates_as_text_or_date_objects_give_the_same_valid_frame(month_frame, reader):
    """Whatever the driver returns for dates, valid rows come out in the frame conventions."""
    result = check_source_contract(reader(month_frame), MONTH.date(), NEXT_MONTH.date())

    assert result.rejects.empty
    pd.testing.assert_frame_equal(result.valid, month_frame)


# Each case puts one unreadable value into one row of a column whose other values read fine.
UNPARSEABLE = [
    ("due_date", "2024-02-30"),  # no such day
    ("payment_date", "2024-13-01"),  # no such month
    ("billing_cycle", "March"),
    ("due_date", pd.Timestamp("2024-03-20 14:30")),  # a time of day in a date column
    ("payment_date", "9999-12-31"),  # an "open end" past what a frame's dates hold
    ("due_date", "0001-01-01"),
    ("days_past_due", "abc"),
    ("days_past_due", 2.5),  # not a whole number of days
    ("account_id", "12x"),
    ("is_delinquent", "yes"),
]


@pytest.mark.parametrize(("column", "value"), UNPARSEABLE)
def test_an_unreadable_value_rejects_its_row_not_the_month(month_frame, column, value):
    """One value that cannot be read as its column's kind rejects only its row."""
    row = on_time_paid_row(month_frame)
    frame = set_value(as_text(month_frame), row, column, value)

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert_only_rows_rejected(result, frame, month_frame, [row], "unparseable_value")


def test_a_typed_date_past_what_frames_hold_rejects_its_row(month_frame):
    """A MySQL DATE of 9999-12-31 comes from the reader as datetime64[us]; only its row fails."""
    row = on_time_paid_row(month_frame)
    frame = month_frame.astype(
        dict.fromkeys(["billing_cycle", "due_date", "payment_date"], "M8[us]")
    )
    frame.loc[row, "payment_date"] = pd.Timestamp("9999-12-31")

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert result.rule_counts == {"unparseable_value": 1}
    assert result.rejects["source_row"].tolist() == [row]
    assert result.rejects["payment_date"].tolist() == [pd.Timestamp("9999-12-31")]
    pd.testing.assert_frame_equal(result.valid, month_frame.drop(index=row).reset_index(drop=True))


def test_numbers_as_text_are_read_as_numbers(month_frame):
    """A driver that returns integers as text ('12') does not make the rows invalid."""
    frame = month_frame.astype({"days_past_due": str, "account_id": str, "is_delinquent": str})

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert result.rejects.empty
    pd.testing.assert_frame_equal(result.valid, month_frame)


def test_a_missing_column_raises_a_schema_error_naming_it(month_frame):
    """A frame without a source column cannot be checked row by row."""
    frame = month_frame.drop(columns=["delinquency_bucket"])

    with pytest.raises(SourceSchemaError, match="delinquency_bucket"):
        check_source_contract(frame, MONTH, NEXT_MONTH)


def test_a_wholly_non_numeric_days_past_due_raises_a_schema_error_naming_it(month_frame):
    """Text throughout a numeric column is a wrong column, not bad rows."""
    frame = month_frame.assign(days_past_due="late")

    with pytest.raises(SourceSchemaError, match="days_past_due"):
        check_source_contract(frame, MONTH, NEXT_MONTH)


def test_numbers_in_a_date_column_raise_a_schema_error_naming_it(month_frame):
    """Integers throughout a date column are a wrong column, not epochs."""
    frame = month_frame.assign(due_date=20240320)

    with pytest.raises(SourceSchemaError, match="due_date"):
        check_source_contract(frame, MONTH, NEXT_MONTH)


def test_extra_columns_and_the_input_index_are_ignored(month_frame):
    """Only the 7 source columns come out; source_row is the position, not the index label."""
    frame, rows = break_bucket(month_frame)
    frame = frame.assign(loaded_at="2024-04-02").set_index(frame.index + 1000)

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert list(result.valid.columns) == COLUMNS
    assert result.rejects["source_row"].tolist() == rows
    assert "loaded_at" not in result.rejects.columns


def test_a_range_of_months_is_checked_as_one_partition(month_frame):
    """With a two-month range, both months' rows are inside the partition."""
    april = month_frame.assign(
        billing_cycle=NEXT_MONTH,
        due_date=month_frame["due_date"] + pd.Timedelta(days=31),
        payment_date=month_frame["payment_date"] + pd.Timedelta(days=31),
    )
    frame = pd.concat([month_frame, april], ignore_index=True)

    result = check_source_contract(frame, MONTH, pd.Timestamp("2024-05-01"))
    only_march = check_source_contract(frame, MONTH, NEXT_MONTH)

    assert result.rejects.empty
    assert only_march.rule_counts == {"billing_cycle_outside_partition": len(april)}


def several_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Two bucket mismatches, one duplicated key and one unpaid-late is_delinquent flip."""
    on_time = np.flatnonzero((frame["days_past_due"] == 0).to_numpy())
    broken = frame.copy()
    broken.loc[on_time[:2], "delinquency_bucket"] = "Severe"
    broken.loc[on_time[2], "is_delinquent"] = 1
    return pd.concat([broken, broken.iloc[[on_time[3]]]], ignore_index=True)


def test_summary_counts_rows_per_rule_and_shows_examples(month_frame):
    """rule_counts and summary() count the rejected rows of each rule."""
    frame = several_bad_rows(month_frame)

    result = check_source_contract(frame, MONTH, NEXT_MONTH)
    summary = result.summary(examples=1)

    assert result.rule_counts == {
        "duplicate_key": 2,
        "is_delinquent_mismatch": 1,
        "bucket_mismatch": 2,
    }
    assert f"5 of {len(frame)} rows" in summary
    assert "duplicate_key: 2 rows" in summary
    assert "bucket_mismatch: 2 rows" in summary
    assert "is_delinquent_mismatch: 1 row" in summary
    assert summary.count("delinquency_bucket=Severe") == 1


def test_every_input_row_is_either_valid_or_rejected(month_frame):
    """No row is lost and none is both kept and rejected."""
    frame = several_bad_rows(month_frame)

    result = check_source_contract(frame, MONTH, NEXT_MONTH)

    rejected = set(result.rejects["source_row"])
    assert len(result.valid) + len(rejected) == len(frame)
    assert result.checked_rows == len(frame)
    assert result.rejected_rows == len(rejected) == 5


def test_contract_error_carries_the_result_and_counts_per_rule(month_frame):
    """The error a caller raises names the month, counts per rule and says what to do."""
    result = check_source_contract(several_bad_rows(month_frame), MONTH, NEXT_MONTH)

    error = SourceContractError(result, MONTH)

    assert error.result is result
    assert "2024-03" in str(error)
    assert "bucket_mismatch: 2 rows" in str(error)
    assert "Correct these rows" in str(error)


def test_bucket_for_dpd_follows_the_default_scale():
    """Every value from 0 to 200 gets the bucket of the design's scale, edges included."""
    days = pd.Series(np.arange(0, 201))

    buckets = bucket_for_dpd(days)

    assert buckets.tolist() == bucket_of(days.to_numpy()).tolist()
    assert buckets[[0, 1, 30, 31, 60, 61, 89, 90]].tolist() == [
        "On-Time", "Mild", "Mild", "Moderate", "Moderate", "Severe", "Severe", "Default"
    ]  # fmt: skip


def test_bucket_for_dpd_follows_a_configured_scale():
    """A different scale moves the edges; values below the scale or missing get no bucket."""
    scale = ((0, "Current"), (15, "Late"), (45, "Very Late"))
    days = pd.Series([-1, 0, 14, 15, 44, 45, 400, None], dtype="Int64")

    buckets = bucket_for_dpd(days, scale)

    assert buckets.iloc[1:7].tolist() == [
        "Current",
        "Current",
        "Late",
        "Late",
        "Very Late",
        "Very Late",
    ]
    assert buckets.iloc[[0, 7]].isna().all()


def test_a_configured_scale_changes_which_rows_break_the_bucket_rule(month_frame):
    """Under a scale with other names, every default-scale bucket is a mismatch."""
    scale = tuple((bound, f"B{bound}") for bound, _ in DEFAULT_BUCKET_SCALE)

    result = check_source_contract(month_frame, MONTH, NEXT_MONTH, scale=scale)

    assert result.rule_counts == {"bucket_mismatch": len(month_frame)}
