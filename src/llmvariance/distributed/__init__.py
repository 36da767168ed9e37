"""Running a study's shards on a Ray cluster (``pip install 'llmvariance[ray]'``).

    study = functools.partial(lv.sample_suite, suite, 50, endpoint=ep, concurrency=16)
    run = lv.run_on_ray(study, shards=4, resources={"num_cpus": 1}, output="run.jsonl")
    run.result.report            # the SuiteResult one process would have returned

``_executor``: ``run_on_ray`` (tasks, files back to the driver, the merge); ``_limits``: the
coordinator actor and the limiter that keeps a rate limit and pauses across the cluster.
Ray is imported only when ``run_on_ray`` runs, never by ``import llmvariance``.
"""

from ._executor import INSTALL_HINT, RayRun, run_on_ray
from ._limits import Coordinator, SharedLimiter

__all__ = ["INSTALL_HINT", "Coordinator", "RayRun", "SharedLimiter", "run_on_ray"]
