"""Tests of the PD model: training rows, fit, validation, parameters table and risk drivers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from credit_risk_assets import tables
from credit_risk_assets.compute.model import (
    DEFAULT_MODEL_FEATURES,
    ModelFitError,
    ModelParametersError,
    PdModel,
    TrainingDataError,
    classification_metrics,
    risk_drivers,
    train_pd_model,
    training_frame,
)

MONTHS = pd.date_range("2024-01-01", periods=4, freq="MS")
FEATURES = list(DEFAULT_MODEL_FEATURES)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def portfolio_frames(
    accounts: int = 300, months: pd.DatetimeIndex = MONTHS, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Features, streaks and labels of a synthetic book where one latent risk drives them all.

    About 5% of the rows have no cycle in T (current_dpd null) and the riskiest rows are in
    default at T; neither kind gets a label, as in the forward-looking population.
    """
    rng = np.random.default_rng(seed)
    account_ids = np.arange(1, accounts + 1, dtype="int64")
    latent_risk = rng.normal(size=accounts)
    feature_parts, streak_parts, label_parts = [], [], []
    for month in months:
        risk = latent_risk + rng.normal(scale=0.6, size=accounts)
        avg_dpd = np.clip(12 + 9 * risk + rng.normal(scale=3, size=accounts), 0, None)
        current_dpd = np.clip(np.rint(avg_dpd * 2.2 + rng.normal(scale=8, size=accounts)), 0, 150)
        current = pd.array(current_dpd.astype("int64"), dtype="Int64")
        current[rng.random(accounts) < 0.05] = pd.NA
        feature_parts.append(
            pd.DataFrame(
                {
                    "as_of_month": month,
                    "account_id": account_ids,
                    "avg_dpd": avg_dpd,
                    "max_dpd": np.rint(avg_dpd * 2 + rng.integers(0, 10, accounts)).astype("int64"),
                    "delinquency_ratio": _sigmoid(risk + rng.normal(scale=0.5, size=accounts)),
                    "severe_delinquency_count": rng.binomial(6, _sigmoid(risk - 1.5)),
                    "default_like_cycles": rng.binomial(6, _sigmoid(risk - 3)),
                    "recent_avg_dpd_3m": np.clip(
                        avg_dpd + rng.normal(scale=4, size=accounts), 0, None
                    ),
                    "months_observed": np.full(accounts, 6, dtype="int64"),
                    "current_dpd": current,
                }
            )
        )
        streak = rng.binomial(6, _sigmoid(risk))
        streak_parts.append(
            pd.DataFrame(
                {
                    "as_of_month": month,
                    "account_id": account_ids,
                    "delinquency_streak": streak,
                    "current_streak": rng.binomial(streak, 0.5),
                }
            )
        )
        defaulted = rng.random(accounts) < _sigmoid(-1.2 + 1.4 * risk)
        labelled = (~pd.isna(current)) & (current_dpd < 90)
        label_parts.append(
            pd.DataFrame(
                {
                    "as_of_month": month,
                    "account_id": account_ids,
                    "default_flag": defaulted.astype("int64"),
                    "perf_months_observed": np.full(accounts, 6, dtype="int64"),
                    "perf_max_dpd": np.where(defaulted, 95, 20).astype("int64"),
                    "perf_delinquency_ratio": np.where(defaulted, 0.7, 0.2),
                    "perf_default_like_cycles": defaulted.astype("int64"),
                }
            )[np.asarray(labelled)]
        )
    frames = (feature_parts, streak_parts, label_parts)
    return tuple(pd.concat(parts, ignore_index=True) for parts in frames)


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    """Labelled training rows of the synthetic book over four months."""
    return training_frame(*portfolio_frames())


@pytest.fixture(scope="module")
def model(training: pd.DataFrame) -> PdModel:
    """The published out-of-time model of the synthetic book."""
    return train_pd_model(training)


def sklearn_fit(rows: pd.DataFrame) -> Pipeline:
    """The reference scaled logistic regression, fitted by scikit-learn directly."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return pipeline.fit(rows[FEATURES].to_numpy(dtype="float64"), rows["default_flag"])


def brute_force_ks(outcomes: np.ndarray, scores: np.ndarray) -> float:
    """KS by checking the two empirical CDFs at every distinct score, one at a time."""
    defaults, others = scores[outcomes == 1], scores[outcomes == 0]
    gaps = [abs((defaults <= t).mean() - (others <= t).mean()) for t in np.unique(scores)]
    return max(gaps)


def test_training_frame_joins_labels_to_their_features_and_streaks() -> None:
    """Each label row gets the features and streak of its own account and month."""
    features, streaks, labels = portfolio_frames(accounts=50)

    joined = training_frame(features, streaks, labels)

    assert len(joined) == len(labels)
    assert joined[["as_of_month", "account_id"]].duplicated().sum() == 0
    expected = features.merge(streaks, on=["as_of_month", "account_id"]).merge(
        labels[["as_of_month", "account_id", "default_flag"]], on=["as_of_month", "account_id"]
    )
    expected = expected.sort_values(["as_of_month", "account_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(joined, expected[joined.columns], check_dtype=False)


def test_training_frame_refuses_a_label_without_features() -> None:
    """A label row whose feature row is missing is an error naming its month and count."""
    features, streaks, labels = portfolio_frames(accounts=50)
    labelled = labels.iloc[[0, 1, 2]]
    keys = ["as_of_month", "account_id"]
    without = features.merge(labelled[keys], on=keys, how="left", indicator=True)
    features = features[(without["_merge"] == "left_only").to_numpy()]

    with pytest.raises(TrainingDataError, match=r"3 label rows .*2024-01: 3 rows"):
        training_frame(features, streaks, labels)


def test_metrics_equal_sklearn_and_a_brute_force_ks() -> None:
    """AUC and Brier match scikit-learn; KS matches a CDF-by-CDF computation, ties included."""
    rng = np.random.default_rng(3)
    outcomes = (rng.random(400) < 0.3).astype("int64")
    scores = np.round(np.clip(0.3 + 0.25 * outcomes + rng.normal(scale=0.2, size=400), 0, 1), 2)

    metrics = classification_metrics(outcomes, scores)

    assert metrics["auc"] == pytest.approx(roc_auc_score(outcomes, scores), abs=1e-15)
    assert metrics["gini"] == pytest.approx(2 * roc_auc_score(outcomes, scores) - 1, abs=1e-15)
    assert metrics["brier"] == pytest.approx(brier_score_loss(outcomes, scores), abs=1e-15)
    assert metrics["ks"] == pytest.approx(brute_force_ks(outcomes, scores), abs=1e-12)


def test_ks_of_a_small_example_matches_the_hand_computation() -> None:
    """Defaults at 0.4/0.6/0.8, others at 0.1/0.3/0.5/0.7: the CDFs differ most at 0.3 by 1/2."""
    outcomes = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.8, 0.6, 0.4, 0.1, 0.3, 0.5, 0.7])

    metrics = classification_metrics(outcomes, scores)

    assert metrics["ks"] == pytest.approx(0.5)
    # 12 pairs, the default ranks above in 0.8>all 4, 0.6>3, 0.4>2: 9 of 12.
    assert metrics["auc"] == pytest.approx(9 / 12)


@pytest.mark.parametrize(
    ("outcomes", "scores", "ks"),
    [
        # every score tied: both CDFs jump from 0 to 1 together
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.0),
        # a default and a non-default tied at 0.3: the gap is 1/2 at 0.1 and at 0.3, never 1
        ([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.6], 0.5),
    ],
)
def test_ks_counts_tied_scores_together(
    outcomes: list[int], scores: list[float], ks: float
) -> None:
    """Rows with equal scores move both CDFs at once, whatever their order in the input."""
    assert classification_metrics(outcomes, scores)["ks"] == pytest.approx(ks)


def test_training_twice_gives_identical_parameters(training: pd.DataFrame) -> None:
    """Two fits on the same rows, one of them shuffled, publish the same numbers and version."""
    first = train_pd_model(training)
    second = train_pd_model(training.sample(frac=1.0, random_state=11))

    np.testing.assert_array_equal(first.coefficients, second.coefficients)
    np.testing.assert_array_equal(first.scaler_mean, second.scaler_mean)
    assert first.intercept == second.intercept
    assert first.model_version == second.model_version
    assert first.validation == second.validation


def test_out_of_time_figures_come_from_a_fit_without_the_holdout_month(
    training: pd.DataFrame, model: PdModel
) -> None:
    """The validation figures are those of an sklearn fit on the earlier months only."""
    latest = training["as_of_month"].max()
    development = training[training["as_of_month"] < latest]
    holdout = training[training["as_of_month"] == latest]
    reference = sklearn_fit(development)
    holdout_pd = reference.predict_proba(holdout[FEATURES].to_numpy(dtype="float64"))[:, 1]
    in_sample_pd = sklearn_fit(training).predict_proba(holdout[FEATURES].to_numpy())[:, 1]

    validation = model.validation

    assert validation.sample == "out_of_time"
    assert validation.month == latest
    assert validation.rows == len(holdout)
    assert validation.default_rate == pytest.approx(holdout["default_flag"].mean())
    assert validation.auc == pytest.approx(roc_auc_score(holdout["default_flag"], holdout_pd))
    assert validation.brier == pytest.approx(
        brier_score_loss(holdout["default_flag"], holdout_pd), rel=1e-9
    )
    assert validation.brier != pytest.approx(
        brier_score_loss(holdout["default_flag"], in_sample_pd), rel=1e-9
    )
    assert 0.7 < validation.auc < 1.0


def test_published_model_equals_an_sklearn_fit_on_all_months(
    training: pd.DataFrame, model: PdModel
) -> None:
    """The published parameters are those of a fit on every month, holdout included."""
    reference = sklearn_fit(training)
    scaler, regression = reference.named_steps.values()

    np.testing.assert_allclose(model.scaler_mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(model.scaler_scale, scaler.scale_, rtol=1e-12)
    np.testing.assert_allclose(model.coefficients, regression.coef_[0], rtol=1e-9)
    assert model.intercept == pytest.approx(regression.intercept_[0], rel=1e-9)
    assert model.training_first_month == MONTHS[0]
    assert model.training_last_month == MONTHS[-1]
    assert model.training_rows == len(training)
    assert model.training_default_rate == pytest.approx(training["default_flag"].mean())


def test_notebook_mode_validates_in_sample_on_all_rows(training: pd.DataFrame) -> None:
    """Without a holdout the figures are measured on the training rows of every month."""
    model = train_pd_model(training, out_of_time=False)
    all_pd = sklearn_fit(training).predict_proba(training[FEATURES].to_numpy())[:, 1]

    assert model.validation.sample == "in_sample"
    assert model.validation.month == MONTHS[-1]
    assert model.validation.rows == len(training)
    assert model.validation.auc == pytest.approx(roc_auc_score(training["default_flag"], all_pd))


def test_a_single_class_is_refused_with_its_months_and_counts(training: pd.DataFrame) -> None:
    """Training rows with no default raise an error that lists rows and defaults per month."""
    no_defaults = training.assign(default_flag=0)
    rows_in_january = int((training["as_of_month"] == MONTHS[0]).sum())

    with pytest.raises(TrainingDataError, match="single class") as raised:
        train_pd_model(no_defaults)

    assert f"2024-01: {rows_in_january} rows, 0 defaults" in str(raised.value)
    assert "2024-03" in str(raised.value)


def test_a_holdout_month_with_one_class_is_refused(training: pd.DataFrame) -> None:
    """Defaults only before the latest month make the out-of-time sample unusable."""
    latest = training["as_of_month"] == MONTHS[-1]
    rows = training.assign(default_flag=training["default_flag"].where(~latest, 0))

    with pytest.raises(TrainingDataError, match=r"out-of-time validation sample .* 2024-04"):
        train_pd_model(rows)


def test_out_of_time_needs_two_months(training: pd.DataFrame) -> None:
    """A single as-of month cannot be split into development and holdout."""
    one_month = training[training["as_of_month"] == MONTHS[0]]

    with pytest.raises(TrainingDataError, match=r"at least 2 as-of months.*2024-01"):
        train_pd_model(one_month)


def test_a_constant_feature_is_refused_by_name(training: pd.DataFrame) -> None:
    """A feature with zero variance is named, rather than silently getting a zero weight."""
    constant = training.assign(severe_delinquency_count=0)

    with pytest.raises(TrainingDataError, match=r"severe_delinquency_count.*zero variance"):
        train_pd_model(constant)


def test_a_missing_feature_column_is_refused(training: pd.DataFrame) -> None:
    """Training without one of the model's features names the missing column."""
    with pytest.raises(TrainingDataError, match="recent_avg_dpd_3m"):
        train_pd_model(training.drop(columns="recent_avg_dpd_3m"))


def test_parameters_table_round_trip_scores_like_sklearn(
    training: pd.DataFrame, model: PdModel
) -> None:
    """A model rebuilt from its table gives sklearn's predict_proba to 1e-12."""
    table = model.to_parameters_table()

    rebuilt = PdModel.from_parameters_table(table.sample(frac=1.0, random_state=5))
    reference = sklearn_fit(training).predict_proba(training[FEATURES].to_numpy())[:, 1]

    assert list(table.columns) == list(tables.PD_MODEL.column_names)
    assert table["feature"].tolist() == FEATURES
    assert rebuilt.model_version == model.model_version
    assert rebuilt.validation.auc == model.validation.auc
    np.testing.assert_allclose(rebuilt.predict_pd(training), reference, rtol=0, atol=1e-12)


def test_model_version_changes_with_any_coefficient(model: PdModel) -> None:
    """Nudging one coefficient gives another version; the same numbers give the same one."""
    nudged = model.coefficients.copy()
    nudged[2] += 1e-9

    changed = dataclasses.replace(model, coefficients=nudged)
    copied = dataclasses.replace(model, coefficients=model.coefficients.copy())

    assert changed.model_version != model.model_version
    assert copied.model_version == model.model_version
    assert len(model.model_version) == 16


def test_parameters_table_with_two_versions_is_refused(model: PdModel) -> None:
    """Rows of two models cannot be rebuilt into one."""
    other = dataclasses.replace(model, intercept=model.intercept + 0.5)
    both = pd.concat([model.to_parameters_table(), other.to_parameters_table()])

    with pytest.raises(ModelParametersError, match="exactly one model_version"):
        PdModel.from_parameters_table(both)


def test_an_edited_parameters_table_is_refused(model: PdModel) -> None:
    """A coefficient changed in the table no longer matches the stored model_version."""
    table = model.to_parameters_table()
    table.loc[0, "coefficient"] += 0.1

    with pytest.raises(ModelParametersError, match="hash to"):
        PdModel.from_parameters_table(table)


def test_contributions_add_up_to_the_log_odds(training: pd.DataFrame, model: PdModel) -> None:
    """The per-feature terms plus the intercept are the log-odds of each row."""
    contributions = model.contributions(training)

    assert contributions.shape == (len(training), len(FEATURES))
    np.testing.assert_allclose(
        contributions.sum(axis=1) + model.intercept, model.log_odds(training), atol=1e-12
    )


def test_predict_pd_stays_finite_at_extreme_log_odds(model: PdModel) -> None:
    """Extreme inputs give PDs of 0 and 1, not overflow or NaN."""
    extreme = pd.DataFrame({feature: [-1e6, 1e6] for feature in FEATURES})
    steep = dataclasses.replace(model, coefficients=np.full(len(FEATURES), 50.0))

    scores = steep.predict_pd(extreme)

    np.testing.assert_array_equal(scores, [0.0, 1.0])


def test_risk_drivers_rank_features_by_absolute_coefficient(model: PdModel) -> None:
    """Rank 1 has the largest |coefficient|; odds ratios and directions follow the sign."""
    coefficients = np.array([0.5, -2.0, 1.0, 0.0, -0.1, 3.0])
    example = dataclasses.replace(model, coefficients=coefficients)

    drivers = risk_drivers(example)

    assert list(drivers.columns) == list(tables.RISK_DRIVERS.column_names)
    assert drivers["feature"].tolist() == [FEATURES[i] for i in (5, 1, 2, 0, 4, 3)]
    assert drivers["driver_rank"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(drivers["odds_ratio"], np.exp(coefficients[[5, 1, 2, 0, 4, 3]]))
    assert drivers["direction"].tolist() == [
        "raises PD",
        "lowers PD",
        "raises PD",
        "raises PD",
        "lowers PD",
        "no effect",
    ]
    assert set(drivers["model_version"]) == {example.model_version}


def test_parameters_table_survives_a_real_database(
    database_url: str, training: pd.DataFrame, model: PdModel
) -> None:
    """Rows written to and read back from the declared pd_model table rebuild the same model."""
    metadata = sa.MetaData()
    table = tables.PD_MODEL.sqlalchemy_table(metadata)
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), model.to_parameters_table().to_dict("records"))

    with engine.connect() as connection:
        stored = pd.read_sql(sa.select(table), connection)
    engine.dispose()
    rebuilt = PdModel.from_parameters_table(stored)

    assert rebuilt.model_version == model.model_version
    assert rebuilt.trained_at == model.trained_at
    np.testing.assert_array_equal(rebuilt.predict_pd(training), model.predict_pd(training))


def test_a_fit_that_does_not_converge_is_an_error(training: pd.DataFrame) -> None:
    """A ConvergenceWarning becomes an error, rather than a half-fitted published model."""
    with pytest.raises(ModelFitError, match="max_iter=1 "):
        train_pd_model(training, max_iter=1)
