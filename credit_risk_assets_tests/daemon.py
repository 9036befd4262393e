"""Dagster's sensor and backfill daemons, run in this process against a real instance.

The daemons' own iteration functions do the work (sensor tick -> backfill -> runs in dependency
order), so the tests see what `dagster-daemon run` does, minus its sleeps. Runs launch
synchronously in this process, and the code location uses the in-process executor: the
multiprocess executor would start a Python process per step, ten times slower for these sizes.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, instance_for_test
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.sensor import execute_sensor_iteration

from credit_risk_assets.automation.instance import POOL_SETTINGS

LOCATION = "credit_risk_assets"
MAX_BACKFILL_ITERATIONS = 40

# The code location as workspace.yaml loads it, plus the in-process executor.
DEFINITIONS_FILE = """\
from dagster import Definitions, in_process_executor

from credit_risk_assets.definitions import build_definitions

defs = Definitions.merge(build_definitions(), Definitions(executor=in_process_executor))
"""

log = logging.getLogger("credit_risk_assets_tests.daemon")


@dataclass
class Daemons:
    """A workspace over the code location and the instance the daemons work on."""

    instance: DagsterInstance
    workspace: WorkspaceProcessContext

    def tick_sensors(self) -> None:
        """One iteration of the sensor daemon: every running sensor due for a tick ticks."""
        list(execute_sensor_iteration(self.workspace, log, None, None))

    def run_backfills(self) -> list[PartitionBackfill]:
        """Iterate the backfill daemon until no backfill is in progress; return them all."""
        for _ in range(MAX_BACKFILL_ITERATIONS):
            list(execute_backfill_iteration(self.workspace, log))
            backfills = self.instance.get_backfills()
            if all(b.status != BulkActionStatus.REQUESTED for b in backfills):
                return backfills
        raise AssertionError(f"Backfills still running after {MAX_BACKFILL_ITERATIONS} rounds")

    def backfill_runs(self, backfill: PartitionBackfill) -> list[DagsterRun]:
        """The runs a backfill launched, oldest first."""
        runs = self.instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        return list(reversed(runs))


@contextmanager
def daemons(folder: Path) -> Iterator[Daemons]:
    """A throwaway instance with the project's pool limits, and a workspace over the location.

    The code location reads its settings from the environment when it loads, so set the
    CREDIT_RISK_* variables before entering.
    """
    folder.mkdir(parents=True, exist_ok=True)
    definitions = folder / "location.py"
    definitions.write_text(textwrap.dedent(DEFINITIONS_FILE))
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            python_file=str(definitions), attribute="defs", working_directory=str(folder)
        ),
        location_name=LOCATION,
    )
    with (
        instance_for_test(
            overrides={"concurrency": POOL_SETTINGS},
            synchronous_run_coordinator=True,
            synchronous_run_launcher=True,
        ) as instance,
        create_test_daemon_workspace_context(
            InProcessWorkspaceLoadTarget(origin), instance
        ) as workspace,
    ):
        yield Daemons(instance=instance, workspace=workspace)
