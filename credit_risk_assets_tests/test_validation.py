"""Tests of the validation computations: metrics, calibration, signs, PSI and the BI summary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from credit_risk_assets import tables
from credit_risk_assets.compute.model import (
    OUT_OF_TIME,
    PdModel,
    train_pd_model,
    training_frame,
)
from credit_risk_assets.compute.scoring import MASTER_SCALE, risk_grade
from credit_risk_assets.compute.validation import (
    PSI_SHARE_FLOOR,
    TRAIN,
    ValidationMismatchError,
    baseline_table,
    bin_counts,
    brier_skill_score,
    calibration_by_grade,
    calibration_table,
    coefficient_sign_checks,
    feature_bin_edges,
    performance_metrics,
    performance_table,
    population_stability_index,
    psi_terms,
    segment_summary,
    stability_of_month,
    stability_status,
    validation_samples,
)
from credit_risk_assets_tests.test_model import brute_force_ks, portfolio_frames

SIGNAL_FEATURES = ("avg_dpd", "delinquency_ratio")
SIGNAL_MONTHS = pd.date_range("2025-01-01", periods=4, freq="MS")


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def strong_signal_rows(accounts: int = 6000, seed: int = 5) -> pd.DataFrame:
    """Training rows whose labels are drawn from a known logistic PD of two features.

    The true log-odds are -4.2 + 0.07 * avg_dpd + 3.0 * delinquency_ratio, so a fitted model is
    correctly specified and its PDs spread from grade 2 to grade 9.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for month in SIGNAL_MONTHS:
        avg_dpd = rng.gamma(shape=0.8, scale=18.0, size=accounts)
        ratio = rng.beta(0.7, 1.6, size=accounts)
        true_pd = _sigmoid(-4.2 + 0.07 * avg_dpd + 3.0 * ratio)
        parts.append(
            pd.DataFrame(
                {
                    "as_of_month": month,
                    "account_id": np.arange(1, accounts + 1, dtype="int64"),
                    "avg_dpd": avg_dpd,
                    "delinquency_ratio": ratio,
                    "default_flag": (rng.random(accounts) < true_pd).astype("int64"),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def signal_rows() -> pd.DataFrame:
    """Rows of the strong-signal book over four months."""
    return strong_signal_rows()


@pytest.fixture(scope="module")
def signal_model(signal_rows: pd.DataFrame) -> PdModel:
    """The out-of-time model of the strong-signal book."""
    return train_pd_model(signal_rows, SIGNAL_FEATURES)


@pytest.fixture(scope="module")
def book() -> tuple[pd.DataFrame, PdModel]:
    """Training rows of the synthetic behavioural book and its published model."""
    training = training_frame(*portfolio_frames(accounts=300))
    return training, train_pd_model(training)


def test_metrics_equal_sklearn_and_brute_force_on_fixed_data() -> None:
    """AUC and Brier match scikit-learn, KS a CDF scan, Brier skill its definition."""
    rng = np.random.default_rng(11)
    outcomes = (rng.random(500) < 0.2).astype("int64")
    scores = np.round(np.clip(0.2 + 0.3 * outcomes + rng.normal(scale=0.2, size=500), 0, 1), 2)

    metrics = performance_metrics(outcomes, scores)

    base_rate = outcomes.mean()
    assert metrics["auc"] == pytest.approx(roc_auc_score(outcomes, scores), abs=1e-15)
    assert metrics["gini"] == pytest.approx(2 * roc_auc_score(outcomes, scores) - 1, abs=1e-15)
    assert metrics["ks"] == pytest.approx(brute_force_ks(outcomes, scores), abs=1e-12)
    assert metrics["brier"] == pytest.approx(brier_score_loss(outcomes, scores), abs=1e-15)
    expected_skill = 1 - brier_score_loss(outcomes, scores) / (base_rate * (1 - base_rate))
    assert metrics["brier_skill"] == pytest.approx(expected_skill, abs=1e-12)
    assert metrics["base_rate"] == pytest.approx(base_rate)
    assert metrics["mean_pd"] == pytest.approx(scores.mean())
    assert (metrics["accounts"], metrics["defaults"]) == (500, int(outcomes.sum()))


def test_brier_skill_of_a_small_example_matches_the_hand_computation() -> None:
    """Outcomes 1,0,0,0 and PDs .5,.1,.1,.3: Brier 0.09, reference 0.1875, skill 0.52."""
    skill = brier_skill_score([1, 0, 0, 0], [0.5, 0.1, 0.1, 0.3])

    assert skill == pytest.approx(1 - 0.09 / 0.1875)


def test_brier_skill_is_zero_for_the_base_rate_forecast() -> None:
    """Forecasting every account at the sample's default rate has no skill."""
    outcomes = np.array([1, 0, 0, 0, 1, 0, 0, 0])

    assert brier_skill_score(outcomes, np.full(8, 0.25)) == pytest.approx(0.0, abs=1e-15)


def test_psi_of_a_small_example_matches_the_hand_computation() -> None:
    """Shares .5/.3/.2 against .4/.3/.3: -.1*ln(.8) + 0 + .1*ln(1.5) = 0.062861."""
    terms = psi_terms([50, 30, 20], [40, 30, 30])

    np.testing.assert_allclose(terms, [-0.1 * math.log(0.8), 0.0, 0.1 * math.log(1.5)])
    assert population_stability_index([50, 30, 20], [40, 30, 30]) == pytest.approx(0.0628609, 1e-6)


def test_psi_gives_an_empty_bin_the_floor_share() -> None:
    """An empty current bin counts at the floor share, so the PSI stays finite."""
    psi = population_stability_index([50, 50], [100, 0])

    floor = PSI_SHARE_FLOOR
    expected = (1 - 0.5) * math.log(1 / 0.5) + (floor - 0.5) * math.log(floor / 0.5)
    assert psi == pytest.approx(expected)
    assert math.isfinite(psi)


def test_psi_of_identical_distributions_is_zero() -> None:
    """Counts in the same proportions give a PSI of exactly 0, whatever the totals."""
    assert population_stability_index([10, 20, 70], [100, 200, 700]) == 0.0


@pytest.mark.parametrize(
    ("psi", "label"),
    [
        (0.0, "stable"),
        (0.0999, "stable"),
        (0.10, "monitor"),  # the warn threshold belongs to monitor
        (0.2499, "monitor"),
        (0.25, "shifted"),  # the fail threshold belongs to shifted
        (3.0, "shifted"),
    ],
)
def test_stability_labels_follow_the_thresholds(psi: float, label: str) -> None:
    """stable below 0.10, monitor from 0.10, shifted from 0.25."""
    assert stability_status([psi], 0.10, 0.25).tolist() == [label]


def test_feature_bins_give_a_mass_point_its_own_bin() -> None:
    """With 70% zeros, zero gets the bin (-inf, 0] and later values are right-closed."""
    values = np.concatenate([np.zeros(70), np.arange(1, 31, dtype="float64")])

    edges = feature_bin_edges(values)

    assert edges[0] == 0.0
    assert np.all(np.diff(edges) > 0)
    assert edges[-1] < values.max()


def test_bin_counts_use_right_closed_feature_bins_and_left_closed_grades(
    book: tuple[pd.DataFrame, PdModel],
) -> None:
    """A value on a feature edge counts below it; a PD on a grade bound in the grade above."""
    training, model = book
    baseline = baseline_table(training, model)
    edge = baseline.loc[baseline["variable"] == "avg_dpd", "upper_bound"].dropna().iloc[0]
    bound = MASTER_SCALE[3][0]

    feature_counts = bin_counts(baseline, "avg_dpd", [edge])
    grade_counts = bin_counts(baseline, "pd_score", [bound])

    assert feature_counts.tolist()[0] == 1
    assert int(np.argmax(grade_counts)) == 4  # grade 5, the one starting at the bound
    assert risk_grade([bound], [0]).tolist() == ["5"]


def test_baseline_shares_sum_to_one_per_variable_and_match_the_training_grades(
    book: tuple[pd.DataFrame, PdModel],
) -> None:
    """Each variable's bins hold every training row; the score bins are the model's grades."""
    training, model = book

    baseline = baseline_table(training, model)

    assert list(baseline.columns) == list(tables.STABILITY_BASELINE.column_names)
    totals = baseline.groupby("variable")["accounts"].sum()
    assert set(totals) == {model.training_rows}
    np.testing.assert_allclose(baseline.groupby("variable")["share"].sum(), 1.0)
    grades = risk_grade(model.predict_pd(training), np.zeros(len(training), dtype="int64"))
    score_bins = baseline[baseline["variable"] == "pd_score"]
    expected = pd.Series(grades).value_counts().reindex([g for _, g in MASTER_SCALE], fill_value=0)
    assert score_bins["accounts"].tolist() == expected.tolist()


def test_the_training_sample_itself_is_stable_and_a_shifted_one_is_not(
    book: tuple[pd.DataFrame, PdModel],
) -> None:
    """PSI is 0 for the training rows; doubling everyone's delinquency shifts score and features."""
    training, model = book
    baseline = baseline_table(training, model)
    rows = training.assign(pd_score=model.predict_pd(training))
    worse = training.assign(
        avg_dpd=training["avg_dpd"] * 2 + 15,
        recent_avg_dpd_3m=training["recent_avg_dpd_3m"] * 2 + 15,
        delinquency_ratio=np.minimum(training["delinquency_ratio"] + 0.3, 1.0),
    )
    worse = worse.assign(pd_score=model.predict_pd(worse))

    same = stability_of_month(baseline, rows, model.features)
    shifted = stability_of_month(baseline, worse, model.features)

    np.testing.assert_allclose(same["psi"], 0.0, atol=1e-12)
    assert set(same["stability"]) == {"stable"}
    by_variable = shifted.set_index("variable")
    assert by_variable.loc["pd_score", "stability"] == "shifted"
    assert by_variable.loc["avg_dpd", "psi"] >= 0.25
    assert by_variable.loc["max_dpd", "psi"] == pytest.approx(0.0, abs=1e-12)


def test_calibration_by_grade_equals_a_group_by_grade(signal_rows: pd.DataFrame) -> None:
    """Accounts, defaults, mean PD and standard error per grade match a plain groupby."""
    rng = np.random.default_rng(2)
    scores = rng.beta(1.2, 6.0, size=3000)
    outcomes = (rng.random(3000) < scores).astype("int64")

    table = calibration_by_grade(outcomes, scores)

    frame = pd.DataFrame({"grade": risk_grade(scores, np.zeros(3000)), "y": outcomes, "p": scores})
    frame["variance"] = frame["p"] * (1 - frame["p"])
    grouped = frame.groupby("grade").agg(
        n=("y", "size"), d=("y", "sum"), p=("p", "mean"), v=("variance", "sum")
    )
    assert table["risk_grade"].tolist() == grouped.index.tolist()
    assert table["accounts"].tolist() == grouped["n"].tolist()
    assert table["defaults"].tolist() == grouped["d"].tolist()
    np.testing.assert_allclose(table["expected_default_rate"], grouped["p"])
    np.testing.assert_allclose(table["observed_default_rate"], grouped["d"] / grouped["n"])
    np.testing.assert_allclose(table["standard_error"], np.sqrt(grouped["v"]) / grouped["n"])


def test_a_strong_signal_gives_monotone_grades_calibrated_within_sampling_error(
    signal_rows: pd.DataFrame, signal_model: PdModel
) -> None:
    """On a correctly specified book, observed rates rise with the grade and |z| stays below 3."""
    samples = validation_samples(signal_rows, signal_model)

    calibration = calibration_table(samples, signal_model)

    for sample, rows in calibration.groupby("sample"):
        populated = rows[rows["accounts"] >= 100].sort_values("grade_order")
        assert len(populated) >= 6, sample
        assert populated["observed_default_rate"].is_monotonic_increasing, sample
        assert populated["z_score"].abs().max() < 3, sample


def test_validation_samples_repeat_the_published_out_of_time_figures(
    signal_rows: pd.DataFrame, signal_model: PdModel
) -> None:
    """The out_of_time row equals the figures stored with the model; train is earlier months."""
    samples = validation_samples(signal_rows, signal_model)

    performance = performance_table(samples, signal_model).set_index("sample")

    assert list(performance.index) == [TRAIN, OUT_OF_TIME]
    oot = performance.loc[OUT_OF_TIME]
    stored = signal_model.validation
    assert oot["auc"] == pytest.approx(stored.auc, abs=1e-12)
    assert oot["brier"] == pytest.approx(stored.brier, abs=1e-12)
    assert oot["accounts"] == stored.rows
    assert oot["first_month"] == SIGNAL_MONTHS[-1]
    assert performance.loc[TRAIN, "last_month"] == SIGNAL_MONTHS[-2]
    assert oot["fit_last_month"] == SIGNAL_MONTHS[-2]
    train_rows = signal_rows[signal_rows["as_of_month"] < SIGNAL_MONTHS[-1]]
    assert performance.loc[TRAIN, "accounts"] == len(train_rows)
    assert performance.loc[TRAIN, "defaults"] == int(train_rows["default_flag"].sum())


def test_changed_labels_since_training_are_refused(
    signal_rows: pd.DataFrame, signal_model: PdModel
) -> None:
    """Figures that the stored model cannot reproduce point at re-materialising pd_model."""
    changed = signal_rows.copy()
    flip = changed.index[changed["as_of_month"] == SIGNAL_MONTHS[-1]][:400]
    changed.loc[flip, "default_flag"] = 1 - changed.loc[flip, "default_flag"]

    with pytest.raises(ValidationMismatchError, match="re-materialise pd_model"):
        validation_samples(changed, signal_model)


def test_a_notebook_model_is_validated_in_sample(signal_rows: pd.DataFrame) -> None:
    """Without a holdout there is one sample, in_sample, scored by the published model."""
    latest = signal_rows[signal_rows["as_of_month"] == SIGNAL_MONTHS[-1]]
    model = train_pd_model(latest, SIGNAL_FEATURES, out_of_time=False)

    samples = validation_samples(latest, model)

    assert [sample.name for sample in samples] == ["in_sample"]
    np.testing.assert_array_equal(samples[0].pd_score, model.predict_pd(latest))


@pytest.mark.parametrize(
    ("coefficients", "flipped"),
    [
        ([0.5, 1.0, 0.2], []),  # all positive, as expected
        ([-0.5, 1.0, 0.2], ["avg_dpd"]),  # more DPD lowering the PD
        ([0.0, 1.0, -3.0], []),  # zero has no effect; months_observed has no expected sign
    ],
)
def test_coefficient_signs_flag_only_delinquency_that_lowers_the_pd(
    coefficients: list[float], flipped: list[str]
) -> None:
    """A negative coefficient on a delinquency measure is flagged; others are not."""
    checks = coefficient_sign_checks(["avg_dpd", "max_dpd", "months_observed"], coefficients)

    assert checks.loc[~checks["as_expected"], "feature"].tolist() == flipped
    assert checks["expected_sign"].tolist() == [1, 1, 0]


def test_segment_summary_counts_match_a_brute_force_recount() -> None:
    """Per month, segment and grade: accounts, mean PD and observed outcomes recounted by hand."""
    months = pd.to_datetime(["2025-01-01", "2025-01-01", "2025-01-01", "2025-02-01"])
    scores = pd.DataFrame(
        {
            "as_of_month": months,
            "account_id": np.array([1, 2, 3, 1], dtype="int64"),
            "pd_score": [0.05, 0.06, 1.0, 0.5],
            "risk_segment": pd.Series(["Low", "Low", "High", "Medium"], dtype="str"),
            "risk_grade": pd.Series(["4", "4", "D", "8"], dtype="str"),
        }
    )
    labels = pd.DataFrame(
        {
            "as_of_month": pd.to_datetime(["2025-01-01"]),
            "account_id": np.array([2], dtype="int64"),
            "default_flag": np.array([1], dtype="int64"),
        }
    )

    frame = segment_summary(scores, labels)

    assert list(frame.columns) == list(tables.RISK_SEGMENT_SUMMARY.column_names)
    summary = frame.set_index(["as_of_month", "risk_grade"])
    grade_4 = summary.loc[(pd.Timestamp("2025-01-01"), "4")]
    assert (grade_4["accounts"], grade_4["labelled_accounts"]) == (2, 1)
    assert grade_4["mean_pd"] == pytest.approx(0.055)
    assert grade_4["expected_defaults"] == pytest.approx(0.11)
    assert grade_4["observed_default_rate"] == 1.0
    assert grade_4["is_mature"] == 1
    grade_d = summary.loc[(pd.Timestamp("2025-01-01"), "D")]
    assert grade_d["grade_order"] == 10
    assert pd.isna(grade_d["observed_default_rate"])
    immature = summary.loc[(pd.Timestamp("2025-02-01"), "8")]
    assert immature["is_mature"] == 0
    assert pd.isna(immature["observed_defaults"])


def test_validation_tables_fit_their_declared_schemas(
    signal_rows: pd.DataFrame, signal_model: PdModel
) -> None:
    """performance and calibration frames carry exactly the declared columns and keys."""
    samples = validation_samples(signal_rows, signal_model)

    performance = performance_table(samples, signal_model)
    calibration = calibration_table(samples, signal_model)

    for frame, spec in (
        (performance, tables.MODEL_PERFORMANCE),
        (calibration, tables.MODEL_CALIBRATION),
    ):
        assert list(frame.columns) == list(spec.column_names)
        pd.testing.assert_frame_equal(spec.conform(frame), frame)
    assert set(calibration["model_version"]) == {signal_model.model_version}


def test_a_model_trained_with_other_settings_is_repeated_with_its_own(
    signal_rows: pd.DataFrame,
) -> None:
    """The stored regularisation and iteration limit drive the repeated development fit."""
    model = train_pd_model(signal_rows, SIGNAL_FEATURES, regularisation_c=0.01, max_iter=500)

    rebuilt = PdModel.from_parameters_table(model.to_parameters_table())
    samples = validation_samples(signal_rows, rebuilt)

    assert (rebuilt.regularisation_c, rebuilt.max_iter) == (0.01, 500)
    oot = performance_table(samples, rebuilt).set_index("sample").loc[OUT_OF_TIME]
    assert oot["auc"] == pytest.approx(model.validation.auc, abs=1e-12)
    default_settings = dataclasses.replace(rebuilt, regularisation_c=1.0)
    with pytest.raises(ValidationMismatchError):
        validation_samples(signal_rows, default_settings)
