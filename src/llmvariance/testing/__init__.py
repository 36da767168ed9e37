"""A simulated inference server for offline experiments and tests.

``SimServer`` serves, under ``/v1``: OpenAI's ``POST /chat/completions``,
``POST /completions`` and ``POST /responses``, Anthropic's ``POST /messages``, and
``GET /models``; every POST route streams server-sent events (one per decoded token) with
``"stream": true``. Its models (``dense``, ``moe``, ``dense-nbi``) decode in continuous
batches on an ``Engine``, and ``Faults`` injects rate limits, errors, drops, bad bodies and
broken streams. ``assert_reproducible`` fails a test when a server stops answering one
request the same way (``lv.check``), saying what varied.
"""

from ._assertions import assert_reproducible
from ._engine import Delta, Engine
from ._faults import FaultInjector, Faults
from ._models import Context, DenseModel, DenseNBIModel, MoEModel, SimModel, default_models
from ._server import ModelSwitch, ServerStats, SimServer

__all__ = [
    "Context",
    "Delta",
    "DenseModel",
    "DenseNBIModel",
    "Engine",
    "FaultInjector",
    "Faults",
    "MoEModel",
    "ModelSwitch",
    "ServerStats",
    "SimModel",
    "SimServer",
    "assert_reproducible",
    "default_models",
]
