"""The declared schema of every table the pipeline writes, keyed by table name."""

from __future__ import annotations

from credit_risk_assets.warehouse.schema import ColumnSpec as C
from credit_risk_assets.warehouse.schema import TableSpec

AS_OF = C("as_of_month", "date", "First day of the month the row describes (as of T).")
ACCOUNT = C("account_id", "bigint", "The account.")
MODEL_VERSION = C("model_version", "label", "Hash of the model parameters that scored the row.")

SOURCE_COLUMNS = (
    ACCOUNT,
    C("billing_cycle", "date", "First day of the billing month."),
    C("due_date", "date", "Payment due date of the cycle."),
    C("payment_date", "date", "Date the cycle was paid; null while unpaid.", nullable=True),
    C("days_past_due", "int", "Days past due of the cycle, as of extraction."),
    C("delinquency_bucket", "label", "Bucket of days_past_due on the bucket scale."),
    C("is_delinquent", "flag", "1 when days_past_due > 0."),
)

DELINQUENCY_SNAPSHOT = TableSpec(
    name="delinquency_snapshot",
    description="Validated copy of the source snapshot, one row per account and billing cycle.",
    columns=SOURCE_COLUMNS,
    primary_key=("billing_cycle", "account_id"),
    partition_column="billing_cycle",
)

FEATURE_COLUMNS = (
    C("avg_dpd", "double", "Mean days_past_due over the lookback window."),
    C("max_dpd", "int", "Maximum days_past_due over the lookback window."),
    C("delinquency_ratio", "double", "Share of delinquent cycles in the lookback window."),
    C("severe_delinquency_count", "int", "Cycles with days_past_due > 60 in the window."),
    C("default_like_cycles", "int", "Cycles with days_past_due >= 90 in the window."),
    C("recent_avg_dpd_3m", "double", "Mean days_past_due over months T-2..T; 0 when none."),
    C("months_observed", "int", "Rows of the account in the lookback window."),
    C("current_dpd", "int", "days_past_due in month T; null when T has no row.", nullable=True),
)

ACCOUNT_FEATURES = TableSpec(
    name="account_features",
    description="Behaviour features of each account as of T over the lookback window.",
    columns=(AS_OF, ACCOUNT, *FEATURE_COLUMNS),
    primary_key=("as_of_month", "account_id"),
    partition_column="as_of_month",
)

STREAKS = TableSpec(
    name="streaks",
    description="Delinquency runs of each account as of T over the lookback window.",
    columns=(
        AS_OF,
        ACCOUNT,
        C(
            "delinquency_streak",
            "int",
            "Longest run of delinquent cycles in consecutive calendar months.",
        ),
        C("current_streak", "int", "Run of delinquent cycles ending at T; 0 when T is not."),
    ),
    primary_key=("as_of_month", "account_id"),
    partition_column="as_of_month",
)

DEFAULT_FLAGS = TableSpec(
    name="default_flags",
    description="Forward-looking default labels of T: the default flag over the months after T.",
    columns=(
        AS_OF,
        ACCOUNT,
        C("default_flag", "flag", "1 when the account met the default rule in the window."),
        C("perf_months_observed", "int", "Rows of the account in the performance window."),
        C("perf_max_dpd", "int", "Maximum days_past_due in the performance window."),
        C("perf_delinquency_ratio", "double", "Share of delinquent cycles in the window."),
        C("perf_default_like_cycles", "int", "Cycles with days_past_due >= 90 in the window."),
    ),
    primary_key=("as_of_month", "account_id"),
    partition_column="as_of_month",
)

PD_MODEL = TableSpec(
    name="pd_model",
    description="Parameters and validation figures of the published PD model, one row a feature.",
    columns=(
        MODEL_VERSION,
        C("feature", "label", "Model input."),
        C("feature_order", "int", "Position of the feature in the model's input vector."),
        C("scaler_mean", "double", "Mean the feature is centred by."),
        C("scaler_scale", "double", "Standard deviation the feature is divided by."),
        C("coefficient", "double", "Logistic coefficient on the standardised feature."),
        C("intercept", "double", "Logistic intercept (same on every row)."),
        C("training_first_month", "date", "First as-of month of the training sample."),
        C("training_last_month", "date", "Last as-of month of the training sample."),
        C("training_rows", "bigint", "Account-months the published model was fitted on."),
        C("training_default_rate", "double", "Share of defaults among the training rows."),
        C("validation_sample", "label", "out_of_time, or in_sample in notebook mode."),
        C("validation_month", "date", "As-of month of the validation sample."),
        C("validation_rows", "bigint", "Account-months in the validation sample."),
        C("validation_default_rate", "double", "Share of defaults in the validation sample."),
        C("auc", "double", "Area under the ROC curve on the validation sample."),
        C("gini", "double", "2 * AUC - 1 on the validation sample."),
        C("ks", "double", "Kolmogorov-Smirnov statistic on the validation sample."),
        C("brier", "double", "Mean squared error of the PD on the validation sample."),
        C("trained_at", "datetime", "UTC time the model was fitted."),
        C("regularisation_c", "double", "Inverse L2 regularisation strength of the fit."),
        C("max_iter", "int", "Iteration limit of the lbfgs solver in the fit."),
    ),
    primary_key=("model_version", "feature"),
)

RISK_DRIVERS = TableSpec(
    name="risk_drivers",
    description="Model features ranked by their effect on the PD.",
    columns=(
        MODEL_VERSION,
        C("feature", "label", "Model input."),
        C("coefficient", "double", "Logistic coefficient per standard deviation."),
        C("odds_ratio", "double", "Multiplier on the odds of default per standard deviation."),
        C("driver_rank", "int", "1 for the feature with the largest absolute coefficient."),
        C("direction", "label", "raises PD or lowers PD."),
    ),
    primary_key=("model_version", "feature"),
)

SCORE_COLUMNS = (
    C("pd_score", "double", "Probability of default over the performance window, in [0, 1]."),
    C("risk_segment", "label", "Low, Medium or High by PD (edges 0.3 / 0.6 by default)."),
    C("credit_score", "double", "Points score: higher is safer.", nullable=True),
    C("risk_grade", "label", "Master-scale grade by PD; D for accounts already in default."),
    C("reason_code_1", "label", "Feature that raises the PD most.", nullable=True),
    C("reason_code_2", "label", "Second feature that raises the PD most.", nullable=True),
    C("reason_code_3", "label", "Third feature that raises the PD most.", nullable=True),
    C("in_default", "flag", "1 when the account is already in default at T (90+ DPD)."),
    MODEL_VERSION,
)

NOTEBOOK_OUTPUT_FEATURES = (
    C("avg_dpd", "double", "Mean days_past_due over the lookback window."),
    C("max_dpd", "int", "Maximum days_past_due over the lookback window."),
    C("delinquency_ratio", "double", "Share of delinquent cycles in the lookback window."),
    C("delinquency_streak", "int", "Longest run of delinquent cycles in consecutive months."),
)

RISK_SCORES = TableSpec(
    name="risk_scores",
    description="Scores of each account with a row in month T, kept for every month (history).",
    columns=(AS_OF, ACCOUNT, *SCORE_COLUMNS, *NOTEBOOK_OUTPUT_FEATURES),
    primary_key=("as_of_month", "account_id"),
    partition_column="as_of_month",
)

_score_by_name = {column.name: column for column in SCORE_COLUMNS}
ACCOUNT_RISK_SCORES = TableSpec(
    name="account_risk_scores",
    description="Latest month's scores, one row per account; the notebook's columns come first.",
    columns=(
        ACCOUNT,
        _score_by_name["pd_score"],
        _score_by_name["risk_segment"],
        *NOTEBOOK_OUTPUT_FEATURES,
        *(column for column in SCORE_COLUMNS if column.name not in {"pd_score", "risk_segment"}),
        AS_OF,
    ),
    primary_key=("account_id",),
)

SOURCE_REJECTS = TableSpec(
    name="source_rejects",
    description="Source rows refused by the data contract, kept as text for inspection.",
    columns=(
        C("run_id", "label", "Dagster run that read the rows."),
        C("billing_month", "date", "Snapshot partition being read."),
        C("source_row", "bigint", "Position of the row in the month's read."),
        C("rule", "label", "Contract rule the row broke."),
        *(
            C(column.name, "text", f"Source value as text. {column.description}", nullable=True)
            for column in SOURCE_COLUMNS
        ),
        C("rejected_at", "datetime", "UTC time the row was refused."),
    ),
    primary_key=("run_id", "billing_month", "source_row", "rule"),
)

SAMPLE = C(
    "sample",
    "label",
    "train (development fit on its own months), out_of_time (the same fit on the held-out "
    "month) or in_sample (notebook mode).",
)

MODEL_PERFORMANCE = TableSpec(
    name="model_performance",
    description="Discrimination and accuracy of the PD model on each validation sample.",
    columns=(
        C("model_version", "label", "Published model the validation belongs to."),
        SAMPLE,
        C("first_month", "date", "First as-of month of the sample."),
        C("last_month", "date", "Last as-of month of the sample."),
        C("fit_first_month", "date", "First as-of month of the fit that scored the sample."),
        C("fit_last_month", "date", "Last as-of month of the fit that scored the sample."),
        C("accounts", "bigint", "Account-months in the sample."),
        C("defaults", "bigint", "Account-months labelled default in the sample."),
        C("base_rate", "double", "Observed default rate: defaults / accounts."),
        C("mean_pd", "double", "Mean PD the fit gave the sample."),
        C("auc", "double", "Area under the ROC curve."),
        C("gini", "double", "2 * AUC - 1."),
        C("ks", "double", "Largest gap between the PD distributions of defaults and others."),
        C("brier", "double", "Mean squared error of the PD against the 0/1 outcome."),
        C(
            "brier_skill",
            "double",
            "1 - brier / (base_rate * (1 - base_rate)): 0 is no better than the base rate.",
        ),
    ),
    primary_key=("model_version", "sample"),
)

GRADE = C("risk_grade", "label", "Master-scale grade: 1 (safest) to 9; D in default.")
GRADE_ORDER = C("grade_order", "int", "Sort order of the grade: 1 to 9, then 10 for D.")

MODEL_CALIBRATION = TableSpec(
    name="model_calibration",
    description="Expected and observed default rates per master-scale grade and sample.",
    columns=(
        C("model_version", "label", "Published model the validation belongs to."),
        SAMPLE,
        GRADE,
        GRADE_ORDER,
        C("pd_lower", "double", "Lowest PD of the grade (inclusive)."),
        C("pd_upper", "double", "PD bound above the grade (exclusive; grade 9 holds PD 1)."),
        C("accounts", "bigint", "Account-months of the sample in the grade."),
        C("defaults", "bigint", "Of which labelled default."),
        C("expected_default_rate", "double", "Mean PD of the grade's account-months."),
        C("observed_default_rate", "double", "defaults / accounts."),
        C(
            "standard_error",
            "double",
            "Standard error of the observed rate if the PDs are right: sqrt(sum pd(1-pd)) / n.",
        ),
        C(
            "z_score",
            "double",
            "(observed - expected) / standard_error; |z| above 2 is outside sampling error.",
            nullable=True,
        ),
    ),
    primary_key=("model_version", "sample", "risk_grade"),
)

VARIABLE = C("variable", "label", "pd_score, or the model feature the bins describe.")

STABILITY_BASELINE = TableSpec(
    name="stability_baseline",
    description="Bins and shares of the score and of each feature in the training sample.",
    columns=(
        C("model_version", "label", "Published model whose training sample is binned."),
        VARIABLE,
        C("bin_order", "int", "Position of the bin, 1 for the lowest values."),
        C("bin_label", "label", "The bin as an interval, e.g. (0, 12.5] or grade 4 [0.04, 0.07)."),
        C(
            "lower_bound",
            "double",
            "Bound below the bin; null when open. pd_score bins include it, feature bins not.",
            nullable=True,
        ),
        C(
            "upper_bound",
            "double",
            "Bound above the bin; null when open. Feature bins include it, pd_score bins not.",
            nullable=True,
        ),
        C("accounts", "bigint", "Training account-months in the bin."),
        C("share", "double", "accounts / all training account-months."),
    ),
    primary_key=("model_version", "variable", "bin_order"),
)

SCORE_STABILITY = TableSpec(
    name="score_stability",
    description="Population stability index of the score and each feature, per scored month.",
    columns=(
        AS_OF,
        VARIABLE,
        C("model_version", "label", "Model whose training sample is the baseline."),
        C("accounts", "bigint", "Accounts scored by the model in the month (not in default)."),
        C("psi", "double", "Sum over bins of (a - e) * ln(a / e), shares a (month), e (training)."),
        C("stability", "label", "stable (PSI < 0.10), monitor (< 0.25) or shifted, by default."),
        C("largest_shift_bin", "label", "Bin that adds most to the PSI."),
        C("largest_shift_psi", "double", "That bin's term of the PSI."),
    ),
    primary_key=("as_of_month", "variable"),
    partition_column="as_of_month",
)

RISK_SEGMENT_SUMMARY = TableSpec(
    name="risk_segment_summary",
    description="Accounts, mean PD and observed default rate per month, segment and grade.",
    columns=(
        AS_OF,
        C("risk_segment", "label", "Low, Medium or High."),
        GRADE,
        GRADE_ORDER,
        C("accounts", "bigint", "Accounts scored in the month, segment and grade."),
        C("mean_pd", "double", "Mean pd_score of those accounts."),
        C("expected_defaults", "double", "Sum of pd_score: defaults the model expects."),
        C("is_mature", "flag", "1 when the month has forward labels (its window is complete)."),
        C("labelled_accounts", "bigint", "Accounts with a forward label (0 before maturity)."),
        C(
            "observed_defaults",
            "bigint",
            "Labelled accounts that defaulted in the performance window; null when none labelled.",
            nullable=True,
        ),
        C(
            "observed_default_rate",
            "double",
            "observed_defaults / labelled_accounts; null when none labelled.",
            nullable=True,
        ),
    ),
    primary_key=("as_of_month", "risk_segment", "risk_grade"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        DELINQUENCY_SNAPSHOT,
        ACCOUNT_FEATURES,
        STREAKS,
        DEFAULT_FLAGS,
        PD_MODEL,
        RISK_DRIVERS,
        RISK_SCORES,
        ACCOUNT_RISK_SCORES,
        SOURCE_REJECTS,
        MODEL_PERFORMANCE,
        MODEL_CALIBRATION,
        STABILITY_BASELINE,
        SCORE_STABILITY,
        RISK_SEGMENT_SUMMARY,
    )
}
