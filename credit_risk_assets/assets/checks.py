"""Data quality as Dagster asset checks: the source contract and the tables Power BI reads.

- `delinquency_snapshot.source_contract` is evaluated by the snapshot asset itself, on the rows
  it read, before anything is written (see assets/ingestion.py): failed (blocking) when a month
  breaks the contract or holds no rows, a warning when the tolerance lets invalid rows aside.
- `risk_scores` and `account_risk_scores` are checked after they are written, by reading the
  warehouse: every PD in [0, 1], and every account of the scored month present. The checks are
  blocking, so a failure stops what reads the table in the same run (the daily refresh does not
  publish account_risk_scores from bad scores).
"""

from collections.abc import Mapping, Sequence

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    asset_check,
)

from credit_risk_assets.compute.contract import ContractResult
from credit_risk_assets.tables import ACCOUNT_RISK_SCORES, DELINQUENCY_SNAPSHOT, RISK_SCORES
from credit_risk_assets.warehouse.database import WarehouseDatabase
from credit_risk_assets.warehouse.io_manager import WarehouseResource
from credit_risk_assets.warehouse.schema import TableSpec

SOURCE_CONTRACT = "source_contract"
PD_IN_UNIT_INTERVAL = "pd_in_unit_interval"
EVERY_ACCOUNT_SCORED = "every_account_scored"
EXAMPLES = 5

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"

SOURCE_CONTRACT_SPEC = AssetCheckSpec(
    name=SOURCE_CONTRACT,
    asset="delinquency_snapshot",
    blocking=True,
    description=(
        "Source rows of the month keep the data contract (DESIGN section 2), checked before "
        "the month is written. Fails, and stops everything downstream, when a month has more "
        "invalid rows than max_invalid_rows or no rows at all; warns when tolerated invalid "
        "rows were set aside. Rejected rows are in table source_rejects."
    ),
)


class PdRangeError(ValueError):
    """Scores hold a PD outside [0, 1] (or none), which must not be published."""


# --- the source contract, as reported by the snapshot asset -------------------------------


def _rule_metadata(result: ContractResult) -> dict[str, object]:
    return {
        "rows_checked": result.checked_rows,
        "rows_rejected": result.rejected_rows,
        **{f"rule/{rule}": count for rule, count in result.rule_counts.items()},
    }


def contract_passed(result: ContractResult, months: str) -> AssetCheckResult:
    """Every row of the months keeps the contract."""
    return AssetCheckResult(
        check_name=SOURCE_CONTRACT,
        passed=True,
        description=f"All {result.checked_rows} source rows of {months} keep the contract.",
        metadata=_rule_metadata(result),
    )


def contract_tolerated(result: ContractResult, months: str, tolerance: int) -> AssetCheckResult:
    """Invalid rows were set aside within the tolerance: a warning, downstream goes on."""
    return AssetCheckResult(
        check_name=SOURCE_CONTRACT,
        passed=False,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{result.rejected_rows} invalid source rows of {months} were set aside in "
            f"source_rejects (tolerance max_invalid_rows={tolerance}); the month was written "
            f"without them. {result.summary()}"
        ),
        metadata={**_rule_metadata(result), "examples": MetadataValue.md(_examples(result))},
    )


def contract_failed(
    description: str, months: str, result: ContractResult | None = None
) -> AssetCheckResult:
    """The months may not be written: invalid rows beyond the tolerance, no rows, bad columns."""
    metadata: dict[str, object] = {"months": months}
    if result is not None:
        metadata |= {**_rule_metadata(result), "examples": MetadataValue.md(_examples(result))}
    return AssetCheckResult(
        check_name=SOURCE_CONTRACT, passed=False, description=description, metadata=metadata
    )


def _examples(result: ContractResult) -> str:
    columns = ["rule", "source_row", "account_id", "billing_cycle", "days_past_due"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for rule in result.rule_counts:
        rows = result.rejects[result.rejects["rule"] == rule].head(EXAMPLES)
        lines += [
            "| " + " | ".join(str(row[column]) for column in columns) + " |"
            for _, row in rows.iterrows()
        ]
    return "\n".join(lines)


# --- output checks, read back from the warehouse ------------------------------------------


def run_window(tags: Mapping[str, str]) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """[start, end) of the months a run materialised, from its tags; None for every month."""
    first = tags.get(RANGE_START_TAG) or tags.get(PARTITION_TAG)
    last = tags.get(RANGE_END_TAG) or tags.get(PARTITION_TAG)
    if not first or not last:
        return None
    return pd.Timestamp(first), pd.Timestamp(last) + pd.DateOffset(months=1)


def _in_window(column: sa.ColumnElement, window: tuple | None) -> list[sa.ColumnElement]:
    if window is None:
        return []
    return [column >= window[0].date(), column < window[1].date()]


def _table(spec: TableSpec) -> sa.Table:
    return spec.sqlalchemy_table(sa.MetaData())


def _examples_table(rows: Sequence[Sequence[object]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def pd_range_result(
    database: WarehouseDatabase, spec: TableSpec, window: tuple | None = None
) -> AssetCheckResult:
    """Passed when every row of `spec` (in `window`, if given) has a PD in [0, 1]."""
    table = _table(spec)
    scope = _in_window(table.c["as_of_month"], window)
    invalid = sa.or_(table.c.pd_score.is_(None), table.c.pd_score < 0.0, table.c.pd_score > 1.0)
    columns = ["account_id", "as_of_month", "pd_score"]
    with database.engine.connect() as connection:
        count = sa.select(sa.func.count()).select_from(table)
        checked = connection.execute(count.where(*scope)).scalar_one()
        bad = connection.execute(count.where(*scope, invalid)).scalar_one()
        examples = connection.execute(
            sa.select(*(table.c[name] for name in columns))
            .where(*scope, invalid)
            .order_by(table.c.as_of_month, table.c.account_id)
            .limit(EXAMPLES)
        ).all()

    description = (
        f"All {checked} PDs of {spec.name} are in [0, 1]."
        if not bad
        else f"{bad} of {checked} rows of {spec.name} have a PD outside [0, 1] or none: the "
        "scores are wrong and must not be published. Re-run risk_scores after fixing the model."
    )
    return AssetCheckResult(
        passed=bad == 0,
        description=description,
        metadata={
            "rows_checked": int(checked),
            "rows_invalid": int(bad),
            "examples": MetadataValue.md(_examples_table(examples, columns)),
        },
    )


def _unscored(
    snapshot: sa.Table, scores: sa.Table, months: sa.Select, scored_month: sa.ColumnElement
) -> sa.Select:
    """Snapshot rows of `months` that have no row in `scores` for the same account."""
    has_score = sa.exists().where(
        scored_month == snapshot.c.billing_cycle, scores.c.account_id == snapshot.c.account_id
    )
    return sa.select(snapshot.c.billing_cycle, snapshot.c.account_id).where(
        snapshot.c.billing_cycle.in_(months), ~has_score
    )


def _coverage_result(
    database: WarehouseDatabase, missing: sa.Select, checked: sa.Select, table: str
) -> AssetCheckResult:
    with database.engine.connect() as connection:
        rows_checked = connection.execute(checked).scalar_one()
        absent = connection.execute(
            sa.select(sa.func.count()).select_from(missing.subquery())
        ).scalar_one()
        examples = connection.execute(missing.limit(EXAMPLES)).all()

    description = (
        f"Every one of the {rows_checked} accounts with a snapshot row is in {table}."
        if not absent
        else f"{absent} accounts with a row in delinquency_snapshot are missing from {table} "
        f"(of {rows_checked}). Re-materialise {table} for those months; if they are still "
        "missing, their features or streaks are: re-materialise those first."
    )
    return AssetCheckResult(
        passed=absent == 0,
        description=description,
        metadata={
            "accounts_checked": int(rows_checked),
            "accounts_missing": int(absent),
            "examples": MetadataValue.md(_examples_table(examples, ["month", "account_id"])),
        },
    )


def scores_coverage_result(
    database: WarehouseDatabase, window: tuple | None = None
) -> AssetCheckResult:
    """Passed when each account with a snapshot row in a scored month has a score that month."""
    snapshot, scores = _table(DELINQUENCY_SNAPSHOT), _table(RISK_SCORES)
    scored_months = (
        sa.select(scores.c.as_of_month).where(*_in_window(scores.c.as_of_month, window)).distinct()
    )
    missing = _unscored(snapshot, scores, scored_months, scores.c.as_of_month)
    checked = (
        sa.select(sa.func.count())
        .select_from(snapshot)
        .where(snapshot.c.billing_cycle.in_(scored_months))
    )
    return _coverage_result(database, missing, checked, RISK_SCORES.name)


def latest_scores_coverage_result(database: WarehouseDatabase) -> AssetCheckResult:
    """Passed when account_risk_scores holds every account of the latest scored month, only."""
    snapshot, scores = _table(DELINQUENCY_SNAPSHOT), _table(RISK_SCORES)
    latest = _table(ACCOUNT_RISK_SCORES)
    latest_month = sa.select(sa.func.max(scores.c.as_of_month)).scalar_subquery()
    missing = _unscored(snapshot, latest, sa.select(latest_month), latest_month)
    checked = (
        sa.select(sa.func.count())
        .select_from(snapshot)
        .where(snapshot.c.billing_cycle == latest_month)
    )
    result = _coverage_result(database, missing, checked, ACCOUNT_RISK_SCORES.name)

    stale = (
        sa.select(sa.func.count()).select_from(latest).where(latest.c.as_of_month != latest_month)
    )
    with database.engine.connect() as connection:
        other_month_rows = connection.execute(stale).scalar_one()
    if not other_month_rows:
        return result
    return AssetCheckResult(
        passed=False,
        description=(
            f"{other_month_rows} rows of account_risk_scores are not of the latest scored month "
            "of risk_scores. Re-materialise account_risk_scores."
        ),
        metadata={**result.metadata, "rows_of_other_months": int(other_month_rows)},
    )


def require_valid_pds(scores: pd.DataFrame, table: str) -> None:
    """Refuse scores with a PD outside [0, 1] or missing, before they are written."""
    invalid = ~scores["pd_score"].between(0.0, 1.0)
    if invalid.any():
        examples = scores.loc[invalid, ["account_id", "pd_score"]].head(EXAMPLES)
        raise PdRangeError(
            f"{int(invalid.sum())} of {len(scores)} rows for {table} have a PD outside [0, 1] "
            f"or none, e.g. {examples.to_dict('records')}. The previous table stays; re-run "
            "risk_scores once pd_model is fixed."
        )


def build_output_checks() -> list[AssetChecksDefinition]:
    """The blocking checks on risk_scores and account_risk_scores."""
    snapshot = AssetKey("delinquency_snapshot")

    @asset_check(
        asset="risk_scores",
        name=PD_IN_UNIT_INTERVAL,
        blocking=True,
        description="Every PD of the months this run scored is in [0, 1].",
    )
    def risk_scores_pd_in_unit_interval(
        context: AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> AssetCheckResult:
        window = run_window(context.run.tags)
        return pd_range_result(warehouse.database(), RISK_SCORES, window)

    @asset_check(
        asset="risk_scores",
        name=EVERY_ACCOUNT_SCORED,
        blocking=True,
        additional_deps=[snapshot],
        description=(
            "Every account with a delinquency_snapshot row in a month this run scored has a "
            "score for that month."
        ),
    )
    def risk_scores_every_account_scored(
        context: AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> AssetCheckResult:
        window = run_window(context.run.tags)
        return scores_coverage_result(warehouse.database(), window)

    @asset_check(
        asset="account_risk_scores",
        name=PD_IN_UNIT_INTERVAL,
        blocking=True,
        description="Every PD that Power BI reads is in [0, 1].",
    )
    def account_risk_scores_pd_in_unit_interval(
        warehouse: WarehouseResource,
    ) -> AssetCheckResult:
        return pd_range_result(warehouse.database(), ACCOUNT_RISK_SCORES)

    @asset_check(
        asset="account_risk_scores",
        name=EVERY_ACCOUNT_SCORED,
        blocking=True,
        additional_deps=[snapshot],
        description=(
            "account_risk_scores holds every account with a delinquency_snapshot row in the "
            "latest scored month, and no row of another month."
        ),
    )
    def account_risk_scores_every_account_scored(
        warehouse: WarehouseResource,
    ) -> AssetCheckResult:
        return latest_scores_coverage_result(warehouse.database())

    return [
        risk_scores_pd_in_unit_interval,
        risk_scores_every_account_scored,
        account_risk_scores_pd_in_unit_interval,
        account_risk_scores_every_account_scored,
    ]
