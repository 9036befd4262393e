"""Code location for Celery: the pipeline's assets, each step a task on a Celery worker.

Load it with `dagster dev -f deploy/celery/definitions.py` (or the daemon and webserver of
your deployment). Not part of the package: it imports dagster-celery, which the hosts install
(dagster-celery==0.29.27) and the project does not depend on. The broker and result backend
come from CREDIT_RISK_CELERY_BROKER and CREDIT_RISK_CELERY_BACKEND, for example
`pyamqp://credit-risk@rabbitmq//` and `rpc://`.
"""

from dagster import Definitions
from dagster_celery import celery_executor

from credit_risk_assets.definitions import build_definitions

step_executor = celery_executor.configured(
    {
        "broker": {"env": "CREDIT_RISK_CELERY_BROKER"},
        "backend": {"env": "CREDIT_RISK_CELERY_BACKEND"},
        "include": ["credit_risk_assets.definitions"],
        "config_source": {"task_default_queue": "credit-risk", "worker_prefetch_multiplier": 1},
    }
)

defs = Definitions.merge(build_definitions(), Definitions(executor=step_executor))
