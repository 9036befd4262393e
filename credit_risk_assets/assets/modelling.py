"""Forward-looking default labels, the PD model fitted on them, and the model's risk drivers."""

from datetime import date

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, Failure, asset
from pydantic import Field

from credit_risk_assets.assets.common import (
    RISK_TEAM,
    WAREHOUSE_IO_MANAGER,
    column_lineage,
    missing_months,
    month_label,
    months_text,
    narrow_input,
    partition_months,
    table_metadata,
    table_pool,
)
from credit_risk_assets.compute.labels import DefaultRule, forward_labels, notebook_labels
from credit_risk_assets.compute.model import (
    DEFAULT_MODEL_FEATURES,
    LABEL_COLUMNS,
    PdModel,
    TrainingDataError,
    train_pd_model,
    training_frame,
)
from credit_risk_assets.compute.model import (
    risk_drivers as compute_risk_drivers,
)
from credit_risk_assets.partitions import SINGLE_RUN_BACKFILL, PipelineWindows
from credit_risk_assets.tables import DEFAULT_FLAGS, PD_MODEL, RISK_DRIVERS

SNAPSHOT = "delinquency_snapshot"

LABEL_LINEAGE = {
    "as_of_month": [(SNAPSHOT, "billing_cycle")],
    "account_id": [(SNAPSHOT, "account_id")],
    "default_flag": [(SNAPSHOT, "days_past_due"), (SNAPSHOT, "is_delinquent")],
    "perf_months_observed": [(SNAPSHOT, "billing_cycle")],
    "perf_max_dpd": [(SNAPSHOT, "days_past_due")],
    "perf_delinquency_ratio": [(SNAPSHOT, "is_delinquent")],
    "perf_default_like_cycles": [(SNAPSHOT, "days_past_due")],
}


class DefaultRuleConfig(Config):
    """Thresholds of the behavioural default flag (any one of them flags a default)."""

    min_default_like_cycles: int = Field(1, ge=1, description="Cycles at 90+ DPD that flag.")
    min_max_dpd: int = Field(90, ge=1, description="Maximum DPD that flags.")
    min_delinquency_ratio: float = Field(
        0.6, gt=0, le=1, description="Share of delinquent cycles that flags."
    )

    def rule(self) -> DefaultRule:
        """These thresholds as the computation's rule."""
        return DefaultRule(
            min_default_like_cycles=self.min_default_like_cycles,
            min_max_dpd=self.min_max_dpd,
            min_delinquency_ratio=self.min_delinquency_ratio,
        )


class ModelConfig(Config):
    """Inputs and settings of the logistic regression."""

    features: list[str] = Field(
        default=list(DEFAULT_MODEL_FEATURES),
        description="Columns of account_features and streaks the model uses, in order.",
    )
    regularisation_c: float = Field(
        1.0, gt=0, description="Inverse L2 regularisation strength (scikit-learn's C)."
    )
    max_iter: int = Field(1000, ge=10, description="Iteration limit of the lbfgs solver.")


def label_months_of(context: AssetExecutionContext, windows: PipelineWindows) -> list:
    """The run's months that are partitions of the labels (a range run may reach past them)."""
    own_keys = set(windows.label_months.get_partition_keys())
    return [m for m in partition_months(context) if m.strftime("%Y-%m-%d") in own_keys]


def require_window_months(snapshot: pd.DataFrame, months: list[pd.Timestamp], horizon: int) -> None:
    """Refuse labels whose performance window is not wholly in the warehouse."""
    needed = pd.date_range(months[0], months[-1] + pd.DateOffset(months=horizon), freq="MS")
    absent = missing_months(snapshot, "billing_cycle", list(needed))
    if absent:
        raise Failure(
            description=(
                f"Labels of {months_text(months)} need delinquency_snapshot for "
                f"{months_text(absent)}, which the warehouse does not hold. Materialise "
                "delinquency_snapshot for those months first."
            )
        )


def model_metadata(model: PdModel, training: pd.DataFrame) -> dict[str, object]:
    """Validation figures and training sample of a fitted model, for the UI."""
    validation = model.validation
    months = sorted(pd.to_datetime(training["as_of_month"]).unique())
    return {
        "model_version": model.model_version,
        "validation_sample": validation.sample,
        "validation_month": month_label(validation.month),
        "validation_rows": validation.rows,
        "auc": float(validation.auc),
        "gini": float(validation.gini),
        "ks": float(validation.ks),
        "brier": float(validation.brier),
        "validation_default_rate": float(validation.default_rate),
        "training_months": months_text(months),
        "training_rows": model.training_rows,
        "training_default_rate": float(model.training_default_rate),
    }


def build_modelling_assets(windows: PipelineWindows) -> list[AssetsDefinition]:
    """default_flags on the mature months, pd_model over all of them, and risk_drivers."""

    @asset(
        name="default_flags",
        pool=table_pool(DEFAULT_FLAGS),
        partitions_def=windows.label_months,
        backfill_policy=SINGLE_RUN_BACKFILL,
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name="modelling",
        kinds={"mysql", "pandas"},
        owners=[RISK_TEAM],
        metadata=table_metadata(DEFAULT_FLAGS),
        ins={SNAPSHOT: AssetIn(partition_mapping=windows.performance)},
    )
    def default_flags(
        context: AssetExecutionContext,
        config: DefaultRuleConfig,
        delinquency_snapshot: pd.DataFrame,
    ) -> pd.DataFrame:
        """Default labels of T: the default flag over the months after T (mature months only)."""
        months = label_months_of(context, windows)

        if windows.notebook_mode:
            require_window_months(delinquency_snapshot, months, 0)
            labels = notebook_labels(
                delinquency_snapshot, months, windows.lookback_months, config.rule()
            )
        else:
            require_window_months(delinquency_snapshot, months, windows.horizon_months)
            labels = forward_labels(
                delinquency_snapshot,
                months,
                windows.horizon_months,
                config.rule(),
                today=date.today(),
            )

        context.add_output_metadata(
            {
                "dagster/column_lineage": column_lineage(LABEL_LINEAGE),
                "as_of_months": months_text(months),
                "default_rate": float(labels["default_flag"].mean()) if len(labels) else 0.0,
                "defaults": int(labels["default_flag"].sum()),
            }
        )
        return labels

    @asset(
        name="pd_model",
        pool=table_pool(PD_MODEL),
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name="modelling",
        kinds={"mysql", "scikitlearn"},
        owners=[RISK_TEAM],
        metadata=table_metadata(PD_MODEL),
        ins={
            "account_features": narrow_input(months_of=DEFAULT_FLAGS),
            "streaks": narrow_input(months_of=DEFAULT_FLAGS),
            "default_flags": narrow_input(LABEL_COLUMNS),
        },
    )
    def pd_model(
        context: AssetExecutionContext,
        config: ModelConfig,
        account_features: pd.DataFrame,
        streaks: pd.DataFrame,
        default_flags: pd.DataFrame,
    ) -> pd.DataFrame:
        """Parameters and validation figures of the PD model fitted on every labelled month."""
        if windows.notebook_mode and len(default_flags):
            # The notebook fitted one in-sample snapshot: the latest labelled month.
            latest = default_flags["as_of_month"].max()
            default_flags = default_flags[default_flags["as_of_month"] == latest]

        try:
            training = training_frame(account_features, streaks, default_flags)
            model = train_pd_model(
                training,
                config.features,
                out_of_time=not windows.notebook_mode,
                regularisation_c=config.regularisation_c,
                max_iter=config.max_iter,
            )
        except TrainingDataError as error:
            raise Failure(description=str(error)) from error

        context.log.info(
            f"Fitted model {model.model_version} on {model.training_rows} account-months; "
            f"{model.validation.sample} AUC {model.validation.auc:.3f}"
        )
        context.add_output_metadata(model_metadata(model, training))
        return model.to_parameters_table()

    @asset(
        name="risk_drivers",
        pool=table_pool(RISK_DRIVERS),
        io_manager_key=WAREHOUSE_IO_MANAGER,
        group_name="modelling",
        kinds={"mysql", "pandas"},
        owners=[RISK_TEAM],
        metadata=table_metadata(RISK_DRIVERS),
    )
    def risk_drivers(context: AssetExecutionContext, pd_model: pd.DataFrame) -> pd.DataFrame:
        """The model's features ranked by their effect on the PD, with odds ratios."""
        drivers = compute_risk_drivers(PdModel.from_parameters_table(pd_model))

        context.add_output_metadata(
            {
                "dagster/column_lineage": column_lineage(
                    {
                        "model_version": [("pd_model", "model_version")],
                        "feature": [("pd_model", "feature")],
                        "coefficient": [("pd_model", "coefficient")],
                        "odds_ratio": [("pd_model", "coefficient")],
                        "driver_rank": [("pd_model", "coefficient")],
                        "direction": [("pd_model", "coefficient")],
                    }
                ),
                "top_driver": str(drivers.sort_values("driver_rank")["feature"].iloc[0]),
            }
        )
        return drivers

    return [default_flags, pd_model, risk_drivers]
