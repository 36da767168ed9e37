"""vLLM's OpenAI-compatible server (GPU only; the command is built here, not run here).

``batch_invariant=True`` sets ``VLLM_BATCH_INVARIANT=1``, vLLM's batch-invariant kernels:
the mode that should make outputs independent of what a request is batched with.
Launch with ``ServerProcess(lambda port: vllm_command("Qwen/Qwen3-8B", port=port))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._process import EngineCommand, argv_flags

__all__ = ["vllm_command"]


def vllm_command(model: str, *, port: int, batch_invariant: bool = False,
                 max_num_seqs: int | None = None, seed: int | None = None,
                 tensor_parallel_size: int | None = None,
                 extra_args: Sequence[str] = ()) -> EngineCommand:
    """``vllm serve MODEL --host 127.0.0.1 --port PORT ...`` and its environment."""
    argv = ["vllm", "serve", model, "--host", "127.0.0.1", "--port", str(port),
            *argv_flags([("--max-num-seqs", max_num_seqs), ("--seed", seed),
                         ("--tensor-parallel-size", tensor_parallel_size)]), *extra_args]
    env = {"VLLM_BATCH_INVARIANT": "1"} if batch_invariant else {}
    return EngineCommand(tuple(argv), env)
