"""Evidence that the PD model ranks, is calibrated and still fits the book it scores.

Discrimination (AUC, Gini, KS), accuracy (Brier score and Brier skill), calibration by
master-scale grade, coefficient signs against their expected direction, and the population
stability index (PSI) of the score and of each model feature between the training sample and
a scored month. Plain numpy and pandas on frames; nothing here knows Dagster or a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from credit_risk_assets import tables
from credit_risk_assets.compute.model import (
    IN_SAMPLE,
    LABEL,
    OUT_OF_TIME,
    PdModel,
    classification_metrics,
    fit_development_model,
)
from credit_risk_assets.compute.scoring import master_scale_bands, risk_grade
from credit_risk_assets.warehouse.schema import TableSpec

TRAIN = "train"

# Direction each feature should push the PD: +1 when more of it must not lower the PD. Every
# delinquency measure is +1; months_observed (how long the account has been seen) has none.
EXPECTED_SIGNS: dict[str, int] = {
    "avg_dpd": 1,
    "max_dpd": 1,
    "delinquency_ratio": 1,
    "severe_delinquency_count": 1,
    "default_like_cycles": 1,
    "recent_avg_dpd_3m": 1,
    "delinquency_streak": 1,
    "current_streak": 1,
    "current_dpd": 1,
    "months_observed": 0,
}

SCORE_VARIABLE = "pd_score"
FEATURE_BINS = 10
DEFAULT_WARN_PSI = 0.10
DEFAULT_FAIL_PSI = 0.25
STABILITY_LABELS = ("stable", "monitor", "shifted")

# An empty bin would make ln(actual / expected) infinite. Its share is raised to this floor,
# the usual convention, so that one empty bin adds a large but finite term.
PSI_SHARE_FLOOR = 1e-4


class ValidationMismatchError(ValueError):
    """The stored model's figures cannot be reproduced from the rows it was trained on."""


@dataclass(frozen=True)
class ScoredSample:
    """One validation sample: its rows, the fit that scored them, their outcomes and PDs."""

    name: str
    rows: pd.DataFrame
    fit: PdModel
    outcomes: np.ndarray
    pd_score: np.ndarray

    @property
    def first_month(self) -> pd.Timestamp:
        """First as-of month of the sample."""
        return pd.Timestamp(self.rows["as_of_month"].min())

    @property
    def last_month(self) -> pd.Timestamp:
        """Last as-of month of the sample."""
        return pd.Timestamp(self.rows["as_of_month"].max())


def brier_skill_score(y_true: ArrayLike, pd_score: ArrayLike) -> float:
    """1 - Brier / Brier of always forecasting the sample's own default rate.

    1 is perfect, 0 is no better than that constant forecast, below 0 is worse.
    """
    outcomes = np.asarray(y_true, dtype="float64")
    scores = np.asarray(pd_score, dtype="float64")
    base_rate = outcomes.mean()
    if not 0 < base_rate < 1:
        raise ValueError(
            f"Brier skill needs defaults and non-defaults; the base rate is {base_rate}."
        )

    reference = base_rate * (1.0 - base_rate)
    return float(1.0 - np.mean((scores - outcomes) ** 2) / reference)


def performance_metrics(y_true: ArrayLike, pd_score: ArrayLike) -> dict[str, float | int]:
    """Accounts, defaults, base rate, mean PD, AUC, Gini, KS, Brier and Brier skill."""
    outcomes = np.asarray(y_true)
    scores = np.asarray(pd_score, dtype="float64")
    metrics = classification_metrics(outcomes, scores)
    return {
        "accounts": len(outcomes),
        "defaults": int(outcomes.sum()),
        "base_rate": float(outcomes.mean()),
        "mean_pd": float(scores.mean()),
        **metrics,
        "brier_skill": brier_skill_score(outcomes, scores),
    }


def calibration_by_grade(y_true: ArrayLike, pd_score: ArrayLike) -> pd.DataFrame:
    """Expected and observed default rates of the accounts in each master-scale grade.

    expected_default_rate is the mean PD of the grade; standard_error is that of the observed
    rate if the PDs were right, sqrt(sum pd * (1 - pd)) / accounts; z_score is
    (observed - expected) / standard_error (null when the error is 0). Grades with no
    account are left out. Sorted by grade.
    """
    outcomes = np.asarray(y_true, dtype="float64")
    scores = np.asarray(pd_score, dtype="float64")
    grades = risk_grade(scores, np.zeros(len(scores), dtype="int64"))
    model_bands = _model_grade_bands()
    codes = pd.Categorical(grades, categories=model_bands["risk_grade"]).codes

    size = len(model_bands)
    accounts = np.bincount(codes, minlength=size)
    defaults = np.bincount(codes, weights=outcomes, minlength=size)
    expected = np.bincount(codes, weights=scores, minlength=size)
    variance = np.bincount(codes, weights=scores * (1.0 - scores), minlength=size)

    present = accounts > 0
    count = accounts[present]
    table = (
        model_bands[present]
        .reset_index(drop=True)
        .assign(
            accounts=count.astype("int64"),
            defaults=defaults[present].astype("int64"),
            expected_default_rate=expected[present] / count,
            observed_default_rate=defaults[present] / count,
            standard_error=np.sqrt(variance[present]) / count,
        )
    )
    gap = table["observed_default_rate"] - table["expected_default_rate"]
    table["z_score"] = gap / table["standard_error"].where(table["standard_error"] > 0)
    return table


def coefficient_sign_checks(features: Sequence[str], coefficients: ArrayLike) -> pd.DataFrame:
    """Each feature's coefficient against the direction it should push the PD.

    as_expected is False when the coefficient's sign is the opposite of EXPECTED_SIGNS (for
    example, more delinquency lowering the PD). A zero coefficient, or a feature with no
    expected direction, is as expected.
    """
    values = np.asarray(coefficients, dtype="float64")
    expected = np.array([EXPECTED_SIGNS.get(feature, 0) for feature in features], dtype="int64")
    flipped = np.sign(values) * expected < 0
    return pd.DataFrame(
        {
            "feature": pd.Series(list(features), dtype="str"),
            "coefficient": values,
            "expected_sign": expected,
            "as_expected": ~flipped,
        }
    )


def psi_terms(baseline_counts: ArrayLike, current_counts: ArrayLike) -> np.ndarray:
    """Per-bin terms (a - e) * ln(a / e) of the PSI, shares floored at PSI_SHARE_FLOOR."""
    baseline = np.asarray(baseline_counts, dtype="float64")
    current = np.asarray(current_counts, dtype="float64")
    if baseline.shape != current.shape or baseline.ndim != 1:
        raise ValueError(
            f"Bin counts must be 1-d and of equal length; got {baseline.shape} and {current.shape}."
        )
    if baseline.sum() <= 0 or current.sum() <= 0:
        raise ValueError(
            f"PSI needs accounts on both sides; got {baseline.sum():g} baseline and "
            f"{current.sum():g} current accounts."
        )

    expected = np.maximum(baseline / baseline.sum(), PSI_SHARE_FLOOR)
    actual = np.maximum(current / current.sum(), PSI_SHARE_FLOOR)
    return (actual - expected) * np.log(actual / expected)


def population_stability_index(baseline_counts: ArrayLike, current_counts: ArrayLike) -> float:
    """PSI = sum over bins of (a - e) * ln(a / e), with e and a the baseline and current shares."""
    return float(psi_terms(baseline_counts, current_counts).sum())


def feature_bin_edges(values: ArrayLike, bins: int = FEATURE_BINS) -> np.ndarray:
    """Interior upper edges of right-closed bins at the deciles (by default) of `values`.

    Repeated quantiles collapse into one edge, so a value shared by many accounts (a DPD of 0)
    gets a bin of its own instead of empty neighbours.
    """
    numbers = np.asarray(values, dtype="float64")
    quantiles = np.quantile(numbers, np.arange(1, bins) / bins)
    edges = np.unique(quantiles)
    return edges[edges < numbers.max()]


def stability_baseline(
    rows: pd.DataFrame, pd_score: ArrayLike, features: Sequence[str]
) -> pd.DataFrame:
    """Bins and training shares of the score (by master-scale grade) and of each feature.

    Columns of `stability_baseline` without model_version. Score bins are the grades, PDs in
    [lower_bound, upper_bound); feature bins are right-closed, (lower_bound, upper_bound], at
    the training deciles. A null bound is open (no lower or upper limit).
    """
    scores = np.asarray(pd_score, dtype="float64")
    parts = [_score_baseline(scores)]
    for feature in features:
        values = rows[feature].to_numpy(dtype="float64")
        parts.append(_feature_baseline(feature, values, feature_bin_edges(values)))
    return pd.concat(parts, ignore_index=True)


def bin_counts(baseline: pd.DataFrame, variable: str, values: ArrayLike) -> np.ndarray:
    """Accounts per bin of `variable` in `baseline` (in bin_order), for new values."""
    bins = baseline[baseline["variable"] == variable].sort_values("bin_order")
    if bins.empty:
        raise ValueError(
            f"The stability baseline has no bins for {variable!r}; it has "
            f"{sorted(baseline['variable'].unique())}. Re-materialise the model validation."
        )
    interior = bins["upper_bound"].to_numpy(dtype="float64")[:-1]
    # The score's grades hold their lower bound ([lower, upper)); feature bins their upper one.
    side = "right" if variable == SCORE_VARIABLE else "left"
    positions = np.searchsorted(interior, np.asarray(values, dtype="float64"), side=side)
    return np.bincount(positions, minlength=len(bins))


def stability_of_month(
    baseline: pd.DataFrame,
    rows: pd.DataFrame,
    features: Sequence[str],
    warn_psi: float = DEFAULT_WARN_PSI,
    fail_psi: float = DEFAULT_FAIL_PSI,
) -> pd.DataFrame:
    """PSI of the score and of each feature of `rows` (one month's scored accounts).

    `rows` holds pd_score and the features. Columns: variable, accounts, psi, stability
    (stable below warn_psi, monitor below fail_psi, shifted from fail_psi), largest_shift_bin
    and largest_shift_psi (the bin whose term adds most to the PSI, and that term).
    """
    _check_thresholds(warn_psi, fail_psi)
    records = []
    for variable in (SCORE_VARIABLE, *features):
        bins = baseline[baseline["variable"] == variable].sort_values("bin_order")
        counts = bin_counts(baseline, variable, rows[variable])
        terms = psi_terms(bins["accounts"].to_numpy(), counts)
        largest = int(np.argmax(terms))
        records.append(
            {
                "variable": variable,
                "accounts": int(counts.sum()),
                "psi": float(terms.sum()),
                "largest_shift_bin": str(bins["bin_label"].iloc[largest]),
                "largest_shift_psi": float(terms[largest]),
            }
        )
    result = pd.DataFrame.from_records(records)
    result["stability"] = stability_status(result["psi"], warn_psi, fail_psi)
    return result


def stability_status(psi: ArrayLike, warn_psi: float, fail_psi: float) -> np.ndarray:
    """stable below warn_psi, monitor from warn_psi, shifted from fail_psi."""
    _check_thresholds(warn_psi, fail_psi)
    values = np.asarray(psi, dtype="float64")
    positions = np.searchsorted([warn_psi, fail_psi], values, side="right")
    return np.asarray(STABILITY_LABELS, dtype=object)[positions].astype(str)


def validation_samples(training: pd.DataFrame, model: PdModel) -> list[ScoredSample]:
    """The samples behind the model's validation, scored by the fit that produced the figures.

    For an out-of-time model: `train`, the development months scored by the development fit,
    and `out_of_time`, the held-out month scored by the same fit, which never saw it. The
    development fit is repeated from `training` with the model's stored settings, and must
    reproduce the stored out-of-time figures. For a notebook-mode model: `in_sample`, every
    training row scored by the model itself.
    """
    rows = _training_rows_of(training, model)
    if model.validation.sample != OUT_OF_TIME:
        return [_scored(IN_SAMPLE, rows, model)]

    development = fit_development_model(
        rows,
        model.features,
        regularisation_c=model.regularisation_c,
        max_iter=model.max_iter,
    )
    _require_same_validation(development, model)
    months = rows["as_of_month"]
    holdout = months == model.validation.month
    return [
        _scored(TRAIN, rows.loc[~holdout], development),
        _scored(OUT_OF_TIME, rows.loc[holdout], development),
    ]


def performance_table(samples: Sequence[ScoredSample], model: PdModel) -> pd.DataFrame:
    """Rows of `model_performance`: one per sample, figures of the fit that scored it."""
    records = [
        {
            "model_version": model.model_version,
            "sample": sample.name,
            "first_month": sample.first_month,
            "last_month": sample.last_month,
            "fit_first_month": sample.fit.training_first_month,
            "fit_last_month": sample.fit.training_last_month,
            **performance_metrics(sample.outcomes, sample.pd_score),
        }
        for sample in samples
    ]
    frame = pd.DataFrame.from_records(records)
    return _typed(frame, tables.MODEL_PERFORMANCE)


def calibration_table(samples: Sequence[ScoredSample], model: PdModel) -> pd.DataFrame:
    """Rows of `model_calibration`: each sample's calibration by master-scale grade."""
    parts = [
        calibration_by_grade(sample.outcomes, sample.pd_score).assign(
            model_version=model.model_version, sample=sample.name
        )
        for sample in samples
    ]
    return _typed(pd.concat(parts, ignore_index=True), tables.MODEL_CALIBRATION)


def baseline_table(training: pd.DataFrame, model: PdModel) -> pd.DataFrame:
    """Rows of `stability_baseline`: the published model's training sample, binned."""
    rows = _training_rows_of(training, model)
    baseline = stability_baseline(rows, model.predict_pd(rows), model.features)
    return _typed(baseline.assign(model_version=model.model_version), tables.STABILITY_BASELINE)


# The groups of risk_segment_summary, and the sums per group it is built from.
SUMMARY_GROUPS = ("as_of_month", "risk_segment", "risk_grade")
SEGMENT_COUNT_COLUMNS = (
    *SUMMARY_GROUPS,
    "accounts",
    "mean_pd",
    "expected_defaults",
    "labelled_accounts",
    "observed_defaults",
)


def segment_summary(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Rows of `risk_segment_summary`: scored accounts and outcomes per month, segment, grade.

    `scores` holds risk_scores rows, `labels` default_flags rows. A month is mature when it
    has labels; observed figures count the labelled accounts only (accounts in default at T,
    grade D, and accounts with no row after T have no label) and are null where none is.
    """
    mature_months = pd.to_datetime(labels["as_of_month"]).unique()
    return summary_from_counts(segment_counts(scores, labels), mature_months)


def segment_counts(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Accounts, PD mean and sum, labelled accounts and defaults per month, segment and grade."""
    keys = ["as_of_month", "account_id"]
    outcomes = labels.loc[:, [*keys, LABEL]].assign(labelled=1)
    joined = scores.loc[:, [*keys, "pd_score", "risk_segment", "risk_grade"]].merge(
        outcomes, on=keys, how="left"
    )
    joined["labelled"] = joined["labelled"].fillna(0).astype("int64")
    return (
        joined.groupby(list(SUMMARY_GROUPS), sort=True)
        .agg(
            accounts=("pd_score", "size"),
            mean_pd=("pd_score", "mean"),
            expected_defaults=("pd_score", "sum"),
            labelled_accounts=("labelled", "sum"),
            observed_defaults=(LABEL, "sum"),
        )
        .reset_index()
    )


def summary_from_counts(counts: pd.DataFrame, mature_months: ArrayLike) -> pd.DataFrame:
    """Rows of `risk_segment_summary` from `segment_counts` (computed here or by the database)."""
    summary = counts.assign(as_of_month=pd.to_datetime(counts["as_of_month"]))
    labelled = summary["labelled_accounts"] > 0
    order = master_scale_bands().set_index("risk_grade")["grade_order"]
    summary = summary.assign(
        grade_order=summary["risk_grade"].map(order),
        is_mature=summary["as_of_month"].isin(pd.to_datetime(mature_months)).astype("int64"),
        observed_defaults=summary["observed_defaults"].where(labelled),
        observed_default_rate=(summary["observed_defaults"] / summary["labelled_accounts"]).where(
            labelled
        ),
    )
    return _typed(summary.sort_values(list(SUMMARY_GROUPS)), tables.RISK_SEGMENT_SUMMARY)


def _training_rows_of(training: pd.DataFrame, model: PdModel) -> pd.DataFrame:
    """The labelled rows of the months the model was trained on, sorted by month and account."""
    months = pd.to_datetime(training["as_of_month"])
    inside = (months >= model.training_first_month) & (months <= model.training_last_month)
    rows = training.loc[inside].sort_values(["as_of_month", "account_id"], kind="stable")
    if len(rows) != model.training_rows:
        raise ValidationMismatchError(
            f"pd_model {model.model_version} was trained on {model.training_rows} account-months "
            f"({model.training_first_month:%Y-%m}..{model.training_last_month:%Y-%m}) but the "
            f"warehouse now holds {len(rows)} labelled rows for those months: features, streaks "
            "or labels changed since. Re-materialise pd_model, then its validation."
        )
    return rows.reset_index(drop=True)


def _require_same_validation(development: PdModel, model: PdModel) -> None:
    repeated, stored = development.validation, model.validation
    same = (
        repeated.month == stored.month
        and repeated.rows == stored.rows
        and np.isclose(repeated.auc, stored.auc, rtol=0, atol=1e-9)
        and np.isclose(repeated.brier, stored.brier, rtol=0, atol=1e-9)
    )
    if not same:
        raise ValidationMismatchError(
            f"Repeating the development fit of pd_model {model.model_version} gives out-of-time "
            f"AUC {repeated.auc:.6f} and Brier {repeated.brier:.6f} on {repeated.rows} rows of "
            f"{repeated.month:%Y-%m}; the table stores {stored.auc:.6f} and {stored.brier:.6f} "
            f"on {stored.rows} rows of {stored.month:%Y-%m}. The training rows changed since "
            "the model was fitted: re-materialise pd_model, then its validation."
        )


def _scored(name: str, rows: pd.DataFrame, fit: PdModel) -> ScoredSample:
    return ScoredSample(
        name=name,
        rows=rows,
        fit=fit,
        outcomes=rows[LABEL].to_numpy(dtype="int64"),
        pd_score=fit.predict_pd(rows),
    )


def _model_grade_bands() -> pd.DataFrame:
    """The master-scale bands a PD can fall in: every grade but D."""
    bands = master_scale_bands()
    return bands[bands["pd_upper"].notna()].reset_index(drop=True)


def _score_baseline(scores: np.ndarray) -> pd.DataFrame:
    bands = _model_grade_bands()
    interior = bands["pd_upper"].to_numpy(dtype="float64")[:-1]
    counts = np.bincount(np.searchsorted(interior, scores, side="right"), minlength=len(bands))
    labels = [
        f"grade {row.risk_grade} [{row.pd_lower:g}, {row.pd_upper:g})"
        for row in bands.itertuples(index=False)
    ]
    labels[-1] = f"grade {bands['risk_grade'].iloc[-1]} [{bands['pd_lower'].iloc[-1]:g}, 1]"
    upper = np.append(interior, np.nan)
    return _bins_frame(SCORE_VARIABLE, labels, bands["pd_lower"].to_numpy(), upper, counts)


def _feature_baseline(feature: str, values: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    lower = np.concatenate([[np.nan], edges])
    upper = np.concatenate([edges, [np.nan]])
    positions = np.searchsorted(edges, values, side="left")
    counts = np.bincount(positions, minlength=len(edges) + 1)
    labels = [_interval_label(low, high) for low, high in zip(lower, upper, strict=True)]
    return _bins_frame(feature, labels, lower, upper, counts)


def _interval_label(low: float, high: float) -> str:
    if np.isnan(low) and np.isnan(high):
        return "all values"
    if np.isnan(low):
        return f"<= {high:.4g}"
    if np.isnan(high):
        return f"> {low:.4g}"
    return f"({low:.4g}, {high:.4g}]"


def _bins_frame(
    variable: str,
    labels: Sequence[str],
    lower: np.ndarray,
    upper: np.ndarray,
    counts: np.ndarray,
) -> pd.DataFrame:
    counts = np.asarray(counts, dtype="int64")
    return pd.DataFrame(
        {
            "variable": variable,
            "bin_order": np.arange(1, len(counts) + 1, dtype="int64"),
            "bin_label": pd.Series(list(labels), dtype="str"),
            "lower_bound": np.asarray(lower, dtype="float64"),
            "upper_bound": np.asarray(upper, dtype="float64"),
            "accounts": counts,
            "share": counts / counts.sum(),
        }
    )


def _check_thresholds(warn_psi: float, fail_psi: float) -> None:
    if not 0 < warn_psi < fail_psi:
        raise ValueError(
            f"PSI thresholds must satisfy 0 < warn_psi < fail_psi; got warn_psi={warn_psi} and "
            f"fail_psi={fail_psi} (defaults {DEFAULT_WARN_PSI} and {DEFAULT_FAIL_PSI})."
        )


def _typed(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """`frame` with the declared columns of `spec`, in order and of their declared dtypes."""
    return spec.conform(frame.loc[:, list(spec.column_names)]).reset_index(drop=True)
