"""``run_on_ray``: a study's K shards as Ray tasks, their run files merged on the driver.

Each shard is one Ray task that runs the study exactly as one process would — the
library's own pool and event loop — with ``shard=(k, K)`` and its own run file; a matrix's
task starts each of its configurations' engines on the node that holds the task's
resources, and stops it there. A task whose worker or node dies is retried by Ray
(``max_retries``); the retry resumes the shard's run file when it survived (the same node,
or ``directory`` on storage every node reaches) and starts the shard over otherwise, so
nothing is lost and, since a pair's later record supersedes an earlier one, nothing is
counted twice. As each shard finishes, its file comes back to the driver (or is read from
``directory``); when all have, they are merged (``merge_runs`` / ``merge_matrices``) and
the study is called once more on the driver with the merged file as its ``output``: every
pair is there, so nothing is sent, and the result is the one a single process returns.

Ray is imported only here, and only when ``run_on_ray`` is called.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._client.ratelimit import LIMITER_FACTORY, RateLimit, RateLimiter
from .._errors import ConfigError
from .._experiment import batch_effect
from .._loop import run as run_loop
from .._matrix import merge_matrices, server_matrix
from .._runs.merge import MergedRun, merge_runs
from .._sampler import sample_many
from .._suite import sample_suite
from ._limits import Coordinator, SharedLimiter

__all__ = ["INSTALL_HINT", "RayRun", "run_on_ray"]

INSTALL_HINT = "the Ray executor needs ray: pip install 'llmvariance[ray]'"

_TASK_OPTIONS = ("num_cpus", "num_gpus", "memory")
"""Resource names that are Ray task options; any other name is a custom resource."""


@dataclass(frozen=True)
class RayRun:
    """What ``run_on_ray`` returns."""

    result: Any
    """What the study's function returns for the whole study, as one process would:
    a ``SampleSet``, ``SuiteResult``, ``BatchEffectResult`` or ``MatrixResult``. None
    when a shard stopped before it sent all its pairs (``merged.findings`` says which;
    calling the study with ``output=run.output`` sends the rest)."""
    output: Path
    """The merged run file (a matrix's: its JSON)."""
    files: list[Path]
    """Each shard's file on the driver (or in ``directory``), in shard order."""
    merged: MergedRun | None = None
    """What the merge found (missing or overlapping pairs); None for a matrix."""
    _keep: list[Any] = field(default_factory=list, repr=False)


class _Scratch:
    """A temporary folder, removed when the last reference to this goes."""

    __slots__ = ("__weakref__", "path")

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="llmvariance-ray-"))
        weakref.finalize(self, shutil.rmtree, self.path, True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("ray", INSTALL_HINT) from None
    return ray


def _kind(study: object) -> str:
    if not isinstance(study, functools.partial):
        raise ConfigError("study", "must be functools.partial(f, ...) of sample_many, "
                          "sample_suite, batch_effect or server_matrix with every argument "
                          f"but shard and output; got {type(study).__name__}")
    kinds: dict[Callable[..., Any], str] = {sample_many: "run", sample_suite: "run",
                                            batch_effect: "run", server_matrix: "matrix"}
    kind = kinds.get(study.func)
    if kind is None:
        raise ConfigError("study", "must be a partial of sample_many, sample_suite, "
                          f"batch_effect or server_matrix, not of {study.func!r}")
    taken = sorted({"shard", "output"} & set(study.keywords))
    if taken:
        raise ConfigError("study", f"leave {' and '.join(taken)} to run_on_ray: each shard "
                          "gets its own")
    return kind


def _shard_count(study: functools.partial[Any], kind: str, shards: int | None) -> int:
    if shards is not None:
        return ConfigError.check_int("shards", shards)
    if kind == "matrix":
        configs = study.keywords.get("configs", study.args[2] if len(study.args) > 2 else None)
        if configs:
            return len(configs)  # one task per configuration
    raise ConfigError("shards", "say how many shards (tasks) to cut the study into")


def _task_options(resources: Mapping[str, float] | None, max_retries: int
                  ) -> dict[str, Any]:
    options: dict[str, Any] = {"max_retries": ConfigError.check_int("max_retries",
                                                                     max_retries, 0)}
    custom: dict[str, float] = {}
    for name, amount in (resources or {}).items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ConfigError("resources", f"{name} must be a number >= 0, got {amount!r}")
        if name in _TASK_OPTIONS:
            options[name] = amount
        else:
            custom[name] = float(amount)
    if custom:
        options["resources"] = custom
    return options


def run_on_ray(
    study: functools.partial[Any],
    *,
    shards: int | None = None,
    resources: Mapping[str, float] | None = None,
    output: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    max_retries: int = 3,
    cluster_rate_limit: RateLimit | None = None,
    share_pauses: bool = True,
    on_shard: Callable[[int, Path], Any] | None = None,
    address: str | None = None,
) -> RayRun:
    """Run ``study`` as ``shards`` Ray tasks and merge them into the one-process result.

    ``study``: ``functools.partial(lv.sample_suite, suite, 50, endpoint=ep, ...)`` — or of
    ``sample_many``, ``batch_effect`` or ``server_matrix`` — with every argument but
    ``shard`` and ``output``. ``shards``: how many tasks (K); a matrix defaults to one per
    configuration. ``resources``: what each task needs (``{"num_gpus": 1}``,
    ``{"num_cpus": 1}``, ``{"memory": bytes}``, custom resources by name).

    ``output``: the merged run file (a matrix: its JSON; default a temporary file kept
    while the ``RayRun`` lives). ``directory``: where the shards write their files, on
    storage every node reaches; then a rerun resumes them. Without it each shard writes on
    its node and sends its file back to the driver when it finishes (into ``output``'s
    ``NAME.shards/`` folder); ``on_shard(k, path)`` is called as each one arrives.

    Limits: a ``rate_limit`` in the study is divided among the shards (each keeps 1/K).
    ``cluster_rate_limit`` is kept by one actor that every shard books each send with, so
    the cluster as a whole keeps it (one key across nodes). ``share_pauses``: a 429 (or a
    ``retry-after``) that one shard's server sends pauses every shard.

    ``max_retries``: how often Ray reruns a task whose worker or node died (it resumes its
    shard's file when that survived). Connects to the cluster at ``address`` (default:
    the one ``ray.init`` connected to, else a new local one). Everything is checked before
    any task starts; a shard that fails is named in the error.
    """
    kind = _kind(study)
    count = _shard_count(study, kind, shards)
    options = _task_options(resources, max_retries)
    ConfigError.check_type("cluster_rate_limit", cluster_rate_limit, RateLimit)
    ConfigError.check_type("output", output, str, os.PathLike)
    ConfigError.check_type("directory", directory, str, os.PathLike)
    if on_shard is not None and not callable(on_shard):
        raise ConfigError("on_shard", f"must be callable, got {type(on_shard).__name__}")
    suffix = ".json" if kind == "matrix" else ".jsonl"
    keep: list[Any] = []
    if output is None:
        scratch = _Scratch()
        keep.append(scratch)
        target = scratch.path / f"merged{suffix}"
    else:
        target = Path(output)
    shared = None if directory is None else Path(directory).resolve()
    landing = shared or target.with_name(f"{target.stem}.shards")
    landing.mkdir(parents=True, exist_ok=True)

    ray = _import_ray()
    started = not ray.is_initialized()
    if started:  # a cluster of our own (address None: local) is stopped again at the end
        ray.init(address=address)
    try:
        merged_run = _run(ray, study, kind, count, options, shared, landing, suffix, target,
                          cluster_rate_limit, share_pauses, on_shard, keep)
    finally:
        if started:
            ray.shutdown()
    merged = merged_run[0]
    # the study again on the merged file: it sends nothing when every pair is there (an
    # incomplete run is left for the caller to resume, not sent from the driver)
    result = (run_loop(functools.partial(study, output=target))
              if merged is None or merged.complete else None)
    return RayRun(result=result, output=target, files=merged_run[1], merged=merged_run[0],
                  _keep=keep)


def _run(ray: Any, study: functools.partial[Any], kind: str, count: int,
         options: dict[str, Any], shared: Path | None, landing: Path, suffix: str,
         target: Path, cluster_rate_limit: RateLimit | None, share_pauses: bool,
         on_shard: Callable[[int, Path], Any] | None, keep: list[Any]
         ) -> tuple[MergedRun | None, list[Path]]:
    """Start the tasks, land each shard's file as it finishes, merge them into ``target``."""
    coordinator = None
    if cluster_rate_limit is not None or share_pauses:
        coordinator = ray.remote(num_cpus=0)(Coordinator).remote(cluster_rate_limit)
        keep.append(coordinator)
    task = ray.remote(_run_shard).options(**options)
    run_id = uuid.uuid4().hex
    pending = {task.remote(study, k, count, None if shared is None else str(shared), run_id,
                           suffix, coordinator, cluster_rate_limit is not None): k
               for k in range(count)}
    files = [landing / _name(k, count, suffix) for k in range(count)]
    try:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(ready)
            try:
                data = ray.get(ready)
            except Exception as exc:
                raise _failure(exc, k, count) from exc
            if data is not None:
                files[k].write_bytes(data)
            if on_shard is not None:
                on_shard(k, files[k])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if shared is None:
            _clean_nodes(ray, run_id)
    if kind == "matrix":
        merge_matrices(files, target)
        return None, files
    return merge_runs(files, target), files


def _local_folder(run_id: str) -> Path:
    """Where a node keeps its shards' files of one ``run_on_ray`` (without ``directory``)."""
    return Path(tempfile.gettempdir()) / "llmvariance-shards" / run_id


def _remove_local_folder(run_id: str) -> None:
    shutil.rmtree(_local_folder(run_id), ignore_errors=True)
    with contextlib.suppress(OSError):
        _local_folder(run_id).parent.rmdir()  # when no other run uses it


def _clean_nodes(ray: Any, run_id: str) -> None:
    """Remove the run's node-local files on every node: a shard that failed or was
    cancelled leaves its partial file there, and no later run would resume it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remove = ray.remote(num_cpus=0)(_remove_local_folder)
    refs = [remove.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(run_id)
        for node in ray.nodes() if node.get("Alive")]
    with contextlib.suppress(Exception):  # a node that went away took its files with it
        ray.get(refs, timeout=60)


def _name(k: int, count: int, suffix: str) -> str:
    return f"shard-{k}-of-{count}{suffix}"


def _failure(exc: BaseException, k: int, count: int) -> BaseException:
    """The error a shard's task ended with, saying which shard."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception):  # what the study raised there (a ConfigError, a hook's)
        cause.add_note(f"(in shard {k}/{count} of run_on_ray)")
        return cause
    # the task could not run to its end: its worker or node died more often than retried
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return RuntimeError(f"shard {k}/{count} failed: {type(exc).__name__}: {first}")


def _run_shard(study: functools.partial[Any], k: int, count: int, shared: str | None,
               run_id: str, suffix: str, coordinator: Any, cluster_limited: bool
               ) -> bytes | None:
    """One shard, in a Ray worker: the study with ``shard=(k, count)`` into its own file,
    which is returned (None when it is in the shared directory)."""
    if shared is not None:
        path = Path(shared) / _name(k, count, suffix)
    else:
        path = _local_folder(run_id) / _name(k, count, suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = None
    if coordinator is not None:
        def factory(limit: RateLimit | None, concurrency: int) -> RateLimiter:
            return SharedLimiter(coordinator, limit, concurrency=concurrency,
                                 cluster_limited=cluster_limited)
        token = LIMITER_FACTORY.set(factory)
    try:
        run_loop(functools.partial(study, shard=(k, count), output=path))
    finally:
        if token is not None:
            LIMITER_FACTORY.reset(token)
    if shared is not None:
        return None
    data = path.read_bytes()
    path.unlink()  # the folder goes when the run ends (_clean_nodes)
    return data
