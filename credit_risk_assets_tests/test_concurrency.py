"""Pools: two runs that write the same table take turns, on an instance set up by our own file.

The runs are two `dagster asset materialize` processes started together, as two engineers (or an
engineer and a schedule) would start them: each Dagster run lives in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from dagster import DagsterInstance

from credit_risk_assets.automation.instance import write_local_instance_config
from credit_risk_assets.definitions import build_definitions
from credit_risk_assets.sample_data import generate_snapshot, write_source_table
from credit_risk_assets.settings import Settings
from credit_risk_assets.tables import TABLES
from credit_risk_assets.warehouse.source import SourceDatabase

ACCOUNTS = 1_000
STEP = "delinquency_snapshot"
TIMEOUT_SECONDS = 240
# A stand-in for a third run that is writing the table when the two start: it holds the pool's
# only slot until both are seen waiting, so the test does not depend on how fast they start.
HOLDER_RUN_ID = "engineer-writing-the-snapshot"


def settings_in(folder: Path) -> Settings:
    return Settings(
        home=folder,
        source_url=f"sqlite:///{folder / 'source.db'}",
        warehouse_url=f"sqlite:///{folder / 'warehouse.db'}",
        source_table="delinquency_snapshot",
        first_month=date(2024, 1, 1),
        lookback_months=6,
        horizon_months=6,
    )


def step_events(instance: DagsterInstance, run_id: str) -> dict[str, list]:
    """The snapshot step's event log entries in a run, by event type."""
    events: dict[str, list] = {}
    for record in instance.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        if entry.step_key == STEP and entry.dagster_event is not None:
            events.setdefault(entry.dagster_event.event_type_value, []).append(entry)
    return events


def test_two_runs_writing_the_same_table_execute_one_after_the_other(tmp_path):
    """Two runs started while the table is being written both wait for its pool, then write one
    after the other."""
    settings = settings_in(tmp_path)
    write_source_table(settings.source_url, generate_snapshot(accounts=ACCOUNTS))
    months = SourceDatabase(url=settings.source_url).months_present()
    home = tmp_path / "dagster"
    home.mkdir()
    write_local_instance_config(home)
    with DagsterInstance.from_config(str(home)) as instance:
        # Creates the storage once: two processes creating it together would race.
        instance.get_runs()
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "asset",
        "materialize",
        "-m",
        "credit_risk_assets.definitions",
        "--select",
        STEP,
        "--partition-range",
        f"{months[0]:%Y-%m-%d}...{months[-1]:%Y-%m-%d}",
        # In the run's own process: a step process per run would only add start-up time.
        "--config-json",
        json.dumps({"execution": {"config": {"in_process": {}}}}),
    ]
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CREDIT_RISK_HOME": str(tmp_path),
        "CREDIT_RISK_SOURCE_URL": settings.source_url,
        "CREDIT_RISK_WAREHOUSE_URL": settings.warehouse_url,
    }

    # Output goes to files: a pipe nobody reads while the runs wait could fill and stall them.
    logs = [tmp_path / f"run-{number}.log" for number in (1, 2)]

    def start(log: Path) -> subprocess.Popen:
        with log.open("w") as output:
            return subprocess.Popen(command, env=environment, stdout=output, stderr=output)

    with DagsterInstance.from_config(str(home)) as instance:
        hold_the_only_slot(instance)
        processes = [start(log) for log in logs]
        wait_until_runs_wait_for_the_pool(instance, processes, runs=2)
        instance.event_log_storage.free_concurrency_slots_for_run(HOLDER_RUN_ID)

    exits = [process.wait(timeout=TIMEOUT_SECONDS) for process in processes]
    assert exits == [0, 0], [log.read_text()[-3000:] for log in logs]
    with DagsterInstance.from_config(str(home)) as instance:
        runs = [step_events(instance, run.run_id) for run in instance.get_runs()]
    earlier, later = sorted(runs, key=lambda events: events["STEP_START"][0].timestamp)

    assert later["STEP_START"][0].timestamp >= earlier["STEP_SUCCESS"][0].timestamp
    for events in (earlier, later):
        assert any(POOL_WAIT in entry.user_message for entry in events.get("ENGINE_EVENT", []))


POOL_WAIT = f"blocked by limit for pool {STEP}"


def hold_the_only_slot(instance: DagsterInstance) -> None:
    """Claim the snapshot pool's single slot (the shipped limit) for HOLDER_RUN_ID."""
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(STEP)
    status = storage.claim_concurrency_slot(STEP, HOLDER_RUN_ID, "holder")
    assert status.is_claimed, f"the {STEP} pool should have a free slot: {status}"


def wait_until_runs_wait_for_the_pool(
    instance: DagsterInstance, processes: list[subprocess.Popen], runs: int
) -> None:
    """Block until `runs` runs have logged that their step waits for the pool."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        waiting = [
            run.run_id
            for run in instance.get_runs()
            if any(
                POOL_WAIT in entry.user_message
                for entry in step_events(instance, run.run_id).get("ENGINE_EVENT", [])
            )
        ]
        if len(waiting) == runs:
            return
        ended = [process.returncode for process in processes if process.poll() is not None]
        assert not ended, f"a run ended while the slot was held (exit {ended})"
        time.sleep(0.5)
    raise AssertionError(f"{runs} runs did not wait for the {STEP} pool in {TIMEOUT_SECONDS} s")


# The pipeline's own assets (DESIGN section 4). Every other asset that writes a warehouse table
# needs `pool=table_pool(...)` too; a multi-asset writing several tables needs one pool of its own.
PIPELINE_ASSETS = (
    "delinquency_snapshot",
    "account_features",
    "streaks",
    "default_flags",
    "pd_model",
    "risk_drivers",
    "risk_scores",
    "account_risk_scores",
)


@pytest.mark.parametrize("name", PIPELINE_ASSETS)
def test_each_pipeline_asset_writes_in_the_pool_of_its_table(tmp_path, name):
    """The asset's step claims the pool named after the warehouse table it writes."""
    defs = build_definitions(settings_in(tmp_path))

    assets = defs.resolve_assets_def(name)

    assert name in TABLES
    assert assets.op.pool == name


def test_every_asset_that_writes_a_table_runs_in_a_pool(tmp_path):
    """No writer escapes the pools: each single-table asset claims its table's pool, and each
    multi-asset a pool of its own."""
    defs = build_definitions(settings_in(tmp_path))

    pools = {}
    for spec in defs.resolve_all_asset_specs():
        assets = defs.resolve_assets_def(spec.key)
        pools[spec.key.to_user_string()] = (assets.op.pool, len(assets.keys))

    assert set(pools) >= set(PIPELINE_ASSETS)
    for name, (pool, outputs) in pools.items():
        assert pool is not None, name
        if outputs == 1:
            assert pool == name, name
