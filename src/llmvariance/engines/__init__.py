"""Real inference servers, started and stopped from code like the simulator.

    from llmvariance.engines import LlamaCppServer
    async with LlamaCppServer("model.gguf", parallel=8, kv_unified=True) as base_url:
        ...

``ServerProcess`` is the one launcher underneath (free port, health wait, log file, no
process left behind); each engine is a small module that builds its command line:
``llamacpp`` (runs here), ``vllm`` and ``sglang`` (GPU engines: built and unit-tested,
not run on machines without a GPU). ``python3 dev.py engines`` builds llama-server and
fetches two small GGUF models into ``cache_dir()``.
"""

from ._process import EngineCommand, ServerProcess, free_port
from ._setup import MODELS, cache_dir, llama_server_path, model_path
from .cache import CACHE_POLICIES, CachePolicy, cache_policy
from .info import ServerInfo, server_info
from .llamacpp import LlamaCppServer, find_llama_server, llamacpp_command, resolve_model
from .sglang import sglang_command
from .vllm import vllm_command

__all__ = [
    "CACHE_POLICIES",
    "MODELS",
    "CachePolicy",
    "EngineCommand",
    "LlamaCppServer",
    "ServerInfo",
    "ServerProcess",
    "cache_dir",
    "cache_policy",
    "find_llama_server",
    "free_port",
    "llama_server_path",
    "llamacpp_command",
    "model_path",
    "resolve_model",
    "server_info",
    "sglang_command",
    "vllm_command",
]
