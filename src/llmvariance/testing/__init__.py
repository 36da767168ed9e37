"""An OpenAI-compatible simulated inference server for offline experiments and tests."""

from ._engine import Engine
from ._faults import FaultInjector, Faults
from ._models import Context, DenseModel, SimModel
from ._server import ServerStats, SimServer

__all__ = ["Context", "DenseModel", "Engine", "FaultInjector", "Faults", "ServerStats", "SimModel",
           "SimServer"]
