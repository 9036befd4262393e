"""Tests of the scores: segments, points, grades, reason codes and the scored population."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit_risk_assets import tables
from credit_risk_assets.compute.model import (
    ModelInputError,
    PdModel,
    train_pd_model,
    training_frame,
)
from credit_risk_assets.compute.scoring import (
    MASTER_SCALE,
    PointsScale,
    credit_score,
    reason_codes,
    risk_grade,
    risk_segment,
    score_accounts,
)
from credit_risk_assets_tests.test_model import portfolio_frames

Frames = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


@pytest.fixture(scope="module")
def frames() -> Frames:
    """Features, streaks and labels of the synthetic book."""
    return portfolio_frames(accounts=200)


@pytest.fixture(scope="module")
def model(frames: Frames) -> PdModel:
    """A model trained on the synthetic book."""
    return train_pd_model(training_frame(*frames))


@pytest.fixture(scope="module")
def scores(frames: Frames, model: PdModel) -> pd.DataFrame:
    """Scores of every month of the synthetic book."""
    features, streaks, _ = frames
    return score_accounts(features, streaks, model)


@pytest.mark.parametrize(
    ("pd_score", "segment"),
    [
        (0.0, "Low"),  # the notebook's pd.cut turned exactly 0 into NaN
        (0.2999, "Low"),  # just under the first edge
        (0.3, "Medium"),  # an edge belongs to the segment above it
        (0.5999, "Medium"),
        (0.6, "High"),
        (1.0, "High"),  # closed at 1
    ],
)
def test_risk_segment_cuts_at_the_edges(pd_score: float, segment: str) -> None:
    """Segments are [0, 0.3), [0.3, 0.6) and [0.6, 1]."""
    assert risk_segment([pd_score]).tolist() == [segment]


@given(st.floats(min_value=0.0, max_value=1.0), st.floats(0.01, 0.49), st.floats(0.5, 0.99))
def test_risk_segment_agrees_with_the_interval_definition(
    pd_score: float, lower: float, upper: float
) -> None:
    """Any PD and any valid edges give the segment whose interval holds the PD."""
    expected = "Low" if pd_score < lower else "Medium" if pd_score < upper else "High"

    assert risk_segment([pd_score], (lower, upper)).tolist() == [expected]


@pytest.mark.parametrize(
    "pd_score",
    [
        -0.01,  # below 0
        1.0001,  # above 1
        math.nan,  # missing
    ],
)
def test_risk_segment_refuses_a_pd_that_is_not_a_probability(pd_score: float) -> None:
    """A PD outside [0, 1], or NaN, raises instead of getting a segment."""
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        risk_segment([0.5, pd_score])


@pytest.mark.parametrize(
    "edges",
    [
        (0.6, 0.3),  # decreasing
        (0.3, 0.3),  # not strictly increasing
        (0.0, 0.6),  # an edge at 0 would leave Low empty
        (0.3, 1.0),  # an edge at 1 would leave High empty
        (0.3,),  # one edge for three segments
    ],
)
def test_risk_segment_refuses_invalid_edges(edges: tuple[float, ...]) -> None:
    """Edges must be two strictly increasing numbers inside (0, 1)."""
    with pytest.raises(ValueError, match="strictly increasing"):
        risk_segment([0.5], edges)


def test_credit_score_puts_600_at_odds_50_and_620_at_odds_100() -> None:
    """The default scale anchors 600 points at 50:1 and adds 20 points per doubling."""
    points = credit_score([1 / 51, 1 / 101, 1 / 26])

    np.testing.assert_allclose(points, [600.0, 620.0, 580.0], atol=1e-9)


def test_credit_score_follows_a_custom_scale() -> None:
    """500 points at 10:1 with 40 points to double gives 540 at 20:1."""
    scale = PointsScale(base_points=500, base_odds=10, points_to_double_odds=40)

    np.testing.assert_allclose(credit_score([1 / 11, 1 / 21], scale), [500.0, 540.0])


def test_credit_score_decreases_strictly_in_pd_and_stays_finite_at_0_and_1() -> None:
    """On a fine PD grid every step up in PD loses points; PDs 0 and 1 get finite scores."""
    grid = np.concatenate([[0.0, 1e-9, 1e-6], np.linspace(1e-4, 1 - 1e-4, 10_001), [1.0]])

    points = credit_score(grid)

    assert np.all(np.diff(points[1:-1]) < 0)
    assert np.isfinite(points).all()
    assert points[0] == points[1]  # 0 is clipped to the smallest PD
    assert points[-1] < points[-2]


def test_risk_grade_follows_the_master_scale_and_gives_d_in_default() -> None:
    """Each upper bound starts the next grade; in-default accounts are D whatever their PD."""
    bounds = [bound for bound, _ in MASTER_SCALE]
    pd_score = np.array([0.0, 0.0099, bounds[0], 0.0699, 0.07, 0.5999, 0.6, 1.0, 0.001])
    in_default = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1])

    grades = risk_grade(pd_score, in_default)

    assert grades.tolist() == ["1", "1", "2", "4", "5", "8", "9", "9", "D"]


def test_reason_codes_are_the_top_positive_contributors(frames: Frames, model: PdModel) -> None:
    """Reason codes equal a per-row ranking recomputed from the parameters table."""
    features, streaks, _ = frames
    rows = features.merge(streaks, on=["as_of_month", "account_id"]).head(150)
    table = model.to_parameters_table()

    codes = reason_codes(model, rows)

    names = table["feature"].tolist()
    x = rows[names].to_numpy(dtype="float64")
    terms = table["coefficient"].to_numpy() * (x - table["scaler_mean"].to_numpy())
    terms /= table["scaler_scale"].to_numpy()
    for position, row_terms in enumerate(terms):
        positive = sorted((t for t in zip(row_terms, names, strict=True) if t[0] > 0), reverse=True)
        expected = [name for _, name in positive[:3]] + [None] * (3 - min(3, len(positive)))
        got = codes.iloc[position].tolist()
        assert [None if pd.isna(code) else code for code in got] == expected
    assert list(codes.columns) == ["reason_code_1", "reason_code_2", "reason_code_3"]


def test_reason_codes_are_null_when_no_feature_raises_the_pd(model: PdModel) -> None:
    """An account at the training means minus one step has no reason, not an arbitrary one."""
    below_mean = model.scaler_mean - np.sign(model.coefficients) * model.scaler_scale
    only_first = below_mean.copy()
    only_first[0] = model.scaler_mean[0] + np.sign(model.coefficients[0]) * model.scaler_scale[0]
    rows = pd.DataFrame([below_mean, only_first], columns=list(model.features))

    codes = reason_codes(model, rows)

    assert codes.iloc[0].isna().all()
    assert codes.iloc[1, 0] == model.features[0]
    assert codes.iloc[1, 1:].isna().all()


def test_scores_have_the_declared_columns_sorted_by_month_and_account(
    scores: pd.DataFrame, model: PdModel
) -> None:
    """The frame has exactly risk_scores' columns, in order, one row per account and month."""
    assert list(scores.columns) == list(tables.RISK_SCORES.column_names)
    keys = scores[["as_of_month", "account_id"]]
    assert keys.equals(keys.sort_values(["as_of_month", "account_id"]).reset_index(drop=True))
    assert not keys.duplicated().any()
    assert scores["as_of_month"].nunique() == 4
    assert set(scores["model_version"]) == {model.model_version}
    assert scores["in_default"].dtype == "int64"
    assert scores["max_dpd"].dtype == "int64"
    assert scores["delinquency_streak"].dtype == "int64"


def test_accounts_without_a_row_in_the_month_are_not_scored(
    frames: Frames, scores: pd.DataFrame
) -> None:
    """Rows whose current_dpd is null (no cycle in T) are left out; all others are scored."""
    features, _, _ = frames
    absent = features.loc[features["current_dpd"].isna(), ["as_of_month", "account_id"]]
    keys = ["as_of_month", "account_id"]

    overlap = scores[keys].merge(absent, on=keys)

    assert len(absent) > 0
    assert overlap.empty
    assert len(scores) == len(features) - len(absent)


def test_accounts_in_default_get_pd_1_high_and_grade_d(
    frames: Frames, scores: pd.DataFrame
) -> None:
    """Accounts at 90+ DPD in T are not scored by the model: PD 1, High, D, no points."""
    features, _, _ = frames
    keys = ["as_of_month", "account_id"]
    defaulted = features.loc[features["current_dpd"] >= 90, keys]

    in_default = scores.merge(defaulted, on=keys)

    assert len(in_default) > 0
    assert (in_default["in_default"] == 1).all()
    assert (in_default["pd_score"] == 1.0).all()
    assert (in_default["risk_segment"] == "High").all()
    assert (in_default["risk_grade"] == "D").all()
    assert in_default["credit_score"].isna().all()
    assert in_default[["reason_code_1", "reason_code_2", "reason_code_3"]].isna().all(axis=None)
    assert int(scores["in_default"].sum()) == len(defaulted)


def test_other_accounts_get_the_model_pd_and_its_derived_scores(
    frames: Frames, scores: pd.DataFrame, model: PdModel
) -> None:
    """Performing accounts carry the model's PD, its segment, points, grade and features."""
    features, streaks, _ = frames
    keys = ["as_of_month", "account_id"]
    performing = scores[scores["in_default"] == 0].reset_index(drop=True)
    inputs = performing[keys].merge(features.merge(streaks, on=keys), on=keys)

    expected_pd = model.predict_pd(inputs)

    np.testing.assert_array_equal(performing["pd_score"], expected_pd)
    assert performing["risk_segment"].tolist() == risk_segment(expected_pd).tolist()
    np.testing.assert_array_equal(performing["credit_score"], credit_score(expected_pd))
    assert (
        performing["risk_grade"].tolist()
        == risk_grade(expected_pd, np.zeros(len(expected_pd))).tolist()
    )
    np.testing.assert_array_equal(performing["avg_dpd"], inputs["avg_dpd"])
    np.testing.assert_array_equal(performing["delinquency_streak"], inputs["delinquency_streak"])
    assert performing["risk_segment"].nunique() >= 2


def test_scoring_one_month_alone_gives_the_same_rows(
    frames: Frames, scores: pd.DataFrame, model: PdModel
) -> None:
    """Scoring several months at once equals scoring each month on its own."""
    features, streaks, _ = frames
    month = pd.Timestamp("2024-02-01")

    alone = score_accounts(
        features[features["as_of_month"] == month],
        streaks[streaks["as_of_month"] == month],
        model,
    )

    together = scores[scores["as_of_month"] == month].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, together)


def test_a_feature_row_without_its_streak_is_refused(frames: Frames, model: PdModel) -> None:
    """Scoring needs the streaks of the same month; a missing one is named, not scored as 0."""
    features, streaks, _ = frames
    present = features[features["current_dpd"].notna()]
    first = present.iloc[0]
    missing = (streaks["as_of_month"] == first["as_of_month"]) & (
        streaks["account_id"] == first["account_id"]
    )

    with pytest.raises(ModelInputError, match=r"1 feature rows have no streak row.*2024-01"):
        score_accounts(features, streaks[~missing], model)
