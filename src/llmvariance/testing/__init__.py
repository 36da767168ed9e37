"""An OpenAI-compatible simulated inference server for offline experiments and tests."""

from ._engine import Engine
from ._faults import FaultInjector, Faults
from ._models import Context, DenseModel, DenseNBIModel, MoEModel, SimModel, default_models
from ._server import ServerStats, SimServer

__all__ = [
    "Context",
    "DenseModel",
    "DenseNBIModel",
    "Engine",
    "FaultInjector",
    "Faults",
    "MoEModel",
    "ServerStats",
    "SimModel",
    "SimServer",
    "default_models",
]
