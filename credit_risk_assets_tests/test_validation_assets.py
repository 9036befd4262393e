"""Validation, stability and BI tables through real Dagster runs of the pipeline on SQLite."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterInstance, instance_for_test

from credit_risk_assets.cli import format_summary
from credit_risk_assets.compute.validation import segment_summary
from credit_risk_assets.runner import PipelineRunError, RunReport, run_pipeline
from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets.settings import Settings
from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse.database import WarehouseDatabase

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 100_000
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@dataclass
class PipelineRun:
    """A pipeline materialised on SQLite: its settings, instance and source frame."""

    settings: Settings
    instance: DagsterInstance
    source: pd.DataFrame
    report: RunReport


def pipeline_settings(home: Path, lookback_months: int) -> Settings:
    """Embedded SQLite settings in `home`, with the default horizon of 6 months."""
    return Settings(
        home=home,
        source_url=f"sqlite:///{home / 'source.db'}",
        warehouse_url=f"sqlite:///{home / 'warehouse.db'}",
        source_table="delinquency_snapshot",
        first_month=date(2024, 1, 1),
        lookback_months=lookback_months,
        horizon_months=6,
    )


def read_sql(url: str, query: str) -> pd.DataFrame:
    """The result of a plain SQL query."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        frame = pd.read_sql(sa.text(query), connection)
    engine.dispose()
    return frame


def latest_check(instance: DagsterInstance, asset: str, check: str):
    """The latest evaluation of an asset check on the instance."""
    key = AssetCheckKey(AssetKey(asset), check)
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    return record.event.dagster_event.event_specific_data


def embedded_png(instance: DagsterInstance, asset: str, entry: str) -> bytes:
    """The PNG embedded in a markdown metadata entry of the asset's latest materialisation."""
    event = instance.get_latest_materialization_event(AssetKey(asset))
    markdown = event.asset_materialization.metadata[entry].value
    found = DATA_URI.search(markdown)
    assert found is not None, f"{asset}.{entry} holds no PNG data URI"
    return base64.b64decode(found.group(1))


def drift_last_month(source: pd.DataFrame, share: float = 0.4, seed: int = 3) -> pd.DataFrame:
    """The source with `share` of the current accounts of its last month 31-60 days past due.

    The rows stay valid under the contract: bucket Moderate, delinquent, and unpaid (the
    extraction day is that month's due date, so a late payment has not happened yet).
    """
    rng = np.random.default_rng(seed)
    drifted = source.copy()
    last = drifted["billing_cycle"] == drifted["billing_cycle"].max()
    chosen = last & (drifted["days_past_due"] == 0) & (rng.random(len(drifted)) < share)
    drifted.loc[chosen, "days_past_due"] = rng.integers(31, 61, size=int(chosen.sum()))
    drifted.loc[chosen, "is_delinquent"] = 1
    drifted.loc[chosen, "delinquency_bucket"] = "Moderate"
    drifted.loc[chosen, "payment_date"] = pd.NaT
    return drifted


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    """The whole pipeline over the default sample data (1,000 accounts, 12 months)."""
    settings = pipeline_settings(tmp_path_factory.mktemp("default"), lookback_months=6)
    source = generate_snapshot()
    write_source_table(settings.source_url, source)
    with instance_for_test() as instance:
        report = run_pipeline(settings, instance)
        yield PipelineRun(settings, instance, source, report)


def test_model_performance_repeats_the_figures_stored_with_the_model(default_run) -> None:
    """The out-of-time row equals pd_model's figures; train covers the months before it."""
    url = default_run.settings.warehouse_url
    model = read_sql(url, "SELECT * FROM pd_model").iloc[0]
    performance = read_sql(url, "SELECT * FROM model_performance").set_index("sample")

    oot, train = performance.loc["out_of_time"], performance.loc["train"]

    assert set(performance["model_version"]) == {model["model_version"]}
    for figure in ("auc", "gini", "ks", "brier"):
        assert oot[figure] == pytest.approx(model[figure], abs=1e-12), figure
    assert oot["accounts"] == model["validation_rows"]
    assert oot["base_rate"] == pytest.approx(model["validation_default_rate"], abs=1e-12)
    assert pd.Timestamp(oot["first_month"]) == pd.Timestamp(model["validation_month"])
    assert pd.Timestamp(train["last_month"]) == pd.Timestamp(oot["first_month"]) - pd.DateOffset(
        months=1
    )
    assert train["accounts"] + oot["accounts"] == model["training_rows"]
    assert 0 < oot["brier_skill"] < 1


def test_calibration_rows_add_up_to_each_sample(default_run) -> None:
    """Accounts and defaults over the grades of a sample equal the sample's totals."""
    url = default_run.settings.warehouse_url
    performance = read_sql(url, "SELECT * FROM model_performance").set_index("sample")
    calibration = read_sql(url, "SELECT * FROM model_calibration")

    totals = calibration.groupby("sample")[["accounts", "defaults"]].sum()

    pd.testing.assert_frame_equal(
        totals.sort_index(), performance[["accounts", "defaults"]].sort_index(), check_names=False
    )
    weighted_pd = (calibration["expected_default_rate"] * calibration["accounts"]).groupby(
        calibration["sample"]
    ).sum() / totals["accounts"]
    np.testing.assert_allclose(weighted_pd.sort_index(), performance["mean_pd"].sort_index())


@pytest.mark.parametrize(
    ("asset", "entry"),
    [
        ("model_performance", "roc_curve"),
        ("model_calibration", "calibration_plot"),
        ("risk_segment_summary", "pd_by_segment"),
    ],
)
def test_pictures_appear_in_the_materialisation_metadata(default_run, asset, entry) -> None:
    """Each picture is a valid PNG under 100 KB in the asset's latest materialisation."""
    png = embedded_png(default_run.instance, asset, entry)

    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    assert 1_000 < len(png) < MAX_PNG_BYTES


def test_coefficient_sign_check_names_every_coefficient_that_lowers_the_pd(default_run) -> None:
    """The check warns exactly when, and on the features where, a coefficient is negative."""
    model = read_sql(default_run.settings.warehouse_url, "SELECT * FROM pd_model")
    negative = sorted(model.loc[model["coefficient"] < 0, "feature"])

    evaluation = latest_check(default_run.instance, "pd_model", "coefficient_signs")

    flagged = evaluation.metadata["flipped_features"].value
    assert evaluation.passed == (not negative)
    assert evaluation.severity == AssetCheckSeverity.WARN
    assert sorted(name for name in flagged.split(", ") if name != "none") == negative


def test_risk_segment_summary_equals_the_pandas_summary_of_every_score(default_run) -> None:
    """The table the database summed equals compute.segment_summary over every row read back."""
    warehouse = WarehouseDatabase(default_run.settings.warehouse_url)
    try:
        scores = warehouse.read(TABLES["risk_scores"])
        labels = warehouse.read(TABLES["default_flags"])
        table = warehouse.read(TABLES["risk_segment_summary"])
    finally:
        warehouse.dispose()

    expected = segment_summary(scores, labels)

    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-12)
    assert table["accounts"].sum() == len(scores)
    assert table.loc[table["risk_grade"] == "D", "labelled_accounts"].eq(0).all()
    assert set(table.loc[table["is_mature"] == 1, "as_of_month"]) == set(labels["as_of_month"])


def test_stability_covers_every_scored_month_and_variable(default_run) -> None:
    """One PSI per month and variable; the model's own training month is close to its baseline."""
    url = default_run.settings.warehouse_url
    stability = read_sql(url, "SELECT * FROM score_stability")
    model = read_sql(url, "SELECT * FROM pd_model")
    months = default_run.source["billing_cycle"].dt.strftime("%Y-%m-%d").unique()

    assert sorted(stability["as_of_month"].unique()) == sorted(months)
    assert set(stability["variable"]) == {"pd_score", *model["feature"]}
    assert len(stability) == len(months) * (len(model) + 1)
    assert (stability["psi"] >= 0).all()


def test_the_run_summary_shows_both_samples_the_grades_and_the_latest_psi(
    default_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary lists train and out-of-time AUC, accounts per grade and the latest PSI."""
    monkeypatch.setenv("DAGSTER_HOME", str(default_run.settings.home))
    url = default_run.settings.warehouse_url
    latest = read_sql(url, "SELECT risk_grade, COUNT(*) AS n FROM account_risk_scores GROUP BY 1")
    psi = read_sql(
        url,
        "SELECT psi FROM score_stability WHERE variable = 'pd_score' "
        "ORDER BY as_of_month DESC LIMIT 1",
    )["psi"].iloc[0]

    text = "\n".join(format_summary(default_run.settings, default_run.report, 1.0))

    assert re.search(r"^  train \d{4}-\d{2}\.\.\d{4}-\d{2} \([\d,]+\): AUC 0\.\d{3}", text, re.M)
    assert re.search(r"^  out-of-time \d{4}-\d{2} \([\d,]+\): AUC 0\.\d{3}", text, re.M)
    grades = "  ".join(f"{row.risk_grade} {row.n:,}" for row in latest.itertuples())
    assert f"Accounts per grade: {grades}" in text
    assert f"training sample ({default_run.source['billing_cycle'].max():%Y-%m}): {psi:.3f}" in text


@pytest.fixture
def drift_run(tmp_path: Path) -> Iterator[PipelineRun]:
    """The pipeline over the sample data with a 3-month lookback, on its own instance.

    With a 6-month lookback the sample's training months (whose windows are cut short by the
    start of the data) already sit near the warning level against later months; 3 months
    leaves a clear margin, so the test isolates the drift it injects.
    """
    settings = pipeline_settings(tmp_path, lookback_months=3)
    source = generate_snapshot()
    write_source_table(settings.source_url, source)
    with instance_for_test() as instance:
        report = run_pipeline(settings, instance)
        yield PipelineRun(settings, instance, source, report)


def test_a_drifted_month_fails_the_score_psi_check_and_an_unchanged_one_passes(
    drift_run,
) -> None:
    """Unchanged months pass; pushing 40% of a month's current accounts to 31-60 DPD fails it."""
    settings, instance = drift_run.settings, drift_run.instance
    last = drift_run.source["billing_cycle"].max()
    unchanged = latest_check(instance, "score_stability", "score_psi")
    before = read_sql(settings.warehouse_url, "SELECT * FROM account_risk_scores")
    write_source_table(settings.source_url, drift_last_month(drift_run.source))

    with pytest.raises(PipelineRunError) as failed:
        run_pipeline(settings, instance, start=last)

    drifted = latest_check(instance, "score_stability", "score_psi")
    assert unchanged.passed
    assert not drifted.passed
    assert drifted.severity == AssetCheckSeverity.ERROR
    assert "Stage 'stability' failed" in str(failed.value)
    assert f"pd_score in {last:%Y-%m}" in str(failed.value)
    row = read_sql(
        settings.warehouse_url,
        "SELECT * FROM score_stability WHERE variable = 'pd_score' ORDER BY as_of_month DESC",
    ).iloc[0]
    assert pd.Timestamp(row["as_of_month"]) == last
    assert row["psi"] >= 0.25
    assert row["stability"] == "shifted"
    # The stability stage runs last, so the table Power BI reads already holds the new month.
    after = read_sql(settings.warehouse_url, "SELECT * FROM account_risk_scores")
    assert (pd.to_datetime(after["as_of_month"]) == last).all()
    assert after["pd_score"].mean() > before["pd_score"].mean() + 0.05
