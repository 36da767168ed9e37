"""The installed package's version, for run files and ``llmvariance --version``."""

from importlib import metadata

try:
    __version__ = metadata.version("llmvariance")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
