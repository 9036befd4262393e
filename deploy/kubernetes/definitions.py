"""Code location for Kubernetes: the pipeline's assets, each step in a pod of its own.

Load it in the user-code deployment with `dagster api grpc -f deploy/kubernetes/definitions.py`
(or `-m` on a copy inside the image). Not part of the package: it imports dagster-k8s, which
the image installs (dagster-k8s==0.29.27) and the project does not depend on.

A step holds one month range of one asset in memory; 6 GiB covers 1,000,000 accounts x 12
months (the benchmark's peak for the whole run in one process was under 4 GB). Steps writing
the same table wait for its pool slot (deploy/kubernetes/dagster.yaml), so parallel pods help
across tables and across the independent steps of a run: account_features and streaks, and
the asset checks.
"""

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from credit_risk_assets.definitions import build_definitions

step_executor = k8s_job_executor.configured(
    {
        "job_namespace": "credit-risk",
        "env_secrets": ["credit-risk-urls", "dagster-mysql"],
        # Four step pods at once: the warehouse server, not the cluster, is the limit.
        "max_concurrent": 4,
        "step_k8s_config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "1", "memory": "4Gi"},
                    "limits": {"memory": "6Gi"},
                }
            }
        },
    }
)

defs = Definitions.merge(build_definitions(), Definitions(executor=step_executor))
