"""SGLang's server (GPU only; the command is built here, not run here).

``deterministic=True`` passes ``--enable-deterministic-inference``, SGLang's
batch-invariant mode. Launch with ``ServerProcess(lambda port: sglang_command(m, port=port))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._process import EngineCommand, argv_flags

__all__ = ["sglang_command"]


def sglang_command(model: str, *, port: int, deterministic: bool = False,
                   max_running_requests: int | None = None, seed: int | None = None,
                   tp_size: int | None = None, python: str = "python3",
                   extra_args: Sequence[str] = ()) -> EngineCommand:
    """``python3 -m sglang.launch_server --model-path MODEL --host 127.0.0.1 --port PORT``."""
    argv = [python, "-m", "sglang.launch_server", "--model-path", model,
            "--host", "127.0.0.1", "--port", str(port),
            *argv_flags([("--enable-deterministic-inference", deterministic),
                         ("--max-running-requests", max_running_requests),
                         ("--random-seed", seed), ("--tp-size", tp_size)]), *extra_args]
    return EngineCommand(tuple(argv))
