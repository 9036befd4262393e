"""The PD model: a standardised logistic regression, its validation and its parameters table.

The model is kept as plain numbers (scaler means and scales, coefficients, intercept) so that it
can be stored as a table and applied by any process without a pickle. Fitting uses scikit-learn;
scoring recomputes the same arithmetic with numpy from the stored numbers.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from credit_risk_assets import tables

DEFAULT_MODEL_FEATURES = (
    "avg_dpd",
    "max_dpd",
    "delinquency_ratio",
    "severe_delinquency_count",
    "recent_avg_dpd_3m",
    "delinquency_streak",
)

KEYS = ("as_of_month", "account_id")
LABEL = "default_flag"
# The columns of default_flags that training and validation use.
LABEL_COLUMNS = (*KEYS, LABEL)
OUT_OF_TIME = "out_of_time"
IN_SAMPLE = "in_sample"


class TrainingDataError(ValueError):
    """The training rows cannot give a valid model: wrong columns, one class, too few months."""


class ModelFitError(RuntimeError):
    """The logistic regression did not converge on the training rows."""


class ModelInputError(ValueError):
    """A frame to be scored lacks a model feature or holds a missing or infinite value."""


class ModelParametersError(ValueError):
    """A parameters table does not describe exactly one consistent model."""


@dataclass(frozen=True)
class Validation:
    """Discrimination and calibration figures of a model on one validation sample."""

    sample: str
    month: pd.Timestamp
    rows: int
    default_rate: float
    auc: float
    gini: float
    ks: float
    brier: float


@dataclass(frozen=True)
class PdModel:
    """A fitted PD model: standardise each feature, then a logistic regression on the result.

    The arrays are stored as read-only float64 copies; `model_version` is a hash of the
    features and the numbers that determine a score, so equal versions score identically.
    `regularisation_c` and `max_iter` record the settings of the fit, so that the development
    fit behind the out-of-time figures can be repeated exactly (see fit_development_model).
    """

    features: tuple[str, ...]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    coefficients: np.ndarray
    intercept: float
    training_first_month: pd.Timestamp
    training_last_month: pd.Timestamp
    training_rows: int
    training_default_rate: float
    validation: Validation
    trained_at: datetime
    regularisation_c: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        features = tuple(str(feature) for feature in self.features)
        arrays = {
            name: _frozen_vector(getattr(self, name))
            for name in ("scaler_mean", "scaler_scale", "coefficients")
        }
        lengths = {name: len(values) for name, values in arrays.items()}
        if not features or set(lengths.values()) != {len(features)}:
            raise ModelParametersError(
                f"A PD model needs one mean, scale and coefficient per feature; got "
                f"{len(features)} features {features} and lengths {lengths}."
            )
        if len(set(features)) != len(features):
            raise ModelParametersError(f"Model features {features} repeat a name.")
        if not np.all(np.isfinite(arrays["scaler_scale"]) & (arrays["scaler_scale"] > 0)):
            raise ModelParametersError(
                f"Scaler scales {arrays['scaler_scale'].tolist()} must all be finite and > 0."
            )

        object.__setattr__(self, "features", features)
        for name, values in arrays.items():
            object.__setattr__(self, name, values)
        object.__setattr__(self, "intercept", float(self.intercept))
        object.__setattr__(self, "training_first_month", pd.Timestamp(self.training_first_month))
        object.__setattr__(self, "training_last_month", pd.Timestamp(self.training_last_month))
        object.__setattr__(self, "training_rows", int(self.training_rows))
        object.__setattr__(self, "training_default_rate", float(self.training_default_rate))
        object.__setattr__(self, "regularisation_c", float(self.regularisation_c))
        object.__setattr__(self, "max_iter", int(self.max_iter))

    # Written out because the generated __eq__ and __hash__ cannot compare numpy arrays.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PdModel):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple:
        return (
            self.features,
            tuple(self.scaler_mean.tolist()),
            tuple(self.scaler_scale.tolist()),
            tuple(self.coefficients.tolist()),
            self.intercept,
            self.training_first_month,
            self.training_last_month,
            self.training_rows,
            self.training_default_rate,
            self.validation,
            self.trained_at,
            self.regularisation_c,
            self.max_iter,
        )

    @property
    def model_version(self) -> str:
        """First 16 hex digits of a SHA-256 over the features and the exact float64 parameters."""
        digest = hashlib.sha256(json.dumps(list(self.features)).encode("utf-8"))
        numbers = (self.scaler_mean, self.scaler_scale, self.coefficients, [self.intercept])
        for values in numbers:
            # Adding 0.0 turns -0.0 into 0.0, so that equal numbers hash equally.
            digest.update((np.asarray(values, dtype="<f8") + 0.0).tobytes())
        return digest.hexdigest()[:16]

    def log_odds(self, frame: pd.DataFrame) -> np.ndarray:
        """Log-odds of default of each row of `frame`, which must hold every model feature."""
        inputs = model_inputs(frame, self.features)
        return _log_odds(
            inputs, self.scaler_mean, self.scaler_scale, self.coefficients, self.intercept
        )

    def predict_pd(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of default of each row of `frame`, in [0, 1]."""
        return _sigmoid(self.log_odds(frame))

    def contributions(self, frame: pd.DataFrame) -> np.ndarray:
        """n x k matrix: each feature's term coef_j * (x_j - mean_j) / scale_j of the log-odds.

        A positive term raises the account's PD above that of an account at the training means.
        """
        inputs = model_inputs(frame, self.features)
        return (inputs - self.scaler_mean) / self.scaler_scale * self.coefficients

    def to_parameters_table(self) -> pd.DataFrame:
        """The model as rows of the `pd_model` table, one per feature, in input order."""
        count = len(self.features)
        validation = self.validation
        columns = {
            "model_version": [self.model_version] * count,
            "feature": list(self.features),
            "feature_order": np.arange(1, count + 1, dtype="int64"),
            "scaler_mean": self.scaler_mean.copy(),
            "scaler_scale": self.scaler_scale.copy(),
            "coefficient": self.coefficients.copy(),
            "intercept": np.full(count, self.intercept),
            "training_first_month": _repeat_date(self.training_first_month, count),
            "training_last_month": _repeat_date(self.training_last_month, count),
            "training_rows": np.full(count, self.training_rows, dtype="int64"),
            "training_default_rate": np.full(count, self.training_default_rate),
            "validation_sample": [validation.sample] * count,
            "validation_month": _repeat_date(validation.month, count),
            "validation_rows": np.full(count, validation.rows, dtype="int64"),
            "validation_default_rate": np.full(count, validation.default_rate),
            "auc": np.full(count, validation.auc),
            "gini": np.full(count, validation.gini),
            "ks": np.full(count, validation.ks),
            "brier": np.full(count, validation.brier),
            "trained_at": _repeat_date(_naive_utc(self.trained_at), count),
            "regularisation_c": np.full(count, self.regularisation_c),
            "max_iter": np.full(count, self.max_iter, dtype="int64"),
        }
        return pd.DataFrame(columns, columns=list(tables.PD_MODEL.column_names))

    @classmethod
    def from_parameters_table(cls, table: pd.DataFrame) -> PdModel:
        """Rebuild the model stored in `table` (rows of one model_version, any order)."""
        _check_parameters_table(table)

        rows = table.sort_values("feature_order", kind="stable").reset_index(drop=True)
        first = rows.iloc[0]
        validation = Validation(
            sample=str(first["validation_sample"]),
            month=pd.Timestamp(first["validation_month"]),
            rows=int(first["validation_rows"]),
            default_rate=float(first["validation_default_rate"]),
            auc=float(first["auc"]),
            gini=float(first["gini"]),
            ks=float(first["ks"]),
            brier=float(first["brier"]),
        )
        model = cls(
            features=tuple(rows["feature"].astype(str)),
            scaler_mean=rows["scaler_mean"].to_numpy(dtype="float64"),
            scaler_scale=rows["scaler_scale"].to_numpy(dtype="float64"),
            coefficients=rows["coefficient"].to_numpy(dtype="float64"),
            intercept=float(first["intercept"]),
            training_first_month=pd.Timestamp(first["training_first_month"]),
            training_last_month=pd.Timestamp(first["training_last_month"]),
            training_rows=int(first["training_rows"]),
            training_default_rate=float(first["training_default_rate"]),
            validation=validation,
            trained_at=pd.Timestamp(first["trained_at"]).to_pydatetime().replace(tzinfo=UTC),
            regularisation_c=float(first["regularisation_c"]),
            max_iter=int(first["max_iter"]),
        )

        stored_version = str(first["model_version"])
        if model.model_version != stored_version:
            raise ModelParametersError(
                f"The pd_model rows are labelled model_version {stored_version!r} but their "
                f"parameters hash to {model.model_version!r}: the table was edited or lost "
                "precision. Retrain the model rather than editing its parameters."
            )
        return model


def model_inputs(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The n x k float64 matrix of `features` from `frame`; refuses missing or infinite values."""
    return _feature_matrix(frame, features, ModelInputError)


def training_frame(
    features: pd.DataFrame, streaks: pd.DataFrame, labels: pd.DataFrame
) -> pd.DataFrame:
    """Labelled training rows: features, streaks and default_flag of each (as_of_month, account).

    Every label row must find its feature and streak rows; feature rows without a label (months
    not yet mature, accounts in default at T) are left out. Sorted by month, then account.
    """
    _require_columns(features, KEYS, "features")
    _require_columns(streaks, KEYS, "streaks")
    _require_columns(labels, (*KEYS, LABEL), "labels")
    features, streaks, labels = (
        _with_month_keys(frame, name)
        for frame, name in ((features, "features"), (streaks, "streaks"), (labels, "labels"))
    )

    # Only labelled months can join: dropping the others first keeps the merges to the size of
    # the training rows, a fraction of a large book's year of features.
    labelled_months = labels["as_of_month"].unique()
    features = features[features["as_of_month"].isin(labelled_months)]
    streaks = streaks[streaks["as_of_month"].isin(labelled_months)]
    streak_columns = [column for column in streaks.columns if column not in features.columns]
    inputs = features.merge(streaks[[*KEYS, *streak_columns]], on=list(KEYS), how="inner")
    joined = labels[[*KEYS, LABEL]].merge(inputs, on=list(KEYS), how="left", indicator=True)

    unmatched = joined["_merge"] == "left_only"
    if unmatched.any():
        counts = _rows_per_month(joined.loc[unmatched, "as_of_month"])
        raise TrainingDataError(
            f"{int(unmatched.sum())} label rows have no feature or streak row "
            f"(rows per month: {counts}). Materialise account_features and streaks for "
            "those months before training."
        )

    ordered = [*KEYS, *[c for c in inputs.columns if c not in KEYS], LABEL]
    training = joined.loc[:, ordered].sort_values(list(KEYS), kind="stable")
    return training.reset_index(drop=True)


def classification_metrics(y_true: ArrayLike, pd_score: ArrayLike) -> dict[str, float]:
    """AUC, Gini (2 * AUC - 1), KS and Brier score of PDs against 0/1 outcomes.

    KS is the largest distance between the cumulative distributions of the score among
    defaults and among non-defaults, evaluated at every distinct score.
    """
    outcomes = np.asarray(y_true)
    scores = np.asarray(pd_score, dtype="float64")
    _check_scored_outcomes(outcomes, scores)

    auc = float(roc_auc_score(outcomes, scores))
    return {
        "auc": auc,
        "gini": 2.0 * auc - 1.0,
        "ks": _ks_statistic(outcomes.astype("int64"), scores),
        "brier": float(brier_score_loss(outcomes, scores)),
    }


def train_pd_model(
    training: pd.DataFrame,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    *,
    out_of_time: bool = True,
    regularisation_c: float = 1.0,
    max_iter: int = 1000,
) -> PdModel:
    """Fit the PD model on stacked (account, as_of_month) rows with a `default_flag` column.

    With `out_of_time`, a fit on all months but the latest gives the validation figures on the
    latest month; the published model is then refitted on every month with the same settings.
    Without it (notebook mode), the figures are measured on the training rows themselves.
    """
    features = _check_model_settings(features, regularisation_c, max_iter)
    rows = _check_training_rows(training, features)
    months = rows["as_of_month"]
    latest = months.max()

    if out_of_time:
        development = _fit_development(rows, features, regularisation_c, max_iter)
        validation = development.validation
        published = _fit(rows, features, regularisation_c, max_iter, "training")
    else:
        published = _fit(rows, features, regularisation_c, max_iter, "training")
        validation = _validate(rows, features, published, IN_SAMPLE, latest)

    mean, scale, coefficients, intercept = published
    return PdModel(
        features=features,
        scaler_mean=mean,
        scaler_scale=scale,
        coefficients=coefficients,
        intercept=intercept,
        training_first_month=months.min(),
        training_last_month=latest,
        training_rows=len(rows),
        training_default_rate=float(rows[LABEL].mean()),
        validation=validation,
        # Whole seconds, because a DATETIME column without fractional seconds keeps no more.
        trained_at=datetime.now(UTC).replace(microsecond=0),
        regularisation_c=regularisation_c,
        max_iter=max_iter,
    )


def fit_development_model(
    training: pd.DataFrame,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    *,
    regularisation_c: float = 1.0,
    max_iter: int = 1000,
) -> PdModel:
    """The fit on every month but the latest, validated out of time on the latest month.

    This is the fit whose figures train_pd_model publishes as the out-of-time validation; with
    the same rows and settings it returns exactly the same numbers, so a validation step can
    score the development and holdout rows without storing a second model.
    """
    features = _check_model_settings(features, regularisation_c, max_iter)
    rows = _check_training_rows(training, features)
    return _fit_development(rows, features, regularisation_c, max_iter)


def risk_drivers(model: PdModel) -> pd.DataFrame:
    """The model's features ranked by |coefficient|, with odds ratios per standard deviation.

    direction is "raises PD" for a positive coefficient, "lowers PD" for a negative one and
    "no effect" for a coefficient of exactly 0. Ties in |coefficient| keep the input order.
    """
    coefficients = model.coefficients
    order = np.argsort(-np.abs(coefficients), kind="stable")
    ranks = np.empty(len(order), dtype="int64")
    ranks[order] = np.arange(1, len(order) + 1)
    direction = np.select(
        [coefficients > 0, coefficients < 0], ["raises PD", "lowers PD"], default="no effect"
    )

    drivers = pd.DataFrame(
        {
            "model_version": [model.model_version] * len(coefficients),
            "feature": list(model.features),
            "coefficient": coefficients.copy(),
            "odds_ratio": np.exp(coefficients),
            "driver_rank": ranks,
            "direction": direction.tolist(),
        },
        columns=list(tables.RISK_DRIVERS.column_names),
    )
    return drivers.sort_values("driver_rank").reset_index(drop=True)


_Parameters = tuple[np.ndarray, np.ndarray, np.ndarray, float]


def _fit(
    rows: pd.DataFrame, features: tuple[str, ...], c: float, max_iter: int, sample: str
) -> _Parameters:
    """Scaler and logistic parameters fitted on `rows`, after checking they can be fitted."""
    outcomes = rows[LABEL].to_numpy(dtype="int64")
    _require_both_classes(rows, sample)
    inputs = rows.loc[:, list(features)].to_numpy(dtype="float64")
    _require_variance(inputs, rows["as_of_month"], features, sample)

    scaler = StandardScaler()
    standardised = scaler.fit_transform(inputs)
    regression = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            regression.fit(standardised, outcomes)
        except ConvergenceWarning as warning:
            raise ModelFitError(
                f"The logistic regression on the {sample} sample ({len(rows)} rows) did not "
                f"converge in max_iter={max_iter} iterations. Raise max_iter or lower "
                f"regularisation_c (now {c})."
            ) from warning

    return scaler.mean_, scaler.scale_, regression.coef_[0], float(regression.intercept_[0])


def _fit_development(
    rows: pd.DataFrame, features: tuple[str, ...], c: float, max_iter: int
) -> PdModel:
    """A fit on the earlier months, with its figures on the latest month, which it never sees."""
    months = rows["as_of_month"]
    if months.nunique() < 2:
        raise TrainingDataError(
            f"An out-of-time holdout needs at least 2 as-of months; the training rows hold "
            f"{_rows_per_month(months)}. Add mature months, or train in notebook mode."
        )

    latest = months.max()
    development = rows[months < latest]
    fitted = _fit(development, features, c, max_iter, "development")
    validation = _validate(rows[months == latest], features, fitted, OUT_OF_TIME, latest)
    mean, scale, coefficients, intercept = fitted
    return PdModel(
        features=features,
        scaler_mean=mean,
        scaler_scale=scale,
        coefficients=coefficients,
        intercept=intercept,
        training_first_month=months.min(),
        training_last_month=development["as_of_month"].max(),
        training_rows=len(development),
        training_default_rate=float(development[LABEL].mean()),
        validation=validation,
        trained_at=datetime.now(UTC).replace(microsecond=0),
        regularisation_c=c,
        max_iter=max_iter,
    )


def _validate(
    rows: pd.DataFrame,
    features: tuple[str, ...],
    parameters: _Parameters,
    sample: str,
    month: pd.Timestamp,
) -> Validation:
    """Figures of the fitted `parameters` on `rows`."""
    _require_both_classes(rows, f"{sample.replace('_', '-')} validation")
    inputs = rows.loc[:, list(features)].to_numpy(dtype="float64")
    outcomes = rows[LABEL].to_numpy(dtype="int64")
    scores = _sigmoid(_log_odds(inputs, *parameters))
    metrics = classification_metrics(outcomes, scores)
    return Validation(
        sample=sample,
        month=pd.Timestamp(month),
        rows=len(rows),
        default_rate=float(outcomes.mean()),
        **metrics,
    )


def _log_odds(
    inputs: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    coefficients: np.ndarray,
    intercept: float,
) -> np.ndarray:
    # Same operations, in the same order, as StandardScaler.transform then decision_function.
    return ((inputs - mean) / scale) @ coefficients + intercept


def _sigmoid(log_odds: np.ndarray) -> np.ndarray:
    # exp of a non-positive number never overflows, whichever sign the log-odds has.
    exp_negative_abs = np.exp(-np.abs(log_odds))
    return np.where(
        log_odds >= 0,
        1.0 / (1.0 + exp_negative_abs),
        exp_negative_abs / (1.0 + exp_negative_abs),
    )


def _ks_statistic(outcomes: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_outcomes = outcomes[order]
    defaults_below = np.cumsum(sorted_outcomes) / sorted_outcomes.sum()
    others_below = np.cumsum(1 - sorted_outcomes) / (len(sorted_outcomes) - sorted_outcomes.sum())

    # The CDFs are only defined after the last row of each run of equal scores.
    last_of_value = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    return float(np.max(np.abs(defaults_below - others_below)[last_of_value]))


def _check_scored_outcomes(outcomes: np.ndarray, scores: np.ndarray) -> None:
    if outcomes.shape != scores.shape or outcomes.ndim != 1:
        raise ValueError(
            f"Outcomes {outcomes.shape} and scores {scores.shape} must be 1-d and of equal length."
        )
    if not np.isin(outcomes, (0, 1)).all():
        raise ValueError(
            f"Outcomes must be 0 or 1; found values {np.unique(outcomes)[:10].tolist()}."
        )
    if not (np.isfinite(scores) & (scores >= 0) & (scores <= 1)).all():
        raise ValueError("Scores must be probabilities in [0, 1] with no missing value.")
    defaults = int(outcomes.sum())
    if defaults in (0, len(outcomes)):
        raise ValueError(
            f"Metrics need defaults and non-defaults; got {defaults} defaults in "
            f"{len(outcomes)} rows."
        )


def _check_model_settings(
    features: Sequence[str], regularisation_c: float, max_iter: int
) -> tuple[str, ...]:
    features = tuple(features)
    if not features or len(set(features)) != len(features):
        raise TrainingDataError(
            f"The model feature list {list(features)} must be non-empty with no repeats."
        )
    if not regularisation_c > 0:
        raise TrainingDataError(f"regularisation_c={regularisation_c} must be > 0, e.g. 1.0.")
    if max_iter < 1:
        raise TrainingDataError(f"max_iter={max_iter} must be at least 1, e.g. 1000.")
    return features


def _check_training_rows(training: pd.DataFrame, features: tuple[str, ...]) -> pd.DataFrame:
    """The training rows sorted by month and account, after checking columns and values."""
    _require_columns(training, ("as_of_month", LABEL, *features), "training rows")
    if training.empty:
        raise TrainingDataError("The training frame has no rows: no mature month has labels yet.")
    rows = _with_month_keys(training, "training rows")

    labels = rows[LABEL]
    bad_labels = labels.isna() | ~labels.isin([0, 1])
    if bad_labels.any():
        raise TrainingDataError(
            f"{int(bad_labels.sum())} training rows have a default_flag other than 0 or 1 "
            f"(rows per month: {_rows_per_month(rows.loc[bad_labels, 'as_of_month'])})."
        )
    _feature_matrix(rows, features, TrainingDataError)

    # A fixed row order makes the fit reproducible whatever order the rows were read in.
    sort_keys = [key for key in KEYS if key in rows.columns]
    return rows.sort_values(sort_keys, kind="stable").reset_index(drop=True)


def _feature_matrix(
    frame: pd.DataFrame, features: Sequence[str], error: type[ValueError]
) -> np.ndarray:
    missing = [feature for feature in features if feature not in frame.columns]
    if missing:
        raise error(
            f"The frame lacks model features {missing}; it has columns {list(frame.columns)}. "
            "Join the features and streaks of the same month first."
        )

    inputs = frame.loc[:, list(features)].to_numpy(dtype="float64", na_value=np.nan)
    invalid_rows = (~np.isfinite(inputs)).sum(axis=0)
    if invalid_rows.any():
        counts = {f: int(n) for f, n in zip(features, invalid_rows, strict=True) if n}
        raise error(
            f"Model features hold missing or infinite values (rows per feature: {counts}). "
            "Every feature must be a finite number: check the feature computation."
        )
    return inputs


def _require_both_classes(rows: pd.DataFrame, sample: str) -> None:
    defaults = int(rows[LABEL].sum())
    if 0 < defaults < len(rows):
        return
    only = "default_flag 1 (all defaults)" if defaults else "default_flag 0 (no defaults)"
    raise TrainingDataError(
        f"The {sample} sample holds a single class: all {len(rows)} rows have {only}; "
        f"rows and defaults per month: {_defaults_per_month(rows)}. A PD model needs both "
        "defaults and non-defaults: add months or check the default rule and its window."
    )


def _require_variance(
    inputs: np.ndarray, months: pd.Series, features: tuple[str, ...], sample: str
) -> None:
    constant = np.ptp(inputs, axis=0) == 0
    if constant.any():
        values = {f: float(inputs[0, j]) for j, f in enumerate(features) if constant[j]}
        raise TrainingDataError(
            f"Features {list(values)} have zero variance in the {sample} sample "
            f"({len(inputs)} rows, months {_month_span(months)}); their values: {values}. "
            "Drop them from the feature list or check the feature computation."
        )


def _check_parameters_table(table: pd.DataFrame) -> None:
    missing = [name for name in tables.PD_MODEL.column_names if name not in table.columns]
    if missing:
        raise ModelParametersError(
            f"The parameters table lacks columns {missing}; read the whole pd_model table."
        )
    versions = sorted(table["model_version"].dropna().astype(str).unique())
    if len(versions) != 1:
        raise ModelParametersError(
            f"The parameters table must hold exactly one model_version; it holds {versions}. "
            "Select the rows of one model_version before rebuilding the model."
        )
    if table["feature"].duplicated().any() or table["feature_order"].duplicated().any():
        raise ModelParametersError(
            f"Model {versions[0]} lists a feature or feature_order twice: "
            f"{table[['feature', 'feature_order']].to_dict('records')}."
        )
    per_model = [c for c in tables.PD_MODEL.column_names if c not in _PER_FEATURE_COLUMNS]
    varying = [c for c in per_model if table[c].nunique(dropna=False) > 1]
    if varying:
        raise ModelParametersError(
            f"Model {versions[0]} has different values of {varying} on different rows; "
            "these columns describe the whole model and must repeat on every row."
        )


_PER_FEATURE_COLUMNS = {"feature", "feature_order", "scaler_mean", "scaler_scale", "coefficient"}


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise TrainingDataError(
            f"The {name} frame lacks columns {missing}; it has {list(frame.columns)}."
        )


def _with_month_keys(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """A copy of `frame` with as_of_month as datetime64[ns], refusing duplicate keys."""
    frame = frame.copy()
    frame["as_of_month"] = pd.to_datetime(frame["as_of_month"]).astype("datetime64[ns]")
    keys = [key for key in KEYS if key in frame.columns]
    duplicated = frame.duplicated(keys)
    if len(keys) == len(KEYS) and duplicated.any():
        raise TrainingDataError(
            f"The {name} frame repeats {int(duplicated.sum())} (as_of_month, account_id) keys "
            f"(rows per month: {_rows_per_month(frame.loc[duplicated, 'as_of_month'])})."
        )
    return frame


def _rows_per_month(months: pd.Series) -> str:
    counts = pd.to_datetime(months).dt.strftime("%Y-%m").value_counts().sort_index()
    return ", ".join(f"{month}: {count} rows" for month, count in counts.items())


def _defaults_per_month(rows: pd.DataFrame) -> str:
    summary = (
        rows.assign(month=rows["as_of_month"].dt.strftime("%Y-%m"))
        .groupby("month")[LABEL]
        .agg(["size", "sum"])
    )
    return "; ".join(
        f"{month}: {int(size)} rows, {int(total)} defaults"
        for month, size, total in summary.itertuples()
    )


def _month_span(months: pd.Series) -> str:
    return f"{months.min():%Y-%m}..{months.max():%Y-%m}"


def _frozen_vector(values: Sequence[float] | np.ndarray) -> np.ndarray:
    vector = np.array(values, dtype="float64").reshape(-1)
    vector.flags.writeable = False
    return vector


def _repeat_date(value: pd.Timestamp | datetime, count: int) -> pd.Series:
    return pd.Series([pd.Timestamp(value)] * count, dtype="datetime64[ns]")


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
