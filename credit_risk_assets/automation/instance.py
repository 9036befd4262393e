"""The Dagster instance settings the project ships: one writer per warehouse table.

Every asset runs in the pool named after the table it writes. Dagster reads pool limits from the
instance, not from code, so the project's instance files set every pool to one slot:
`credit-risk run` writes LOCAL_INSTANCE_YAML into a new DAGSTER_HOME, and deploy/dagster.yaml
(production, MySQL storage) carries the same `concurrency` block. With op granularity a step
waits for its table's slot whichever way its run was started (UI, schedule, sensor backfill or
`credit-risk run`), and the slot is held only while that step writes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

POOL_SETTINGS = {"pools": {"default_limit": 1, "granularity": "op"}}

LOCAL_INSTANCE_YAML = """\
# Dagster instance of credit-risk-assets, written by `credit-risk run`. Runs, events and
# schedules are stored in this folder; deploy/dagster.yaml keeps them in MySQL instead.

# A bank's pipeline sends no usage statistics out.
telemetry:
  enabled: false

# Each asset runs in the pool named after the warehouse table it writes; one slot per pool
# means two runs never write the same table at the same time.
concurrency:
  pools:
    default_limit: 1
    granularity: op
"""


def write_local_instance_config(home: Path) -> Path:
    """Write LOCAL_INSTANCE_YAML as `home`/dagster.yaml unless one exists; return its path.

    An existing file is the user's and is left alone, with a warning when it sets no pool
    limit, since Dagster then lets runs write the same table at once.
    """
    path = home / "dagster.yaml"
    if not path.exists():
        path.write_text(LOCAL_INSTANCE_YAML)
        log.info("Wrote the Dagster instance settings %s", path)
    elif not sets_pool_limits(path):
        log.warning(
            "%s sets no pool limit, so two runs may write the same table at once: add the "
            "`concurrency` block of deploy/dagster.yaml to it.",
            path,
        )
    return path


def sets_pool_limits(path: Path) -> bool:
    """True when the instance file at `path` limits every pool to one slot."""
    settings = yaml.safe_load(path.read_text()) or {}
    pools = (settings.get("concurrency") or {}).get("pools") or {}
    return pools.get("default_limit") == 1
