"""Validation of the PD model and stability of its scores: tables, pictures and checks."""

from collections.abc import Iterator

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    AssetsDefinition,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import Field

from credit_risk_assets.assets.common import (
    RISK_TEAM,
    WAREHOUSE_IO_MANAGER,
    column_lineage,
    month_label,
    months_text,
    narrow_input,
    partition_months,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.model import (
    KEYS,
    LABEL_COLUMNS,
    ModelParametersError,
    PdModel,
    TrainingDataError,
    training_frame,
)
from credit_risk_assets.compute.plots import calibration_png, markdown_image, roc_curve_png
from credit_risk_assets.compute.validation import (
    DEFAULT_FAIL_PSI,
    DEFAULT_WARN_PSI,
    SCORE_VARIABLE,
    ScoredSample,
    ValidationMismatchError,
    baseline_table,
    calibration_table,
    coefficient_sign_checks,
    performance_table,
    stability_of_month,
    validation_samples,
)
from credit_risk_assets.partitions import SINGLE_RUN_BACKFILL, PipelineWindows
from credit_risk_assets.tables import (
    DEFAULT_FLAGS,
    MODEL_CALIBRATION,
    MODEL_PERFORMANCE,
    SCORE_STABILITY,
    STABILITY_BASELINE,
)
from credit_risk_assets.warehouse.schema import TableSpec

GROUP = "validation"
VALIDATION_TABLES = (MODEL_PERFORMANCE, MODEL_CALIBRATION, STABILITY_BASELINE)
SCORE_PSI_CHECK = "score_psi"
FEATURE_PSI_CHECK = "feature_psi"
METRICS = ("auc", "gini", "ks", "brier", "brier_skill", "base_rate", "mean_pd")
PSI_ADVICE = (
    " Compare that month's bins with stability_baseline; if the book has really changed, "
    "retrain pd_model on recent months, otherwise check the source month."
)


class StabilityConfig(Config):
    """PSI thresholds of the stability checks: warn from warn_psi, fail from fail_psi."""

    warn_psi: float = Field(
        DEFAULT_WARN_PSI, gt=0, description="PSI from which a month is flagged (WARN)."
    )
    fail_psi: float = Field(
        DEFAULT_FAIL_PSI,
        gt=0,
        description="PSI from which a month fails the check (ERROR; blocking for the score).",
    )


def read_model(pd_model: pd.DataFrame, reader: str) -> PdModel:
    """The model stored in the pd_model rows, or a Failure that says to materialise it."""
    if pd_model.empty:
        raise Failure(description=f"pd_model is empty: materialise pd_model before {reader}.")
    try:
        return PdModel.from_parameters_table(pd_model)
    except ModelParametersError as error:
        raise Failure(description=str(error)) from error


def validation_metadata(
    samples: list[ScoredSample], performance: pd.DataFrame
) -> dict[str, object]:
    """Figures of each sample and the ROC picture, for the model_performance materialisation."""
    metadata: dict[str, object] = {}
    for row in performance.itertuples(index=False):
        metadata.update({f"{row.sample}/{name}": float(getattr(row, name)) for name in METRICS})
        metadata[f"{row.sample}/accounts"] = int(row.accounts)
        metadata[f"{row.sample}/months"] = months_text(
            list(pd.date_range(row.first_month, row.last_month, freq="MS"))
        )
    curves = {sample.name: (sample.outcomes, sample.pd_score) for sample in samples}
    metadata["roc_curve"] = MetadataValue.md(markdown_image(roc_curve_png(curves), "ROC curve"))
    return metadata


def calibration_metadata(calibration: pd.DataFrame) -> dict[str, object]:
    """The calibration table and its picture, for the model_calibration materialisation."""
    shown = calibration[
        ["sample", "risk_grade", "accounts", "expected_default_rate", "observed_default_rate"]
    ]
    worst = calibration["z_score"].abs().max()
    return {
        "calibration": MetadataValue.md(shown.to_markdown(index=False, floatfmt=".4f")),
        "largest_abs_z_score": float(worst) if pd.notna(worst) else 0.0,
        "calibration_plot": MetadataValue.md(
            markdown_image(calibration_png(calibration), "Calibration by grade")
        ),
    }


# The columns of risk_scores that score stability uses.
SCORED_COLUMNS = (*KEYS, "pd_score", "in_default", "model_version")


def scored_rows(
    risk_scores: pd.DataFrame, account_features: pd.DataFrame, streaks: pd.DataFrame
) -> pd.DataFrame:
    """Accounts scored by the model (not in default) with their PD and model features."""
    scored = risk_scores.loc[risk_scores["in_default"] == 0, [*KEYS, "pd_score", "model_version"]]
    streak_columns = [c for c in streaks.columns if c not in account_features.columns]
    inputs = account_features.merge(streaks[[*KEYS, *streak_columns]], on=list(KEYS))
    return scored.merge(inputs, on=list(KEYS), how="inner")


def require_same_model(rows: pd.DataFrame, model_version: str) -> None:
    """Refuse to compare scores of one model with the training sample of another."""
    others = rows.loc[rows["model_version"] != model_version]
    if len(others):
        months = months_text(sorted(pd.to_datetime(others["as_of_month"]).unique()))
        versions = sorted(others["model_version"].unique())
        raise Failure(
            description=(
                f"risk_scores of {months} were scored by model {versions}, but the stability "
                f"baseline belongs to model {model_version}. Re-materialise risk_scores for "
                "those months first."
            )
        )


def psi_check(
    stability: pd.DataFrame,
    check_name: str,
    variables: list[str],
    newly_scored: list[pd.Timestamp],
    config: StabilityConfig,
) -> AssetCheckResult:
    """Pass below warn_psi; WARN from it; ERROR from fail_psi, over the newly scored months."""
    judged = stability[
        stability["variable"].isin(variables) & stability["as_of_month"].isin(newly_scored)
    ]
    if judged.empty:
        return AssetCheckResult(
            check_name=check_name,
            passed=True,
            description="No month scored after the model's training sample in this run.",
        )

    worst = judged.loc[judged["psi"].idxmax()]
    psi = float(worst["psi"])
    severity = AssetCheckSeverity.ERROR if psi >= config.fail_psi else AssetCheckSeverity.WARN
    where = f"{worst['variable']} in {month_label(worst['as_of_month'])}"
    advice = "" if psi < config.warn_psi else PSI_ADVICE
    return AssetCheckResult(
        check_name=check_name,
        passed=psi < config.warn_psi,
        severity=severity,
        description=(
            f"Largest PSI {psi:.3f} ({where}, bin {worst['largest_shift_bin']}) against warn "
            f"{config.warn_psi} and fail {config.fail_psi}, over {months_text(newly_scored)}."
            f"{advice}"
        ),
        metadata={
            "largest_psi": psi,
            "variable": str(worst["variable"]),
            "month": month_label(worst["as_of_month"]),
            "warn_psi": config.warn_psi,
            "fail_psi": config.fail_psi,
            "months_judged": months_text(newly_scored),
        },
    )


def _validation_out(spec: TableSpec) -> AssetOut:
    return AssetOut(
        io_manager_key=WAREHOUSE_IO_MANAGER,
        description=spec.description,
        metadata=table_metadata(spec),
        group_name=GROUP,
        owners=[RISK_TEAM],
        kinds={"mysql", "pandas"},
    )


def build_validation_assets(windows: PipelineWindows) -> list[AssetsDefinition]:
    """The model's validation tables, its coefficient-sign check, and monthly score stability."""

    @multi_asset(
        name="model_validation",
        # One pool for the three tables it writes: one slot, one writer at a time.
        pool="model_validation",
        outs={spec.name: _validation_out(spec) for spec in VALIDATION_TABLES},
        ins={
            "pd_model": AssetIn(),
            "account_features": narrow_input(months_of=DEFAULT_FLAGS),
            "streaks": narrow_input(months_of=DEFAULT_FLAGS),
            "default_flags": narrow_input(LABEL_COLUMNS),
        },
    )
    def model_validation(
        context: AssetExecutionContext,
        pd_model: pd.DataFrame,
        account_features: pd.DataFrame,
        streaks: pd.DataFrame,
        default_flags: pd.DataFrame,
    ) -> Iterator[Output]:
        """Performance and calibration of the PD model per sample, and its training bins."""
        model = read_model(pd_model, "its validation")
        try:
            training = training_frame(account_features, streaks, default_flags)
            samples = validation_samples(training, model)
        except (TrainingDataError, ValidationMismatchError) as error:
            raise Failure(description=str(error)) from error

        performance = performance_table(samples, model)
        calibration = calibration_table(samples, model)
        baseline = baseline_table(training, model)

        headline = performance.iloc[-1]
        context.log.info(
            f"Validated model {model.model_version}: {headline['sample']} AUC "
            f"{headline['auc']:.3f}, Brier skill {headline['brier_skill']:.3f}"
        )
        yield Output(performance, "model_performance", validation_metadata(samples, performance))
        yield Output(calibration, "model_calibration", calibration_metadata(calibration))
        yield Output(
            baseline,
            "stability_baseline",
            {"training_account_months": int(model.training_rows)},
        )

    @asset_check(
        asset="pd_model",
        name="coefficient_signs",
        description=(
            "Warns when a coefficient has the opposite sign to the one expected: more "
            "delinquency must not lower the PD."
        ),
    )
    def coefficient_signs(pd_model: pd.DataFrame) -> AssetCheckResult:
        """Each coefficient's sign against its expected direction (WARN on a flip)."""
        model = read_model(pd_model, "checking its coefficients")
        checks = coefficient_sign_checks(model.features, model.coefficients)

        flipped = checks.loc[~checks["as_expected"]]
        names = ", ".join(
            f"{row.feature} ({row.coefficient:+.3f})" for row in flipped.itertuples(index=False)
        )
        return AssetCheckResult(
            passed=flipped.empty,
            severity=AssetCheckSeverity.WARN,
            description=(
                f"Coefficients that lower the PD as delinquency rises: {names}. Usually "
                "collinear features; consider dropping one of them from the feature list."
                if len(flipped)
                else "Every coefficient has its expected sign."
            ),
            metadata={
                "flipped_features": ", ".join(flipped["feature"]) or "none",
                "coefficients": MetadataValue.md(checks.to_markdown(index=False, floatfmt="+.4f")),
            },
        )

    @asset(
        name="score_stability",
        partitions_def=windows.months,
        backfill_policy=SINGLE_RUN_BACKFILL,
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name=GROUP,
        kinds={"mysql", "pandas"},
        owners=[RISK_TEAM],
        metadata=table_metadata(SCORE_STABILITY),
        pool=table_pool(SCORE_STABILITY),
        ins={
            "stability_baseline": AssetIn(),
            "pd_model": AssetIn(),
            "account_features": AssetIn(),
            "streaks": AssetIn(),
            "risk_scores": narrow_input(SCORED_COLUMNS),
        },
        check_specs=[
            AssetCheckSpec(
                SCORE_PSI_CHECK,
                asset="score_stability",
                blocking=True,
                description=(
                    "PSI of the score (by grade) in each month scored after the training "
                    "sample: WARN from warn_psi (0.10), ERROR and blocking from fail_psi (0.25)."
                ),
            ),
            AssetCheckSpec(
                FEATURE_PSI_CHECK,
                asset="score_stability",
                description=(
                    "PSI of each model feature in each month scored after the training "
                    "sample: WARN from warn_psi (0.10), ERROR from fail_psi (0.25)."
                ),
            ),
        ],
    )
    def score_stability(
        context: AssetExecutionContext,
        config: StabilityConfig,
        stability_baseline: pd.DataFrame,
        pd_model: pd.DataFrame,
        account_features: pd.DataFrame,
        streaks: pd.DataFrame,
        risk_scores: pd.DataFrame,
    ) -> Iterator[Output | AssetCheckResult]:
        """PSI of the score and of each model feature of month T against the training sample."""
        model = read_model(pd_model, "measuring score stability")
        baseline = stability_baseline[stability_baseline["model_version"] == model.model_version]
        if baseline.empty:
            raise Failure(
                description=(
                    f"stability_baseline holds no bins of model {model.model_version}: "
                    "materialise model_validation (model_performance, model_calibration, "
                    "stability_baseline) after pd_model."
                )
            )
        rows = scored_rows(risk_scores, account_features, streaks)
        require_same_model(rows, model.model_version)

        stability = _stability_by_month(rows, baseline, model, config)

        months = partition_months(context)
        newly_scored = [m for m in months if m > model.training_last_month]
        yield Output(stability, metadata=_stability_metadata(stability, months))
        yield psi_check(stability, SCORE_PSI_CHECK, [SCORE_VARIABLE], newly_scored, config)
        yield psi_check(stability, FEATURE_PSI_CHECK, list(model.features), newly_scored, config)

    return [model_validation, coefficient_signs, score_stability]


def _stability_by_month(
    rows: pd.DataFrame, baseline: pd.DataFrame, model: PdModel, config: StabilityConfig
) -> pd.DataFrame:
    parts = []
    for month, month_rows in rows.groupby("as_of_month", sort=True):
        try:
            stability = stability_of_month(
                baseline, month_rows, model.features, config.warn_psi, config.fail_psi
            )
        except ValueError as error:
            raise Failure(description=str(error)) from error
        parts.append(stability.assign(as_of_month=month, model_version=model.model_version))
    if not parts:
        return SCORE_STABILITY.empty_frame()
    return SCORE_STABILITY.conform(
        pd.concat(parts, ignore_index=True)[list(SCORE_STABILITY.column_names)]
    )


def _stability_metadata(stability: pd.DataFrame, months: list[pd.Timestamp]) -> dict[str, object]:
    if stability.empty:
        return {"as_of_months": months_text(months), "scored_months": "none"}
    score = stability[stability["variable"] == SCORE_VARIABLE]
    by_month = stability.pivot(index="as_of_month", columns="variable", values="psi")
    by_month.index = [month_label(month) for month in by_month.index]
    return {
        "dagster/column_lineage": column_lineage(
            {
                "as_of_month": [("risk_scores", "as_of_month")],
                "psi": [
                    ("risk_scores", "pd_score"),
                    ("stability_baseline", "share"),
                    ("account_features", "avg_dpd"),
                    ("streaks", "delinquency_streak"),
                ],
            }
        ),
        "as_of_months": months_text(months),
        "latest_score_psi": float(score["psi"].iloc[-1]) if len(score) else 0.0,
        "psi_by_month": MetadataValue.md(by_month.to_markdown(floatfmt=".3f")),
        "months_monitor_or_shifted": int((score["stability"] != "stable").sum()),
        "largest_psi": float(stability["psi"].max()),
    }
