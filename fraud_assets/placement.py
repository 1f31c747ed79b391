"""Where steps run on a cluster: the tags that send embedding and training to GPU nodes.

The same tags are inert under `dagster dev` and the CLI; `dagster-k8s`
(``k8s_job_executor`` or ``K8sRunLauncher``) reads ``dagster-k8s/config`` and
`dagster-celery` routes on ``dagster-celery/queue``. Both steps also share the
``gpu`` concurrency pool, so one node's GPU holds one model at a time.
"""

GPU_QUEUE = "gpu"

GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
    "dagster-celery/queue": GPU_QUEUE,
}
